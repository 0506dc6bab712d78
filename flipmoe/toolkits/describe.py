"""Anomaly descriptions: findings turned into text for the experts and the report (LocaleXpert, Alg. 1).

Descriptions are composed from small atomic features rather than one template per anomaly type,
so an unusual combination (a trend that ended in missing data, a slow operation on an erroring path)
still reads right:

  metrics: subject (metric, service, pod) · movement (pattern + magnitude) · temporal bounds ·
           statistics (normal band, level, peak, samples, detector, score)
  traces:  subject (service:operation) · performance (self time, durations, limits) · call path ·
           slow nodes of the worst trace · error chain · structure (missing / added calls) · evidence

Three granularities: "brief" (one sentence), "detailed" (with statistics and evidence) and a
per-service summary that merges every finding about one service. Every number printed is a field
of the finding (or a unit-scaled rendering of one): nothing is estimated here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import pandas as pd

from flipmoe.toolkits.findings import (
    MetricAnomaly,
    MetricPattern,
    ServiceTraceSummary,
    SlowSpan,
    TraceAnomaly,
)
from flipmoe.toolkits.metrics import MetricReport
from flipmoe.toolkits.traces import TraceReport

Detail = Literal["brief", "detailed"]

# ------------------------------------------------------------------------------------ formatting

_UNIT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"%|percent|pct", re.IGNORECASE), "%"),
    (re.compile(r"\(ms\)|_ms\b|_ms$|millis", re.IGNORECASE), "ms"),
    (re.compile(r"\(mi\)|\(mib\)|_mib\b|_mib$", re.IGNORECASE), "MiB"),
    (re.compile(r"bytes|\(b\)", re.IGNORECASE), "bytes"),
    (re.compile(r"\(s\)|_seconds?\b|_seconds?$|_sec$", re.IGNORECASE), "s"),
)
_BINARY_PREFIXES = ("bytes", "KiB", "MiB", "GiB", "TiB")


def infer_unit(metric: str) -> str:
    """Unit of a metric from its name when the name says so ('' otherwise)."""
    for pattern, unit in _UNIT_RULES:
        if pattern.search(metric):
            return unit
    return ""


def format_number(x: float) -> str:
    """Three significant digits, whole numbers from 100 up (1788, not 1.79e+03), no trailing zeros."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 100 <= abs(x) < 1e7:
        return f"{x:.0f}"
    return f"{x:.3g}"


def format_value(x: float, unit: str, *, rate: bool = False) -> str:
    """A value with its unit; bytes are scaled to binary prefixes, counter rates get '/s'."""
    suffix = "/s" if rate else ""
    if unit == "bytes":
        step = 0
        while abs(x) >= 1024 and step < len(_BINARY_PREFIXES) - 1:
            x, step = x / 1024, step + 1
        return f"{format_number(x)} {_BINARY_PREFIXES[step]}{suffix}"
    if unit == "%":
        return f"{format_number(x)}%{suffix}"
    return f"{format_number(x)} {unit}{suffix}" if unit else f"{format_number(x)}{suffix}"


def format_change(relative_change: float) -> str:
    return f"{'+' if relative_change >= 0 else '-'}{format_number(abs(relative_change) * 100)}%"


def format_clock(ts: pd.Timestamp) -> str:
    return f"{ts.tz_convert('UTC'):%H:%M:%S}"


def humanise_duration(td: pd.Timedelta) -> str:
    """'850 ms', '45 s', '3 min', '2 min 30 s', '1 h 5 min', '2 d 3 h'."""
    seconds = td.total_seconds()
    if seconds < 1:
        return f"{format_number(seconds * 1000)} ms"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    first = next(i for i, (value, _) in enumerate(parts) if value)
    return " ".join(f"{value} {name}" for value, name in parts[first: first + 2] if value)


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def _format_ms(ms: float) -> str:
    return format_value(ms, "ms")


def _format_rate(share: float) -> str:
    return f"{format_number(share * 100)}%"


# ------------------------------------------------------------------------------- metric features

_PATTERN_WORDS = {
    MetricPattern.SPIKE: "spike",
    MetricPattern.DIP: "dip",
    MetricPattern.LEVEL_SHIFT_UP: "level shift up",
    MetricPattern.LEVEL_SHIFT_DOWN: "level shift down",
    MetricPattern.TREND_UP: "upward trend",
    MetricPattern.TREND_DOWN: "downward trend",
    MetricPattern.FLUCTUATION: "fluctuation",
    MetricPattern.DROP_TO_ZERO: "drop to zero",
    MetricPattern.MISSING_DATA: "missing data",
}
_UPWARD = {MetricPattern.SPIKE, MetricPattern.LEVEL_SHIFT_UP, MetricPattern.TREND_UP}


def metric_subject(a: MetricAnomaly) -> str:
    what = f"the per-second rate of {a.metric}" if a.rate else f"the {a.metric}"
    where = f"{a.service} (pod {a.pod})" if a.pod else a.service
    return f"{what} of {where}"


def _value(a: MetricAnomaly, x: float) -> str:
    return format_value(x, infer_unit(a.metric), rate=a.rate)


def metric_movement(a: MetricAnomaly) -> str:
    """What the series did, with the magnitude: from the normal value to the extreme one."""
    before = _value(a, a.before)
    if a.pattern is MetricPattern.MISSING_DATA or a.peak_value is None:
        return f"stopped reporting (normally {before})"
    peak = _value(a, a.peak_value)
    change = f" ({format_change(a.relative_change)})" if a.relative_change is not None else ""
    if a.pattern is MetricPattern.FLUCTUATION:
        return f"fluctuated around its normal {before}, reaching {peak}{change}"
    if a.pattern is MetricPattern.DROP_TO_ZERO:
        return f"dropped from {before} to {peak}{change}"
    if a.pattern in (MetricPattern.SPIKE, MetricPattern.DIP) and a.runs > 1:
        verb = "spiked" if a.pattern is MetricPattern.SPIKE else "dipped"
        direction = "up" if a.pattern in _UPWARD else "down"
        return f"{verb} {a.runs} times from a normal {before}, {direction} to {peak}{change}"
    verb = {MetricPattern.SPIKE: "spiked", MetricPattern.DIP: "dipped", MetricPattern.TREND_UP: "climbed",
            MetricPattern.TREND_DOWN: "declined"}.get(a.pattern, "rose" if a.pattern in _UPWARD else "fell")
    return f"{verb} from {before} to {peak}{change}"


def metric_temporal(a: MetricAnomaly) -> str:
    """When: one instant for a single spike, a span for repeated ones, else start, how long and
    whether the series recovered."""
    start, end, span = format_clock(a.start), format_clock(a.end), humanise_duration(a.duration)
    if a.pattern is MetricPattern.MISSING_DATA:
        return f"at {start} UTC and had not resumed by {end}"
    if a.pattern in (MetricPattern.SPIKE, MetricPattern.DIP):
        if a.runs == 1 and a.peak_time is not None:
            return f"at {format_clock(a.peak_time)} UTC"
        still = ", still recurring when the data ends" if a.ongoing else ""
        return f"between {start} and {end} UTC ({span}){still}"
    state = ("unstable" if a.pattern is MetricPattern.FLUCTUATION
             else "high" if a.pattern in _UPWARD else "low")
    if a.ongoing:
        return f"at {start} UTC and stayed {state} until the data ends ({span} later, {end})"
    return f"at {start} UTC, stayed {state} for {span} and was back to normal by {end}"


def metric_label(a: MetricAnomaly) -> str:
    return f"{_PATTERN_WORDS[a.pattern]}, score {format_number(a.score)}"


def metric_statistics(a: MetricAnomaly) -> str:
    parts = [f"Normal: {_value(a, a.before)} ± {_value(a, a.spread)}"]
    if a.level is not None:
        parts.append(f"mean during the anomaly {_value(a, a.level)}")
    if a.peak_value is not None and a.peak_time is not None:
        parts.append(f"most extreme {_value(a, a.peak_value)} at {format_clock(a.peak_time)}")
    samples = "silent grid step" if a.pattern is MetricPattern.MISSING_DATA else "anomalous sample"
    parts.append(f"{a.points} {samples}{_plural(a.points)} in {a.runs} run{_plural(a.runs)} from "
                 f"{a.start.tz_convert('UTC'):%Y-%m-%d} {format_clock(a.start)} to {format_clock(a.end)} UTC "
                 f"({humanise_duration(a.duration)})")
    parts.append(f"detector {a.detector}")
    return "; ".join(parts) + "."


def describe_metric(a: MetricAnomaly, detail: Detail = "brief") -> str:
    """One metric anomaly as text; 'detailed' adds the statistics sentence."""
    subject = metric_subject(a)
    subject = subject[0].upper() + subject[1:]
    sentence = f"{subject} {metric_movement(a)} {metric_temporal(a)} ({metric_label(a)})."
    return sentence if detail == "brief" else f"{sentence} {metric_statistics(a)}"


# -------------------------------------------------------------------------------- trace features


def _arrow(path: Sequence[str]) -> str:
    return " -> ".join(path)


def _when(t: TraceAnomaly) -> str:
    if t.start is None or t.end is None:
        return ""
    return f" between {format_clock(t.start)} and {format_clock(t.end)} UTC"


def _versus(now: float | None, normal: float | None) -> str:
    if now is None:
        return ""
    return f"{_format_ms(now)}" + (f" (normally {_format_ms(normal)})" if normal is not None else "")


def trace_performance(t: TraceAnomaly) -> str:
    parts = [f"median self time {_versus(t.self_p50_ms, t.baseline_self_p50_ms)}"]
    if t.p50_ms is not None:
        parts.append(f"median duration {_versus(t.p50_ms, t.baseline_p50_ms)}")
    parts.append(f"{t.affected} of {t.calls} calls over their self-time limit")
    if t.timeouts:
        parts.append(f"{t.timeouts} over their normal duration limit")
    return ", ".join(parts)


def trace_slow_nodes(t: TraceAnomaly) -> str:
    """The paper's timeout template: the slow nodes on the worst trace's call path against their
    normal upper limits."""
    if not t.slow_spans or not t.evidence.trace_ids:
        return ""
    lines = [f"Worst trace {t.evidence.trace_ids[0]}; slow spans on its call path:"]
    lines += [f"- {span.service}:{span.operation}: {_format_ms(span.duration_ms)}, {_against_limit(span)}; "
              f"self time {_format_ms(span.self_ms)}" for span in t.slow_spans]
    return "\n".join(lines)


def _against_limit(span: SlowSpan) -> str:
    if span.excess_ms > 0:
        return f"exceeding the limit ({_format_ms(span.upper_ms)}) by {_format_ms(span.excess_ms)}"
    return f"within the limit ({_format_ms(span.upper_ms)})"


def trace_errors(t: TraceAnomaly) -> str:
    normal = (f" (normally {_format_rate(t.baseline_error_rate)})" if t.baseline_error_rate is not None
              else " (no reference calls)")
    rate = f"{_format_rate(t.error_rate)}" if t.error_rate is not None else "some"
    return f"{t.affected} of its {t.calls} calls failed there first, {rate}{normal}"


def trace_structure(t: TraceAnomaly) -> str:
    expected = format_number(t.expected_calls) if t.expected_calls is not None else "?"
    caller = f"{t.caller} ({t.calls} call{_plural(t.calls)})"
    if t.kind == "missing_call":
        return (f"{caller} made {t.affected} call{_plural(t.affected)} to {t.service}:{t.operation}, "
                f"where about {expected} were expected from the reference")
    return (f"{caller} made {t.affected} call{_plural(t.affected)} to {t.service}:{t.operation}, "
            f"a call never seen in the reference (about {expected} expected)")


def trace_evidence(t: TraceAnomaly) -> str:
    if not t.evidence.trace_ids:
        return ""
    return f"Example traces: {', '.join(t.evidence.trace_ids)}."


def describe_trace(t: TraceAnomaly, detail: Detail = "brief") -> str:
    """One trace anomaly as text; 'detailed' adds the call path, slow nodes and example traces."""
    op = f"{t.service}:{t.operation}"
    label = f"score {format_number(t.score)}"
    if t.kind == "slow_operation":
        sentence = f"{op} was slow in its own (exclusive) time{_when(t)}: {trace_performance(t)} ({label})."
        extra = [f"Call path: {_arrow(t.path)}." if t.path else "", trace_slow_nodes(t), trace_evidence(t)]
    elif t.kind == "error_chain":
        sentence = f"Errors originated in {op}{_when(t)}: {trace_errors(t)} ({label})."
        extra = [f"Error chain: {_arrow(t.chain)}." if t.chain else "",
                 f"Call path: {_arrow(t.path)}." if t.path else "", trace_evidence(t)]
    else:
        what = "Missing call" if t.kind == "missing_call" else "New call"
        sentence = f"{what}{_when(t)}: {trace_structure(t)} ({label})."
        extra = [f"Usual call path: {_arrow(t.path)}." if t.path else "", trace_evidence(t)]
    if detail == "brief":
        return sentence
    return "\n".join([sentence, *(e for e in extra if e)])


# --------------------------------------------------------------------------------- service level


def describe_service(
    service: str,
    *,
    metric_anomalies: Iterable[MetricAnomaly] = (),
    trace_anomalies: Iterable[TraceAnomaly] = (),
    summary: ServiceTraceSummary | None = None,
    has_metrics: bool | None = None,
    has_spans: bool | None = None,
    max_items: int = 3,
) -> str:
    """Everything known about one service in a short paragraph (coarsest granularity).

    `has_metrics` / `has_spans` say whether the service has metric series / spans during the incident
    at all, so the text can state which modality could not be used for it; None leaves that unsaid.
    """
    metric_list = [a for a in metric_anomalies if a.service == service]
    trace_list = [t for t in trace_anomalies if t.service == service]
    parts = [f"{service}:"]
    if metric_list:
        items = "; ".join(_metric_item(a) for a in metric_list[:max_items])
        more = f" and {len(metric_list) - max_items} more" if len(metric_list) > max_items else ""
        noun = "anomaly" if len(metric_list) == 1 else "anomalies"
        parts.append(f"{len(metric_list)} metric {noun}: {items}{more}.")
    elif has_metrics is False:
        parts.append("No metric series for this service, so metrics could not be used.")
    elif has_metrics:
        parts.append("Metrics normal.")
    if summary is not None:
        parts.append(_summary_sentence(summary))
    elif has_spans is False:
        parts.append("No spans for this service during the incident, so traces could not be used.")
    parts += [_trace_item(t) for t in trace_list[:max_items]]
    if len(trace_list) > max_items:
        parts.append(f"And {len(trace_list) - max_items} more trace findings.")
    return " ".join(parts)


def _metric_item(a: MetricAnomaly) -> str:
    pod = f" ({a.pod})" if a.pod else ""
    score = format_number(a.score)
    return f"{a.metric}{pod} {_PATTERN_WORDS[a.pattern]} from {format_clock(a.start)} (score {score})"


def _summary_sentence(s: ServiceTraceSummary) -> str:
    errors = f"error rate {_format_rate(s.error_rate)}"
    if s.baseline_error_rate is not None:
        errors += f" (normally {_format_rate(s.baseline_error_rate)})"
    latency = f"self time p50 {_format_ms(s.self_p50_ms)} / p95 {_format_ms(s.self_p95_ms)}"
    if s.baseline_self_p50_ms is not None and s.baseline_self_p95_ms is not None:
        latency += f" (normally {_format_ms(s.baseline_self_p50_ms)} / {_format_ms(s.baseline_self_p95_ms)})"
    return (f"Traces: {s.requests} spans, {errors}, {s.origin_errors} errors starting here; {latency}; "
            f"latency score {format_number(s.latency_score)}, error score {format_number(s.error_score)}.")


def _trace_item(t: TraceAnomaly) -> str:
    score = f"score {format_number(t.score)}"
    if t.kind == "slow_operation":
        return f"Slow operation {t.operation} ({score})."
    if t.kind == "error_chain":
        return f"Errors originate in {t.operation} ({score})."
    if t.kind == "missing_call":
        return f"Missing calls to {t.operation} from {t.caller} ({score})."
    return f"New calls to {t.operation} from {t.caller} ({score})."


# ------------------------------------------------------------------------------------ whole set


def describe_findings(
    metrics: MetricReport | None = None,
    traces: TraceReport | None = None,
    *,
    detail: Detail = "brief",
    limit: int | None = 20,
    with_notes: bool = True,
) -> list[str]:
    """Algorithm 1: one description per finding, metric anomalies then trace anomalies, each list in
    its ranked order and cut to `limit`; then the notes on what could not be used."""
    texts = [describe_metric(a, detail) for a in (metrics.anomalies if metrics else ())[:limit]]
    texts += [describe_trace(t, detail) for t in (traces.anomalies if traces else ())[:limit]]
    if with_notes:
        texts += [f"Note (metrics): {n}" for n in (metrics.notes if metrics else ())]
        texts += [f"Note (traces): {n}" for n in (traces.notes if traces else ())]
    return texts


def describe_services(metrics: MetricReport | None = None, traces: TraceReport | None = None, *,
                      limit: int | None = 10) -> list[str]:
    """One paragraph per service with any finding; services placed high in either ranking come first."""
    metric_anomalies = metrics.anomalies if metrics else ()
    trace_anomalies = traces.anomalies if traces else ()
    summaries = {s.service: s for s in (traces.services if traces else ())}
    rank: dict[str, int] = {}
    ranked_services = ([a.service for a in metric_anomalies], [t.service for t in trace_anomalies])
    for services in ranked_services:
        for position, service in enumerate(services):
            rank[service] = min(rank.get(service, position), position)
    ordered = sorted(rank, key=lambda name: (rank[name], name))[:limit]
    return [describe_service(name, metric_anomalies=metric_anomalies, trace_anomalies=trace_anomalies,
                             summary=summaries.get(name),
                             has_metrics=(name in metrics.services) if metrics else None,
                             has_spans=(name in summaries) if traces else None)
            for name in ordered]
