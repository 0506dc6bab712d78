"""The HTTP API (FastAPI): incident jobs, Alertmanager's webhook, routed and per-expert generation, OpenAI chat,
and a web console at `/` (static files in `console/`, calling the same API with the user's bearer token).

`create_app` builds a plain FastAPI app around two services — an `Analyzer` (incident directory ->
report) and a `ModelService` (experts and routed generation) — so it can be tested directly, without
Ray; `flipmoe.serve.deployments` puts the same app behind Ray Serve with the services as deployments.

Jobs are durable (`JobStore`): a submission is written to SQLite before the answer, workers claim
jobs with a lease their process renews, and a job whose worker died is claimed again. Alertmanager's
webhook opens jobs too: one per alert group, whose telemetry the job pulls from the configured backends
and whose result it delivers (`flipmoe.serve.alertmanager`).

Nothing slow runs on the event loop: uploads are streamed to a spooled file and staged (extracted,
parsed, written; `flipmoe.serve.uploads`) in a worker thread, and generation runs in worker threads,
at most `max_concurrent_generations` at once (429 with Retry-After beyond) and each abandoned after
`generation_timeout_s` (504). Every error, 5xx included, is `{"error": {"message", "status"}}`; a 5xx
carries a correlation id whose traceback is in the server log, and is counted in `/metrics`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol, TypedDict, TypeVar

import anyio
import pydantic
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flipmoe.config import FlipmoeConfig, state_home
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.backends import configured_backends
from flipmoe.serve.alertmanager import AlertJobs, AlertmanagerWebhook, incident_key, plan_incident
from flipmoe.serve.ingest import JsonBody
from flipmoe.serve.jobs import STATES, Job, JobStore, worker_name
from flipmoe.serve.security import is_loopback, token_ok, token_scope
from flipmoe.serve.uploads import Uploads

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

    data_dir: Path = field(default_factory=lambda: default_data_dir())
    """Jobs database, uploaded incidents and reports live here (default `$XDG_STATE_HOME/flipmoe/serve`)."""
    tokens: frozenset[str] = frozenset()
    """Accepted bearer tokens."""
    auth: Literal["auto", "on", "off"] = "auto"
    """"auto": required unless the service listens on a loopback address only."""
    host: str = "127.0.0.1"
    """Address the service listens on (decides what "auto" means)."""
    max_request_bytes: int = 64 * 1024 * 1024
    """Largest request body, whether its length is declared or it arrives chunked (413 beyond)."""
    max_archive_bytes: int = 512 * 1024 * 1024
    """Largest expanded incident archive (all its files together)."""
    max_archive_member_bytes: int = 256 * 1024 * 1024
    """Largest file in an incident archive."""
    max_archive_members: int = 200
    """Most files (and, separately, directories) in an incident archive."""
    upload_quota_bytes: int = 16 * 1024**3
    """Disk space that uploaded incidents and reports may take under data_dir (507 when unfinished jobs fill it)."""
    keep_finished_jobs: int = 1000
    """Finished jobs kept, with their uploads and reports; older ones are removed (GET then answers 404)."""
    keep_finished_seconds: float = 7 * 24 * 3600.0
    """Finished jobs are removed, with their files, this long after they finished."""
    generation_timeout_s: float = 120.0
    """A generation still running after this long is answered 504 and its result dropped."""
    max_concurrent_generations: int = 4
    """Generations served at once by this process; beyond it, 429 with Retry-After."""
    job_lease_s: float = 15.0
    """A job whose process stopped renewing its lease this long ago is run again by another worker."""
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

    def __post_init__(self) -> None:
        positive = {name: getattr(self, name) for name in (
            "max_request_bytes", "max_archive_bytes", "max_archive_member_bytes", "max_archive_members",
            "upload_quota_bytes", "keep_finished_seconds", "generation_timeout_s", "max_concurrent_generations",
            "job_lease_s", "max_new_tokens_limit")}
        for name, value in positive.items():
            if not value > 0:
                raise FlipmoeInputError(f"serve setting {name} must be positive, got {value!r}")
        if self.keep_finished_jobs < 0 or self.workers < 0:
            raise FlipmoeInputError("serve settings keep_finished_jobs and workers must not be negative")

    @property
    def auth_required(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not is_loopback(self.host))


def default_data_dir() -> Path:
    """The service's files when `--data-dir` is not given: `$XDG_STATE_HOME/flipmoe/serve`.

    State, not data: the service prunes them itself (retention, quota).
    """
    return state_home() / "serve"


def api_tokens(extra: str | None = None) -> frozenset[str]:
    """Bearer tokens from `FLIPMOE_API_TOKENS` (comma-separated) and `extra`; tokens are never logged."""
    text = ",".join(filter(None, (os.environ.get("FLIPMOE_API_TOKENS", ""), extra or "")))
    return frozenset(t.strip() for t in text.split(",") if t.strip())


# -- request schemas --------------------------------------------------------------------------------

class _Strict(JsonBody):
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


class ChatRequest(JsonBody):
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


# -- the app --------------------------------------------------------------------------------------

def create_app(settings: ServeSettings, *, analyzer: Analyzer, models: ModelService | None = None,
               config: FlipmoeConfig | None = None) -> FastAPI:
    """The FastAPI app; starts `settings.workers` job threads on startup and stops them on shutdown.

    `config` holds the telemetry backends and delivery targets of alert jobs (`POST /v1/alertmanager`).
    """
    if settings.auth_required and not settings.tokens:
        raise FlipmoeInputError("authentication is required when listening beyond localhost, but no token is set",
                                hint="set FLIPMOE_API_TOKENS or pass --token, or use --auth off deliberately")
    data_dir = settings.data_dir
    spool_dir = data_dir / "tmp"
    spool_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(data_dir / "jobs.sqlite", lease_s=settings.job_lease_s)
    uploads = Uploads(settings, store)
    metrics = _Metrics(store)
    config = config or FlipmoeConfig()
    runner = JobRunner(store, AlertJobs(analyzer, config), worker=worker_name(settings.worker_id), metrics=metrics)
    generation = _GenerationGate(settings.max_concurrent_generations, settings.generation_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(uploads.expire)
        runner.start(settings.workers)
        try:
            yield
        finally:
            runner.stop()

    app = FastAPI(title="flipmoe", version="1", summary="Root-cause analysis of incidents with modality experts",
                  lifespan=lifespan)
    app.state.store, app.state.runner, app.state.settings, app.state.uploads = store, runner, settings, uploads
    app.add_middleware(_Guard, settings=settings, metrics=metrics)

    @app.exception_handler(FlipmoeInputError)
    async def _bad_input(request: Request, err: FlipmoeInputError) -> JSONResponse:
        return _error(422, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = str(err.detail)
        if err.status_code == 400 and err.__cause__ is not None:  # FastAPI could not parse a JSON body
            message = f"the body is not usable JSON ({_json_problem(err.__cause__)})"
        response = _error(err.status_code, message)  # one error shape for every error
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_schema(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(err.errors()))

    @app.exception_handler(pydantic.ValidationError)
    async def _bad_value(request: Request, err: pydantic.ValidationError) -> JSONResponse:
        return _error(422, _validation_message(err.errors()))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # Async on purpose: a probe must not queue behind worker threads busy with uploads or generation.
        return {"status": "ok", "jobs": store.counts(), "models": models.model_names() if models else []}

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def submit_staged(incident_dir: Path, job_id: str, key: str | None) -> tuple[Job, bool]:
        """Record a staged incident as a job; a staged incident no job owns is removed, not left
        to count against the quota."""
        try:
            return store.submit(incident_dir=str(incident_dir), out_dir=str(uploads.reports / job_id),
                                idempotency_key=key, job_id=job_id)
        except BaseException:
            uploads.discard(job_id)
            raise

    def accept(content_type: str, body: IO[bytes], key: str | None) -> JSONResponse:
        job_id = uuid.uuid4().hex
        incident_dir = uploads.stage(content_type, body, job_id)
        job, created = submit_staged(incident_dir, job_id, key)
        if not created:  # a concurrent submission with the same key won
            uploads.discard(job_id)
        runner.wake()
        return JSONResponse(_job_json(job), status_code=202 if created else 200)

    @app.post("/v1/incidents", status_code=202)
    async def submit_incident(request: Request,
                              idempotency_key: str | None = Header(default=None, max_length=200)) -> JSONResponse:
        # Keys are per caller: the same key from another token is another submission.
        key = f"{token_scope(request.headers.get('authorization'))}:{idempotency_key}" if idempotency_key else None
        if key:
            existing = await run_in_threadpool(store.by_idempotency_key, key)
            if existing is not None:
                return JSONResponse(_job_json(existing), status_code=200)
        in_memory = 1 << 20
        with tempfile.SpooledTemporaryFile(max_size=in_memory, dir=str(spool_dir)) as body:
            received = 0
            async for chunk in request.stream():  # the guard stops a body beyond the limit
                received += len(chunk)
                if received > in_memory:  # the spool is a file by now: write it off the event loop
                    await anyio.to_thread.run_sync(body.write, chunk)
                else:
                    body.write(chunk)
            return await run_in_threadpool(accept, request.headers.get("content-type", ""), body, key)

    def accept_alert(webhook: AlertmanagerWebhook, scope: str) -> JSONResponse:
        if not webhook.firing:
            return JSONResponse({"accepted": False, "reason": f"group {webhook.groupKey!r} has no firing alerts "
                                                              "(resolved); nothing to analyse"}, status_code=200)
        if not configured_backends(config):
            raise HTTPException(503, "no telemetry backend is configured (prometheus.queries, loki.queries or "
                                     "otlp.trace_files in the service's --config); alerts cannot be analysed")
        key = f"{scope}:alertmanager:{incident_key(webhook)}"
        existing = store.by_idempotency_key(key)
        if existing is not None:
            return JSONResponse(_job_json(existing), status_code=200)
        job_id = uuid.uuid4().hex
        planned = plan_incident(webhook, config, job_id=job_id)
        incident_dir = uploads.stage_alert(planned.to_json(), job_id)
        job, created = submit_staged(incident_dir, job_id, key)
        if not created:  # the same group, sent twice at once: the other request won
            uploads.discard(job_id)
        runner.wake()
        return JSONResponse(_job_json(job), status_code=202 if created else 200)

    @app.post("/v1/alertmanager", status_code=202)
    async def alertmanager_webhook(request: Request, webhook: AlertmanagerWebhook) -> JSONResponse:
        # Alertmanager's own retries (a timed-out delivery, repeat_interval) come back to the same job.
        return await run_in_threadpool(accept_alert, webhook, token_scope(request.headers.get("authorization")))

    @app.get("/", include_in_schema=False)
    def console_page() -> Response:
        return _console_file("index.html")

    @app.get("/console/{name}", include_in_schema=False)
    def console_asset(name: str) -> Response:
        return _console_file(name)

    @app.get("/v1/incidents")
    def list_jobs(limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
        """The most recent jobs, newest first (what the console polls)."""
        return {"jobs": [_job_json(job) for job in store.recent(limit)]}

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

    def report_file(job_id: str, name: str, media_type: str) -> FileResponse:
        job = store.get(_safe_id(job_id))
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        path = Path(job.out_dir) / name
        if job.state != "done" or not path.is_file():
            raise HTTPException(409 if job.state in ("queued", "running") else 404,
                                f"job {job_id} is {job.state}; {name} is not available")
        # The report holds telemetry: were anything in it ever to pass as markup, it still could not run.
        return FileResponse(path, media_type=media_type, headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/v1/incidents/{job_id}/report.html")
    def job_report_html(job_id: str) -> FileResponse:
        return report_file(job_id, "report.html", "text/html; charset=utf-8")

    @app.get("/v1/incidents/{job_id}/report.md")
    def job_report_markdown(job_id: str) -> FileResponse:
        return report_file(job_id, "report.md", "text/markdown; charset=utf-8")

    @app.post("/v1/route")
    def route(request: RouteRequest) -> dict[str, Any]:
        return _models(models).route(request.prompt, request.task)

    @app.post("/v1/experts/{name}/generate")
    async def expert_generate(name: str, request: GenerateRequest) -> dict[str, Any]:
        service = _models(models)
        _check_model(service, name)
        return await generation.run(lambda: service.generate(
            name, request.prompt, task=request.task, max_new_tokens=min(request.max_tokens,
                                                                        settings.max_new_tokens_limit),
            stop=request.stop, temperature=request.temperature, top_p=request.top_p))

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        names = _models(models).model_names()
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "flipmoe"}
                                           for n in names]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
        service = _models(models)
        _check_model(service, request.model)
        prompt = _chat_prompt(request.messages)
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        max_tokens = min(request.max_completion_tokens or request.max_tokens or 64, settings.max_new_tokens_limit)
        options: _GenerationOptions = {"task": None, "max_new_tokens": max_tokens, "stop": stop,
                                       "temperature": request.temperature, "top_p": request.top_p}
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if request.stream:
            deltas = generation.stream(lambda: service.stream(request.model, prompt, **options))
            return StreamingResponse(_sse(deltas, completion_id, created, request.model),
                                     media_type="text/event-stream")
        result = await generation.run(lambda: service.generate(request.model, prompt, **options))
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


class _Guard:
    """The app's outer layer: bearer auth, the request-body limit, request metrics, and unhandled errors.

    The body limit holds for chunked bodies too: bytes are counted as they arrive, and the request is
    answered 413 as soon as they pass the limit. An unhandled error becomes a JSON 500 naming a
    correlation id; its traceback goes to the server log only. Every answer, 5xx included, is counted.
    """

    def __init__(self, app: ASGIApp, *, settings: ServeSettings, metrics: _Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(Headers(scope=scope), scope["path"])
            if refusal is not None:
                await refusal(scope, receive, send_noting_status)
            else:
                await self.app(scope, self._limited(receive), send_noting_status)
        except Exception:
            correlation = uuid.uuid4().hex[:12]
            log.exception("%s %s failed (correlation id %s)", scope.get("method"), scope["path"], correlation)
            if status:  # the answer had begun: the client sees a cut-off response
                status = 500
            else:
                await _error(500, f"internal error (correlation id {correlation}); the server log has the "
                                  "details")(scope, receive, send_noting_status)
        finally:
            # 499: the client went away before any answer (nginx's convention).
            self.metrics.observe(_endpoint_label(scope["path"]), status or 499, time.perf_counter() - started)

    def _refusal(self, headers: Headers, path: str) -> Response | None:
        settings = self.settings
        # The probe and the console's static files hold no data: a browser loads the console without a
        # token, and the console then sends the token with every API call.
        public = path == "/healthz" or path == "/" or path.startswith("/console/")
        if settings.auth_required and not public and not token_ok(headers.get("authorization"), settings.tokens):
            response = _error(401, "missing or invalid bearer token")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        declared = headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit() and len(declared) <= 20):
                return _error(400, "the Content-Length header is not a byte count")
            if int(declared) > settings.max_request_bytes:
                return _error(413, f"request body larger than {settings.max_request_bytes} bytes")
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit, received = self.settings.max_request_bytes, 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        return receive_within_limit


T = TypeVar("T")


class _GenerationTimeout(Exception):
    """A streamed generation ran past the server-side timeout."""


class _GenerationGate:
    """At most `limit` generations at once, each in a worker thread and abandoned after `timeout_s`.

    A request beyond the limit is answered 429 at once (with Retry-After) instead of queueing, so a burst
    of chat requests cannot starve the rest of the API; a slot is held until its thread has really
    finished, so abandoned generations still count against the limit.
    """

    RETRY_AFTER_S = 2

    def __init__(self, limit: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(limit)

    async def run(self, generate: Callable[[], T]) -> T:
        self._take_slot()
        lock, owner = threading.Lock(), ["caller"]

        def work() -> T:
            with lock:
                if owner[0] == "gone":  # the request gave up before a thread was free
                    raise _GenerationTimeout
                owner[0] = "thread"
            try:
                return generate()
            finally:
                self._slots.release()

        try:
            with anyio.fail_after(self.timeout_s):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError:
            raise HTTPException(504, f"generation took longer than {self.timeout_s:g} s; try fewer tokens "
                                     "or retry later") from None
        finally:
            with lock:
                if owner[0] == "caller":  # no thread ever ran it: the slot is still ours to give back
                    owner[0] = "gone"
                    self._slots.release()

    def stream(self, start: Callable[[], Iterator[str]]) -> Iterator[str]:
        """Deltas of a streamed generation; the slot is taken now and given back when the stream ends."""
        self._take_slot()
        deltas = self._timed(start)
        next(deltas)  # run up to the first yield now, so that the slot is released by the generator
        return deltas

    def _timed(self, start: Callable[[], Iterator[str]]) -> Iterator[str]:
        try:
            yield ""
            deadline = time.monotonic() + self.timeout_s
            for delta in start():
                if time.monotonic() > deadline:
                    raise _GenerationTimeout
                yield delta
        finally:
            self._slots.release()

    def _take_slot(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise HTTPException(429, "the service is generating at capacity; retry shortly",
                                headers={"Retry-After": str(self.RETRY_AFTER_S)})


class JobRunner:
    """Threads that claim queued jobs and run the analyzer, and one that renews their leases."""

    def __init__(self, store: JobStore, analyzer: Analyzer, *, worker: str, metrics: _Metrics | None = None,
                 poll_s: float = 0.5) -> None:
        self.store, self.analyzer, self.worker, self.metrics, self.poll_s = store, analyzer, worker, metrics, poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        if count:
            # Jobs of a process of this host that died (a crash, SIGKILL) restart now, not when
            # their leases run out.
            self.store.release_dead(socket.gethostname())
        targets = [self._loop] * count + ([self._renew] if count else [])
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"flipmoe-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        # Jobs still being analysed are left to their leases: requeued now, another replica would run
        # (and deliver) them a second time while this one finishes.
        if not any(thread.is_alive() for thread in self._threads):
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
        except Exception as err:  # a failed job is reported with its reason, never lost
            self.store.fail(job.id, self.worker, failure_reason(job.id, err))
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_one():
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def _renew(self) -> None:
        # Leases are renewed apart from progress reports, so a long analysis is never taken for a dead one
        # and the jobs of a process that died are run again within one lease.
        while not self._stop.wait(self.store.lease_s / 5):
            try:
                self.store.renew(self.worker)
            except Exception:  # a busy database must not end the renewals
                log.warning("could not renew the job leases of worker %s", self.worker, exc_info=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def failure_reason(job_id: str, err: BaseException) -> str:
    """What a failed job reports: one short line and a correlation id; the traceback goes to the log."""
    # Ray wraps an exception raised in a replica; `cause` is the original, whose message is the reason.
    while isinstance(getattr(err, "cause", None), BaseException) and err.cause is not err:  # type: ignore[attr-defined]
        err = err.cause  # type: ignore[attr-defined]
    correlation = uuid.uuid4().hex[:12]
    if isinstance(err, FlipmoeInputError):
        log.info("job %s: bad incident (correlation id %s): %s", job_id, correlation, err)
        reason = f"bad incident: {err}"
    else:
        log.error("job %s failed (correlation id %s)", job_id, correlation, exc_info=err)
        reason = f"{type(err).__name__}: {err}"
    lines = [line.strip() for line in _ANSI.sub("", reason).splitlines() if line.strip()]
    short = (lines[0] if lines else type(err).__name__)[:300]
    return f"{short} (correlation id {correlation})"


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


def _endpoint_label(path: str) -> str:
    # Label by route template, not by raw path: job ids must not explode the metric's cardinality.
    for prefix, label in (("/v1/incidents/", "/v1/incidents/{id}"), ("/v1/experts/", "/v1/experts/{name}/generate")):
        if path.startswith(prefix):
            report = next((name for name in ("/report.html", "/report.md") if path.endswith(name)), "")
            return label + report
    if path == "/" or path.startswith("/console/"):
        return "/console"
    return path if path in ("/healthz", "/metrics", "/v1/incidents", "/v1/alertmanager", "/v1/route", "/v1/models",
                            "/v1/chat/completions") else "other"


def _safe_id(job_id: str) -> str:
    if not (job_id.isascii() and job_id.isalnum()) or len(job_id) > 64:
        raise HTTPException(404, f"no job {job_id[:80]!r}")
    return job_id


def _job_json(job: Any) -> dict[str, Any]:
    return {**job.to_json(), "links": {"self": f"/v1/incidents/{job.id}",
                                       "report_html": f"/v1/incidents/{job.id}/report.html",
                                       "report_md": f"/v1/incidents/{job.id}/report.md"}}


_CONSOLE = Path(__file__).parent / "console"
_CONSOLE_TYPES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
                  "console.css": "text/css; charset=utf-8"}
# The console loads nothing from elsewhere and runs only its own script; a report it shows sits in a
# sandboxed srcdoc frame, which takes this policy too (hence inline styles and data: images).
_CONSOLE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                   "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _console_file(name: str) -> Response:
    """One of the console's files (a fixed set: nothing else under the package is reachable)."""
    if name not in _CONSOLE_TYPES:
        raise HTTPException(404, f"no console file {name[:80]!r}")
    return Response((_CONSOLE / name).read_bytes(), media_type=_CONSOLE_TYPES[name],
                    headers={"Content-Security-Policy": _CONSOLE_POLICY, "X-Content-Type-Options": "nosniff",
                             "Cache-Control": "no-cache"})


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
    try:
        for delta in deltas:
            if delta:
                yield chunk({"content": delta}, None)
    except _GenerationTimeout:
        # The answer has begun (status 200): the timeout can only be told inside the stream.
        yield f"data: {json.dumps({'error': {'message': 'generation timed out', 'status': 504}})}\n\n"
    else:
        yield chunk({}, "stop")
    yield "data: [DONE]\n\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "status": status}}, status_code=status)


def _validation_message(errors: Any) -> str:
    """Pydantic's errors in one line: `field.path: problem; ...`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors)


def _json_problem(err: BaseException) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]
