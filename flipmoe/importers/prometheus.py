"""Prometheus connector: PromQL range queries over the HTTP API -> the canonical metrics table.

`PrometheusClient` speaks `/api/v1` (`query_range`, `series`, label values). It splits long ranges
so that no request asks for more than `prometheus.max_points_per_series` points (Prometheus refuses
more than 11,000 per series), retries transient failures, and turns every failure into a
`FlipmoeInputError` that names the query and repeats the server's message. `fetch_metrics` maps
the series onto metrics rows (timestamp, service, pod, node, metric, value) and
`import_prometheus` writes them as an incident directory.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from flipmoe.config import FlipmoeConfig, PrometheusConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.net import RetryPolicy, hide_in_logs, send
from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow, utc_timestamp
from flipmoe.telemetry.json_input import JsonInputError, parse_json
from flipmoe.telemetry.store import write_incident
from flipmoe.telemetry.validate import empty_table, normalise_table

__all__ = ["PrometheusClient", "Queries", "RangeSeries", "fetch_metrics", "import_prometheus"]

logger = logging.getLogger(__name__)

Queries = Mapping[str, str] | Sequence[str]
"""Metric name -> PromQL, or a list of PromQL (series then named by `__name__` or the query text)."""

_Identity = tuple[str, str | None, str | None, str]
"""(service, pod, node, metric) of one series in the metrics table."""

_TRANSIENT_STATUS = frozenset({502, 503, 504})
_URL_HINT = "check --url (prometheus.url) and that the server is running"


@dataclass(frozen=True, eq=False)  # `==` on arrays is elementwise, so no generated __eq__
class RangeSeries:
    """One series of a range query: its labels and its samples, in time order."""

    labels: dict[str, str]
    """All labels Prometheus returned, `__name__` included when the expression kept it."""
    timestamps_ms: np.ndarray
    """int64 [N]: evaluation times, milliseconds since the epoch (UTC)."""
    values: np.ndarray
    """float64 [N]: sample values; NaN and +-Inf are kept as Prometheus returned them."""


class PrometheusClient:
    """A synchronous client for Prometheus's HTTP API; use it as a context manager."""

    def __init__(self, config: PrometheusConfig | None = None) -> None:
        self.config = config or PrometheusConfig()
        url = self.config.url
        try:
            self._http = httpx.Client(base_url=url.rstrip("/"), timeout=self.config.timeout_seconds,
                                      headers=_auth_headers(self.config))
        except httpx.InvalidURL as err:
            raise FlipmoeInputError(f"invalid Prometheus URL {url!r} ({err})", hint=_URL_HINT) from None

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def query_range(self, query: str, start: Any, end: Any, step: float | None = None) -> list[RangeSeries]:
        """Evaluate `query` at start, start + step, ... up to `end` inclusive (Prometheus's convention).

        `start` and `end` are timezone-aware timestamps (or ISO strings with an offset); `step` is in
        seconds and defaults to `prometheus.step_seconds`. Ranges with more than
        `max_points_per_series` evaluation times are fetched in chunks on the same step grid, so
        the stitched series repeat no point.
        """
        step_seconds = self.config.step_seconds if step is None else step
        step_ms = round(step_seconds * 1000)
        if step_ms < 1:
            raise FlipmoeInputError(f"step {step_seconds} s is below Prometheus's 1 ms resolution",
                                    hint="use a positive --step")
        start_ms, end_ms = _epoch_ms(start, "start"), _epoch_ms(end, "end")
        if end_ms < start_ms:
            raise FlipmoeInputError(f"query {query!r}: end {end} is before start {start}")
        # Also sent to the server, so that it abandons a query this client has stopped waiting for.
        timeout = _seconds(round(self.config.timeout_seconds * 1000))
        chunks: dict[tuple[tuple[str, str], ...], list[RangeSeries]] = {}
        for chunk_start, chunk_end in _chunks(start_ms, end_ms, step_ms, self.config.max_points_per_series):
            params = {"query": query, "start": _seconds(chunk_start), "end": _seconds(chunk_end),
                      "step": _seconds(step_ms), "timeout": timeout}
            data = self._get("/api/v1/query_range", params, what=f"query {query!r}")
            for series in _parse_matrix(data, query):
                chunks.setdefault(tuple(sorted(series.labels.items())), []).append(series)
        return [_stitch(parts) for parts in chunks.values()]

    def series(self, match: Sequence[str], start: Any, end: Any) -> list[dict[str, str]]:
        """Label sets of the series that match any of the selectors in `match` between `start` and `end`."""
        params = {"match[]": list(match), "start": _seconds(_epoch_ms(start, "start")),
                  "end": _seconds(_epoch_ms(end, "end"))}
        found = self._get("/api/v1/series", params, what=f"series {list(match)!r}")
        return [dict(labels) for labels in found]

    def label_values(self, label: str, start: Any, end: Any, match: Sequence[str] = ()) -> list[str]:
        """Sorted values of `label` between `start` and `end`, among series matching `match` if given."""
        params = {"match[]": list(match), "start": _seconds(_epoch_ms(start, "start")),
                  "end": _seconds(_epoch_ms(end, "end"))}
        return sorted(self._get(f"/api/v1/label/{label}/values", params, what=f"values of label {label!r}"))

    def _get(self, path: str, params: Mapping[str, Any], *, what: str) -> Any:
        """GET an API endpoint and return the `data` of its answer, retrying transient failures."""
        config = self.config

        def transient(response: httpx.Response) -> bool:
            # A 503 with a Prometheus error body is the server's verdict on the query, not a proxy's hiccup.
            return response.status_code in _TRANSIENT_STATUS and _json_body(response) is None

        response = send(lambda: self._http.get(path, params=params), service=f"Prometheus at {config.url}",
                        what=what, retry_if=transient, hint=_URL_HINT,
                        timeout_hint="raise prometheus.timeout_seconds, shorten the window or use a coarser --step",
                        policy=RetryPolicy(retries=config.retries, backoff_s=config.retry_backoff_seconds,
                                           timeout_s=config.timeout_seconds))
        return self._unwrap(response, _json_body(response), what)

    def _unwrap(self, response: httpx.Response, body: dict[str, Any] | None, what: str) -> Any:
        if body is None:
            raise FlipmoeInputError(
                f"{response.url.copy_with(query=None)} answered HTTP {response.status_code} with something "
                "that is not a Prometheus API response",
                hint="--url must be the server's base URL, e.g. http://prometheus:9090")
        if body.get("status") != "success":
            raise FlipmoeInputError(f"Prometheus rejected {what}: {body.get('errorType', 'error')}: "
                                    f"{body.get('error', 'no message')}")
        warnings = body.get("warnings")
        for warning in warnings if isinstance(warnings, list) else []:
            logger.warning("Prometheus, %s: %s", what, warning)
        return body.get("data")


def _auth_headers(config: PrometheusConfig) -> dict[str, str]:
    if not config.token.is_set:
        return {}
    token = config.token.read("prometheus.token")
    hide_in_logs(token)
    return {"Authorization": f"Bearer {token}"}


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    """The response's JSON object when it is a Prometheus API answer (success or error), else None."""
    try:
        body = parse_json(response.content)
    except JsonInputError:
        return None
    return body if isinstance(body, dict) and "status" in body else None


def _epoch_ms(value: Any, what: str) -> int:
    return utc_timestamp(value, what=what).value // 1_000_000


def _seconds(ms: int) -> str:
    # Exact decimal text: float seconds could round a chunk boundary off the step grid.
    return f"{ms // 1000}.{ms % 1000:03d}"


def _chunks(start_ms: int, end_ms: int, step_ms: int, max_points: int) -> Iterator[tuple[int, int]]:
    """Split [start, end] into ranges of at most `max_points` evaluation times on one step grid."""
    span_ms = step_ms * (max_points - 1)
    chunk_start = start_ms
    while chunk_start <= end_ms:
        yield chunk_start, min(chunk_start + span_ms, end_ms)
        chunk_start += span_ms + step_ms


def _parse_matrix(data: Any, query: str) -> list[RangeSeries]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise FlipmoeInputError(f"query {query!r} returned {kind!r}, not a matrix of series")
    try:
        return [_series(item, query) for item in data.get("result") or []]
    except (TypeError, ValueError, AttributeError, OverflowError) as err:
        raise FlipmoeInputError(f"query {query!r}: the answer is not a well-formed matrix ({err})",
                                hint="--url must point at a Prometheus-compatible query API") from None


def _series(item: dict[str, Any], query: str) -> RangeSeries:
    if "histograms" in item:
        logger.warning("query %r: native histogram samples skipped; query histogram_quantile() or "
                       "the classic _bucket series instead", query)
    values = item.get("values") or []
    # Prometheus writes values as strings ("NaN", "+Inf" included), which float() reads as they are.
    return RangeSeries(
        labels={str(name): str(value) for name, value in dict(item.get("metric") or {}).items()},
        timestamps_ms=np.array([round(float(ts) * 1000) for ts, _ in values], dtype=np.int64),
        values=np.array([float(value) for _, value in values], dtype=np.float64),
    )


def _stitch(parts: list[RangeSeries]) -> RangeSeries:
    """One series from its chunks, which come in time order and cover disjoint grid points."""
    if len(parts) == 1:
        return parts[0]
    return RangeSeries(labels=parts[0].labels,
                       timestamps_ms=np.concatenate([p.timestamps_ms for p in parts]),
                       values=np.concatenate([p.values for p in parts]))


def fetch_metrics(queries: Queries, window: TimeWindow, *, config: FlipmoeConfig | None = None,
                  warnings: list[str] | None = None) -> pd.DataFrame:
    """Run each query over `window` and return the canonical metrics table.

    The window is half-open like `TimeWindow`: queries are evaluated at start, start + step, ...
    before end, with step `prometheus.step_seconds`.

    Labels become columns: `service`, `pod` and `node` come from the labels named by
    `prometheus.service_label`, `pod_label` and `node_label`. A series without the service label
    falls back to its `job` label and one without the pod label to its `instance` label, the labels
    every Prometheus scrape attaches. The metric is the query's name (for a list of queries: the
    series' `__name__`, or the query text when the expression dropped it, as `rate()` does), and
    every remaining label is folded into it in sorted order, `name{code=500,method=GET}`, so
    distinct series stay distinct. A series with neither a service label nor `job` (say,
    `sum(...)` without `by (service)`) belongs to no service and is dropped with a warning.
    Warnings about dropped or empty series are appended to `warnings`.
    """
    config = config or FlipmoeConfig()
    warnings = warnings if warnings is not None else []
    last = window.end - pd.Timedelta(milliseconds=1)
    placed: list[tuple[_Identity, RangeSeries]] = []
    with PrometheusClient(config.prometheus) as client:
        for name, query in _named_queries(queries):
            series = client.query_range(query, window.start, last)
            if not series:
                warnings.append(f"query {query!r} returned no series between {window.start} and {window.end}")
            placed.extend(_place(series, name=name, query=query, config=config.prometheus, warnings=warnings))
    if not placed:
        return empty_table("metrics")
    return normalise_table(_rows(placed), "metrics", source=f"Prometheus at {config.prometheus.url}",
                           config=config.telemetry, warnings=warnings)


def _named_queries(queries: Queries) -> list[tuple[str | None, str]]:
    """(metric name or None, PromQL) pairs; a bare string is one query."""
    if isinstance(queries, str):
        queries = [queries]
    pairs: list[tuple[str | None, str]] = (
        list(queries.items()) if isinstance(queries, Mapping) else [(None, query) for query in queries])
    if not pairs:
        raise FlipmoeInputError("no Prometheus queries given",
                                hint="pass --query NAME=PROMQL or --queries FILE")
    for name, query in pairs:
        if not isinstance(query, str) or not query.strip():
            raise FlipmoeInputError(f"query {name or ''!r} is empty; give it a PromQL expression")
    return pairs


def _place(series: list[RangeSeries], *, name: str | None, query: str, config: PrometheusConfig,
           warnings: list[str]) -> list[tuple[_Identity, RangeSeries]]:
    """Each series with its (service, pod, node, metric) identity; series without a service dropped."""
    candidates = []
    for one in series:
        labels = dict(one.labels)
        base = name or labels.get("__name__") or query
        labels.pop("__name__", None)
        # `or` so that a fallback label is consumed only when the configured one is absent.
        service = labels.pop(config.service_label, None) or labels.pop("job", None)
        pod = labels.pop(config.pod_label, None) or labels.pop("instance", None)
        node = labels.pop(config.node_label, None)
        if service is not None:
            candidates.append(((service, pod, node, _fold(base, labels)), base, one))
    dropped = len(series) - len(candidates)
    if dropped:
        warnings.append(f"query {query!r}: dropped {dropped} series with neither a '{config.service_label}' "
                        f"nor a 'job' label (aggregate with 'by ({config.service_label})', or set "
                        "prometheus.service_label)")
    # The fallbacks can give two series one identity (one labelled service=x, one job=x), and a named
    # query can return several metrics; such series are named by their full label sets instead.
    counts = Counter(identity for identity, _, _ in candidates)
    return [(identity if counts[identity] == 1 else (*identity[:3], _fold(base, one.labels)), one)
            for identity, base, one in candidates]


def _fold(base: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return base
    return base + "{" + ",".join(f"{key}={labels[key]}" for key in sorted(labels)) + "}"


def _rows(placed: list[tuple[_Identity, RangeSeries]]) -> pd.DataFrame:
    lengths = [len(one.values) for _, one in placed]
    identities = np.array([identity for identity, _ in placed], dtype=object).reshape(len(placed), 4)
    timestamps_ms = np.concatenate([one.timestamps_ms for _, one in placed])
    return pd.DataFrame({
        "timestamp": pd.to_datetime(timestamps_ms, unit="ms", utc=True),
        "service": np.repeat(identities[:, 0], lengths),
        "pod": np.repeat(identities[:, 1], lengths),
        "node": np.repeat(identities[:, 2], lengths),
        "metric": np.repeat(identities[:, 3], lengths),
        "value": np.concatenate([one.values for _, one in placed]),
    })


def import_prometheus(
    queries: Queries,
    out: str | Path,
    *,
    window: TimeWindow,
    incident_id: str | None = None,
    alert: str | None = None,
    baseline_window: TimeWindow | None = None,
    config: FlipmoeConfig | None = None,
    overwrite: bool = False,
    warnings: list[str] | None = None,
) -> Path:
    """Fetch `queries` (see `fetch_metrics`) and write a metrics-only incident directory at `out`.

    Like the other importers, metrics start `imports.history_minutes` before the window so that
    detectors have history to compare the window with. `baseline_window`, a fault-free period,
    goes to `baseline/`. The id defaults to the directory name. Raises `FlipmoeInputError` when
    the queries return no sample inside the window.
    """
    config = config or FlipmoeConfig()
    warnings = warnings if warnings is not None else []
    out = Path(out)
    if out.exists() and not overwrite:
        # Checked before querying: a long fetch should not end in "already exists".
        raise FlipmoeInputError("already exists", path=out, hint="choose another --out or remove it")
    history = TimeWindow(window.start - pd.Timedelta(minutes=config.imports.history_minutes), window.end)
    metrics = fetch_metrics(queries, history, config=config, warnings=warnings)
    if not (metrics["timestamp"] >= window.start).any():
        raise FlipmoeInputError(f"the queries returned no samples between {window.start} and {window.end} "
                                f"from {config.prometheus.url}",
                                hint="try them in the Prometheus UI over the same (UTC) window")
    baseline = None
    if baseline_window is not None:
        baseline_metrics = fetch_metrics(queries, baseline_window, config=config, warnings=warnings)
        baseline = Telemetry(metrics=baseline_metrics)
        if baseline.metrics is None:
            warnings.append(f"the baseline window {baseline_window.start} .. {baseline_window.end} has no "
                            "samples; no baseline written")
    names = [name or query for name, query in _named_queries(queries)]
    meta = IncidentMeta(id=incident_id or out.name, alert=alert or f"Prometheus metrics: {', '.join(names)}",
                        window=window, source=f"prometheus {config.prometheus.url}")
    incident = Incident(meta=meta, telemetry=Telemetry(metrics=metrics), baseline=baseline)
    return write_incident(incident, out, overwrite=overwrite)
