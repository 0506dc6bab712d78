"""How real does telemetry look? Summary statistics to put chaos-gym incidents next to real ones.

`realism_stats` pools, over one incident or a list, the per-trace, per-pod-minute and per-series
samples below and summarises them (so a percentile is over all traces of all incidents):

- spans per trace and call depth (spans on the longest root-to-leaf chain; a lone root is depth 1);
- log lines per pod-minute, over every (pod, minute) from the first to the last line of an incident,
  so quiet minutes count as 0; and the mix of log levels; both again over fault-free logs (`fault_free_`:
  the baseline's, else the lines before the alert), since the window's mix depends on the faults injected;
- metric noise in fault-free data (the baseline when the incident has one long enough, else the
  samples before the alert): per series the coefficient of variation (std / |mean|) and the lag-1
  autocorrelation, summarised by their medians across series;
- services and pods per incident.

`noise_by_metric` gives the metric noise figures per metric name, to compare sources that share names.
Everything is a pure function of the incident; undefined figures (no spans, no logs) are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident
from flipmoe.telemetry.schema import LOG_LEVELS

MIN_SERIES_POINTS = 3
"""A metric series needs this many samples for its noise figures to mean anything."""

STAT_NAMES = (
    "incidents",
    "traces_per_incident",
    "spans_per_trace_mean",
    "spans_per_trace_median",
    "spans_per_trace_p95",
    "depth_mean",
    "depth_p95",
    "log_lines_per_pod_minute_mean",
    "log_lines_per_pod_minute_p95",
    *(f"log_level_{level}" for level in LOG_LEVELS),
    "fault_free_log_lines_per_pod_minute_mean",
    *(f"fault_free_log_level_{level}" for level in LOG_LEVELS),
    "metric_series",
    "metric_cv_median",
    "metric_acf1_median",
    "services",
    "pods",
)


def spans_per_trace(spans: pd.DataFrame | None) -> np.ndarray:
    """Number of spans of each trace."""
    if spans is None or spans.empty:
        return np.empty(0)
    return spans.groupby("trace_id").size().to_numpy(dtype=float)


def trace_depths(spans: pd.DataFrame | None) -> np.ndarray:
    """Depth of each trace: the most spans on one root-to-leaf chain (front -> api -> db is 3).

    A span whose parent is not in the table counts as a root, as it would for a reader of the trace.
    """
    if spans is None or spans.empty:
        return np.empty(0)
    spans = spans.drop_duplicates(["trace_id", "span_id"])
    own = pd.MultiIndex.from_arrays([spans["trace_id"], spans["span_id"]])
    parent = own.get_indexer(pd.MultiIndex.from_arrays([spans["trace_id"], spans["parent_span_id"]]))
    # Walk every span up to its root at once; the loop runs (deepest chain) times. The bound stops a
    # parent cycle in hand-built data from spinning forever.
    depth = np.ones(len(spans))
    ancestor = parent.copy()
    for _ in range(len(spans)):
        alive = ancestor >= 0
        if not alive.any():
            break
        depth[alive] += 1
        ancestor[alive] = parent[ancestor[alive]]
    return pd.Series(depth).groupby(spans["trace_id"].to_numpy()).max().to_numpy()


def log_lines_per_pod_minute(logs: pd.DataFrame | None) -> np.ndarray:
    """Lines of each (pod, minute), every pod that logs times every minute from first to last line."""
    if logs is None or logs.empty:
        return np.empty(0)
    pod = logs["pod"].fillna(logs["service"])  # a service without pods still logs somewhere
    minute = logs["timestamp"].dt.floor("min")
    counts = pd.crosstab(pod, minute)
    minutes = pd.date_range(minute.min(), minute.max(), freq="min")
    return counts.reindex(columns=minutes, fill_value=0).to_numpy(dtype=float).ravel()


def log_level_counts(logs: pd.DataFrame | None) -> np.ndarray:
    """Lines per level, in the order of `LOG_LEVELS`."""
    if logs is None or logs.empty:
        return np.zeros(len(LOG_LEVELS))
    counts = logs["level"].value_counts()
    return np.array([counts.get(level, 0) for level in LOG_LEVELS], dtype=float)


def fault_free_metrics(incident: Incident) -> pd.DataFrame | None:
    """The baseline's metrics, else the incident's samples before the alert.

    A baseline too short to measure noise (no series with `MIN_SERIES_POINTS` samples, such as a
    one-minute fault-free capture) is passed over for the pre-alert samples.
    """
    baseline = incident.baseline.metrics if incident.baseline is not None else None
    if baseline is not None and _longest_series(baseline) >= MIN_SERIES_POINTS:
        return baseline
    return _before_alert(incident, incident.metrics)


def fault_free_logs(incident: Incident) -> pd.DataFrame | None:
    """The baseline's logs, else the incident's lines before the alert."""
    baseline = incident.baseline.logs if incident.baseline is not None else None
    if baseline is not None and not baseline.empty:
        return baseline
    return _before_alert(incident, incident.logs)


def _before_alert(incident: Incident, table: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of one of the incident's tables before its alert (its window's start without one)."""
    if table is None:
        return None
    cutoff = incident.meta.alert_time if incident.meta.alert_time is not None else incident.meta.window.start
    before = table[table["timestamp"] < cutoff]
    return before if not before.empty else None


def _longest_series(metrics: pd.DataFrame) -> int:
    return int(metrics.groupby(["service", "pod", "metric"], dropna=False).size().max())


def series_noise(metrics: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(coefficient of variation, lag-1 autocorrelation) of each series with enough samples.

    A series is one (service, pod, metric). The CV is undefined for a zero-mean series and the
    autocorrelation for a constant one; those series are left out of that figure.
    """
    if metrics is None or metrics.empty:
        return np.empty(0), np.empty(0)
    keys = ["service", "pod", "metric"]
    ordered = metrics.assign(pod=metrics["pod"].fillna("")).sort_values([*keys, "timestamp"])
    code = ordered.groupby(keys, sort=False).ngroup().to_numpy()
    value = ordered["value"].to_numpy(dtype=float)
    n = np.bincount(code).astype(float)
    mean = np.bincount(code, weights=value) / n
    dev = value - mean[code]
    sum_sq = np.bincount(code, weights=dev**2, minlength=len(n))
    same_series = code[1:] == code[:-1]
    lagged = np.bincount(code[:-1][same_series], weights=(dev[:-1] * dev[1:])[same_series], minlength=len(n))
    enough = n >= MIN_SERIES_POINTS
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.sqrt(sum_sq / n) / np.abs(mean)
        acf1 = lagged / sum_sq
    return cv[enough & (mean != 0)], acf1[enough & (sum_sq > 0)]


def noise_by_metric(incidents: Incident | Sequence[Incident]) -> pd.DataFrame:
    """Per metric name, pooled over the incidents: series, median coefficient of variation, median lag-1
    autocorrelation of the fault-free data (index: metric; columns: series, cv, acf1).

    The overall medians of `realism_stats` depend on which metrics a source collects; this table compares
    like with like where two sources share metric names.
    """
    batch = [incidents] if isinstance(incidents, Incident) else list(incidents)
    cvs: dict[str, list[np.ndarray]] = {}
    acfs: dict[str, list[np.ndarray]] = {}
    for incident in batch:
        metrics = fault_free_metrics(incident)
        if metrics is None:
            continue
        for name, rows in metrics.groupby("metric", sort=False):
            cv, acf1 = series_noise(rows)
            cvs.setdefault(str(name), []).append(cv)
            acfs.setdefault(str(name), []).append(acf1)
    rows_out = []
    for name in sorted(cvs):
        cv, acf1 = np.concatenate(cvs[name]), np.concatenate(acfs[name])
        rows_out.append({"metric": name, "series": float(cv.size), "cv": _quantile(cv, 0.5),
                         "acf1": _quantile(acf1, 0.5)})
    return pd.DataFrame(rows_out, columns=["metric", "series", "cv", "acf1"]).set_index("metric")


def _samples(incident: Incident) -> dict[str, np.ndarray]:
    cv, acf1 = series_noise(fault_free_metrics(incident))
    per_trace = spans_per_trace(incident.spans)
    quiet_logs = fault_free_logs(incident)
    return {
        "spans_per_trace": per_trace,
        "traces": np.array([float(len(per_trace))]),
        "depth": trace_depths(incident.spans),
        "log_rate": log_lines_per_pod_minute(incident.logs),
        "levels": log_level_counts(incident.logs)[None, :],
        "quiet_log_rate": log_lines_per_pod_minute(quiet_logs),
        "quiet_levels": log_level_counts(quiet_logs)[None, :],
        "cv": cv,
        "acf1": acf1,
        "series": np.array([float(len(cv))]),
        "services": np.array([float(len(incident.telemetry.services()))]),
        "pods": np.array([float(len(incident.telemetry.pods()))]),
    }


def realism_stats(incidents: Incident | Sequence[Incident]) -> dict[str, float]:
    """The statistics of `STAT_NAMES` for one incident or pooled over a list."""
    batch = [incidents] if isinstance(incidents, Incident) else list(incidents)
    if not batch:
        raise FlipmoeInputError("realism_stats needs at least one incident")
    samples = [_samples(incident) for incident in batch]
    pooled = {key: np.concatenate([s[key] for s in samples]) for key in samples[0]}
    level_share, quiet_share = _shares(pooled["levels"]), _shares(pooled["quiet_levels"])
    return {
        "incidents": float(len(batch)),
        "traces_per_incident": _mean(pooled["traces"]),
        "spans_per_trace_mean": _mean(pooled["spans_per_trace"]),
        "spans_per_trace_median": _quantile(pooled["spans_per_trace"], 0.5),
        "spans_per_trace_p95": _quantile(pooled["spans_per_trace"], 0.95),
        "depth_mean": _mean(pooled["depth"]),
        "depth_p95": _quantile(pooled["depth"], 0.95),
        "log_lines_per_pod_minute_mean": _mean(pooled["log_rate"]),
        "log_lines_per_pod_minute_p95": _quantile(pooled["log_rate"], 0.95),
        **{f"log_level_{level}": float(share) for level, share in zip(LOG_LEVELS, level_share, strict=True)},
        "fault_free_log_lines_per_pod_minute_mean": _mean(pooled["quiet_log_rate"]),
        **{f"fault_free_log_level_{level}": float(share)
           for level, share in zip(LOG_LEVELS, quiet_share, strict=True)},
        "metric_series": _mean(pooled["series"]),
        "metric_cv_median": _quantile(pooled["cv"], 0.5),
        "metric_acf1_median": _quantile(pooled["acf1"], 0.5),
        "services": _mean(pooled["services"]),
        "pods": _mean(pooled["pods"]),
    }


def _shares(counts: np.ndarray) -> np.ndarray:
    """Each level's share of the lines of (incidents, levels) counts; NaN without lines."""
    total = counts.sum(axis=0)
    return total / total.sum() if total.sum() > 0 else np.full(len(LOG_LEVELS), np.nan)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")
