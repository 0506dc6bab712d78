"""Query generation for observability back-ends: PromQL (Prometheus) and LogQL (Loki) text.

For a suspect (a service, maybe a pod, node, metric and log template) the report lists the queries an
on-call engineer would paste into Grafana next: the suspect's own metric, its golden signals
(request rate, 5xx ratio, p95 latency from a histogram), its pod's resources (CPU, memory, restarts),
its node's CPU, its error log lines and the rate of its log template.

Label and metric names follow the Prometheus / kube-state-metrics / cAdvisor conventions by default
and are settings (`QueryNames`), because every installation relabels differently. Metric names that
are not valid PromQL identifiers (Nezha's `PodClientLatencyP90(s)`) are selected through
`{__name__="..."}`. Every label value is escaped, so a name from telemetry cannot break out of its
string. `validate_promql` parses queries with the real Prometheus parser (`promtool check rules`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from flipmoe.telemetry.incident import TimeWindow
from flipmoe.toolkits.rootcause import RootCause

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_WILDCARD = "<*>"
_MIN_LITERAL = 4
"""A template fragment shorter than this is too unspecific for a line filter."""


@dataclass(frozen=True, kw_only=True)
class QueryNames:
    """Label and metric names of the target installation."""

    service_label: str = "service"
    pod_label: str = "pod"
    node_label: str = "node"
    status_label: str = "status"
    """Label with the HTTP status code (`code` in many client libraries)."""
    requests_total: str = "http_requests_total"
    duration_bucket: str = "http_request_duration_seconds_bucket"
    cpu_seconds: str = "container_cpu_usage_seconds_total"
    memory_bytes: str = "container_memory_working_set_bytes"
    restarts: str = "kube_pod_container_status_restarts_total"
    node_cpu_seconds: str = "node_cpu_seconds_total"
    log_stream_labels: tuple[str, ...] = ("service", "pod")
    """Loki stream labels the suspect's service and pod map to (same order: service, pod)."""

    def __post_init__(self) -> None:
        names = (self.service_label, self.pod_label, self.node_label, self.status_label, *self.log_stream_labels)
        bad = [n for n in names if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", n)]
        if bad:
            from flipmoe.errors import FlipmoeInputError

            raise FlipmoeInputError(f"invalid label name(s) {', '.join(map(repr, bad))}",
                                    hint="label names are letters, digits and '_', not starting with a digit")


@dataclass(frozen=True, kw_only=True)
class QuerySet:
    """Queries for one window: PromQL and LogQL text plus the time range to run them over."""

    promql: list[str] = field(default_factory=list)
    logql: list[str] = field(default_factory=list)
    start: str | None = None
    end: str | None = None
    range: str = "5m"
    """The range of the range vectors (`[5m]`)."""

    def as_report(self) -> dict[str, list[str]]:
        """The `RcaReport.queries` form."""
        return {"promql": list(self.promql), "logql": list(self.logql)}


def quote(value: str) -> str:
    """A PromQL / LogQL double-quoted string literal (Go escaping) for `value`."""
    return json.dumps(value, ensure_ascii=False)


def range_for(window: TimeWindow | None, *, default: str = "5m") -> str:
    """A range-vector duration that suits the window: about a tenth of it, between 1m and 1h."""
    if window is None:
        return default
    minutes = window.duration / pd.Timedelta(minutes=1) / 10
    return f"{int(min(60, max(1, math.ceil(minutes))))}m"


def selector(metric: str, matchers: dict[str, str] | None = None, *, regex: dict[str, str] | None = None) -> str:
    """`metric{label="value",...}`; names that are not PromQL identifiers go into `__name__`."""
    parts = [f"{k}={quote(v)}" for k, v in (matchers or {}).items()]
    parts += [f"{k}=~{quote(v)}" for k, v in (regex or {}).items()]
    if _METRIC_NAME.match(metric):
        return f"{metric}{{{','.join(parts)}}}"
    return "{" + ",".join([f"__name__={quote(metric)}", *parts]) + "}"


def promql_queries(suspect: RootCause, *, range_: str = "5m", names: QueryNames | None = None) -> list[str]:
    """PromQL for a suspect: its own metric, golden signals, pod resources, node CPU."""
    n = names or QueryNames()
    r = range_
    service = {n.service_label: suspect.service}
    queries: list[str] = []
    if suspect.metric:
        where = {**service, **({n.pod_label: suspect.pod} if suspect.pod else {})}
        queries.append(_metric_query(suspect.metric, where, r))
    requests = selector(n.requests_total, service)
    errors = selector(n.requests_total, service, regex={n.status_label: "5.."})
    queries += [
        f"sum by ({n.pod_label}) (rate({requests}[{r}]))",
        f"sum(rate({errors}[{r}])) / sum(rate({requests}[{r}]))",
        f"histogram_quantile(0.95, sum by (le) (rate({selector(n.duration_bucket, service)}[{r}])))",
    ]
    if suspect.pod:
        pod = {n.pod_label: suspect.pod}
        queries += [
            f"sum(rate({selector(n.cpu_seconds, pod)}[{r}]))",
            f"max({selector(n.memory_bytes, pod)})",
            f"sum(increase({selector(n.restarts, pod)}[{r}]))",
        ]
    if suspect.node:
        idle = selector(n.node_cpu_seconds, {n.node_label: suspect.node, "mode": "idle"})
        queries.append(f"1 - avg(rate({idle}[{r}]))")
    return _unique(queries)


def _metric_query(metric: str, where: dict[str, str], r: str) -> str:
    sel = selector(metric, where)
    # A raw counter only means something as a rate; recording rules (`a:b:rate1m`) and gauges as they are.
    if metric.endswith(("_total", "_count", "_sum")) and ":" not in metric:
        return f"rate({sel}[{r}])"
    if metric.endswith("_bucket") and ":" not in metric:
        return f"histogram_quantile(0.95, sum by (le) (rate({sel}[{r}])))"
    return sel


def logql_queries(suspect: RootCause, *, range_: str = "5m", names: QueryNames | None = None) -> list[str]:
    """LogQL for a suspect: its error lines, their rate per pod, and its log template's lines and rate."""
    n = names or QueryNames()
    r = range_
    service_label, pod_label = (n.log_stream_labels + ("pod",))[:2]
    labels = {service_label: suspect.service, **({pod_label: suspect.pod} if suspect.pod else {})}
    stream = "{" + ", ".join(f"{k}={quote(v)}" for k, v in labels.items()) + "}"
    errors = f'{stream} |~ "(?i)(error|exception|fatal|timeout)"'
    queries = [errors, f"sum by ({pod_label}) (count_over_time({errors} [{r}]))"]
    if suspect.log_pattern:
        filtered = template_filter(stream, suspect.log_pattern)
        if filtered is not None:
            queries += [filtered, f"sum(count_over_time({filtered} [{r}]))"]
    return _unique(queries)


def template_filter(stream: str, template: str) -> str | None:
    """`{stream} |= "longest literal" | pattern "..."` matching lines of a mined template; None when
    the template has no literal text to filter on."""
    literals = [part.strip() for part in template.split(_WILDCARD)]
    longest = max(literals, key=len, default="")
    if len(longest) < _MIN_LITERAL:
        return None
    query = f"{stream} |= {quote(longest)}"
    if _WILDCARD in template:
        # LogQL's pattern parser: `<_>` is an unnamed capture; `<` and `>` elsewhere cannot be escaped,
        # so templates holding them get the line filter only.
        body = template.replace(_WILDCARD, "\x00")
        if "<" not in body and ">" not in body and "\x00\x00" not in body:
            query += f" | pattern {quote(body.replace(chr(0), '<_>'))}"
    return query


def queries_for(suspects: Sequence[RootCause], *, window: TimeWindow | None = None,
                names: QueryNames | None = None) -> QuerySet:
    """Queries for every suspect (most suspect first), without repeats."""
    r = range_for(window)
    promql: list[str] = []
    logql: list[str] = []
    for suspect in suspects:
        promql += promql_queries(suspect, range_=r, names=names)
        logql += logql_queries(suspect, range_=r, names=names)
    window_json = window.to_json() if window is not None else {}
    return QuerySet(promql=_unique(promql), logql=_unique(logql), start=window_json.get("start"),
                    end=window_json.get("end"), range=r)


def validate_promql(queries: Iterable[str]) -> dict[str, str | None] | None:
    """Parse each query with Prometheus's own parser (`promtool check rules`): query -> error text,
    or None when it parses. Returns None when promtool is not installed."""
    promtool = shutil.which("promtool")
    queries = list(dict.fromkeys(queries))
    if promtool is None:
        return None
    if not queries:
        return {}
    rules = {"groups": [{"name": "flipmoe", "rules": [{"record": f"flipmoe:q{i}", "expr": q}
                                                     for i, q in enumerate(queries)]}]}
    with tempfile.TemporaryDirectory(prefix="flipmoe-promql-") as tmp:
        path = Path(tmp) / "rules.yml"
        path.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML: no quoting pitfalls
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                              timeout=60)
    errors: dict[str, str | None] = {q: None for q in queries}
    for match in re.finditer(r'rule (\d+), "flipmoe:q\d+": (.*)', done.stdout + done.stderr):
        errors[queries[int(match.group(1)) - 1]] = match.group(2).strip()
    if done.returncode != 0 and all(e is None for e in errors.values()):
        raise RuntimeError(f"promtool check rules failed: {(done.stdout + done.stderr).strip()[-500:]}")
    return errors


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
