"""The RCA report contract (DESIGN.md): what `report.json` holds, as pydantic models.

The runtime (director.runtime) fills a `RcaReport`; the renderers (director.render) turn it into
`report.md` and a self-contained `report.html`; the Serve endpoint returns it as JSON. Every reference
in `Evidence.reference` points into the incident's telemetry (metric names and windows, log templates
with counts, trace and span ids), so a reader can check each claim.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flipmoe.toolkits.rootcause import Evidence, RootCause  # noqa: F401 (the report's root-cause type)

REPORT_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Finding(_Model):
    """A per-modality observation, whether or not it is attached to a root cause."""

    modality: str
    summary: str
    strength: float = 0.0
    reference: dict[str, Any] = Field(default_factory=dict)


class StepRecord(_Model):
    """One executed runbook step (an actor call)."""

    name: str
    actor: str
    status: Literal["ok", "no-evidence", "failed", "timeout", "skipped"]
    started_s: float = Field(description="seconds after the run started")
    duration_s: float
    attempts: int = 1
    summary: str = ""
    error: str | None = None


class Decision(_Model):
    """A choice the Director made and why (plan chosen, hypothesis rejected, back-track, budget stop)."""

    at_s: float
    kind: Literal["plan", "hypothesis", "backtrack", "accept", "stop", "repair", "guardrail"]
    detail: str


class RunbookRecord(_Model):
    """The runbook that was followed: its DSL text, where it came from, and its execution trace."""

    name: str
    source: str = Field(description="'knowledge-base:<template>' or 'generated:<expert>'")
    text: str
    steps: list[StepRecord] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    backtracks: int = 0


class Gap(_Model):
    """Something the analysis could not do, and why (missing modality, failed actor, timeout)."""

    what: str
    reason: str


class RcaReport(_Model):
    """`report.json`."""

    version: int = REPORT_VERSION
    incident: str
    alert: str
    window: dict[str, str] = Field(description="{'start': ISO-8601 UTC, 'end': ISO-8601 UTC}")
    root_causes: list[RootCause]
    summary: str
    reasoning: list[str] = Field(default_factory=list, description="the chain of observations behind the ranking")
    findings: dict[str, list[Finding]] = Field(default_factory=dict, description="per modality")
    modalities_used: list[str] = Field(default_factory=list)
    runbook: RunbookRecord
    gaps: list[Gap] = Field(default_factory=list)
    queries: dict[str, list[str]] = Field(default_factory=dict,
                                          description="follow-up queries for the back-ends: {'promql': [...], "
                                                      "'logql': [...]}")
    call_graph: list[list[str]] = Field(default_factory=list,
                                        description="the (caller, callee) service edges the ranking walked")
    model: dict[str, Any] | None = Field(default=None, description="bundle and experts used, if any")
    timings_s: dict[str, float] = Field(default_factory=dict, description="per stage, and 'total'")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
