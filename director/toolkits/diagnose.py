"""Fault-type diagnosis: which kind of fault explains the evidence around the top suspect.

The evidence is read into named features in [0, 1] — which resource metrics of the suspect moved
and how, its exclusive latency and error origins in traces, the failure classes its logs and events
mention (out of memory, DNS, TLS, ...), what its callers' logs say, whether it is a database or a
cache, whether the whole node is sick — and every fault type of the taxonomy scores a weighted sum
of the features that its mechanism produces, minus those it rules out. The weights are an SRE's
rules of thumb written down, not fitted to any data set, so types that the real data never shows
are diagnosed by the same reasoning as those it does; each diagnosis lists the features behind it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from director.toolkits.events import EventReport
from director.toolkits.findings import MetricPattern
from director.toolkits.localize import RootCause
from director.toolkits.logs import LogReport
from director.toolkits.metrics import MetricReport
from director.toolkits.traces import TraceReport
from director.toolkits.vocabulary import metric_category, text_classes
from flipmoe.telemetry.incident import Topology
from flipmoe.telemetry.taxonomy import FAULT_TYPES

# fault type -> {feature: weight}. Negative weights are evidence against the type.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "cpu_hog": {"m_cpu": 1.0, "t_self": 0.2, "m_node_cpu": -0.3, "node_wide": -0.3},
    "cpu_contention": {"m_cpu": 0.7, "m_node_cpu": 0.5, "node_wide": 0.3, "t_self": 0.2},
    "memory_leak": {"m_memory": 0.6, "m_memory_rising": 0.5, "e_oom": 0.6, "l_oom": 0.4, "m_restarts": 0.2},
    "disk_io": {"m_disk": 0.8, "l_disk": 0.7, "e_disk": 0.6},
    "network_delay": {"t_self": 0.5, "m_latency": 0.4, "m_network": 0.3, "t_errors": -0.3, "m_cpu": -0.5,
                      "l_exception": -0.2},
    "packet_loss": {"m_network": 0.3, "l_timeout": 0.3, "l_connection": 0.3, "t_errors": 0.3, "t_self": 0.2,
                    "m_cpu": -0.4},
    "dns_failure": {"l_dns": 1.0, "t_errors": 0.2},
    "pod_crash_loop": {"e_crash": 0.8, "m_restarts": 0.6, "m_missing": 0.4, "l_crash": 0.4, "e_probe": 0.2,
                       "e_oom": -0.4},
    "node_failure": {"e_node": 1.0, "node_wide": 0.6, "m_missing": 0.2},
    "bad_config": {"e_config_change": 0.6, "l_config": 0.5, "l_connection": 0.2, "t_errors": 0.2},
    "code_exception": {"l_exception": 0.7, "t_errors": 0.4, "e_deploy": 0.3, "l_wrong_result": -0.2},
    "code_wrong_result": {"l_wrong_result": 0.6, "t_errors": 0.3, "m_errors": 0.3, "e_deploy": 0.3,
                          "l_exception": -0.3},
    "db_slow_query": {"is_database": 0.5, "l_slow_query": 0.6, "l_pool": 0.6, "t_self": 0.3, "m_saturation": 0.2},
    "cache_outage": {"is_cache": 0.6, "l_cache": 0.4, "l_connection": 0.3, "t_errors": 0.2},
    "certificate_expiry": {"l_tls": 1.0, "callers_l_tls": 0.8},
    "retry_storm": {"l_retry": 0.6, "l_timeout": 0.3, "m_traffic_up": 0.4, "callers_l_retry": 0.3},
}
assert set(_PROTOTYPES) == set(FAULT_TYPES), "every fault type of the taxonomy needs a prototype"

_DATABASE_NAME = re.compile(r"(^|[-_.])(db|database|mysql|postgres\w*|mongo\w*|mariadb|cassandra|sql)([-_.]|$)")
_CACHE_NAME = re.compile(r"(^|[-_.])(cache|redis|memcache\w*|valkey)([-_.]|$)")


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    fault_type: str
    confidence: float
    """Softmax share of the winning type's score; low values mean the evidence is ambiguous."""
    scores: Mapping[str, float]
    """Every fault type's score, highest first."""
    features: Mapping[str, float]
    """The non-zero features read from the evidence."""
    reasons: tuple[str, ...]
    """The features that contributed most to the winner, in words."""


def diagnose(
    suspect: RootCause | None,
    *,
    metrics: MetricReport | None = None,
    traces: TraceReport | None = None,
    logs: LogReport | None = None,
    events: EventReport | None = None,
    topology: Topology | None = None,
    callers: Sequence[str] = (),
) -> Diagnosis | None:
    """The most likely fault type at `suspect`, or None without a suspect."""
    if suspect is None:
        return None
    features: dict[str, float] = defaultdict(float)
    _metric_features(features, suspect, metrics)
    _trace_features(features, suspect.service, traces)
    _log_features(features, suspect.service, callers, logs)
    _event_features(features, suspect, events)
    _kind_features(features, suspect.service, topology)
    scores = {name: sum(w * features.get(f, 0.0) for f, w in proto.items()) for name, proto in _PROTOTYPES.items()}
    ranked = dict(sorted(scores.items(), key=lambda kv: -kv[1]))
    winner = next(iter(ranked))
    temperature = 0.2
    exp = {k: math.exp((v - ranked[winner]) / temperature) for k, v in ranked.items()}
    confidence = exp[winner] / sum(exp.values())
    contributions = sorted(((w * features.get(f, 0.0), f) for f, w in _PROTOTYPES[winner].items()), reverse=True)
    reasons = tuple(f"{f}={features[f]:.2f}" for c, f in contributions if c > 0)[:4]
    return Diagnosis(fault_type=winner, confidence=confidence, scores=ranked,
                     features={k: round(v, 3) for k, v in features.items() if v}, reasons=reasons)


def _raise(features: dict[str, float], name: str, value: float) -> None:
    features[name] = max(features[name], min(max(value, 0.0), 1.0))


def _metric_features(features: dict[str, float], suspect: RootCause, report: MetricReport | None) -> None:
    if report is None:
        return
    node_services: set[str] = set()
    for anomaly in report.anomalies:
        strength = anomaly.score / (anomaly.score + 3.0)
        category = metric_category(anomaly.metric)
        same_node = suspect.node is not None and anomaly.node == suspect.node
        if same_node and anomaly.service != suspect.service and category in ("cpu", "memory", "errors", "latency"):
            node_services.add(anomaly.service)
        if anomaly.service != suspect.service:
            continue
        if "node" in anomaly.metric.lower() and category == "cpu":
            _raise(features, "m_node_cpu", strength)
            continue
        upward = (anomaly.relative_change or 0.0) > 0 or anomaly.pattern in (
            MetricPattern.SPIKE, MetricPattern.LEVEL_SHIFT_UP, MetricPattern.TREND_UP)
        if category in ("cpu", "memory", "disk", "network", "latency", "errors", "saturation", "restarts"):
            if upward or category in ("errors", "network"):
                _raise(features, f"m_{category}", strength)
        if category == "memory" and anomaly.pattern in (MetricPattern.TREND_UP, MetricPattern.LEVEL_SHIFT_UP):
            _raise(features, "m_memory_rising", strength)
        if category == "traffic" and upward:
            _raise(features, "m_traffic_up", strength)
        if anomaly.pattern in (MetricPattern.MISSING_DATA, MetricPattern.DROP_TO_ZERO):
            _raise(features, "m_missing", strength)
    if node_services:
        _raise(features, "node_wide", len(node_services) / (len(node_services) + 2.0))


def _trace_features(features: dict[str, float], service: str, report: TraceReport | None) -> None:
    if report is None:
        return
    for summary in report.services:
        if summary.service == service:
            _raise(features, "t_self", summary.latency_score / (summary.latency_score + 3.0))
            _raise(features, "t_errors", summary.error_score / (summary.error_score + 3.0))


def _classes(texts: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        found |= text_classes(text)
    return found


def _log_features(features: dict[str, float], service: str, callers: Sequence[str], report: LogReport | None) -> None:
    if report is None:
        return
    caller_set = set(callers)
    for finding in report.findings:
        if finding.kind == "disappeared_template":
            continue
        classes = _classes([finding.evidence.template, finding.evidence.example])
        prefix = "l_" if finding.service == service else "callers_l_" if finding.service in caller_set else None
        if prefix is None:
            continue
        for name in classes:
            _raise(features, prefix + name, finding.score)


def _event_features(features: dict[str, float], suspect: RootCause, report: EventReport | None) -> None:
    if report is None:
        return
    for finding in report.findings:
        about_suspect = (finding.service == suspect.service or (finding.pod and finding.pod == suspect.pod)
                         or (finding.node and finding.node == suspect.node and not finding.service))
        if not about_suspect:
            continue
        if finding.is_change:
            kind = "e_config_change" if "config" in finding.kind.lower() else "e_deploy"
            _raise(features, kind, 1.0)
            continue
        for name in finding.classes | _reason_classes(finding.reason):
            _raise(features, f"e_{name}", finding.strength)


def _reason_classes(reason: str) -> set[str]:
    """Kubernetes event reasons are CamelCase words the text patterns do not always catch."""
    lowered = reason.lower()
    classes = set()
    if "oom" in lowered:
        classes.add("oom")
    if "backoff" in lowered or "crash" in lowered:
        classes.add("crash")
    if "node" in lowered or "evict" in lowered:
        classes.add("node")
    if "unhealthy" in lowered or "probe" in lowered:
        classes.add("probe")
    if "disk" in lowered:
        classes.add("disk")
    return classes


def _kind_features(features: dict[str, float], service: str, topology: Topology | None) -> None:
    kind = (topology.kinds.get(service, "") if topology is not None else "").lower()
    name = service.lower()
    if kind == "database" or _DATABASE_NAME.search(name):
        features["is_database"] = 1.0
    if kind == "cache" or _CACHE_NAME.search(name):
        features["is_cache"] = 1.0
