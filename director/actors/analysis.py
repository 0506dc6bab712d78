"""Actors over the analysis toolkits: triage, one per modality, localisation, verification, diagnosis.

These steps are the platform's only analysis path: `flipmoe rca`, `flipmoe eval localization`, the
benchmarks and the HTTP service all run them through the Director. The incident's shared structures
(call graph, pod/service/node maps) come from `ActorContext.index`, built once per incident.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import Field

from director.actors.base import ActorContext, ActorInput, ActorOutput, actor
from director.actors.schemas import (
    EventsOutput,
    ExploreOutput,
    LocalizeOutput,
    LogsOutput,
    MetricsOutput,
    ModalityOutput,
    TracesOutput,
    evidence_of,
)
from director.report import Evidence, Finding, Gap
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.diagnose import MODEL_PATH, diagnose, load_model
from flipmoe.toolkits.events import analyse_events, load_alert_history
from flipmoe.toolkits.localize import Localization, ModalityGate, Signal, rank_root_causes
from flipmoe.toolkits.logs import analyse_logs
from flipmoe.toolkits.metrics import analyse_metrics, reference_split_time
from flipmoe.toolkits.ranking import CANDIDATES, candidate_features, default_model
from flipmoe.toolkits.rootcause import RootCause
from flipmoe.toolkits.signals import event_signals, log_signals, metric_signals, trace_signals
from flipmoe.toolkits.traces import analyse_traces
from router.gate import default_gate

_FINDINGS_KEPT = 10

# Symptom words of the alert, from a fixed vocabulary: only these (never free text from the
# telemetry) steer the choice of runbook, so log lines cannot talk the Director into a plan.
_ALERT_SYMPTOMS = {
    "latency": r"latenc|slow|p9[59]|p50|timeout|timed out|response time|duration",
    "errors": r"error|5\d\d|fail|exception|unavailable|refused",
    "saturation": r"cpu|memory|mem\b|disk|i/o|saturat|throttl|oom|heap|load",
    "change": r"deploy|rollout|release|config|version|upgrade",
    "availability": r"crash|restart|down\b|unreachable|not ready|evict",
}
_FAILURE_REASONS = re.compile(r"oom|backoff|crash|fail|unhealthy|evict|notready|kill|error", re.IGNORECASE)
_CHANGE_KINDS = {"deploy", "config_change", "change", "rollout", "release"}
ANALYSIS_MODALITIES = ("metrics", "traces", "logs", "events")
"""The modalities the analysis uses; 'traces' reads the incident's spans table."""
_TABLES = {"metrics": "metrics", "traces": "spans", "logs": "logs", "events": "events"}


# ------------------------------------------------------------------------------------------ triage


class TriageInput(ActorInput):
    pass


class TriageOutput(ActorOutput):
    modalities: list[str] = Field(default_factory=list, description="telemetry the run may use and the incident has")
    missing: list[str] = Field(default_factory=list)
    symptoms: list[str] = Field(default_factory=list,
                                description="symptom tags of the alert and the first look at the telemetry; the "
                                            "Director picks the runbook by them and runbooks branch on them")

    def brief(self) -> str:
        return f"{', '.join(self.modalities) or 'no telemetry'}; symptoms: {', '.join(self.symptoms) or 'none'}"


@actor("triage", TriageInput, TriageOutput,
       "the alert and a first look at the telemetry: modalities, symptom tags, first suspects")
def triage(ctx: ActorContext, args: TriageInput) -> TriageOutput:
    incident = ctx.incident
    present = [m for m in ANALYSIS_MODALITIES if _usable(ctx, m)]
    alert = incident.meta.alert.lower()
    symptoms = [tag for tag, pattern in _ALERT_SYMPTOMS.items() if re.search(pattern, alert)]
    split = reference_split_time(incident.meta)
    checks = (("error-burst", "logs", _error_burst), ("slow-traces", "traces", _slow_traces),
              ("failure-events", "events", _failure_events))
    symptoms += [tag for tag, modality, found in checks if modality in present and found(incident, split)]
    if "events" in present and incident.events is not None \
            and incident.events["kind"].str.lower().isin(_CHANGE_KINDS).any():
        symptoms.append("recent-change")
    missing = [m for m in ANALYSIS_MODALITIES if m not in present]
    return TriageOutput(modalities=present, missing=missing, symptoms=list(dict.fromkeys(symptoms)))


def _usable(ctx: ActorContext, modality: str) -> bool:
    """The incident has `modality` and the run may use it (`RunSettings.modalities`: the ablations)."""
    allowed = ctx.settings.modalities
    return (allowed is None or modality in allowed) and ctx.incident.telemetry.table(_TABLES[modality]) is not None


def _error_burst(incident: Incident, split: pd.Timestamp) -> dict[str, float]:
    """Services whose error-level log rate after `split` is at least twice the rate before."""
    logs = incident.logs
    if logs is None or logs.empty:
        return {}
    errors = logs[logs["level"].astype(str).str.upper().isin(("ERROR", "FATAL"))]
    return _rate_ratios(errors, split, incident, min_count=5, min_ratio=2.0)


def _slow_traces(incident: Incident, split: pd.Timestamp) -> dict[str, float]:
    spans = incident.spans
    if spans is None or spans.empty:
        return {}
    before, after = spans[spans["start"] < split], spans[spans["start"] >= split]
    if before.empty or after.empty:
        return {}
    p95_before = before.groupby("service")["duration"].quantile(0.95)
    p95_after = after.groupby("service")["duration"].quantile(0.95)
    ratio = (p95_after / p95_before.where(p95_before > 0)).dropna()
    return {str(s): float(r) for s, r in ratio[ratio >= 1.5].items()}


def _failure_events(incident: Incident, split: pd.Timestamp) -> dict[str, float]:
    events = incident.events
    if events is None or events.empty:
        return {}
    failing = events[events["reason"].astype(str).str.contains(_FAILURE_REASONS)]
    return {str(s): 1.0 for s in failing["service"].dropna().unique()}


def _rate_ratios(rows: pd.DataFrame, split: pd.Timestamp, incident: Incident, *, min_count: int,
                 min_ratio: float) -> dict[str, float]:
    start, end = incident.meta.window.start, incident.meta.window.end
    minutes_before = max((split - start).total_seconds() / 60, 1.0)
    minutes_after = max((end - split).total_seconds() / 60, 1.0)
    before = rows[rows["timestamp"] < split].groupby("service").size() / minutes_before
    after_counts = rows[rows["timestamp"] >= split].groupby("service").size()
    ratio = (after_counts / minutes_after) / (before.reindex(after_counts.index).fillna(0.0) + 0.5 / minutes_before)
    keep = (after_counts >= min_count) & (ratio >= min_ratio)
    return {str(s): float(r) for s, r in ratio[keep].items()}


# --------------------------------------------------------------------------------- modality steps


class ModalityInput(ActorInput):
    pass


def _findings(signals: list[Signal], modality: str) -> list[Finding]:
    strongest = sorted(signals, key=lambda s: -s.strength)[:_FINDINGS_KEPT]
    return [Finding(modality=modality, summary=s.summary, strength=round(float(s.strength), 4),
                    reference=evidence_of(s).reference | {"service": s.service, "pod": s.pod}) for s in strongest]


def _modality_step(ctx: ActorContext, modality: str, output: Callable[..., ModalityOutput], table: str,
                   analyse: Callable[[Incident], Any], to_signals: Callable[[Any], list[Signal]],
                   count: Callable[[Any], int]) -> Any:
    if not _usable(ctx, modality):
        reason = f"the incident has no {modality}" if ctx.incident.telemetry.table(table) is None \
            else f"{modality} are left out of this run (settings)"
        return output(modality=modality, available=False, gaps=[Gap(what=modality, reason=f"{reason}: analysed "
                                                                                          "without them")])
    report = analyse(ctx.incident)
    signals = to_signals(report)
    return output(modality=modality, report=report, signals=signals, findings=_findings(signals, modality),
                  anomalies=count(report), notes=list(report.notes))


@actor("analyse_metrics", ModalityInput, MetricsOutput,
       "metric anomaly detection against the baseline or the pre-alert history")
def analyse_metrics_step(ctx: ActorContext, args: ModalityInput) -> MetricsOutput:
    return _modality_step(ctx, "metrics", MetricsOutput, "metrics", analyse_metrics, metric_signals,  # type: ignore[no-any-return]
                          lambda r: len(r.anomalies))


@actor("analyse_traces", ModalityInput, TracesOutput,
       "trace analysis: exclusive time, error origins, missing and added calls")
def analyse_traces_step(ctx: ActorContext, args: ModalityInput) -> TracesOutput:
    return _modality_step(ctx, "traces", TracesOutput, "spans", analyse_traces, trace_signals,  # type: ignore[no-any-return]
                          lambda r: len(r.anomalies))


@actor("analyse_logs", ModalityInput, LogsOutput, "log template mining and comparison with the reference")
def analyse_logs_step(ctx: ActorContext, args: ModalityInput) -> LogsOutput:
    return _modality_step(ctx, "logs", LogsOutput, "logs", analyse_logs, log_signals,  # type: ignore[no-any-return]
                          lambda r: len(r.findings))


@actor("analyse_events", ModalityInput, EventsOutput, "Kubernetes failure events, deploys and config changes")
def analyse_events_step(ctx: ActorContext, args: ModalityInput) -> EventsOutput:
    service_of_pod = ctx.index.service_of_pod
    history = load_alert_history(ctx.settings.history) if ctx.settings.history is not None else None
    return _modality_step(ctx, "events", EventsOutput, "events",  # type: ignore[no-any-return]
                          lambda incident: analyse_events(incident, history=history),
                          lambda r: event_signals(r, service_of_pod=service_of_pod), lambda r: len(r.findings))


# ------------------------------------------------------------------------------------ localisation


class LocalizeInput(ActorInput):
    metrics: MetricsOutput | None = None
    traces: TracesOutput | None = None
    logs: LogsOutput | None = None
    events: EventsOutput | None = None
    hints: ExploreOutput | None = Field(default=None, description="the explorer's answer: a tie-breaker among "
                                                                  "suspects with supporting evidence, nothing more")
    top: int = Field(default=10, ge=1)
    hint_weight: float = Field(default=0.05, ge=0.0, le=0.5)


def _analyses(args: Any) -> list[ModalityOutput]:
    return [o for o in (args.metrics, args.traces, args.logs, args.events) if o is not None and o.available]


@actor("localize", LocalizeInput, LocalizeOutput,
       "rank (service, pod, node) suspects from every modality's signals over the call graph")
def localize_step(ctx: ActorContext, args: LocalizeInput) -> LocalizeOutput:
    analyses = _analyses(args)
    signals = [s for o in analyses for s in o.signals]
    modalities = [o.modality for o in analyses]
    gaps: list[Gap] = []
    gate, problem = default_gate(ctx.settings.gate) if ctx.settings.learned_gate else (None, None)
    if problem:
        gaps.append(Gap(what="learned gate", reason=f"{problem}; the entropy rule weighs the modalities"))
    localization = localize(ctx, signals, modalities=modalities, gate=gate)
    causes = list(localization.root_causes)
    decisions: list[tuple[str, str]] = []
    if localization.modality_weights:
        weights = ", ".join(f"{m} {w:.2f}" for m, w in localization.modality_weights.items())
        decisions.append(("plan", f"modality weights ({'learned gate' if gate is not None else 'entropy rule'}): "
                                  f"{weights}"))
    candidates = causes[:CANDIDATES]
    features = candidate_features(candidates, signals, ctx.index) if candidates else None
    if args.hints is not None and args.hints.finished:  # on the fusion's scores, before any re-ranking
        causes, hinted = _apply_hints(causes, args.hints, signals, args.hint_weight)
        decisions += hinted
    model, problem = default_model(ctx.settings.ranking_model) if ctx.settings.learned_ranking else (None, None)
    if problem:
        gaps.append(Gap(what="learned ranking", reason=f"{problem}; the fusion's order stands"))
    if model is not None and causes:
        causes = model.rerank(causes, signals, ctx.index)
        decisions.append(("plan", f"learned ranking over the top {min(len(causes), CANDIDATES)} candidates: "
                                  f"{causes[0].label} first (p={causes[0].score:.2f})"))
    top = max(ctx.settings.top or 0, args.top)
    return LocalizeOutput(suspects=[c.model_copy(update={"rank": i}) for i, c in enumerate(causes[:top], start=1)],
                          localization=localization, modalities=modalities, notes=list(localization.notes),
                          decisions=decisions, gaps=gaps, candidates=[(c.service, c.pod) for c in candidates],
                          features=features.round(6).tolist() if features is not None else [])


def localize(ctx: ActorContext, signals: list[Signal], *, modalities: list[str],
             gate: ModalityGate | None = None) -> Localization:
    """Rank root causes from the signals of `modalities` over the incident's call graph; `gate` weighs the
    modalities (default: the entropy rule)."""
    index = ctx.index
    return rank_root_causes([s for s in signals if s.modality in modalities],
                            call_edges=index.edges(traces="traces" in modalities), services=index.services,
                            pods_of_service=index.pods_of_service, placement=index.node_of_pod, gate=gate)


def _apply_hints(causes: list[RootCause], hints: ExploreOutput, signals: list[Signal], weight: float
                 ) -> tuple[list[RootCause], list[tuple[str, str]]]:
    """Nudge suspects the explorer named, but only those with supporting evidence of their own."""
    supported = {s.service for s in signals if s.strength >= 0.5}
    bonus: dict[str, float] = {}
    decisions = []
    for rank, cause in enumerate(hints.root_causes, start=1):
        service = cause.service
        if not service or service in bonus:
            continue
        if service in supported:
            bonus[service] = 1.0 + weight / rank
            decisions.append(("hypothesis", f"explorer proposed {service} (rank {rank}); it has supporting "
                                            "evidence, so it counts as a tie-breaker"))
        else:
            decisions.append(("guardrail", f"explorer proposed {service} (rank {rank}) without supporting "
                                           "evidence in any modality: ignored"))
    if not bonus:
        return causes, decisions
    rescored = sorted(causes, key=lambda c: (-c.score * bonus.get(c.service, 1.0), c.service, c.pod or ""))
    return rescored, decisions


# ------------------------------------------------------------------------------------ verification


class VerifyInput(ActorInput):
    suspect: RootCause
    metrics: MetricsOutput | None = None
    traces: TracesOutput | None = None
    logs: LogsOutput | None = None
    events: EventsOutput | None = None
    min_strength: float = Field(default=0.3, ge=0.0, le=1.0,
                                description="a signal this strong at the suspect supports it")
    require: list[str] = Field(default_factory=list,
                               description="modalities whose evidence counts (a saturation check wants metrics); "
                                           "empty: any modality")


class VerifyOutput(ActorOutput):
    suspect: RootCause
    verified: bool
    supporting: list[Evidence] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list, description="modalities with supporting evidence")

    def has_evidence(self) -> bool:
        return self.verified

    def brief(self) -> str:
        if not self.verified:
            return f"{self.suspect.label}: no supporting evidence"
        return f"{self.suspect.label}: supported by {', '.join(self.modalities)}"


@actor("verify", VerifyInput, VerifyOutput,
       "does the suspect have supporting evidence of its own in at least one modality?")
def verify(ctx: ActorContext, args: VerifyInput) -> VerifyOutput:
    suspect = args.suspect
    support = [s for o in _analyses(args) for s in o.signals
               if (not args.require or s.modality in args.require) and s.service == suspect.service
               and s.strength >= args.min_strength and (suspect.pod is None or s.pod in (None, suspect.pod))]
    support.sort(key=lambda s: -s.strength)
    return VerifyOutput(suspect=suspect, verified=bool(support), supporting=[evidence_of(s) for s in support[:8]],
                        modalities=sorted({s.modality for s in support}))


# --------------------------------------------------------------------------------------- diagnosis


class DiagnoseInput(ActorInput):
    suspect: RootCause | None
    rank: LocalizeOutput | None = None
    metrics: MetricsOutput | None = None
    traces: TracesOutput | None = None
    logs: LogsOutput | None = None
    events: EventsOutput | None = None


class DiagnoseOutput(ActorOutput):
    service: str | None = None
    fault_type: str | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    features: dict[str, float] = Field(default_factory=dict, description="what the diagnosis model read")

    def has_evidence(self) -> bool:
        return self.fault_type is not None

    def brief(self) -> str:
        return f"{self.fault_type} ({self.confidence:.2f})" if self.fault_type else "no diagnosis"


@actor("diagnose", DiagnoseInput, DiagnoseOutput, "the fault type at the suspect, with its reasons")
def diagnose_step(ctx: ActorContext, args: DiagnoseInput) -> DiagnoseOutput:
    if args.suspect is None:
        return DiagnoseOutput(gaps=[Gap(what="diagnosis", reason="no suspect to diagnose")])
    cause = args.suspect
    use = {o.modality for o in _analyses(args)}
    callers = [a for a, b in ctx.index.edges(traces="traces" in use) if b == cause.service]
    def report(output: ModalityOutput | None) -> Any:
        return getattr(output, "report", None)

    model_path = ctx.settings.diagnosis_model or MODEL_PATH
    gaps = []
    if ctx.settings.diagnosis_model is not None and load_model(model_path) is None:
        # Checked when the run started (`--diagnosis-model`); the file changed since. Say so in the report.
        gaps.append(Gap(what="diagnosis model", reason=f"{model_path} cannot be used; the hand-written "
                                                       "prototypes diagnosed instead"))
    result = diagnose(cause, metrics=report(args.metrics), traces=report(args.traces), logs=report(args.logs),
                      events=report(args.events), topology=ctx.incident.topology, callers=callers,
                      model_path=model_path)
    if result is None:
        return DiagnoseOutput(service=cause.service, gaps=gaps)
    return DiagnoseOutput(service=cause.service, gaps=gaps, fault_type=result.fault_type,
                          confidence=round(result.confidence, 4),
                          reasons=list(result.reasons),
                          scores={k: round(float(v), 4) for k, v in list(result.scores.items())[:5]},
                          features={k: float(v) for k, v in result.features.items()})
