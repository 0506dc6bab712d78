"""FlipMoE: the router and the experts behind one `generate()`.

Each request goes to one expert (the experts do not share a tokenizer, so they are mixed per request,
not per token). When the router is unsure, the request also goes to its fallback experts and the answer
kept is the one its own expert finds likeliest per byte. A batch is split by chosen expert and task, so
each expert decodes its share in one padded batch.

```python
from router.moe import FlipMoE
moe = FlipMoE.from_bundle("build/bundle-nano")
out = moe.generate("2026-01-01 ERROR db-0 connection refused", task="log_template")
out.text, out.expert, out.router_scores, out.confidence
```

The decision (`route_and_answer`) takes the expert calls as an argument, so that the HTTP service, whose
experts live in other processes, decides exactly as `FlipMoE.generate` does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from experts.interface import Constraint
from flipmoe.errors import FlipmoeInputError


@dataclass(frozen=True)
class RoutedGeneration:
    """An answer, the expert that wrote it, and why the router sent the request there."""

    text: str
    expert: str
    """The expert whose answer this is."""
    router_scores: dict[str, float]
    """The router's calibrated probability for every expert."""
    confidence: float
    """The router's probability for the expert it chose first."""
    routed_to: str
    """The router's first choice (differs from `expert` when a fallback's answer was kept)."""
    finish_reason: str = "stop"
    candidates: dict[str, str] = field(default_factory=dict)
    """Every asked expert's answer, when the router was unsure and asked more than one."""
    candidate_nll: dict[str, float] = field(default_factory=dict)
    """Each candidate's negative log-likelihood per byte under its own expert (lower is kept)."""
    route_ms: float = 0.0
    """Time the router took for this request's batch, divided by the batch size."""
    prompt_tokens: int = 0
    """Prompt tokens of the kept answer, as its expert counted them."""
    completion_tokens: int = 0
    """Tokens of the kept answer."""


@dataclass(frozen=True)
class ExpertAnswer:
    """One expert's answer to one request, with its likelihood when it competes with other experts' answers."""

    generation: Any
    """The expert's `experts.interface.Generation`."""
    nll: float | None = None
    """Negative log-likelihood per byte of the answer under the expert that wrote it; None when not asked for."""


AskExperts = Callable[[str, list[str], str | None, list[bool]], list[ExpertAnswer]]
"""(expert name, prompts, task, which answers to score) -> one `ExpertAnswer` per prompt, in order.

How the decision reaches the experts: `answer_batch` on in-process experts, or a call to another process."""


class Routes(Protocol):
    """What `route_and_answer` needs of a router (`router.model.Router`, or a proxy to one)."""

    def route(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> list[Any]: ...


class FlipMoE:
    """A mixture of independently trained experts joined by a learned per-request router."""

    def __init__(self, experts: Mapping[str, Any], router: Any, *, manifest: Mapping[str, Any] | None = None,
                 ) -> None:
        missing = [name for name in router.experts if name not in experts]
        if len(missing) == len(router.experts):
            raise FlipmoeInputError(f"none of the router's experts ({', '.join(router.experts)}) is loaded",
                                    hint="load the bundle the router was trained with")
        self.experts: dict[str, Any] = dict(experts)
        self.router = router
        self.manifest: dict[str, Any] = dict(manifest or {})

    @classmethod
    def from_bundle(cls, directory: str | Path | None = None, *, device: str = "cpu",
                    progress: bool = False) -> FlipMoE:
        """Load a bundle (`router.bundle`); with no directory, the default one (built on first use)."""
        from router.bundle import ensure_bundle, load_bundle

        experts, router, manifest = load_bundle(ensure_bundle(directory, progress=progress), device=device)
        return cls(experts, router, manifest=manifest)

    def generate(self, prompt: str, task: str | None = None, *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                 ensemble: bool = True, constraint: Constraint | None = None) -> RoutedGeneration:
        """Answer one request; `task` (e.g. "log_template") formats the prompt and informs the router; with
        `constraint` the answer follows a grammar (each expert applies it over its own tokenizer)."""
        return self.generate_batch([prompt], [task], max_new_tokens=max_new_tokens, stop=stop,
                                   temperature=temperature, top_p=top_p, seed=seed, ensemble=ensemble,
                                   constraint=constraint)[0]

    def generate_batch(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None, *,
                       max_new_tokens: int = 64, stop: Sequence[str] = (), temperature: float = 0.0,
                       top_p: float = 1.0, seed: int | None = None, ensemble: bool = True,
                       constraint: Constraint | None = None) -> list[RoutedGeneration]:
        """Answer many requests: route them all, then one batched call per (expert, task)."""
        def ask(name: str, batch: list[str], task: str | None, scored: list[bool]) -> list[ExpertAnswer]:
            return answer_batch(self.experts[name], batch, task=task, scored=scored, max_new_tokens=max_new_tokens,
                                stop=stop, temperature=temperature, top_p=top_p, seed=seed, constraint=constraint)

        return route_and_answer(self.router, prompts, tasks, available=self.experts, ask=ask, ensemble=ensemble)

    def route(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> list[Any]:
        """The router's decisions alone (no generation)."""
        return list(self.router.route(list(prompts), tasks))

    def num_parameters(self) -> dict[str, int]:
        return {name: expert.num_parameters() for name, expert in self.experts.items()
                if hasattr(expert, "num_parameters")}


def route_and_answer(router: Routes, prompts: Sequence[str], tasks: Sequence[str | None] | None = None, *,
                     available: Collection[str], ask: AskExperts, ensemble: bool = True) -> list[RoutedGeneration]:
    """FlipMoE's decision: route every request, ask each its experts (one `ask` per expert and task), and
    where the router was unsure and several answered, keep the answer likeliest under its own expert."""
    prompts = list(prompts)
    task_list = list(tasks) if tasks is not None else [None] * len(prompts)
    if len(task_list) != len(prompts):
        raise FlipmoeInputError(f"{len(prompts)} prompts but {len(task_list)} tasks")
    if not prompts:
        return []
    started = time.perf_counter()
    decisions = router.route(prompts, task_list)
    route_ms = (time.perf_counter() - started) * 1000 / len(prompts)
    asked = [experts_to_ask(d, available, ensemble=ensemble) for d in decisions]

    groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for i, names in enumerate(asked):
        for name in names:
            groups[(name, task_list[i])].append(i)
    answers: dict[tuple[int, str], ExpertAnswer] = {}
    for (name, task), indices in groups.items():
        outs = ask(name, [prompts[i] for i in indices], task, [len(asked[i]) > 1 for i in indices])
        for i, out in zip(indices, outs, strict=True):
            answers[(i, name)] = out

    results = []
    for i, (decision, names) in enumerate(zip(decisions, asked, strict=True)):
        candidates: dict[str, str] = {}
        nll: dict[str, float] = {}
        if len(names) > 1:
            candidates = {name: answers[(i, name)].generation.text for name in names}
            nll = {name: _scored(answers[(i, name)], name) for name in names}
            chosen = min(names, key=lambda name: nll[name])
        else:
            chosen = names[0]
        out = answers[(i, chosen)].generation
        results.append(RoutedGeneration(text=out.text, expert=chosen, router_scores=decision.scores,
                                         confidence=decision.confidence, routed_to=decision.expert,
                                         finish_reason=out.finish_reason, candidates=candidates,
                                         candidate_nll=nll, route_ms=route_ms,
                                         prompt_tokens=getattr(out, "prompt_tokens", 0),
                                         completion_tokens=getattr(out, "completion_tokens", 0)))
    return results


def experts_to_ask(decision: Any, available: Collection[str], *, ensemble: bool = True) -> list[str]:
    """The experts a decision asks: its candidates (with `ensemble`, the fallbacks too) that are available;
    if none is, the available expert the router scores highest."""
    names = decision.candidates if ensemble else [decision.expert]
    asked = [name for name in names if name in available]
    if asked:
        return asked
    return [max((n for n in decision.scores if n in available), key=lambda n: decision.scores[n])]


def answer_batch(expert: Any, prompts: Sequence[str], *, task: str | None, scored: Sequence[bool],
                 max_new_tokens: int = 64, stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, constraint: Constraint | None = None) -> list[ExpertAnswer]:
    """One expert's answers to a batch in one call; the answers marked in `scored` are scored by likelihood."""
    from router.oracle import fit_prompt, nll_per_byte

    # Each expert's context must hold the prompt and the answer.
    fitted = [fit_prompt(expert, prompt, task=task, max_new_tokens=max_new_tokens) for prompt in prompts]
    options: dict[str, Any] = {"constraint": constraint} if constraint is not None else {}
    outs = expert.generate_batch(fitted, task=task, max_new_tokens=max_new_tokens, stop=stop,
                                 temperature=temperature, top_p=top_p, seed=seed, **options)
    return [ExpertAnswer(out, nll_per_byte(expert, prompt, out.text, task=task) if score else None)
            for prompt, out, score in zip(fitted, outs, scored, strict=True)]


def stream_answer(expert: Any, prompt: str, *, task: str | None, max_new_tokens: int = 64, stop: Sequence[str] = (),
                  temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
    """One expert's answer as it is decoded, the prompt fitted as `answer_batch` fits it."""
    from router.oracle import fit_prompt

    options: dict[str, Any] = {"task": task, "max_new_tokens": max_new_tokens, "stop": stop,
                               "temperature": temperature, "top_p": top_p, "seed": seed}
    fitted = fit_prompt(expert, prompt, task=task, max_new_tokens=max_new_tokens)
    if hasattr(expert, "stream"):
        yield from expert.stream(fitted, **options)
    else:
        yield expert.generate(fitted, **options).text


def _scored(answer: ExpertAnswer, name: str) -> float:
    if answer.nll is None:
        raise RuntimeError(f"expert {name!r} competed for an answer but its answer was not scored")
    return answer.nll


__all__ = ["AskExperts", "ExpertAnswer", "FlipMoE", "RoutedGeneration", "answer_batch", "experts_to_ask",
           "route_and_answer", "stream_answer"]
