"""Loki connector: LogQL log queries over the HTTP API -> the canonical logs table.

`LokiClient.query_range` reads every entry of a log query in a time range. Loki answers at most `limit`
entries per request, so the range is read page by page going forward: the next page starts at the last
timestamp seen, and the entries at that timestamp that were already read are skipped (several entries
can share one nanosecond). Requests time out, transient failures are retried with backoff
(`flipmoe.net`), and every failure is a `FlipmoeInputError` naming Loki and the query.

`fetch_logs` maps stream labels onto the logs table: service, pod and level from the first present of
`loki.service_labels`, `pod_labels` and `level_labels` (structured metadata counts as labels; without a
level label the level is read off the line), node from `loki.node_labels`, returned as the pod's
placement since the logs table has no node column. `import_loki` writes them as an incident directory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from flipmoe.config import FlipmoeConfig, LokiConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.net import RetryPolicy, ServiceError, hide_in_logs, send
from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow, Topology
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.store import write_incident
from flipmoe.telemetry.validate import empty_table, normalise_table

__all__ = ["LogEntry", "LokiClient", "fetch_logs", "import_loki"]

logger = logging.getLogger(__name__)

_URL_HINT = "check --url (loki.url) and that the server is running"
# A level written in the line itself: `level=error`, `"level":"warn"`, or a bare ERROR/WARN/... word.
_LINE_LEVEL = re.compile(r"""(?i)\blevel"?\s*[=:]\s*"?([a-z]+)|\b(TRACE|DEBUG|INFO|WARN(?:ING)?|ERROR|FATAL)\b""")
_TRACE_ID_KEYS = ("trace_id", "traceID", "traceid", "trace-id")
_SPAN_ID_KEYS = ("span_id", "spanID", "spanid", "span-id")


@dataclass(frozen=True)
class LogEntry:
    """One log line and the labels of its stream (structured metadata merged in)."""

    timestamp_ns: int
    """Nanoseconds since the epoch, UTC, as Loki stores them."""
    line: str
    labels: dict[str, str]


class LokiClient:
    """A synchronous client for Loki's query API; use it as a context manager."""

    def __init__(self, config: LokiConfig | None = None) -> None:
        self.config = config or LokiConfig()
        self.service = f"Loki at {self.config.url}"
        headers, auth = _auth(self.config)
        try:
            self._http = httpx.Client(base_url=self.config.url.rstrip("/"), timeout=self.config.timeout_seconds,
                                      headers=headers, auth=auth)
        except httpx.InvalidURL as err:
            raise FlipmoeInputError(f"invalid Loki URL {self.config.url!r} ({err})", hint=_URL_HINT) from None

    def __enter__(self) -> LokiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def query_range(self, query: str, start: pd.Timestamp, end: pd.Timestamp,
                    warnings: list[str] | None = None) -> list[LogEntry]:
        """Every entry of the log query `query` in [start, end), oldest first, at most `loki.max_lines`."""
        config, warnings = self.config, warnings if warnings is not None else []
        cursor, end_ns = _ns(start), _ns(end)
        entries: list[LogEntry] = []
        at_cursor: set[tuple[Any, ...]] = set()  # entries read at timestamp `cursor`, which the next page repeats
        while cursor < end_ns:
            params = {"query": query, "start": str(cursor), "end": str(end_ns), "limit": str(config.limit),
                      "direction": "forward"}
            page = [e for e in self._page(params, query) if e.timestamp_ns < end_ns]
            fresh = [e for e in page if not (e.timestamp_ns == cursor and _key(e) in at_cursor)]
            entries.extend(fresh)
            if len(entries) >= config.max_lines:
                warnings.append(f"Loki query {query!r}: stopped at loki.max_lines ({config.max_lines}) lines, at "
                                f"{pd.Timestamp(entries[config.max_lines - 1].timestamp_ns, tz='UTC')}; narrow "
                                "the query or raise loki.max_lines")
                return entries[:config.max_lines]
            if len(page) < config.limit:
                break
            last = page[-1].timestamp_ns
            if last == cursor and not fresh:
                # More entries share this nanosecond than one page holds: the rest of it cannot be paged to.
                warnings.append(f"Loki query {query!r}: more than loki.limit ({config.limit}) lines at "
                                f"{pd.Timestamp(last, tz='UTC')}; some of them were skipped")
                cursor, at_cursor = last + 1, set()
                continue
            at_cursor = (at_cursor if last == cursor else set()) | {_key(e) for e in page if e.timestamp_ns == last}
            cursor = last
        return entries

    def _page(self, params: dict[str, str], query: str) -> list[LogEntry]:
        config = self.config
        response = send(lambda: self._http.get("/loki/api/v1/query_range", params=params), service=self.service,
                        what=f"query {query!r}", hint=_URL_HINT,
                        timeout_hint="raise loki.timeout_seconds, shorten the window or narrow the query",
                        policy=RetryPolicy(retries=config.retries, backoff_s=config.retry_backoff_seconds,
                                           timeout_s=config.timeout_seconds))
        try:
            body = parse_json(response.content)
        except JsonInputError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            raise self._refusal(response, query)
        data = body.get("data")
        if body.get("status") != "success" or not isinstance(data, dict):
            raise ServiceError(self.service, f"{self.service} did not answer query {query!r} with data "
                                             f"(status {body.get('status')!r})", hint=_URL_HINT)
        if data.get("resultType") != "streams":
            raise FlipmoeInputError(f"Loki query {query!r} is a metric query (it returned {data.get('resultType')!r}); "
                                    "give a log query: a stream selector with optional filters, e.g. "
                                    '{namespace="prod"} |= "error"')
        try:
            return sorted(_entries(data.get("result") or []), key=lambda e: e.timestamp_ns)
        except (TypeError, ValueError, AttributeError) as err:
            raise ServiceError(self.service, f"{self.service}: the answer to query {query!r} is not a well-formed "
                                             f"list of streams ({err})", hint=_URL_HINT) from None

    def _refusal(self, response: httpx.Response, query: str) -> FlipmoeInputError:
        # Loki answers a bad query with 400 and a plain-text reason; a JSON body may carry it as `message`/`error`.
        text = response.text.strip()
        try:
            body = parse_json(response.content)
        except JsonInputError:
            body = None
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error") or text)
        reason = (text.splitlines() or [""])[0][:300]
        if response.status_code == 400:
            return FlipmoeInputError(f"Loki rejected query {query!r}: {reason}", hint="fix the LogQL")
        if response.status_code in (401, 403):
            return ServiceError(self.service, f"{self.service} refused the credentials (HTTP {response.status_code})",
                                hint="check loki.username/password, loki.token or loki.tenant")
        return ServiceError(self.service, f"{self.service} answered query {query!r} with HTTP "
                                          f"{response.status_code}{': ' + reason if reason else ''}", hint=_URL_HINT)


def _auth(config: LokiConfig) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    headers = {"X-Scope-OrgID": config.tenant} if config.tenant else {}
    if config.token.is_set:
        token = config.token.read("loki.token")
        hide_in_logs(token)
        headers["Authorization"] = f"Bearer {token}"
    auth = None
    if config.username:
        password = config.password.read("loki.password")
        hide_in_logs(password)
        auth = httpx.BasicAuth(config.username, password)
    return headers, auth


def _ns(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value)


def _key(entry: LogEntry) -> tuple[Any, ...]:
    return entry.timestamp_ns, entry.line, tuple(sorted(entry.labels.items()))


def _entries(result: list[Any]) -> list[LogEntry]:
    entries = []
    for stream in result:
        labels = {str(k): str(v) for k, v in dict(stream.get("stream") or {}).items()}
        for value in stream.get("values") or []:
            # [ts, line] or, with structured metadata (Loki 3), [ts, line, {name: value}].
            metadata = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
            merged = {**labels, **{str(k): str(v) for k, v in metadata.items() if not isinstance(v, dict)}}
            entries.append(LogEntry(timestamp_ns=int(value[0]), line=str(value[1]), labels=merged))
    return entries


def fetch_logs(queries: Sequence[str], window: TimeWindow, *, config: FlipmoeConfig | None = None,
               warnings: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run each LogQL log query over `window`; returns the logs table and the pods' placement (pod -> node).

    A stream without any of `loki.service_labels` belongs to no service and is dropped with a warning;
    blank lines are dropped. Entries several queries return are kept once.
    """
    config = config or FlipmoeConfig()
    loki, warnings = config.loki, warnings if warnings is not None else []
    if not queries:
        raise FlipmoeInputError("no Loki queries given", hint="pass --query LOGQL or set loki.queries")
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    placement: dict[str, str] = {}
    with LokiClient(loki) as client:
        for query in queries:
            entries = client.query_range(query, window.start, window.end, warnings)
            if not entries:
                warnings.append(f"Loki query {query!r} returned no lines between {window.start} and {window.end}")
            unplaced = 0
            for entry in entries:
                service = _first(entry.labels, loki.service_labels)
                if service is None:
                    unplaced += 1
                    continue
                if not entry.line.strip():
                    continue
                pod = _first(entry.labels, loki.pod_labels)
                node = _first(entry.labels, loki.node_labels)
                if pod and node:
                    placement[pod] = node
                rows.setdefault(_key(entry), {
                    "timestamp": entry.timestamp_ns, "service": service, "pod": pod,
                    "level": _first(entry.labels, loki.level_labels) or _line_level(entry.line),
                    "message": entry.line, "trace_id": _first(entry.labels, _TRACE_ID_KEYS),
                    "span_id": _first(entry.labels, _SPAN_ID_KEYS)})
            if unplaced:
                warnings.append(f"Loki query {query!r}: dropped {unplaced} line(s) from streams with none of the "
                                f"labels {', '.join(loki.service_labels)} (set loki.service_labels)")
    if not rows:
        return empty_table("logs"), placement
    frame = pd.DataFrame(list(rows.values()))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ns", utc=True)
    table = normalise_table(frame.sort_values("timestamp", kind="stable"), "logs",
                            source=f"Loki at {loki.url}", config=config.telemetry, warnings=warnings)
    return table, placement


def _first(labels: dict[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _line_level(line: str) -> str:
    found = _LINE_LEVEL.search(line[:300])
    return (found.group(1) or found.group(2)) if found else "UNKNOWN"


def import_loki(
    queries: Sequence[str],
    out: str | Path,
    *,
    window: TimeWindow,
    incident_id: str | None = None,
    alert: str | None = None,
    config: FlipmoeConfig | None = None,
    overwrite: bool = False,
    warnings: list[str] | None = None,
) -> Path:
    """Fetch the lines of `queries` in `window` (see `fetch_logs`) and write a logs-only incident directory.

    The id defaults to the directory name. Raises `FlipmoeInputError` when the queries return no line.
    """
    config = config or FlipmoeConfig()
    warnings = warnings if warnings is not None else []
    out = Path(out)
    if out.exists() and not overwrite:
        # Checked before querying: a long fetch should not end in "already exists".
        raise FlipmoeInputError("already exists", path=out, hint="choose another --out or remove it")
    logs, placement = fetch_logs(queries, window, config=config, warnings=warnings)
    if logs.empty:
        raise FlipmoeInputError(f"the queries returned no lines between {window.start} and {window.end} from "
                                f"{config.loki.url}", hint="try them in Grafana's Explore over the same (UTC) window")
    meta = IncidentMeta(id=incident_id or out.absolute().name,
                        alert=alert or f"Loki logs: {', '.join(queries)}", window=window,
                        source=f"loki {config.loki.url}")
    topology = Topology(services=sorted(set(logs["service"])), placement=placement) if placement else None
    incident = Incident(meta=meta, telemetry=Telemetry(logs=logs), topology=topology)
    return write_incident(incident, out, overwrite=overwrite)
