"""The HTTP API tested directly (FastAPI's TestClient, no Ray).

The first tests run the real `DirectorAnalyzer` (in-process executor, no model) on a chaos incident
through the app. The `mechanics_` tests check the app itself — safety, limits, auth, idempotency,
durability, metrics — with a stand-in analyzer that writes a placeholder report at once.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient
from http_doubles import wait_done

from data_pipeline.chaos import ChaosConfig, generate_incident
from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.services import DirectorAnalyzer
from flipmoe.telemetry import write_incident


def stub_analyzer(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
    """A stand-in for the Director: a placeholder report naming the incident, for the app-mechanics tests."""
    progress("analysing")
    incident_id = json.loads((incident_dir / "incident.json").read_text(encoding="utf-8"))["id"]
    (out_dir / "report.json").write_text(json.dumps({"incident": incident_id, "root_causes": []}), encoding="utf-8")
    (out_dir / "report.html").write_text("<html><body>placeholder</body></html>", encoding="utf-8")
    return {"incident": incident_id}


def tar_gz(directory: Path, *, nested: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name if nested else ".")
    return buffer.getvalue()


def incident_tar(tmp_path: Path, *, nested: bool = True) -> bytes:
    return tar_gz(write_incident(tiny_incident(), tmp_path / "src" / "tiny"), nested=nested)


# -- the real analyzer ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chaos_incident(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A short web-shop incident (CPU hog in cartservice) written without its label, and the culprit."""
    incident, label = generate_incident("webshop", "cpu_hog", seed=11, window_minutes=6, target="cartservice",
                                        severity=0.9, onset="sudden",
                                        config=ChaosConfig(samples_per_minute=60, load_probes=1))
    return write_incident(incident, tmp_path_factory.mktemp("allowed") / "cpu-hog"), label.service


@pytest.fixture(scope="module")
def director_analyzer() -> DirectorAnalyzer:
    return DirectorAnalyzer(bundle=None)


def assert_real_report(client: TestClient, job: dict[str, Any], culprit: str) -> None:
    assert job["state"] == "done", job
    causes = job["report"]["root_causes"]
    assert [c["rank"] for c in causes] == list(range(1, len(causes) + 1))
    assert [c["score"] for c in causes] == sorted((c["score"] for c in causes), reverse=True)
    assert all(c["evidence"] for c in causes)
    assert {"modality", "summary", "strength", "reference"} <= set(causes[0]["evidence"][0])
    assert culprit in [c["service"] for c in causes[:3]]
    assert job["summary"]["root_causes"][0]["service"] == causes[0]["service"]

    html = client.get(f"/v1/incidents/{job['id']}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    text = html.text
    assert text.startswith("<!DOCTYPE html>") and f"<title>RCA report: {job['report']['incident']}</title>" in text
    assert re.search(r"<h3>1\. " + re.escape(causes[0]["service"]) + "</h3>", text), "top suspect not named"
    # Self-contained: no scripts, stylesheets or images fetched from elsewhere.
    assert "<script" not in text and "<link" not in text
    assert all(src.startswith("data:") for src in re.findall(r"src=['\"]([^'\"]*)", text))


def test_director_reports_an_uploaded_archive(chaos_incident: tuple[Path, str], director_analyzer: DirectorAnalyzer,
                                              tmp_path: Path) -> None:
    incident_dir, culprit = chaos_incident
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=director_analyzer)) as client:
        answer = client.post("/v1/incidents", content=tar_gz(incident_dir),
                             headers={"content-type": "application/gzip"})
        assert answer.status_code == 202, answer.text
        assert_real_report(client, wait_done(client, answer.json()["id"]), culprit)


def test_director_reports_a_server_path_under_the_allowed_root(chaos_incident: tuple[Path, str],
                                                               director_analyzer: DirectorAnalyzer,
                                                               tmp_path: Path) -> None:
    incident_dir, culprit = chaos_incident
    settings = ServeSettings(data_dir=tmp_path / "serve", allow_server_paths=True,
                             server_path_root=incident_dir.parent)
    with TestClient(create_app(settings, analyzer=director_analyzer)) as client:
        answer = client.post("/v1/incidents", json={"path": incident_dir.name})
        assert answer.status_code == 202, answer.text
        assert_real_report(client, wait_done(client, answer.json()["id"]), culprit)
        outside = client.post("/v1/incidents", json={"path": "../../etc"})
        assert outside.status_code == 403 and "outside" in outside.json()["error"]["message"]
        not_incident = client.post("/v1/incidents", json={"path": "."})
        assert not_incident.status_code == 422 and "incident.json" in not_incident.json()["error"]["message"]


def test_director_fails_a_broken_incident_with_the_reason(director_analyzer: DirectorAnalyzer, tmp_path: Path) -> None:
    broken = tmp_path / "src" / "broken"
    broken.mkdir(parents=True)
    (broken / "incident.json").write_text("{not json", encoding="utf-8")
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=director_analyzer)) as client:
        answer = client.post("/v1/incidents", content=tar_gz(broken), headers={"content-type": "application/gzip"})
        assert answer.status_code == 202, answer.text
        job = wait_done(client, answer.json()["id"])
        assert job["state"] == "failed" and "incident.json" in job["error"], job
        assert client.get(f"/v1/incidents/{job['id']}/report.html").status_code == 404


# -- app mechanics, with the stand-in analyzer ------------------------------------------------------

@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=stub_analyzer)
    with TestClient(app) as test_client:
        yield test_client


def test_mechanics_json_telemetry_submission(client: TestClient) -> None:
    incident = tiny_incident()
    payload = {"incident": incident.meta.to_json()}
    for name in ("metrics", "logs", "spans"):
        table = getattr(incident, name)
        payload[name] = json.loads(table.to_json(orient="records", date_format="iso"))
    answer = client.post("/v1/incidents", json=payload)
    assert answer.status_code == 202, answer.text
    job = wait_done(client, answer.json()["id"])
    assert job["state"] == "done" and job["report"]["incident"] == "tiny"


def test_mechanics_bad_json_telemetry_names_the_problem(client: TestClient) -> None:
    incident = tiny_incident()
    answer = client.post("/v1/incidents", json={"incident": incident.meta.to_json(),
                                                 "metrics": [{"timestamp": "not a time", "service": "a",
                                                              "metric": "m", "value": 1.0}]})
    assert answer.status_code == 422
    assert "metrics" in answer.json()["error"]["message"]
    assert client.post("/v1/incidents", json={"metrics": []}).status_code == 422
    assert client.post("/v1/incidents", content=b"{", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/v1/incidents", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_mechanics_idempotency_key_returns_the_same_job(client: TestClient, tmp_path: Path) -> None:
    data = incident_tar(tmp_path)
    headers = {"content-type": "application/gzip", "idempotency-key": "alert-42"}
    first = client.post("/v1/incidents", content=data, headers=headers)
    second = client.post("/v1/incidents", content=data, headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]


def test_mechanics_bad_archives_name_the_problem(client: TestClient, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "readme.txt").write_text("no incident here", encoding="utf-8")
    cases = {tar_gz(empty): "no incident.json", b"definitely not an archive": "not a .tar"}
    for body, problem in cases.items():
        answer = client.post("/v1/incidents", content=body, headers={"content-type": "application/gzip"})
        assert answer.status_code == 422 and problem in answer.json()["error"]["message"], answer.text
    assert client.get("/healthz").json()["jobs"]["queued"] == 0  # nothing half-submitted


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_mechanics_mechanics_archive_path_traversal_is_refused(client: TestClient, tmp_path: Path, member: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("incident.json", "{}")
        archive.writestr(member, "pwned")
    answer = client.post("/v1/incidents", content=buffer.getvalue(), headers={"content-type": "application/zip"})
    assert answer.status_code == 422
    assert "outside" in answer.json()["error"]["message"]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "serve" / "evil.txt").exists()


def test_mechanics_archive_links_are_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("incident.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    answer = client.post("/v1/incidents", content=buffer.getvalue(), headers={"content-type": "application/x-tar"})
    assert answer.status_code == 422 and "link" in answer.json()["error"]["message"]


def test_mechanics_server_paths_are_off_by_default(client: TestClient) -> None:
    answer = client.post("/v1/incidents", json={"path": "/etc"})
    assert answer.status_code == 403 and "server-side paths are disabled" in answer.json()["error"]["message"]


def test_mechanics_request_size_limit(tmp_path: Path) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", max_request_bytes=1000)
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        answer = client.post("/v1/incidents", content=b"x" * 5000, headers={"content-type": "application/gzip"})
        assert answer.status_code == 413 and "larger than 1000 bytes" in answer.json()["error"]["message"]


def test_mechanics_bearer_token_required_beyond_localhost(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no token"):
        create_app(ServeSettings(data_dir=tmp_path / "a", host="0.0.0.0"), analyzer=stub_analyzer)
    settings = ServeSettings(data_dir=tmp_path / "b", host="0.0.0.0", tokens=frozenset({"s3cret"}))
    with TestClient(create_app(settings, analyzer=stub_analyzer)) as client:
        assert client.get("/healthz").status_code == 200  # probes need no token
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_mechanics_failing_analysis_is_reported_not_lost(tmp_path: Path) -> None:
    def broken(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
        raise RuntimeError("analysis exploded")

    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=broken)) as client:
        answer = client.post("/v1/incidents", content=incident_tar(tmp_path),
                             headers={"content-type": "application/gzip"})
        body = wait_done(client, answer.json()["id"])
        assert body["state"] == "failed" and "analysis exploded" in body["error"]
        assert client.get(f"/v1/incidents/{body['id']}/report.html").status_code == 404


def test_mechanics_jobs_of_a_dead_worker_are_claimed_again(tmp_path: Path) -> None:
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


def test_mechanics_metrics_and_health(client: TestClient, tmp_path: Path) -> None:
    client.post("/v1/incidents", content=incident_tar(tmp_path), headers={"content-type": "application/gzip"})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and sum(health["jobs"].values()) == 1
    text = client.get("/metrics").text
    assert 'flipmoe_requests_total{endpoint="/v1/incidents",status="202"} 1.0' in text
    assert "flipmoe_queue_depth" in text and 'flipmoe_jobs{state="done"}' in text


def test_mechanics_models_endpoints_need_a_bundle(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 503
    assert client.post("/v1/route", json={"prompt": "x"}).status_code == 503


def test_mechanics_unknown_job(client: TestClient) -> None:
    answer = client.get("/v1/incidents/deadbeef")
    assert answer.status_code == 404 and answer.json()["error"]["message"] == "no job deadbeef"
    assert client.get("/v1/incidents/..%2F..%2Fetc").status_code == 404
