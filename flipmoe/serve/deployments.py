"""The Ray Serve application: ingress, director, router and experts as deployments composed with `.bind()`.

```
Ingress (FastAPI, job threads) ──► Director     (one warm RCA runtime per replica)
                               ──► Router       (the bundle's router, loaded once per replica)
                               ──► Experts      (multiplexed: each replica keeps the experts it was asked for)
```
Deployments are plain classes: unit tests call the services behind them directly (`flipmoe.serve.services`);
`build_application` is what `flipmoe serve` and the Serve config in `infra/serve/` run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from flipmoe.serve.app import ServeSettings, api_tokens, create_app
from flipmoe.serve.services import BundleModels, DirectorAnalyzer

log = logging.getLogger(__name__)

MAX_EXPERTS_PER_REPLICA = 8
"""Experts one Experts replica keeps loaded; the least recently used is dropped beyond that."""


@serve.deployment(name="Director", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class Director:
    """Runs incidents through the Director / Actor runtime; the runtime stays warm between incidents."""

    def __init__(self, bundle: str | None, use_model: bool = True) -> None:
        self.analyzer = DirectorAnalyzer(bundle=Path(bundle) if bundle else None, use_model=use_model)

    def analyse(self, incident_dir: str, out_dir: str) -> dict[str, Any]:
        return self.analyzer(Path(incident_dir), Path(out_dir), lambda stage: None)


@serve.deployment(name="Router", ray_actor_options={"num_cpus": 0.5})
class Router:
    """The bundle's router: which expert should answer a request."""

    def __init__(self, bundle: str) -> None:
        self.models = BundleModels(Path(bundle), load_experts=False)

    def route(self, prompt: str, task: str | None) -> dict[str, Any]:
        return self.models.route(prompt, task)

    def model_names(self) -> list[str]:
        return self.models.model_names()


@serve.deployment(name="Experts", ray_actor_options={"num_cpus": 1})
class Experts:
    """Experts multiplexed by name (`multiplexed_model_id`): loaded on first use, kept while they are used."""

    def __init__(self, bundle: str) -> None:
        self.bundle = Path(bundle)
        self.models = BundleModels(self.bundle, load_experts=False)

    @serve.multiplexed(max_num_models_per_replica=MAX_EXPERTS_PER_REPLICA)
    async def get_expert(self, name: str) -> Any:
        return self.models.load_expert(name)

    async def generate(self, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
        expert = await self.get_expert(serve.get_multiplexed_model_id())
        return self.models.generate_with(expert, prompt, **options)

    async def stream(self, prompt: str, options: dict[str, Any]) -> Any:
        expert = await self.get_expert(serve.get_multiplexed_model_id())
        for delta in self.models.stream_with(expert, prompt, **options):
            yield delta


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class Ingress:
    """The HTTP API; its job threads hand incidents to the Director deployment."""

    def __init__(self, settings: dict[str, Any], director: DeploymentHandle, router: DeploymentHandle | None,
                 experts: DeploymentHandle | None) -> None:
        self.settings = ServeSettings(**{**settings, "data_dir": Path(settings["data_dir"])})
        self.director, self.router, self.experts = director, router, experts

    def __serve_build_asgi_app__(self) -> Any:
        models = _HandleModels(self.router, self.experts) if self.router and self.experts else None
        return create_app(self.settings, analyzer=_HandleAnalyzer(self.director), models=models)


class _HandleAnalyzer:
    """The app's `Analyzer` over the Director deployment; a dead replica is retried on another one."""

    def __init__(self, director: DeploymentHandle, attempts: int = 3) -> None:
        self.director, self.attempts = director, attempts

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        progress("queued at the director")
        for attempt in range(1, self.attempts + 1):
            try:
                return self.director.analyse.remote(str(incident_dir), str(out_dir)).result()
            except (RayActorError, ActorDiedError, ActorUnavailableError) as err:
                log.warning("director replica died on attempt %d for %s: %s", attempt, incident_dir, err)
                progress(f"director replica lost (attempt {attempt}); retrying")
                if attempt == self.attempts:
                    raise RuntimeError(f"the director replica died {attempt} times while analysing") from err
        raise AssertionError("unreachable")


class _HandleModels:
    """The app's `ModelService` over the Router and Experts deployments."""

    def __init__(self, router: DeploymentHandle, experts: DeploymentHandle) -> None:
        self.router, self.experts = router, experts
        self._names: list[str] | None = None

    def model_names(self) -> list[str]:
        if self._names is None:
            self._names = self.router.model_names.remote().result()
        return self._names

    def route(self, prompt: str, task: str | None) -> dict[str, Any]:
        return self.router.route.remote(prompt, task).result()

    def _expert_for(self, model: str, prompt: str, task: str | None) -> tuple[str, dict[str, Any] | None]:
        if model != "flipmoe":
            return model, None
        decision = self.route(prompt, task)
        return decision["expert"], decision

    def generate(self, model: str, prompt: str, **options: Any) -> dict[str, Any]:
        expert, decision = self._expert_for(model, prompt, options.get("task"))
        result = self.experts.options(multiplexed_model_id=expert).generate.remote(prompt, options).result()
        if decision is not None:
            result["router_scores"] = decision["scores"]
        return result

    def stream(self, model: str, prompt: str, **options: Any) -> Iterator[str]:
        expert, _ = self._expert_for(model, prompt, options.get("task"))
        yield from self.experts.options(multiplexed_model_id=expert, stream=True).stream.remote(prompt, options)


def build_application(settings: ServeSettings, *, bundle: Path | None, use_model: bool = True,
                      director_replicas: int = 1) -> Any:
    """The composed application: `serve.run(build_application(...))`."""
    director = Director.options(num_replicas=director_replicas).bind(str(bundle) if bundle else None, use_model)
    router = Router.bind(str(bundle)) if bundle else None
    experts = Experts.bind(str(bundle)) if bundle else None
    fields = asdict(settings)
    fields["data_dir"] = str(Path(settings.data_dir).resolve())
    return Ingress.bind(fields, director, router, experts)


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for `serve run` / Serve config files: `import_path: flipmoe.serve.deployments:app_builder`."""
    settings = ServeSettings(data_dir=Path(args.get("data_dir", "flipmoe-serve")),
                             tokens=api_tokens(args.get("tokens")),
                             auth=args.get("auth", "auto"), host=args.get("host", "0.0.0.0"),
                             workers=int(args.get("workers", 2)))
    bundle = args.get("bundle")
    return build_application(settings, bundle=Path(bundle) if bundle else None,
                             director_replicas=int(args.get("director_replicas", 1)))
