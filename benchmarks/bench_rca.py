"""End-to-end RCA latency and accuracy of the Director on a warm Ray runtime, next to its baselines.

Per data set (chaos webshop and ticketing incidents from seeds never used in development, and the
28 faults of the shared TrainTicket day when ../shared/data is present), in one run:

- cold start, first: the wall time of a fresh `flipmoe rca ONE_INCIDENT` process (imports, reading,
  analysis, rendering) in-process (the default for one incident), with the packaged model bundle and
  without, and with `--ray` (a local Ray started for it), next to the warm per-incident time;
- the Director on a warm local Ray (incident in the object store, steps as tasks, runbook from the
  knowledge base, no model) and the same Director in-process (`flipmoe rca` on one incident, `flipmoe
  eval localization`): A@1/3/5, MRR, fault-type accuracy and p50/p95 seconds per incident (reading the
  incident excluded), via `eval.localization.evaluate` — the two must agree;
- the Director's per-stage breakdown on Ray: p50 / p95 seconds of every step, of planning (triage +
  retrieval) and of the total.

    python benchmarks/bench_rca.py [--per-system 10] [--systems webshop,ticketing] [--seed 810000] [--workers 2]
                                   [--limit N] [--keep DIR] [--no-nezha]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _corpora import chaos_corpus, nezha_corpus

from eval.localization import evaluate, format_table, report_ranking
from flipmoe.telemetry import find_incidents

STAGES = ("planning", "triage", "metrics", "traces", "logs", "events", "explorer", "rank", "check", "diagnosis",
          "queries", "summary", "report", "total")


def director_ranker(executor: Any, timings: list[dict[str, float]]) -> Any:
    from director.actors.base import RunSettings
    from director.director import Director

    # as many entries as the toolkit ranker gives (20), for a fair MRR
    director = Director(executor, settings=RunSettings(top=20))

    def rank(incident: Any) -> tuple[list[dict[str, Any]], str | None]:
        report = director.analyse(incident)
        timings.append(report.timings_s)
        return report_ranking(report)

    return rank


def stage_table(timings: list[dict[str, float]]) -> str:
    values: dict[str, list[float]] = defaultdict(list)
    for record in timings:
        for stage, seconds in record.items():
            values[stage].append(seconds)
    lines = [f"{'stage':<12} {'n':>4} {'p50 s':>8} {'p95 s':>8}"]
    for stage in [s for s in STAGES if s in values] + sorted(set(values) - set(STAGES)):
        v = np.array(values[stage])
        lines.append(f"{stage:<12} {len(v):>4} {np.percentile(v, 50):>8.3f} {np.percentile(v, 95):>8.3f}")
    return "\n".join(lines)


def run(name: str, directory: Path, ray_executor: Any, *, limit: int | None, timings: list[dict[str, float]]
        ) -> None:
    from director.runtime import LocalExecutor

    incidents = find_incidents(directory)[:limit]
    ray_timings: list[dict[str, float]] = []
    rankers = {"director on Ray (warm)": director_ranker(ray_executor, ray_timings),
               "director in-process": director_ranker(LocalExecutor(), [])}
    start = time.perf_counter()
    scores = evaluate(incidents, rankers)
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))
    print(f"\nper-stage seconds, director on Ray ({name}):")
    print(stage_table(ray_timings))
    timings.extend(ray_timings)


def cold_starts(incident: Path, out: Path) -> list[tuple[str, float]]:
    """Wall seconds of fresh `flipmoe rca` processes on one incident (what an on-call engineer waits)."""
    import subprocess

    rows = []
    for name, extra in (("in-process, no model", ["--no-model"]), ("in-process, nano bundle (default)", []),
                        ("local Ray started for it, no model", ["--ray", "--no-model"])):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "flipmoe", "rca", str(incident), "--out", str(out), *extra],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"flipmoe rca {' '.join(extra)} failed: {done.stderr[-500:]}")
        rows.append((name, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-system", type=int, default=10, help="chaos incidents per system")
    parser.add_argument("--systems", default="webshop,ticketing")
    parser.add_argument("--seed", type=int, default=810_000, help="seed base, never used during development")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--keep", help="keep the corpora in this directory (and reuse them when complete)")
    parser.add_argument("--no-nezha", action="store_true", help="skip the TrainTicket day")
    parser.add_argument("--limit", type=int, default=None, help="at most this many incidents per data set")
    args = parser.parse_args()
    from director.runtime import RayExecutor, start_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        corpora: list[tuple[str, Path]] = []
        for offset, system in enumerate(s for s in args.systems.split(",") if s):
            seed = args.seed + 1000 * offset
            corpora.append((f"chaos {system} (seed {seed})", chaos_corpus(root, system, args.per_system, seed=seed)))
        nezha = None if args.no_nezha else nezha_corpus(root)
        if nezha is not None:
            corpora.append(("real TrainTicket day (Nezha, 28 faults)", nezha))
        first = find_incidents(corpora[0][1])[0]
        cold = cold_starts(first, root / "reports")

        start = time.perf_counter()
        start_ray(num_cpus=args.workers)
        print(f"Ray started in {time.perf_counter() - start:.1f} s ({args.workers} CPUs)", file=sys.stderr)
        executor = RayExecutor()
        from director.director import Director
        from flipmoe.telemetry import read_incident

        Director(executor).analyse(read_incident(first))  # workers start and import once, outside the figures
        warm: list[dict[str, float]] = []
        for name, directory in corpora:
            run(name, directory, executor, limit=args.limit, timings=warm)
        print(f"\ncold start vs warm, one incident of {corpora[0][0]} ({first.name}):")
        print(f"{'':<46} {'wall s':>8}")
        for name, seconds in cold:
            print(f"{'cold: flipmoe rca ONE, ' + name:<46} {seconds:>8.1f}")
        totals = [t['total'] for t in warm]
        print(f"{'warm: per incident on Ray, p50 (no model)':<46} {np.percentile(totals, 50):>8.1f}")


if __name__ == "__main__":
    main()
