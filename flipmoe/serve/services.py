"""What the HTTP app calls: the Director as an `Analyzer`, a model bundle as a `ModelService`.

Plain classes (no Ray Serve here), so the app can be tested with them directly and the Serve
deployments (`flipmoe.serve.deployments`) wrap them one per replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flipmoe.errors import FlipmoeInputError

ROUTED_MODEL = "flipmoe"
"""The model name of routed generation (the router picks the expert)."""


class DirectorAnalyzer:
    """Runs the Director on an incident directory and writes report.json, report.md and report.html.

    The Director runs its steps in this process (a Serve replica is already a Ray actor; replicas,
    not nested tasks, are the unit of parallelism there). One incident at a time per instance.
    """

    def __init__(self, *, bundle: Path | None = None, use_model: bool = True) -> None:
        from director.actors.base import RunSettings
        from director.director import Director
        from director.runtime import LocalExecutor

        self.bundle = bundle if use_model else None
        self.director = Director(LocalExecutor(), settings=RunSettings(bundle=self.bundle))
        self._lock = threading.Lock()

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        from director.render import write_report
        from flipmoe.telemetry import read_incident

        progress("reading the incident")
        incident = read_incident(incident_dir)
        progress(f"analysing ({', '.join(incident.modalities) or 'no telemetry'})")
        started = time.perf_counter()
        with self._lock:
            report = self.director.analyse(incident)
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


class BundleModels:
    """A model bundle's experts and router behind the app's `ModelService` interface.

    With `load_experts=False` only the manifest and the router are read, and experts are loaded on
    demand (`load_expert`): the Serve Experts deployment multiplexes them that way.
    """

    def __init__(self, bundle: Path, *, load_experts: bool = True) -> None:
        from router.bundle import read_manifest
        from router.model import Router

        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        self.router = Router.load(self.bundle / self.manifest.get("router", "router"))
        self.expert_names = list(self.manifest["experts"])
        self._experts: dict[str, Any] = {}
        self._lock = threading.Lock()
        if load_experts:
            for name in self.expert_names:
                self.load_expert(name)

    def model_names(self) -> list[str]:
        return [ROUTED_MODEL, *self.expert_names]

    def load_expert(self, name: str) -> Any:
        from router.bundle import load_experts

        if name not in self.expert_names:
            raise FlipmoeInputError(f"unknown expert {name!r}", hint=f"choose one of {', '.join(self.expert_names)}")
        with self._lock:
            if name not in self._experts:
                if self.manifest["experts"][name].get("kind", "local") == "local":
                    from experts.expert import Expert

                    self._experts[name] = Expert.from_checkpoint(self.bundle / self.manifest["experts"][name]["path"])
                else:
                    self._experts[name] = load_experts(self.bundle)[name]
            return self._experts[name]

    def route(self, prompt: str, task: str | None) -> dict[str, Any]:
        started = time.perf_counter()
        decision = self.router.route([prompt], [task])[0]
        return {"expert": decision.expert, "scores": decision.scores, "confidence": decision.confidence,
                "fallback": list(decision.fallback), "route_ms": round((time.perf_counter() - started) * 1000, 3)}

    def generate(self, model: str, prompt: str, **options: Any) -> dict[str, Any]:
        expert, decision = self._expert_for(model, prompt, options.get("task"))
        result = self.generate_with(self.load_expert(expert), prompt, **options)
        if decision is not None:
            result["router_scores"] = decision["scores"]
        return result

    def stream(self, model: str, prompt: str, **options: Any) -> Iterator[str]:
        expert, _ = self._expert_for(model, prompt, options.get("task"))
        yield from self.stream_with(self.load_expert(expert), prompt, **options)

    def generate_with(self, expert: Any, prompt: str, **options: Any) -> dict[str, Any]:
        return asdict(expert.generate(prompt, **options))

    def stream_with(self, expert: Any, prompt: str, **options: Any) -> Iterator[str]:
        if hasattr(expert, "stream"):
            yield from expert.stream(prompt, **options)
        else:
            yield expert.generate(prompt, **options).text

    def _expert_for(self, model: str, prompt: str, task: str | None) -> tuple[str, dict[str, Any] | None]:
        if model != ROUTED_MODEL:
            return model, None
        decision = self.route(prompt, task)
        return decision["expert"], decision
