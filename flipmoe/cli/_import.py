"""`flipmoe import SOURCE ...`: bring external telemetry into incident directories.

Each importer has its own CLI module with a `register(commands)` function next to its library
function in `flipmoe.importers`.
"""

from __future__ import annotations

import argparse
import importlib

# One module per importer; each adds its subcommand to `flipmoe import`.
_IMPORTER_CLIS: tuple[str, ...] = (
    "flipmoe.cli._import_prometheus",
    "flipmoe.cli._import_loki",
    "flipmoe.cli._import_otlp",
    "flipmoe.cli._import_csv",
    "flipmoe.cli._import_nezha",
    "flipmoe.cli._import_tvdiag",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="import telemetry (Nezha, TVDiag, OTLP/JSON, CSV, Prometheus, Loki) into incident directories",
        description="Import external telemetry into flipmoe incident directories (see DESIGN.md). "
                    "Output is written to a temporary directory and renamed into place, so a failed "
                    "import never leaves a half-written incident.")
    commands = parser.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    for module_name in _IMPORTER_CLIS:
        importlib.import_module(module_name).register(commands)
