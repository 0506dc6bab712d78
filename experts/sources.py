"""Where the experts' data comes from: the chaos gym, and the real data sets in `../shared/data`.

The chaos gym gives incidents with ground truth: the training split uses seeds `seed, seed + 1, ...`
and the held-out split seeds from `HELDOUT_SEED_BASE` (600000) up, a range the project keeps for
evaluation, so no held-out incident is ever simulated for training (and a `random` system is drawn
from the seed, so held-out random incidents also run on topologies training never saw). A `Sources`
memoises what it reads, so the families built from one instance (and the corpus and task data of one
family) share one simulation per incident; nothing is kept between instances.

The real data is optional: LogHub's 2k samples (`loghub/<System>/<System>_2k.log_structured.csv`,
whose `EventTemplate` column is the ground truth of log parsing) and Nezha's TrainTicket logs. It is
found through `FLIPMOE_SHARED_DATA`, else `../shared/data` next to the repository or the working
directory; without it the families train on chaos data alone. `loghub` can point elsewhere (tests
use `tests/fixtures/loghub`, files with the columns `Content` and `EventTemplate`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from data_pipeline.examples import TaskExample
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident
from flipmoe.telemetry.label import Label

T = TypeVar("T")
HELDOUT_SEED_BASE = 600_000
"""Chaos seeds from here up are evaluation data; training seeds stay below."""
SHARED_DATA_ENV = "FLIPMOE_SHARED_DATA"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def find_shared_data() -> Path | None:
    """`$FLIPMOE_SHARED_DATA`, else the first `../shared/data` (from the repository, then the working
    directory) that exists, else None."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured)
    for base in (_REPO_ROOT, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True, kw_only=True)
class ChaosSample:
    """One simulated incident, its ground truth, and how it was made."""

    system: str
    fault: str
    seed: int
    incident: Incident
    label: Label

    def table(self, name: str, *, baseline: bool = False) -> pd.DataFrame:
        """The `metrics`, `logs`, `spans` or `events` table of the incident window or of its baseline."""
        telemetry = self.incident.baseline if baseline else self.incident.telemetry
        frame = getattr(telemetry, name) if telemetry is not None else None
        if frame is None:  # the chaos gym writes every table for both windows
            raise ValueError(f"chaos incident {self.incident.meta.id} has no {name} table")
        return frame


@dataclass(kw_only=True)
class Sources:
    """The data every family draws from; nano defaults generate in well under a minute on 2 cores.

    The instance memoises its simulated incidents (shared with every caller: treat them as read-only)
    and its LogHub tables; a new instance reads and simulates afresh.
    """

    shared_data: Path | None = field(default_factory=find_shared_data)
    """Root of the real data sets (`loghub/`, `nezha-trainticket/`); None trains on chaos data only."""
    loghub: Path | None = None
    """Folder searched (recursively) for LogHub structured CSVs; None: `shared_data/loghub`."""
    train_incidents: int = 16
    """Chaos incidents of the training split."""
    heldout_incidents: int = 4
    """Chaos incidents of the held-out split."""
    seed: int = 0
    """First training seed; training seeds are `seed .. seed + train_incidents - 1`."""
    systems: tuple[str, ...] = ("webshop", "random")
    """Chaos systems, taken in turn (ticketing's 46 services simulate several times slower)."""
    window_minutes: float = 12.0
    """Length of each incident window (and of its fault-free baseline)."""
    loghub_lines: int = 2000
    """Lines read per LogHub system (the samples have 2000)."""
    nezha_files: int = 2
    """Nezha one-minute log files read into the logs corpus (0: none)."""
    train_examples: int = 400
    """Training examples per task, at most."""
    heldout_examples: int = 80
    """Held-out examples per task, at most."""

    def __post_init__(self) -> None:
        if self.train_incidents < 1 or self.heldout_incidents < 1:
            raise FlipmoeInputError("train_incidents and heldout_incidents must be at least 1")
        if self.seed < 0 or self.seed + self.train_incidents > HELDOUT_SEED_BASE:
            raise FlipmoeInputError(f"training seeds must stay below {HELDOUT_SEED_BASE}",
                                    hint="seeds from there up are the held-out split")
        if not self.systems:
            raise FlipmoeInputError("Sources.systems must name at least one chaos system")
        # Plain attributes, not fields: the memo is neither a setting nor part of equality or cards.
        self._incidents: dict[tuple[str, str, int, float], ChaosSample] = {}
        self._loghub_tables: dict[tuple[Path, int], pd.DataFrame] = {}

    def describe(self) -> dict[str, Any]:
        """Every setting as plain data for a training card, with no machine paths: `shared_data` becomes the
        names of the data sets found there (`FLIPMOE_SHARED_DATA` finds them again), `loghub` its folder's name."""
        described: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "shared_data":
                root = Path(value) if value else None
                value = sorted(p.name for p in root.iterdir() if p.is_dir()) if root and root.is_dir() else []
            elif f.name == "loghub":
                value = Path(value).name if value else None
            described[f.name] = list(value) if isinstance(value, tuple) else value
        return described

    def seeds(self, split: str) -> list[int]:
        """Chaos seeds of a split; the two ranges never meet."""
        check_split(split)
        if split == "train":
            return list(range(self.seed, self.seed + self.train_incidents))
        return list(range(HELDOUT_SEED_BASE + self.seed, HELDOUT_SEED_BASE + self.seed + self.heldout_incidents))

    def chaos(self, split: str) -> list[ChaosSample]:
        """The split's incidents: systems in turn, fault types in turn from the `seed`-th (the held-out
        split starts half-way round), so both splits cover every type once they have 16 incidents."""
        from flipmoe.telemetry.taxonomy import FAULT_TYPES

        faults = list(FAULT_TYPES)
        first = self.seed + (0 if split == "train" else len(faults) // 2)
        keys = [(self.systems[i % len(self.systems)], faults[(first + i) % len(faults)], seed, self.window_minutes)
                for i, seed in enumerate(self.seeds(split))]
        for key in keys:
            if key not in self._incidents:
                self._incidents[key] = _simulate(*key)
        return [self._incidents[key] for key in keys]

    def examples(self, split: str) -> int:
        """How many examples a task keeps in `split`."""
        check_split(split)
        return self.train_examples if split == "train" else self.heldout_examples

    def loghub_files(self) -> list[Path]:
        """Structured LogHub CSVs (with `Content` and `EventTemplate`), sorted; [] when there is no LogHub."""
        root = self.loghub or (self.shared_data / "loghub" if self.shared_data else None)
        if root is None or not root.is_dir():
            return []
        return sorted(p for p in root.rglob("*.csv") if not p.name.endswith("_templates.csv"))

    def loghub_table(self) -> pd.DataFrame:
        """Columns system, content, template, level (level empty where the system has none)."""
        frames = []
        for path in self.loghub_files():
            key = (path, self.loghub_lines)
            if key not in self._loghub_tables:
                self._loghub_tables[key] = _read_loghub(path, self.loghub_lines)
            frames.append(self._loghub_tables[key])
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=["system", "content", "template", "level"])
        return pd.concat(frames, ignore_index=True)

    def nezha_log_lines(self) -> list[str]:
        """Messages of the first `nezha_files` Nezha log files (header stripped), or [] without Nezha."""
        if self.shared_data is None or self.nezha_files == 0:
            return []
        folder = self.shared_data / "nezha-trainticket" / "rca_data"
        files = sorted(folder.glob("*/log/*_log.csv*"))[: self.nezha_files]
        return [line for path in files for line in _nezha_messages(path)]


def digest(*key: str) -> str:
    """A stable hash of `key` (unlike `hash()`, the same in every process): sorts data in a fixed,
    content-independent order and assigns splits."""
    return hashlib.sha1("\0".join(key).encode("utf-8")).hexdigest()


def hash_split(*key: str) -> str:
    """"heldout" for one key in ten, else "train"."""
    return "heldout" if int(digest(*key)[:2], 16) % 10 == 0 else "train"


def balanced(items: Sequence[T], group: Callable[[T], str], n: int) -> list[T]:
    """At most `n` items taken round-robin over their groups (labels, systems), in the given order,
    so rare groups (ERROR lines, spikes) are not crowded out by common ones."""
    queues: dict[str, list[T]] = {}
    for item in items:
        queues.setdefault(group(item), []).append(item)
    picked: list[T] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues.values()):
        picked += [q[depth] for q in queues.values() if depth < len(q)][: n - len(picked)]
        depth += 1
    return picked


def without_heldout(train: dict[str, list[TaskExample]],
                    heldout: dict[str, list[TaskExample]]) -> dict[str, list[TaskExample]]:
    """`train` minus every example whose input is also a held-out input of the same task.

    Splits by chaos seed or by system can still meet on a line both happen to contain (a health
    check, a handler two random systems share); the held-out side keeps it.
    """
    seen = {task: {e.input for e in examples} for task, examples in heldout.items()}
    return {task: [e for e in examples if e.input not in seen.get(task, set())] for task, examples in train.items()}


def check_split(split: str) -> None:
    if split not in ("train", "heldout"):
        raise FlipmoeInputError(f"unknown split {split!r}", hint="choose 'train' or 'heldout'")


def _simulate(system: str, fault: str, seed: int, window_minutes: float) -> ChaosSample:
    from data_pipeline.chaos import ChaosConfig, generate_incident

    # No code tree on disk: the code family builds its trees in memory (`data_pipeline.chaos.code`).
    incident, label = generate_incident(system, fault, seed=seed, window_minutes=window_minutes,
                                        config=ChaosConfig(include_code=False))
    return ChaosSample(system=system, fault=fault, seed=seed, incident=incident, label=label)


def _read_loghub(path: Path, lines: int) -> pd.DataFrame:
    frame = pd.read_csv(path, nrows=lines, dtype=str, keep_default_na=False)
    if not {"Content", "EventTemplate"} <= set(frame.columns):
        return pd.DataFrame()
    system = path.name.split("_")[0]
    level = frame["Level"] if "Level" in frame.columns else pd.Series([""] * len(frame))
    return pd.DataFrame({"system": system, "content": frame["Content"], "template": frame["EventTemplate"],
                         "level": level.to_numpy()})


def _nezha_messages(path: Path) -> list[str]:
    from flipmoe.importers.nezha import parse_log_line

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        frame = pd.read_csv(handle, usecols=["Log"], dtype=str, keep_default_na=False)
    parsed = (parse_log_line(record) for record in frame["Log"])
    return [message for _, message in filter(None, parsed)]
