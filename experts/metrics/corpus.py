"""Pretraining text of the metrics expert: every series of the training incidents, rendered.

A series is one (pod or node, metric) over the baseline and incident windows of a chaos incident,
written by `render_series` (`metric=... service=... values: 0.31 0.30 ...`); at most
`SERIES_PER_INCIDENT` per incident, taken in a fixed hashed order so all metric kinds appear.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experts.sources import Sources, digest

SERIES_PER_INCIDENT = 150
POINTS = 48
"""Points per rendered series: the last `POINTS` samples (12 minutes at a 15-second step)."""


def render_series(metric: str, service: str, values: list[float] | tuple[float, ...]) -> str:
    """`metric=NAME service=NAME values: v1 v2 ...`, three significant digits per value."""
    return f"metric={metric} service={service} values: " + " ".join(_number(v) for v in values)


def _number(value: float) -> str:
    if value != value:  # NaN: a missing sample
        return "nan"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.3e}"


def incident_series(metrics: pd.DataFrame) -> list[tuple[str, str, list[float]]]:
    """(metric, service, values) of every (pod or node, metric) in a long-format metrics table."""
    source = metrics["pod"].astype(object).where(metrics["pod"].notna(), metrics["node"]).astype(str)
    frame = pd.DataFrame({"metric": metrics["metric"].astype(str), "service": metrics["service"].astype(str),
                          "source": source, "timestamp": metrics["timestamp"],
                          "value": metrics["value"].astype(float)}).sort_values(
        ["metric", "service", "source", "timestamp"], kind="stable")
    keys = frame[["metric", "service", "source"]].to_numpy()
    values = frame["value"].to_numpy()
    # Rows of one series are contiguous after the sort: cut where the key changes.
    change = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
    bounds = [0, *change.tolist(), len(frame)]
    return [(str(keys[a][0]), str(keys[a][1]), values[a:b].tolist()) for a, b in zip(bounds, bounds[1:], strict=False)
            if b > a]


def corpus(sources: Sources) -> list[str]:
    documents = []
    for sample in sources.chaos("train"):
        series = incident_series(sample.table("metrics"))
        series.sort(key=lambda s: digest(str(sample.seed), s[0], s[1], str(s[2][:2])))
        documents += [render_series(metric, service, values[-POINTS:])
                      for metric, service, values in series[:SERIES_PER_INCIDENT]]
    return documents


def value_series(sources: Sources, split: str = "train") -> list[tuple[str, np.ndarray]]:
    """(metric, values) of every series of the fault-free baselines of the split's chaos incidents, for the
    value model of `experts.metrics.detector`: it learns what normal series look like, so a fault's change
    is what it did not expect (series from incident windows would teach it that faults are normal)."""
    series = []
    for sample in sources.chaos(split):
        series += [(metric, np.asarray(values, dtype=np.float64))
                   for metric, _, values in incident_series(sample.table("metrics", baseline=True))]
    return series
