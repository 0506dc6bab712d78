"""`flipmoe version`."""

from __future__ import annotations

import argparse
import platform


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("version", help="print flipmoe's version and its key dependencies",
                                   description="Print flipmoe's version, Python's, and those of key dependencies.")
    parser.add_argument("--short", action="store_true", help="print only flipmoe's version")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    import flipmoe

    print(f"flipmoe {flipmoe.__version__}")
    if args.short:
        return 0
    print(f"python {platform.python_version()}")
    for package in ("torch", "transformers", "ray", "pandas", "pyarrow"):
        try:
            print(f"{package} {version(package)}")
        except PackageNotFoundError:
            print(f"{package} (not installed)")
    return 0
