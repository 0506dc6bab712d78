"""The analysis path: an incident in, ranked root causes with evidence and a fault type out.

`analyse_incident` runs every toolkit whose modality the incident has, turns their findings into
signals, localises and diagnoses. It is a pure function of the incident (it never sees the label),
so `flipmoe eval localization`, `flipmoe rca` and the Director's actors all run the same code. A
toolkit that fails on odd data becomes a recorded note, not a crash: the other modalities still rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flipmoe.telemetry.incident import Incident, call_edges
from flipmoe.toolkits.diagnose import Diagnosis, diagnose
from flipmoe.toolkits.events import EventReport, analyse_events
from flipmoe.toolkits.localize import Localization, LocalizationConfig, Signal, rank_root_causes
from flipmoe.toolkits.logs import LogReport, LogToolkitConfig, analyse_logs
from flipmoe.toolkits.metrics import MetricReport, MetricToolkitConfig, analyse_metrics
from flipmoe.toolkits.signals import event_signals, log_signals, metric_signals, trace_signals
from flipmoe.toolkits.traces import TraceReport, TraceToolkitConfig, analyse_traces

log = logging.getLogger(__name__)

ANALYSIS_MODALITIES = ("metrics", "traces", "logs", "events")
"""The modalities the analysis can use; 'traces' reads the incident's spans table."""

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class AnalysisConfig:
    """Settings of the analysis path."""

    modalities: tuple[str, ...] = ANALYSIS_MODALITIES
    """Modalities to use (a subset gives the ablations of the evaluation)."""
    metrics: MetricToolkitConfig = field(default_factory=MetricToolkitConfig)
    traces: TraceToolkitConfig = field(default_factory=TraceToolkitConfig)
    logs: LogToolkitConfig = field(default_factory=LogToolkitConfig)
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)

    def __post_init__(self) -> None:
        unknown = set(self.modalities) - set(ANALYSIS_MODALITIES)
        if unknown:
            from flipmoe.errors import FlipmoeInputError

            raise FlipmoeInputError(f"unknown modality {', '.join(sorted(unknown))}",
                                    hint=f"valid: {', '.join(ANALYSIS_MODALITIES)}")


@dataclass(frozen=True, kw_only=True)
class IncidentAnalysis:
    incident_id: str
    localization: Localization
    diagnosis: Diagnosis | None
    metrics: MetricReport | None
    traces: TraceReport | None
    logs: LogReport | None
    events: EventReport | None
    signals: tuple[Signal, ...]
    """Every signal the localisation weighed, all modalities."""
    timings: dict[str, float]
    """Seconds per stage."""
    notes: tuple[str, ...]
    """What could not be used and why, from every stage."""


def analyse_incident(incident: Incident, *, config: AnalysisConfig | None = None) -> IncidentAnalysis:
    config = config or AnalysisConfig()
    timings: dict[str, float] = {}
    notes: list[str] = list(incident.warnings)
    use = set(config.modalities)

    def stage(name: str, fn: Callable[[], T]) -> T | None:
        start = time.perf_counter()
        try:
            return fn()
        except Exception as err:  # one toolkit's failure must not lose the other modalities' evidence
            log.exception("%s analysis failed on %s", name, incident.id)
            notes.append(f"{name} analysis failed and was skipped: {type(err).__name__}: {err}")
            return None
        finally:
            timings[name] = time.perf_counter() - start

    metrics = stage("metrics", lambda: analyse_metrics(incident, config=config.metrics)) \
        if "metrics" in use and incident.metrics is not None else None
    traces = stage("traces", lambda: analyse_traces(incident, config=config.traces)) \
        if "traces" in use and incident.spans is not None else None
    logs = stage("logs", lambda: analyse_logs(incident, config=config.logs)) \
        if "logs" in use and incident.logs is not None else None
    events = stage("events", lambda: analyse_events(incident)) \
        if "events" in use and incident.events is not None else None
    for name, table in (("metrics", metrics), ("traces", traces), ("logs", logs), ("events", events)):
        if name in use and table is None and f"{name} analysis failed" not in " ".join(notes):
            notes.append(f"no {name} in the incident: analysed without them")
        if table is not None:
            notes.extend(f"{name}: {note}" for note in table.notes)

    start = time.perf_counter()
    signals = _signals(incident, metrics, traces, logs, events)
    localization = localize(incident, signals, modalities=use, config=config.localization, notes=notes)
    timings["localization"] = time.perf_counter() - start
    start = time.perf_counter()
    top = localization.root_causes[0] if localization.root_causes else None
    callers = [a for a, b in _edges(incident, use) if top is not None and b == top.service]
    diagnosis = diagnose(top, metrics=metrics, traces=traces, logs=logs, events=events,
                         topology=incident.topology, callers=callers)
    timings["diagnosis"] = time.perf_counter() - start
    return IncidentAnalysis(incident_id=incident.id, localization=localization, diagnosis=diagnosis,
                            metrics=metrics, traces=traces, logs=logs, events=events, signals=tuple(signals),
                            timings=timings, notes=localization.notes)


def localize(incident: Incident, signals: Sequence[Signal], *, modalities: Iterable[str] = ANALYSIS_MODALITIES,
             config: LocalizationConfig | None = None, notes: Sequence[str] = ()) -> Localization:
    """Rank root causes from the `signals` of the given modalities (fewer modalities: an ablation)."""
    use = set(modalities)
    return rank_root_causes(
        [s for s in signals if s.modality in use], call_edges=_edges(incident, use),
        services=incident.telemetry.services(), pods_of_service=_pods_of_service(incident),
        placement=incident.topology.placement if incident.topology is not None else None,
        config=config, notes=notes)


def _signals(incident: Incident, metrics: MetricReport | None, traces: TraceReport | None,
             logs: LogReport | None, events: EventReport | None) -> list[Signal]:
    signals: list[Signal] = []
    if metrics is not None:
        signals += metric_signals(metrics)
    if traces is not None:
        signals += trace_signals(traces)
    if logs is not None:
        signals += log_signals(logs)
    if events is not None:
        signals += event_signals(events, service_of_pod=_service_of_pod(incident))
    return signals


def _edges(incident: Incident, use: set[str]) -> list[tuple[str, str]]:
    """The call graph: the topology when the incident has one, else what the spans show."""
    edges: set[tuple[str, str]] = set()
    if incident.topology is not None:
        edges.update(incident.topology.edges)
    if "traces" in use:
        for telemetry in (incident.telemetry, incident.baseline):
            if telemetry is not None and telemetry.spans is not None:
                edges.update(call_edges(telemetry.spans))
    return sorted(edges)


def _pods_of_service(incident: Incident) -> dict[str, list[str]]:
    pods: dict[str, set[str]] = {}
    for name in incident.modalities:
        table = incident.telemetry.table(name)
        assert table is not None
        pairs = table[["service", "pod"]].dropna().drop_duplicates()
        for service, pod in zip(pairs["service"], pairs["pod"], strict=True):
            pods.setdefault(service, set()).add(pod)
    return {s: sorted(p) for s, p in pods.items()}


def _service_of_pod(incident: Incident) -> dict[str, str]:
    return {pod: service for service, pods in _pods_of_service(incident).items() for pod in pods}


def analysis_summary(analysis: IncidentAnalysis, *, top: int = 5) -> dict[str, Any]:
    """The JSON the evaluation writes per incident (DESIGN.md's ranked root-cause entries)."""
    return {
        "incident": analysis.incident_id,
        "root_causes": [{"service": r.service, "pod": r.pod, "node": r.node, "score": round(r.score, 4)}
                        for r in analysis.localization.root_causes[:max(top, 1)]],
        "fault_type": analysis.diagnosis.fault_type if analysis.diagnosis else None,
    }


def used_modalities(analysis: IncidentAnalysis) -> Sequence[str]:
    return analysis.localization.modalities
