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
import sys
import tempfile
import time
from pathlib import Path

from director.actors.base import RunSettings
from eval.localization import (
    ablation_rankers,
    alert_count_ranker,
    director_ranker,
    evaluate,
    format_table,
    random_ranker,
    zscore_ranker,
)
from flipmoe.telemetry import find_incidents
from router.bundle import packaged_bundle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_NEZHA = SHARED / "nezha-trainticket"
SHARED_TVDIAG = SHARED / "tvdiag"


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
    chosen["random"] = random_ranker()
    return chosen


def run_tvdiag(root: Path) -> None:
    """The TVDiag train cases, per system: alert events only, so no ablations; nothing in the shipped path is
    fitted to these systems, so every figure is out-of-system (leave-one-system-out holds trivially)."""
    from flipmoe.importers.tvdiag import import_tvdiag

    cases = root / "tvdiag"
    if not any(cases.glob("*/incident.json")):
        import_tvdiag(SHARED_TVDIAG, cases, overwrite=True)
    for system in sorted({d.name.rsplit("-", 1)[0] for d in find_incidents(cases)}):
        incidents = [d for d in find_incidents(cases) if d.name.rsplit("-", 1)[0] == system]
        start = time.perf_counter()
        scores = evaluate(incidents, {"flipmoe rca, no model": director_ranker(settings=RunSettings()),
                                      "alert count": alert_count_ranker(), "random": random_ranker()})
        print(f"\n== TVDiag {system} (alert events): {len(incidents)} cases, evaluated in "
              f"{time.perf_counter() - start:.0f} s")
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
    args = parser.parse_args()
    from data_pipeline.chaos import generate_corpus

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for offset, system in enumerate(args.systems.split(",")):
            out = root / system
            seed = args.seed + 1000 * offset
            if out.is_dir() and len(list(out.glob("*/incident.json"))) == args.per_system:
                print(f"reusing the {system} corpus in {out} (seed {seed})", file=sys.stderr)
            else:
                start = time.perf_counter()
                generate_corpus(system, args.per_system, seed=seed, out=out, workers=args.workers)
                print(f"generated {args.per_system} {system} incidents (seed {seed}) "
                      f"in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            run(f"chaos {system}", out, not args.no_model)
        if SHARED_NEZHA.is_dir():
            from flipmoe.importers.nezha import import_nezha

            nezha = root / "nezha"
            import_nezha(SHARED_NEZHA, nezha, overwrite=True)
            run("real TrainTicket day (Nezha, 28 faults)", nezha, not args.no_model)
        else:
            print(f"\n(real TrainTicket day skipped: {SHARED_NEZHA} not found)")
        if SHARED_TVDIAG.is_dir():
            run_tvdiag(root)
        else:
            print(f"\n(TVDiag skipped: {SHARED_TVDIAG} not found)")


if __name__ == "__main__":
    main()
