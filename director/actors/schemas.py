"""Output schemas that several actors read (the per-modality analyses, the ranking, the explorer's answer).

Suspects are `flipmoe.toolkits.rootcause.RootCause`, the one root-cause type from toolkit to report.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, InstanceOf

from director.actors.base import ActorOutput
from director.report import Finding
from flipmoe.toolkits.events import EventReport
from flipmoe.toolkits.localize import Localization, Signal
from flipmoe.toolkits.logs import LogReport
from flipmoe.toolkits.metrics import MetricReport
from flipmoe.toolkits.rootcause import RootCause, evidence_of  # noqa: F401 (re-exported for the actors)
from flipmoe.toolkits.traces import TraceReport

# Toolkit results are frozen dataclasses: `InstanceOf` checks their type without re-validating (and
# copying) every field, which pydantic would otherwise do for dataclasses.


class ModalityOutput(ActorOutput):
    """One modality's analysis: the toolkit's report, its localisation signals, readable findings."""

    modality: str
    available: bool = True
    """False when the incident has no such telemetry (or the toolkit failed)."""
    signals: list[InstanceOf[Signal]] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    """The strongest findings, for the report."""
    anomalies: int = 0
    """How many findings the toolkit reported."""
    notes: list[str] = Field(default_factory=list, description="what the toolkit compared, and what it skipped")

    def has_evidence(self) -> bool:
        return bool(self.signals)

    def brief(self) -> str:
        if not self.available:
            return f"no {self.modality}"
        return f"{self.anomalies} findings, {len(self.signals)} signals"


class MetricsOutput(ModalityOutput):
    report: InstanceOf[MetricReport] | None = None


class TracesOutput(ModalityOutput):
    report: InstanceOf[TraceReport] | None = None


class LogsOutput(ModalityOutput):
    report: InstanceOf[LogReport] | None = None


class EventsOutput(ModalityOutput):
    report: InstanceOf[EventReport] | None = None

    def brief(self) -> str:
        # How the alert history weighed the alerts belongs in the runbook record: it changes what counts.
        weighed = [n for n in self.notes if "alert history" in n]
        return "; ".join([super().brief(), *weighed])


class LocalizeOutput(ActorOutput):
    suspects: list[RootCause] = Field(default_factory=list)
    """Most likely first."""
    localization: InstanceOf[Localization] | None = None
    modalities: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    candidates: list[tuple[str, str | None]] = Field(default_factory=list,
                                                     description="the fusion's top (service, pod), in its order")
    features: list[list[float]] = Field(default_factory=list,
                                        description="the learned ranking's features of each candidate")

    def has_evidence(self) -> bool:
        return bool(self.suspects)

    def brief(self) -> str:
        top = ", ".join(s.label for s in self.suspects[:3])
        return f"top: {top}" if top else "no suspects"


class ExplorerCause(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = None
    pod: str | None = None
    node: str | None = None
    reason: str = ""


class ToolCall(BaseModel):
    """One call the explorer made and how long its observation was."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    ok: bool = True
    observation_chars: int = 0


class ExploreOutput(ActorOutput):
    """The explorer's ranked answer (a proposal: it reaches the ranking only through verified evidence)."""

    root_causes: list[ExplorerCause] = Field(default_factory=list)
    calls: list[ToolCall] = Field(default_factory=list)
    finished: bool = False
    """True when the explorer ended with print_results."""
    driver: str = ""

    def has_evidence(self) -> bool:
        return self.finished and bool(self.root_causes)

    def brief(self) -> str:
        answer = ", ".join(c.service or c.pod or c.node or "?" for c in self.root_causes[:3])
        return f"{len(self.calls)} tool calls via {self.driver or 'no driver'}; answer: {answer or 'none'}"
