"""How fast does the chaos gym make incidents? Prints incidents per second and where the time goes.

For the 11-service web shop and the 46-service ticketing system (30-minute window plus a 30-minute
baseline, all modalities, written to disk): incidents per second in one process on one core, and
on 2 Ray workers; then the mean seconds per stage of the one-core runs. The goal is at most 5 s
per ticketing incident on one core, writing included.

    .venv/bin/python benchmarks/bench_chaos.py --n 4
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from data_pipeline.chaos import generate_corpus
from flipmoe.telemetry.taxonomy import FAULT_TYPES

SYSTEMS = {"webshop (11 services)": "webshop", "ticketing (46 services)": "ticketing"}


class _StageTimes(logging.Handler):
    """Collects the generator's per-stage DEBUG records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "stage"):
            self.seconds[record.stage].append(record.seconds)  # type: ignore[attr-defined]


def one_core(system: str, n: int, seed: int, out: Path) -> float:
    started = time.perf_counter()
    generate_corpus(system, n, seed=seed, out=out, window_minutes=30)
    return time.perf_counter() - started


def ray_workers(system: str, n: int, seed: int, out: Path, workers: int) -> float:
    started = time.perf_counter()
    generate_corpus(system, n, seed=seed, out=out, window_minutes=30, workers=workers)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="incidents per system and setting")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stages = _StageTimes()
    logger = logging.getLogger("data_pipeline.chaos.generate")
    logger.addHandler(stages)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    print(f"chaos gym: {args.n} incidents per run, 30-minute window + 30-minute baseline, faults round-robin "
          f"over {len(FAULT_TYPES)} types, written as Parquet")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_corpus("webshop", 1, seed=10**6, out=root / "warm", window_minutes=5)  # imports, caches
        rows, per_system_stages = [], {}
        for title, system in SYSTEMS.items():
            stages.seconds.clear()
            seconds = one_core(system, args.n, args.seed, root / f"{system}-1")
            # Per incident: a target drawn again when its fault trips no alert simulates twice.
            per_system_stages[title] = {k: sum(v) / args.n for k, v in stages.seconds.items()}
            rows.append((title, "1 core", seconds))
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        try:
            # Start the workers and import the simulator in them before timing.
            generate_corpus("webshop", args.workers, seed=10**6, out=root / "warm-ray", window_minutes=5,
                            workers=args.workers)
            for title, system in SYSTEMS.items():
                seconds = ray_workers(system, args.n, args.seed + 1, root / f"{system}-ray", args.workers)
                rows.append((title, f"{args.workers} Ray workers", seconds))
        finally:
            ray.shutdown()

    print(f"\n{'system':<26}{'setting':<17}{'incidents/s':>12}{'s/incident':>12}")
    for title, setting, seconds in rows:
        print(f"{title:<26}{setting:<17}{args.n / seconds:>12.2f}{seconds / args.n:>12.2f}")
    print("\nmean seconds per incident by stage (1 core)")
    names = list(next(iter(per_system_stages.values())))
    print(f"{'stage':<14}" + "".join(f"{title:>26}" for title in per_system_stages))
    for name in names:
        print(f"{name:<14}" + "".join(f"{per_system_stages[t].get(name, 0.0):>26.3f}" for t in per_system_stages))
    total = {t: sum(v.values()) for t, v in per_system_stages.items()}
    print(f"{'total':<14}" + "".join(f"{total[t]:>26.3f}" for t in per_system_stages))
    goal = total["ticketing (46 services)"]
    print(f"\ngoal: a ticketing incident in <= 5 s on one core, writing included: {goal:.2f} s "
          f"({'met' if goal <= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
