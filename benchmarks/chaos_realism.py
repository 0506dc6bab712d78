"""How close is the chaos gym to real telemetry? Prints realism statistics side by side.

Generates N chaos incidents of the ticketing system and of the web shop, imports the real
TrainTicket day of Nezha (when the data is there) and prints, for each, the statistics of
`data_pipeline.chaos.realism` (spans per trace, call depth, log rate and level mix, metric noise,
services and pods).

    .venv/bin/python benchmarks/chaos_realism.py --n 10
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from data_pipeline.chaos import generate_incident
from data_pipeline.chaos.realism import STAT_NAMES, noise_by_metric, realism_stats
from flipmoe.importers.nezha import NezhaImportError, import_nezha
from flipmoe.telemetry import Incident, read_incident

NEZHA = Path("/work/shared/data/nezha-trainticket")
CHAOS_SYSTEMS = {"chaos ticketing": "ticketing", "chaos webshop": "webshop"}


def chaos_incidents(system: str, n: int, seed: int) -> list[Incident]:
    return [generate_incident(system, seed=seed + i)[0] for i in range(n)]


def real_incidents(root: Path) -> list[Incident]:
    with tempfile.TemporaryDirectory(prefix="nezha-") as out:
        try:
            paths = import_nezha(root, Path(out))
        except NezhaImportError as err:
            # Real data has bad rows; the faults that did import still make the column.
            print(f"real TrainTicket: {len(err.failures)} fault(s) not imported, the first: {err.failures[0]}")
            paths = err.written
        return [read_incident(path) for path in paths]


def timed(build: Callable[[], list[Incident]]) -> tuple[list[Incident], float]:
    began = time.perf_counter()
    incidents = build()
    return incidents, time.perf_counter() - began


def print_table(columns: dict[str, dict[str, float]]) -> None:
    # Log levels that no column uses are left out.
    names = [n for n in STAT_NAMES
             if "log_level_" not in n or any(c[n] > 0 for c in columns.values())]
    width = max(map(len, names))
    header = f"{'statistic':<{width}} | " + " | ".join(f"{c:>17}" for c in columns)
    print(header)
    print("-" * len(header))
    for name in names:
        print(f"{name:<{width}} | " + " | ".join(f"{_fmt(c[name]):>17}" for c in columns.values()))


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value == int(value) and abs(value) >= 1 else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="chaos incidents per system")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first chaos incident")
    parser.add_argument("--nezha", type=Path, default=NEZHA, help="the Nezha TrainTicket data set")
    args = parser.parse_args()
    columns: dict[str, dict[str, float]] = {}
    noise: dict[str, pd.DataFrame] = {}
    if args.nezha.is_dir():
        incidents, seconds = timed(partial(real_incidents, args.nezha))
        columns["real TrainTicket"] = realism_stats(incidents)
        noise["real TrainTicket"] = noise_by_metric(incidents)
        print(f"real TrainTicket: {len(incidents)} incidents imported in {seconds:.1f} s")
    else:
        print(f"real TrainTicket: {args.nezha} not found; column left out")
    for column, system in CHAOS_SYSTEMS.items():
        incidents, seconds = timed(partial(chaos_incidents, system, args.n, args.seed))
        columns[column] = realism_stats(incidents)
        noise[column] = noise_by_metric(incidents)
        print(f"{column}: {len(incidents)} incidents generated in {seconds:.1f} s "
              f"({seconds / len(incidents):.2f} s each)")
    print()
    print_table(columns)
    print_shared_noise(noise)


def print_shared_noise(noise: dict[str, pd.DataFrame]) -> None:
    """Metric noise per metric name that the real day shares with a chaos column (the same naming scheme)."""
    real = noise.get("real TrainTicket")
    if real is None:
        return
    for column, table in noise.items():
        shared = real.index.intersection(table.index)
        shared = [m for m in shared if real.loc[m, "series"] > 0 and table.loc[m, "series"] > 0]
        if column == "real TrainTicket" or not shared:
            continue
        print(f"\nmetric noise per metric name, real TrainTicket vs {column} ({len(shared)} shared names; "
              "median over series)")
        print(f"{'metric':<26} | {'real CV':>8} | {'chaos CV':>8} | {'real acf1':>9} | {'chaos acf1':>10}")
        for m in shared:
            print(f"{m:<26} | {real.loc[m, 'cv']:>8.3g} | {table.loc[m, 'cv']:>8.3g} | "
                  f"{real.loc[m, 'acf1']:>9.3g} | {table.loc[m, 'acf1']:>10.3g}")
        ratios = table.loc[shared, "cv"] / real.loc[shared, "cv"]
        within = int(((ratios > 0.75) & (ratios < 1.25)).sum())
        medians = real.loc[shared, "cv"].median(), table.loc[shared, "cv"].median()
        print(f"CV within 25% of the real day's on {within} of {len(shared)} shared metric names; median of the "
              f"per-name medians: real {medians[0]:.3g}, chaos {medians[1]:.3g}")


if __name__ == "__main__":
    main()
