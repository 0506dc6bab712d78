"""The router: encoder, oracle labels, the calibrated classifier, its checkpoint and its figures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tiny_experts import EXPERT_TASKS, TASK_EXPERT, records, tiny_experts

from data_pipeline.examples import TaskExample
from flipmoe.errors import FlipmoeInputError
from router.encoder import EncoderConfig, HashedNgramEncoder
from router.model import Router, RouterConfig
from router.oracle import label_requests, nll_per_byte, split_records
from router.train import (
    RouterTrainConfig,
    expected_calibration_error,
    fit_router,
    fit_temperature,
    routing_figures,
)

EXPERTS = tuple(EXPERT_TASKS)
FAST = RouterTrainConfig(c_grid=(3.0,), folds=3)


def exact(task: str, predictions: list[str], examples: list[TaskExample]) -> float:
    return float(np.mean([p.strip() == e.target.strip() for p, e in zip(predictions, examples, strict=True)]))


@pytest.fixture(scope="module")
def router() -> Router:
    return fit_router(records(160, noise=0.1), EXPERTS, config=FAST)


def test_encoder_is_stateless_and_reads_the_task() -> None:
    encoder = HashedNgramEncoder(EncoderConfig(n_features=1024, task_features=16))
    a = encoder.encode(["ERROR db refused", "cpu 1 2 3"], ["log_template", None])
    b = HashedNgramEncoder(EncoderConfig(n_features=1024, task_features=16)).encode(["ERROR db refused"], None)
    assert a.shape == (2, 1024 + 16)
    assert np.allclose(a[0, :1024].toarray(), b[0, :1024].toarray())  # same text, same features
    assert a[0, 1024:].nnz == 1 and a[1, 1024:].nnz == 0 and b[0, 1024:].nnz == 0


def test_encoder_reads_head_and_tail_of_long_requests() -> None:
    encoder = HashedNgramEncoder(EncoderConfig(max_chars=64, task_features=0))
    long = "HEAD" + "x" * 10_000 + "TAIL"
    assert np.allclose(encoder.encode([long]).toarray(),
                       encoder.encode(["HEAD" + "x" * 28 + "\n" + "x" * 28 + "TAIL"]).toarray())


def test_bad_configs_say_what_is_wrong() -> None:
    with pytest.raises(FlipmoeInputError, match="n-gram"):
        EncoderConfig(ngram_min=3, ngram_max=2)
    with pytest.raises(FlipmoeInputError, match="distinct"):
        RouterConfig(experts=("logs", "logs"))
    with pytest.raises(FlipmoeInputError, match="shapes"):
        Router(RouterConfig(experts=("a", "b")), np.zeros((2, 3)), np.zeros(2))


def test_router_learns_the_modalities_with_and_without_task(router: Router) -> None:
    held_out = records(40, seed=7)
    prompts = [r.example.input for r in held_out]
    tasks = [r.example.task for r in held_out]
    expected = [TASK_EXPERT[t] for t in tasks]
    assert [d.expert for d in router.route(prompts, tasks)] == expected
    assert np.mean([d.expert == e for d, e in zip(router.route(prompts), expected, strict=True)]) >= 0.95
    card = router.card
    assert card["requests"] == 160 and set(card["label_counts"]) == set(EXPERTS)
    assert card["cross_validated"]["accuracy_without_task"] is not None
    assert 0 <= card["cross_validated"]["ece"] <= 1 and card["temperature"] > 0


def test_decisions_carry_calibrated_scores_and_fallbacks(router: Router) -> None:
    (decision,) = router.route(["2026-03-01 10:00:07 ERROR [pool-1] connection refused"])
    assert set(decision.scores) == set(EXPERTS)
    assert sum(decision.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert decision.confidence == decision.scores[decision.expert] == max(decision.scores.values())
    (unsure,) = router.route(["?"], threshold=1.0, top_k=3)
    ranked = sorted(unsure.scores, key=unsure.scores.__getitem__, reverse=True)
    assert unsure.candidates == ranked[:3] and len(unsure.fallback) == 2
    (sure,) = router.route(["?"], threshold=0.0)
    assert sure.fallback == [] and sure.candidates == [sure.expert]


def test_save_and_load_give_identical_scores(router: Router, tmp_path) -> None:
    router.save(tmp_path / "router")
    loaded = Router.load(tmp_path / "router")
    prompts = [r.example.input for r in records(12, seed=3)]
    assert loaded.config == router.config and loaded.card == router.card
    assert np.array_equal(loaded.probabilities(prompts), router.probabilities(prompts))
    with pytest.raises(FlipmoeInputError, match="not a router checkpoint"):
        Router.load(tmp_path / "missing")


def test_labels_naming_one_or_two_experts_still_fit() -> None:
    only_logs = [r for r in records(40) if r.label == "logs"]
    constant = fit_router(only_logs, EXPERTS, config=FAST)
    assert {d.expert for d in constant.route(["anything", "cpu 1 2 3"])} == {"logs"}
    two = [r for r in records(80) if r.label in ("logs", "metrics")]
    binary = fit_router(two, EXPERTS, config=FAST)
    assert [d.expert for d in binary.route([r.example.input for r in two[:8]])] == [r.label for r in two[:8]]
    with pytest.raises(FlipmoeInputError, match="does not know"):
        fit_router(records(8), ("logs",), config=FAST)


def test_temperature_scaling_recovers_the_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 4))
    scaled = np.exp(logits / 2.5)
    probs = scaled / scaled.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)
    assert expected_calibration_error(probs, labels) < 0.03
    assert expected_calibration_error(np.eye(4)[(labels + 1) % 4], labels) == pytest.approx(1.0)


def test_oracle_labels_come_from_the_experts_answers() -> None:
    experts = tiny_experts(("logs", "metrics"))
    examples = [r.example for r in records(8) if r.label in ("logs", "metrics")]
    answers = {name: e.generate_batch([x.input for x in examples], task=examples[0].task, max_new_tokens=4)
               for name, e in experts.items()}
    # Make "metrics" right on the first example, nobody right on the others (ties -> likelihood).
    examples[0] = TaskExample(task=examples[0].task, input=examples[0].input, target=answers["metrics"][0].text)
    labelled = label_requests(experts, examples[:1], scorer=exact, max_new_tokens=4)
    assert labelled[0].label == "metrics" or labelled[0].scores["logs"] == labelled[0].scores["metrics"]
    assert set(labelled[0].predictions) == {"logs", "metrics"}
    tied = label_requests(experts, [TaskExample(task="log_template", input="x", target="\x00never")],
                          scorer=exact, max_new_tokens=2)[0]
    assert tied.scores == {"logs": 0.0, "metrics": 0.0}
    assert tied.label == min(tied.nll_per_byte, key=tied.nll_per_byte.__getitem__)
    expert = experts["logs"]
    per_token = expert.answer_loss("x", "ERROR", task="log_template")
    n_tokens = len(expert.tokenizer.encode("ERROR", eos=True))
    assert nll_per_byte(expert, "x", "ERROR", task="log_template") == pytest.approx(per_token * n_tokens / 6)


def test_split_is_stable_and_disjoint() -> None:
    labelled = records(200)
    train, test = split_records(labelled, test_fraction=0.5)
    again_train, again_test = split_records(list(reversed(labelled)), test_fraction=0.5)
    assert len(train) + len(test) == 200 and 60 < len(test) < 140
    assert {r.example.input for r in test} == {r.example.input for r in again_test}
    assert not {r.example.input for r in train} & {r.example.input for r in test}


def test_routing_figures_compare_policies(router: Router) -> None:
    held_out = records(40, seed=11)
    figures = routing_figures(router, held_out, owners=TASK_EXPERT, scorer=exact)
    assert figures["accuracy"]["router"] == 1.0 and figures["accuracy"]["task_label"] == 1.0
    assert figures["accuracy"]["random"] == 0.25
    scores = figures["task_scores"]
    assert all(v == 1.0 for v in scores["oracle"].values())
    assert all(v == pytest.approx(0.25) for v in scores["random"].values())
    assert set(scores) >= {"router", "router_without_task", "task_label", *(f"expert:{e}" for e in EXPERTS)}


def test_router_code_imports_neither_ray_nor_torch_distributed() -> None:
    code = ("import sys, router.model, router.train, router.oracle, router.moe, router.bundle; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
