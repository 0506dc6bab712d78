"""The labelled corpora the benchmarks share: chaos incidents from given seeds, and the real data sets of
../shared/data when present, generated or imported once into a folder and reused when complete."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_NEZHA = SHARED / "nezha-trainticket"
SHARED_TVDIAG = SHARED / "tvdiag"


def chaos_corpus(root: Path, system: str, count: int, *, seed: int, workers: int = 1, faults: list[str] | None = None,
                 config: Any = None) -> Path:
    """`count` incidents of `system` from `seed` on (fault types round-robin over `faults`, all by default),
    in `root/system`, regenerated unless complete."""
    from data_pipeline.chaos import generate_corpus

    out = root / system
    if out.is_dir() and len(list(out.glob("*/incident.json"))) == count:
        print(f"reusing the {system} corpus in {out} (seed {seed})", file=sys.stderr)
        return out
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    generate_corpus(system, count, seed=seed, out=out, workers=workers, faults=faults, config=config)
    print(f"generated {count} {system} incidents (seed {seed}) in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return out


def nezha_corpus(root: Path) -> Path | None:
    """The 28 faults of the shared TrainTicket day in `root/nezha`, or None without ../shared/data."""
    if not SHARED_NEZHA.is_dir():
        return None
    from flipmoe.importers.nezha import import_nezha

    out = root / "nezha"
    if not any(out.glob("*/incident.json")):
        import_nezha(SHARED_NEZHA, out, overwrite=True)
    return out


def tvdiag_corpus(root: Path) -> dict[str, Path] | None:
    """The 530 TVDiag train cases imported one folder per system (`flipmoe import tvdiag --per-system`:
    `root/tvdiag-systems/<system>/`, each folder its system's alert history), or None without
    ../shared/data; reused when present."""
    if not SHARED_TVDIAG.is_dir():
        return None
    from flipmoe.importers.tvdiag import import_tvdiag

    out = root / "tvdiag-systems"
    if not any(out.glob("*/*/incident.json")):
        import_tvdiag(SHARED_TVDIAG, out, split="train", overwrite=True, per_system=True)
    return {folder.name: folder for folder in sorted(out.iterdir()) if folder.is_dir()}


def history_sample(folder: Path, k: int, root: Path, *, seed: int = 0) -> tuple[Path, list[Path]]:
    """`k` cases of `folder` drawn with `seed`, copied into `root` as a history, and the other cases to test on
    (none of them in that history); reused when complete."""
    import random

    from flipmoe.telemetry import find_incidents

    cases = find_incidents(folder)
    chosen = sorted(random.Random(seed).sample(cases, min(k, len(cases) - 1)))
    if len(list(root.glob("*/incident.json"))) != len(chosen):
        shutil.rmtree(root, ignore_errors=True)
        for directory in chosen:
            shutil.copytree(directory, root / directory.name)
    picked = {d.name for d in chosen}
    return root, [d for d in cases if d.name not in picked]
