"""FlipMoE: routing, batching per expert, low-confidence ensembling, loading from a bundle."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

from flipmoe import FlipMoE
from flipmoe.errors import FlipmoeInputError
from router.model import Router
from router.oracle import nll_per_byte
from router.train import RouterTrainConfig, fit_router

EXPERTS = tuple(EXPERT_TASKS)


@pytest.fixture(scope="module")
def experts():  # type: ignore[no-untyped-def]
    return tiny_experts()


@pytest.fixture(scope="module")
def router() -> Router:
    return fit_router(records(120), EXPERTS, config=RouterTrainConfig(c_grid=(3.0,), folds=3))


class CountingExpert:
    """Wraps an expert and records every batch it is asked to answer."""

    def __init__(self, expert) -> None:  # type: ignore[no-untyped-def]
        self.expert, self.name, self.calls = expert, expert.name, []
        self.tokenizer, self.answer_loss = expert.tokenizer, expert.answer_loss

    def generate_batch(self, prompts, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append((list(prompts), kwargs.get("task")))
        return self.expert.generate_batch(prompts, **kwargs)


def confident(router: Router) -> Router:
    return Router(replace(router.config, threshold=0.0), router.weight_EF, router.bias_E, router.card)


def unsure(router: Router) -> Router:
    """A router that cannot tell the experts apart: every request gets 1/4 for each, and a fallback."""
    return Router(replace(router.config, threshold=0.5, top_k=2), 0 * router.weight_EF, 0 * router.bias_E)


def test_generate_answers_with_the_routed_expert(experts, router) -> None:  # type: ignore[no-untyped-def]
    moe = FlipMoE(experts, confident(router))
    prompt = "2026-03-01 10:00:07 ERROR [pool-1] connection to db-1 refused after 3ms"
    out = moe.generate(prompt, task="log_template", max_new_tokens=6)
    assert out.expert == out.routed_to == "logs" and out.candidates == {}
    assert out.text == experts["logs"].generate(prompt, task="log_template", max_new_tokens=6).text
    assert out.confidence == out.router_scores["logs"] == max(out.router_scores.values())
    assert out.route_ms > 0


def test_batches_are_split_per_expert_and_task(experts, router) -> None:  # type: ignore[no-untyped-def]
    counting = {name: CountingExpert(e) for name, e in experts.items()}
    moe = FlipMoE(counting, confident(router))
    batch = records(12, seed=5)
    outs = moe.generate_batch([r.example.input for r in batch], [r.example.task for r in batch], max_new_tokens=3)
    assert [o.expert for o in outs] == [r.label for r in batch]
    for name, expert in counting.items():
        assert len(expert.calls) == 1  # one task per expert in this batch: one padded call each
        prompts, task = expert.calls[0]
        assert task == EXPERT_TASKS[name][0] and len(prompts) == 3
    for out, record in zip(outs, batch, strict=True):  # batched answers equal one-at-a-time answers
        alone = experts[out.expert].generate(record.example.input, task=record.example.task, max_new_tokens=3)
        assert out.text == alone.text


def test_unsure_router_asks_two_experts_and_keeps_the_likelier_answer(experts, router) -> None:  # type: ignore[no-untyped-def]
    moe = FlipMoE(experts, unsure(router))
    prompt = "cpu_usage_percent 1.0 2.0 3.0 99.0"
    out = moe.generate(prompt, task="metric_pattern", max_new_tokens=4)
    assert len(out.candidates) == 2 and out.routed_to in out.candidates
    nll = {name: nll_per_byte(experts[name], prompt, text, task="metric_pattern")
           for name, text in out.candidates.items()}
    assert out.candidate_nll == pytest.approx(nll)
    assert out.expert == min(nll, key=nll.__getitem__) and out.text == out.candidates[out.expert]
    single = moe.generate(prompt, task="metric_pattern", max_new_tokens=4, ensemble=False)
    assert single.candidates == {} and single.expert == single.routed_to


def test_requests_go_to_loaded_experts_only(experts, router) -> None:  # type: ignore[no-untyped-def]
    moe = FlipMoE({"metrics": experts["metrics"]}, confident(router))
    out = moe.generate("2026-03-01 10:00:07 ERROR [pool-1] refused", task="log_template", max_new_tokens=2)
    assert out.routed_to == "logs" and out.expert == "metrics"
    with pytest.raises(FlipmoeInputError, match="none of the router's experts"):
        FlipMoE({"other": experts["logs"]}, router)
    with pytest.raises(FlipmoeInputError, match="2 prompts but 1 tasks"):
        moe.generate_batch(["a", "b"], ["log_template"])
    assert moe.generate_batch([]) == []


def test_from_bundle_loads_experts_and_router(experts, router, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = write_bundle(tmp_path / "bundle", experts, confident(router))
    moe = FlipMoE.from_bundle(bundle)
    assert set(moe.experts) == set(EXPERTS) and moe.router.experts == EXPERTS
    assert moe.manifest["name"] == "flipmoe-tiny"
    prompt = "frontend GET /cart 40ms -> cartservice GetCart 20ms -> redis HGET 5ms status=error"
    assert moe.generate(prompt, max_new_tokens=3).text == FlipMoE(experts, confident(router)).generate(
        prompt, max_new_tokens=3).text


def test_the_decision_takes_its_expert_calls_injected() -> None:
    """`route_and_answer` (what `generate_batch` and the HTTP service share) with experts reached by a function."""
    from experts.interface import Generation
    from router.model import RouteDecision
    from router.moe import ExpertAnswer, route_and_answer

    class FixedRouter:
        def route(self, prompts, tasks=None):  # type: ignore[no-untyped-def]
            unsure = RouteDecision("logs", {"logs": 0.4, "metrics": 0.35, "traces": 0.25}, 0.4, ["metrics"])
            sure = RouteDecision("traces", {"logs": 0.1, "metrics": 0.1, "traces": 0.8}, 0.8, [])
            return [unsure if "?" in p else sure for p in prompts]

    calls = []

    def ask(name, prompts, task, scored):  # type: ignore[no-untyped-def]
        calls.append((name, prompts, scored))
        return [ExpertAnswer(Generation(f"{name}:{p}", name, "stop"), {"logs": 2.0, "metrics": 1.0}.get(name)
                             if s else None) for p, s in zip(prompts, scored, strict=True)]

    outs = route_and_answer(FixedRouter(), ["a?", "b"], available={"logs", "metrics", "traces"}, ask=ask)
    assert sorted(calls) == [("logs", ["a?"], [True]), ("metrics", ["a?"], [True]), ("traces", ["b"], [False])]
    assert (outs[0].expert, outs[0].routed_to, outs[0].text) == ("metrics", "logs", "metrics:a?")
    assert outs[0].candidate_nll == {"logs": 2.0, "metrics": 1.0}
    assert (outs[1].expert, outs[1].candidates) == ("traces", {})
    alone = route_and_answer(FixedRouter(), ["a?"], available={"logs", "metrics"}, ask=ask, ensemble=False)
    assert alone[0].expert == "logs" and alone[0].candidates == {}
