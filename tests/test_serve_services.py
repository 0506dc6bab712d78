"""The services behind the HTTP app: the Director as the analyzer, a bundle as the model service."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient
from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.services import BundleModels, DirectorAnalyzer
from flipmoe.telemetry import write_incident
from router.train import RouterTrainConfig, fit_router


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    router = fit_router(records(80), tuple(EXPERT_TASKS), config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    return write_bundle(tmp_path_factory.mktemp("b") / "bundle", tiny_experts(), router)


def test_director_analyzer_writes_all_three_reports(tmp_path: Path) -> None:
    incident_dir = write_incident(tiny_incident(), tmp_path / "tiny")
    stages: list[str] = []
    summary = DirectorAnalyzer(use_model=False)(incident_dir, tmp_path / "out", stages.append)
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"report.json", "report.md", "report.html"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["incident"] == "tiny" and report["root_causes"]
    assert summary["root_causes"][0]["service"] == report["root_causes"][0]["service"]
    assert stages[0] == "reading the incident" and stages[-1] == "writing the report"


def test_bundle_models_route_and_generate(bundle: Path) -> None:
    models = BundleModels(bundle)
    assert models.model_names() == ["flipmoe", *EXPERT_TASKS]
    decision = models.route("cpu_usage_percent 1.0 2.0 3.0 99.0", None)
    assert decision["expert"] in EXPERT_TASKS and abs(sum(decision["scores"].values()) - 1) < 1e-6
    routed = models.generate("flipmoe", "cpu_usage_percent 1.0 2.0", task=None, max_new_tokens=4, stop=[],
                             temperature=0.0, top_p=1.0)
    assert routed["expert"] in EXPERT_TASKS and "router_scores" in routed
    direct = models.generate("logs", "ERROR db refused", task=None, max_new_tokens=4, stop=[], temperature=0.0,
                             top_p=1.0)
    assert direct["expert"] == "logs"
    streamed = "".join(models.stream("logs", "ERROR db refused", task=None, max_new_tokens=4, stop=[],
                                     temperature=0.0, top_p=1.0))
    assert streamed == direct["text"]


def test_openai_compatible_chat_over_a_bundle(bundle: Path, tmp_path: Path) -> None:
    app = create_app(ServeSettings(data_dir=tmp_path / "serve", workers=0),
                     analyzer=DirectorAnalyzer(use_model=False), models=BundleModels(bundle))
    with TestClient(app) as client:
        listed = client.get("/v1/models").json()
        assert [m["id"] for m in listed["data"]] == ["flipmoe", *EXPERT_TASKS]
        body = {"model": "flipmoe", "messages": [{"role": "user", "content": "cpu_usage_percent 3.0 4.0"}],
                "max_tokens": 4}
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        choice = answer.json()["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
        assert answer.json()["flipmoe"]["expert"] in EXPERT_TASKS
        with client.stream("POST", "/v1/chat/completions", json={**body, "model": "logs", "stream": True}) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert client.post("/v1/chat/completions", json={**body, "model": "nope"}).status_code == 404
        assert client.post("/v1/chat/completions", json={"model": "flipmoe", "messages": []}).status_code == 422
        generated = client.post("/v1/experts/traces/generate", json={"prompt": "frontend GET /cart", "max_tokens": 3})
        assert generated.status_code == 200 and generated.json()["expert"] == "traces"
        assert client.post("/v1/route", json={"prompt": "x", "bogus": 1}).status_code == 422
        routed = client.post("/v1/route", json={"prompt": "frontend GET /cart 30ms"}).json()
        assert routed["expert"] in EXPERT_TASKS


def test_a_job_left_by_a_dead_process_is_finished_by_the_next(tmp_path: Path) -> None:
    """Durability: a job accepted by one process whose worker died is run by the next one sharing data_dir."""
    write_incident(tiny_incident(), tmp_path / "incidents" / "tiny")
    settings = ServeSettings(data_dir=tmp_path / "serve", workers=0)
    app = create_app(settings, analyzer=DirectorAnalyzer(use_model=False))
    with TestClient(app) as client:
        job_id = client.post("/v1/incidents", content=_tar(tmp_path / "incidents" / "tiny"),
                             headers={"content-type": "application/gzip"}).json()["id"]
    # A worker claims it with a lease that has already run out, and dies without a heartbeat.
    assert JobStore(tmp_path / "serve" / "jobs.sqlite", lease_s=0.0).claim("dead-worker").id == job_id
    survivor = create_app(ServeSettings(data_dir=tmp_path / "serve", workers=1),
                          analyzer=DirectorAnalyzer(use_model=False))
    with TestClient(survivor) as client:
        deadline = time.time() + 60
        while (body := client.get(f"/v1/incidents/{job_id}").json())["state"] not in ("done", "failed"):
            assert time.time() < deadline, body
            time.sleep(0.2)
    assert body["state"] == "done" and body["attempts"] == 2 and body["report"]["incident"] == "tiny"


def _tar(directory: Path) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()
