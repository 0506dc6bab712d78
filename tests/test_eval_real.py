"""Real-reference tasks, equal inputs, bootstrap intervals and paired differences, and the proof that the
harness tells a broken model from a working one (fixtures only: LogHub, TVDiag and Nezha samples)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_eval_harness import small_data

from eval import stats
from eval.harness import comparisons, markdown, run_suite, write_report
from eval.models import ConstantModel, RuleModel, ToolkitModel, load_model
from eval.tasks import EvalItem, get_task, suite
from eval.tasks._core import chance_level, macro_f1_scorer
from flipmoe.errors import FlipmoeInputError

REPO = Path(__file__).resolve().parents[1]
SEPARATES = ("log_anomaly_bgl", "log_parsing_ga_bgl", "log_parsing_ga_hdfs", "log_template", "tvdiag_root_cause")
"""Real tasks on which the rule is far enough above chance, on the fixtures, for an interval to show it."""


@pytest.fixture(scope="module")
def real_run():  # type: ignore[no-untyped-def]
    """Every real-reference task on the fixtures: the rule and four broken (constant) models."""
    constants = ["INFO", "normal", "<*>", "The root cause is a return fault in ts-contacts-service"]
    models = [RuleModel(), *(ConstantModel(text) for text in constants)]
    return run_suite(suite("real"), models, data=small_data(max_items=200), resamples=300)


def test_real_tasks_build_from_independent_labels(real_run) -> None:  # type: ignore[no-untyped-def]
    built = {t.task: t for t in real_run.tasks if not t.skipped}
    assert {"log_anomaly_bgl", "log_level_loghub", "log_template", "tvdiag_root_cause", "tvdiag_fault_type",
            "trainticket_root_cause", "trainticket_summary"} <= set(built)
    assert all(t.ground_truth == "real" for t in real_run.tasks)
    assert built["tvdiag_root_cause"].items == 30 and built["trainticket_summary"].items == 2
    items = real_run.items
    assert {i.meta["system"] for i in items["tvdiag_root_cause"]} == {"gaia", "sockshop", "hotel"}
    # TrainTicket summaries are written from the label: the fine-grained cause of Nezha's root_cause_ts.json.
    summary = items["trainticket_summary"][0]
    assert "ts-contacts-service" in summary.references[0] and "ContactsServiceImpl#31" in summary.references[0]
    # The TVDiag input lists instances alphabetically, not by the rule's alert counts.
    lines = [line.split(":")[0] for line in items["tvdiag_root_cause"][0].input.split("\n")[2:]]
    assert lines == sorted(lines)
    skipped = [t for t in real_run.tasks if t.skipped]
    assert skipped and all("needs LogHub" in t.skipped for t in skipped)  # fixtures hold 3 of 8 systems


def test_a_constant_model_scores_at_chance_on_every_real_task(real_run) -> None:  # type: ignore[no-untyped-def]
    scored = [t for t in real_run.tasks if not t.skipped]
    for task_run in scored:
        for model in real_run.models:
            if model.startswith("constant:"):
                assert task_run.figures[model]["score"] <= task_run.chance + 1e-4, (task_run.task, model)
    # The best-placed broken model — each task's most common reference, every time — is exactly at chance.
    for task_run in scored:
        task, items = get_task(task_run.task), real_run.items[task_run.task]
        common = Counter(item.references[0] for item in items).most_common(1)[0][0]
        answer = ConstantModel(common).answer(task, items)
        assert task.score(answer, items)["score"] <= task_run.chance + 1e-4
    # And the harness tells it from a working model: rule - constant excludes 0 where the rule is good.
    for task_run in (t for t in scored if t.task in SEPARATES):
        for difference in task_run.differences:
            assert difference["b"] == "rule" and difference["interval"][1] < 0, (task_run.task, difference)


def test_every_score_has_an_interval_and_comparisons_are_paired(real_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for task_run in (t for t in real_run.tasks if not t.skipped):
        for model, figures in task_run.figures.items():
            low, high = task_run.intervals[model]
            assert low - 1e-9 <= figures["score"] <= high + 1e-9 and 0.0 <= low <= high <= 1.0
    paths = write_report(real_run, tmp_path)
    results = json.loads(paths["json"].read_text())
    assert set(results["mean"]) == {"all", "real", "chaos"} and results["mean"]["chaos"] == {}
    assert results["mean"]["real"]["rule"]["interval"][0] <= results["mean"]["real"]["rule"]["score"]
    assert "resampled" not in results["tasks"][0]
    table = markdown(real_run)
    assert "| tvdiag_root_cause | real | a TVDiag case's alerts per instance" in table
    assert "## Paired differences" in table and "differs" in table
    assert comparisons(["rule", "bundle:nano", "dense", "expert:logs"]) == [
        ("bundle:nano", "rule"), ("dense", "rule"), ("expert:logs", "rule"), ("bundle:nano", "dense")]


def test_bootstrap_is_seeded_and_paired() -> None:
    first = stats.resample_indices(50, resamples=200, seed=3)
    assert first.shape == (200, 50) and np.array_equal(first, stats.resample_indices(50, resamples=200, seed=3))
    good, bad = np.ones(50), np.r_[np.ones(25), np.zeros(25)]
    spread = stats.interval(0.5, stats.bootstrap_means(good, first) - stats.bootstrap_means(bad, first))
    assert spread.excludes_zero() and 0.3 < spread.low < 0.5 < spread.high < 0.7
    assert stats.interval(1.0, stats.bootstrap_means(good, first)).to_json() == [1.0, 1.0]
    # A whole-set metric is recomputed on each resample.
    items = [EvalItem(id=str(i), input="", references=("a" if i % 2 else "b",)) for i in range(20)]
    answers = [item.references[0] for item in items]
    samples = stats.bootstrap_statistic(
        lambda rows: macro_f1_scorer()([answers[i] for i in rows], [items[i] for i in rows])["score"],
        stats.resample_indices(20, resamples=50))
    assert np.all(samples == 1.0)
    with pytest.raises(ValueError):
        stats.resample_indices(0)


def test_rules_read_only_the_models_input() -> None:
    """Equal inputs: stripping the payload (the whole incident) changes no rule answer; the whole-incident
    analysis is the separate `toolkit` model."""
    data = small_data(incidents=2)
    for name in ("localisation_service", "fault_type_diagnosis", "scenario_cause_mc", "rca_summary",
                 "trainticket_root_cause", "tvdiag_fault_type", "log_level_loghub"):
        task = get_task(name)
        items = task.build(data)
        assert items, name
        bare = [replace(item, payload=None) for item in items]
        assert task.rule(bare) == task.rule(items), name
    assert get_task("localisation_service").toolkit is not None and get_task("log_template").toolkit is None
    assert ToolkitModel().answer(get_task("blast_radius"), []) == []


def test_rca_summary_references_come_from_the_label_not_the_digest() -> None:
    for item in get_task("rca_summary").build(small_data(incidents=2)):
        sample = item.payload
        for reference in item.references:
            assert sample.label.service in reference
            assert "baseline" not in reference and "->" not in reference.replace(" -> ", "")


def test_chance_level_is_the_best_input_blind_answer() -> None:
    task = get_task("tvdiag_fault_type")
    items = [EvalItem(id=str(i), input="x", references=(label,)) for i, label in enumerate("aaab")]
    assert chance_level(task, items) == pytest.approx(macro_f1_scorer()(["a"] * 4, items)["score"])
    assert chance_level(task, []) == 0.0


def test_constant_and_toolkit_model_specs() -> None:
    assert load_model("constant:normal").name == "constant:normal"
    assert load_model("toolkit").name == "toolkit"
    with pytest.raises(FlipmoeInputError):
        load_model("constant:")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flipmoe", "eval", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_cli_lists_sources_and_inputs_and_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    listing = _cli("list", "--json")
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert listing.returncode == 0 and all(r["ground_truth"] in ("real", "chaos") and r["input"] for r in rows)
    for args in (["--model", "constant:"], ["--resamples", "0"], ["--tvdiag", str(tmp_path / "missing")],
                 ["--model", "rule", "--model", "rule"], ["--suite", "no_such_task"]):
        bad = _cli("run", "--suite", "log_anomaly_bgl", "--out", str(tmp_path / "out"), *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, args
        assert len(bad.stderr.strip().splitlines()) == 1, (args, bad.stderr)


def test_cli_run_prints_intervals_and_sources(tmp_path: Path) -> None:
    fixtures = REPO / "tests" / "fixtures"
    done = _cli("run", "--suite", "tvdiag_root_cause,log_anomaly_bgl", "--model", "rule", "--model", "constant:normal",
                "--out", str(tmp_path / "out"), "--data", str(fixtures), "--loghub", str(fixtures / "eval_loghub"),
                "--tvdiag", str(fixtures / "eval_tvdiag"), "--resamples", "100", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "| tvdiag_root_cause | real |" in done.stdout and "## Paired differences" in done.stdout
    assert "| constant:normal | rule |" in done.stdout


def test_grouping_accuracy_intervals_resample_whole_templates() -> None:
    """One different answer per line: item resampling drops lines of a template and makes such answers look
    right (the interval misses the score); resampling whole templates keeps the score inside its interval."""
    import numpy as np

    from eval import stats
    from eval.tasks._core import grouping_accuracy

    rng = np.random.default_rng(0)
    truths = [f"t{int(rng.integers(0, 40))}" for _ in range(150)]
    answers = [f"u{i}" for i in range(150)]
    point = grouping_accuracy(answers, truths)

    def ga(rows: list[int]) -> float:
        return grouping_accuracy([answers[i] for i in rows], [truths[i] for i in rows])

    by_template = stats.interval(point, stats.bootstrap_statistic(ga, stats.resample_clusters(truths, resamples=300)))
    by_line = stats.interval(point, stats.bootstrap_statistic(ga, stats.resample_indices(150, resamples=300)))
    assert by_template.low <= point <= by_template.high
    assert by_line.low > point  # the bias the cluster bootstrap removes
