"""`flipmoe import otlp FILES... --out DIR`: OpenTelemetry Collector file-exporter output -> incident.

Also home of the options every `flipmoe import` subcommand shares (--out, --id, --alert, the window).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "otlp", help="import OTLP/JSON files (the OpenTelemetry Collector's file exporter)",
        description="Import OTLP/JSON traces, logs and metrics, as the OpenTelemetry Collector's file "
                    "exporter writes them (one export request per line; a single JSON document and .gz files "
                    "work too), into an incident directory. Spans become the spans table and the service "
                    "topology, log records the logs table, gauge/sum/histogram/summary points the metrics "
                    "table (histograms as _count, _sum and estimated _p50/_p95/_p99).")
    parser.add_argument("files", nargs="+", metavar="FILE", help="OTLP/JSON files of the incident window")
    parser.add_argument("--baseline", nargs="+", metavar="FILE",
                        help="OTLP/JSON files of a fault-free window of the same system")
    add_incident_arguments(parser)
    parser.set_defaults(handler=_run)


def add_incident_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the incident an importer writes."""
    parser.add_argument("--out", required=True, metavar="DIR", help="incident directory to write")
    parser.add_argument("--id", metavar="ID", help="incident id (default: the name of --out)")
    parser.add_argument("--alert", metavar="TEXT", help="alert text that opened the incident")
    parser.add_argument("--window-start", metavar="ISO", help="window start, ISO 8601 with a timezone")
    parser.add_argument("--window-end", metavar="ISO",
                        help="window end, ISO 8601 with a timezone (default window: the data's time span)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def window_from_args(args: argparse.Namespace) -> Any:
    """The `TimeWindow` of --window-start/--window-end, or None when neither is given."""
    from flipmoe.errors import FlipmoeInputError
    from flipmoe.telemetry import TimeWindow

    if args.window_start is None and args.window_end is None:
        return None
    if args.window_start is None or args.window_end is None:
        raise FlipmoeInputError("give both --window-start and --window-end, or neither")
    return TimeWindow(args.window_start, args.window_end)


def _run(args: argparse.Namespace) -> int:
    from flipmoe.cli import print_warnings
    from flipmoe.importers.otlp import import_otlp

    warnings: list[str] = []
    out = import_otlp(args.files, args.out, incident_id=args.id, alert=args.alert,
                      window=window_from_args(args), baseline_files=args.baseline,
                      config=args.config_obj.telemetry, overwrite=args.overwrite, warnings=warnings)
    print_warnings(warnings)
    print(f"wrote {out}")
    return 0
