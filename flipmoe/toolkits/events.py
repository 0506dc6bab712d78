"""Events toolkit: Kubernetes events and change records (deploys, config changes) in the window.

Warnings such as OOMKilled, BackOff or Unhealthy are strong local evidence; changes are evidence
only in time: a change shortly before the symptoms is a classic cause, but innocent services are
deployed during incidents too, so a change alone counts for little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.vocabulary import SYMPTOM_CATEGORIES, metric_category, text_classes

# Event reasons that report a failure of the object they are about (Kubernetes' own vocabulary).
_FAILURE_REASONS = {
    "oomkilled": 0.95, "oomkilling": 0.95, "crashloopbackoff": 0.9, "backoff": 0.85, "failed": 0.7,
    "unhealthy": 0.7, "killing": 0.5, "evicted": 0.8, "nodenotready": 0.9, "nodeunreachable": 0.9,
    "failedmount": 0.6, "failedscheduling": 0.5, "errimagepull": 0.6, "imagepullbackoff": 0.6,
    "networknotready": 0.8, "systemoom": 0.9, "rebooted": 0.8, "freediskspacefailed": 0.8,
    "evictionthresholdmet": 0.8, "nodehasdiskpressure": 0.8, "nodehasinsufficientmemory": 0.8,
}
_CHANGE_KINDS = {"deploy", "config_change", "change", "rollout", "release"}
_CHANGE_STRENGTH = 0.35
# Alerts other detectors already raised (`kind` metric / log / trace; e.g. `flipmoe import tvdiag`): each
# distinct alert on an object is evidence, and several together are stronger (noisy-or). A trace alert is
# seen where a call was slow or failed, which its callers' faults can cause too: a symptom, not a cause.
# A metric alert is a cause or a symptom by what its KPI measures, as for the metrics toolkit's own anomalies:
# a resource (CPU, memory, disk, network, restarts) is local, latency, errors and traffic also show at callers.
_ALERT_STRENGTH = {"metric": 0.5, "log": 0.5, "trace": 0.4}


def _alert_role(kind: str, reason: str) -> str:
    kind = kind.lower()
    if kind == "trace":
        return "symptom"
    if kind == "metric" and metric_category(reason) in SYMPTOM_CATEGORIES:
        return "symptom"
    return "cause"


@dataclass(frozen=True, kw_only=True)
class EventFinding:
    """One event (or several of the same reason on the same object) in the window."""

    service: str | None
    pod: str | None
    node: str | None
    kind: str
    reason: str
    count: int
    first: pd.Timestamp
    message: str
    strength: float
    """In [0, 1]: how strongly this event points at its object as a cause."""
    classes: frozenset[str]
    """Failure classes the reason and message mention (see `vocabulary.text_classes`)."""
    is_change: bool
    role: str = "cause"
    """'cause' (local evidence) or 'symptom' (may have propagated from elsewhere: trace alerts)."""
    distinct: int = 1
    """Distinct alerts (KPIs, templates, operations) the finding stands for."""
    alerts: tuple[tuple[str, str], ...] = ()
    """For alerts: each distinct (reason, message), e.g. ('docker_memory_usage_pct', 'up')."""


@dataclass(frozen=True, kw_only=True)
class EventReport:
    findings: tuple[EventFinding, ...]
    notes: tuple[str, ...]


def analyse_events(incident: Incident) -> EventReport:
    """Failure events and changes inside the incident window, strongest first."""
    events = incident.events
    if events is None:
        return EventReport(findings=(), notes=("no events in the incident",))
    window = incident.meta.window
    inside = events[(events["timestamp"] >= window.start) & (events["timestamp"] < window.end)]
    if inside.empty:
        return EventReport(findings=(), notes=("no events inside the incident window",))
    filled = inside.fillna({"service": "", "pod": "", "node": "", "message": ""})
    alerts = filled["kind"].str.lower().isin(_ALERT_STRENGTH)
    keys = ["service", "pod", "node", "kind", "reason"]
    findings = [_finding(tuple(str(part) for part in key), group)
                for key, group in filled[~alerts].groupby(keys, sort=False)]
    raised = filled[alerts].assign(role=[_alert_role(k, r) for k, r in zip(filled.loc[alerts, "kind"],
                                                                              filled.loc[alerts, "reason"],
                                                                              strict=True)])
    findings += _relative([_alert_finding(tuple(str(part) for part in key), group)
                           for key, group in raised.groupby([*keys[:4], "role"], sort=False)])
    findings.sort(key=lambda f: (-f.strength, f.first))
    return EventReport(findings=tuple(findings), notes=())


def _finding(key: tuple[str, ...], group: pd.DataFrame) -> EventFinding:
    service, pod, node, kind, reason = key
    message = str(group["message"].iloc[0])
    classes = text_classes(f"{reason} {message}")
    is_change = kind.lower() in _CHANGE_KINDS
    strength = _CHANGE_STRENGTH if is_change else _FAILURE_REASONS.get(reason.lower().replace(" ", ""), 0.0)
    if not is_change and strength == 0.0 and classes - {"deploy"}:
        strength = 0.5  # an unfamiliar reason whose text still names a failure
    return EventFinding(service=service or None, pod=pod or None, node=node or None, kind=kind, reason=reason,
                        count=len(group), first=group["timestamp"].min(), message=message[:300],
                        strength=strength, classes=classes, is_change=is_change)


def _relative(findings: list[EventFinding]) -> list[EventFinding]:
    """Alert findings with strengths that keep the order of alert volume.

    Each finding's strength grows with its number of distinct alerts, saturating fast (3 alerts: 0.9);
    across objects that all raised several alerts, the saturated values would tie, and the object
    that raised 20 would count as much as one that raised 3. So each is scaled by its distinct
    alerts' share of the most any object of the same kind and role raised, on a log scale."""
    most: dict[tuple[str, str], int] = {}
    for finding in findings:
        key = (finding.kind, finding.role)
        most[key] = max(most.get(key, 0), finding.distinct)
    return [replace(finding, strength=finding.strength * math.log1p(finding.distinct)
                    / math.log1p(most[finding.kind, finding.role])) for finding in findings]


def _alert_finding(key: tuple[str, ...], group: pd.DataFrame) -> EventFinding:
    """Every alert of one kind and role on one object, as one finding: the more distinct alerts, the stronger."""
    service, pod, node, kind, role = key
    reasons = list(dict.fromkeys(group["reason"].astype(str)))
    base = _ALERT_STRENGTH[kind.lower()]
    details = [f"{r} {m}".strip() for r, m in zip(group["reason"].astype(str), group["message"].astype(str),
                                                     strict=True)]
    return EventFinding(service=service or None, pod=pod or None, node=node or None, kind=f"{kind} alert",
                        reason=", ".join(reasons[:4]) + (f" (+{len(reasons) - 4})" if len(reasons) > 4 else ""),
                        count=len(group), first=group["timestamp"].min(), message="; ".join(details[:6])[:300],
                        strength=1.0 - (1.0 - base) ** len(reasons), classes=text_classes(" ".join(details)),
                        is_change=False, role=role, distinct=len(reasons),
                        alerts=tuple(dict.fromkeys(zip(group["reason"].astype(str), group["message"].astype(str),
                                                       strict=True))))
