"""What the HTTP app calls: the Director as an `Analyzer`, a model bundle as a `ModelService`.

Plain classes (no Ray Serve here), so the app can be tested with them directly and the Serve
deployments (`flipmoe.serve.deployments`) wrap them one per replica. Routed generation is FlipMoE's
own decision (`router.moe.route_and_answer`); only the way to reach the router and the experts differs
between one process (`BundleModels`) and Ray Serve (deployment handles).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from router.moe import ExpertAnswer, Routes, answer_batch, experts_to_ask, route_and_answer, stream_answer

ROUTED_MODEL = "flipmoe"
"""The model name of routed generation (the router picks the expert)."""


class DirectorAnalyzer:
    """Runs the Director on an incident directory and writes report.json, report.md and report.html.

    The Director runs its steps in this process (a Serve replica is already a Ray actor; replicas,
    not nested tasks, are the unit of parallelism there). One incident at a time per instance.
    """

    def __init__(self, *, bundle: Path | None = None, use_model: bool = True, history: Path | None = None,
                 diagnosis_model: Path | None = None, ranking_model: Path | None = None,
                 gate: Path | None = None) -> None:
        from director.actors.base import RunSettings
        from director.director import Director
        from director.runtime import LocalExecutor

        self.bundle = bundle if use_model else None
        # `history`: past incidents of the served system, whose alerts weigh the incidents' alerts (`--history`);
        # `diagnosis_model`, `ranking_model`, `gate`: models in place of the shipped ones (`--diagnosis-model`, ...).
        self.director = Director(LocalExecutor(), settings=RunSettings(bundle=self.bundle, history=history,
                                                                       diagnosis_model=diagnosis_model,
                                                                       ranking_model=ranking_model,
                                                                       gate=gate))
        self._lock = threading.Lock()

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        from director.render import write_report
        from flipmoe.telemetry import read_incident

        progress("reading the incident")
        incident = read_incident(incident_dir)
        modalities = ", ".join(incident.modalities) or "no telemetry"
        progress(f"analysing ({modalities})")
        started = time.perf_counter()
        with self._lock:
            report = self.director.analyse(incident, progress=lambda stage: progress(f"analysing ({modalities}): "
                                                                                      f"{stage}"))
        progress("writing the report")
        write_report(report, incident, out_dir)
        return {
            "incident": report.incident,
            "root_causes": [{"rank": c.rank, "service": c.service, "pod": c.pod, "fault_type": c.fault_type,
                             "score": c.score} for c in report.root_causes[:3]],
            "runbook": report.runbook.name,
            "gaps": len(report.gaps),
            "seconds": round(time.perf_counter() - started, 3),
        }


class ExpertCalls(Protocol):
    """How the model service reaches one expert by name; `options` are the generation options but the task."""

    def answer(self, name: str, prompts: list[str], task: str | None, scored: list[bool],
               options: dict[str, Any]) -> list[ExpertAnswer]: ...

    def stream(self, name: str, prompt: str, task: str | None, options: dict[str, Any]) -> Iterator[str]: ...


class RoutedModels:
    """The app's `ModelService`: each expert by name, and `flipmoe`, FlipMoE's routed generation.

    `flipmoe` decides as `FlipMoE.generate` does, fallback experts included: the router and the experts
    are injected, in this process or behind deployment handles.
    """

    def __init__(self, router: Routes, expert_names: Sequence[str], experts: ExpertCalls) -> None:
        self.router, self.expert_names, self.experts = router, list(expert_names), experts

    def model_names(self) -> list[str]:
        return [ROUTED_MODEL, *self.expert_names]

    def route(self, prompt: str, task: str | None) -> dict[str, Any]:
        started = time.perf_counter()
        decision = self.router.route([prompt], [task])[0]
        return {"expert": decision.expert, "scores": decision.scores, "confidence": decision.confidence,
                "fallback": list(decision.fallback), "asked": experts_to_ask(decision, self.expert_names),
                "route_ms": round((time.perf_counter() - started) * 1000, 3)}

    def generate(self, model: str, prompt: str, *, task: str | None, **options: Any) -> dict[str, Any]:
        if model != ROUTED_MODEL:
            return asdict(self.experts.answer(model, [prompt], task, [False], options)[0].generation)

        def ask(name: str, prompts: list[str], task: str | None, scored: list[bool]) -> list[ExpertAnswer]:
            return self.experts.answer(name, prompts, task, scored, options)

        routed = route_and_answer(self.router, [prompt], [task], available=self.expert_names, ask=ask)[0]
        return asdict(routed)

    def stream(self, model: str, prompt: str, *, task: str | None, **options: Any) -> Iterator[str]:
        if model == ROUTED_MODEL:
            asked = experts_to_ask(self.router.route([prompt], [task])[0], self.expert_names)
            if len(asked) > 1:  # the answer kept is known only once every candidate has finished
                yield self.generate(model, prompt, task=task, **options)["text"]
                return
            model = asked[0]
        yield from self.experts.stream(model, prompt, task, options)


class LocalExperts:
    """A bundle's experts in this process, each loaded on first use by the bundle's loader."""

    def __init__(self, bundle: Path, manifest: dict[str, Any]) -> None:
        self.bundle, self.manifest = bundle, manifest
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        from router.bundle import load_expert

        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_expert(self.bundle, name, manifest=self.manifest)
            return self._loaded[name]

    def answer(self, name: str, prompts: list[str], task: str | None, scored: list[bool],
               options: dict[str, Any]) -> list[ExpertAnswer]:
        return answer_batch(self.get(name), prompts, task=task, scored=scored, **options)

    def stream(self, name: str, prompt: str, task: str | None, options: dict[str, Any]) -> Iterator[str]:
        yield from stream_answer(self.get(name), prompt, task=task, **options)


class BundleModels(RoutedModels):
    """A model bundle served from this process: its router, and its experts (all loaded up front unless
    `preload=False`, then each on first use)."""

    def __init__(self, bundle: Path, *, preload: bool = True) -> None:
        from router.bundle import load_router, read_manifest

        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        self.local = LocalExperts(self.bundle, self.manifest)
        super().__init__(load_router(self.bundle, manifest=self.manifest), list(self.manifest["experts"]),
                         self.local)
        if preload:
            for name in self.expert_names:
                self.local.get(name)
