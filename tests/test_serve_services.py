"""The services behind the HTTP app: the Director as the analyzer, a bundle as the model service."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_incident
from fastapi.testclient import TestClient
from tiny_experts import EXPERT_TASKS, records, tiny_experts, write_bundle

from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.services import BundleModels, DirectorAnalyzer, LocalExperts, RoutedModels
from flipmoe.telemetry import write_incident
from router.bundle import load_router, read_manifest
from router.model import Router
from router.moe import ExpertAnswer, FlipMoE
from router.train import RouterTrainConfig, fit_router

GREEDY = {"max_new_tokens": 4, "stop": [], "temperature": 0.0, "top_p": 1.0}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    router = fit_router(records(80), tuple(EXPERT_TASKS), config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    return write_bundle(tmp_path_factory.mktemp("b") / "bundle", tiny_experts(), router)


@pytest.fixture(scope="module")
def unsure_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose router cannot tell the experts apart, so every request also goes to a fallback expert."""
    trained = fit_router(records(80), tuple(EXPERT_TASKS), config=RouterTrainConfig(c_grid=(3.0,), folds=2))
    unsure = Router(replace(trained.config, threshold=0.5, top_k=2), 0 * trained.weight_EF, 0 * trained.bias_E)
    return write_bundle(tmp_path_factory.mktemp("u") / "bundle", tiny_experts(), unsure)


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
    routed = models.generate("flipmoe", "cpu_usage_percent 1.0 2.0", task=None, **GREEDY)
    assert routed["expert"] in EXPERT_TASKS and "router_scores" in routed
    direct = models.generate("logs", "ERROR db refused", task=None, **GREEDY)
    assert direct["expert"] == "logs"
    streamed = "".join(models.stream("logs", "ERROR db refused", task=None, **GREEDY))
    assert streamed == direct["text"]


@pytest.mark.parametrize("which", ["bundle", "unsure_bundle"])
def test_routed_generation_is_flipmoe_generate(which: str, request: pytest.FixtureRequest) -> None:
    """The service decides as FlipMoE does, the unsure router's fallback (two experts, likelier kept) included."""
    path = request.getfixturevalue(which)
    models, moe = BundleModels(path), FlipMoE.from_bundle(path)
    for prompt, task in [("cpu_usage_percent 1.0 2.0 3.0 99.0", "metric_pattern"), ("ERROR db-1 refused", None)]:
        expected = asdict(moe.generate(prompt, task, max_new_tokens=4))
        served = models.generate("flipmoe", prompt, task=task, **GREEDY)
        assert {k: v for k, v in served.items() if k != "route_ms"} == \
               {k: v for k, v in expected.items() if k != "route_ms"}
        assert len(served["candidates"]) == (2 if which == "unsure_bundle" else 0)
        assert "".join(models.stream("flipmoe", prompt, task=task, **GREEDY)) == expected["text"]


def test_routed_models_reach_experts_only_through_the_injected_calls(unsure_bundle: Path) -> None:
    """What the Serve deployments rely on: one call per asked expert, scored only when the answers compete."""
    local = LocalExperts(unsure_bundle, read_manifest(unsure_bundle))
    calls: list[tuple[str, list[str], str | None, list[bool]]] = []

    class Recording:
        def answer(self, name: str, prompts: list[str], task: str | None, scored: list[bool],
                   options: dict[str, Any]) -> list[ExpertAnswer]:
            calls.append((name, prompts, task, scored))
            return local.answer(name, prompts, task, scored, options)

        def stream(self, name: str, prompt: str, task: str | None, options: dict[str, Any]) -> Any:
            return local.stream(name, prompt, task, options)

    models = RoutedModels(load_router(unsure_bundle), list(EXPERT_TASKS), Recording())
    routed = models.generate("flipmoe", "frontend GET /cart 40ms", task=None, **GREEDY)
    assert sorted(name for name, *_ in calls) == sorted(routed["candidates"])
    assert routed["expert"] in routed["candidates"]
    assert all(scored == [True] for *_, scored in calls)
    calls.clear()
    models.generate("traces", "frontend GET /cart 40ms", task=None, **GREEDY)
    assert calls == [("traces", ["frontend GET /cart 40ms"], None, [False])]


def test_only_the_bundle_loader_reads_experts(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service loads each expert through `router.bundle.load_expert`, once, on first use when not preloaded."""
    import router.bundle

    loaded: list[str] = []
    real = router.bundle.load_expert

    def counting(directory: Any, name: str, **kwargs: Any) -> Any:
        loaded.append(name)
        return real(directory, name, **kwargs)

    monkeypatch.setattr(router.bundle, "load_expert", counting)
    models = BundleModels(bundle, preload=False)
    assert loaded == []
    models.generate("logs", "ERROR db refused", task=None, **GREEDY)
    models.generate("logs", "ERROR db refused again", task=None, **GREEDY)
    assert loaded == ["logs"]
    assert sorted(BundleModels(bundle).local._loaded) == sorted(EXPERT_TASKS)


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
        bogus = client.post("/v1/route", json={"prompt": "x", "bogus": 1})
        assert bogus.status_code == 422 and "bogus" in bogus.json()["error"]["message"]
        too_hot = client.post("/v1/chat/completions", json={**body, "temperature": 5})
        assert too_hot.status_code == 422 and "temperature" in too_hot.json()["error"]["message"]
        unknown = client.post("/v1/chat/completions", json={**body, "model": "nope"})
        assert "unknown model 'nope'" in unknown.json()["error"]["message"]
        routed = client.post("/v1/route", json={"prompt": "frontend GET /cart 30ms"}).json()
        assert routed["expert"] in EXPERT_TASKS


def test_http_routing_keeps_flipmoe_fallback(unsure_bundle: Path, tmp_path: Path) -> None:
    """`/v1/route` and `/v1/chat/completions` with model "flipmoe" answer as `FlipMoE.generate` does."""
    moe = FlipMoE.from_bundle(unsure_bundle)
    prompt = "cpu_usage_percent 3.0 4.0"
    expected = moe.generate(prompt, max_new_tokens=4)
    app = create_app(ServeSettings(data_dir=tmp_path / "serve", workers=0),
                     analyzer=DirectorAnalyzer(use_model=False), models=BundleModels(unsure_bundle))
    with TestClient(app) as client:
        routed = client.post("/v1/route", json={"prompt": prompt}).json()
        decision = moe.route([prompt])[0]
        assert routed["expert"] == decision.expert and routed["fallback"] == decision.fallback
        assert routed["asked"] == decision.candidates and len(routed["asked"]) == 2
        body = {"model": "flipmoe", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}
        answer = client.post("/v1/chat/completions", json=body).json()
        assert answer["choices"][0]["message"]["content"] == expected.text
        assert answer["flipmoe"]["expert"] == expected.expert and answer["flipmoe"]["routed_to"] == expected.routed_to
        assert answer["flipmoe"]["candidates"] == expected.candidates and len(expected.candidates) == 2
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected.text


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
