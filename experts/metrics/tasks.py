"""Task data of the metrics expert, and the rule baselines of its tasks.

Both tasks read a series whose shape is known by construction: a calm series from the fault-free
baseline of a chaos incident (real metric names, levels and noise), onto which one pattern is drawn
— none (steady), a spike, an upward or downward level shift, an upward or downward trend — at a
random place and size. The label is the pattern drawn, not what a detector thinks it sees. Split by
chaos seed: held-out series come from held-out incidents, with their own draws.

- `metric_pattern`: series -> pattern label. Baseline: a robust rule (median/MAD levels, the best
  single change point against the best straight line, isolated extreme points).
- `metric_describe`: series -> one sentence (pattern, where, from what level to what level).
  Baseline: the rule's pattern, with levels measured on the series, in the same sentence template.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np

from data_pipeline.examples import TaskExample
from experts.metrics.corpus import POINTS, incident_series, render_series
from experts.sources import Sources, balanced, check_split, digest, without_heldout

TASK_NAMES = ("metric_pattern", "metric_describe")
PATTERNS = ("steady", "spike", "level_shift_up", "level_shift_down", "trend_up", "trend_down")
CALM_SPREAD = 0.12
"""A background series qualifies when its robust spread (MAD / median) is below this."""
_SERIES = re.compile(r"metric=(?P<metric>\S+) service=(?P<service>\S+) values: (?P<values>.*)")


def task_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    """{task: examples} of `split`; no training input is also a held-out input."""
    check_split(split)
    data = _split_data(sources, split)
    return data if split == "heldout" else without_heldout(data, _split_data(sources, "heldout"))


def _split_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    n = sources.examples(split)
    shaped = []
    for sample in sources.chaos(split):
        rng = random.Random(digest("metrics", str(sample.seed)))
        for metric, service, values in incident_series(sample.table("metrics", baseline=True)):
            background = np.asarray(values[-POINTS:], dtype=float)
            if background.size < 16 or not _calm(background):
                continue
            pattern = PATTERNS[rng.randrange(len(PATTERNS))]
            series, sentence = _draw(pattern, background, rng, metric=metric, service=service)
            text = render_series(metric, service, [float(v) for v in series])
            meta = {"source": f"chaos:{sample.seed}", "split": split, "pattern": pattern}
            shaped.append((TaskExample(task="metric_pattern", input=text, target=pattern, meta=meta),
                           TaskExample(task="metric_describe", input=text, target=sentence, meta=meta)))
    shaped.sort(key=lambda pair: digest(pair[0].input))
    kept = balanced(shaped, lambda pair: pair[0].target, n)
    return {"metric_pattern": [p for p, _ in kept], "metric_describe": [d for _, d in kept]}


def _calm(values: np.ndarray) -> bool:
    median = float(np.median(values))
    return median > 0 and float(np.median(np.abs(values - median))) / median < CALM_SPREAD


def _draw(pattern: str, background: np.ndarray, rng: random.Random, *, metric: str,
          service: str) -> tuple[np.ndarray, str]:
    """The background with `pattern` drawn on it, and the sentence that describes the result."""
    n = background.size
    level = float(np.median(background))
    series = background.copy()
    at = rng.randint(n // 4, 3 * n // 4)
    if pattern == "spike":
        series[at] = level * rng.uniform(3, 8)
        return series, _sentence(pattern, metric, service, start=level, end=float(series[at]), at=at)
    if pattern in ("level_shift_up", "level_shift_down"):
        factor = rng.uniform(1.8, 4) if pattern == "level_shift_up" else rng.uniform(0.15, 0.5)
        series[at:] *= factor
        return series, _sentence(pattern, metric, service, start=level, end=level * factor, at=at)
    if pattern in ("trend_up", "trend_down"):
        factor = rng.uniform(2, 4) if pattern == "trend_up" else rng.uniform(0.2, 0.5)
        series *= np.linspace(1, factor, n)
        return series, _sentence(pattern, metric, service, start=level, end=level * factor, at=0)
    return series, _sentence(pattern, metric, service, start=level, end=level, at=0)


def _sentence(pattern: str, metric: str, service: str, *, start: float, end: float, at: int) -> str:
    a, b = f"{start:.3g}", f"{end:.3g}"
    return {"steady": f"{metric} of {service} is steady around {a}.",
            "spike": f"{metric} of {service} spikes to {b} at point {at} and returns to about {a}.",
            "level_shift_up": f"{metric} of {service} shifts up from about {a} to about {b} at point {at}.",
            "level_shift_down": f"{metric} of {service} drops from about {a} to about {b} at point {at}.",
            "trend_up": f"{metric} of {service} climbs steadily from about {a} to about {b}.",
            "trend_down": f"{metric} of {service} declines steadily from about {a} to about {b}."}[pattern]


# --- the rule ---------------------------------------------------------------------------------------

def parse_series(text: str) -> tuple[str, str, np.ndarray]:
    """`render_series` text -> (metric, service, values); unreadable text gives an empty series."""
    match = _SERIES.match(text.strip())
    if match is None:
        return "", "", np.zeros(0)
    values = [float(v) for v in match["values"].split() if _is_number(v)]
    return match["metric"], match["service"], np.asarray(values, dtype=float)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_pattern(values: np.ndarray) -> tuple[str, float, float, int]:
    """(pattern, level before, level after or peak, change point) by robust rules:

    an isolated point far (> 8 robust sigmas) from its neighbours' median is a spike; otherwise the
    best single change point is compared with the best straight line, and the one that fits better
    decides between level shift and trend, when it moves the level by more than 4 sigmas.
    """
    values = values[np.isfinite(values)]
    n = values.size
    if n < 8:
        return "steady", float(np.median(values)) if n else 0.0, float(np.median(values)) if n else 0.0, 0
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(np.diff(values)))) / np.sqrt(2) + 1e-9 + 0.01 * abs(median)
    deviation = np.abs(values - median) / sigma
    peak = int(np.argmax(deviation))
    if deviation[peak] > 8 and np.sum(deviation > 4) <= 2:
        return "spike", median, float(values[peak]), peak
    costs = _step_costs(values)
    at = int(np.argmin(costs[3:n - 3])) + 3
    cost = float(costs[at])
    t = np.arange(n)
    slope, intercept = np.polyfit(t, values, 1)
    line_cost = float(np.sum((values - (slope * t + intercept)) ** 2))
    before, after = float(np.median(values[:at])), float(np.median(values[at:]))
    if cost < line_cost and abs(after - before) > 4 * sigma:
        return ("level_shift_up" if after > before else "level_shift_down"), before, after, at
    start, end = float(intercept), float(slope * (n - 1) + intercept)
    if line_cost <= cost * 1.5 and abs(end - start) > 4 * sigma:
        return ("trend_up" if end > start else "trend_down"), start, end, 0
    return "steady", median, median, 0


def _step_costs(values: np.ndarray) -> np.ndarray:
    """(n,) squared error of a two-level fit with the change at each index (prefix sums, O(n))."""
    n = values.size
    k = np.arange(n, dtype=float)
    total, total_sq = np.cumsum(values), np.cumsum(values ** 2)
    left_sum = np.concatenate([[0.0], total[:-1]])
    left_sq = np.concatenate([[0.0], total_sq[:-1]])
    right_sum, right_sq = total[-1] - left_sum, total_sq[-1] - left_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        left = left_sq - np.where(k > 0, left_sum ** 2 / np.maximum(k, 1), 0.0)
        right = right_sq - right_sum ** 2 / (n - k)
    return left + right


def pattern_baseline(inputs: Sequence[str]) -> list[str]:
    return [detect_pattern(parse_series(text)[2])[0] for text in inputs]


def describe_baseline(inputs: Sequence[str]) -> list[str]:
    answers = []
    for text in inputs:
        metric, service, values = parse_series(text)
        pattern, start, end, at = detect_pattern(values)
        answers.append(_sentence(pattern, metric, service, start=start, end=end, at=at))
    return answers
