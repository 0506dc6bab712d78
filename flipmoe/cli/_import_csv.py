"""`flipmoe import csv --out DIR --metrics FILE ...`: CSV files with their own column names -> incident."""

from __future__ import annotations

import argparse

from flipmoe.cli._import_otlp import add_incident_arguments, window_from_args

# flipmoe.telemetry.MODALITIES, spelled out so that registering the subcommand imports no pandas.
_TABLES = ("metrics", "logs", "spans", "events")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "csv", help="import CSV files whose columns are mapped onto flipmoe's tables",
        description="Import CSV files (plain or .gz) into an incident directory. Columns named like "
                    "flipmoe's are taken as they are; others are mapped with --map or a --mapping YAML, and "
                    "missing ones can be set to a constant with --const. Command-line options win over the "
                    "YAML.")
    for table in _TABLES:
        parser.add_argument(f"--{table}", metavar="FILE", help=f"CSV file of the {table} table")
    parser.add_argument("--mapping", metavar="YAML",
                        help="mapping file (files, columns, constants, timezone, duration unit)")
    parser.add_argument("--map", action="append", metavar="TABLE.COLUMN=SOURCE",
                        help="read flipmoe's COLUMN of TABLE from the file's SOURCE column (repeatable)")
    parser.add_argument("--const", action="append", metavar="TABLE.COLUMN=VALUE",
                        help="set COLUMN of TABLE to VALUE in every row, e.g. logs.service=checkout "
                             "(repeatable)")
    parser.add_argument("--timezone", metavar="TZ",
                        help="timezone of timestamps written without one (IANA name or +HH:MM); "
                             "without it such timestamps are refused")
    parser.add_argument("--duration-unit", choices=("us", "ms", "s"),
                        help="unit of span durations (default ms)")
    add_incident_arguments(parser)
    parser.set_defaults(handler=_run)


def _assignments(items: list[str] | None, option: str) -> dict[str, dict[str, str]]:
    """TABLE.COLUMN=VALUE options as {table: {column: value}}."""
    from flipmoe.errors import FlipmoeInputError

    parsed: dict[str, dict[str, str]] = {}
    for item in items or []:
        target, equals, value = item.partition("=")
        table, dot, column = target.strip().partition(".")
        if not (equals and dot and table and column and value):
            raise FlipmoeInputError(f"{option} {item!r} is not TABLE.COLUMN=VALUE",
                                    hint=f"e.g. {option} metrics.timestamp=time")
        parsed.setdefault(table, {})[column] = value
    return parsed


def _run(args: argparse.Namespace) -> int:
    from flipmoe.cli import print_warnings
    from flipmoe.importers.csv_import import CsvMapping, import_csv, with_overrides

    base = CsvMapping.load(args.mapping) if args.mapping else CsvMapping()
    files = {table: getattr(args, table) for table in _TABLES if getattr(args, table)}
    mapping = with_overrides(base, files=files, columns=_assignments(args.map, "--map"),
                             constants=_assignments(args.const, "--const"), timezone=args.timezone,
                             duration_unit=args.duration_unit)
    warnings: list[str] = []
    out = import_csv(args.out, mapping=mapping, incident_id=args.id, alert=args.alert,
                     window=window_from_args(args), config=args.config_obj.telemetry,
                     overwrite=args.overwrite, warnings=warnings)
    print_warnings(warnings)
    print(f"wrote {out}")
    return 0
