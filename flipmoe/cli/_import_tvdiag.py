"""`flipmoe import tvdiag ROOT --out DIR`: TVDiag cases -> one events-only incident directory per case."""

from __future__ import annotations

import argparse

_DESCRIPTION = """\
Import TVDiag alert-event cases (GAIA/MicroSS, SockShop, HotelReservation; github.com/WHU-AISE/TVDiag)
into incident directories, one per case: DIR/<system>-<index>/. ROOT holds <system>/label.csv and
<system>/raw/{metrics,logs,traces,nodes,edges}.json as in the source release.

Each incident holds an events table (one row per alert: kind metric/log/trace, instance as pod, its
service, KPI or template or operation, direction or status), topology.json from the case's call graph,
and label.json (the instance, its service, the fault type mapped into flipmoe's taxonomy and the
original type). The source's alerts have no timestamps: every one is stamped at one synthetic alert
time, which incident.json's source states.
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tvdiag", help="TVDiag alert-event cases (GAIA, SockShop, Hotel): one events-only incident per case",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="ROOT", help="folder holding <system>/label.csv and <system>/raw/")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write the incidents into")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="the label.csv data_type to import (default: all)")
    parser.add_argument("--per-system", action="store_true",
                        help="write DIR/<system>/<system>-<index>/: one folder per system, each usable as that "
                             "system's alert history (rca --history)")
    parser.add_argument("--overwrite", action="store_true", help="replace incident directories that exist")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from flipmoe.cli import EXIT_BAD_INPUT
    from flipmoe.importers.tvdiag import import_tvdiag

    failures: list[str] = []
    written = import_tvdiag(args.root, args.out, split=args.split, overwrite=args.overwrite,
                            progress=lambda line: print(line, flush=True), failures=failures,
                            per_system=args.per_system)
    print(f"imported {len(written)} case(s) into {args.out}")
    for failure in failures:
        print(f"flipmoe: error: {failure}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures else 0
