"""The per-task evaluation harness: registry, determinism, metrics, the rule model end to end, contamination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_server import DEFAULT_MODEL, OpenAIServer, openai_server

from eval import metrics
from eval.contamination import contamination
from eval.harness import run_suite, write_report
from eval.models import RuleModel, load_model
from eval.tasks import CATEGORIES, EvalConfig, EvalData, EvalItem, get_task, suite, tasks
from eval.tasks._core import grouping_accuracy, ranking_scorer, set_f1, summary_scorer
from eval.tasks.queries import canonical_promql, promql_parses
from flipmoe.errors import FlipmoeInputError

__all__ = ["openai_server"]  # the fixture, used by name below

FIXTURES = Path(__file__).parent / "fixtures"
LOGHUB = FIXTURES / "eval_loghub"


def small_data(**overrides: object) -> EvalData:
    """Held-out data from the fixtures only: the data root is the fixtures folder (no shared data is read)."""
    config = {"incidents": 4, "max_items": 8, "data": str(FIXTURES), "loghub": str(LOGHUB),
              "tvdiag": str(FIXTURES / "eval_tvdiag"), "nezha": str(FIXTURES / "nezha"), **overrides}
    return EvalData(EvalConfig(**config))  # type: ignore[arg-type]


def test_registry_has_30_tasks_over_every_category() -> None:
    every = tasks()
    assert len(every) >= 30
    assert {t.category for t in every} == set(CATEGORIES)
    assert len({t.name for t in every}) == len(every)
    experts = {t.name for t in suite("experts")}
    assert {"log_template", "log_level", "exception_cause", "config_key", "metric_pattern"} <= experts
    assert [t.name for t in suite("diagnosis")] == ["fault_type_diagnosis", "tvdiag_fault_type"]
    assert {t.ground_truth for t in every} == {"real", "chaos"}
    assert {"log_anomaly_bgl", "log_template", "tvdiag_root_cause", "trainticket_summary"} <= {
        t.name for t in suite("real")}
    assert all(t.ground_truth == "chaos" for t in suite("chaos")) and all(t.input_format for t in every)
    with pytest.raises(FlipmoeInputError):
        suite("no_such_task")


def _check_builds(names: list[str], first: EvalData, second: EvalData) -> None:
    for task in map(get_task, names):
        items = task.build(first)
        assert items, f"{task.name} built no items"
        assert len(items) <= max(task.size, first.config.max_items * 2)
        assert all(item.references and all(r.strip() for r in item.references) for item in items), task.name
        again = task.build(second)
        assert [(i.id, i.input, i.references) for i in items] == [(i.id, i.input, i.references) for i in again], \
            task.name


def test_cheap_tasks_build_items_deterministically_with_references() -> None:
    names = ["log_anomaly_bgl", "log_parsing_ga_hdfs", "log_parsing_ga_bgl", "blast_radius", "dependency_path",
             "db_error_cause", "sql_generation", "promql_generation", "trace_summary", "trace_bottleneck",
             "latency_forecast", "rca_summary", "localisation_service", "scenario_cause_mc"]
    _check_builds(names, small_data(incidents=2), small_data(incidents=2))
    for name in ("trace_summary", "rca_summary"):
        assert all(len(item.references) == 3 for item in get_task(name).build(small_data(incidents=2)))


@pytest.mark.slow
def test_every_task_builds_items_deterministically_with_references() -> None:
    absent = {f"log_parsing_ga_{s}" for s in ("hpc", "spark", "thunderbird", "windows", "zookeeper")}  # no fixture
    _check_builds([t.name for t in tasks() if t.name not in absent], small_data(), small_data())


def test_heldout_chaos_items_come_from_evaluation_seeds() -> None:
    data = small_data(incidents=2)
    for name in ("localisation_service", "log_ner", "sql_generation", "k8s_event_cause"):
        for item in get_task(name).build(data):
            assert int(item.meta["source"].split(":")[1]) >= 600_000


def test_normalised_rouge2_is_capped_and_gated() -> None:
    references = ["cartservice memory rose to the limit and the pod restarted",
                  "the pod of cartservice restarted after memory rose to the limit"]
    # Agreeing with each reference more than they agree with each other still scores at most 1.
    assert metrics.normalised_rouge2(references[0], references) == 1.0
    assert metrics.normalised_rouge2("the pod restarted", references) == pytest.approx(0.504, abs=1e-3)
    source = "cartservice pod cartservice-7d9-abc memory 512Mi"
    assert metrics.hallucination_gate(0.9, "cartservice-7d9-abc ran out of memory", source) == 0.9
    invented = "cartservice-7d9-abc, redis-cart-0, node-17 and 10.0.0.9 failed"
    assert metrics.unknown_entities(invented, source) == {"redis-cart-0", "node-17", "10.0.0.9"}
    assert metrics.hallucination_gate(0.9, invented, source) == 0.0
    item = EvalItem(id="x", input=source, references=tuple(references))
    figures = summary_scorer()([references[0], invented + " " + references[0]], [item, item])
    assert figures["score"] == pytest.approx(0.5) and figures["hallucinated"] == pytest.approx(0.5)


def test_other_metrics_on_known_inputs() -> None:
    assert grouping_accuracy(["a", "a", "b", "c"], ["x", "x", "y", "y"]) == 0.5
    assert set_f1("pod:a; ip:1.2.3.4", "ip:1.2.3.4; pod:a") == 1.0
    assert set_f1("pod:a", "pod:a; pod:b") == pytest.approx(2 / 3)
    item = EvalItem(id="i", input="", references=("b",))
    ranked = ranking_scorer()(["a, b, c", "b", "c, d, e, f, g, b"], [item, item, item])
    assert ranked["A@1"] == pytest.approx(1 / 3) and ranked["A@3"] == pytest.approx(2 / 3)
    assert ranked["MRR"] == pytest.approx((0.5 + 1 + 1 / 6) / 3)
    assert metrics.mape_score([110, 90], [100, 100]) == pytest.approx(0.9)
    assert promql_parses('max by (pod) (up{service="a", job=~"x.*"})')
    assert promql_parses('avg_over_time(x:rate1m{service="a"}[5m])')
    assert not promql_parses("sum(up{service=a})") and not promql_parses("rate(up[5])") and not promql_parses("sum(up")
    assert canonical_promql('sum( up{ service="a b" } )') == 'sum(up{service="a b"})'


def test_expert_tasks_score_the_same_here_and_in_expert_training() -> None:
    from data_pipeline.examples import TaskExample
    from experts.tasks import score

    cases = [("log_level", "info", "INFO"), ("log_level", " INFO.\n", "INFO"),
             ("exception_cause", "null deref at Main.go:17.", "null deref at main.go:17")]
    for task, prediction, reference in cases:
        item = EvalItem(id="i", input="x", references=(reference,))
        example = TaskExample(task=task, input="x", target=reference)
        assert get_task(task).score([prediction], [item])["score"] == score(task, [prediction], [example])


def test_rule_model_runs_a_small_suite_end_to_end(tmp_path: Path) -> None:
    names = "log_anomaly_bgl,exception_kind,db_error_cause,blast_radius,sql_generation,promql_generation,trace_summary"
    run = run_suite(suite(names), [RuleModel()], data=small_data(incidents=2))
    assert [t.task for t in run.tasks] == names.split(",")
    for task_run in run.tasks:
        assert not task_run.skipped and 0.0 <= task_run.figures["rule"]["score"] <= 1.0
    by_task = {t.task: t.figures["rule"]["score"] for t in run.tasks}
    assert by_task["sql_generation"] == 1.0 and by_task["blast_radius"] == 1.0  # templates and BFS are exact
    paths = write_report(run, tmp_path / "out")
    results = json.loads(paths["json"].read_text())
    assert results["models"] == ["rule"] and len(results["tasks"]) == 7 and results["categories"]
    table = paths["markdown"].read_text()
    assert "| sql_generation | chaos | SQLite schema, then a question |" in table and "## By category" in table
    assert results["tasks"][0]["intervals"]["rule"] and "all" in results["mean"]
    assert paths["radar"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths["predictions"].read_text().splitlines()) == sum(t.items for t in run.tasks)


def test_model_specs() -> None:
    assert load_model("rule").name == "rule"
    for bad in ("nonsense", "expert:", "remote:http://localhost:1/v1"):
        with pytest.raises(FlipmoeInputError):
            load_model(bad)


def test_contamination_detects_a_planted_overlap() -> None:
    leaked_long = " ".join(f"worker-{i} processed batch {i * 7} of queue orders in {i % 13} ms" for i in range(12))
    leaked_line = "payment-svc-0 ERROR charge declined for order 4411: card expired"
    train = ["an unrelated document about cache evictions " * 5, f"header\n{leaked_long}\nfooter",
             f"INFO started\n{leaked_line}\nINFO stopped"]
    clean_long = " ".join(f"span {i} of trace abc{i} took {i * 3} ms in checkout" for i in range(12))
    items = {
        "planted": [EvalItem(id="a", input=leaked_long, references=("x",)),
                    EvalItem(id="b", input=leaked_line, references=("x",)),
                    EvalItem(id="c", input=clean_long, references=("x",)),
                    EvalItem(id="d", input="cartservice WARN retrying", references=("x",))],
        "clean": [EvalItem(id="e", input=clean_long, references=("x",))],
    }
    report = contamination(items, train)
    assert report["planted"].contaminated == 2
    assert (report["planted"].by_minhash, report["planted"].by_exact_line) == (1, 1)
    assert report["clean"].contaminated == 0 and report["clean"].share == 0.0


@pytest.mark.integration
def test_promql_answers_are_executed_on_a_real_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_server import missing_binaries, running_prometheus

    from eval.tasks.queries import PROMETHEUS_ENV, promql_openmetrics

    if missing_binaries():
        pytest.skip(f"needs the Prometheus binaries ({', '.join(missing_binaries())} missing)")
    task = get_task("promql_generation")
    items = task.build(small_data(incidents=2))
    rule = task.rule(items)
    with running_prometheus(promql_openmetrics(items), tmp_path / "prometheus") as url:
        monkeypatch.setenv(PROMETHEUS_ENV, url)
        assert task.score(rule, items) == {"score": 1.0, "canonical_match": 1.0, "executed": 1.0}
        # An equivalent query written differently passes execution but not the canonical match.
        reworded = [f"sum without () ({r})" if r.startswith("sum(") else r for r in rule]
        assert task.score(reworded, items)["score"] == 1.0
        wrong = [r.replace("sum(", "count(").replace("max by", "min by").replace("topk(3", "topk(2")
                 .replace("[5m]", "[1m]").replace("[10m]", "[2m]") for r in rule]
        figures = task.score(wrong, items)
        assert figures["executed"] == 1.0 and figures["score"] < 1.0
    monkeypatch.delenv(PROMETHEUS_ENV)
    assert task.score(reworded, items)["executed"] == 0.0


def test_generative_models_answer_through_one_interface(tmp_path: Path, openai_server: OpenAIServer) -> None:
    from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

    from router.train import RouterTrainConfig, fit_router

    experts = tiny_experts(("logs", "code"))
    router = fit_router(records(60), tuple(EXPERT_TASKS), config=RouterTrainConfig(c_grid=(3.0,), folds=3))
    bundle = write_bundle(tmp_path / "bundle", experts, router)
    task = get_task("db_error_cause")
    items = task.build(small_data(incidents=2))[:5]
    openai_server.script(*(["timeout"] * len(items)))
    remote = f"remote:{openai_server.base_url}#{DEFAULT_MODEL}"
    models = [load_model(f"bundle:{bundle}"), load_model(f"expert:{bundle}/experts/logs"),
              load_model(f"dense:{bundle}/experts/code"), load_model(remote)]
    assert [m.name for m in models] == ["bundle:bundle", "expert:logs", "dense", f"remote:{DEFAULT_MODEL}"]
    run = run_suite([task], models, data=small_data(incidents=2, max_items=5))
    figures = run.tasks[0].figures
    assert set(figures) == {m.name for m in models} and all(f["score"] >= 0.0 for f in figures.values())
    assert all(n == 0 for n in run.tasks[0].failures.values())
    assert sum(models[0].routed["db_error_cause"].values()) == len(items)  # type: ignore[attr-defined]
    means = {(d["a"], d["b"]): d for d in run.overall_differences()}
    assert ("bundle:bundle", "dense") in means and ("bundle:bundle", "rule") not in means  # no rule in this run
    mean = means[("bundle:bundle", "dense")]
    assert mean["interval"][0] <= mean["difference"] <= mean["interval"][1]
    assert run.to_json()["mean_differences"]["all"] == run.overall_differences()
    answers = [p["prediction"] for p in run.predictions if p["model"] == f"remote:{DEFAULT_MODEL}"]
    assert answers == ["timeout"] * len(items)
