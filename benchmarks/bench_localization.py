"""Localisation and fault-type accuracy of the shipped RCA path, with baselines, in one run.

Every flipmoe row is the Director running its runbook exactly as `flipmoe rca` does (steps in this
process; `eval.localization.director_ranker`). Data: chaos-gym incidents of several systems over every
fault type, generated from seeds that were never used while developing (the seed base is printed), and
the 28 labelled faults of the shared TrainTicket day and the 530 TVDiag train cases (GAIA, SockShop,
HotelReservation; alert events only) when ../shared/data is present. Rankers, side by
side: flipmoe as shipped (the packaged model bundle, as `rca` uses by default), the same without a
model, the no-model path restricted to metrics / traces / logs only (ablations), a naive metric z-score
ranking, and random.

    python benchmarks/bench_localization.py [--per-system 100] [--systems webshop,ticketing] [--seed 700000]
                                            [--no-model]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _corpora import by_system, chaos_corpus, history_sample, nezha_corpus, tvdiag_corpus

from data_pipeline.chaos import ChaosConfig
from director.actors.base import RunSettings
from eval.localization import (
    ablation_rankers,
    alert_count_ranker,
    baro_ranker,
    director_ranker,
    evaluate,
    format_table,
    last_change_ranker,
    random_ranker,
    zscore_ranker,
)
from flipmoe.telemetry import find_incidents
from router.bundle import packaged_bundle


def rankers(with_model: bool) -> dict:
    chosen = {}
    bundle = packaged_bundle() if with_model else None
    if bundle is not None:
        chosen["flipmoe rca (shipped, nano bundle)"] = director_ranker(settings=RunSettings(bundle=bundle))
    chosen.update(ablation_rankers({
        "flipmoe rca, no model": ("metrics", "traces", "logs", "events"),
        "  metrics only": ("metrics",),
        "  traces only": ("traces",),
        "  logs only": ("logs",),
    }))
    chosen["naive metric z-score"] = zscore_ranker()
    chosen["BARO (onset given)"] = baro_ranker()
    chosen["random"] = random_ranker()
    return chosen


def run_tvdiag(cases: Path, root: Path) -> None:
    """The TVDiag train cases, per system: alert events only, so no ablations; nothing in the shipped path is
    fitted to these systems, so every figure is out-of-system (leave-one-system-out holds trivially). The
    `--history` row gives `rca` the system's other cases as its alert history (their alerts only, no labels;
    an incident never counts in its own history)."""
    for system, folder in by_system(cases, root / "tvdiag-systems").items():
        incidents = find_incidents(folder)
        start = time.perf_counter()
        scores = evaluate(incidents, {"flipmoe rca, no model": director_ranker(settings=RunSettings()),
                                      "flipmoe rca --history": director_ranker(settings=RunSettings(history=folder)),
                                      "alert count": alert_count_ranker(), "random": random_ranker()})
        print(f"\n== TVDiag {system} (alert events): {len(incidents)} cases, evaluated in "
              f"{time.perf_counter() - start:.0f} s")
        print(format_table(scores))
        # How long a history is needed: k cases drawn (seed 0) as the history, the others scored against it.
        sizes = []
        for k in (5, 10, 20, 50):
            history, rest = history_sample(folder, k, root / "tvdiag-history" / f"{system}-{k}")
            rank = director_ranker(settings=RunSettings(history=history))
            hits = evaluate(rest, {"rca --history": rank})["rca --history"].summary()["service_A@1"]
            sizes.append(f"{k}: {hits:.3f} (n={len(rest)})")
        print(f"service A@1 with a history of k other cases: {', '.join(sizes)}")


CHANGE_FAULTS = ["code_exception", "code_wrong_result", "bad_config"]
"""Faults a deploy or a config change brings in."""


def run_changes(name: str, directory: Path) -> None:
    """Change-induced incidents shipped with a release train: several services deployed within a minute of
    the faulty change, only one of them faulty, so "the last change" cannot be the answer by itself."""
    incidents = find_incidents(directory)
    start = time.perf_counter()
    scores = evaluate(incidents, {"flipmoe rca, no model": director_ranker(settings=RunSettings()),
                                  "most recently changed service": last_change_ranker(), "random": random_ranker()})
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))


def run(name: str, directory: Path, with_model: bool) -> None:
    incidents = find_incidents(directory)
    start = time.perf_counter()
    scores = evaluate(incidents, rankers(with_model))
    print(f"\n== {name}: {len(incidents)} incidents, evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-system", type=int, default=100, help="chaos incidents per system")
    parser.add_argument("--systems", default="webshop,ticketing")
    parser.add_argument("--seed", type=int, default=700_000, help="seed base, never used during development")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for generating the corpus")
    parser.add_argument("--keep", help="keep the corpus in this directory (and reuse it when it is complete)")
    parser.add_argument("--no-model", action="store_true", help="leave out the row with the packaged model bundle")
    parser.add_argument("--changes", type=int, default=30, metavar="N",
                        help="change-induced incidents per system with a release train of innocent deploys "
                             "(default 30; 0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for offset, system in enumerate(s for s in args.systems.split(",") if s):
            out = chaos_corpus(root, system, args.per_system, seed=args.seed + 1000 * offset, workers=args.workers)
            run(f"chaos {system}", out, not args.no_model)
        if args.changes:
            # A release shipped at once (the innocent deploys within a minute of the faulty one, some after it:
            # "the last change" is mostly wrong), then one spread over 15 minutes (earlier changes of the day
            # mixed in: the last change is mostly right).
            for folder, spread, base in (("changes", 60.0, 30_000), ("changes-spread", 900.0, 40_000)):
                for offset, system in enumerate(s for s in args.systems.split(",") if s):
                    seed = args.seed + base + 1000 * offset
                    out = chaos_corpus(root / folder, system, args.changes, seed=seed, workers=args.workers,
                                       faults=CHANGE_FAULTS,
                                       config=ChaosConfig(release_train=3, release_spread_s=spread))
                    run_changes(f"chaos {system}, change-induced with 3 innocent deploys within {spread:.0f} s "
                                f"(seed {seed})", out)
        nezha = nezha_corpus(root)
        if nezha is not None:
            run("real TrainTicket day (Nezha, 28 faults)", nezha, not args.no_model)
        tvdiag = tvdiag_corpus(root)
        if tvdiag is not None:
            run_tvdiag(tvdiag, root)
        if nezha is None or tvdiag is None:
            print("\n(../shared/data not found: the real data sets were skipped)")


if __name__ == "__main__":
    main()
