"""The root-cause type every layer shares, from the localisation toolkit to `report.json`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flipmoe.toolkits.findings import to_json

if TYPE_CHECKING:
    from flipmoe.toolkits.localize import Signal


class Evidence(BaseModel):
    """One piece of support for (or against) a root cause."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Literal["metrics", "logs", "traces", "events", "code", "topology"]
    role: str = Field(description="what the evidence shows: 'anomaly', 'error-burst', 'slow-span', 'onset', ...")
    summary: str = Field(description="one sentence a person can read")
    strength: float = Field(ge=0.0, description="effect size or score of the signal (larger is stronger)")
    reference: dict[str, Any] = Field(default_factory=dict,
                                      description="where in the telemetry: metric + window, template + counts, "
                                                  "trace_id + span_id, event reason")


class RootCause(BaseModel):
    """A ranked suspect: where (service, pod, node), what (metric, log pattern, fault type) and why.

    The one root-cause type from the toolkit to the report: localisation ranks these, the runbook's
    hypotheses and checks pass them along, and `report.json` lists them (the later steps fill in the
    fault type, the verdict and the headline metric and log pattern).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=1)
    service: str
    pod: str | None = None
    node: str | None = None
    metric: str | None = Field(default=None, description="the metric that moved most at this suspect")
    log_pattern: str | None = Field(default=None, description="the log template that changed most")
    fault_type: str | None = Field(default=None, description="a fault type of flipmoe.telemetry.taxonomy")
    fault_type_confidence: float | None = None
    score: float
    modality_scores: dict[str, float] = Field(default_factory=dict,
                                              description="the service's anomaly strength per modality")
    evidence: list[Evidence] = Field(default_factory=list, description="strongest first, one of each kind first")
    verified: bool | None = Field(default=None, description="the verification step found supporting evidence")

    @property
    def label(self) -> str:
        return " / ".join(x for x in (self.service, self.pod, self.node) if x)


def evidence_of(signal: Signal) -> Evidence:
    """A localisation signal as report evidence (references as plain JSON)."""
    reference: dict[str, Any] = to_json(dict(signal.evidence))
    if signal.start is not None:
        reference.setdefault("start", to_json(signal.start))
    return Evidence(modality=signal.modality, role=signal.kind or signal.role,  # type: ignore[arg-type]
                    summary=signal.summary, strength=round(float(signal.strength), 4), reference=reference)
