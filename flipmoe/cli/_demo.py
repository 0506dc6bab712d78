"""`flipmoe demo`: simulate one incident, make sure the nano model bundle is there, analyse, show the report.

The first command of the README: on a fresh machine it generates a chaos incident (with a
`label.json` the analysis never reads), builds or finds the nano bundle (skipped with --no-model
or when it cannot be had), runs the Director on a local Ray and prints where the report is — and,
since the incident is simulated, whether the top root cause matches the injected fault.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flipmoe.cli._rca import add_runtime_arguments, find_bundle, run_director
from flipmoe.config import data_home


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="simulate an incident and analyse it end to end",
        description="Generate one chaos-gym incident, ensure the nano model bundle, run the Director and print "
                    "where the RCA report is.")
    parser.add_argument("--system", default="webshop", help="simulated system (default webshop)")
    parser.add_argument("--fault", default=None, help="fault type to inject (default: chosen by the seed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulation (default 1)")
    # The demo's files are the user's to open later, not the current directory's: $XDG_DATA_HOME/flipmoe/demo.
    demo_home = data_home() / "demo"
    parser.add_argument("--incidents", default=str(demo_home / "incidents"),
                        help=f"where the incident goes (default {demo_home / 'incidents'})")
    add_runtime_arguments(parser, default_out=str(demo_home / "reports"))
    # The demo shows the whole runtime: its steps run as tasks on a local Ray (--local: in this process).
    parser.set_defaults(handler=_run, top=5, json=False, ray=True)


def _run(args: argparse.Namespace) -> int:
    from data_pipeline.chaos import generate_incident
    from flipmoe.telemetry import write_incident

    print(f"simulating a {args.system} incident (seed {args.seed})...", file=sys.stderr, flush=True)
    incident, label = generate_incident(args.system, args.fault, seed=args.seed)
    directory = write_incident(incident, Path(args.incidents) / incident.id, label=label, overwrite=True)
    print(f"incident written to {directory}", file=sys.stderr)
    bundle = find_bundle(args, build=True)
    print(f"model: {bundle if bundle else 'none (template summaries)'}", file=sys.stderr)
    code = run_director([Path(directory)], args, bundle=bundle)
    report = Path(args.out) / incident.id / "report.html"
    print(f"\nreport: {report if report.is_file() else Path(args.out) / incident.id / 'report.json'}")
    print(f"injected fault (the answer, from label.json): {label.fault_type} at {label.service}")
    return code
