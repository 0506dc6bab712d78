"""`POST /v1/alertmanager`: Alertmanager's webhook in, telemetry pulled from local Prometheus and Loki doubles
and an OTLP file, the analysis run as a job, the result delivered to local Slack/PagerDuty/webhook receivers.

Every backend and receiver is a real HTTP server on 127.0.0.1 (tests/http_doubles.py). The telemetry has one
injected anomaly: checkout's CPU and latency jump at ONSET, and its logs fill with timeouts. The last test
runs a real Alertmanager (skipped, with the reason, when it is not installed) posting to the app under uvicorn.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from http_doubles import (
    LokiDouble,
    LokiEntry,
    PrometheusDouble,
    Receiver,
    closed_port_url,
    free_port,
    running,
    serving,
    wait_done,
)
from prometheus_server import stop, wait_ready

from flipmoe.config import (
    AlertsConfig,
    DeliveryConfig,
    DeliveryTarget,
    FlipmoeConfig,
    ImportConfig,
    LokiConfig,
    OtlpConfig,
    PrometheusConfig,
    SecretRef,
)
from flipmoe.serve.alertmanager import AlertmanagerWebhook, alert_window, incident_key, plan_incident
from flipmoe.serve.app import ServeSettings, create_app
from flipmoe.serve.jobs import JobStore
from flipmoe.serve.services import DirectorAnalyzer

START = pd.Timestamp("2026-03-01T10:00:00Z")
ONSET = START + pd.Timedelta(minutes=30)
FIRED = ONSET + pd.Timedelta(minutes=1)
PODS = {"frontend": "frontend-6f7-a1", "checkout": "checkout-5d9-b2", "payment": "payment-7c8-c3",
        "cart": "cart-4b6-d4"}


# -- telemetry with one anomaly ---------------------------------------------------------------------------

def metric_samples() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for t in pd.date_range(START, START + pd.Timedelta(minutes=40), freq="15s", inclusive="left"):
        for service, pod in PODS.items():
            hot = service == "checkout" and t >= ONSET
            rows.append((t, "cpu_usage_seconds:rate1m", service, pod, "node-1",
                         (0.9 if hot else 0.2) + rng.normal(0, 0.02)))
            rows.append((t, "http_request_duration_seconds:p95", service, pod, "node-1",
                         (1.2 if hot else 0.05) + rng.normal(0, 0.005)))
    return pd.DataFrame(rows, columns=["timestamp", "__name__", "service", "pod", "node", "value"])


def log_entries() -> list[LokiEntry]:
    rng = np.random.default_rng(1)
    entries, t, i = [], START, 0
    while t < START + pd.Timedelta(minutes=40):
        for service, pod in PODS.items():
            labels = {"namespace": "shop", "app": service, "pod": pod, "node": "node-1"}
            if service == "checkout" and t >= ONSET and i % 2 == 0:
                line = f"level=error msg=\"timeout calling payment after 1000ms\" order={i}"
            else:
                line = f"level=info msg=\"handled request {i} in {rng.integers(2, 9)}ms\""
            entries.append(LokiEntry(t, line, labels))
        t, i = t + pd.Timedelta(seconds=2), i + 1
    return entries


def write_traces(path: Path) -> Path:
    """OTLP/JSON (the collector's file exporter): frontend -> checkout calls, slow after ONSET."""
    def span(trace: str, span_id: str, parent: str, name: str, at: pd.Timestamp, ms: float) -> dict[str, Any]:
        return {"traceId": trace, "spanId": span_id, "parentSpanId": parent, "name": name, "kind": 2,
                "startTimeUnixNano": str(at.value), "endTimeUnixNano": str(at.value + int(ms * 1e6)),
                "status": {"code": 2 if at >= ONSET else 1}}

    def resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                                            {"key": "k8s.pod.name", "value": {"stringValue": PODS[service]}}]},
                "scopeSpans": [{"spans": spans}]}

    lines = []
    for k in range(60):
        at = ONSET - pd.Timedelta(minutes=4) + pd.Timedelta(seconds=8 * k)
        slow = at >= ONSET
        trace, root, child = f"{k + 1:032x}", f"{2 * k + 1:016x}", f"{2 * k + 2:016x}"
        lines.append(json.dumps({"resourceSpans": [
            resource("frontend", [span(trace, root, "", "GET /checkout", at, 1300 if slow else 60)]),
            resource("checkout", [span(trace, child, root, "PlaceOrder", at, 1200 if slow else 40)])]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def payload(*, group: str = '{}/{}:{alertname="HighLatency"}', alerts: list[dict[str, Any]] | None = None,
            status: str = "firing") -> dict[str, Any]:
    """A webhook payload as Alertmanager 0.25 sends it."""
    alerts = alerts if alerts is not None else [firing_alert()]
    return {"receiver": "flipmoe", "status": status, "alerts": alerts,
            "groupLabels": {"alertname": "HighLatency"},
            "commonLabels": {"alertname": "HighLatency", "severity": "critical", "service": "frontend"},
            "commonAnnotations": {"summary": "p95 latency of frontend above 1s"},
            "externalURL": "http://alertmanager:9093", "version": "4", "groupKey": group, "truncatedAlerts": 0}


def firing_alert(*, fingerprint: str = "3f1c2a7be0d9a1c2", starts: pd.Timestamp = FIRED,
                 status: str = "firing") -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "HighLatency", "severity": "critical", "service": "frontend",
                                         "pod": PODS["frontend"]},
            "annotations": {"summary": "p95 latency of frontend above 1s"},
            "startsAt": starts.isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": fingerprint}


def alert_config(*, prometheus: str, loki: str, traces: list[str], receiver: str,
                 secret_env: str = "TEST_SLACK_WEBHOOK") -> FlipmoeConfig:
    return FlipmoeConfig(
        imports=ImportConfig(history_minutes=20),
        prometheus=PrometheusConfig(url=prometheus, retries=1, retry_backoff_seconds=0.01,
                                    queries=['{__name__=~".+"}']),
        loki=LokiConfig(url=loki, queries=['{namespace="shop"}'], limit=1000, retries=1, retry_backoff_seconds=0.01),
        otlp=OtlpConfig(trace_files=traces),
        alerts=AlertsConfig(look_back_minutes=5, margin_after_minutes=2),
        delivery=DeliveryConfig(report_base_url="https://flipmoe.example.com", targets=[
            DeliveryTarget(kind="slack", url_secret=SecretRef(env=secret_env), retry_backoff_seconds=0.01),
            DeliveryTarget(kind="pagerduty", url=f"{receiver}/v2/enqueue", token=SecretRef(env="TEST_PD_KEY"),
                           retry_backoff_seconds=0.01),
            DeliveryTarget(kind="webhook", name="audit", url=f"{receiver}/hook")]))


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[PrometheusDouble, LokiDouble, Receiver]]:
    prometheus, loki, receiver = PrometheusDouble(metric_samples()), LokiDouble(log_entries()), Receiver()
    with running(prometheus, loki, receiver):
        yield prometheus, loki, receiver


@pytest.fixture(scope="module")
def director() -> DirectorAnalyzer:
    return DirectorAnalyzer(bundle=None)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, backends: tuple[PrometheusDouble, LokiDouble, Receiver]) -> str:
    token = "T0123/B0456/slackSecretToken789"
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", f"{backends[2].url}/services/{token}")
    monkeypatch.setenv("TEST_PD_KEY", "pd-routing-key-0042")
    return token


# -- the window and the key (pure) -----------------------------------------------------------------------

def test_window_looks_back_from_the_earliest_alert_and_never_into_the_future() -> None:
    config = AlertsConfig(look_back_minutes=15, margin_after_minutes=5, max_window_minutes=60)
    starts = [FIRED, FIRED + pd.Timedelta(minutes=3)]
    window = alert_window(starts, config, now=FIRED + pd.Timedelta(hours=1))
    assert (window.start, window.end) == (FIRED - pd.Timedelta(minutes=15), FIRED + pd.Timedelta(minutes=8))
    # Sent 40 s after the alert fired: the window ends now, not 5 minutes in the future.
    window = alert_window([FIRED], config, now=FIRED + pd.Timedelta(seconds=40))
    assert window.end == FIRED + pd.Timedelta(seconds=40)
    # Alerts that started hours apart: the window keeps the latest max_window_minutes.
    window = alert_window([FIRED - pd.Timedelta(hours=5), FIRED], config, now=FIRED + pd.Timedelta(hours=1))
    assert window.duration == pd.Timedelta(minutes=60) and window.end == FIRED + pd.Timedelta(minutes=5)


def test_key_is_the_group_and_its_firing_alerts() -> None:
    base = AlertmanagerWebhook.model_validate(payload())
    resent = AlertmanagerWebhook.model_validate(payload(alerts=[firing_alert(), firing_alert(
        fingerprint="0000000000000009", status="resolved")]))
    grown = AlertmanagerWebhook.model_validate(payload(alerts=[firing_alert(), firing_alert(fingerprint="ab12")]))
    refired = AlertmanagerWebhook.model_validate(payload(alerts=[firing_alert(starts=FIRED + pd.Timedelta(hours=2))]))
    other_group = AlertmanagerWebhook.model_validate(payload(group='{}:{alertname="DiskFull"}'))
    assert incident_key(base) == incident_key(resent)
    assert len({incident_key(w) for w in (base, grown, refired, other_group)}) == 4


def test_plan_names_the_alert_scope_and_window() -> None:
    webhook = AlertmanagerWebhook.model_validate(payload(alerts=[firing_alert(), firing_alert(fingerprint="b")]))
    plan = plan_incident(webhook, FlipmoeConfig(alerts=AlertsConfig(look_back_minutes=5, margin_after_minutes=2)),
                         job_id="j", now=FIRED + pd.Timedelta(hours=1))
    meta = plan.meta()
    assert meta.alert == "HighLatency: p95 latency of frontend above 1s (2 alerts firing)"
    assert meta.window.start == FIRED - pd.Timedelta(minutes=5) and meta.window.end == FIRED + pd.Timedelta(minutes=2)
    assert meta.alert_time == FIRED and meta.scope is not None and meta.scope["services"] == ["frontend"]
    assert plan.severity == "critical" and meta.id.startswith("alert-")


# -- the endpoint ----------------------------------------------------------------------------------------

def test_bad_payloads_are_4xx_with_one_line(tmp_path: Path) -> None:
    config = FlipmoeConfig(loki=LokiConfig(queries=['{a="b"}']))
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=_never, config=config)) as client:
        for body, expected in ((payload() | {"version": "3"}, "version: Input should be '4'"),
                               ({k: v for k, v in payload().items() if k != "groupKey"}, "groupKey: Field required"),
                               (payload(alerts=[]), "alerts: List should have at least 1 item"),
                               (payload(alerts=[firing_alert() | {"startsAt": "yesterday"}]), "alerts.0.startsAt"),
                               (payload(alerts=[firing_alert() | {"startsAt": "2026-03-01T10:31:00"}]),
                                "timezone"),
                               (payload(alerts=[firing_alert(starts=pd.Timestamp("1969-07-20T20:17:00Z"))]),
                                "not a plausible alert start")):
            answer = client.post("/v1/alertmanager", json=body)
            error = answer.json()["error"]
            assert answer.status_code == 422 and error["status"] == 422 and expected in error["message"], answer.text
            assert "\n" not in error["message"]
        broken = client.post("/v1/alertmanager", content=b'{"version": "4", ',
                             headers={"content-type": "application/json"})
        assert broken.status_code == 422 and "JSON decode error" in broken.json()["error"]["message"]


def test_resolved_groups_are_not_analysed_and_no_backends_is_503(tmp_path: Path) -> None:
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "a"), analyzer=_never,
                               config=FlipmoeConfig(loki=LokiConfig(queries=['{a="b"}'])))) as client:
        resolved = client.post("/v1/alertmanager", json=payload(status="resolved",
                                                                 alerts=[firing_alert(status="resolved")]))
        assert resolved.status_code == 200 and resolved.json()["accepted"] is False
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "b"), analyzer=_never)) as client:
        answer = client.post("/v1/alertmanager", json=payload())
        assert answer.status_code == 503 and "no telemetry backend is configured" in answer.json()["error"]["message"]


def _never(incident_dir: Path, out_dir: Path, progress: Any) -> dict[str, Any]:
    raise AssertionError("no analysis expected")


def test_alert_to_delivered_report(backends: tuple[PrometheusDouble, LokiDouble, Receiver], secrets: str,
                                   director: DirectorAnalyzer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    prometheus, loki, receiver = backends
    caplog.set_level("DEBUG")
    config = alert_config(prometheus=prometheus.url, loki=loki.url, traces=[str(write_traces(tmp_path / "t.jsonl"))],
                          receiver=receiver.url)
    before, stages = len(receiver.requests), []
    heartbeat = JobStore.heartbeat

    def recording(store: JobStore, job_id: str, worker: str, progress: str) -> None:
        stages.append(progress)  # every stage reported: polling the job row can miss a short one
        heartbeat(store, job_id, worker, progress)
    monkeypatch.setattr(JobStore, "heartbeat", recording)
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=director, config=config)) as client:
        answer = client.post("/v1/alertmanager", json=payload())
        assert answer.status_code == 202, answer.text
        # Alertmanager re-sends the group (repeat_interval, or its delivery timed out): the same job, no second run.
        again = client.post("/v1/alertmanager", json=copy.deepcopy(payload()))
        assert again.status_code == 200 and again.json()["id"] == answer.json()["id"]
        job = wait_done(client, answer.json()["id"])
        assert job["state"] == "done", job
        assert {"pulling telemetry from prometheus", "pulling telemetry from loki"} <= set(stages)
        report = job["report"]
        assert report["root_causes"][0]["service"] == "checkout"
        pulled = tmp_path / "serve" / "incidents" / job["id"] / "incident"
        assert {"metrics.parquet", "logs.parquet", "spans.parquet"} <= {p.name for p in pulled.iterdir()}
        assert "metrics" in report["modalities_used"]
        assert not [g for g in report["gaps"] if g["what"] == "missing telemetry"]
        assert report["window"] == {"start": "2026-03-01T10:26:00Z", "end": "2026-03-01T10:33:00Z"}
        assert [d["ok"] for d in job["summary"]["delivery"]] == [True, True, True]
        assert client.get(f"/v1/incidents/{job['id']}/report.html").status_code == 200
    slack = [r.body for r in receiver.requests[before:] if r.path.startswith("/services/")]
    pagerduty = [r.body for r in receiver.requests[before:] if r.path == "/v2/enqueue"]
    hook = [r.body for r in receiver.requests[before:] if r.path == "/hook"]
    assert len(slack) == len(pagerduty) == len(hook) == 1
    assert "*checkout*" in slack[0]["text"]
    assert f"https://flipmoe.example.com/v1/incidents/{job['id']}/report.html" in slack[0]["text"]
    assert pagerduty[0]["payload"]["component"] == "checkout"
    assert pagerduty[0]["routing_key"] == "pd-routing-key-0042"
    assert hook[0]["root_causes"][0]["service"] == "checkout" and hook[0]["group_key"] == payload()["groupKey"]
    # Only the pulled window was asked for: metrics with history before it, logs for the window.
    loki_starts = {r.params["start"] for r in loki.requests}
    assert str(pd.Timestamp("2026-03-01T10:26:00Z").value) in loki_starts
    assert secrets not in caplog.text and "pd-routing-key-0042" not in caplog.text


def test_a_backend_down_is_named_in_the_report_and_the_message(
        backends: tuple[PrometheusDouble, LokiDouble, Receiver], secrets: str, director: DirectorAnalyzer,
        tmp_path: Path) -> None:
    prometheus, _, receiver = backends
    down = closed_port_url()
    config = alert_config(prometheus=prometheus.url, loki=down, traces=[str(tmp_path / "no-such-dir")],
                          receiver=receiver.url)
    before = len(receiver.requests)
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=director, config=config)) as client:
        job = wait_done(client, client.post("/v1/alertmanager", json=payload(group="g-down")).json()["id"])
    assert job["state"] == "done", job
    missing = [g["reason"] for g in job["report"]["gaps"] if g["what"] == "missing telemetry"]
    assert any(m.startswith(f"logs from Loki: cannot reach Loki at {down}") for m in missing), missing
    assert any(m.startswith("spans from OTLP files:") and "no-such-dir" in m for m in missing), missing
    assert job["report"]["root_causes"][0]["service"] == "checkout"  # the metrics alone still point there
    slack = [r.body for r in receiver.requests[before:] if r.path.startswith("/services/")][0]
    assert "Missing: logs from Loki: cannot reach Loki" in json.dumps(slack["blocks"])


def test_nothing_pulled_fails_the_job_and_delivers_the_failure(
        backends: tuple[PrometheusDouble, LokiDouble, Receiver], secrets: str, director: DirectorAnalyzer,
        tmp_path: Path) -> None:
    receiver = backends[2]
    config = alert_config(prometheus=closed_port_url(), loki=closed_port_url(), traces=[], receiver=receiver.url)
    before = len(receiver.requests)
    with TestClient(create_app(ServeSettings(data_dir=tmp_path / "serve"), analyzer=director, config=config)) as client:
        job = wait_done(client, client.post("/v1/alertmanager", json=payload(group="g-dark")).json()["id"])
    assert job["state"] == "failed" and "no telemetry for" in job["error"] and "cannot reach Prometheus" in job["error"]
    slack = [r.body for r in receiver.requests[before:] if r.path.startswith("/services/")]
    assert len(slack) == 1 and "could not analyse" in slack[0]["text"]
    hook = [r.body for r in receiver.requests[before:] if r.path == "/hook"][0]
    assert hook["state"] == "failed" and "cannot reach Prometheus" in hook["error"]


def test_the_webhook_needs_the_bearer_token_when_auth_is_on(tmp_path: Path) -> None:
    settings = ServeSettings(data_dir=tmp_path / "serve", auth="on", tokens=frozenset({"am-token"}))
    config = FlipmoeConfig(loki=LokiConfig(url=closed_port_url(), queries=['{a="b"}']))
    with TestClient(create_app(settings, analyzer=_never, config=config)) as client:
        assert client.post("/v1/alertmanager", json=payload(status="resolved")).status_code == 401
        resolved = payload(status="resolved", alerts=[firing_alert(status="resolved")])
        answer = client.post("/v1/alertmanager", json=resolved, headers={"authorization": "Bearer am-token"})
        assert answer.status_code == 200


# -- a real Alertmanager (Debian package prometheus-alertmanager) -----------------------------------------

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@contextmanager
def running_alertmanager(workdir: Path, webhook_url: str, token: str) -> Iterator[str]:
    port = free_port()
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "flipmoe", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "flipmoe", "webhook_configs": [{
            "url": webhook_url, "send_resolved": False,
            "http_config": {"authorization": {"type": "Bearer", "credentials": token}}}]}]}))
    assert ALERTMANAGER is not None
    process = subprocess.Popen([ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=(workdir / "alertmanager.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(process, url), (workdir / "alertmanager.log").read_text()
        yield url
    finally:
        stop(process)


@pytest.mark.integration
@pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager is not installed (Debian package "
                                                 "prometheus-alertmanager; .ci/install-prometheus.sh installs it)")
def test_a_real_alertmanager_group_reaches_the_receivers(
        backends: tuple[PrometheusDouble, LokiDouble, Receiver], secrets: str, director: DirectorAnalyzer,
        tmp_path: Path) -> None:
    prometheus, loki, receiver = backends
    config = alert_config(prometheus=prometheus.url, loki=loki.url, traces=[], receiver=receiver.url)
    settings = ServeSettings(data_dir=tmp_path / "serve", auth="on", tokens=frozenset({"am-token"}))
    before = len(receiver.requests)
    with serving(create_app(settings, analyzer=director, config=config)) as flipmoe, \
            running_alertmanager(tmp_path, f"{flipmoe}/v1/alertmanager", "am-token") as alertmanager:
        pushed = httpx.post(f"{alertmanager}/api/v2/alerts", json=[{
            "labels": {"alertname": "HighLatency", "service": "frontend", "severity": "critical"},
            "annotations": {"summary": "p95 latency of frontend above 1s"},
            "startsAt": FIRED.isoformat().replace("+00:00", "Z")}], timeout=5)
        assert pushed.status_code == 200, pushed.text
        deadline = time.time() + 90
        while not [r for r in receiver.requests[before:] if r.path.startswith("/services/")]:
            assert time.time() < deadline, "no Slack message arrived"
            time.sleep(0.2)
        jobs = httpx.get(f"{flipmoe}/metrics", headers={"authorization": "Bearer am-token"}).text
    slack = [r.body for r in receiver.requests[before:] if r.path.startswith("/services/")]
    assert len(slack) == 1 and "*checkout*" in slack[0]["text"], slack
    assert 'flipmoe_requests_total{endpoint="/v1/alertmanager",status="202"} 1.0' in jobs
