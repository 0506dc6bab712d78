"""Bootstrap intervals for task scores and for paired differences between models: pure functions.

Every model of a run is scored on the *same* resamples of a task's items (one seeded index matrix per
task), so the interval of a difference between two models is paired: each resample scores both models
on the same items, and the item-to-item variance they share cancels.

Why a hand-written percentile bootstrap rather than `scipy.stats.bootstrap`: the statistics here are
whole-set metrics (macro-F1, grouping accuracy) as often as means, one index matrix has to be shared
by every model and by the differences between them, and BCa intervals (scipy's default) turn into
NaN with warnings on the degenerate samples evaluation produces (a model right on every item). With
numpy the shared resampling is two lines, and per-item scores are vectorised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
"""Bootstrap resamples per task."""
LEVEL = 0.95
"""Coverage of every interval."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> list[float]:
        return [round(self.low, 4), round(self.high, 4)]

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def resample_indices(n: int, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement, the same for a given (n, seed)."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one item")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resample_clusters(clusters: Sequence[str], *, resamples: int = RESAMPLES, seed: int = 0) -> list[np.ndarray]:
    """Cluster bootstrap: per resample, whole clusters drawn with replacement, as the item indices of all
    their members (a cluster drawn twice is in twice). For whole-set statistics that depend on groups of
    items (grouping accuracy), where resampling single items would break the groups apart."""
    if not clusters:
        raise ValueError("a bootstrap needs at least one item")
    members: dict[str, list[int]] = {}
    for index, cluster in enumerate(clusters):
        members.setdefault(cluster, []).append(index)
    groups = [np.array(rows) for _, rows in sorted(members.items())]
    draws = np.random.default_rng(seed).integers(0, len(groups), size=(resamples, len(groups)))
    return [np.concatenate([groups[g] for g in row]) for row in draws]


def bootstrap_means(values_N: Sequence[float] | np.ndarray, indices_BN: np.ndarray) -> np.ndarray:
    """(B,) means of per-item scores over each resample."""
    return np.asarray(values_N, dtype=float)[indices_BN].mean(axis=1)


def bootstrap_statistic(statistic: Callable[[Sequence[int]], float],
                        indices_BN: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(B,) values of a whole-set statistic (it receives the resample's item indices)."""
    return np.array([statistic(row.tolist()) for row in indices_BN], dtype=float)


def interval(value: float, samples_B: np.ndarray, *, level: float = LEVEL) -> Interval:
    """The percentile interval of `samples_B` around the point estimate `value`."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples_B, [tail, 100 - tail])
    return Interval(value=float(value), low=float(low), high=float(high))
