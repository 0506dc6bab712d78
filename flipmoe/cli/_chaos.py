"""`flipmoe chaos list` and `flipmoe chaos generate`: the chaos gym's systems, faults and incident corpora."""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chaos", help="simulate incidents with injected faults (the chaos gym)",
                                   description="Simulate microservice systems, inject faults and write incident "
                                               "directories with ground truth (label.json).")
    commands = parser.add_subparsers(dest="chaos_command", metavar="SUBCOMMAND", required=True)
    listing = commands.add_parser("list", help="list systems and fault types",
                                  description="List the simulated systems (with service counts) and the fault "
                                              "library (with levels and descriptions).")
    listing.set_defaults(handler=_list)
    generate = commands.add_parser(
        "generate", help="write N simulated incidents",
        description="Write N incident directories (metrics, logs, spans, events, topology, code, a fault-free "
                    "baseline and label.json) under DIR, fault types round-robin.")
    generate.add_argument("--system", required=True, metavar="NAME",
                          help="webshop, ticketing, random-N (N services) or random (see 'chaos list')")
    generate.add_argument("--faults", type=int, required=True, metavar="N", help="number of incidents to write")
    generate.add_argument("--seed", type=int, required=True, metavar="S", help="seed of the corpus")
    generate.add_argument("--out", required=True, metavar="DIR", help="directory to write the incidents into")
    generate.add_argument("--fault", action="append", metavar="TYPE",
                          help="restrict to this fault type (repeatable; default: all 16)")
    generate.add_argument("--workers", type=int, default=1, metavar="W", help="parallel Ray workers (default 1)")
    generate.add_argument("--window-minutes", type=float, default=30.0, metavar="M",
                          help="length of the incident window (default 30)")
    generate.add_argument("--release-train", type=int, default=0, metavar="K",
                          help="innocent deploys of K other services within a minute of the fault (default 0): "
                               "change-induced incidents with distractor changes")
    generate.add_argument("--release-spread", type=float, default=60.0, metavar="SECONDS",
                          help="the release train's deploys land from SECONDS before the fault to 30 s after it "
                               "(default 60: shipped at once; longer mixes in earlier changes)")
    generate.set_defaults(handler=_generate)


def _list(args: argparse.Namespace) -> int:
    from data_pipeline.chaos.systems import summarise_systems
    from flipmoe.telemetry.taxonomy import FAULT_TYPES

    print("systems")
    for system in summarise_systems():
        counts = f"{system.services:>3} services {system.pods:>3} pods" if system.services else " " * 20
        extra = f"  [{', '.join(system.extra.values())}]" if system.extra else ""
        print(f"  {system.name:<11} {counts}  {system.description}{extra}")
    print("faults")
    for fault in FAULT_TYPES.values():
        print(f"  {fault.name:<19} {fault.level.value:<15} {fault.description}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from data_pipeline.chaos.config import ChaosConfig
    from data_pipeline.chaos.generate import generate_corpus

    config = ChaosConfig(release_train=args.release_train, release_spread_s=args.release_spread)
    started = time.perf_counter()
    paths = generate_corpus(args.system, args.faults, seed=args.seed, out=args.out, faults=args.fault,
                            workers=args.workers, window_minutes=args.window_minutes, config=config)
    seconds = time.perf_counter() - started
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} incident(s) in {seconds:.1f} s", file=sys.stderr)
    return 0
