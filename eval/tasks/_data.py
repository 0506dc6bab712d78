"""The held-out data every evaluation task draws from, built once per process.

- chaos incidents of the evaluation seed range (`experts.sources.HELDOUT_SEED_BASE`, 600000 up; no
  training run ever simulates them), systems and fault types in turn, via `experts.sources.Sources`
  so the experts' own held-out split and the harness share one simulation per incident;
- LogHub lines of the held-out hash split (`experts.sources.hash_split`: one line in ten, the same
  split the logs expert trains without);
- the experts' held-out task data (`SPEC.task_data(sources, "heldout")`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data_pipeline.examples import TaskExample
from experts.sources import ChaosSample, Sources, digest, hash_split
from flipmoe.errors import FlipmoeInputError


@dataclass(kw_only=True, frozen=True)
class EvalConfig:
    """How much held-out data the harness builds; the defaults run the full suite in minutes on 2 cores."""

    incidents: int = 20
    """Held-out chaos incidents (seeds 600000 ..): with 16 fault types in turn, 20 cover every type."""
    systems: tuple[str, ...] = ("webshop", "random")
    """Chaos systems, in turn."""
    window_minutes: float = 12.0
    """Incident window length (the experts' held-out split uses the same)."""
    max_items: int = 40
    """Items per task at most."""
    loghub: str | None = None
    """Folder of LogHub structured CSVs; None: `<shared data>/loghub` when it exists."""

    def __post_init__(self) -> None:
        if self.incidents < 1 or self.max_items < 1:
            raise FlipmoeInputError("EvalConfig needs incidents >= 1 and max_items >= 1")


@dataclass
class EvalData:
    """Lazily built held-out data of one configuration."""

    config: EvalConfig = field(default_factory=EvalConfig)
    _experts: dict[str, dict[str, list[TaskExample]]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def sources(self) -> Sources:
        return Sources(heldout_incidents=self.config.incidents, systems=self.config.systems,
                       window_minutes=self.config.window_minutes, heldout_examples=self.config.max_items,
                       loghub=Path(self.config.loghub) if self.config.loghub else None)

    def chaos(self) -> list[ChaosSample]:
        """The held-out incidents (memoised by this `EvalData`'s `Sources`)."""
        return self.sources.chaos("heldout")

    @functools.cached_property
    def loghub(self) -> pd.DataFrame:
        """Held-out LogHub lines: system, content, template, level, label (label empty where the system has
        none), distinct contents, in a fixed hashed order."""
        frames = []
        for path in self.sources.loghub_files():
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            if not {"Content", "EventTemplate"} <= set(frame.columns):
                continue
            frames.append(pd.DataFrame({
                "system": path.name.split("_")[0], "content": frame["Content"], "template": frame["EventTemplate"],
                "level": frame["Level"] if "Level" in frame.columns else "",
                "label": frame["Label"] if "Label" in frame.columns else ""}))
        if not frames:
            return pd.DataFrame(columns=["system", "content", "template", "level", "label"])
        table = pd.concat(frames, ignore_index=True).drop_duplicates(["system", "content"])
        table = table[[hash_split(s, c) == "heldout" for s, c in zip(table["system"], table["content"], strict=True)]]
        return table.assign(order=[digest(c) for c in table["content"]]).sort_values("order").drop(columns="order")

    def expert_heldout(self, family: str) -> dict[str, list[TaskExample]]:
        """The family's held-out task data (built once)."""
        if family not in self._experts:
            from experts.registry import get_spec

            self._experts[family] = get_spec(family).task_data(self.sources, "heldout")
        return self._experts[family]


def take(items: Sequence[Any], n: int) -> list[Any]:
    """The first `n` items (items come sorted by a content hash, so this is a fixed pseudo-random pick)."""
    return list(items)[:n]
