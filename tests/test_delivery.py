"""Delivery of an alert's analysis: the messages (pure functions) and their sending to local receivers."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_doubles import Receiver, closed_port_url

from flipmoe.config import DeliveryConfig, DeliveryTarget, SecretRef
from flipmoe.errors import FlipmoeInputError
from flipmoe.serve.delivery import Deliverer, Outcome, pagerduty_event, slack_message, webhook_body

CAUSES = [
    {"rank": 1, "service": "checkout", "pod": "checkout-5d9-b2", "node": "node-1", "fault_type": "cpu_hog",
     "fault_type_confidence": 0.82, "score": 0.78, "metric": "cpu", "log_pattern": None},
    {"rank": 2, "service": "payment", "pod": None, "node": None, "fault_type": None, "fault_type_confidence": None,
     "score": 0.12, "metric": None, "log_pattern": None},
]


def outcome(**changes: object) -> Outcome:
    fields: dict[str, object] = dict(
        job_id="j1", incident_id="alert-abc", alert="HighLatency: p95 of <checkout> above 1s", group_key='{}:{a="b"}',
        severity="critical", window={"start": "2026-03-01T10:25:00Z", "end": "2026-03-01T10:33:00Z"},
        causes=CAUSES, summary="checkout's CPU rose 4x at 10:30", report_url="https://flipmoe.example/v1/x/report.html",
        missing=["logs from Loki: cannot reach Loki at http://loki:3100"])
    fields.update(changes)
    return Outcome(**fields)  # type: ignore[arg-type]


def test_slack_message_names_the_cause_fault_type_confidence_and_links_the_report() -> None:
    message = slack_message(outcome())
    assert "*checkout*" in message["text"] and "cpu_hog, confidence 82%" in message["text"]
    assert "<https://flipmoe.example/v1/x/report.html|Open the report>" in message["text"]
    assert "&lt;checkout&gt;" in message["text"]  # alert text cannot inject Slack markup
    blocks = " ".join(str(b) for b in message["blocks"])
    assert "2. *payment*" in blocks and "Missing: logs from Loki" in blocks
    failed = slack_message(outcome(state="failed", error="no telemetry for the window"))
    assert "could not analyse" in failed["text"] and "no telemetry for the window" in failed["text"]


def test_pagerduty_event_follows_events_api_v2_and_alertmanagers_dedup_key() -> None:
    event = pagerduty_event(outcome(), "R0UT1NGKEY")
    assert event["routing_key"] == "R0UT1NGKEY" and event["event_action"] == "trigger"
    assert event["dedup_key"] == hashlib.sha256(b'{}:{a="b"}').hexdigest()
    payload = event["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "flipmoe"
    assert payload["component"] == "checkout" and payload["class"] == "cpu_hog"
    assert len(payload["summary"]) <= 1024 and "checkout" in payload["summary"]
    assert event["links"] == [{"href": "https://flipmoe.example/v1/x/report.html", "text": "flipmoe RCA report"}]
    assert "links" not in pagerduty_event(outcome(report_url="/v1/x/report.html"), "k")  # PagerDuty wants URLs
    assert pagerduty_event(outcome(severity="page-me"), "k")["payload"]["severity"] == "error"
    assert pagerduty_event(outcome(severity="info,warning"), "k")["payload"]["severity"] == "warning"


def test_webhook_body_is_the_outcome_as_data() -> None:
    body = webhook_body(outcome())
    assert body["root_causes"][0]["service"] == "checkout" and body["state"] == "done"
    assert body["missing"] and body["report_url"].endswith("report.html") and body["error"] is None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server  # type: ignore[misc]


def test_every_target_gets_its_message_with_retries(receiver: Receiver, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_URL", f"{receiver.url}/slack/T000/B000/XXXXSECRET")
    (tmp_path / "routing-key").write_text("pd-routing-key-7a1b\n")
    monkeypatch.setenv("TEST_HOOK_TOKEN", "hook-token-55e1")
    config = DeliveryConfig(targets=[
        DeliveryTarget(kind="slack", url_secret=SecretRef(env="TEST_SLACK_URL"), retry_backoff_seconds=0.01),
        DeliveryTarget(kind="pagerduty", url=f"{receiver.url}/v2/enqueue",
                       token=SecretRef(file=str(tmp_path / "routing-key")), retry_backoff_seconds=0.01),
        DeliveryTarget(kind="webhook", name="audit", url=f"{receiver.url}/hook",
                       token=SecretRef(env="TEST_HOOK_TOKEN")),
    ])
    receiver.script(503, 500, 200, 202)  # Slack: two transient failures, then ok; PagerDuty: accepted
    records = Deliverer(config).deliver(outcome())
    assert [(r["target"], r["ok"], r.get("status")) for r in records] == [
        ("slack", True, 200), ("pagerduty", True, 202), ("audit", True, 200)]
    assert len(receiver.messages("/slack/")) == 3
    assert receiver.messages("/v2/enqueue")[0]["routing_key"] == "pd-routing-key-7a1b"
    hook = [r for r in receiver.requests if r.path == "/hook"][0]
    assert hook.headers["authorization"] == "Bearer hook-token-55e1" and hook.body["job_id"] == "j1"


def test_failures_are_recorded_per_target_and_secrets_never_reach_the_logs(
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    slack_secret = "T0AAA/B0BBB/zz9SlackSecretzz"
    monkeypatch.setenv("TEST_SLACK_URL", f"{receiver.url}/slack/{slack_secret}")
    monkeypatch.setenv("TEST_DOWN_URL", f"{closed_port_url()}/hook/{slack_secret}")
    monkeypatch.setenv("TEST_PD_KEY", "pd-key-never-logged-31")
    caplog.set_level(logging.DEBUG)  # httpx logs every URL at INFO
    config = DeliveryConfig(targets=[
        DeliveryTarget(kind="slack", url_secret=SecretRef(env="TEST_SLACK_URL"), retries=0),
        DeliveryTarget(kind="webhook", name="down", url_secret=SecretRef(env="TEST_DOWN_URL"), retries=1,
                       retry_backoff_seconds=0.01),
        DeliveryTarget(kind="pagerduty", url=f"{receiver.url}/v2/enqueue", token=SecretRef(env="TEST_PD_KEY"),
                       retries=0),
        DeliveryTarget(kind="webhook", name="unset", url_secret=SecretRef(env="TEST_NOT_SET")),
    ])
    # Slack refuses, echoing its URL; PagerDuty refuses and echoes the key.
    receiver.script((404, f"no_service /slack/{slack_secret}"), (400, "invalid routing key pd-key-never-logged-31"))
    records = Deliverer(config).deliver(outcome())
    assert [r["ok"] for r in records] == [False, False, False, False]
    assert "refused the message with HTTP 404" in records[0]["error"]
    assert "cannot reach webhook target 'down'" in records[1]["error"] and "after 2 attempt(s)" in records[1]["error"]
    assert "HTTP 400" in records[2]["error"]
    assert "TEST_NOT_SET is not set" in records[3]["error"]
    assert "HTTP Request: POST" in caplog.text  # httpx did log the requests, masked
    for secret in (slack_secret, "pd-key-never-logged-31"):
        assert secret not in caplog.text
        assert all(secret not in str(record) for record in records)


def test_targets_are_validated_when_the_config_is_read() -> None:
    with pytest.raises(FlipmoeInputError, match="routing key"):
        DeliveryTarget(kind="pagerduty")
    with pytest.raises(FlipmoeInputError, match="url or url_secret"):
        DeliveryTarget(kind="slack")
    with pytest.raises(FlipmoeInputError, match="kind must be one of"):
        DeliveryTarget(kind="email", url="http://x")
    with pytest.raises(FlipmoeInputError, match="its own name"):
        DeliveryConfig(targets=[DeliveryTarget(kind="webhook", url="http://a"),
                                DeliveryTarget(kind="webhook", url="http://b")])
