"""`flipmoe import loki`: LogQL log queries -> a logs-only incident directory."""

from __future__ import annotations

import argparse
from dataclasses import replace

_EXAMPLES = """\
examples:
  flipmoe import loki --url http://loki:3100 \\
      --query '{namespace="shop", app=~"checkout|payment"}' \\
      --query '{namespace="shop"} |= "timeout"' \\
      --start 2024-05-01T10:00:00Z --end 2024-05-01T10:30:00Z --out incidents/checkout-slow

Stream labels become columns: service (first of loki.service_labels: service, service_name, app, job),
pod (loki.pod_labels: pod, instance), level (loki.level_labels, else read off the line); a node label
(loki.node_labels) becomes the pod's placement in topology.json. Lines are read page by page
(loki.limit per request), up to loki.max_lines per query.
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "loki", help="run LogQL log queries against a Loki server",
        description="Run LogQL log queries against Loki's query_range API over the incident window and\n"
                    "write the lines as a logs-only incident directory.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="Loki base URL (default: loki.url of the config, http://127.0.0.1:3100)")
    parser.add_argument("--query", action="append", default=[], metavar="LOGQL",
                        help="a log query (stream selector with optional filters); repeat for more "
                             "(default: loki.queries of the config)")
    parser.add_argument("--start", required=True, metavar="ISO",
                        help="incident window start, with a timezone, e.g. 2024-05-01T10:00:00Z")
    parser.add_argument("--end", required=True, metavar="ISO", help="incident window end (exclusive)")
    parser.add_argument("--tenant", help="X-Scope-OrgID of a multi-tenant Loki (default: loki.tenant)")
    parser.add_argument("--out", required=True, metavar="DIR", help="incident directory to create")
    parser.add_argument("--id", help="incident id (default: the name of --out)")
    parser.add_argument("--alert", help="alert text (default: lists the queries)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from flipmoe.cli import print_warnings
    from flipmoe.importers.loki import import_loki
    from flipmoe.telemetry import TimeWindow

    overrides = {key: value for key, value in (("url", args.url), ("tenant", args.tenant)) if value is not None}
    config = replace(args.config_obj, loki=replace(args.config_obj.loki, **overrides))
    warnings: list[str] = []
    path = import_loki(args.query or config.loki.queries, args.out, window=TimeWindow(args.start, args.end),
                       incident_id=args.id, alert=args.alert, config=config, overwrite=args.overwrite,
                       warnings=warnings)
    print_warnings(warnings)
    print(f"wrote {path}")
    return 0
