"""Local HTTP servers that stand in for Loki, Prometheus and webhook receivers (Slack, PagerDuty, any JSON).

Each is a real server on 127.0.0.1 and a free port, in a thread, so the code under test makes real HTTP
round trips. The telemetry doubles answer as the real APIs do — the same paths, parameters, JSON shapes
and error forms (Loki's plain-text 400 for a bad query) — over data the test gives them:

- `LokiDouble(entries)`: `/loki/api/v1/query_range` with stream selectors (`=`, `!=`, `=~`, `!~`) and `|=`
  line filters, start inclusive / end exclusive in nanoseconds, `limit` entries per answer, oldest first
  with `direction=forward`, and structured metadata as the third element of a value when given.
- `PrometheusDouble(samples)`: `/api/v1/query_range` for a selector on `__name__` and labels, evaluated on the
  step grid with Prometheus's 5-minute look-back.
- `Receiver()`: records each POST (path, headers, JSON body) and answers 200, or the statuses the test
  scripted first (`receiver.script(503, 503)`).

Every double records the requests it got (`.requests`) and can be told to fail the next N requests with a
status (`.fail(503, times=2)`). `closed_port_url()` is a URL where nothing listens; `free_port()` a port
to start a server on; `serving(app)` runs an ASGI app (flipmoe's service) under uvicorn on one.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import uvicorn


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any


class _Double:
    """A threaded HTTP server; subclasses answer in `answer(request) -> (status, content type, bytes)`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(raw) if raw and "json" in (self.headers.get("content-type") or "") else raw
                request = Request(method, url.path, params, {k.lower(): v for k, v in self.headers.items()}, body)
                with double._lock:
                    double.requests.append(request)
                    failure = double._failures.popleft() if double._failures else None
                if failure is not None:
                    status, kind, content = failure, "text/plain", f"injected failure {failure}\n".encode()
                else:
                    status, kind, content = double.answer(request)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, request: Request) -> tuple[int, str, bytes]:
        raise NotImplementedError

    def fail(self, status: int, *, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (a plain-text body)."""
        with self._lock:
            self._failures.extend([status] * times)

    def __enter__(self) -> _Double:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


# -- Loki ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LokiEntry:
    timestamp: pd.Timestamp
    line: str
    labels: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ns(self) -> int:
        return int(self.timestamp.value)


_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_LINE_FILTER = re.compile(r'\s*\|=\s*"((?:[^"\\]|\\.)*)"\s*')


class LokiDouble(_Double):
    """Loki's query_range over `entries` (see the module docstring)."""

    def __init__(self, entries: list[LokiEntry]) -> None:
        super().__init__()
        self.entries = sorted(entries, key=lambda e: e.ns)

    def answer(self, request: Request) -> tuple[int, str, bytes]:
        if request.path == "/ready":
            return 200, "text/plain", b"ready\n"
        if request.path != "/loki/api/v1/query_range":
            return 404, "text/plain", b"404 page not found\n"
        query = request.params.get("query", "")
        if query.startswith(("rate(", "count_over_time(", "sum(")):
            return _json(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
        parsed = _parse_logql(query)
        if parsed is None:
            return (400, "text/plain; charset=utf-8",
                    b"parse error at line 1, col 1: syntax error: unexpected IDENTIFIER\n")
        matchers, needles = parsed
        start, end = int(request.params["start"]), int(request.params["end"])
        limit = int(request.params.get("limit", "100"))
        chosen = [e for e in self.entries if start <= e.ns < end and _matches(e.labels, matchers)
                  and all(n in e.line for n in needles)]
        if request.params.get("direction", "backward") == "backward":
            chosen = chosen[::-1]
        chosen = chosen[:limit]
        streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        for entry in chosen:
            value: list[Any] = [str(entry.ns), entry.line]
            if entry.metadata:
                value.append(entry.metadata)
            streams.setdefault(tuple(sorted(entry.labels.items())), []).append(value)
        result = [{"stream": dict(labels), "values": values} for labels, values in streams.items()]
        return _json(200, {"status": "success", "data": {
            "resultType": "streams", "result": result,
            "stats": {"summary": {"totalEntriesReturned": len(chosen), "execTime": 0.001}}}})


def _parse_logql(query: str) -> tuple[list[tuple[str, str, str]], list[str]] | None:
    found = re.fullmatch(r"\s*\{(.*?)\}(.*)", query, re.DOTALL)
    if not found:
        return None
    matchers, rest = [], found.group(2)
    for part in filter(str.strip, found.group(1).split(",")):
        matcher = _MATCHER.fullmatch(part)
        if matcher is None:
            return None
        matchers.append((matcher.group(1), matcher.group(2), matcher.group(3)))
    needles = []
    while rest.strip():
        line_filter = _LINE_FILTER.match(rest)
        if line_filter is None:
            return None
        needles.append(line_filter.group(1))
        rest = rest[line_filter.end():]
    return matchers, needles


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        ok = {"=": have == value, "!=": have != value, "=~": re.fullmatch(value, have) is not None,
              "!~": re.fullmatch(value, have) is None}[op]
        if not ok:
            return False
    return True


# -- Prometheus ---------------------------------------------------------------------------------------

_LOOKBACK_S = 300


class PrometheusDouble(_Double):
    """Prometheus's query_range for selectors over `samples`: a table timestamp, value and one column per label
    (`__name__` included)."""

    def __init__(self, samples: pd.DataFrame) -> None:
        super().__init__()
        labels = [c for c in samples.columns if c not in ("timestamp", "value")]
        self.series = {key: group.sort_values("timestamp")
                       for key, group in samples.groupby(labels, sort=True, dropna=False)}
        self.labels = labels

    def answer(self, request: Request) -> tuple[int, str, bytes]:
        if request.path != "/api/v1/query_range":
            return 404, "text/plain", b"404 page not found\n"
        query = request.params.get("query", "")
        selector = re.fullmatch(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*(?:\{(.*)\})?\s*", query)
        matchers = []
        if selector and selector.group(2):
            parts = [_MATCHER.fullmatch(p) for p in filter(str.strip, selector.group(2).split(","))]
            if not all(parts):
                selector = None
            else:
                matchers = [(m.group(1), m.group(2), m.group(3)) for m in parts if m]
        if selector is None or not (selector.group(1) or matchers):
            return _json(400, {"status": "error", "errorType": "bad_data",
                               "error": f'invalid parameter "query": 1:1: parse error: unexpected input in {query!r}'})
        if selector.group(1):
            matchers.append(("__name__", "=", selector.group(1)))
        start, end, step = (float(request.params[k]) for k in ("start", "end", "step"))
        times = [start + i * step for i in range(int((end - start) // step) + 1)]
        result = []
        for key, group in self.series.items():
            labels = {name: value for name, value in zip(self.labels, key if isinstance(key, tuple) else (key,),
                                                         strict=True) if isinstance(value, str)}
            if not _matches(labels, matchers):
                continue
            seconds = ((group["timestamp"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()
            values = group["value"].to_numpy()
            points = []
            for t in times:
                index = seconds.searchsorted(t, side="right") - 1
                if index >= 0 and t - seconds[index] <= _LOOKBACK_S:
                    points.append([round(t, 3), repr(float(values[index]))])
            if points:
                result.append({"metric": labels, "values": points})
        return _json(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})


# -- webhook receivers --------------------------------------------------------------------------------

class Receiver(_Double):
    """Records POSTed messages; answers 200 `ok` (Slack's answer), or the statuses scripted first."""

    def __init__(self) -> None:
        super().__init__()
        self._script: deque[tuple[int, str]] = deque()

    def script(self, *answers: int | tuple[int, str]) -> None:
        for answer in answers:
            self._script.append(answer if isinstance(answer, tuple) else (answer, "scripted"))

    def answer(self, request: Request) -> tuple[int, str, bytes]:
        status, text = self._script.popleft() if self._script else (200, "ok")
        if request.path.startswith("/v2/enqueue") and status == 202:  # PagerDuty's answer
            return _json(202, {"status": "success", "message": "Event processed", "dedup_key": "x"})
        return status, "text/plain", text.encode()

    def messages(self, path_prefix: str = "/") -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path.startswith(path_prefix)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` behind uvicorn on a free local port, lifespan (job threads) included; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running(*doubles: _Double) -> Iterator[None]:
    for double in doubles:
        double.__enter__()
    try:
        yield
    finally:
        for double in doubles:
            double.__exit__(None, None, None)


def wait_done(client: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The job's body from the service's `/v1/incidents/ID` (a `TestClient` or an httpx client) once it is done
    or failed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        body: dict[str, Any] = client.get(f"/v1/incidents/{job_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")
