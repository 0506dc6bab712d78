"""The metrics expert's value tokenizer: a series becomes bin tokens, so the model reads values, not digits.

As in Chronos (Ansari et al. 2024), each value is scaled by statistics of the series' own recent past
and quantised into a fixed set of bins; the model predicts a distribution over the next value's bin.
Two choices differ from Chronos, because the model here is asked how *surprising* a value is:

- **Robust scaling.** A window is centred on the median of its history and divided by its spread
  (1.4826 x MAD, a standard deviation for Gaussian data; the standard deviation when the MAD is 0;
  a small fraction of the level when the history is flat). The anomaly being scored cannot move the
  statistics it is judged by, since they come from values before it.
- **asinh bins.** `asinh(z)` is near-linear for ordinary deviations and logarithmic for large ones,
  so uniform bins over it resolve a 0.1-sigma wiggle and still tell a 50-sigma jump from a 5000-sigma one.

A sequence is `BOS, <category>, v1, v2, ...`: the category token (`cpu`, `latency`, `errors`, ...;
`flipmoe.toolkits.vocabulary.metric_category` of the metric's name) tells the model what kind of
quantity it reads, since a latency and a request count behave differently. Missing samples (NaN)
have their own token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flipmoe.toolkits.vocabulary import metric_category

PAD_ID, BOS_ID, NAN_ID = 0, 1, 2
CATEGORIES = ("other", "restarts", "errors", "latency", "cpu", "memory", "disk", "network", "saturation", "traffic")
"""Context tokens, one per metric category (`metric_category` returns these names, or "other")."""


@dataclass(frozen=True, kw_only=True)
class ValueTokenizerConfig:
    """How values become tokens; saved with the model, since the model is only valid for its own bins."""

    bins: int = 200
    """Uniform bins over asinh(z) in [-limit, limit]."""
    z_limit: float = 1.0e4
    """Largest |z| with its own bin; beyond it values fall in the outermost bins."""
    history: int = 64
    """Values before a chunk that its scaling statistics come from."""
    min_history: int = 16
    """Values a series needs before any of its values is scored."""
    flat_fraction: float = 0.01
    """Spread of a flat history, as a fraction of its level (a flat series still has a scale)."""
    flat_floor: float = 1e-6
    """Spread of a flat history at level 0."""


class ValueTokenizer:
    """Scales, quantises and de-quantises values; ids: PAD, BOS, NAN, categories, then bins."""

    def __init__(self, config: ValueTokenizerConfig | None = None) -> None:
        self.config = config or ValueTokenizerConfig()
        self.first_category = NAN_ID + 1
        self.first_bin = self.first_category + len(CATEGORIES)
        self.vocab_size = self.first_bin + self.config.bins
        self._edge = math.asinh(self.config.z_limit)

    def category_id(self, metric: str) -> int:
        category = metric_category(metric) if metric else "other"
        return self.first_category + (CATEGORIES.index(category) if category in CATEGORIES else 0)

    def scale(self, history: np.ndarray) -> tuple[float, float]:
        """(centre, spread) of a window's history: median and robust spread, never 0."""
        finite = history[np.isfinite(history)]
        if finite.size == 0:
            return 0.0, 1.0
        centre = float(np.median(finite))
        spread = 1.4826 * float(np.median(np.abs(finite - centre)))
        if spread <= 0:
            spread = float(np.std(finite))
        if spread <= 0:
            spread = max(abs(centre) * self.config.flat_fraction, self.config.flat_floor)
        return centre, spread

    def encode(self, values: np.ndarray, centre: float, spread: float) -> np.ndarray:
        """Token ids of `values` under one scaling (NaN -> NAN_ID)."""
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            u = np.arcsinh((values - centre) / spread)
        finite = np.isfinite(u)
        position = (np.clip(np.where(finite, u, 0.0), -self._edge, self._edge) + self._edge) / (2 * self._edge)
        bins = np.minimum((position * self.config.bins).astype(np.int64), self.config.bins - 1)
        return np.where(finite, self.first_bin + bins, NAN_ID)

    def decode(self, ids: np.ndarray, centre: float, spread: float) -> np.ndarray:
        """The value at the centre of each id's bin (NaN for non-bin ids)."""
        ids = np.asarray(ids)
        bins = ids - self.first_bin
        u = (bins + 0.5) / self.config.bins * 2 * self._edge - self._edge
        values = centre + spread * np.sinh(u)
        return np.where((bins >= 0) & (bins < self.config.bins), values, np.nan)

    def sequence(self, metric: str, values: np.ndarray, centre: float, spread: float) -> np.ndarray:
        """`BOS, <category>, tokens of values...` as the model reads a window."""
        head = np.array([BOS_ID, self.category_id(metric)], dtype=np.int64)
        return np.concatenate([head, self.encode(values, centre, spread)])
