"""The held-out data every evaluation task draws from, built once per process.

- chaos incidents of the evaluation seed range (`experts.sources.HELDOUT_SEED_BASE`, 600000 up; no
  training run ever simulates them), systems and fault types in turn, via `experts.sources.Sources`
  so the experts' own held-out split and the harness share one simulation per incident;
- LogHub lines of the held-out hash split (`experts.sources.hash_split`: one line in ten, the same
  split the logs expert trains without);
- the experts' held-out task data (`SPEC.task_data(sources, "heldout")`);
- the real labelled data sets, when present under the data root (`EvalConfig.data`, by default the
  shared data `experts.sources.find_shared_data` finds): the TVDiag cases (`flipmoe.importers.tvdiag`,
  read in memory) and the Nezha TrainTicket faults (`flipmoe.importers.nezha`, imported once per process
  into a temporary folder and read back). Neither is in any expert's training data. Without them the
  tasks that need them build no items and the harness reports them as skipped, with what they need.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data_pipeline.examples import TaskExample
from experts.sources import ChaosSample, Sources, digest, find_shared_data, hash_split
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry import Incident
from flipmoe.telemetry.label import Label


@dataclass(kw_only=True, frozen=True)
class EvalConfig:
    """How much held-out data the harness builds; the defaults run the full suite in minutes on 2 cores."""

    incidents: int = 20
    """Held-out chaos incidents (seeds 600000 ..): with 16 fault types in turn, 20 cover every type."""
    systems: tuple[str, ...] = ("webshop", "random")
    """Chaos systems, in turn."""
    window_minutes: float = 12.0
    """Incident window length (the experts' held-out split uses the same)."""
    max_items: int = 200
    """Items per task at most (real data sets give at least 100 to most tasks; chaos tasks fewer)."""
    data: str | None = None
    """Root of the real data sets (`loghub/`, `tvdiag/`, `nezha-trainticket/`); None: the shared data
    found as the experts find it (`$FLIPMOE_SHARED_DATA`, else `../shared/data`), if any."""
    loghub: str | None = None
    """Folder of LogHub structured CSVs; None: `<data>/loghub` when it exists."""
    tvdiag: str | None = None
    """Folder of a TVDiag release (`<system>/label.csv`, `<system>/raw/`); None: `<data>/tvdiag`."""
    nezha: str | None = None
    """Root of a Nezha data set (`rca_data/`, `construct_data/`); None: `<data>/nezha-trainticket`."""

    def __post_init__(self) -> None:
        if self.incidents < 1 or self.max_items < 1:
            raise FlipmoeInputError("EvalConfig needs incidents >= 1 and max_items >= 1")


@dataclass
class EvalData:
    """Lazily built held-out data of one configuration."""

    config: EvalConfig = field(default_factory=EvalConfig)
    _experts: dict[str, dict[str, list[TaskExample]]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def data_root(self) -> Path | None:
        return Path(self.config.data) if self.config.data else find_shared_data()

    @functools.cached_property
    def sources(self) -> Sources:
        return Sources(shared_data=self.data_root, heldout_incidents=self.config.incidents,
                       systems=self.config.systems, window_minutes=self.config.window_minutes,
                       heldout_examples=self.config.max_items,
                       loghub=Path(self.config.loghub) if self.config.loghub else None)

    def _dataset(self, override: str | None, name: str) -> Path | None:
        folder = Path(override) if override else (self.data_root / name if self.data_root else None)
        return folder if folder is not None and folder.is_dir() else None

    @functools.cached_property
    def tvdiag(self) -> list[tuple[str, Incident, Label]]:
        """(case id, events-only incident, label) of every TVDiag case, in a fixed hashed order; [] without TVDiag."""
        from flipmoe.importers.tvdiag import case_incident, read_cases, systems_of

        root = self._dataset(self.config.tvdiag, "tvdiag")
        if root is None:
            return []
        cases = []
        for system in systems_of(root):
            for case in read_cases(root, system):
                incident, label = case_incident(case)
                cases.append((incident.meta.id, incident, label))
        return sorted(cases, key=lambda c: digest(c[0]))

    @functools.cached_property
    def trainticket(self) -> list[ChaosSample]:
        """The labelled Nezha TrainTicket faults as samples (seed: the fault's epoch second), in injection
        order; [] without Nezha. Imported into a temporary folder, read back, and the folder removed."""
        from flipmoe.importers.nezha import import_nezha
        from flipmoe.telemetry import read_incident
        from flipmoe.telemetry.label import load_label

        root = self._dataset(self.config.nezha, "nezha-trainticket")
        if root is None:
            return []
        folder = Path(tempfile.mkdtemp(prefix="flipmoe-eval-nezha-"))
        try:
            samples = []
            for path in import_nezha(root, folder / "incidents"):
                label = load_label(path)
                if label is not None:
                    samples.append(ChaosSample(system="trainticket", fault=label.fault_type, seed=int(path.name),
                                               incident=read_incident(path), label=label))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return samples

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
