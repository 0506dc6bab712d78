"""The `flipmoe` command.

Each subcommand group lives in its own module with a `register(subparsers)` function; handlers
import heavy dependencies lazily so `flipmoe --help` stays fast. Exit codes: 0 ok, 2 bad usage or
bad input (a `FlipmoeInputError` becomes one line on stderr, never a stack trace), 1 other failures.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from flipmoe.errors import FlipmoeInputError

# Subcommand modules, in the order `--help` lists them.
_COMMAND_MODULES = (
    "flipmoe.cli._bundle",
    "flipmoe.cli._chaos",
    "flipmoe.cli._demo",
    "flipmoe.cli._detect",
    "flipmoe.cli._data",
    "flipmoe.cli._eval",
    "flipmoe.cli._import",
    "flipmoe.cli._incident",
    "flipmoe.cli._logs",
    "flipmoe.cli._rca",
    "flipmoe.cli._serve",
    "flipmoe.cli._train",
    "flipmoe.cli._version",
)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flipmoe",
        description="Root-cause analysis of production incidents with a mixture of modality experts.",
        epilog="Run 'flipmoe COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--config", metavar="YAML", help="flipmoe configuration file (defaults apply otherwise)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def load_config(path: str | None):  # type: ignore[no-untyped-def]
    from flipmoe.config import FlipmoeConfig

    return FlipmoeConfig.load(path) if path else FlipmoeConfig()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.config_obj = load_config(args.config)
        return int(args.handler(args) or EXIT_OK)
    except FlipmoeInputError as err:
        print(f"flipmoe: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("flipmoe: interrupted", file=sys.stderr)
        return 130


def print_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
