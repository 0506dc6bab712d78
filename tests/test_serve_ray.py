"""flipmoe's Serve application on a real local Ray Serve: jobs end to end, routed chat, a replica killed mid-job."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import tiny_incident
from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

from flipmoe.serve.app import ServeSettings
from flipmoe.telemetry import write_incident

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    from ray import serve

    from flipmoe.serve.deployments import build_application
    from router.train import RouterTrainConfig, fit_router

    root = tmp_path_factory.mktemp("serve")
    router = fit_router(records(80), tuple(EXPERT_TASKS), config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    bundle = write_bundle(root / "bundle", tiny_experts(), router)
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(data_dir=root / "data", workers=2)
    serve.run(build_application(settings, bundle=bundle, use_model=False), name="flipmoe", route_prefix="/")
    yield f"http://127.0.0.1:{port}", root
    serve.shutdown()
    ray.shutdown()


def test_incident_job_end_to_end(service) -> None:  # type: ignore[no-untyped-def]
    url, root = service
    archive = _tar(write_incident(tiny_incident(), root / "in" / "tiny"))
    answer = httpx.post(f"{url}/v1/incidents", content=archive, headers={"content-type": "application/gzip"},
                        timeout=60)
    assert answer.status_code == 202, answer.text
    body = _wait(url, answer.json()["id"])
    assert body["state"] == "done", body
    assert body["report"]["incident"] == "tiny" and body["report"]["root_causes"]
    html = httpx.get(f"{url}/v1/incidents/{body['id']}/report.html", timeout=30)
    assert html.status_code == 200 and "<html" in html.text.lower()


def test_routed_chat_and_models(service) -> None:  # type: ignore[no-untyped-def]
    url, _ = service
    models = httpx.get(f"{url}/v1/models", timeout=60).json()
    assert [m["id"] for m in models["data"]] == ["flipmoe", *EXPERT_TASKS]
    body = {"model": "flipmoe", "messages": [{"role": "user", "content": "cpu_usage_percent 1.0 9.0"}], "max_tokens": 4}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["flipmoe"]["expert"] in EXPERT_TASKS
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "model": "logs", "stream": True},
                      timeout=60) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["object"] == "chat.completion.chunk"
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert "flipmoe_requests_total" in metrics


def test_killing_the_director_replica_loses_no_job(service) -> None:  # type: ignore[no-untyped-def]
    import ray

    url, root = service
    archive = _tar(write_incident(tiny_incident(seed=1), root / "in" / "tiny-1"))
    ids = [httpx.post(f"{url}/v1/incidents", content=archive, headers={"content-type": "application/gzip"},
                      timeout=60).json()["id"] for _ in range(3)]
    time.sleep(0.5)
    replica = _director_replica()
    ray.kill(replica, no_restart=False)
    states = [_wait(url, job_id, timeout=240)["state"] for job_id in ids]
    # Every accepted job finishes: done on a restarted replica, or failed with a reason — none is lost.
    for job_id, state in zip(ids, states, strict=True):
        body = httpx.get(f"{url}/v1/incidents/{job_id}", timeout=30).json()
        assert state == "done" or (state == "failed" and body["error"]), body
    assert states.count("done") >= 1


def _director_replica():  # type: ignore[no-untyped-def]
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "#Director#" in actor["name"]:
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError("no Director replica is running")


def _wait(url: str, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = httpx.get(f"{url}/v1/incidents/{job_id}", timeout=30).json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
