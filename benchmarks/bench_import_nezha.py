"""Nezha import throughput on the shared TrainTicket day (28 faults).

Prints the end-to-end time and peak memory of `import_nezha` into a temporary directory, then, per
modality, rows per second of flipmoe's reader (read + parse + normalise, every file of the day once)
next to the baseline of a bare `pandas.read_csv` of the same files, in the same run.

    python benchmarks/bench_import_nezha.py [ROOT]   (default /work/shared/data/nezha-trainticket)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from flipmoe.config import TelemetryConfig
from flipmoe.importers import nezha
from flipmoe.importers.nezha import import_nezha

DEFAULT_ROOT = Path("/work/shared/data/nezha-trainticket")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timed(work: Callable[[list[Path]], int], paths: list[Path]) -> tuple[float, int]:
    start = time.perf_counter()
    rows = work(paths)
    return time.perf_counter() - start, rows


def _files(root: Path, folder: str, pattern: str) -> list[Path]:
    return sorted(p for base in ("rca_data", "construct_data")
                  for p in (root / base).glob(f"*/{folder}/{pattern}"))


def _end_to_end(root: Path) -> None:
    before = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        warnings: list[str] = []
        written = import_nezha(root, Path(out) / "incidents", warnings=warnings)
        seconds = time.perf_counter() - start
    print(f"end to end: {len(written)} incidents in {seconds:.1f} s ({seconds / len(written):.2f} s per "
          f"fault), {len(warnings)} warnings; peak RSS {_peak_rss_mib():.0f} MiB ({before:.0f} MiB before)")


# flipmoe's side calls the module's private per-file readers: they are the unit of work measured here.

def _flipmoe_metrics(paths: list[Path]) -> int:
    """Every sample of the day in long format (an incident takes a 67-minute slice of it)."""
    config, rows = TelemetryConfig(), 0
    for directory in sorted({p.parent for p in paths}):
        metrics = nezha._read_metrics(directory, [p for p in paths if p.parent == directory], {}, config, [])
        assert metrics is not None
        table = metrics.between(pd.Timestamp(0, tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
        rows += len(table) if table is not None else 0
    return rows


def _flipmoe_logs(paths: list[Path]) -> int:
    return sum(len(nezha._read_log_file(p, TelemetryConfig(), [])) for p in paths)


def _flipmoe_spans(paths: list[Path]) -> int:
    return sum(len(nezha._read_span_file(p, TelemetryConfig(), [])) for p in paths)


def _pandas_cells(paths: list[Path]) -> int:
    # Wide metric files: count cells, all but Time, TimeStamp and the pod or service name.
    return sum(frame.shape[0] * (frame.shape[1] - 3) for frame in map(pd.read_csv, paths))


def _pandas_rows(paths: list[Path]) -> int:
    return sum(len(pd.read_csv(p, on_bad_lines="skip")) for p in paths)


def _per_modality(root: Path) -> None:
    cases: list[tuple[str, list[Path], Callable[[list[Path]], int], Callable[[list[Path]], int]]] = [
        ("metrics", sorted((root / "rca_data").glob("*/metric/*.csv*")), _flipmoe_metrics, _pandas_cells),
        ("logs", _files(root, "log", "*_log.csv*"), _flipmoe_logs, _pandas_rows),
        ("spans", _files(root, "trace", "*_trace.csv*"), _flipmoe_spans, _pandas_rows),
    ]
    print(f"\n{'modality':<9}{'files':>6}{'rows':>11}{'flipmoe s':>11}{'rows/s':>11}   "
          f"{'read_csv s':>10}{'rows/s':>11}  (baseline: pandas.read_csv alone)")
    for name, paths, ours, baseline in cases:
        seconds, rows = _timed(ours, paths)
        base_seconds, base_rows = _timed(baseline, paths)
        print(f"{name:<9}{len(paths):>6}{rows:>11,}{seconds:>11.2f}{rows / seconds:>11,.0f}   "
              f"{base_seconds:>10.2f}{base_rows / base_seconds:>11,.0f}")
    print("metrics rows are long-format samples (NaN dropped); the baseline counts wide cells, NaN included")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, help="Nezha data set root")
    args = parser.parse_args(argv)
    if not (args.root / "rca_data").is_dir():
        print(f"skipped: no Nezha data set at {args.root} (it needs rca_data/)")
        return 0
    print(f"Nezha import benchmark: {args.root}")
    _end_to_end(args.root)
    _per_modality(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
