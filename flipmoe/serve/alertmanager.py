"""Incidents opened by Alertmanager: its webhook payload (version 4) in, the analysis delivered out.

```
POST /v1/alertmanager ──► one job per group and set of firing alerts (idempotent) ──► 202 + the job
job thread: pull the window's telemetry (Prometheus, Loki, OTLP files) ──► analyse ──► deliver
```
The endpoint only plans: `plan_incident` turns the payload into an `AlertRequest` — the incident's id,
alert text, scope (the alerts' service and pod labels) and window: from `alerts.look_back_minutes` before
the earliest firing alert's `startsAt` to `alerts.margin_after_minutes` after the latest, but no later
than the moment the webhook arrived. The request is written as `alertmanager.json` in the job's directory;
`AlertJobs`, the analyzer the job threads run, sees it, pulls the telemetry into `incident/` beside it,
runs the analysis and delivers the result (`flipmoe.serve.delivery`) — the failure, too, if it fails.

Alertmanager re-sends a group on every `repeat_interval`, and again when a delivery timed out: the job's
idempotency key is the groupKey with the fingerprints and start times of its firing alerts, so a re-sent
group returns its job, while a group that gained an alert (or one that fired again) is analysed anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import AwareDatetime, Field, field_validator

from flipmoe.config import AlertsConfig, FlipmoeConfig
from flipmoe.importers.backends import pull_incident
from flipmoe.serve.delivery import Deliverer, Outcome
from flipmoe.serve.ingest import JsonBody
from flipmoe.telemetry import IncidentMeta, TimeWindow, write_incident

__all__ = ["ALERT_FILE", "AlertJobs", "AlertRequest", "AlertmanagerWebhook", "alert_window", "incident_key",
           "plan_incident"]

log = logging.getLogger(__name__)

ALERT_FILE = "alertmanager.json"
"""In an alert job's directory: the planned incident; the telemetry pulled for it goes to `PULLED_DIR`."""
PULLED_DIR = "incident"
_MAX_ALERT_TEXT = 500
_EARLIEST, _LATEST = datetime(1971, 1, 1, tzinfo=timezone.utc), datetime(2261, 12, 31, tzinfo=timezone.utc)


class AlertmanagerAlert(JsonBody):
    """One alert of the webhook payload."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""

    @field_validator("startsAt")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        # Telemetry timestamps are nanoseconds since 1970 (pandas holds them up to 2262).
        if not _EARLIEST <= value <= _LATEST:
            raise ValueError(f"{value.isoformat()} is not a plausible alert start (1971 .. 2261)")
        return value


class AlertmanagerWebhook(JsonBody):
    """Alertmanager's webhook payload, version 4 (prometheus.io/docs/alerting/latest/configuration/#webhook_config);
    its field names are Alertmanager's. Fields Alertmanager may add later are ignored."""

    version: Literal["4"]
    groupKey: str = Field(min_length=1, max_length=8192)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=10_000)

    @property
    def firing(self) -> list[AlertmanagerAlert]:
        return [alert for alert in self.alerts if alert.status == "firing"]


def incident_key(webhook: AlertmanagerWebhook) -> str:
    """One key per group and set of firing alerts: a re-sent group has the same, a changed one another."""
    alerts = sorted(f"{alert.fingerprint or _labels_digest(alert.labels)}@{_iso(alert.startsAt)}"
                    for alert in webhook.firing)
    return hashlib.sha256("\n".join([webhook.groupKey, *alerts]).encode()).hexdigest()


def _labels_digest(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def alert_window(starts: list[pd.Timestamp], config: AlertsConfig, *, now: pd.Timestamp) -> TimeWindow:
    """The incident window around alerts that started at `starts` (see the module docstring)."""
    earliest, latest = min(starts), max(starts)
    end = latest + pd.Timedelta(minutes=config.margin_after_minutes)
    if latest < now:  # the future holds no telemetry yet
        end = min(end, now)
    end = max(end, latest + pd.Timedelta(seconds=1))  # the alert itself lies inside the half-open window
    start = max(earliest - pd.Timedelta(minutes=config.look_back_minutes),
                end - pd.Timedelta(minutes=config.max_window_minutes))
    return TimeWindow(start, end)


@dataclass(kw_only=True)
class AlertRequest:
    """A planned alert job, as `alertmanager.json` holds it."""

    job_id: str
    group_key: str
    incident: dict[str, Any]
    """The incident's `IncidentMeta.to_json()`: id, alert text, window, alert time, scope, source."""
    severity: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    """The labels all firing alerts share."""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """The firing alerts: labels, annotations, startsAt, generatorURL, fingerprint."""

    def meta(self) -> IncidentMeta:
        return IncidentMeta.from_json(self.incident, path=ALERT_FILE, warnings=[])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertRequest:
        return cls(**data)


def plan_incident(webhook: AlertmanagerWebhook, config: FlipmoeConfig, *, job_id: str,
                  now: pd.Timestamp | None = None) -> AlertRequest:
    """The incident a firing group opens (its telemetry is pulled later, by the job)."""
    firing = webhook.firing
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    starts = [pd.Timestamp(alert.startsAt).tz_convert("UTC") for alert in firing]
    window = alert_window(starts, config.alerts, now=now)
    alert_time = min(max(min(starts), window.start), window.end - pd.Timedelta(seconds=1))
    meta = IncidentMeta(id=f"alert-{incident_key(webhook)[:12]}", alert=_alert_text(webhook, firing), window=window,
                        alert_time=alert_time, scope=_scope(firing, webhook.commonLabels, config),
                        source=f"alertmanager {webhook.externalURL or webhook.receiver}".strip())
    severities = {alert.labels.get("severity", "") for alert in firing} - {""}
    return AlertRequest(
        job_id=job_id, group_key=webhook.groupKey, incident=meta.to_json(),
        severity=webhook.commonLabels.get("severity") or ",".join(sorted(severities)),
        labels=dict(webhook.commonLabels),
        alerts=[{"labels": a.labels, "annotations": a.annotations, "startsAt": _iso(a.startsAt),
                 "generatorURL": a.generatorURL, "fingerprint": a.fingerprint} for a in firing])


def _alert_text(webhook: AlertmanagerWebhook, firing: list[AlertmanagerAlert]) -> str:
    names = sorted({alert.labels.get("alertname", "") for alert in firing} - {""}) or ["alert"]
    first = firing[0].annotations
    detail = next((text for text in (webhook.commonAnnotations.get("summary"), first.get("summary"),
                                     webhook.commonAnnotations.get("description"), first.get("description")) if text),
                  "")
    text = ", ".join(names) + (f": {detail}" if detail else "")
    if len(firing) > 1:
        text += f" ({len(firing)} alerts firing)"
    return " ".join(text.split())[:_MAX_ALERT_TEXT]


def _scope(firing: list[AlertmanagerAlert], common: dict[str, str], config: FlipmoeConfig) -> dict[str, Any] | None:
    """The services and pods the alerts name (by the label names Prometheus series use), and their common labels."""
    scope: dict[str, Any] = {}
    for key, names in (("services", (config.prometheus.service_label, "service", "job")),
                       ("pods", (config.prometheus.pod_label, "pod"))):
        values = {next((alert.labels[n] for n in names if alert.labels.get(n)), "") for alert in firing} - {""}
        if values:
            scope[key] = sorted(values)
    if common:
        scope["labels"] = dict(common)
    return scope or None


def _iso(value: Any) -> str:
    return pd.Timestamp(value).tz_convert("UTC").isoformat().replace("+00:00", "Z")


Analyse = Callable[[Path, Path, Callable[[str], None]], dict[str, Any]]


class AlertJobs:
    """The job threads' analyzer: an alert job is pulled, analysed and delivered; any other job is analysed.

    `analyzer` runs the RCA path on an incident directory (the app's `Analyzer`).
    """

    def __init__(self, analyzer: Analyse, config: FlipmoeConfig) -> None:
        self.analyzer, self.config = analyzer, config
        self.deliverer = Deliverer(config.delivery)

    def __call__(self, incident_dir: Path, out_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
        planned = incident_dir / ALERT_FILE
        if not planned.is_file():
            return self.analyzer(incident_dir, out_dir, progress)
        request = AlertRequest.from_json(json.loads(planned.read_text(encoding="utf-8")))
        try:
            pulled = self._pull(request, incident_dir / PULLED_DIR, progress)
            missing = json.loads((pulled / "incident.json").read_text(encoding="utf-8")).get("missing", [])
            summary = self.analyzer(pulled, out_dir, progress)
        except Exception as err:
            progress("delivering the failure")
            lines = str(err).strip().splitlines()
            self.deliverer.deliver(self._outcome(request, state="failed", error=lines[0][:300] if lines else
                                                 type(err).__name__))
            raise
        progress("delivering the result")
        outcome = self._outcome(request, report=_read_report(out_dir), missing=missing)
        return {**summary, "group_key": request.group_key, "missing": missing,
                "delivery": self.deliverer.deliver(outcome)}

    def _pull(self, request: AlertRequest, target: Path, progress: Callable[[str], None]) -> Path:
        if (target / "incident.json").is_file():  # a job run again after its worker died: pulled already
            return target
        incident = pull_incident(request.meta(), self.config, progress=progress)
        for line in incident.meta.missing:
            log.warning("job %s: %s", request.job_id, line)
        return write_incident(incident, target, overwrite=True)

    def _outcome(self, request: AlertRequest, *, state: str = "done", report: dict[str, Any] | None = None,
                 missing: list[str] | None = None, error: str = "") -> Outcome:
        report = report or {}
        keys = ("rank", "service", "pod", "node", "fault_type", "fault_type_confidence", "score", "metric",
                "log_pattern")
        causes = [{key: cause.get(key) for key in keys}
                  for cause in report.get("root_causes", [])[:self.config.delivery.top_causes]]
        return Outcome(job_id=request.job_id, incident_id=request.incident["id"], alert=request.incident["alert"],
                       group_key=request.group_key, severity=request.severity, window=request.incident["window"],
                       state=state, causes=causes, summary=str(report.get("summary", "")),
                       report_url=f"{self.config.delivery.report_base_url.rstrip('/')}/v1/incidents/"
                                  f"{request.job_id}/report.html",
                       missing=list(missing or []), error=error)


def _read_report(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    return report if isinstance(report, dict) else {}
