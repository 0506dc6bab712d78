"""The Ray Serve application: ingress, director, router and experts as deployments composed with `.bind()`.

```
Ingress (FastAPI, job threads) ──► Director     (one warm RCA runtime per replica)
                               ──► Router       (the bundle's router, loaded once per replica)
                               ──► Experts      (multiplexed: each replica keeps the experts it was asked for)
```
The Ingress decides routed requests as `FlipMoE.generate` does (`router.moe.route_and_answer`), asking the
Router deployment for decisions and the Experts deployment for answers and their likelihoods.
Deployments are plain classes: unit tests call the services behind them directly (`flipmoe.serve.services`);
`build_application` is what `flipmoe serve` and the Serve config in `infra/serve/` run.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from flipmoe.config import FlipmoeConfig, from_dict, to_dict
from flipmoe.serve.app import ProgressFn, ServeSettings, api_tokens, create_app, default_data_dir
from flipmoe.serve.services import DirectorAnalyzer, RoutedModels
from flipmoe.toolkits.diagnose import read_model as read_diagnosis_model
from flipmoe.toolkits.ranking import read_model as read_ranking_model
from router.bundle import load_expert, load_router, read_manifest
from router.gate import read_gate
from router.moe import ExpertAnswer, answer_batch, stream_answer

log = logging.getLogger(__name__)

MAX_EXPERTS_PER_REPLICA = 8
"""Experts one Experts replica keeps loaded; the least recently used is dropped beyond that."""

REPLICA_CPUS = {"Ingress": 0.5, "Director": 1.0, "Router": 0.5, "Experts": 1.0}
"""CPUs one replica of each deployment asks for when the cluster has them; `build_application` sets them
(scaled by `deployment_cpus`), so the deployment decorators name none."""


def deployment_cpus(available: float, *, director_replicas: int = 1, with_models: bool = True) -> dict[str, float]:
    """CPUs per replica of each deployment so that all replicas fit in `available` CPUs together.

    Ray schedules a replica only where its CPUs are free: asking for more than the cluster has leaves a
    replica pending forever and `serve.run` waiting with it (3 CPUs asked on a 2-core machine). On a small
    machine every request is scaled down by the same factor (rounded down to 0.01 CPU).
    """
    wanted = {name: cpus for name, cpus in REPLICA_CPUS.items() if with_models or name not in ("Router", "Experts")}
    total = sum(cpus * (director_replicas if name == "Director" else 1) for name, cpus in wanted.items())
    scale = min(1.0, available / total) if total else 1.0
    return {name: math.floor(cpus * scale * 100) / 100 for name, cpus in wanted.items()}


@serve.deployment(name="Director", max_ongoing_requests=4)
class Director:
    """Runs incidents through the Director / Actor runtime; the runtime stays warm between incidents."""

    def __init__(self, bundle: str | None, use_model: bool = True, history: str | None = None,
                 diagnosis_model: str | None = None, ranking_model: str | None = None, gate: str | None = None
                 ) -> None:
        self.analyzer = DirectorAnalyzer(bundle=Path(bundle) if bundle else None, use_model=use_model,
                                         history=Path(history) if history else None,
                                         diagnosis_model=Path(diagnosis_model) if diagnosis_model else None,
                                         ranking_model=Path(ranking_model) if ranking_model else None,
                                         gate=Path(gate) if gate else None)

    def analyse(self, incident_dir: str, out_dir: str) -> Iterator[dict[str, Any]]:
        """Streamed: `{"progress": stage}` as the analysis goes, then `{"summary": ...}`.

        The job's progress lives in the ingress's job store; streaming the stages back is how it learns
        them from a replica that may sit on another node.
        """
        stages: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["summary"] = self.analyzer(Path(incident_dir), Path(out_dir), stages.put)
            except BaseException as err:  # re-raised below, in the replica's request
                outcome["error"] = err
            finally:
                stages.put(None)

        worker = threading.Thread(target=run, name="director-analyse", daemon=True)
        worker.start()
        while (stage := stages.get()) is not None:
            yield {"progress": stage}
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield {"summary": outcome["summary"]}


@serve.deployment(name="Router")
class Router:
    """The bundle's router: which experts should answer each request (`router.model.RouteDecision`)."""

    def __init__(self, bundle: str) -> None:
        self.router = load_router(bundle)

    def route(self, prompts: list[str], tasks: list[str | None] | None) -> list[Any]:
        return self.router.route(prompts, tasks)


@serve.deployment(name="Experts")
class Experts:
    """Experts multiplexed by name (`multiplexed_model_id`): loaded on first use, kept while they are used."""

    def __init__(self, bundle: str) -> None:
        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)

    @serve.multiplexed(max_num_models_per_replica=MAX_EXPERTS_PER_REPLICA)
    async def get_expert(self, name: str) -> Any:
        return load_expert(self.bundle, name, manifest=self.manifest)

    async def answer(self, prompts: list[str], task: str | None, scored: list[bool],
                     options: dict[str, Any]) -> list[ExpertAnswer]:
        expert = await self.get_expert(serve.get_multiplexed_model_id())
        return answer_batch(expert, prompts, task=task, scored=scored, **options)

    async def stream(self, prompt: str, task: str | None, options: dict[str, Any]) -> AsyncIterator[str]:
        expert = await self.get_expert(serve.get_multiplexed_model_id())
        for delta in stream_answer(expert, prompt, task=task, **options):
            yield delta


# Probes and job polls must not queue behind chats: generation is bounded inside the app (429 beyond it).
@serve.deployment(name="Ingress", max_ongoing_requests=64)
@serve.ingress()
class Ingress:
    """The HTTP API; its job threads hand incidents to the Director deployment."""

    def __init__(self, settings: dict[str, Any], director: DeploymentHandle, router: DeploymentHandle | None,
                 experts: DeploymentHandle | None, expert_names: list[str],
                 config: dict[str, Any] | None = None) -> None:
        self.settings = ServeSettings(**{**settings, "data_dir": Path(settings["data_dir"])})
        self.config = from_dict(FlipmoeConfig, config or {})
        self.director, self.router, self.experts, self.expert_names = director, router, experts, expert_names

    def __serve_build_asgi_app__(self) -> FastAPI:
        models = (RoutedModels(_RouterHandle(self.router), self.expert_names, _ExpertHandles(self.experts))
                  if self.router and self.experts else None)
        return create_app(self.settings, analyzer=_HandleAnalyzer(self.director), models=models, config=self.config)


class _HandleAnalyzer:
    """The app's `Analyzer` over the Director deployment; a dead replica is retried on another one."""

    def __init__(self, director: DeploymentHandle, attempts: int = 3) -> None:
        self.director, self.attempts = director, attempts

    def __call__(self, incident_dir: Path, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        progress("queued at the director")
        for attempt in range(1, self.attempts + 1):
            try:
                return self._analyse(incident_dir, out_dir, progress)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as err:
                log.warning("director replica died on attempt %d for %s: %s", attempt, incident_dir, err)
                progress(f"director replica lost (attempt {attempt}); retrying")
                if attempt == self.attempts:
                    raise RuntimeError(f"the director replica died {attempt} times while analysing") from err
        raise AssertionError("unreachable")

    def _analyse(self, incident_dir: Path, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
        updates = self.director.options(stream=True).analyse.remote(str(incident_dir), str(out_dir))
        for update in cast(DeploymentResponseGenerator[dict[str, Any]], updates):
            if "summary" in update:
                return update["summary"]
            progress(update["progress"])
        raise RuntimeError("the director replica ended its answer without a summary")


class _RouterHandle:
    """The Router deployment as the router FlipMoE's decision consults."""

    def __init__(self, router: DeploymentHandle) -> None:
        self.router = router

    def route(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> list[Any]:
        return self.router.route.remote(list(prompts), None if tasks is None else list(tasks)).result()


class _ExpertHandles:
    """The Experts deployment as `ExpertCalls`: each call goes to a replica that has (or loads) that expert."""

    def __init__(self, experts: DeploymentHandle) -> None:
        self.experts = experts

    def answer(self, name: str, prompts: list[str], task: str | None, scored: list[bool],
               options: dict[str, Any]) -> list[ExpertAnswer]:
        return self.experts.options(multiplexed_model_id=name).answer.remote(prompts, task, scored, options).result()

    def stream(self, name: str, prompt: str, task: str | None, options: dict[str, Any]) -> Iterator[str]:
        response = self.experts.options(multiplexed_model_id=name, stream=True).stream.remote(prompt, task, options)
        # Ray types `.remote` as either response kind; a `stream=True` handle always gives the generator.
        yield from cast(DeploymentResponseGenerator[str], response)


def build_application(settings: ServeSettings, *, bundle: Path | None, use_model: bool = True,
                      director_replicas: int = 1, cpus: float | None = None,
                      config: FlipmoeConfig | None = None, history: Path | None = None,
                      diagnosis_model: Path | None = None, ranking_model: Path | None = None,
                      gate: Path | None = None) -> Application:
    """The composed application: `serve.run(build_application(...))`.

    `cpus`: the CPUs the replicas may take together (default: those of the connected Ray cluster).
    `config`: telemetry backends and delivery targets of alert jobs.
    `history`: a folder of the system's past incidents, the alert history of every analysis (`rca --history`).
    `diagnosis_model`, `ranking_model`, `gate`: the models of every analysis, instead of the shipped ones (`rca
    --diagnosis-model`, `--ranking-model`, `--gate`).
    """
    sizes = deployment_cpus(_cluster_cpus() if cpus is None else cpus, director_replicas=director_replicas,
                            with_models=bundle is not None)

    def sized(deployment: Any, name: str, **options: Any) -> Any:
        # `@serve.deployment` turns each class into a `Deployment` (with `.options` and `.bind`), but mypy
        # keeps the undecorated class type for decorated classes, hence `Any`.
        return deployment.options(ray_actor_options={"num_cpus": sizes[name]}, **options)

    director = sized(Director, "Director", num_replicas=director_replicas).bind(
        *(str(path) if path else None for path in (bundle,)), use_model,
        *(str(path) if path else None for path in (history, diagnosis_model, ranking_model, gate)))
    router = sized(Router, "Router").bind(str(bundle)) if bundle else None
    experts = sized(Experts, "Experts").bind(str(bundle)) if bundle else None
    expert_names = list(read_manifest(bundle)["experts"]) if bundle else []
    fields = asdict(settings)
    fields["data_dir"] = str(Path(settings.data_dir).resolve())
    return sized(Ingress, "Ingress").bind(fields, director, router, experts, expert_names,
                                          to_dict(config or FlipmoeConfig()))


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0)) if ray.is_initialized() else sum(REPLICA_CPUS.values())


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for `serve run` / Serve config files: `import_path: flipmoe.serve.deployments:app_builder`."""
    settings = ServeSettings(data_dir=Path(args["data_dir"]) if args.get("data_dir") else default_data_dir(),
                             tokens=api_tokens(args.get("tokens")),
                             auth=args.get("auth", "auto"), host=args.get("host", "0.0.0.0"),
                             workers=int(args.get("workers", 2)))
    bundle, config = args.get("bundle"), args.get("config")
    def path_of(field: str) -> Path | None:
        return Path(args[field]) if args.get(field) else None

    for field, read in (("diagnosis_model", read_diagnosis_model), ("ranking_model", read_ranking_model),
                        ("gate", read_gate)):
        if args.get(field):
            read(args[field])  # a bad file stops the deploy with its reason, before any replica starts
    return build_application(settings, bundle=Path(bundle) if bundle else None,
                             director_replicas=int(args.get("director_replicas", 1)),
                             config=FlipmoeConfig.load(config) if config else None,
                             history=Path(args["history"]) if args.get("history") else None,
                             diagnosis_model=path_of("diagnosis_model"), ranking_model=path_of("ranking_model"),
                             gate=path_of("gate"))
