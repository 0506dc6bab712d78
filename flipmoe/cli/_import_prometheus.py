"""`flipmoe import prometheus`: PromQL range queries -> a metrics-only incident directory."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from flipmoe.errors import FlipmoeInputError

# NAME=PROMQL; "==" is a PromQL comparison and "{...=" a label matcher, never a name.
_NAMED_QUERY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.:-]*)\s*=(?!=)(.*)", re.DOTALL)

_EXAMPLES = """\
examples:
  flipmoe import prometheus --url http://prometheus:9090 \\
      --query 'cpu=rate(container_cpu_usage_seconds_total[1m])' \\
      --query 'errors=sum by (service, pod) (rate(http_requests_total{code=~"5.."}[1m]))' \\
      --start 2024-05-01T10:00:00Z --end 2024-05-01T10:30:00Z --out incidents/checkout-slow

  --queries FILE holds a YAML mapping NAME: PROMQL (or a list of PROMQL).

Series labels become columns: service (label prometheus.service_label, else job), pod
(prometheus.pod_label, else instance), node (prometheus.node_label); every other label is folded
into the metric name, e.g. errors{code=500}. Series with neither a service label nor job are dropped.
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prometheus", help="run PromQL range queries against a Prometheus server",
        description="Run PromQL range queries against a Prometheus server over the incident window and\n"
                    "write the series as a metrics-only incident directory. Metrics start\n"
                    "import.history_minutes (config) before --start, as history for the detectors.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="Prometheus base URL (default: prometheus.url of the config, "
                                      "http://127.0.0.1:9090)")
    parser.add_argument("--query", action="append", default=[], metavar="NAME=PROMQL",
                        help="a query and the metric name its series get; repeat for more queries. A bare "
                             "PROMQL names each series by its __name__ (or by the query text)")
    parser.add_argument("--queries", metavar="YAML",
                        help="file of queries: a mapping NAME: PROMQL, or a list")
    parser.add_argument("--start", required=True, metavar="ISO",
                        help="incident window start, with a timezone, e.g. 2024-05-01T10:00:00Z")
    parser.add_argument("--end", required=True, metavar="ISO", help="incident window end (exclusive)")
    parser.add_argument("--step", type=float, metavar="S",
                        help="query resolution in seconds (default: prometheus.step_seconds, 15)")
    parser.add_argument("--baseline-start", metavar="ISO",
                        help="start of a fault-free window written to baseline/")
    parser.add_argument("--baseline-end", metavar="ISO", help="end of the fault-free window")
    parser.add_argument("--out", required=True, metavar="DIR", help="incident directory to create")
    parser.add_argument("--id", help="incident id (default: the name of --out)")
    parser.add_argument("--alert", help="alert text (default: lists the queries)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from flipmoe.cli import print_warnings
    from flipmoe.importers.prometheus import import_prometheus
    from flipmoe.telemetry import TimeWindow

    overrides = {key: value for key, value in (("url", args.url), ("step_seconds", args.step))
                 if value is not None}
    config = replace(args.config_obj, prometheus=replace(args.config_obj.prometheus, **overrides))
    if (args.baseline_start is None) != (args.baseline_end is None):
        raise FlipmoeInputError("give both --baseline-start and --baseline-end, or neither")
    baseline = TimeWindow(args.baseline_start, args.baseline_end) if args.baseline_start else None
    warnings: list[str] = []
    path = import_prometheus(_queries(args), args.out, window=TimeWindow(args.start, args.end),
                             incident_id=args.id, alert=args.alert, baseline_window=baseline,
                             config=config, overwrite=args.overwrite, warnings=warnings)
    print_warnings(warnings)
    print(f"wrote {path}")
    return 0


def _queries(args: argparse.Namespace) -> dict[str, str] | list[str]:
    """--queries then --query as one mapping (all named) or one list (none named)."""
    entries = _read_queries_file(Path(args.queries)) if args.queries else []
    for text in args.query:
        named = _NAMED_QUERY.fullmatch(text)
        entries.append((named.group(1), named.group(2).strip()) if named else (None, text))
    if not entries:
        raise FlipmoeInputError("no queries", hint="pass --query NAME=PROMQL (repeatable) or --queries YAML")
    names = [name for name, _ in entries]
    if all(name is None for name in names):
        return [query for _, query in entries]
    if None in names:
        raise FlipmoeInputError("name every query (NAME=PROMQL) or none of them",
                                hint="a name becomes the metric name of the query's series")
    repeated = sorted({str(name) for name in names if names.count(name) > 1})
    if repeated:
        raise FlipmoeInputError(f"query name(s) {', '.join(repeated)} given twice")
    return {str(name): query for name, query in entries}


def _read_queries_file(path: Path) -> list[tuple[str | None, str]]:
    import yaml

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlipmoeInputError("queries file not found", path=path) from None
    except yaml.YAMLError as err:
        raise FlipmoeInputError(f"not valid YAML ({err})", path=path) from None
    if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return list(data.items())
    if isinstance(data, list) and all(isinstance(v, str) for v in data):
        return [(None, query) for query in data]
    raise FlipmoeInputError("not a query list", path=path,
                            hint="write a mapping NAME: PROMQL, or a list of PROMQL strings")
