"""`flipmoe rca INCIDENT_DIR...`: ranked root causes with their evidence.

This runs the analysis path (director.analysis) in-process. The Director / Actor runtime on Ray,
runbooks and the HTML report build on the same path (see the README's roadmap).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rca", help="analyse incidents: ranked root causes, evidence, fault type",
        description="Analyse one or more incident directories (or a directory of them) and print the ranked "
                    "root causes (service, pod, node), the evidence behind each, the diagnosed fault type and "
                    "what could not be used. label.json is never read.")
    parser.add_argument("incidents", nargs="+", metavar="INCIDENT_DIR",
                        help="incident directories, or directories holding incident directories")
    parser.add_argument("--out", help="write <out>/<incident id>/report.json for each incident")
    parser.add_argument("--top", type=int, default=5, help="root causes to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON lines")
    parser.set_defaults(handler=_run)


def report(analysis: Any, *, top: int) -> dict[str, Any]:
    """The JSON report of one analysis: ranked causes with evidence, diagnosis, findings, timings."""
    from director.toolkits.findings import to_json

    causes = []
    for rank, cause in enumerate(analysis.localization.root_causes[:top], start=1):
        causes.append({
            "rank": rank, "service": cause.service, "pod": cause.pod, "node": cause.node,
            "score": round(cause.score, 4), "modality_scores": {k: round(v, 3) for k, v in cause.modality_scores.items()},
            "evidence": [{"modality": s.modality, "role": s.role, "strength": round(s.strength, 3),
                          "summary": s.summary, "reference": to_json(dict(s.evidence))} for s in cause.evidence],
        })
    diagnosis = analysis.diagnosis
    return {
        "incident": analysis.incident_id,
        "root_causes": causes,
        "fault_type": diagnosis.fault_type if diagnosis else None,
        "fault_type_confidence": round(diagnosis.confidence, 3) if diagnosis else None,
        "fault_type_reasons": list(diagnosis.reasons) if diagnosis else [],
        "modalities_used": list(analysis.localization.modalities),
        "notes": list(analysis.notes),
        "timings_s": {k: round(v, 3) for k, v in analysis.timings.items()},
    }


def _run(args: argparse.Namespace) -> int:
    from director.analysis import analyse_incident
    from eval.localization import find_incidents
    from flipmoe.telemetry import read_incident

    directories = [d for path in args.incidents for d in find_incidents(path)]
    for directory in directories:
        incident = read_incident(directory, config=args.config_obj.telemetry)
        result = report(analyse_incident(incident), top=args.top)
        if args.out:
            target = Path(args.out) / incident.id
            target.mkdir(parents=True, exist_ok=True)
            (target / "report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        if args.json:
            print(json.dumps(result))
        else:
            _print(result, incident.meta.alert)
    return 0


def _print(result: dict[str, Any], alert: str) -> None:
    print(f"incident {result['incident']}: {alert}")
    for cause in result["root_causes"]:
        where = " / ".join(x for x in (cause["service"], cause["pod"], cause["node"]) if x)
        print(f"  {cause['rank']}. {where}  (score {cause['score']:.2f})")
        for item in cause["evidence"][:3]:
            print(f"       - [{item['modality']}] {item['summary']}")
    if result["fault_type"]:
        print(f"  fault type: {result['fault_type']} (confidence {result['fault_type_confidence']:.2f}; "
              f"{', '.join(result['fault_type_reasons'])})")
    for note in result["notes"][:6]:
        print(f"  note: {note}")
    print(f"  analysed in {sum(result['timings_s'].values()):.2f} s using {', '.join(result['modalities_used'])}")
