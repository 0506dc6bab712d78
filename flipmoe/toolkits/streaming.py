"""Classic streaming anomaly scores for one series: the baselines every learned detector is compared with.

Both score sample t from samples before it only, as an alerting system must, and give the first
`min_history` samples (too little history to judge) and missing samples a score of 0. Scores are in
[0, 1] and grow with the deviation.

- `rolling_zscore`: |x_t - mean| / std over the previous `window` samples, mapped by z / (1 + z).
- `windowed_gaussian`: the Numenta Anomaly Benchmark's windowed Gaussian (Lavin & Ahmad 2015): the
  two-sided tail probability of x_t under a normal distribution fitted to the previous `window`
  samples, reported as 1 - tail.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scipy.special import erf

MIN_HISTORY = 16
"""Samples a series needs before its first score (the same warm-up as the learned detector)."""


def _trailing(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation and count of the finite samples among the `window` before each sample."""
    # pandas' rolling windows: vectorised, NaN-aware, and shifted by one so sample t never sees itself.
    past = pd.Series(values).shift(1).rolling(window, min_periods=1)
    return (past.mean().to_numpy(), past.std(ddof=0).to_numpy(), past.count().to_numpy())


def _deviation(values: np.ndarray, window: int, min_history: int) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    mean, std, count = _trailing(x, window)
    # A flat history still has a scale: a small fraction of its level, so any change out of it stands out.
    floor = np.maximum(np.abs(np.nan_to_num(mean)) * 1e-3, 1e-9)
    with np.errstate(invalid="ignore"):
        z = np.abs(x - mean) / np.maximum(np.nan_to_num(std), floor)
    valid = np.isfinite(z) & (count >= min_history) & (np.arange(len(x)) >= min_history)
    return np.where(valid, z, 0.0)


def rolling_zscore(values: np.ndarray | list[float], window: int = 30, min_history: int = MIN_HISTORY) -> np.ndarray:
    """z / (1 + z) of each sample against the previous `window` samples."""
    z = _deviation(np.asarray(values, dtype=np.float64), window, min_history)
    return z / (1.0 + z)


def windowed_gaussian(values: np.ndarray | list[float], window: int = 128,
                      min_history: int = MIN_HISTORY) -> np.ndarray:
    """1 - two-sided Gaussian tail probability of each sample under the previous `window` samples."""
    z = _deviation(np.asarray(values, dtype=np.float64), window, min_history)
    return np.asarray(erf(z / np.sqrt(2.0)), dtype=np.float64)



class TemplateNovelty:
    """1 / (times the message's template has been seen so far, this one included): a never-seen template
    scores 1, the n-th line of a template 1/n. Templates are mined as the lines stream in; state is kept
    across calls, so a file can be scored batch by batch."""

    def __init__(self) -> None:
        from flipmoe.toolkits.logs import LogParser

        self.parser = LogParser()
        self.seen: Counter[int] = Counter()

    def score(self, messages: list[str]) -> np.ndarray:
        scores = np.zeros(len(messages), dtype=np.float64)
        for index, message in enumerate(messages):
            template = self.parser.add(message).template_id
            self.seen[template] += 1
            scores[index] = 1.0 / self.seen[template]
        return scores
