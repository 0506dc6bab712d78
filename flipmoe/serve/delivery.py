"""Where the analysis of an alert goes: a Slack-compatible chat message, a PagerDuty event, a JSON webhook.

The messages are built by pure functions from an `Outcome` (the alert, the top root causes, the link to
the report, what telemetry was missing, or why the analysis failed), so they are easy to test and to
change. `Deliverer` posts them to every configured target (`delivery.targets`), each with its own
timeout and retries with backoff (`flipmoe.net.send`); one target failing does not stop the others, and
each delivery is recorded (target, ok, status or error) in the job's summary.

Secrets — a routing key, a bearer token, a webhook URL that carries its token as Slack's do — are read
from the environment or a file when a message is sent, masked in what the HTTP client logs, and replaced
by *** in every error this module records or logs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from flipmoe.config import DeliveryConfig, DeliveryTarget
from flipmoe.errors import FlipmoeInputError
from flipmoe.net import RETRY_STATUS, RetryPolicy, ServiceError, hide_in_logs, send

__all__ = ["Outcome", "Deliverer", "pagerduty_event", "slack_message", "webhook_body"]

log = logging.getLogger(__name__)

_PAGERDUTY_SEVERITIES = {"critical": "critical", "page": "critical", "high": "error", "error": "error",
                         "warning": "warning", "warn": "warning", "medium": "warning", "low": "info", "info": "info"}
_SEVERITY_ORDER = ("critical", "error", "warning", "info")


@dataclass(kw_only=True)
class Outcome:
    """What a message says about one alert's analysis."""

    job_id: str
    incident_id: str
    alert: str
    """The alert text of the incident."""
    group_key: str
    """Alertmanager's groupKey of the alerts."""
    severity: str = ""
    """The alerts' `severity` label, if any."""
    window: dict[str, str] = field(default_factory=dict)
    """{'start', 'end'}: ISO-8601 UTC."""
    state: str = "done"
    """'done' or 'failed'."""
    causes: list[dict[str, Any]] = field(default_factory=list)
    """The top root causes of report.json (rank, service, pod, node, fault_type, fault_type_confidence, score,
    metric, log_pattern)."""
    summary: str = ""
    """The report's summary."""
    report_url: str = ""
    """The HTML report: absolute when `delivery.report_base_url` is set, else a path on this service."""
    missing: list[str] = field(default_factory=list)
    """Telemetry that could not be pulled."""
    error: str = ""
    """Why the analysis failed (state 'failed')."""


def slack_message(outcome: Outcome) -> dict[str, Any]:
    """A Slack incoming-webhook message (`text` for notifications and clients without blocks, and blocks)."""
    title = f"flipmoe RCA: {outcome.alert}"
    if outcome.state != "done":
        text = f"*flipmoe could not analyse* {_mrkdwn(outcome.alert)}: {_mrkdwn(outcome.error)}"
        return {"text": text, "blocks": [_section(text)]}
    lines = [f"{cause['rank']}. {_cause_text(cause, bold=True)}" for cause in outcome.causes]
    body = "\n".join(lines) or "_No root cause stood out._"
    link = f"<{outcome.report_url}|Open the report>" if outcome.report_url.startswith("http") else \
        f"Report: `{outcome.report_url}`"
    top = _cause_text(outcome.causes[0], bold=True) if outcome.causes else "no root cause stood out"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150)}},
        _section(f"*Most likely causes*\n{body}"),
    ]
    if outcome.summary:
        blocks.append(_section(_cut(_mrkdwn(outcome.summary), 2900)))
    context = [f"Window {outcome.window.get('start', '?')} .. {outcome.window.get('end', '?')}"]
    if outcome.missing:
        context.append("Missing: " + "; ".join(_mrkdwn(m) for m in outcome.missing))
    blocks += [_section(link), {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(context),
                                                                                                  2900)}]}]
    return {"text": _cut(f"flipmoe RCA for {_mrkdwn(outcome.alert)}: {top}. {link}", 3000), "blocks": blocks}


def pagerduty_event(outcome: Outcome, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 `trigger` event.

    Its dedup_key is the one Alertmanager's own PagerDuty receiver uses for the group (the SHA-256 of the
    groupKey), so the analysis lands on the alert that receiver opened instead of opening another.
    """
    if outcome.state == "done":
        top = _cause_text(outcome.causes[0], bold=False) if outcome.causes else "no root cause stood out"
        summary = f"flipmoe RCA for {outcome.alert}: {top}"
    else:
        summary = f"flipmoe could not analyse {outcome.alert}: {outcome.error}"
    cause = outcome.causes[0] if outcome.causes else {}
    payload: dict[str, Any] = {
        "summary": _cut(summary, 1024), "source": "flipmoe",
        "severity": _pagerduty_severity(outcome.severity),
        "custom_details": _details(outcome),
    }
    if cause.get("service"):
        payload["component"] = cause["service"]
    if cause.get("fault_type"):
        payload["class"] = cause["fault_type"]
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": "trigger",
                             "dedup_key": hashlib.sha256(outcome.group_key.encode()).hexdigest(),
                             "payload": payload, "client": "flipmoe"}
    if outcome.report_url.startswith("http"):
        event["client_url"] = outcome.report_url
        event["links"] = [{"href": outcome.report_url, "text": "flipmoe RCA report"}]
    return event


def _pagerduty_severity(severity: str) -> str:
    """The most severe of the alerts' severities (comma-separated when they differ); "error" when none maps."""
    found = {_PAGERDUTY_SEVERITIES.get(s.strip().lower()) for s in severity.split(",")}
    return next((s for s in _SEVERITY_ORDER if s in found), "error")


def webhook_body(outcome: Outcome) -> dict[str, Any]:
    """The generic JSON webhook: the outcome as data."""
    return {"version": 1, "source": "flipmoe", "group_key": outcome.group_key, **_details(outcome)}


def _details(outcome: Outcome) -> dict[str, Any]:
    return {"job_id": outcome.job_id, "incident": outcome.incident_id, "state": outcome.state,
            "alert": outcome.alert, "severity": outcome.severity, "window": outcome.window,
            "root_causes": outcome.causes, "summary": outcome.summary, "report_url": outcome.report_url,
            "missing": outcome.missing, "error": outcome.error or None}


def _cause_text(cause: dict[str, Any], *, bold: bool) -> str:
    service = _mrkdwn(str(cause.get("service", "?"))) if bold else str(cause.get("service", "?"))
    text = f"*{service}*" if bold else service
    if cause.get("pod"):
        pod = str(cause["pod"])
        text += f" (pod {_mrkdwn(pod) if bold else pod})"
    fault = cause.get("fault_type")
    if fault:
        fault = _mrkdwn(str(fault)) if bold else str(fault)
        confidence = cause.get("fault_type_confidence")
        text += f" — {fault}" + (f", confidence {confidence:.0%}" if isinstance(confidence, int | float) else "")
    score = cause.get("score")
    if isinstance(score, int | float):
        text += f", score {score:.2f}"
    return text


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, 3000)}}


def _mrkdwn(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as markup: escaped, alert text cannot inject links or mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Deliverer:
    """Sends outcomes to the configured targets; `deliver` never raises, it records what happened."""

    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config

    def deliver(self, outcome: Outcome) -> list[dict[str, Any]]:
        """Post `outcome` to every target; one record per target: {target, kind, ok, status | error}."""
        return [self._deliver_one(target, outcome) for target in self.config.targets]

    def _deliver_one(self, target: DeliveryTarget, outcome: Outcome) -> dict[str, Any]:
        secrets: list[str] = []
        record: dict[str, Any] = {"target": target.name, "kind": target.kind}
        service = f"{target.kind} target {target.name!r}" + (f" at {target.url}" if target.url else "")
        try:
            url = target.url or self._secret(target, "url_secret", secrets)
            token = self._secret(target, "token", secrets) if target.token.is_set else ""
            body, headers = _request(target.kind, outcome, token)
            with httpx.Client(timeout=target.timeout_seconds) as client:
                response = send(lambda: client.post(url, json=body, headers=headers), service=service,
                                what="the message", retry_if=_retry_delivery,
                                policy=RetryPolicy(retries=target.retries, backoff_s=target.retry_backoff_seconds,
                                                   timeout_s=target.timeout_seconds))
            if not 200 <= response.status_code < 300:
                reason = (response.text.strip().splitlines() or [""])[0][:200]
                raise ServiceError(service, f"{service} refused the message with HTTP {response.status_code}"
                                            f"{': ' + reason if reason else ''}")
        except FlipmoeInputError as err:
            record.update(ok=False, error=_redact(str(err), secrets))
            log.warning("job %s: could not deliver to %s: %s", outcome.job_id, target.name, record["error"])
            return record
        record.update(ok=True, status=response.status_code)
        log.info("job %s: delivered to %s (HTTP %d)", outcome.job_id, target.name, response.status_code)
        return record

    @staticmethod
    def _secret(target: DeliveryTarget, name: str, secrets: list[str]) -> str:
        value: str = getattr(target, name).read(f"delivery target {target.name!r}: {name}")
        parts = [value]
        if name == "url_secret":  # a receiver may echo the path alone (Slack's token is in it)
            url = urlsplit(value)
            parts += [p for p in (url.path + (f"?{url.query}" if url.query else ""), url.path) if len(p) > 8]
        for part in parts:
            hide_in_logs(part)
            secrets.append(part)
        return value


def _request(kind: str, outcome: Outcome, token: str) -> tuple[dict[str, Any], dict[str, str]]:
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "slack": lambda: slack_message(outcome),
        "pagerduty": lambda: pagerduty_event(outcome, token),
        "webhook": lambda: webhook_body(outcome),
    }
    headers = {"Authorization": f"Bearer {token}"} if token and kind == "webhook" else {}
    return builders[kind](), headers


def _retry_delivery(response: httpx.Response) -> bool:
    # A receiver's 500 is usually passing trouble too (Slack and PagerDuty both ask to retry 5xx).
    return response.status_code in RETRY_STATUS or response.status_code >= 500


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
