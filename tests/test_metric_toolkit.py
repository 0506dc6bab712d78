"""Metric anomaly detection on hand-built series with known answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow
from flipmoe.toolkits.findings import MetricPattern, to_json
from flipmoe.toolkits.metrics import (
    DETECTORS,
    LevelShift,
    MetricToolkitConfig,
    RobustMAD,
    ThreeSigma,
    analyse_metrics,
    make_detector,
    register_detector,
)

T0 = pd.Timestamp("2024-03-01T08:00:00Z")
STEP = pd.Timedelta("1min")
HISTORY = 30
"""Samples before the alert; the series below continue after it."""
# A deterministic noisy normal: median 10.5, MAD 0.5.
NORMAL = np.tile([10.0, 11.0], HISTORY // 2)
NO_FLOOR = np.zeros(1)
"""min_scale_S for one series: no peer-based floor."""


Series = dict[tuple[str, str | None, str], np.ndarray]
"""(service, pod, metric) -> values, one per minute."""


def series_frame(series: Series, *, start: pd.Timestamp = T0) -> pd.DataFrame:
    frames = []
    for (service, pod, metric), values in series.items():
        times = start + STEP * np.arange(len(values))
        frames.append(pd.DataFrame({"timestamp": times, "service": service, "pod": pod, "node": "node-1",
                                    "metric": metric, "value": np.asarray(values, dtype=float)}))
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["value"].notna()].reset_index(drop=True)


def incident_of(series: Series, *, alert: int | None = HISTORY,
                baseline: pd.DataFrame | None = None, window_start: int = 0) -> Incident:
    metrics = series_frame(series)
    n = max(len(v) for v in series.values())
    meta = IncidentMeta(id="t", alert="test", window=TimeWindow(T0 + STEP * window_start, T0 + STEP * n),
                        alert_time=T0 + STEP * alert if alert is not None else None)
    return Incident(meta=meta, telemetry=Telemetry(metrics=metrics),
                    baseline=Telemetry(metrics=baseline) if baseline is not None else None)


def one(values_after: list[float] | np.ndarray, *, metric: str = "cpu(%)", history: np.ndarray = NORMAL,
        config: MetricToolkitConfig | None = None) -> list:
    incident = incident_of({("svc", "svc-pod-1", metric): np.r_[history, values_after]})
    return list(analyse_metrics(incident, config=config).anomalies)


# --------------------------------------------------------------------------------------- detectors


def test_point_detectors_flag_a_spike_only_where_it_is() -> None:
    history_SH = NORMAL[None, :]
    current_SC = np.array([[10.0, 11.0, 40.0, 10.0, 11.0]])
    for detector in (ThreeSigma(), RobustMAD()):
        flagged = np.abs(detector.score(history_SH, current_SC, NO_FLOOR)) >= detector.threshold
        assert flagged.tolist() == [[False, False, True, False, False]], type(detector).__name__


def test_mad_score_is_the_modified_z_score() -> None:
    score = RobustMAD().score(NORMAL[None, :], np.array([[12.5]]), NO_FLOOR)
    assert score[0, 0] == pytest.approx((12.5 - 10.5) / (1.4826 * 0.5))


def test_level_shift_detector_ignores_a_spike_and_catches_a_shift_from_its_start() -> None:
    detector = LevelShift()
    spike = detector.score(NORMAL[None, :], np.array([[10.0, 11.0, 40.0, 10.0, 11.0, 10.0]]), NO_FLOOR)
    assert not (np.abs(spike) >= detector.threshold).any()
    shift = detector.score(NORMAL[None, :], np.array([[10.0, 11.0, 10.0, 30.0, 31.0, 30.0, 31.0, 30.0]]),
                           NO_FLOOR)
    assert (np.abs(shift[0]) >= detector.threshold).tolist() == [False] * 3 + [True] * 5


def test_detectors_score_a_trend_increasingly() -> None:
    ramp = 10.5 + np.arange(12, dtype=float)
    for name in ("sigma3", "mad", "level_shift"):
        detector = make_detector(name)
        score = detector.score(NORMAL[None, :], ramp[None, :], NO_FLOOR)[0]
        flagged = np.abs(score) >= detector.threshold
        assert flagged[-1] and not flagged[0], name
        assert np.all(np.diff(score[1:-2]) > 0), name


def test_nan_in_history_and_current_is_ignored() -> None:
    history = NORMAL.copy()
    history[::5] = np.nan
    score = RobustMAD().score(history[None, :], np.array([[np.nan, 40.0]]), NO_FLOOR)
    assert np.isnan(score[0, 0]) and score[0, 1] > 10


def test_registry_rejects_unknown_names_and_accepts_plugins() -> None:
    with pytest.raises(FlipmoeInputError, match="unknown metric detector"):
        make_detector("nope")

    @register_detector("always_high")
    @dataclass(frozen=True, kw_only=True)
    class AlwaysHigh:
        threshold: float = 1.0

        def score(self, history_SH: np.ndarray, current_SC: np.ndarray, min_scale_S: np.ndarray
                  ) -> np.ndarray:
            return np.where(np.isnan(current_SC), np.nan, 5.0)

    try:
        found = one([10.5] * 5, config=MetricToolkitConfig(detector="always_high"))
        assert len(found) == 1 and found[0].detector == "always_high" and found[0].points == 5
    finally:
        del DETECTORS["always_high"]


# -------------------------------------------------------------------------------- patterns, stats


def test_statistics_of_a_transient_level_shift() -> None:
    after = [10.5] * 5 + [30.0] * 5 + [10.5] * 5
    (a,) = one(after)
    assert a.pattern is MetricPattern.LEVEL_SHIFT_UP
    assert a.start == T0 + STEP * (HISTORY + 5)
    assert a.end == T0 + STEP * (HISTORY + 10)
    assert a.duration == pd.Timedelta("5min")
    assert (a.before, a.level, a.peak_value, a.points, a.runs, a.ongoing) == (10.5, 30.0, 30.0, 5, 1, False)
    assert a.peak_time == a.start
    assert a.relative_change == pytest.approx((30 - 10.5) / 10.5)
    assert a.score == pytest.approx((30 - 10.5) / (1.4826 * 0.5))
    assert (a.service, a.pod, a.metric, a.node, a.rate) == ("svc", "svc-pod-1", "cpu(%)", "node-1", False)
    evidence = a.evidence
    assert (evidence.metric, evidence.pod) == ("cpu(%)", "svc-pod-1")
    assert (evidence.start, evidence.end) == (a.start, a.end)


@pytest.mark.parametrize(("after", "pattern"), [
    ([10.5, 10.5, 40.0, 10.5, 10.5, 10.5], MetricPattern.SPIKE),
    ([10.5, 10.5, 0.5, 10.5, 10.5, 10.5], MetricPattern.DIP),
    ([10.5, 10.5] + [30.0] * 8, MetricPattern.LEVEL_SHIFT_UP),
    ([10.5, 10.5] + [5.0] * 8, MetricPattern.LEVEL_SHIFT_DOWN),
    (list(10.5 + 2.0 * np.arange(1, 16)), MetricPattern.TREND_UP),
    (list(10.5 - 0.5 * np.arange(1, 16)), MetricPattern.TREND_DOWN),
    ([10.5, 25.0, -4.0, 26.0, -5.0, 24.0, -3.0, 10.5, 10.5, 10.5], MetricPattern.FLUCTUATION),
    ([10.5, 10.5] + [0.0] * 6, MetricPattern.DROP_TO_ZERO),
    ([10.5, 10.5, 30.0, 20.0, 10.5, 10.5, 10.5], MetricPattern.SPIKE),
])
def test_pattern_classification(after: list[float], pattern: MetricPattern) -> None:
    found = one(after)
    assert [a.pattern for a in found] == [pattern]


def test_close_spikes_merge_into_one_episode_with_several_runs() -> None:
    (a,) = one([10.5, 40.0, 10.5, 45.0, 11.0, 10.5, 10.5, 10.5])
    assert (a.pattern, a.runs, a.points, a.peak_value) == (MetricPattern.SPIKE, 2, 2, 45.0)
    assert a.peak_time == T0 + STEP * (HISTORY + 3)


def test_shift_that_lasts_to_the_end_is_ongoing() -> None:
    (a,) = one([10.5] * 3 + [30.0] * 6)
    assert a.ongoing and a.end == T0 + STEP * (HISTORY + 9)


def test_missing_data_when_a_series_stops_while_others_report() -> None:
    other = np.r_[NORMAL, [10.5] * 10]
    stops = np.r_[NORMAL, [10.5] * 4, [np.nan] * 6]
    incident = incident_of({("a", "a-1", "cpu(%)"): other, ("b", "b-1", "cpu(%)"): stops})
    (a,) = analyse_metrics(incident).anomalies
    assert (a.service, a.pattern, a.ongoing, a.level, a.peak_value, a.relative_change) == (
        "b", MetricPattern.MISSING_DATA, True, None, None, None)
    assert a.start == T0 + STEP * (HISTORY + 4) and a.end == T0 + STEP * (HISTORY + 10)


def test_results_are_sorted_by_score() -> None:
    incident = incident_of({("a", "a-1", "m"): np.r_[NORMAL, [10.5, 20.0, 10.5]],
                            ("b", "b-1", "m"): np.r_[NORMAL, [10.5, 60.0, 10.5]],
                            ("c", "c-1", "m"): np.r_[NORMAL, [10.5, 30.0, 10.5]]})
    assert [a.service for a in analyse_metrics(incident).anomalies] == ["b", "c", "a"]


# ------------------------------------------------------------------------------------ edge cases


def test_constant_series_flags_material_changes_only() -> None:
    flat = np.full(HISTORY, 50.0)
    assert one([50.0] * 5, history=flat) == []
    assert one([50.5] * 5, history=flat) == []  # 1% on a constant series is not material
    (a,) = one([50.0, 60.0, 60.0, 60.0, 60.0], history=flat)
    assert a.pattern is MetricPattern.LEVEL_SHIFT_UP and a.score == pytest.approx(10 / (0.02 * 50))


def test_constant_series_is_judged_by_the_spread_of_its_varying_peers() -> None:
    # Error rates: svc-a always 0 so far; svc-b alternates 0 and 2 (median 1, MAD 1: spread 1.4826).
    varying = np.tile([0.0, 2.0], HISTORY // 2)
    incident = incident_of({("a", "a-1", "errors(%)"): np.r_[np.zeros(HISTORY), [0.0, 6.0, 0.0]],
                            ("b", "b-1", "errors(%)"): np.r_[varying, [0.0, 2.0, 0.0]]})
    (a,) = analyse_metrics(incident).anomalies
    assert (a.service, a.spread) == ("a", pytest.approx(1.4826))
    assert a.score == pytest.approx(6 / 1.4826)


def test_change_from_a_constant_zero_has_no_relative_change_and_a_capped_score() -> None:
    (a,) = one([0.0, 0.0, 3.0, 3.0, 3.0], history=np.zeros(HISTORY))
    assert a.relative_change is None and a.before == 0.0
    assert a.score == MetricToolkitConfig().score_cap


def test_mostly_idle_series_is_not_flagged_for_its_usual_blips() -> None:
    # MAD is zero (most samples are 0) but the occasional 1 is normal: the mean deviation sees it.
    idle = np.where(np.arange(HISTORY) % 5 == 0, 1.0, 0.0)
    assert one([0.0, 1.0, 0.0, 0.0, 0.0], history=idle) == []


def test_nan_gap_does_not_split_an_episode() -> None:
    (a,) = one([10.5, 30.0, 30.0, np.nan, np.nan, 30.0, 30.0, 10.5, 10.5, 10.5])
    assert (a.pattern, a.runs, a.points) == (MetricPattern.LEVEL_SHIFT_UP, 1, 4)
    assert a.duration == pd.Timedelta("6min")


def test_service_level_series_without_pod() -> None:
    incident = incident_of({("frontend", None, "p95_ms"): np.r_[NORMAL, [10.5, 90.0, 10.5]]})
    (a,) = analyse_metrics(incident).anomalies
    assert (a.service, a.pod, a.evidence.pod, a.pattern) == ("frontend", None, None, MetricPattern.SPIKE)


def test_short_history_is_skipped_with_a_note() -> None:
    incident = incident_of({("svc", "p", "m"): np.r_[[10.0, 11.0, 10.0], [40.0] * 5]}, alert=3)
    report = analyse_metrics(incident)
    assert report.anomalies == () and report.series == 0
    assert any("fewer than 5 normal samples" in n for n in report.notes)


def test_counter_is_scored_as_a_per_second_rate_and_survives_a_reset() -> None:
    increments = np.r_[np.full(HISTORY, 60.0), np.full(10, 600.0)]
    counter = np.cumsum(increments)
    counter[HISTORY + 2:] -= counter[HISTORY + 1]  # the process restarted: the counter began again
    counter[HISTORY + 2:] += 600.0
    (a,) = one(counter[HISTORY:], metric="http_requests_total", history=counter[:HISTORY])
    assert a.rate and a.before == pytest.approx(1.0) and a.peak_value == pytest.approx(10.0)
    assert a.pattern is MetricPattern.LEVEL_SHIFT_UP and a.start == T0 + STEP * HISTORY and a.points == 10


def test_baseline_is_the_reference_when_present() -> None:
    baseline = series_frame({("svc", "p", "m"): np.full(20, 100.0) + np.tile([0.0, 2.0], 10)},
                            start=T0 - pd.Timedelta(days=1))
    # Inside the window the series sits at 10.5 all along: anomalous against the baseline (~101).
    incident = incident_of({("svc", "p", "m"): np.full(12, 10.5)}, alert=2, baseline=baseline)
    report = analyse_metrics(incident)
    (a,) = report.anomalies
    assert report.reference == "the baseline window"
    assert (a.pattern, a.before, a.start) == (MetricPattern.LEVEL_SHIFT_DOWN, 101.0, T0)


def test_series_missing_from_the_baseline_uses_its_own_history_too() -> None:
    baseline = series_frame({("other", "o", "m"): np.full(20, 1.0)}, start=T0 - pd.Timedelta(days=1))
    incident = incident_of({("svc", "p", "m"): np.r_[NORMAL, [30.0] * 5],
                            ("other", "o", "m"): np.full(HISTORY + 5, 1.0)}, baseline=baseline)
    report = analyse_metrics(incident)
    assert [(a.service, a.before) for a in report.anomalies] == [("svc", 10.5)]
    assert any("fewer than 5 baseline samples" in n for n in report.notes)


def test_no_alert_time_and_no_history_uses_the_first_third_of_the_window() -> None:
    incident = incident_of({("svc", "p", "m"): np.r_[NORMAL, [30.0] * 15]}, alert=None)
    report = analyse_metrics(incident)
    assert any("first third" in n for n in report.notes)
    assert report.anomalies[0].start == T0 + STEP * HISTORY


def test_degraded_inputs_never_raise() -> None:
    meta = IncidentMeta(id="t", alert="x", window=TimeWindow(T0, T0 + STEP * 10), alert_time=T0 + STEP * 5)
    no_metrics = analyse_metrics(Incident(meta=meta))
    assert no_metrics.anomalies == () and "no metrics" in no_metrics.notes[0]
    before_window = series_frame({("svc", "p", "m"): NORMAL}, start=T0 - STEP * 60)
    empty_window = analyse_metrics(Incident(meta=meta, telemetry=Telemetry(metrics=before_window)))
    assert empty_window.anomalies == () and any("no metric samples inside" in n for n in empty_window.notes)
    bare = series_frame({("svc", "p", "m"): np.r_[NORMAL, [40.0]]}).drop(columns=["pod", "node"])
    (a,) = analyse_metrics(incident_of({("svc", "p", "m"): np.r_[NORMAL, [40.0]]})).anomalies
    bare_meta = IncidentMeta(id="t", alert="x", window=TimeWindow(T0, T0 + STEP * 31),
                             alert_time=T0 + STEP * HISTORY)
    bare_incident = Incident(meta=bare_meta, telemetry=Telemetry(metrics=bare))
    (b,) = analyse_metrics(bare_incident).anomalies
    assert (b.pod, b.node, b.score) == (None, None, a.score)
    single = series_frame({("svc", "p", "m"): np.array([1.0])}, start=T0 + STEP * 6)
    assert analyse_metrics(Incident(meta=meta, telemetry=Telemetry(metrics=single))).anomalies == ()


def test_findings_serialise_to_json_values() -> None:
    (a,) = one([10.5] * 3 + [30.0] * 6)
    data = to_json(a)
    assert data["pattern"] == "level_shift_up" and data["start"] == "2024-03-01T08:33:00Z"
    assert data["evidence"] == {"metric": "cpu(%)", "service": "svc", "pod": "svc-pod-1",
                                "start": "2024-03-01T08:33:00Z", "end": "2024-03-01T08:39:00Z"}
