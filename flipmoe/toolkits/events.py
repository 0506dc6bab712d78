"""Events toolkit: Kubernetes events and change records (deploys, config changes) in the window.

Warnings such as OOMKilled, BackOff or Unhealthy are strong local evidence; changes are evidence
only in time: the last change before the alert is a classic cause, earlier ones less so, and one after the
alert is a response to it (`_by_recency`); innocent services are deployed during incidents too, so a
change alone never decides.

Alerts that other detectors raised are weighed by how rare they are in the system's alert history
(`AlertHistory`), when one is given: an alert that fires in most incidents of the system is background,
as every on-call engineer learns, and one that never fired before is news.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from flipmoe.telemetry import find_incidents, read_incident
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
# A change counts by where it sits in time: "what changed last before it broke?" is the first question of
# every on-call engineer. The latest change before the alert counts like a failure event of middling
# strength (a coin flip that it is the culprit); each earlier one less, as 1 / its recency rank (a
# Zipf prior over recency); a change after the alert is a response to it (a rollback, a restart, a fix),
# not its cause. Telemetry still decides: a change only adds to its service's own evidence.
_LATEST_CHANGE = 0.5
_AFTER_ALERT = 0.1
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


AlertKey = tuple[str, str, str, str]
"""(object, kind, reason, message) of one alert: the pod or service it is on, metric / log / trace, the KPI,
template or operation, and its direction or status."""

MIN_HISTORY = 5
"""Fewest other incidents an alert history needs before it weighs anything: below that, a share is noise."""


@dataclass(frozen=True, kw_only=True)
class AlertHistory:
    """Which alerts fired in which past incidents of a system (no labels: only their alert events).

    An alert's weight is its rarity across the other incidents, `log((n + 1) / (c + 1)) / log(n + 1)` with `c`
    of the `n` other incidents having raised it: 1 for an alert never seen before, near 0 for one that fires
    every time. This is the inverse document frequency `localize` uses across services, here across incidents.
    An incident never counts in its own history (leave-one-out by incident id), so a folder of incidents can
    serve as the history of each of them.
    """

    incidents: Mapping[str, frozenset[AlertKey]] = field(default_factory=dict)
    counts: Mapping[AlertKey, int] = field(default_factory=dict)

    @classmethod
    def from_incidents(cls, incidents: Iterable[Incident]) -> AlertHistory:
        seen: dict[str, frozenset[AlertKey]] = {}
        for incident in incidents:
            events = incident.events
            if events is None or events.empty:
                continue
            alerts = events[events["kind"].astype(str).str.lower().isin(_ALERT_STRENGTH)]
            seen[incident.meta.id] = frozenset(_alert_keys(alerts))
        counts: Counter[AlertKey] = Counter()
        for keys in seen.values():
            counts.update(keys)
        return cls(incidents=seen, counts=dict(counts))

    def others(self, incident_id: str) -> int:
        """Incidents in the history besides `incident_id`."""
        return len(self.incidents) - (incident_id in self.incidents)

    def weight(self, key: AlertKey, incident_id: str) -> float:
        n = self.others(incident_id)
        if n < MIN_HISTORY:
            return 1.0
        c = self.counts.get(key, 0) - (key in self.incidents.get(incident_id, ()))
        return math.log((n + 1) / (c + 1)) / math.log(n + 1)


def load_alert_history(path: str | Path) -> AlertHistory:
    """The alert history of the incidents under `path` (their events tables only; labels never read), read
    once per state of the folder (its incidents and their events files' modification times)."""
    directories = find_incidents(path)
    stamp = tuple((str(d), _mtime(d)) for d in directories)
    return _load_history(stamp)


def _mtime(directory: Path) -> int:
    files = [f for f in directory.glob("events.*") if f.is_file()]
    return max((f.stat().st_mtime_ns for f in files), default=0)


@functools.lru_cache(maxsize=4)
def _load_history(stamp: tuple[tuple[str, int], ...]) -> AlertHistory:
    return AlertHistory.from_incidents(read_incident(d, tables=("events",)) for d, _ in stamp)


def _alert_keys(alerts: pd.DataFrame) -> list[AlertKey]:
    objects = alerts["pod"].where(alerts["pod"].notna() & (alerts["pod"].astype(str) != ""), alerts["service"])
    return list(zip(objects.fillna("").astype(str), alerts["kind"].astype(str).str.lower(),
                    alerts["reason"].fillna("").astype(str), alerts["message"].fillna("").astype(str), strict=True))


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
    weighed: float = 1.0
    """For alerts: the distinct alerts (reasons) summed by their weight in the alert history (each 1 without
    one); what the finding's strength grows with."""
    alerts: tuple[tuple[str, str], ...] = ()
    """For alerts: each distinct (reason, message), e.g. ('docker_memory_usage_pct', 'up')."""


@dataclass(frozen=True, kw_only=True)
class EventReport:
    findings: tuple[EventFinding, ...]
    notes: tuple[str, ...]


def analyse_events(incident: Incident, *, history: AlertHistory | None = None) -> EventReport:
    """Failure events and changes inside the incident window, strongest first; alerts weighed by their rarity
    in `history` (the system's past incidents), if given."""
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
    findings = _by_recency([_finding(tuple(str(part) for part in key), group)
                            for key, group in filled[~alerts].groupby(keys, sort=False)], incident.meta.alert_time)
    raised = filled[alerts].assign(role=[_alert_role(k, r) for k, r in zip(filled.loc[alerts, "kind"],
                                                                              filled.loc[alerts, "reason"],
                                                                              strict=True)])
    notes: list[str] = []
    incident_id = incident.meta.id
    if history is not None and not raised.empty:
        if history.others(incident_id) < MIN_HISTORY:
            notes.append(f"the alert history has {history.others(incident_id)} other incidents (fewer than "
                         f"{MIN_HISTORY}): alerts are not weighed by it")
            history = None
        else:
            raised = raised.assign(weight=[history.weight(k, incident_id) for k in _alert_keys(raised)])
            chronic = int((raised["weight"] < math.log(2) / math.log(history.others(incident_id) + 1)).sum())
            notes.append(f"alerts weighed by their rarity in {history.others(incident_id)} other incidents of the "
                         f"alert history; {chronic} of {len(raised)} fire in at least half of them")
    findings += _relative([_alert_finding(tuple(str(part) for part in key), group, history is not None)
                           for key, group in raised.groupby([*keys[:4], "role"], sort=False)])
    findings.sort(key=lambda f: (-f.strength, f.first))
    return EventReport(findings=tuple(findings), notes=tuple(notes))


def _finding(key: tuple[str, ...], group: pd.DataFrame) -> EventFinding:
    service, pod, node, kind, reason = key
    message = str(group["message"].iloc[0])
    classes = text_classes(f"{reason} {message}")
    is_change = kind.lower() in _CHANGE_KINDS
    strength = _LATEST_CHANGE if is_change else _FAILURE_REASONS.get(reason.lower().replace(" ", ""), 0.0)
    if not is_change and strength == 0.0 and classes - {"deploy"}:
        strength = 0.5  # an unfamiliar reason whose text still names a failure
    return EventFinding(service=service or None, pod=pod or None, node=node or None, kind=kind, reason=reason,
                        count=len(group), first=group["timestamp"].min(), message=message[:300],
                        strength=strength, classes=classes, is_change=is_change)


def _by_recency(findings: list[EventFinding], alert_time: pd.Timestamp | None) -> list[EventFinding]:
    """Change findings with strengths by recency: the latest change at or before the alert `_LATEST_CHANGE`,
    the k-th latest `_LATEST_CHANGE / k`, a change after the alert `_AFTER_ALERT` (no alert time: every
    change counts as before it)."""
    before = sorted({f.first for f in findings if f.is_change and (alert_time is None or f.first <= alert_time)},
                    reverse=True)
    rank = {t: position for position, t in enumerate(before, start=1)}
    return [replace(f, strength=_LATEST_CHANGE / rank[f.first] if f.first in rank else _AFTER_ALERT)
            if f.is_change else f for f in findings]


def _relative(findings: list[EventFinding]) -> list[EventFinding]:
    """Alert findings with strengths that keep the order of alert volume.

    Each finding's strength grows with its number of distinct alerts, saturating fast (3 alerts: 0.9);
    across objects that all raised several alerts, the saturated values would tie, and the object
    that raised 20 would count as much as one that raised 3. So each is scaled by its distinct
    alerts' share of the most any object of the same kind and role raised, on a log scale."""
    most: dict[tuple[str, str], float] = {}
    for finding in findings:
        key = (finding.kind, finding.role)
        most[key] = max(most.get(key, 0.0), finding.weighed)
    return [replace(finding, strength=finding.strength * math.log1p(finding.weighed)
                    / math.log1p(most[finding.kind, finding.role]) if most[finding.kind, finding.role] > 0 else 0.0)
            for finding in findings]


def _alert_finding(key: tuple[str, ...], group: pd.DataFrame, weighed: bool) -> EventFinding:
    """Every alert of one kind and role on one object, as one finding: the more distinct alerts, the stronger
    (each counting by its weight in the alert history when there is one)."""
    service, pod, node, kind, role = key
    base = _ALERT_STRENGTH[kind.lower()]
    reasons = list(dict.fromkeys(group["reason"].astype(str)))
    # One weight per distinct reason (KPI, template, operation): its rarest direction or status.
    weights = group.groupby(group["reason"].astype(str), sort=False)["weight"].max().to_list() if weighed \
        else [1.0] * len(reasons)
    details = [f"{r} {m}".strip() for r, m in zip(group["reason"].astype(str), group["message"].astype(str),
                                                     strict=True)]
    strength = 1.0 - math.prod(1.0 - base * w for w in weights)
    return EventFinding(service=service or None, pod=pod or None, node=node or None, kind=f"{kind} alert",
                        reason=", ".join(reasons[:4]) + (f" (+{len(reasons) - 4})" if len(reasons) > 4 else ""),
                        count=len(group), first=group["timestamp"].min(), message="; ".join(details[:6])[:300],
                        strength=strength, classes=text_classes(" ".join(details)),
                        is_change=False, role=role, distinct=len(reasons), weighed=float(sum(weights)),
                        alerts=tuple(dict.fromkeys(zip(group["reason"].astype(str), group["message"].astype(str),
                                                       strict=True))))
