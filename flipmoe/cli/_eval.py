"""`flipmoe eval ...`: evaluation commands."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate the analysis path and models",
                                   description="Evaluate flipmoe on labelled incidents and tasks.")
    commands = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    loc = commands.add_parser(
        "localization", help="root-cause localisation and fault-type accuracy over incident directories",
        description="Run the analysis path that 'flipmoe rca' uses over every incident directory under --path "
                    "(in one process), write one JSON line per incident ({incident, root_causes, fault_type, "
                    "label}) and print A@1/3/5 at service and pod level, MRR and fault-type accuracy for the "
                    "incidents that have a label.json. Labels are read only after each analysis.")
    loc.add_argument("--path", required=True, help="an incident directory or a directory of them")
    loc.add_argument("--out", help="JSON Lines output file (default: standard output)")
    loc.add_argument("--modalities", default="metrics,traces,logs,events",
                     help="comma-separated modalities to use, for ablations (default: all)")
    loc.add_argument("--quiet", action="store_true", help="no progress lines on standard error")
    loc.set_defaults(handler=_localization)


def _localization(args: argparse.Namespace) -> int:
    from eval.localization import analysis_ranker, evaluate, find_incidents, format_table

    incidents = find_incidents(args.path)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    ranker = analysis_ranker(modalities=modalities)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            scores = evaluate(incidents, {"flipmoe": ranker}, out=out, progress=progress)
    else:
        scores = evaluate(incidents, {"flipmoe": ranker}, out=sys.stdout, progress=progress)
    summary = scores["flipmoe"].summary()
    stream = sys.stderr if not args.out else sys.stdout
    if summary["incidents"]:
        print(format_table(scores), file=stream)
    else:
        print(f"{len(incidents)} incident(s) analysed; none has a label.json, so there is nothing to score",
              file=stream)
    return 0
