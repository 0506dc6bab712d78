"""`flipmoe incident show DIR`: what an incident directory holds."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("incident", help="inspect incident directories",
                                   description="Inspect incident directories.")
    commands = parser.add_subparsers(dest="incident_command", metavar="SUBCOMMAND", required=True)
    show = commands.add_parser(
        "show", help="summarise an incident directory",
        description="Validate an incident directory and summarise it: alert, window, modalities with row "
                    "counts and time ranges, services and pods, baseline, topology. label.json is not read.")
    show.add_argument("incident_dir", metavar="DIR", help="incident directory")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.set_defaults(handler=_show)


def summarise(incident: Any) -> dict[str, Any]:
    """A JSON-able summary of an `Incident` (no ground truth: the model holds none)."""
    def describe(telemetry: Any) -> dict[str, Any]:
        out = {}
        for name in telemetry.modalities:
            table = telemetry.table(name)
            time_col = "start" if name == "spans" else "timestamp"
            out[name] = {
                "rows": int(len(table)),
                "from": table[time_col].min().isoformat(),
                "to": table[time_col].max().isoformat(),
                "services": int(table["service"].nunique()),
            }
        return out

    return {
        "id": incident.meta.id,
        "alert": incident.meta.alert,
        "window": incident.meta.window.to_json(),
        "alert_time": incident.meta.alert_time.isoformat() if incident.meta.alert_time is not None else None,
        "source": incident.meta.source,
        "modalities": describe(incident.telemetry),
        "services": incident.telemetry.services(),
        "pods": len(incident.telemetry.pods()),
        "baseline": describe(incident.baseline) if incident.baseline is not None else None,
        "topology_edges": len(incident.topology.edges) if incident.topology is not None else None,
        "has_code": incident.code_dir is not None,
        "warnings": incident.warnings,
    }


def _show(args: argparse.Namespace) -> int:
    from flipmoe.cli import print_warnings
    from flipmoe.telemetry import read_incident

    incident = read_incident(args.incident_dir, config=args.config_obj.telemetry)
    summary = summarise(incident)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"incident  {summary['id']}")
    print(f"alert     {summary['alert']}")
    print(f"window    {summary['window']['start']} .. {summary['window']['end']}")
    if summary["source"]:
        print(f"source    {summary['source']}")
    print(f"services  {len(summary['services'])}   pods {summary['pods']}")
    if not summary["modalities"]:
        print("telemetry none")
    for name, info in summary["modalities"].items():
        print(f"{name:<9} {info['rows']:>9,} rows  {info['from']} .. {info['to']}  ({info['services']} services)")
    baseline = summary["baseline"]
    print("baseline  " + (", ".join(f"{k} {v['rows']:,}" for k, v in baseline.items()) if baseline else "none"))
    edges = summary["topology_edges"]
    print("topology  " + (f"{edges} edges" if edges is not None else "none"))
    print_warnings(summary["warnings"])
    return 0
