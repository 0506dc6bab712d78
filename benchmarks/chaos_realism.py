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

from data_pipeline.chaos import generate_incident
from data_pipeline.chaos.realism import STAT_NAMES, realism_stats
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
             if not n.startswith("log_level_") or any(c[n] > 0 for c in columns.values())]
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
    if args.nezha.is_dir():
        incidents, seconds = timed(partial(real_incidents, args.nezha))
        columns["real TrainTicket"] = realism_stats(incidents)
        print(f"real TrainTicket: {len(incidents)} incidents imported in {seconds:.1f} s")
    else:
        print(f"real TrainTicket: {args.nezha} not found; column left out")
    for column, system in CHAOS_SYSTEMS.items():
        incidents, seconds = timed(partial(chaos_incidents, system, args.n, args.seed))
        columns[column] = realism_stats(incidents)
        print(f"{column}: {len(incidents)} incidents generated in {seconds:.1f} s "
              f"({seconds / len(incidents):.2f} s each)")
    print()
    print_table(columns)


if __name__ == "__main__":
    main()
