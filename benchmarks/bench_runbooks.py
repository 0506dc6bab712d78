"""Does the runbook matter? Accuracy and time of each shipped runbook, forced, next to retrieval, in one run.

Every row is the Director in this process (`flipmoe rca` on one incident), no model, with one runbook
forced for every incident (`--runbook NAME`) or, in the first row, the runbook the knowledge base
retrieves for each alert (what `rca` does). Data: chaos-gym incidents of each system from seeds never
used in development, and the 28 labelled faults of the shared TrainTicket day when ../shared/data is
present. Columns: A@1/3/5 and MRR at service level, pod A@1, fault-type accuracy, p50/p95 seconds per
incident, the steps run (mean) and the back-tracks (mean).

    python benchmarks/bench_runbooks.py [--per-system 20] [--systems webshop,ticketing] [--seed 820000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _corpora import chaos_corpus, nezha_corpus

from director.actors.base import RunSettings
from director.director import default_library, local_director
from eval.localization import Scores, evaluate, format_table, report_ranking
from flipmoe.telemetry import find_incidents


class RunbookRanker:
    """The Director with one runbook forced (None: retrieval); keeps the step counts and chosen runbooks."""

    def __init__(self, runbook: str | None) -> None:
        self.director = local_director(settings=RunSettings(top=20), runbook=runbook)
        self.steps: list[int] = []
        self.backtracks: list[int] = []
        self.chosen: Counter[str] = Counter()

    def __call__(self, incident: Any) -> tuple[list[dict[str, Any]], str | None]:
        report = self.director.analyse(incident)
        self.steps.append(sum(1 for s in report.runbook.steps if s.status != "skipped"))
        self.backtracks.append(report.runbook.backtracks)
        self.chosen[report.runbook.name] += 1
        return report_ranking(report)


def run(name: str, directory: Path) -> None:
    incidents = find_incidents(directory)
    rankers: dict[str, RunbookRanker] = {"retrieved per alert (rca)": RunbookRanker(None)}
    rankers.update({f"forced: {runbook}": RunbookRanker(runbook) for runbook in sorted(default_library().templates)})
    start = time.perf_counter()
    scores: dict[str, Scores] = evaluate(incidents, rankers)
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))
    print(f"\n{'runbook':<26}  {'steps':>6}  {'backtracks':>10}")
    for label, ranker in rankers.items():
        print(f"{label:<26}  {np.mean(ranker.steps):>6.1f}  {np.mean(ranker.backtracks):>10.2f}")
    chosen = rankers["retrieved per alert (rca)"].chosen
    print("retrieval chose: " + ", ".join(f"{k} {v}" for k, v in chosen.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-system", type=int, default=20, help="chaos incidents per system")
    parser.add_argument("--systems", default="webshop,ticketing")
    parser.add_argument("--seed", type=int, default=820_000, help="seed base, never used during development")
    parser.add_argument("--keep", help="keep the corpora in this directory (and reuse them when complete)")
    parser.add_argument("--no-nezha", action="store_true", help="skip the TrainTicket day")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for offset, system in enumerate(s for s in args.systems.split(",") if s):
            seed = args.seed + 1000 * offset
            run(f"chaos {system} (seed {seed})", chaos_corpus(root, system, args.per_system, seed=seed))
        nezha = None if args.no_nezha else nezha_corpus(root)
        if nezha is not None:
            run("real TrainTicket day (Nezha, 28 faults)", nezha)
        elif not args.no_nezha:
            print("\n(real TrainTicket day skipped: ../shared/data not found)")


if __name__ == "__main__":
    main()
