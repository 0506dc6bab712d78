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
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
                 ensemble: bool = True) -> RoutedGeneration:
        """Answer one request; `task` (e.g. "log_template") formats the prompt and informs the router."""
        return self.generate_batch([prompt], [task], max_new_tokens=max_new_tokens, stop=stop,
                                   temperature=temperature, top_p=top_p, seed=seed, ensemble=ensemble)[0]

    def generate_batch(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None, *,
                       max_new_tokens: int = 64, stop: Sequence[str] = (), temperature: float = 0.0,
                       top_p: float = 1.0, seed: int | None = None, ensemble: bool = True,
                       ) -> list[RoutedGeneration]:
        """Answer many requests: route them all, then one batched call per (expert, task)."""
        from router.oracle import fit_prompt, nll_per_byte

        prompts = list(prompts)
        task_list = list(tasks) if tasks is not None else [None] * len(prompts)
        if len(task_list) != len(prompts):
            raise FlipmoeInputError(f"{len(prompts)} prompts but {len(task_list)} tasks")
        if not prompts:
            return []
        started = time.perf_counter()
        decisions = self.router.route(prompts, task_list)
        route_ms = (time.perf_counter() - started) * 1000 / len(prompts)
        asked = [self._candidates(d.candidates if ensemble else [d.expert], d.scores) for d in decisions]

        groups: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for i, names in enumerate(asked):
            for name in names:
                groups[(name, task_list[i])].append(i)
        answers: dict[tuple[int, str], Any] = {}
        fitted: dict[tuple[int, str], str] = {}
        for (name, task), indices in groups.items():
            expert = self.experts[name]
            for i in indices:  # each expert's context must hold the prompt and the answer
                fitted[(i, name)] = fit_prompt(expert, prompts[i], task=task, max_new_tokens=max_new_tokens)
            outs = expert.generate_batch([fitted[(i, name)] for i in indices], task=task,
                                         max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                                         top_p=top_p, seed=seed)
            for i, out in zip(indices, outs, strict=True):
                answers[(i, name)] = out

        results = []
        for i, (decision, names) in enumerate(zip(decisions, asked, strict=True)):
            candidates, nll = {}, {}
            if len(names) > 1:
                candidates = {name: answers[(i, name)].text for name in names}
                nll = {name: nll_per_byte(self.experts[name], fitted[(i, name)], text, task=task_list[i])
                       for name, text in candidates.items()}
                chosen = min(names, key=lambda name: nll[name])
            else:
                chosen = names[0]
            out = answers[(i, chosen)]
            results.append(RoutedGeneration(text=out.text, expert=chosen, router_scores=decision.scores,
                                             confidence=decision.confidence, routed_to=decision.expert,
                                             finish_reason=out.finish_reason, candidates=candidates,
                                             candidate_nll=nll, route_ms=route_ms))
        return results

    def route(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> list[Any]:
        """The router's decisions alone (no generation)."""
        return list(self.router.route(list(prompts), tasks))

    def _candidates(self, names: Sequence[str], scores: Mapping[str, float]) -> list[str]:
        """The decision's experts that are loaded; if none is, the loaded expert the router scores highest."""
        loaded = [name for name in names if name in self.experts]
        if loaded:
            return loaded
        return [max((n for n in scores if n in self.experts), key=lambda n: scores[n])]

    def num_parameters(self) -> dict[str, int]:
        return {name: expert.num_parameters() for name, expert in self.experts.items()
                if hasattr(expert, "num_parameters")}
