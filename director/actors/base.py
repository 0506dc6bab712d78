"""What every actor shares: typed outputs, the run settings, the context a step runs in, the registry.

An actor is a plain function `fn(ctx, args) -> output` with a pydantic input model and a pydantic
output model, registered under a name the runbooks call. It holds no state between calls: what it
needs comes from its arguments (earlier steps' outputs, literals) and from the `ActorContext` (the
incident, loaded once per run, and the settings). So one actor runs the same in-process, in a Ray
task on this machine, or on a cluster node.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from director.report import Gap
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.index import IncidentIndex, build_index

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound="ActorOutput")
T = TypeVar("T")

# Modules whose import registers actors; imported on first use of the registry.
_ACTOR_MODULES = ("director.actors.analysis", "director.actors.writing", "director.actors.explorer")


class ActorInput(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class ActorOutput(BaseModel):
    """Base of every actor's output: the result, plus gaps and decisions the actor wants recorded."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    gaps: list[Gap] = Field(default_factory=list, description="what this step could not do, and why")
    decisions: list[tuple[str, str]] = Field(default_factory=list,
                                             description="(kind, detail) choices made inside the step")

    def has_evidence(self) -> bool:
        """False makes the step's status 'no-evidence' (and triggers its `on no_evidence` action)."""
        return True

    def brief(self) -> str:
        """One line for the execution trace."""
        return ""


class Trials(BaseModel, Generic[T]):
    """What a `hypotheses ... into NAME` block found: the accepted hypothesis and the rejected ones."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    accepted: T | None = None
    """The first hypothesis whose body ran without a backtrack; None when every one was rejected."""
    best: T | None = None
    """The accepted hypothesis, or else the first one tried (the ranking's favourite)."""
    rejected: list[T] = Field(default_factory=list)
    """Hypotheses whose body found no evidence, in the order tried."""
    tried: int = 0


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What a run may use beyond the incident; sent to every step."""

    bundle: Path | None = None
    """A FlipMoE model bundle directory; None runs without the model (template summaries)."""
    remote_url: str | None = None
    """An OpenAI-compatible endpoint (base URL) that drives the explorer, if any."""
    remote_model: str = "default"
    """The model name sent to the remote endpoint."""
    explorer_steps: int = 12
    """Tool calls the explorer may make before it must answer."""
    top: int | None = None
    """Suspects ranked and root causes reported; None leaves it to the runbook's `top` arguments."""
    modalities: tuple[str, ...] | None = None
    """Modalities the run may use (a subset gives the evaluation's ablations); None: all the incident has."""
    learned_ranking: bool = True
    """Re-rank the fusion's candidates with the shipped ranking model (`flipmoe.toolkits.ranking`), if any."""
    history: Path | None = None
    """A folder of past incidents of the same system (their alert events; labels never read): alerts are
    weighed by their rarity there (`flipmoe.toolkits.events.AlertHistory`). None: every alert counts alike."""
    ranking_model: Path | None = None
    """A ranking model written by `flipmoe train ranking` (e.g. fitted to a system's own labelled
    incidents); None: the shipped one, if any (`flipmoe.toolkits.ranking.MODEL_FILE`)."""
    diagnosis_model: Path | None = None
    """A fault-type model written by `flipmoe train diagnosis` (e.g. fitted to a system's own labelled
    incidents); None: the shipped one (`flipmoe.toolkits.diagnose.MODEL_PATH`)."""
    gate: Path | None = None
    """A gate written by `flipmoe train gate`: learned weights of each modality's evidence in the fusion
    (`router.gate`); None: the shipped one if there is one (`router.gate.GATE_FILE`), else the entropy rule."""
    learned_gate: bool = True
    """Use a gate at all (off: the entropy rule, as `flipmoe train gate` collects its incidents)."""

    def __post_init__(self) -> None:
        known = ("metrics", "traces", "logs", "events")
        unknown = sorted(set(self.modalities or ()) - set(known))
        if unknown:
            from flipmoe.errors import FlipmoeInputError

            raise FlipmoeInputError(f"unknown modality {', '.join(unknown)}", hint=f"valid: {', '.join(known)}")


@dataclass(kw_only=True)
class ActorContext:
    """Where a step runs: the incident (shared, read-only) and the run settings."""

    incident: Incident
    settings: RunSettings = field(default_factory=RunSettings)
    index: IncidentIndex = None  # type: ignore[assignment]
    """The incident's call graph and pod/service/node maps: built once by the Director and shipped with the
    incident to every step (built here when a context is made without one)."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Derived data that several steps of one run on one worker can share (e.g. the span index)."""

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = build_index(self.incident)

    def cached(self, key: str, make: Callable[[], T]) -> T:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ActorSpec:
    name: str
    fn: Callable[[ActorContext, Any], ActorOutput]
    input: type[BaseModel]
    output: type[ActorOutput]
    description: str

    def run(self, ctx: ActorContext, arguments: dict[str, Any]) -> ActorOutput:
        return self.fn(ctx, self.input.model_validate(arguments))


_REGISTRY: dict[str, ActorSpec] = {}


def actor(name: str, input: type[In], output: type[Out], description: str
          ) -> Callable[[Callable[[ActorContext, In], Out]], Callable[[ActorContext, In], Out]]:
    """Register `fn` as the actor `name` (the name runbooks call it by)."""
    def register(fn: Callable[[ActorContext, In], Out]) -> Callable[[ActorContext, In], Out]:
        if name in _REGISTRY:
            raise ValueError(f"actor {name!r} is registered twice")
        _REGISTRY[name] = ActorSpec(name, fn, input, output, description)  # type: ignore[arg-type]
        return fn
    return register


def registry() -> dict[str, ActorSpec]:
    """Every registered actor by name (importing the actor modules on first use)."""
    for module in _ACTOR_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)
