"""Expert families and task data: sources, splits, the task registry, metrics and rule baselines.

Runs on the LogHub fixtures and a few short chaos incidents; never on `../shared`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.examples import TaskExample
from experts.metrics.corpus import render_series
from experts.metrics.tasks import detect_pattern, parse_series
from experts.registry import EXPERT_FAMILIES, get_spec
from experts.scoring import exact_match, rouge2, token_f1
from experts.sources import HELDOUT_SEED_BASE, Sources, balanced, hash_split
from experts.tasks import TASKS, rule_baseline, rule_baselines, score
from experts.traces.corpus import Span, Trace, render_trace
from experts.traces.tasks import exclusive_ms, parse_trace, slow_path, slow_path_baseline
from flipmoe.errors import FlipmoeInputError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def sources() -> Sources:
    # Seed 6: DNS failure and crash loop in training, certificate expiry and retry storm held out, so
    # failing traces exist on both sides.
    return Sources(shared_data=None, loghub=FIXTURES / "loghub", seed=6, train_incidents=2, heldout_incidents=2,
                   systems=("webshop",), window_minutes=6, train_examples=60, heldout_examples=30)


@pytest.fixture(scope="module")
def data(sources: Sources) -> dict[str, dict[str, dict[str, list[TaskExample]]]]:
    return {family: {split: get_spec(family).task_data(sources, split) for split in ("train", "heldout")}
            for family in EXPERT_FAMILIES}


def test_sources_seeds_are_disjoint_and_held_out_seeds_are_reserved(sources):
    train, heldout = sources.seeds("train"), sources.seeds("heldout")
    assert not set(train) & set(heldout)
    assert max(train) < HELDOUT_SEED_BASE <= min(heldout)
    assert [s.seed for s in sources.chaos("heldout")] == heldout
    # One simulation per incident, shared by every family that asks the same `Sources`; none kept between them.
    first = sources.chaos("train")[0]
    assert sources.chaos("train")[0] is first
    again = dataclasses.replace(sources).chaos("train")[0]
    assert again is not first and again.incident.meta == first.incident.meta
    with pytest.raises(FlipmoeInputError, match="below 600000"):
        Sources(shared_data=None, seed=HELDOUT_SEED_BASE - 1, train_incidents=2)
    with pytest.raises(FlipmoeInputError, match="split"):
        sources.seeds("test")


def test_sources_without_shared_data_find_no_real_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FLIPMOE_SHARED_DATA", str(tmp_path / "absent"))
    empty = Sources()
    assert empty.loghub_files() == [] and empty.nezha_log_lines() == [] and empty.loghub_table().empty


def test_hash_split_holds_out_about_one_key_in_ten_and_balanced_takes_round_robin():
    splits = [hash_split("HDFS", f"line {i}") for i in range(2000)]
    assert 0.07 < splits.count("heldout") / len(splits) < 0.13
    assert splits == [hash_split("HDFS", f"line {i}") for i in range(2000)]
    assert balanced(["a1", "a2", "a3", "b1"], lambda s: s[0], 3) == ["a1", "b1", "a2"]


def test_every_family_has_a_spec_a_corpus_and_its_tasks(sources, data):
    for family in EXPERT_FAMILIES:
        spec = get_spec(family)
        assert spec.family == family and spec.objective in ("causal", "ul2", "significance")
        documents = spec.corpus(sources)
        assert documents and all(isinstance(d, str) and d for d in documents)
        for split in ("train", "heldout"):
            assert set(data[family][split]) == set(spec.tasks)
            for task, examples in data[family][split].items():
                assert TASKS[task].family == family
                assert all(e.task == task and e.input and e.target for e in examples)
    assert get_spec("metrics").tokenizer.split_digits
    assert "<span>" in get_spec("traces").tokenizer.user_defined_symbols
    assert get_spec("code").objective == "significance"


def test_train_and_heldout_never_share_an_input(data):
    sizes = {}
    for splits in data.values():
        for task in splits["train"]:
            train = {e.input for e in splits["train"][task]}
            heldout = {e.input for e in splits["heldout"][task]}
            assert not train & heldout, task
            sizes[task] = (len(train), len(heldout))
    # Every task has data in both splits on the fixtures, within the requested sizes.
    assert all(0 < tr <= 60 and 0 < ho <= 30 for tr, ho in sizes.values()), sizes


def test_log_template_examples_come_from_loghub_ground_truth(data):
    examples = data["logs"]["train"]["log_template"]
    assert {e.meta["source"] for e in examples} == {"loghub:HDFS", "loghub:Hadoop", "loghub:Zookeeper"}
    assert any(e.target == "PacketResponder <*> for block blk_<*> terminating" for e in examples
               + data["logs"]["heldout"]["log_template"])


def test_references_score_one_and_rule_baselines_beat_trivial_answers(data):
    floors = {"log_template": 0.3, "log_level": 0.3, "log_change_summary": 0.3, "metric_pattern": 0.7,
              "metric_describe": 0.5, "trace_slow_path": 0.4, "trace_error_source": 0.0,
              "exception_cause": 0.5, "config_key": 0.7}
    for splits in data.values():
        for task, examples in splits["heldout"].items():
            assert score(task, [e.target for e in examples], examples) == 1.0
            baseline = score(task, rule_baselines(task, [e.input for e in examples]), examples)
            assert baseline >= floors[task], (task, baseline)
            assert baseline > score(task, ["unknown"] * len(examples), examples) or task == "trace_error_source"
    example = data["code"]["heldout"]["config_key"][0]
    assert rule_baseline("config_key", example.input) == rule_baselines("config_key", [example.input])[0]


def test_metrics_score_as_documented():
    assert exact_match(" INFO\n", "INFO") == 1.0 and exact_match("WARN", "INFO") == 0.0
    assert exact_match("Connection \t closed <*>.", "Connection closed <*>") == 1.0  # whitespace, final stop
    assert exact_match("info", "INFO") == 0.0 and exact_match("main.go:17", "main.go 17") == 0.0  # case, punctuation
    assert token_f1("null dereference at main.go:17", "null dereference at svc/main.go:17") == pytest.approx(0.75)
    assert rouge2("cpu of cart rose", "cpu of cart rose") == 1.0 and rouge2("a b", "c d") == 0.0
    example = TaskExample(task="log_level", input="x", target="ERROR", references=("FATAL",))
    assert score("log_level", ["FATAL"], [example]) == 1.0
    with pytest.raises(FlipmoeInputError, match="unknown task"):
        score("nope", ["x"], [example])
    with pytest.raises(FlipmoeInputError, match="predictions"):
        score("log_level", [], [example])


def test_pattern_rule_recognises_clean_shapes():
    rng = np.random.default_rng(0)
    base = 10 + rng.normal(0, 0.2, 48)
    shapes = {"steady": base, "spike": np.where(np.arange(48) == 30, 60.0, base),
              "level_shift_up": base * np.where(np.arange(48) >= 20, 3.0, 1.0),
              "level_shift_down": base * np.where(np.arange(48) >= 20, 0.3, 1.0),
              "trend_up": base * np.linspace(1, 3, 48), "trend_down": base * np.linspace(1, 0.3, 48)}
    for pattern, values in shapes.items():
        text = render_series("cpu_usage", "cart", values.tolist())
        metric, service, parsed = parse_series(text)
        assert (metric, service) == ("cpu_usage", "cart")
        assert np.allclose(parsed, values, rtol=5e-3)
        assert detect_pattern(parsed)[0] == pattern


def _trace() -> Trace:
    # root 100 ms: a 30 ms child (itself calling a 25 ms grandchild) and a 50 ms child.
    spans = {"r": Span(span_id="r", parent=None, service="frontend", operation="GET /", start_ms=0, duration_ms=100,
                       error=False),
             "a": Span(span_id="a", parent="r", service="cart", operation="GetCart", start_ms=5, duration_ms=30,
                       error=True),
             "g": Span(span_id="g", parent="a", service="redis", operation="HGET", start_ms=6, duration_ms=25,
                       error=True),
             "b": Span(span_id="b", parent="r", service="checkout", operation="Place", start_ms=40, duration_ms=50,
                       error=False)}
    return Trace(trace_id="t", spans=spans, children={None: ["r"], "r": ["a", "b"], "a": ["g"]})


def test_trace_tasks_on_a_hand_made_trace():
    trace = _trace()
    assert exclusive_ms(trace, "r") == pytest.approx(20) and exclusive_ms(trace, "a") == pytest.approx(5)
    # The 50 ms leaf holds the most exclusive time; the longest-child rule agrees here.
    assert slow_path(trace) == "frontend > checkout"
    text = render_trace(trace)
    assert text.count("<span>") == 4 == text.count("</span>")
    assert [(d, s) for d, s, *_ in parse_trace(text)] == [(0, "frontend"), (1, "cart"), (2, "redis"), (1, "checkout")]
    assert slow_path_baseline([text]) == ["frontend > checkout"]
    assert rule_baseline("trace_error_source", text) == "redis"
