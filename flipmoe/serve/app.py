"""The HTTP API (FastAPI): incident jobs, routed and per-expert generation, OpenAI-compatible chat.

`create_app` builds a plain FastAPI app around two services — an `Analyzer` (incident directory ->
report) and a `ModelService` (experts and routed generation) — so it can be tested directly, without
Ray; `flipmoe.serve.deployments` puts the same app behind Ray Serve with the services as deployments.

Jobs are durable (`JobStore`): a submission is written to SQLite before the answer, workers claim
jobs with a lease, and a job whose worker died is claimed again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flipmoe.errors import FlipmoeInputError
from flipmoe.serve.ingest import write_json_incident
from flipmoe.serve.jobs import STATES, JobStore
from flipmoe.serve.security import extract_incident_archive, is_loopback, token_ok

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


class Analyzer(Protocol):
    """Runs the RCA path on an incident directory and writes report.json (and .md/.html) into `out_dir`."""

    def __call__(self, incident_dir: Path, out_dir: Path, progress: ProgressFn) -> dict[str, Any]: ...


class ModelService(Protocol):
    """Experts and routed generation; `flipmoe` is the routed model."""

    def model_names(self) -> list[str]: ...

    def generate(self, model: str, prompt: str, *, task: str | None, max_new_tokens: int, stop: list[str],
                 temperature: float, top_p: float) -> dict[str, Any]: ...

    def stream(self, model: str, prompt: str, *, task: str | None, max_new_tokens: int, stop: list[str],
               temperature: float, top_p: float) -> Iterator[str]: ...

    def route(self, prompt: str, task: str | None) -> dict[str, Any]: ...


class _GenerationOptions(TypedDict):
    """The keyword arguments `ModelService.generate` and `ModelService.stream` share."""

    task: str | None
    max_new_tokens: int
    stop: list[str]
    temperature: float
    top_p: float


@dataclass(kw_only=True)
class ServeSettings:
    """How the service behaves; `flipmoe serve` fills it from flags and the environment."""

    data_dir: Path = Path("flipmoe-serve")
    """Jobs database, uploaded incidents and reports live here."""
    tokens: frozenset[str] = frozenset()
    """Accepted bearer tokens."""
    auth: Literal["auto", "on", "off"] = "auto"
    """"auto": required unless the service listens on a loopback address only."""
    host: str = "127.0.0.1"
    """Address the service listens on (decides what "auto" means)."""
    max_request_bytes: int = 64 * 1024 * 1024
    """Largest request body (uploads and JSON telemetry)."""
    max_archive_bytes: int = 512 * 1024 * 1024
    """Largest expanded incident archive."""
    allow_server_paths: bool = False
    """Accept `{"path": ...}` submissions naming an incident directory on the server (operators only)."""
    server_path_root: Path | None = None
    """When server paths are allowed, they must lie under this directory."""
    workers: int = 1
    """Threads in this process that run queued jobs (0: jobs are run by another process sharing data_dir)."""
    max_new_tokens_limit: int = 512
    """Upper bound on `max_tokens` in generation requests."""
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Names this process's job leases."""

    @property
    def auth_required(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not is_loopback(self.host))


def api_tokens(extra: str | None = None) -> frozenset[str]:
    """Bearer tokens from `FLIPMOE_API_TOKENS` (comma-separated) and `extra`; tokens are never logged."""
    text = ",".join(filter(None, (os.environ.get("FLIPMOE_API_TOKENS", ""), extra or "")))
    return frozenset(t.strip() for t in text.split(",") if t.strip())


# -- request schemas --------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Strict):
    prompt: str = Field(min_length=1, max_length=200_000)
    task: str | None = None
    max_tokens: int = Field(default=64, ge=1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)


class RouteRequest(_Strict):
    prompt: str = Field(min_length=1, max_length=200_000)
    task: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, n=1, ...)
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


class PathSubmission(_Strict):
    path: str


# -- the app --------------------------------------------------------------------------------------

def create_app(settings: ServeSettings, *, analyzer: Analyzer, models: ModelService | None = None) -> FastAPI:
    """The FastAPI app; starts `settings.workers` job threads on startup and stops them on shutdown."""
    if settings.auth_required and not settings.tokens:
        raise FlipmoeInputError("authentication is required when listening beyond localhost, but no token is set",
                                hint="set FLIPMOE_API_TOKENS or pass --token, or use --auth off deliberately")
    data_dir = settings.data_dir
    (data_dir / "incidents").mkdir(parents=True, exist_ok=True)
    (data_dir / "reports").mkdir(parents=True, exist_ok=True)
    store = JobStore(data_dir / "jobs.sqlite")
    metrics = _Metrics(store)
    runner = JobRunner(store, analyzer, worker=settings.worker_id, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start(settings.workers)
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="flipmoe", version="1", summary="Root-cause analysis of incidents with modality experts",
                  lifespan=lifespan)
    app.state.store, app.state.runner, app.state.settings = store, runner, settings

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[..., Any]) -> Response:
        started = time.perf_counter()
        endpoint = _endpoint_label(request)
        if settings.auth_required and request.url.path not in ("/healthz",) and \
                not token_ok(request.headers.get("authorization"), settings.tokens):
            response: Response = _error(401, "missing or invalid bearer token")
            response.headers["WWW-Authenticate"] = "Bearer"
        elif int(request.headers.get("content-length") or 0) > settings.max_request_bytes:
            response = _error(413, f"request body larger than {settings.max_request_bytes} bytes")
        else:
            response = await call_next(request)
        metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(FlipmoeInputError)
    async def _bad_input(request: Request, err: FlipmoeInputError) -> JSONResponse:
        return _error(422, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        response = _error(err.status_code, str(err.detail))  # one error shape for every 4xx, as for bad input
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_schema(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in err.errors()]
        return _error(422, "; ".join(problems))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "jobs": store.counts(), "models": models.model_names() if models else []}

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/incidents", status_code=202)
    async def submit_incident(request: Request,
                              idempotency_key: str | None = Header(default=None, max_length=200)) -> JSONResponse:
        if idempotency_key:
            existing = store.by_idempotency_key(idempotency_key)
            if existing is not None:
                return JSONResponse(_job_json(existing), status_code=200)
        body = await _read_body(request, settings.max_request_bytes)
        job_id = uuid.uuid4().hex
        incident_dir = _stage_incident(request.headers.get("content-type", ""), body, data_dir / "incidents" / job_id,
                                       settings)
        job, created = store.submit(incident_dir=str(incident_dir), out_dir=str(data_dir / "reports" / job_id),
                                    idempotency_key=idempotency_key, job_id=job_id)
        if not created:  # a concurrent submission with the same key won
            shutil.rmtree(data_dir / "incidents" / job_id, ignore_errors=True)
        runner.wake()
        return JSONResponse(_job_json(job), status_code=202 if created else 200)

    @app.get("/v1/incidents/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = store.get(_safe_id(job_id))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        result = _job_json(job)
        report_path = Path(job.out_dir) / "report.json"
        if job.state == "done" and report_path.is_file():
            result["report"] = json.loads(report_path.read_text(encoding="utf-8"))
        return result

    @app.get("/v1/incidents/{job_id}/report.html")
    def job_report_html(job_id: str) -> FileResponse:
        job = store.get(_safe_id(job_id))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        path = Path(job.out_dir) / "report.html"
        if job.state != "done" or not path.is_file():
            raise HTTPException(409 if job.state in ("queued", "running") else 404,
                                f"job {job_id} is {job.state}; the HTML report is not available")
        return FileResponse(path, media_type="text/html")

    @app.post("/v1/route")
    def route(request: RouteRequest) -> dict[str, Any]:
        return _models(models).route(request.prompt, request.task)

    @app.post("/v1/experts/{name}/generate")
    def expert_generate(name: str, request: GenerateRequest) -> dict[str, Any]:
        service = _models(models)
        _check_model(service, name)
        return service.generate(name, request.prompt, task=request.task,
                                max_new_tokens=min(request.max_tokens, settings.max_new_tokens_limit),
                                stop=request.stop, temperature=request.temperature, top_p=request.top_p)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        names = _models(models).model_names()
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "flipmoe"}
                                           for n in names]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
        service = _models(models)
        _check_model(service, request.model)
        prompt = _chat_prompt(request.messages)
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        max_tokens = min(request.max_completion_tokens or request.max_tokens or 64, settings.max_new_tokens_limit)
        options: _GenerationOptions = {"task": None, "max_new_tokens": max_tokens, "stop": stop,
                                       "temperature": request.temperature, "top_p": request.top_p}
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if request.stream:
            return StreamingResponse(_sse(service.stream(request.model, prompt, **options), completion_id, created,
                                          request.model), media_type="text/event-stream")
        result = service.generate(request.model, prompt, **options)
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                         "finish_reason": "length" if result.get("finish_reason") == "length" else "stop"}],
            "usage": {"prompt_tokens": result.get("prompt_tokens", 0),
                      "completion_tokens": result.get("completion_tokens", 0),
                      "total_tokens": result.get("prompt_tokens", 0) + result.get("completion_tokens", 0)},
            "flipmoe": {k: result.get(k) for k in ("expert", "routed_to", "router_scores", "confidence", "candidates")},
        }

    return app


class JobRunner:
    """Threads that claim queued jobs and run the analyzer; a lease heartbeat proves they are alive."""

    def __init__(self, store: JobStore, analyzer: Analyzer, *, worker: str, metrics: _Metrics | None = None,
                 poll_s: float = 0.5) -> None:
        self.store, self.analyzer, self.worker, self.metrics, self.poll_s = store, analyzer, worker, metrics, poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        for i in range(count):
            thread = threading.Thread(target=self._loop, name=f"flipmoe-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.store.release_worker(self.worker)

    def wake(self) -> None:
        self._wake.set()

    def run_one(self) -> bool:
        """Claim and run one job; False when none was waiting."""
        job = self.store.claim(self.worker)
        if job is None:
            return False
        out_dir = Path(job.out_dir)

        def progress(stage: str) -> None:
            self.store.heartbeat(job.id, self.worker, stage)

        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            summary = self.analyzer(Path(job.incident_dir), out_dir, progress)
            self.store.complete(job.id, self.worker, summary)
        except FlipmoeInputError as err:
            self.store.fail(job.id, self.worker, f"bad incident: {err}")
        except Exception as err:  # a failed job is reported with its reason, never lost
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, self.worker, f"{type(err).__name__}: {err}")
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_one():
                self._wake.wait(self.poll_s)
                self._wake.clear()


class _Metrics:
    """Prometheus metrics of this process: requests, latencies, queue depth, jobs by state."""

    def __init__(self, store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("flipmoe_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("flipmoe_request_seconds", "HTTP request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.jobs = Gauge("flipmoe_jobs", "incident jobs by state", ["state"], registry=self.registry)
        self.queue = Gauge("flipmoe_queue_depth", "incident jobs waiting to run", registry=self.registry)
        self.store = store

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        counts = self.store.counts()
        for state in STATES:
            self.jobs.labels(state).set(counts[state])
        self.queue.set(counts["queued"])
        return generate_latest(self.registry)


def _endpoint_label(request: Request) -> str:
    # Label by route template, not by raw path: job ids must not explode the metric's cardinality.
    path = request.url.path
    for prefix, label in (("/v1/incidents/", "/v1/incidents/{id}"), ("/v1/experts/", "/v1/experts/{name}/generate")):
        if path.startswith(prefix):
            return label + ("/report.html" if path.endswith("/report.html") else "")
    return path if path in ("/healthz", "/metrics", "/v1/incidents", "/v1/route", "/v1/models",
                            "/v1/chat/completions") else "other"


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _stage_incident(content_type: str, body: bytes, target: Path, settings: ServeSettings) -> Path:
    """Write the submitted incident under `target`: an archive, JSON telemetry, or (if enabled) a server path."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise FlipmoeInputError(f"the body is not valid JSON: {err}") from None
        if isinstance(data, dict) and set(data) == {"path"}:
            return _server_path(PathSubmission(**data).path, settings)
        return write_json_incident(data, target)
    if kind in ("application/gzip", "application/x-gzip", "application/x-tar", "application/zip",
                "application/octet-stream"):
        try:
            return extract_incident_archive(body, target, max_bytes=settings.max_archive_bytes)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    raise HTTPException(415, "send the incident as application/json telemetry or as an archive "
                             "(application/gzip, application/x-tar, application/zip)")


def _server_path(path: str, settings: ServeSettings) -> Path:
    if not settings.allow_server_paths or settings.server_path_root is None:
        raise HTTPException(403, "server-side paths are disabled; upload the incident instead")
    root = settings.server_path_root.resolve()
    candidate = (root / path).resolve()
    if root != candidate and root not in candidate.parents:
        raise HTTPException(403, f"{path!r} is outside the directory the operator allowed")
    if not (candidate / "incident.json").is_file():
        raise FlipmoeInputError(f"{path!r} is not an incident directory (no incident.json)")
    return candidate


def _safe_id(job_id: str) -> str:
    if not job_id.isalnum() or len(job_id) > 64:
        raise HTTPException(404, f"no job {job_id}")
    return job_id


def _job_json(job: Any) -> dict[str, Any]:
    return {**job.to_json(), "links": {"self": f"/v1/incidents/{job.id}",
                                       "report_html": f"/v1/incidents/{job.id}/report.html"}}


def _models(models: ModelService | None) -> ModelService:
    if models is None:
        raise HTTPException(503, "no model bundle is loaded in this service")
    return models


def _check_model(service: ModelService, name: str) -> None:
    if name not in service.model_names():
        raise HTTPException(404, f"unknown model {name!r}; available: {', '.join(service.model_names())}")


def _chat_prompt(messages: list[ChatMessage]) -> str:
    """The text an expert answers: the conversation's text, the last user turn last."""
    parts = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        if content:
            parts.append(content if message.role == "user" else f"[{message.role}] {content}")
    if not parts:
        raise FlipmoeInputError("the messages hold no text")
    return "\n".join(parts)


def _sse(deltas: Iterator[str], completion_id: str, created: int, model: str) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    for delta in deltas:
        if delta:
            yield chunk({"content": delta}, None)
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "status": status}}, status_code=status)
