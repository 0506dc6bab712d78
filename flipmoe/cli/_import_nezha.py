"""`flipmoe import nezha ROOT --out DIR`: a Nezha data set -> one incident directory per labelled fault."""

from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Import a Nezha RCA data set (github.com/IntelligentDDS/Nezha) into incident directories, one per
labelled fault: DIR/<epoch seconds of the injection>/. ROOT holds rca_data/<date>/ (fault list,
metric/, log/, trace/; CSV files plain or gzipped) and optionally construct_data/ (a fault-free
minute, written as each incident's baseline/, and root_cause_ts.json, the fine-grained labels).

The incident's alert names only the time ("TrainTicket: anomaly reported around 08:43:04 UTC");
its window runs from import.window_before_minutes before that time to import.window_after_minutes
after it, and metrics start import.history_minutes earlier still (config). The answer is written to
label.json, which analyses never read.
"""

_EPILOG = """\
Prints one line per incident written and a summary; warnings (skipped malformed lines, dropped NaN
samples, windows holding two faults) go to stderr. A fault that cannot be imported (a truncated or
corrupt file in its window, an unknown fault type) is reported and skipped; the others are still
written, and the exit status is then 2. Each incident is written atomically: a failure never leaves
a half-written directory.

example:
  flipmoe import nezha data/nezha-trainticket --out incidents/nezha
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "nezha", help="a Nezha RCA data set (TrainTicket, OnlineBoutique): one incident per fault",
        description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="ROOT", help="data set root, holding rca_data/ (and construct_data/)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="directory to write the incidents into (created if missing)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace incident directories that already exist in DIR")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from flipmoe.cli import EXIT_BAD_INPUT, print_warnings
    from flipmoe.importers.nezha import NezhaImportError, import_nezha

    warnings: list[str] = []
    try:
        written = import_nezha(args.root, args.out, config=args.config_obj, overwrite=args.overwrite,
                               progress=lambda line: print(line, flush=True), warnings=warnings)
    except NezhaImportError as err:
        print_warnings(warnings)
        print(f"imported {len(err.written)} incident(s) into {args.out}; "
              f"{len(err.failures)} problem(s) stopped the rest:")
        for failure in err.failures:
            print(f"flipmoe: error: {failure}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_warnings(warnings)
    print(f"imported {len(written)} incident(s) into {args.out}")
    return 0
