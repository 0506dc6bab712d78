"""Typed finding records that the analysis toolkits produce and the rest of the Director consumes.

Every record is a frozen, keyword-only dataclass, so a finding can be hashed, compared in tests and
shipped to a Ray worker unchanged. Each anomaly carries an `evidence` reference that a report can
cite: the metric series and time range, or the trace and span ids. `to_json` turns any record into
plain JSON values (timestamps as ISO-8601 UTC strings) for `report.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import pandas as pd


class MetricPattern(str, Enum):
    """Shape of a metric anomaly; the description module picks its wording from this."""

    SPIKE = "spike"
    """Short excursion above normal (one to a few samples), or several of them close together."""
    DIP = "dip"
    """Short excursion below normal, or several of them."""
    LEVEL_SHIFT_UP = "level_shift_up"
    """The series jumped to a higher level and stayed there for a while."""
    LEVEL_SHIFT_DOWN = "level_shift_down"
    TREND_UP = "trend_up"
    """The series keeps rising through the anomaly rather than jumping."""
    TREND_DOWN = "trend_down"
    FLUCTUATION = "fluctuation"
    """Excursions on both sides of normal: the variance increased."""
    DROP_TO_ZERO = "drop_to_zero"
    """A normally non-zero series fell to zero (traffic stopped, a process died)."""
    MISSING_DATA = "missing_data"
    """The series stopped reporting while the others went on."""


@dataclass(frozen=True, kw_only=True)
class MetricEvidence:
    """Which series and time range a metric finding rests on."""

    metric: str
    service: str
    pod: str | None
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass(frozen=True, kw_only=True)
class MetricAnomaly:
    """One anomalous episode of one metric series (service, pod, metric)."""

    service: str
    pod: str | None
    node: str | None
    metric: str
    rate: bool
    """True when the series is a counter and the values are its per-second rate."""
    pattern: MetricPattern
    detector: str
    """Registry name of the detector that scored the series."""
    start: pd.Timestamp
    """Time of the first anomalous sample."""
    end: pd.Timestamp
    """End of the episode: the last anomalous sample plus one sampling step."""
    ongoing: bool
    """The episode lasts until the series' last sample: it had not recovered when the data ends."""
    points: int
    """Anomalous samples in the episode."""
    runs: int
    """Separate runs of anomalous samples merged into this episode (several spikes give > 1)."""
    before: float
    """Reference median: the normal value."""
    spread: float
    """Robust standard deviation of the reference (after the floor for constant series)."""
    level: float | None
    """Mean value during the episode; None when the series had no data (missing data)."""
    peak_value: float | None
    """The most deviating sample (a maximum for upward, a minimum for downward anomalies)."""
    peak_time: pd.Timestamp | None
    relative_change: float | None
    """(peak_value - before) / |before|; None when the reference is zero or there is no peak."""
    score: float
    """Largest |score| of the episode, in the detector's units (about standard deviations)."""
    evidence: MetricEvidence

    @property
    def duration(self) -> pd.Timedelta:
        return self.end - self.start


TraceAnomalyKind = Literal["slow_operation", "error_chain", "missing_call", "added_call"]


@dataclass(frozen=True, kw_only=True)
class TraceEvidence:
    """Which traces and spans a trace finding rests on (a few examples, worst first)."""

    trace_ids: tuple[str, ...]
    spans: tuple[tuple[str, str], ...]
    """(trace_id, span_id) pairs."""
    start: pd.Timestamp | None
    end: pd.Timestamp | None


@dataclass(frozen=True, kw_only=True)
class SlowSpan:
    """A span on the worst trace's call path, with its duration against its baseline upper limit."""

    service: str
    operation: str
    span_id: str
    duration_ms: float
    upper_ms: float
    """Baseline upper limit for this call path (or this operation when the path is rare)."""
    self_ms: float
    """Exclusive time: duration minus the time covered by the span's children."""

    @property
    def excess_ms(self) -> float:
        return self.duration_ms - self.upper_ms


@dataclass(frozen=True, kw_only=True)
class TraceAnomaly:
    """A trace finding about one operation (service, operation).

    kind:
      - slow_operation: the operation's own (exclusive) time exceeds its baseline;
      - error_chain: the operation is the deepest erroring span of error chains, i.e. their likely origin;
      - missing_call / added_call: `caller` called this operation far less often than in the baseline
        (or not at all) / calls it now but never did in the baseline.
    Fields that do not apply to a kind are None or empty.
    """

    kind: TraceAnomalyKind
    service: str
    operation: str
    score: float
    """Slow: binomial z of the share of calls over their self-time limit versus the reference share;
    errors: binomial z of the origin-error rate versus the reference; calls: Poisson z of the call
    count versus the expected one."""
    path: tuple[str, ...]
    """Call path from the root to this operation, as 'service:operation' (the most common one)."""
    calls: int
    """Calls of the operation during the incident (for call edges: calls of the caller)."""
    affected: int
    """Slow: spans over the self-time limit; errors: spans that were error origins; calls: observed calls."""
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    evidence: TraceEvidence
    baseline_p50_ms: float | None = None
    """Median duration of the operation in the baseline."""
    p50_ms: float | None = None
    """Median duration during the incident."""
    baseline_self_p50_ms: float | None = None
    self_p50_ms: float | None = None
    latency_share: float | None = None
    """Slow: the operation's added exclusive time (over its baseline median) as a share of the end-to-end time
    of the traces it ran in, during the incident: how much of the user-visible latency the slowdown explains."""
    timeouts: int | None = None
    """Spans whose duration exceeded the baseline upper limit (mean + 3 sigma)."""
    slow_spans: tuple[SlowSpan, ...] = ()
    """The worst span (ending the tuple) and its ancestors that ran over their limits, root first."""
    error_rate: float | None = None
    """Share of the operation's calls that were error origins, during the incident."""
    baseline_error_rate: float | None = None
    chain: tuple[str, ...] = ()
    """Error chain of the example trace: erroring spans from the outermost down to the origin."""
    caller: str | None = None
    """For call edges: the calling 'service:operation'."""
    expected_calls: float | None = None
    """For call edges: calls expected from the caller's baseline call rate."""


@dataclass(frozen=True, kw_only=True)
class ServiceTraceSummary:
    """What the traces say about one service during the incident versus the baseline."""

    service: str
    requests: int
    """Spans of the service during the incident."""
    errors: int
    error_rate: float
    origin_errors: int
    """Error spans with no erroring child: errors that start here rather than propagate."""
    baseline_error_rate: float | None
    self_p50_ms: float
    self_p95_ms: float
    baseline_self_p50_ms: float | None
    baseline_self_p95_ms: float | None
    latency_score: float
    """Binomial z of the share of spans over their exclusive-time limit versus the reference
    (0 when not higher)."""
    error_score: float
    """Binomial z of the origin-error rate versus the baseline (0 when not higher)."""
    latency_share: float | None = None
    """The service's added exclusive time (over each operation's baseline median) as a share of the end-to-end
    time of the traces it ran in, during the incident (None without a baseline)."""


def to_json(record: Any) -> Any:
    """A finding (or a tuple/list of them) as plain JSON values."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, tuple | list):
        return [to_json(item) for item in record]
    if isinstance(record, pd.Timestamp):
        return record.tz_convert("UTC").isoformat().replace("+00:00", "Z")
    if isinstance(record, Enum):
        return record.value
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record
