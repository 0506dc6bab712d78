"""Serve UX: the console's files and job list, report.md, real progress, XDG folders, a clean stop on SIGTERM.

Most tests use the app directly (FastAPI's TestClient, no Ray). One test starts `flipmoe serve` itself as
a subprocess on a local Ray, runs an incident through it and stops it with SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient

from flipmoe.cli import build_parser
from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.services import DirectorAnalyzer
from flipmoe.telemetry import write_incident

REPO = Path(__file__).resolve().parents[1]


def tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


class SteppedAnalyzer:
    """Goes through three stages, each held until the test lets it pass."""

    STAGES = ("reading the incident", "step localise (1 step(s) done)", "writing the report")

    def __init__(self) -> None:
        self.next = threading.Semaphore(0)

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        for stage in self.STAGES:
            progress(stage)
            assert self.next.acquire(timeout=30)
        (out_dir / "report.json").write_text(json.dumps({"incident": "tiny", "root_causes": []}))
        (out_dir / "report.html").write_text("<html><body>report</body></html>")
        (out_dir / "report.md").write_text("# RCA report: tiny\n\n**Alert:** `p99 > 1s`\n")
        return {"incident": "tiny"}


@pytest.fixture()
def incident_archive(tmp_path: Path) -> bytes:
    return tar_gz(write_incident(tiny_incident(), tmp_path / "src" / "tiny"))


def _submit(client: TestClient, archive: bytes, **headers: str) -> dict[str, Any]:
    answer = client.post("/v1/incidents", content=archive, headers={"content-type": "application/gzip", **headers})
    assert answer.status_code == 202, answer.text
    return answer.json()


def _until(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(what)


def test_progress_follows_the_analysis_and_report_md_is_served(tmp_path: Path, incident_archive: bytes) -> None:
    analyzer = SteppedAnalyzer()
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "data"), analyzer=analyzer)) as client:
        job = _submit(client, incident_archive)
        assert job["links"]["report_md"] == f"/v1/incidents/{job['id']}/report.md"
        assert client.get(job["links"]["report_md"]).status_code == 409  # not written yet
        seen = []
        def at(stage: str) -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/incidents/{job['id']}").json()
            return body if body["progress"] == stage else None

        for stage in SteppedAnalyzer.STAGES:
            body = _until(lambda stage=stage: at(stage), f"progress never showed {stage!r}")
            assert body["state"] == "running"
            seen.append(body["progress"])
            analyzer.next.release()
        assert seen == list(SteppedAnalyzer.STAGES)
        _until(lambda: client.get(f"/v1/incidents/{job['id']}").json()["state"] == "done", "the job did not finish")
        markdown = client.get(job["links"]["report_md"])
        assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text.startswith("# RCA report: tiny")
        assert client.get("/v1/incidents/0123abcd/report.md").json() == {
            "error": {"message": "no job 0123abcd", "status": 404}}


def test_the_director_reports_each_stage_of_its_run(tmp_path: Path) -> None:
    stages: list[str] = []
    directory = write_incident(tiny_incident(), tmp_path / "tiny")
    DirectorAnalyzer(bundle=None)(directory, tmp_path / "out", stages.append)
    assert stages[0] == "reading the incident" and stages[-1] == "writing the report"
    running = [s for s in stages if s.startswith("analysing (")]
    assert any(s.endswith(": triage") for s in running)
    steps = [s for s in running if ": runbook " in s and ": step " in s]
    assert len(steps) >= 3, stages  # each step the runbook waits for, with how many have ended
    assert (tmp_path / "out" / "report.md").is_file()


def test_ray_director_streams_progress_to_the_ingress() -> None:
    """The Director deployment's stream and the ingress's reader, without a cluster."""
    from flipmoe.serve.deployments import Director, _HandleAnalyzer

    replica = object.__new__(Director.func_or_class)
    replica.analyzer = lambda incident_dir, out_dir, progress: (progress("a"), progress("b"), {"incident": "x"})[-1]
    updates = list(replica.analyse("in", "out"))
    assert updates == [{"progress": "a"}, {"progress": "b"}, {"summary": {"incident": "x"}}]

    def failing(incident_dir: Any, out_dir: Any, progress: Any) -> dict[str, Any]:
        progress("a")
        raise ValueError("bad incident")

    replica.analyzer = failing
    stream = replica.analyse("in", "out")
    assert next(stream) == {"progress": "a"}
    with pytest.raises(ValueError, match="bad incident"):
        next(stream)

    class Handle:
        def options(self, *, stream: bool) -> Handle:
            assert stream
            return self

        @property
        def analyse(self) -> Handle:
            return self

        def remote(self, incident_dir: str, out_dir: str) -> Any:
            return iter(updates)

    seen: list[str] = []
    summary = _HandleAnalyzer(Handle())(Path("in"), Path("out"), seen.append)  # type: ignore[arg-type]
    assert summary == {"incident": "x"} and seen == ["queued at the director", "a", "b"]


def test_console_is_served_without_a_token_but_its_api_calls_need_one(tmp_path: Path,
                                                                       incident_archive: bytes) -> None:
    settings = ServeSettings(data_dir=tmp_path / "data", auth="on", tokens=frozenset({"t0k"}))
    analyzer = SteppedAnalyzer()
    with TestClient(create_app(settings, analyzer=analyzer)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            asset = client.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        # Only the console's own files, and nothing from elsewhere.
        assert client.get("/console/..%2Fapp.py").status_code == 404
        assert client.get("/console/app.py").status_code == 404
        for text in (page.text, client.get("/console/console.js").text, client.get("/console/console.css").text):
            assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert client.get("/v1/incidents").status_code == 401
        auth = {"authorization": "Bearer t0k"}
        first = _submit(client, incident_archive, **auth)
        second = _submit(client, incident_archive, **auth)
        listed = client.get("/v1/incidents?limit=10", headers=auth).json()["jobs"]
        assert [job["id"] for job in listed] == [second["id"], first["id"]]
        assert listed[0]["links"]["report_html"].endswith("/report.html")
        assert client.get("/v1/incidents?limit=0", headers=auth).status_code == 422
        for _ in range(2 * len(SteppedAnalyzer.STAGES)):  # let both jobs finish before the service stops
            analyzer.next.release()


def test_files_default_to_xdg_folders_not_the_current_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from flipmoe.config import cache_home, data_home, state_home
    from router.bundle import cache_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ServeSettings().data_dir == tmp_path / "state" / "flipmoe" / "serve"
    assert (data_home(), state_home(), cache_home()) == (tmp_path / "data" / "flipmoe",
                                                         tmp_path / "state" / "flipmoe",
                                                         tmp_path / "cache" / "flipmoe")
    assert cache_dir() == tmp_path / "cache" / "flipmoe" / "bundles"
    demo = build_parser().parse_args(["demo"])
    assert (demo.incidents, demo.out) == (str(tmp_path / "data" / "flipmoe" / "demo" / "incidents"),
                                          str(tmp_path / "data" / "flipmoe" / "demo" / "reports"))
    assert build_parser().parse_args(["serve"]).data_dir is None  # resolved to the XDG default at start
    # Unset or relative (invalid by the XDG spec): the home directory's defaults.
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_home() == tmp_path / "home" / ".local" / "state" / "flipmoe"
    assert data_home() == tmp_path / "home" / ".local" / "share" / "flipmoe"


# -- `flipmoe serve` itself, on a local Ray ----------------------------------------------------------------

@pytest.mark.integration
def test_flipmoe_serve_shows_progress_and_stops_cleanly_on_sigterm(tmp_path: Path, incident_archive: bytes) -> None:
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "RAY_worker_niceness": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "flipmoe", "serve", "--no-model", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    url = f"http://127.0.0.1:{port}"
    progress: list[str] = []
    try:
        _until(lambda: _healthy(url) or server.poll() is not None, "flipmoe serve did not start", timeout=240)
        assert server.poll() is None, "flipmoe serve exited while starting"
        answer = httpx.post(f"{url}/v1/incidents", content=incident_archive,
                            headers={"content-type": "application/gzip"}, timeout=60)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        deadline = time.time() + 240
        while time.time() < deadline:
            body = httpx.get(f"{url}/v1/incidents/{job_id}", timeout=30).json()
            if body["progress"] not in progress:
                progress.append(body["progress"])
            if body["state"] in ("done", "failed"):
                break
            time.sleep(0.05)
        assert body["state"] == "done", body
        # Progress went past the hand-over to the Director replica: its stages were streamed back.
        assert set(progress) - {"", "started", "queued at the director", "done"}, progress
        assert httpx.get(f"{url}/v1/incidents/{job_id}/report.md", timeout=30).text.startswith("# RCA report")
        assert "flipmoe console" in httpx.get(f"{url}/", timeout=30).text
        # The data folder is the XDG default, not the current directory.
        assert (tmp_path / "state" / "flipmoe" / "serve" / "reports" / job_id / "report.html").is_file()
        assert not (tmp_path / "flipmoe-serve").exists()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = server.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            stdout, stderr = server.communicate()
        print(f"progress seen: {progress}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-6000:]}")
    assert server.returncode == 0, stderr[-3000:]
    assert "SIGTERM received; shutting down" in stderr
    for dump in ("*** SIGTERM received at", "PC: @", "Aborted", "Traceback", "stack trace"):
        assert dump not in stderr, dump


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
