import numpy as np
import pandas as pd
import pytest

from data_pipeline.chaos.realism import (
    STAT_NAMES,
    fault_free_logs,
    fault_free_metrics,
    log_lines_per_pod_minute,
    noise_by_metric,
    realism_stats,
    series_noise,
    spans_per_trace,
    trace_depths,
)
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, normalise_table

T0 = pd.Timestamp("2026-03-01T10:00:00Z")


def _spans(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """(trace_id, span_id, parent_span_id) rows -> a spans table."""
    return normalise_table(pd.DataFrame({
        "trace_id": [r[0] for r in rows], "span_id": [r[1] for r in rows],
        "parent_span_id": [r[2] for r in rows],
        "service": "svc", "pod": "svc-0", "operation": "op", "start": T0, "duration": 1.0, "status": "ok",
    }), "spans", source="test")


def _metrics(values: dict[str, list[float]], *, start: pd.Timestamp = T0) -> pd.DataFrame:
    """One series per metric name, a sample per minute."""
    rows = [{"timestamp": start + pd.Timedelta(minutes=i), "service": "svc", "pod": "svc-0", "metric": name,
             "value": v} for name, series in values.items() for i, v in enumerate(series)]
    return normalise_table(pd.DataFrame(rows), "metrics", source="test")


def _incident(*, alert_minutes: float = 5.0, **telemetry: pd.DataFrame) -> Incident:
    meta = IncidentMeta(id="r", alert="a", window=TimeWindow(T0, T0 + pd.Timedelta(minutes=10)),
                        alert_time=T0 + pd.Timedelta(minutes=alert_minutes))
    return Incident(meta=meta, telemetry=Telemetry(**telemetry))


def test_depth_counts_spans_on_the_longest_chain():
    spans = _spans([("t1", "a", None), ("t1", "b", "a"), ("t1", "c", "b"), ("t1", "d", "a"),
                    ("t2", "x", None)])
    assert sorted(trace_depths(spans)) == [1, 3]
    assert sorted(spans_per_trace(spans)) == [1, 4]


def test_span_with_missing_parent_counts_as_a_root():
    spans = _spans([("t1", "b", "gone"), ("t1", "c", "b")])
    assert list(trace_depths(spans)) == [2]


def test_same_span_id_in_two_traces_does_not_link_them():
    spans = _spans([("t1", "a", None), ("t1", "b", "a"), ("t2", "b", None)])
    assert sorted(trace_depths(spans)) == [1, 2]


def test_log_rate_counts_quiet_minutes_as_zero():
    logs = normalise_table(pd.DataFrame({
        "timestamp": [T0, T0 + pd.Timedelta(seconds=10), T0 + pd.Timedelta(minutes=2), T0],
        "service": ["a", "a", "a", "b"], "pod": ["a-0", "a-0", "a-0", None], "level": "info", "message": "m",
    }), "logs", source="test")
    # Pods a-0 and b (a service without pods) over minutes 0, 1, 2: a-0 = [2, 0, 1], b = [1, 0, 0].
    assert sorted(log_lines_per_pod_minute(logs)) == [0, 0, 0, 1, 1, 2]


def test_noise_of_known_series():
    cv, acf1 = series_noise(_metrics({"ramp": [1, 2, 3, 4], "flip": [1, 3, 1, 3], "flat": [5, 5, 5],
                                      "short": [1, 9]}))
    # Series are ordered by metric name: flat, flip, ramp ("short" has too few samples).
    assert cv == pytest.approx([0.0, 0.5, np.sqrt(1.25) / 2.5])
    assert acf1 == pytest.approx([-0.75, 0.25]), "a constant series has no autocorrelation"


def test_noise_per_metric_name():
    incident = _incident(metrics=_metrics({"ramp": [1, 2, 3, 4], "flip": [1, 3, 1, 3], "short": [1, 9]}),
                         alert_minutes=10)
    table = noise_by_metric([incident, incident])
    assert list(table.index) == ["flip", "ramp", "short"]
    assert table.loc["flip", "series"] == 2 and table.loc["flip", "cv"] == pytest.approx(0.5)
    assert table.loc["flip", "acf1"] == pytest.approx(-0.75)
    assert table.loc["short", "series"] == 0 and np.isnan(table.loc["short", "cv"])


def test_fault_free_metrics_prefer_the_baseline_then_pre_alert_samples():
    window = _metrics({"cpu": [1.0] * 10})
    no_baseline = _incident(metrics=window, alert_minutes=4)
    assert fault_free_metrics(no_baseline)["timestamp"].max() < T0 + pd.Timedelta(minutes=4)
    assert len(fault_free_metrics(no_baseline)) == 4
    baseline = _metrics({"cpu": [2.0, 3.0, 4.0]}, start=T0 - pd.Timedelta(days=1))
    with_baseline = Incident(meta=no_baseline.meta, telemetry=no_baseline.telemetry,
                             baseline=Telemetry(metrics=baseline))
    assert fault_free_metrics(with_baseline)["value"].tolist() == [2.0, 3.0, 4.0]
    short = Incident(meta=no_baseline.meta, telemetry=no_baseline.telemetry,
                     baseline=Telemetry(metrics=_metrics({"cpu": [2.0, 3.0]})))
    assert len(fault_free_metrics(short)) == 4, "a baseline too short to measure noise is passed over"


def test_fault_free_logs_prefer_the_baseline_then_pre_alert_lines():
    def logs(minutes: list[int], level: str) -> pd.DataFrame:
        return normalise_table(pd.DataFrame({"timestamp": [T0 + pd.Timedelta(minutes=m) for m in minutes],
                                             "service": "svc", "pod": "svc-0", "level": level, "message": "m"}),
                               "logs", source="test")

    no_baseline = _incident(logs=logs([1, 2, 6], "ERROR"), alert_minutes=5)
    assert len(fault_free_logs(no_baseline)) == 2
    with_baseline = Incident(meta=no_baseline.meta, telemetry=no_baseline.telemetry,
                             baseline=Telemetry(logs=logs([0], "INFO")))
    assert fault_free_logs(with_baseline)["level"].tolist() == ["INFO"]
    stats = realism_stats(with_baseline)
    assert stats["log_level_ERROR"] == 1 and stats["fault_free_log_level_INFO"] == 1


def test_stats_of_one_incident_and_pooled_list():
    logs = normalise_table(pd.DataFrame({"timestamp": [T0, T0], "service": "svc", "pod": "svc-0",
                                         "level": ["info", "warning"], "message": "m"}),
                           "logs", source="test")
    chain = _spans([("t1", "a", None), ("t1", "b", "a"), ("t1", "c", "b")])
    ramp = _metrics({"ramp": [1, 2, 3, 4, 100, 100]})
    one = _incident(alert_minutes=4, spans=chain, logs=logs, metrics=ramp)
    other = _incident(spans=_spans([("u", "a", None)]))
    stats = realism_stats(one)
    assert list(stats) == list(STAT_NAMES)
    assert stats["depth_mean"] == 3 and stats["spans_per_trace_median"] == 3
    assert stats["log_level_INFO"] == stats["log_level_WARN"] == 0.5
    # Without a baseline, the fault-free lines are those before the alert (both are, at T0).
    assert stats["fault_free_log_level_WARN"] == 0.5 and stats["fault_free_log_lines_per_pod_minute_mean"] == 2
    assert stats["metric_cv_median"] == pytest.approx(np.sqrt(1.25) / 2.5), "only the pre-alert samples count"
    assert stats["services"] == 1 and stats["pods"] == 1
    pooled = realism_stats([one, other])
    assert pooled["incidents"] == 2 and pooled["traces_per_incident"] == 1
    assert pooled["depth_mean"] == 2 and pooled["spans_per_trace_mean"] == 2
    assert np.isnan(realism_stats(other)["log_lines_per_pod_minute_mean"])


def test_stats_need_an_incident():
    with pytest.raises(FlipmoeInputError, match="at least one"):
        realism_stats([])
