"""Metric anomaly detection: score every series against its normal behaviour, cut anomalous episodes,
classify their shape and extract their statistics.

The flow, vectorised over all series at once:

  long table ──► dense matrices on a common time grid: history (S, H) and current window (S, C)
             ──► a `Detector` scores each current point against the history (signed, about sigmas)
             ──► anomalous points grouped into episodes (short normal gaps and NaN gaps bridged)
             ──► per-episode statistics (start, end, peak, before, level, change) and pattern
             ──► `MetricAnomaly` records sorted by score, plus notes on what could not be used.

The history of a series is the incident's baseline when it has one, else the series' own samples
before the alert time. Detectors plug in through `register_detector`; see `DETECTORS`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident, IncidentMeta
from flipmoe.toolkits.findings import MetricAnomaly, MetricEvidence, MetricPattern

# ----------------------------------------------------------------------------------------- detectors


class Detector(Protocol):
    """Scores the current samples of many series against their history.

    `score(history_SH, current_SC, min_scale_S)` gets one row per series (NaN marks a missing sample;
    rows of `history_SH` are a bag of normal samples, their order carries no meaning) and the lowest
    spread each series may be judged with (see `floor_scale`), and returns signed per-point scores of
    shape (S, C): positive above normal, negative below, NaN where the current sample is NaN. A point
    is anomalous when |score| >= `threshold`.
    """

    threshold: float

    def score(self, history_SH: np.ndarray, current_SC: np.ndarray, min_scale_S: np.ndarray
              ) -> np.ndarray: ...


_DetectorT = TypeVar("_DetectorT")
DETECTORS: dict[str, type] = {}
"""Detector registry: name -> class; the class is built with keyword arguments only."""


def register_detector(name: str) -> Callable[[type[_DetectorT]], type[_DetectorT]]:
    """Class decorator that makes a detector available by `name` (e.g. in `MetricToolkitConfig`)."""

    def register(cls: type[_DetectorT]) -> type[_DetectorT]:
        DETECTORS[name] = cls
        return cls

    return register


def make_detector(name: str, **params: float) -> Detector:
    """The registered detector `name` built with `params`; an unknown name is an input error."""
    if name not in DETECTORS:
        raise FlipmoeInputError(f"unknown metric detector {name!r}",
                                hint=f"known: {', '.join(sorted(DETECTORS))}")
    detector: Detector = DETECTORS[name](**params)
    return detector


def nanmedian_rows(x_SN: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row).

    Sorting puts NaN last, so the median sits at a per-row position; this avoids np.nanmedian's
    slow masked path and its warnings on empty rows.
    """
    if x_SN.shape[-1] == 0:
        return np.full(x_SN.shape[:-1], np.nan)
    sorted_SN = np.sort(x_SN, axis=-1)
    n_S = np.sum(~np.isnan(x_SN), axis=-1)
    lo = np.clip((n_S - 1) // 2, 0, None)[..., None]
    hi = np.clip(n_S // 2, 0, x_SN.shape[-1] - 1)[..., None]
    median = 0.5 * (np.take_along_axis(sorted_SN, lo, -1) + np.take_along_axis(sorted_SN, hi, -1))[..., 0]
    return np.where(n_S > 0, median, np.nan)


def floor_scale(scale_S: np.ndarray, center_S: np.ndarray, relative_floor: float, min_scale_S: np.ndarray
                ) -> np.ndarray:
    """Keep a spread estimate away from zero.

    A constant reference has zero spread, which would make any later change infinitely anomalous.
    A change is only material relative to the level, so the spread is at least `relative_floor`
    times |center|; at least `min_scale_S` (what the series' peers show, see `analyse_metrics`);
    and a tiny absolute floor covers series that are constantly zero and have no varying peers.
    """
    scale_S = np.where(np.isfinite(scale_S), scale_S, 0.0)
    floors_S = np.maximum(np.maximum(relative_floor * np.abs(center_S), min_scale_S), 1e-9)
    return np.maximum(scale_S, floors_S)  # type: ignore[no-any-return]


def robust_spread(history_SH: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and a robust standard deviation (1.4826 MAD) per row, without any floor.

    MAD is zero when more than half the samples are equal (quantised or mostly-idle series) even if
    the rest vary; the standard deviation then still sees that variation, so a usual blip of an
    idle series is not a 'change from a constant'.
    """
    center_S = nanmedian_rows(history_SH)
    mad_S = 1.4826 * nanmedian_rows(np.abs(history_SH - center_S[:, None]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with < 2 samples: NaN, handled by the floor
        std_S = np.nanstd(history_SH, axis=1, ddof=1)
    return center_S, np.where(mad_S > 0, mad_S, std_S)


def robust_center_scale(history_SH: np.ndarray, relative_floor: float, min_scale_S: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Median and floored robust spread per row (see `robust_spread`, `floor_scale`)."""
    center_S, spread_S = robust_spread(history_SH)
    return center_S, floor_scale(spread_S, center_S, relative_floor, min_scale_S)


@register_detector("sigma3")
@dataclass(frozen=True, kw_only=True)
class ThreeSigma:
    """Classic z-score against the history's mean and standard deviation."""

    threshold: float = 3.0
    relative_floor: float = 0.02
    """Lowest spread, as a fraction of |mean|, so constant histories do not make every change infinite."""

    def score(self, history_SH: np.ndarray, current_SC: np.ndarray, min_scale_S: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_S = np.nanmean(history_SH, axis=1)
            std_S = np.nanstd(history_SH, axis=1, ddof=1)
        scale_S = floor_scale(std_S, mean_S, self.relative_floor, min_scale_S)
        return (current_SC - mean_S[:, None]) / scale_S[:, None]  # type: ignore[no-any-return]


@register_detector("mad")
@dataclass(frozen=True, kw_only=True)
class RobustMAD:
    """Modified z-score: (x - median) / (1.4826 MAD); outliers in the history barely move it."""

    threshold: float = 3.5
    """3.5 is Iglewicz and Hoaglin's recommended cut-off for the modified z-score."""
    relative_floor: float = 0.02

    def score(self, history_SH: np.ndarray, current_SC: np.ndarray, min_scale_S: np.ndarray) -> np.ndarray:
        center_S, scale_S = robust_center_scale(history_SH, self.relative_floor, min_scale_S)
        return (current_SC - center_S[:, None]) / scale_S[:, None]  # type: ignore[no-any-return]


@register_detector("level_shift")
@dataclass(frozen=True, kw_only=True)
class LevelShift:
    """Robust z-score of a centred rolling median: sustained shifts score, isolated spikes do not.

    The median of `window` samples ignores up to half of them, so a single outlier leaves it at the
    normal level while a shift that lasts longer than half the window moves it right from its start.
    """

    threshold: float = 3.0
    window: int = 5
    relative_floor: float = 0.02

    def __post_init__(self) -> None:
        if self.window < 1 or self.window % 2 == 0:
            raise FlipmoeInputError(f"level_shift window must be a positive odd number, got {self.window}")

    def score(self, history_SH: np.ndarray, current_SC: np.ndarray, min_scale_S: np.ndarray) -> np.ndarray:
        center_S, scale_S = robust_center_scale(history_SH, self.relative_floor, min_scale_S)
        half = self.window // 2
        padded_SP = np.pad(current_SC, ((0, 0), (half, half)), constant_values=np.nan)
        windows_SCW = np.lib.stride_tricks.sliding_window_view(padded_SP, self.window, axis=1)
        rolling_SC = nanmedian_rows(windows_SCW)
        score_SC = (rolling_SC - center_S[:, None]) / scale_S[:, None]
        return np.where(np.isnan(current_SC), np.nan, score_SC)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True, kw_only=True)
class MetricToolkitConfig:
    """How metric anomalies are detected and cut into episodes."""

    detector: str = "mad"
    """Registry name of the detector (see `DETECTORS`)."""
    detector_params: dict[str, float] = field(default_factory=dict)
    """Keyword arguments for the detector, e.g. {"threshold": 4.0}."""
    min_reference_points: int = 5
    """Series with fewer normal samples than this are not scored (their spread is unknowable)."""
    merge_gap: int = 2
    """Normal samples allowed between two anomalous ones of the same episode."""
    spike_max_points: int = 2
    """Episodes with at most this many samples are spikes or dips whatever their shape."""
    transient_max_points: int = 5
    """Longer episodes up to this many samples are spikes or dips when one sample dominates them."""
    trend_min_points: int = 6
    """Fewest samples for an episode to be called a trend rather than a level shift."""
    score_cap: float = 100.0
    """Scores are clipped here: beyond it (e.g. any change of a constant series) more digits mean nothing."""
    missing_min_points: int = 3
    """A series must be silent for at least this many grid steps (and three of its own) to be missing."""
    missing_data_score: float = 10.0
    """Score of a missing-data anomaly: a series that stops reporting is treated like a 10-sigma change."""
    max_grid_points: int = 5000
    """Most time-grid columns per table, to bound memory: of a longer history only the latest part is used."""

    def __post_init__(self) -> None:
        make_detector(self.detector, **self.detector_params)
        for name in ("min_reference_points", "spike_max_points", "trend_min_points", "missing_min_points"):
            if getattr(self, name) < 1:
                raise FlipmoeInputError(f"metrics.{name} must be at least 1")
        if self.merge_gap < 0:
            raise FlipmoeInputError("metrics.merge_gap must be >= 0")
        if self.transient_max_points < self.spike_max_points:
            raise FlipmoeInputError("metrics.transient_max_points must be >= metrics.spike_max_points")
        if self.score_cap <= 0 or self.max_grid_points < 2:
            raise FlipmoeInputError("metrics.score_cap must be > 0 and metrics.max_grid_points >= 2")


@dataclass(frozen=True, kw_only=True)
class MetricReport:
    """Result of `analyse_metrics`."""

    anomalies: tuple[MetricAnomaly, ...]
    """Sorted by score, highest first."""
    notes: tuple[str, ...]
    """What could not be used and why (missing modality, skipped series, fallbacks)."""
    series: int
    """Series that were scored."""
    services: tuple[str, ...]
    """Services that have metric series at all."""
    reference: str
    """What served as the normal reference, in words."""


# --------------------------------------------------------------------------------- reference split


def reference_split_time(meta: IncidentMeta) -> pd.Timestamp:
    """Without a baseline, telemetry before this time is taken as normal: the alert time when known."""
    return meta.alert_time if meta.alert_time is not None else meta.window.start


def format_utc_clock(ts: pd.Timestamp) -> str:
    return f"{ts.tz_convert('UTC'):%H:%M:%S} UTC"


# ------------------------------------------------------------------------------------ series matrix

_SPREAD_FLOOR = 0.02
"""Relative floor of the reference spread reported in findings and used by the pattern rules."""
_COUNTER_NAME = re.compile(r"(?:_total|_count|_sum|_bucket)$|counter", re.IGNORECASE)
_SERIES_KEY = ["service", "pod", "metric"]


def _ns(times: pd.Series) -> np.ndarray:
    return times.to_numpy(dtype="datetime64[ns]").view("int64")


def _series_codes(tables: list[pd.DataFrame]) -> tuple[list[np.ndarray], pd.DataFrame]:
    """One integer code per (service, pod, metric), shared across tables, and the key of each code."""
    # Hand-built tables may lack the optional pod and node columns: they read as missing.
    stacked = pd.concat([t.reindex(columns=[*_SERIES_KEY, "node"]) for t in tables], ignore_index=True)
    combined = np.zeros(len(stacked), dtype=np.int64)
    for col in _SERIES_KEY:
        col_codes, uniques = pd.factorize(stacked[col], use_na_sentinel=False)
        combined = combined * (len(uniques) + 1) + col_codes
    series_code, _ = pd.factorize(combined)
    keys = stacked.groupby(series_code, sort=True).agg(**{c: (c, "first") for c in [*_SERIES_KEY, "node"]})
    bounds = np.cumsum([0, *(len(t) for t in tables)])
    codes = [series_code[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return codes, keys.reset_index(drop=True)


def _median_step_ns(code: np.ndarray, t_ns: np.ndarray, n_series: int) -> np.ndarray:
    """Each series' own median sampling interval (NaN when it has fewer than two distinct samples)."""
    order = np.lexsort((t_ns, code))
    code_sorted, t_sorted = code[order], t_ns[order]
    gap = np.diff(t_sorted).astype(np.float64)
    same = (code_sorted[1:] == code_sorted[:-1]) & (gap > 0)
    steps = pd.Series(gap[same]).groupby(code_sorted[1:][same]).median()
    out = np.full(n_series, np.nan)
    out[steps.index.to_numpy()] = steps.to_numpy()
    return out


def _to_grid(code: np.ndarray, t_ns: np.ndarray, value: np.ndarray, n_series: int,
             origin_ns: int, step_ns: int, n_cols: int) -> np.ndarray:
    """Dense (S, T) matrix; samples falling into one grid cell are averaged, empty cells are NaN."""
    col = np.rint((t_ns - origin_ns) / step_ns).astype(np.int64)
    keep = (col >= 0) & (col < n_cols)
    flat = code[keep] * n_cols + col[keep]
    size = n_series * n_cols
    total = np.bincount(flat, weights=value[keep], minlength=size)
    count = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).reshape(n_series, n_cols)  # type: ignore[no-any-return]


def _counter_rates(matrix_ST: np.ndarray, step_s: float) -> np.ndarray:
    """Per-second rate of counter rows; a decrease is a counter reset, counted from zero."""
    n_cols = matrix_ST.shape[1]
    if n_cols == 0:
        return matrix_ST
    valid = ~np.isnan(matrix_ST)
    last_valid_ST = np.maximum.accumulate(np.where(valid, np.arange(n_cols), -1), axis=1)
    prev_ST = np.concatenate([np.full((matrix_ST.shape[0], 1), -1), last_valid_ST[:, :-1]], axis=1)
    has_prev = valid & (prev_ST >= 0)
    prev_value = np.take_along_axis(matrix_ST, np.clip(prev_ST, 0, None), axis=1)
    delta = matrix_ST - prev_value
    delta = np.where(delta < 0, matrix_ST, delta)
    elapsed_s = (np.arange(n_cols) - prev_ST) * step_s
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(has_prev, delta / elapsed_s, np.nan)  # type: ignore[no-any-return]


def _is_counter(metric_names: pd.Series, *matrices_ST: np.ndarray) -> np.ndarray:
    """Counter by naming convention (Prometheus suffixes), confirmed by the values rarely falling
    (a fall is a reset): a gauge that happens to carry such a name keeps its raw values."""
    counter_S = metric_names.astype(str).str.contains(_COUNTER_NAME).to_numpy(dtype=bool, copy=True)
    candidates = np.flatnonzero(counter_S)
    rises, falls = np.zeros(candidates.size), np.zeros(candidates.size)
    for matrix_ST in matrices_ST:
        if matrix_ST.shape[1] < 2:
            continue
        filled_ST = pd.DataFrame(matrix_ST[candidates].T).ffill().to_numpy().T
        delta_ST = np.diff(filled_ST, axis=1)
        rises += np.sum(delta_ST > 0, axis=1)
        falls += np.sum(delta_ST < 0, axis=1)
    counter_S[candidates] = falls <= 0.1 * (rises + falls)
    return counter_S


@dataclass(frozen=True, kw_only=True)
class _SeriesKeys:
    """Identity of each series, as plain lists indexed by series code."""

    service: list[str]
    pod: list[str | None]
    metric: list[str]
    node: list[str | None]


@dataclass(frozen=True, kw_only=True)
class _Grid:
    """Series on one time grid: history and current matrices plus what is needed to read them back."""

    keys: _SeriesKeys
    history_SH: np.ndarray
    current_SC: np.ndarray
    times_C: pd.DatetimeIndex
    step: pd.Timedelta
    cadence_S: np.ndarray
    """Each series' own sampling interval, in grid steps (>= 1)."""
    rate_S: np.ndarray
    """True where the series is a counter converted to a per-second rate."""


def _ts_ns(ts: pd.Timestamp) -> int:
    return int(ts.as_unit("ns").value)


def _grid_origin(t_ns: np.ndarray, step_ns: int, max_cols: int) -> tuple[int, int]:
    """(origin, columns) of a grid covering the samples; very long histories keep their latest part."""
    origin_ns = max(int(t_ns.min()), int(t_ns.max()) - (max_cols - 1) * step_ns)
    return origin_ns, int((int(t_ns.max()) - origin_ns) // step_ns) + 1


def _build_grid(own: pd.DataFrame, baseline: pd.DataFrame | None, *, split: pd.Timestamp,
                current_start: pd.Timestamp, config: MetricToolkitConfig, notes: list[str]) -> _Grid:
    tables = [own] if baseline is None else [own, baseline]
    codes, keys = _series_codes(tables)
    n_series = len(keys)
    own_t = _ns(own["timestamp"])
    own_steps = _median_step_ns(codes[0], own_t, n_series)
    # The common grid step is the typical series' sampling interval.
    step_ns = max(int(np.nanmedian(own_steps)) if np.isfinite(own_steps).any() else 60_000_000_000, 1)
    origin_ns, n_cols = _grid_origin(own_t, step_ns, config.max_grid_points)
    if origin_ns > own_t.min():
        notes.append(f"metric history longer than {config.max_grid_points} samples: "
                     f"only its latest part is used")
    own_ST = _to_grid(codes[0], own_t, own["value"].to_numpy(dtype=np.float64), n_series, origin_ns, step_ns,
                      n_cols)
    times_T = pd.DatetimeIndex(pd.to_datetime(origin_ns + np.arange(n_cols) * step_ns, unit="ns", utc=True))

    base_ST = np.full((n_series, 0), np.nan)
    cadence_ns = own_steps
    if baseline is not None:
        base_t = _ns(baseline["timestamp"])
        base_origin, base_cols = _grid_origin(base_t, step_ns, config.max_grid_points)
        base_ST = _to_grid(codes[1], base_t, baseline["value"].to_numpy(dtype=np.float64), n_series,
                           base_origin, step_ns, base_cols)
        cadence_ns = np.where(np.isfinite(own_steps), own_steps, _median_step_ns(codes[1], base_t, n_series))

    rate_S = _is_counter(keys["metric"], own_ST, base_ST)
    for matrix_ST in (own_ST, base_ST):
        matrix_ST[rate_S] = _counter_rates(matrix_ST[rate_S], step_ns / 1e9)

    first_current = int(times_T.searchsorted(current_start))
    own_history_SH = own_ST[:, : int(times_T.searchsorted(split))]
    history_SH = own_history_SH
    if baseline is not None:
        history_SH = _baseline_or_own(base_ST, own_history_SH, config.min_reference_points, split, notes)
    cadence_S = np.where(np.isfinite(cadence_ns), cadence_ns / step_ns, 1.0)
    return _Grid(keys=_SeriesKeys(service=[str(v) for v in keys["service"]], pod=_texts(keys["pod"]),
                                  metric=[str(v) for v in keys["metric"]], node=_texts(keys["node"])),
                 history_SH=history_SH, current_SC=own_ST[:, first_current:],
                 times_C=times_T[first_current:], step=pd.Timedelta(step_ns, "ns"),
                 cadence_S=np.maximum(cadence_S, 1.0), rate_S=rate_S)


def _baseline_or_own(base_SB: np.ndarray, own_SH: np.ndarray, min_points: int, split: pd.Timestamp,
                     notes: list[str]) -> np.ndarray:
    """History rows from the baseline; a series with too few baseline samples (a short baseline, a
    renamed pod, a new metric) also gets its own samples before the split."""
    short_S = np.sum(~np.isnan(base_SB), axis=1) < min_points
    if short_S.any():
        notes.append(f"{int(short_S.sum())} series have fewer than {min_points} baseline samples: their own "
                     f"samples before {format_utc_clock(split)} were added to their reference")
    history_SH = np.full((base_SB.shape[0], base_SB.shape[1] + own_SH.shape[1]), np.nan)
    history_SH[:, : base_SB.shape[1]] = base_SB
    history_SH[short_S, base_SB.shape[1]:] = own_SH[short_S]
    return history_SH


# ----------------------------------------------------------------------------------------- episodes


@dataclass(frozen=True, kw_only=True)
class _Episodes:
    """Per-episode arrays (E,) describing runs of anomalous points of the current window."""

    row: np.ndarray
    first: np.ndarray
    """Column of the first anomalous point."""
    last: np.ndarray
    points: np.ndarray
    runs: np.ndarray
    positive: np.ndarray
    """Anomalous points with a positive score."""
    peak_col: np.ndarray
    peak_score: np.ndarray


def _episodes(score_SC: np.ndarray, valid_SC: np.ndarray, threshold: float, merge_gap: int) -> _Episodes:
    """Group anomalous points into episodes: within a row, points at most `merge_gap` valid samples
    apart share one; NaN samples do not count as gaps, so a reporting hole does not split an episode."""
    rank_SC = np.cumsum(valid_SC, axis=1)
    rows, cols = np.nonzero(np.abs(np.nan_to_num(score_SC)) >= threshold)
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Episodes(row=empty, first=empty, last=empty, points=empty, runs=empty, positive=empty,
                         peak_col=empty, peak_score=np.zeros(0))
    ranks = rank_SC[rows, cols]
    new_row = np.r_[True, rows[1:] != rows[:-1]]
    rank_gap = np.r_[0, np.diff(ranks)] - 1
    starts_episode = new_row | (rank_gap > merge_gap)
    starts_run = new_row | (rank_gap > 0)
    episode = np.cumsum(starts_episode) - 1
    n_episodes = int(episode[-1]) + 1
    firsts = np.flatnonzero(starts_episode)
    lasts = np.r_[firsts[1:], len(rows)] - 1
    scores = score_SC[rows, cols]
    magnitude = np.abs(scores)
    # Peak: the point with the largest |score| of each episode (first one on ties).
    order = np.lexsort((-magnitude, episode))
    _, first_in_episode = np.unique(episode[order], return_index=True)
    peak = order[first_in_episode]
    return _Episodes(
        row=rows[firsts], first=cols[firsts], last=cols[lasts],
        points=np.bincount(episode, minlength=n_episodes),
        runs=np.bincount(episode, weights=starts_run, minlength=n_episodes).astype(np.int64),
        positive=np.bincount(episode, weights=scores > 0, minlength=n_episodes).astype(np.int64),
        peak_col=cols[peak], peak_score=scores[peak],
    )


def _segment_means(values_SC: np.ndarray, row: np.ndarray, lo: np.ndarray, hi: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of the valid samples in columns [lo, hi) of each row, via prefix sums."""
    valid_SC = ~np.isnan(values_SC)
    zero_col = np.zeros((values_SC.shape[0], 1))
    sum_SC = np.concatenate([zero_col, np.cumsum(np.where(valid_SC, values_SC, 0.0), axis=1)], axis=1)
    count_SC = np.concatenate([zero_col, np.cumsum(valid_SC, axis=1)], axis=1)
    total = sum_SC[row, hi] - sum_SC[row, lo]
    count = count_SC[row, hi] - count_SC[row, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


def _classify(ep: _Episodes, current_SC: np.ndarray, center_S: np.ndarray, scale_S: np.ndarray,
              config: MetricToolkitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pattern of each episode (as MetricPattern values) and its mean level."""
    level, n_valid = _segment_means(current_SC, ep.row, ep.first, ep.last + 1)
    before, scale = center_S[ep.row], scale_S[ep.row]
    up = 2 * ep.positive >= ep.points
    direction = np.where(up, 1.0, -1.0)
    minority = np.minimum(ep.positive, ep.points - ep.positive)
    mixed = minority >= np.maximum(1, 0.2 * ep.points)
    dropped_to_zero = ~up & (np.abs(before) > scale) & (np.abs(level) <= 0.01 * np.abs(before))
    peak_deviation = np.abs(current_SC[ep.row, ep.peak_col] - before)
    one_sample_dominates = np.abs(level - before) < 0.5 * peak_deviation
    # Several short runs (each spike-sized) close together: repeated spikes, not one sustained change.
    intermittent = (ep.runs >= 2) & (ep.points <= config.spike_max_points * ep.runs)
    transient = ((n_valid <= config.spike_max_points)
                 | ((n_valid <= config.transient_max_points) & one_sample_dominates) | intermittent)
    third = np.maximum(1, (ep.last - ep.first + 1) // 3)
    early, _ = _segment_means(current_SC, ep.row, ep.first, ep.first + third)
    late, _ = _segment_means(current_SC, ep.row, ep.last + 1 - third, ep.last + 1)
    rise = direction * (late - early)
    trending = ((n_valid >= config.trend_min_points) & (rise >= 0.4 * direction * (late - before))
                & (rise >= 2 * scale))
    pattern = np.select(
        [mixed, dropped_to_zero, transient & up, transient, trending & up, trending, up],
        [MetricPattern.FLUCTUATION.value, MetricPattern.DROP_TO_ZERO.value, MetricPattern.SPIKE.value,
         MetricPattern.DIP.value, MetricPattern.TREND_UP.value, MetricPattern.TREND_DOWN.value,
         MetricPattern.LEVEL_SHIFT_UP.value],
        default=MetricPattern.LEVEL_SHIFT_DOWN.value,
    )
    return pattern, level


# ---------------------------------------------------------------------------------------- analysis


def analyse_metrics(incident: Incident, *, config: MetricToolkitConfig | None = None) -> MetricReport:
    """Detect, classify and measure the metric anomalies of an incident; never raises on odd data."""
    config = config or MetricToolkitConfig()
    notes: list[str] = []
    metrics = incident.metrics
    if metrics is None:
        return MetricReport(anomalies=(), notes=("no metrics in the incident: metric analysis skipped",),
                            series=0, services=(), reference="none")
    meta = incident.meta
    services = tuple(sorted(metrics["service"].dropna().unique()))
    baseline = incident.baseline.metrics if incident.baseline is not None else None
    split, current_start, reference = _choose_reference(metrics, baseline, meta, notes)
    own = metrics[_ns(metrics["timestamp"]) < _ts_ns(meta.window.end)]
    if not (_ns(own["timestamp"]) >= _ts_ns(current_start)).any():
        notes.append("no metric samples inside the incident window: nothing to score")
        return MetricReport(anomalies=(), notes=tuple(notes), series=0, services=services,
                            reference=reference)
    grid = _build_grid(own, baseline, split=split, current_start=current_start, config=config, notes=notes)
    anomalies, scored = _detect(grid, config, notes)
    return MetricReport(anomalies=anomalies, notes=tuple(notes), series=scored, services=services,
                        reference=reference)


def _choose_reference(metrics: pd.DataFrame, baseline: pd.DataFrame | None, meta: IncidentMeta,
                      notes: list[str]) -> tuple[pd.Timestamp, pd.Timestamp, str]:
    """(split, start of the scored window, description): history is before `split`."""
    window = meta.window
    split = reference_split_time(meta)
    if baseline is not None:
        return split, window.start, "the baseline window"
    if meta.alert_time is None and not (metrics["timestamp"] < window.start).any():
        split = window.start + window.duration / 3
        notes.append(f"no baseline, no alert time and no history before the window: the first third of the "
                     f"window (until {format_utc_clock(split)}) is taken as normal")
    else:
        notes.append(f"no metric baseline: samples before {format_utc_clock(split)} are taken as normal")
    return split, split, f"samples before {format_utc_clock(split)}"


def _detect(grid: _Grid, config: MetricToolkitConfig, notes: list[str]
            ) -> tuple[tuple[MetricAnomaly, ...], int]:
    detector = make_detector(config.detector, **config.detector_params)
    reference_n_S = np.sum(~np.isnan(grid.history_SH), axis=1)
    eligible_S = reference_n_S >= config.min_reference_points
    if (~eligible_S).any():
        notes.append(f"{int((~eligible_S).sum())} of {len(eligible_S)} series have fewer than "
                     f"{config.min_reference_points} normal samples and were not scored")
    rows = np.flatnonzero(eligible_S)
    if rows.size == 0 or grid.current_SC.shape[1] == 0:
        return (), 0
    history_SH, current_SC = grid.history_SH[rows], grid.current_SC[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows score NaN, which is never anomalous
        min_scale_S = _peer_spreads(history_SH, [grid.keys.metric[r] for r in rows])
        score_SC = detector.score(history_SH, current_SC, min_scale_S)
    score_SC = np.clip(score_SC, -config.score_cap, config.score_cap)
    center_S, scale_S = robust_center_scale(history_SH, _SPREAD_FLOOR, min_scale_S)
    ep = _episodes(score_SC, ~np.isnan(current_SC), detector.threshold, config.merge_gap)
    records = _episode_records(ep, grid, rows, current_SC, center_S, scale_S, config)
    records += _missing_records(grid, rows, current_SC, center_S, scale_S, config)
    records.sort(key=lambda a: (-a.score, a.start, a.service, a.pod or "", a.metric))
    return tuple(records), int(rows.size)


def _peer_spreads(history_SH: np.ndarray, metric_S: list[str]) -> np.ndarray:
    """Lowest spread per series: none, except for a series constant in its history, which gets the
    median spread of the same metric's varying series. An error rate that was always 0 here is then
    judged by how much error rates move elsewhere, not against an exact zero."""
    _, spread_S = robust_spread(history_SH)
    varies_S = np.nan_to_num(spread_S) > 0
    metric_code_S, _ = pd.factorize(np.asarray(metric_S, dtype=object))
    peer = pd.Series(spread_S[varies_S]).groupby(metric_code_S[varies_S]).median()
    peer_S = peer.reindex(metric_code_S).to_numpy(dtype=np.float64)
    return np.where(varies_S, 0.0, np.nan_to_num(peer_S))  # type: ignore[no-any-return]


def _episode_records(ep: _Episodes, grid: _Grid, rows: np.ndarray, current_SC: np.ndarray,
                     center_S: np.ndarray, scale_S: np.ndarray, config: MetricToolkitConfig
                     ) -> list[MetricAnomaly]:
    if ep.row.size == 0:
        return []
    pattern, level = _classify(ep, current_SC, center_S, scale_S, config)
    ongoing = ep.last >= _last_valid(current_SC)[ep.row]
    peak_value = current_SC[ep.row, ep.peak_col]
    return [
        _record(grid, int(rows[r]), start=grid.times_C[first], end=grid.times_C[last] + grid.step,
                pattern=MetricPattern(p), detector=config.detector, ongoing=bool(on), points=int(n),
                runs=int(k), before=float(center_S[r]), spread=float(scale_S[r]), level=float(lv),
                peak_value=float(pv), peak_time=grid.times_C[pc], score=float(abs(ps)))
        for r, first, last, p, on, n, k, lv, pv, pc, ps in zip(
            ep.row, ep.first, ep.last, pattern, ongoing, ep.points, ep.runs, level, peak_value, ep.peak_col,
            ep.peak_score, strict=True)
    ]


def _missing_records(grid: _Grid, rows: np.ndarray, current_SC: np.ndarray, center_S: np.ndarray,
                     scale_S: np.ndarray, config: MetricToolkitConfig) -> list[MetricAnomaly]:
    """Series silent at the end of the window while others still report (the grid ends at the last
    sample of any series, so data that simply ends early everywhere is not 'missing')."""
    n_cols = current_SC.shape[1]
    last_valid_S = _last_valid(current_SC)
    silent_S = n_cols - 1 - last_valid_S
    needed_S = np.maximum(config.missing_min_points, np.ceil(3 * grid.cadence_S[rows]))
    end = grid.times_C[n_cols - 1] + grid.step
    return [
        _record(grid, int(rows[r]), start=grid.times_C[last_valid_S[r] + 1], end=end,
                pattern=MetricPattern.MISSING_DATA, detector="missing_data", ongoing=True,
                points=int(silent_S[r]), runs=1, before=float(center_S[r]), spread=float(scale_S[r]),
                level=None, peak_value=None, peak_time=None, score=config.missing_data_score)
        for r in np.flatnonzero(silent_S >= needed_S)
    ]


def _record(grid: _Grid, series: int, *, start: pd.Timestamp, end: pd.Timestamp, before: float,
            peak_value: float | None, **fields: Any) -> MetricAnomaly:
    service, pod, metric = grid.keys.service[series], grid.keys.pod[series], grid.keys.metric[series]
    return MetricAnomaly(
        service=service, pod=pod, node=grid.keys.node[series], metric=metric, rate=bool(grid.rate_S[series]),
        start=start, end=end, before=before, peak_value=peak_value,
        relative_change=None if peak_value is None else _relative_change(before, peak_value),
        evidence=MetricEvidence(metric=metric, service=service, pod=pod, start=start, end=end), **fields)


def _last_valid(values_SC: np.ndarray) -> np.ndarray:
    """Column of each row's last valid sample (-1 when it has none)."""
    cols = np.where(~np.isnan(values_SC), np.arange(values_SC.shape[1]), -1)
    return cols.max(axis=1)  # type: ignore[no-any-return]


def _relative_change(before: float, peak: float) -> float | None:
    # Relative to zero there is no meaningful ratio: the description says "from 0" instead.
    if abs(before) <= 1e-12 * max(1.0, abs(peak)):
        return None
    return (peak - before) / abs(before)


def _texts(column: pd.Series) -> list[str | None]:
    return [None if pd.isna(v) else str(v) for v in column.to_numpy(dtype=object)]
