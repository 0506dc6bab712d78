"""Turn each toolkit's findings into localisation `Signal`s.

The role of a signal decides whether it may have been propagated: a latency or error-rate metric,
a service's inclusive latency, a caller's error log are symptoms; resource metrics, exclusive time,
error *origins* and failure events of an object are causes at that object.
"""

from __future__ import annotations

import math
import re

from flipmoe.toolkits.describe import describe_metric, describe_trace
from flipmoe.toolkits.events import EventReport
from flipmoe.toolkits.findings import MetricAnomaly, MetricPattern, TraceAnomaly, to_json
from flipmoe.toolkits.localize import Role, Signal, squash
from flipmoe.toolkits.logs import LogReport
from flipmoe.toolkits.metrics import MetricReport
from flipmoe.toolkits.traces import TraceReport
from flipmoe.toolkits.vocabulary import SYMPTOM_CATEGORIES, metric_category

_NODE_METRIC = re.compile(r"(^|[^a-z])node", re.IGNORECASE)
_PER_SERIES_GROUP = 3  # strongest anomalies kept per (service, pod, metric category)
# Statistical scores say a change is real; with many samples or a tight reference a 2% wobble is
# "significant" yet no incident, and capped scores cannot tell a doubling from a hundred-fold jump.
# So every signal is also weighed by the size of the change (practical significance), on a log
# scale because changes in telemetry are multiplicative: a FULL_FOLD-fold change counts in full,
# a doubling about half.
_FULL_FOLD = 10.0
_FULL_ERROR_RATE = 0.05
# The same for latency found in traces, measured where users feel it: a slowdown that adds FULL_SHARE of the
# end-to-end time of the requests it sits in counts in full, one that adds a hundredth of that about nothing
# (a tripled 0.3 ms database call inside a 200 ms request is real, and no incident).
_FULL_SHARE = 0.1


def fold_effect(relative_change: float | None) -> float:
    """How large a relative change is, in [0, 1]: log(1 + |change|) / log(FULL_FOLD)."""
    if relative_change is None:
        return 1.0
    return min(math.log1p(abs(relative_change)) / math.log(_FULL_FOLD), 1.0)


def effect(now: float | None, normal: float | None) -> float:
    """`fold_effect` of the change from `normal` to `now` (1 when either is unknown)."""
    if now is None or normal is None:
        return 1.0
    if normal == 0:
        return 1.0 if now != 0 else 0.0
    return fold_effect((now - normal) / abs(normal))


def share_effect(share: float | None) -> float:
    """How much of the user-visible latency a slowdown explains, in [0, 1]: share / FULL_SHARE, capped (1 when
    unknown)."""
    if share is None:
        return 1.0
    return min(max(share, 0.0) / _FULL_SHARE, 1.0)


def error_effect(rate: float | None, normal: float | None) -> float:
    if rate is None:
        return 1.0
    return min(max(rate - (normal or 0.0), 0.0) / _FULL_ERROR_RATE, 1.0)


def metric_signals(report: MetricReport) -> list[Signal]:
    signals: list[Signal] = []
    kept: dict[tuple[str, str | None, str], int] = {}
    for anomaly in report.anomalies:  # sorted by score, strongest first
        category = metric_category(anomaly.metric)
        key = (anomaly.service, anomaly.pod, category)
        if kept.get(key, 0) >= _PER_SERIES_GROUP:
            continue
        kept[key] = kept.get(key, 0) + 1
        node_level = _NODE_METRIC.search(anomaly.metric) is not None
        signals.append(Signal(
            modality="metrics", service=anomaly.service, pod=anomaly.pod, node=anomaly.node,
            strength=squash(anomaly.score) * _metric_effect(anomaly),
            # A node's metric reported beside each of its pods is context shared by all of them.
            role="symptom" if node_level else _metric_role(anomaly, category),
            kind=f"metrics:{'node_' if node_level else ''}{category}", start=anomaly.start,
            summary=describe_metric(anomaly), evidence={"type": "metric", **to_json(anomaly.evidence),
                                                         "category": category, "pattern": anomaly.pattern.value}))
    return signals


def _metric_effect(anomaly: MetricAnomaly) -> float:
    if anomaly.pattern in (MetricPattern.MISSING_DATA, MetricPattern.DROP_TO_ZERO):
        return 1.0
    return fold_effect(anomaly.relative_change)


def _metric_role(anomaly: MetricAnomaly, category: str) -> Role:
    # Traffic that stops (drop to zero, missing data) is what a dead service looks like, not a caller's echo.
    if anomaly.pattern in (MetricPattern.MISSING_DATA, MetricPattern.DROP_TO_ZERO):
        return "cause"
    return "symptom" if category in SYMPTOM_CATEGORIES else "cause"


def trace_signals(report: TraceReport) -> list[Signal]:
    signals: list[Signal] = []
    for summary in report.services:
        if summary.latency_score > 0:
            signals.append(Signal(
                modality="traces", service=summary.service, role="cause", kind="traces:self_time",
                strength=squash(summary.latency_score) * effect(summary.self_p95_ms, summary.baseline_self_p95_ms)
                * share_effect(summary.latency_share),
                summary=f"{summary.service}: exclusive time p95 {summary.self_p95_ms:.1f} ms "
                        f"(normally {_ms(summary.baseline_self_p95_ms)})",
                evidence={"type": "trace_service", "service": summary.service, "kind": "self_time"}))
        if summary.error_score > 0:
            signals.append(Signal(
                modality="traces", service=summary.service, role="cause", kind="traces:error_origin",
                strength=squash(summary.error_score) * error_effect(summary.error_rate, summary.baseline_error_rate),
                summary=f"{summary.service}: {summary.origin_errors} errors originated here "
                        f"(error rate {summary.error_rate:.1%})",
                evidence={"type": "trace_service", "service": summary.service, "kind": "error_origin"}))
    for anomaly in report.anomalies:
        role: Role = "symptom" if anomaly.kind in ("missing_call", "added_call") else "cause"
        signals.append(Signal(
            modality="traces", service=anomaly.service, strength=squash(anomaly.score) * _trace_effect(anomaly),
            role=role, kind=f"traces:{anomaly.kind}", start=anomaly.start, summary=describe_trace(anomaly),
            evidence={"type": "trace", "kind": anomaly.kind, "operation": anomaly.operation,
                      **to_json(anomaly.evidence)}))
    return signals


def _trace_effect(anomaly: TraceAnomaly) -> float:
    if anomaly.kind == "slow_operation":
        return effect(anomaly.self_p50_ms, anomaly.baseline_self_p50_ms) * share_effect(anomaly.latency_share)
    if anomaly.kind == "error_chain":
        return error_effect(anomaly.error_rate, anomaly.baseline_error_rate)
    return effect(float(anomaly.calls), anomaly.expected_calls)


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "unknown"


def log_signals(report: LogReport) -> list[Signal]:
    signals = []
    for finding in report.findings:
        evidence = finding.evidence
        signals.append(Signal(
            modality="logs", service=finding.service, pod=finding.pod, strength=finding.score,
            # A caller's error log ("call to X failed") is an echo as often as a cause; a line that stopped
            # being written is where the code changed its path.
            role="cause" if finding.level in ("ERROR", "FATAL")
            or finding.kind in ("disappeared_template", "broken_pattern") else "symptom",
            kind=f"logs:{finding.kind}:{finding.level}", start=finding.start, summary=finding.describe(),
            evidence={"type": "log", "kind": finding.kind, "template": evidence.template,
                      "count_before": evidence.count_before, "count_during": evidence.count_during,
                      "example": evidence.example,
                      **({"operation": evidence.operation, "calls_before": evidence.calls_before,
                          "calls_during": evidence.calls_during} if evidence.operation is not None else {})}))
    return signals


def event_signals(report: EventReport, *, service_of_pod: dict[str, str]) -> list[Signal]:
    signals = []
    for finding in report.findings:
        service = finding.service or (service_of_pod.get(finding.pod) if finding.pod else None)
        if not service or finding.strength <= 0:
            continue  # node events without a service reach the ranking through node placement
        signals.append(Signal(
            modality="events", service=service, pod=finding.pod, node=finding.node, strength=finding.strength,
            role="symptom" if finding.role == "symptom" else "cause",
            kind=f"events:{finding.kind}:{finding.role}" if finding.kind.endswith(" alert")
            else f"events:{finding.reason}",
            start=finding.first,
            summary=f"{finding.kind} event {finding.reason} x{finding.count} on {finding.pod or service}: "
                    f"{finding.message[:120]}",
            evidence={"type": "event", "kind": finding.kind, "reason": finding.reason, "count": finding.count,
                      "change": finding.is_change}))
    return signals
