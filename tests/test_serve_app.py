"""The HTTP API tested directly (FastAPI's TestClient, no Ray): jobs, safety, generation, metrics."""

from __future__ import annotations

import io
import json
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient

from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.jobs import JobStore
from flipmoe.telemetry import read_incident, write_incident


def analyse(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
    """The real in-process analysis path, as the service's analyzer."""
    from director.analysis import analyse_incident
    from flipmoe.cli._rca import report

    progress("analysing")
    result = report(analyse_incident(read_incident(incident_dir)), top=3)
    (out_dir / "report.json").write_text(json.dumps(result), encoding="utf-8")
    (out_dir / "report.html").write_text("<html><body>report</body></html>", encoding="utf-8")
    return {"top": result["root_causes"][0]["service"] if result["root_causes"] else None}


def incident_tar(tmp_path: Path, *, nested: bool = True) -> bytes:
    directory = write_incident(tiny_incident(), tmp_path / "src" / "tiny")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname="tiny" if nested else ".")
    return buffer.getvalue()


def wait_done(client: TestClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/v1/incidents/{job_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=analyse)
    with TestClient(app) as test_client:
        yield test_client


def test_archive_submission_runs_to_a_report(client: TestClient, tmp_path: Path) -> None:
    answer = client.post("/v1/incidents", content=incident_tar(tmp_path), headers={"content-type": "application/gzip"})
    assert answer.status_code == 202, answer.text
    body = wait_done(client, answer.json()["id"])
    assert body["state"] == "done", body
    assert body["report"]["incident"] == "tiny"
    assert body["report"]["root_causes"]
    html = client.get(f"/v1/incidents/{body['id']}/report.html")
    assert html.status_code == 200 and "report" in html.text


def test_json_telemetry_submission(client: TestClient) -> None:
    incident = tiny_incident()
    payload = {"incident": incident.meta.to_json()}
    for name in ("metrics", "logs", "spans"):
        table = getattr(incident, name)
        payload[name] = json.loads(table.to_json(orient="records", date_format="iso"))
    answer = client.post("/v1/incidents", json=payload)
    assert answer.status_code == 202, answer.text
    assert wait_done(client, answer.json()["id"])["state"] == "done"


def test_bad_json_telemetry_names_the_problem(client: TestClient) -> None:
    incident = tiny_incident()
    answer = client.post("/v1/incidents", json={"incident": incident.meta.to_json(),
                                                 "metrics": [{"timestamp": "not a time", "service": "a",
                                                              "metric": "m", "value": 1.0}]})
    assert answer.status_code == 422
    assert "metrics" in answer.json()["error"]["message"]
    assert client.post("/v1/incidents", json={"metrics": []}).status_code == 422
    assert client.post("/v1/incidents", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/v1/incidents", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_idempotency_key_returns_the_same_job(client: TestClient, tmp_path: Path) -> None:
    data = incident_tar(tmp_path)
    headers = {"content-type": "application/gzip", "idempotency-key": "alert-42"}
    first = client.post("/v1/incidents", content=data, headers=headers)
    second = client.post("/v1/incidents", content=data, headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_archive_path_traversal_is_refused(client: TestClient, tmp_path: Path, member: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("incident.json", "{}")
        archive.writestr(member, "pwned")
    answer = client.post("/v1/incidents", content=buffer.getvalue(), headers={"content-type": "application/zip"})
    assert answer.status_code == 422
    assert "outside" in answer.json()["error"]["message"]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "serve" / "evil.txt").exists()


def test_archive_links_are_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("incident.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    answer = client.post("/v1/incidents", content=buffer.getvalue(), headers={"content-type": "application/x-tar"})
    assert answer.status_code == 422 and "link" in answer.json()["error"]["message"]


def test_server_paths_are_off_by_default(client: TestClient) -> None:
    answer = client.post("/v1/incidents", json={"path": "/etc"})
    assert answer.status_code == 403


def test_server_paths_stay_under_the_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    write_incident(tiny_incident(), root / "tiny")
    settings = ServeSettings(data_dir=tmp_path / "serve", allow_server_paths=True, server_path_root=root)
    with TestClient(create_app(settings, analyzer=analyse)) as client:
        assert client.post("/v1/incidents", json={"path": "../../etc"}).status_code == 403
        answer = client.post("/v1/incidents", json={"path": "tiny"})
        assert answer.status_code == 202
        assert wait_done(client, answer.json()["id"])["state"] == "done"


def test_request_size_limit(tmp_path: Path) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", max_request_bytes=1000)
    with TestClient(create_app(settings, analyzer=analyse)) as client:
        answer = client.post("/v1/incidents", content=b"x" * 5000, headers={"content-type": "application/gzip"})
        assert answer.status_code == 413


def test_bearer_token_required_beyond_localhost(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no token"):
        create_app(ServeSettings(data_dir=tmp_path / "a", host="0.0.0.0"), analyzer=analyse)
    settings = ServeSettings(data_dir=tmp_path / "b", host="0.0.0.0", tokens=frozenset({"s3cret"}))
    with TestClient(create_app(settings, analyzer=analyse)) as client:
        assert client.get("/healthz").status_code == 200  # probes need no token
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_failing_analysis_is_reported_not_lost(tmp_path: Path) -> None:
    def broken(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        raise RuntimeError("analysis exploded")

    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=broken)) as client:
        answer = client.post("/v1/incidents", content=incident_tar(tmp_path),
                             headers={"content-type": "application/gzip"})
        body = wait_done(client, answer.json()["id"])
        assert body["state"] == "failed" and "analysis exploded" in body["error"]
        assert client.get(f"/v1/incidents/{body['id']}/report.html").status_code == 404


def test_jobs_of_a_dead_worker_are_claimed_again(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", lease_s=0.2, max_attempts=2)
    job, _ = store.submit(incident_dir="x", out_dir="y")
    assert store.claim("worker-a").id == job.id  # worker-a dies without finishing
    assert store.claim("worker-b") is None  # lease still valid
    time.sleep(0.3)
    again = store.claim("worker-b")
    assert again is not None and again.id == job.id and again.attempts == 2
    time.sleep(0.3)  # worker-b dies too: attempts are used up, the job fails with the reason
    assert store.claim("worker-c") is None
    failed = store.get(job.id)
    assert failed.state == "failed" and "worker lost" in failed.error


def test_metrics_and_health(client: TestClient, tmp_path: Path) -> None:
    client.post("/v1/incidents", content=incident_tar(tmp_path), headers={"content-type": "application/gzip"})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and sum(health["jobs"].values()) == 1
    text = client.get("/metrics").text
    assert 'flipmoe_requests_total{endpoint="/v1/incidents",status="202"} 1.0' in text
    assert "flipmoe_queue_depth" in text and 'flipmoe_jobs{state="done"}' in text


def test_models_endpoints_need_a_bundle(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 503
    assert client.post("/v1/route", json={"prompt": "x"}).status_code == 503


def test_unknown_job(client: TestClient) -> None:
    assert client.get("/v1/incidents/deadbeef").status_code == 404
    assert client.get("/v1/incidents/..%2F..%2Fetc").status_code == 404
