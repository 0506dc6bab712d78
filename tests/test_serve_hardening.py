"""Hardening of the HTTP service (issue 21): bounded streaming uploads, 4xx for every bad input, one error
shape, 5xx counted, short job errors, quota and retention, back-pressure and timeouts on generation,
idempotency keys per token, leases renewed by a live process, deployments sized to the CPUs.

In-process (FastAPI's TestClient or httpx over ASGI), no Ray; a stand-in analyzer and model service.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient
from http_doubles import wait_done
from test_serve_app import incident_tar, stub_analyzer

from flipmoe.errors import FlipmoeInputError
from flipmoe.serve.app import ServeSettings, create_app, failure_reason
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.security import ArchiveLimits, ArchiveTooLarge, extract_incident_archive
from flipmoe.telemetry import write_incident

GZIP = {"content-type": "application/gzip"}
JSON = {"content-type": "application/json"}


def tar_of(entries: list[tuple[str, bytes | None]], *, mode: str = "w:gz") -> bytes:
    """A tarball of (name, content) members; content None makes a directory member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def bad_crc_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("incident.json", "{}" * 50)
    data = bytearray(buffer.getvalue())
    data[data.index(b"{}{}")] = ord("[")  # stored bytes no longer match the recorded CRC-32
    return bytes(data)


class StubModels:
    """A `ModelService` whose generation the test controls: it waits for `release`, or raises."""

    def __init__(self, *, delay_s: float = 0.0, fail: bool = False) -> None:
        self.release = threading.Event()
        self.release.set()
        self.delay_s, self.fail, self.finished = delay_s, fail, 0

    def model_names(self) -> list[str]:
        return ["flipmoe", "logs"]

    def generate(self, model: str, prompt: str, **options: Any) -> dict[str, Any]:
        self.release.wait(10)
        time.sleep(self.delay_s)
        self.finished += 1
        return {"text": f"echo {prompt[:20]}", "expert": "logs", "finish_reason": "stop"}

    def stream(self, model: str, prompt: str, **options: Any) -> Iterator[str]:
        for word in ("one ", "two ", "three"):
            time.sleep(self.delay_s)
            yield word

    def route(self, prompt: str, task: str | None) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("router state is corrupt at /srv/secret/path")
        return {"expert": "logs", "scores": {"logs": 1.0}, "confidence": 1.0, "fallback": [], "asked": ["logs"]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "allowed").mkdir()
    settings = ServeSettings(data_dir=tmp_path / "serve", allow_server_paths=True,
                             server_path_root=tmp_path / "allowed")
    with TestClient(create_app(settings, analyzer=stub_analyzer, models=StubModels())) as test_client:
        yield test_client


def assert_one_line_4xx(answer: httpx.Response, status: int | None = None, fragment: str = "") -> str:
    assert 400 <= answer.status_code < 500, answer.text
    assert status is None or answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["status"] == answer.status_code
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message
    assert fragment in message, message
    return message


# -- the eleven inputs that were 500s -----------------------------------------------------------------

WINDOW = b'"window": {"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:10:00Z"}'
BAD_SUBMISSIONS = {
    "truncated tar.gz": (lambda tar: tar[: len(tar) // 2], GZIP, "truncated or corrupt"),
    "member named .": (lambda tar: tar_of([(".", b"x")]), GZIP, "names the archive's root"),
    "file and directory with the same path": (lambda tar: tar_of([("a", b"x"), ("a/b", b"y")]), GZIP,
                                              "also holds it as a file"),
    "directory and file with the same path": (lambda tar: tar_of([("a/", None), ("a", b"y")]), GZIP,
                                              "also holds it as a directory"),
    "bad zip CRC": (lambda tar: bad_crc_zip(), {"content-type": "application/zip"}, "Bad CRC-32"),
    "tar sent as JSON": (lambda tar: tar, JSON, "not UTF-8"),
    "non-UTF-8 JSON": (lambda tar: '{"incident": "café"}'.encode("latin-1"), JSON, "not UTF-8"),
    "lone surrogate": (lambda tar: b'{"incident": {"id": "\\ud800", "alert": "a", ' + WINDOW + b"}}", JSON,
                       "surrogate"),
    "100k-deep nesting": (lambda tar: b"[" * 100_000 + b"]" * 100_000, JSON, "nested deeper"),
    "5001-digit integer": (lambda tar: b'{"incident": ' + b"7" * 5001 + b"}", JSON, "digits"),
    "path is a number": (lambda tar: b'{"path": 123}', JSON, "'path' must be"),
    "NUL byte in a server path": (lambda tar: b'{"path": "tiny\\u0000/../x"}', JSON, "NUL"),
    "nested value in a row": (lambda tar: b'{"incident": {"id": "a", "alert": "b", ' + WINDOW + b'}, "metrics": '
                              b'[{"timestamp": "2026-03-01T10:01:00Z", "service": {"x": 1}, "metric": "m", '
                              b'"value": 1}]}', JSON, "'service' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMISSIONS))
def test_bad_submissions_are_4xx_with_one_line(client: TestClient, tmp_path: Path, case: str) -> None:
    make, headers, fragment = BAD_SUBMISSIONS[case]
    answer = client.post("/v1/incidents", content=make(incident_tar(tmp_path)), headers=headers)
    assert_one_line_4xx(answer, 422, fragment)
    assert client.get("/healthz").json()["jobs"]["queued"] == 0
    assert not any((tmp_path / "serve" / "incidents").iterdir()), "a refused upload left files behind"


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_tar_compression_is_accepted(client: TestClient, tmp_path: Path, mode: str) -> None:
    incident = write_incident(tiny_incident(), tmp_path / "src" / "tiny")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        archive.add(incident, arcname="tiny")
    assert client.post("/v1/incidents", content=buffer.getvalue(), headers=GZIP).status_code == 202
    damaged = buffer.getvalue()[:3] + bytes(64)  # the right magic, then nothing that decompresses
    assert_one_line_4xx(client.post("/v1/incidents", content=damaged, headers=GZIP), 422)


def test_member_dot_slash_is_the_root_directory(client: TestClient) -> None:
    archive = tar_of([("./", None), ("./incident.json", b"{}")])
    assert client.post("/v1/incidents", content=archive, headers=GZIP).status_code == 202


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/route", b'{"prompt": "\\udc00"}'),
    ("/v1/route", b"[" * 100_000),
    ("/v1/route", b'{"prompt": "\xff\xfe"}'),
    ("/v1/chat/completions", b'{"model": "logs", "messages": [{"role": "user", "content": "x"}], "max_tokens": '
     + b"9" * 5001 + b"}"),
    ("/v1/chat/completions", b'{"model": "logs", "messages": [{"role": "user", "content": '
     + b'[{"type": "text", "text": ' * 80 + b'"x"' + b"}]" * 80 + b"}]}"),
    ("/v1/experts/logs/generate", b'{"prompt": 123}'),
])
def test_bad_json_bodies_on_model_endpoints_are_4xx(client: TestClient, path: str, body: bytes) -> None:
    assert_one_line_4xx(client.post(path, content=body, headers=JSON))


def test_unknown_routes_and_methods_use_the_same_error_shape(client: TestClient) -> None:
    assert_one_line_4xx(client.get("/no/such/thing"), 404)
    assert_one_line_4xx(client.delete("/v1/incidents"), 405)
    assert_one_line_4xx(client.post("/v1/incidents", content=b"x", headers={"content-type": "text/plain"}), 415)


def test_a_500_is_json_with_a_correlation_id_logged_and_counted(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=stub_analyzer, models=StubModels(fail=True))
    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="flipmoe.serve.app"):
        answer = client.post("/v1/route", json={"prompt": "why is checkout slow?"})
        assert answer.status_code == 500
        message = answer.json()["error"]["message"]
        assert "correlation id" in message and "/srv/secret" not in message and "Traceback" not in message
        correlation = message.split("correlation id ")[1].split(")")[0]
        assert any(correlation in r.getMessage() and r.exc_info for r in caplog.records)
        text = client.get("/metrics").text
        assert 'flipmoe_requests_total{endpoint="/v1/route",status="500"} 1.0' in text


# -- failed jobs ----------------------------------------------------------------------------------------

class _RayTaskErrorLike(Exception):
    """What Ray raises for an exception in a replica: a coloured traceback as its text, the original as `cause`."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("\x1b[36mray::Director.analyse()\x1b[39m (pid=4242, ip=10.0.0.7)\n  File "
                         "\"/usr/lib/python3/site-packages/ray/serve/x.py\", line 1\n" + str(cause))
        self.cause = cause


def test_failed_job_reason_is_short_with_a_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    wrapped = _RayTaskErrorLike(FlipmoeInputError("missing field 'window'", path="incident.json"))
    with caplog.at_level(logging.INFO, logger="flipmoe.serve.app"):
        reason = failure_reason("job1", wrapped)
    assert reason.startswith("bad incident: incident.json: missing field 'window'")
    assert "correlation id" in reason and "\n" not in reason
    assert "pid=" not in reason and "site-packages" not in reason and "\x1b" not in reason
    internal = failure_reason("job2", _RayTaskErrorLike(RuntimeError("boom\nsecond line")))
    assert internal.startswith("RuntimeError: boom (correlation id ") and len(internal) < 400


def test_failed_job_in_the_app_carries_the_reason_not_the_traceback(tmp_path: Path) -> None:
    def broken(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        raise _RayTaskErrorLike(FlipmoeInputError("missing field 'window'"))

    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=broken)) as client:
        job = wait_done(client, client.post("/v1/incidents", content=incident_tar(tmp_path), headers=GZIP).json()["id"])
    assert job["state"] == "failed"
    assert job["error"].startswith("bad incident: missing field 'window' (correlation id ")


# -- streaming, bounded archives -------------------------------------------------------------------------

class _CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_archive_reading_stops_at_the_first_limit(tmp_path: Path) -> None:
    members = [(f"part-{i}.bin", os.urandom(256 * 1024)) for i in range(40)]  # 10 MB that does not compress
    source = _CountingReader(tar_of([("incident.json", b"{}"), *members]))
    limits = ArchiveLimits(max_bytes=1024 * 1024, max_member_bytes=512 * 1024, max_members=100)
    with pytest.raises(ArchiveTooLarge, match="more than 1048576 bytes"):
        extract_incident_archive(source, tmp_path / "out", limits=limits)
    assert source.bytes_read < len(source.getvalue()) / 3, "the archive was read past the limit"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("entries", "limits", "problem"), [
    ([("incident.json", b"{}"), ("big", bytes(2 * 1024 * 1024))], ArchiveLimits(max_member_bytes=1024 * 1024),
     "larger than 1048576 bytes"),
    ([(f"f{i}", b"x") for i in range(6)], ArchiveLimits(max_members=5), "more than 5 files"),
    ([(f"d{i}/", None) for i in range(6)], ArchiveLimits(max_members=5), "more than 5 directories"),
])
def test_archive_limits(tmp_path: Path, entries: list[tuple[str, bytes | None]], limits: ArchiveLimits,
                        problem: str) -> None:
    with pytest.raises(FlipmoeInputError, match=problem):
        extract_incident_archive(io.BytesIO(tar_of(entries)), tmp_path / "out", limits=limits)


def test_a_zip_bomb_member_is_stopped_while_decompressing(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("incident.json", "{}")
        archive.writestr("zeros", bytes(64 * 1024 * 1024))
    data = bytearray(buffer.getvalue())
    # Lie about the size in the central directory: the declared size is small, the stream is 64 MB.
    index = data.rindex(b"zeros") - 46 + 24
    data[index:index + 4] = (1000).to_bytes(4, "little")
    with pytest.raises(FlipmoeInputError):
        extract_incident_archive(io.BytesIO(bytes(data)), tmp_path / "out",
                                 limits=ArchiveLimits(max_bytes=4 * 1024 * 1024))
    assert not (tmp_path / "out").exists()


def test_uploads_are_staged_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flipmoe.serve.uploads as uploads_module

    real = uploads_module.extract_incident_archive

    def slow_extract(*args: Any, **kwargs: Any) -> Path:
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploads_module, "extract_incident_archive", slow_extract)
    app = create_app(ServeSettings(data_dir=tmp_path / "serve", workers=0), analyzer=stub_analyzer)
    archive = incident_tar(tmp_path)

    async def scenario() -> tuple[int, float]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            upload = asyncio.create_task(client.post("/v1/incidents", content=archive, headers=GZIP))
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            health = await client.get("/healthz")
            waited = time.perf_counter() - started
            assert not upload.done(), "the upload finished too early to show anything"
            assert health.status_code == 200
            return (await upload).status_code, waited

    status, waited = asyncio.run(scenario())
    assert status == 202 and waited < 0.5, f"/healthz waited {waited:.2f} s behind an upload"


# -- request-body limit ----------------------------------------------------------------------------------

def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


@pytest.mark.parametrize("path", ["/v1/incidents", "/v1/route", "/v1/chat/completions"])
def test_chunked_bodies_are_held_to_the_limit(tmp_path: Path, path: str) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", max_request_bytes=5000)
    with TestClient(create_app(settings, analyzer=stub_analyzer, models=StubModels())) as client:
        answer = client.post(path, content=_chunks(50_000), headers=JSON)  # no Content-Length: chunked
        assert_one_line_4xx(answer, 413, "larger than 5000 bytes")
        assert client.post(path, content=b"x", headers={**JSON, "content-length": "12abc"}).status_code == 400
        assert 'status="413"' in client.get("/metrics").text


# -- quota and retention ---------------------------------------------------------------------------------

def _submit(client: TestClient, archive: bytes) -> dict[str, Any]:
    answer = client.post("/v1/incidents", content=archive, headers=GZIP)
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_finished_jobs_beyond_the_count_are_removed_with_their_files(tmp_path: Path) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", keep_finished_jobs=2)
    archive = incident_tar(tmp_path)
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        ids = []
        for _ in range(4):
            ids.append(_submit(client, archive)["id"])
            wait_done(client, ids[-1])
        newest = _submit(client, archive)["id"]  # each submission applies retention first
        assert [client.get(f"/v1/incidents/{i}").status_code for i in ids] == [404, 404, 200, 200]
        assert client.get(f"/v1/incidents/{newest}").status_code == 200
        for gone in ids[:2]:
            assert not (tmp_path / "serve" / "incidents" / gone).exists()
            assert not (tmp_path / "serve" / "reports" / gone).exists()


def test_finished_jobs_older_than_the_age_are_removed_but_server_paths_stay(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    write_incident(tiny_incident(), allowed / "tiny")
    settings = ServeSettings(data_dir=tmp_path / "serve", keep_finished_seconds=0.2, allow_server_paths=True,
                             server_path_root=allowed)
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        by_path = client.post("/v1/incidents", json={"path": "tiny"}).json()["id"]
        wait_done(client, by_path)
        time.sleep(0.3)
        _submit(client, incident_tar(tmp_path))
        assert client.get(f"/v1/incidents/{by_path}").status_code == 404
    assert (allowed / "tiny" / "incident.json").is_file(), "retention removed the operator's incident"


def test_quota_makes_room_from_finished_jobs_then_refuses_with_507(tmp_path: Path) -> None:
    archive = incident_tar(tmp_path)
    probe = ServeSettings(data_dir=tmp_path / "probe", workers=0)
    with TestClient(create_app(probe, analyzer=stub_analyzer)) as client:
        _submit(client, archive)
    one_job = sum(f.stat().st_size for f in (tmp_path / "probe" / "incidents").rglob("*") if f.is_file())

    settings = ServeSettings(data_dir=tmp_path / "serve", upload_quota_bytes=int(one_job * 1.5))
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        first = _submit(client, archive)["id"]
        wait_done(client, first)
        _submit(client, archive)  # no room left: the finished first job goes
        assert client.get(f"/v1/incidents/{first}").status_code == 404
    queued_only = ServeSettings(data_dir=tmp_path / "queued", upload_quota_bytes=int(one_job * 1.5), workers=0)
    with TestClient(create_app(queued_only, analyzer=stub_analyzer)) as client:
        _submit(client, archive)
        full = client.post("/v1/incidents", content=archive, headers=GZIP)
        assert full.status_code == 507 and "quota" in full.json()["error"]["message"]
        assert full.headers["retry-after"]
        assert client.get("/healthz").json()["jobs"]["queued"] == 1


# -- generation: back-pressure and timeouts --------------------------------------------------------------

def test_generation_beyond_capacity_gets_429_with_retry_after(tmp_path: Path) -> None:
    models = StubModels()
    models.release.clear()
    settings = ServeSettings(data_dir=tmp_path / "serve", max_concurrent_generations=1)
    app = create_app(settings, analyzer=stub_analyzer, models=models)
    body = {"model": "logs", "messages": [{"role": "user", "content": "hi"}]}

    async def scenario() -> tuple[int, httpx.Response, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.3)
            second = await client.post("/v1/experts/logs/generate", json={"prompt": "hi"})
            health = await client.get("/healthz")
            models.release.set()
            return (await first).status_code, second, health.status_code

    first, second, health = asyncio.run(scenario())
    assert first == 200 and health == 200
    assert_one_line_4xx(second, 429, "capacity")
    assert int(second.headers["retry-after"]) > 0


def test_generation_past_the_timeout_gets_504_and_keeps_its_slot_until_done(tmp_path: Path) -> None:
    models = StubModels(delay_s=0.6)
    settings = ServeSettings(data_dir=tmp_path / "serve", generation_timeout_s=0.2, max_concurrent_generations=1)
    with TestClient(create_app(settings, analyzer=stub_analyzer, models=models)) as client:
        late = client.post("/v1/experts/logs/generate", json={"prompt": "hi"})
        assert late.status_code == 504 and "longer than 0.2 s" in late.json()["error"]["message"]
        busy = client.post("/v1/experts/logs/generate", json={"prompt": "hi"})
        assert busy.status_code == 429  # the abandoned generation is still running
        time.sleep(0.8)
        assert models.finished == 1
        stream = client.post("/v1/chat/completions", json={"model": "logs", "stream": True,
                                                           "messages": [{"role": "user", "content": "hi"}]})
        assert stream.status_code == 200 and "generation timed out" in stream.text
        assert stream.text.rstrip().endswith("data: [DONE]")


# -- idempotency per token, leases -----------------------------------------------------------------------

def test_idempotency_keys_are_scoped_per_token(tmp_path: Path) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", auth="on", tokens=frozenset({"alice", "bob"}))
    archive = incident_tar(tmp_path)
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        def submit(token: str) -> httpx.Response:
            return client.post("/v1/incidents", content=archive,
                               headers={**GZIP, "authorization": f"Bearer {token}", "idempotency-key": "alert-7"})

        alice, alice_again, bob = submit("alice"), submit("alice"), submit("bob")
        assert alice.status_code == 202 and alice_again.status_code == 200 and bob.status_code == 202
        assert alice.json()["id"] == alice_again.json()["id"] != bob.json()["id"]


def test_a_live_worker_keeps_its_lease_and_a_dead_one_loses_it_quickly(tmp_path: Path) -> None:
    def slow(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        time.sleep(1.2)  # longer than the lease, with no progress report
        return stub_analyzer(incident_dir, out_dir, progress)

    settings = ServeSettings(data_dir=tmp_path / "serve", job_lease_s=0.4)
    with TestClient(create_app(settings, analyzer=slow)) as client:
        job_id = _submit(client, incident_tar(tmp_path))["id"]
        time.sleep(0.8)
        assert JobStore(tmp_path / "serve" / "jobs.sqlite", lease_s=0.4).claim("another-worker") is None
        job = wait_done(client, job_id)
    assert job["state"] == "done" and job["attempts"] == 1


# -- sizing to the CPUs Ray has --------------------------------------------------------------------------

@pytest.mark.parametrize(("available", "replicas", "models"), [(2, 1, True), (1, 1, True), (2, 3, True),
                                                               (16, 1, True), (2, 1, False), (0.5, 2, False)])
def test_deployments_fit_the_cpus_they_have(available: float, replicas: int, models: bool) -> None:
    from flipmoe.serve.deployments import REPLICA_CPUS, deployment_cpus

    sizes = deployment_cpus(available, director_replicas=replicas, with_models=models)
    asked = sum(cpus * (replicas if name == "Director" else 1) for name, cpus in sizes.items())
    assert asked <= available + 1e-9
    assert set(sizes) == ({"Ingress", "Director", "Router", "Experts"} if models else {"Ingress", "Director"})
    if available >= 16:
        assert sizes == {name: REPLICA_CPUS[name] for name in sizes}  # enough CPUs: nothing is scaled down


def test_a_restart_requeues_the_jobs_of_dead_processes_at_once(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from flipmoe.serve.jobs import JobStore, worker_name

    store = JobStore(tmp_path / "jobs.sqlite", lease_s=3600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    ids = [store.submit(incident_dir=str(tmp_path / f"in{i}"), out_dir=str(tmp_path / f"out{i}"))[0].id
           for i in range(3)]
    first = store.claim(f"{host}:{dead_pid}:gone")       # its process has exited
    second = store.claim(worker_name("alive"))            # this process, alive
    third = store.claim(f"other-host:{dead_pid}:remote")  # another host: left to its lease
    assert first and second and third
    assert store.release_dead(host) == 1
    assert store.get(first.id).state == "queued"
    assert store.get(second.id).state == store.get(third.id).state == "running"
    assert sorted(ids) == sorted(job.id for job in (first, second, third))


def test_a_staged_upload_no_job_owns_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from flipmoe.serve.jobs import JobStore

    def busy(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    archive = incident_tar(tmp_path)
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=stub_analyzer),
                    raise_server_exceptions=False) as client:
        monkeypatch.setattr(JobStore, "submit", busy)
        answer = client.post("/v1/incidents", content=archive, headers={"content-type": "application/gzip"})
        assert answer.status_code == 500 and "correlation id" in answer.json()["error"]["message"]
    assert not any((tmp_path / "serve" / "incidents").iterdir())
