"""Typed configuration: keyword-only dataclasses with defaults, validated, saved as YAML.

Each part of flipmoe owns one section dataclass; `FlipmoeConfig` gathers them. YAML is only the
storage format: a file is turned into dataclasses (unknown keys and wrong types are errors that
name the key) and every field keeps its default when the file leaves it out.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flipmoe.errors import FlipmoeInputError

T = TypeVar("T")


@dataclass(kw_only=True)
class TelemetryConfig:
    """How telemetry files are read into the incident model."""

    max_message_bytes: int = 65_536
    """Log messages longer than this are truncated (with a warning) so one huge line cannot exhaust memory."""
    max_field_bytes: int = 16 * 1024 * 1024
    """CSV fields longer than this make the file invalid: a single field that large is not telemetry."""
    drop_nan_metric_values: bool = True
    """Metric rows whose value is NaN are dropped with a warning instead of failing the file."""
    max_json_line_bytes: int = 64 * 1024 * 1024
    """Longest line of a JSON Lines file (one OTLP export batch) or JSON document; reading stops there."""

    def __post_init__(self) -> None:
        _require(self.max_message_bytes >= 256, "telemetry.max_message_bytes must be at least 256")
        _require(self.max_field_bytes >= self.max_message_bytes,
                 "telemetry.max_field_bytes must be at least telemetry.max_message_bytes")
        _require(self.max_json_line_bytes >= 1024, "telemetry.max_json_line_bytes must be at least 1024")


@dataclass(kw_only=True)
class ImportConfig:
    """Windows that importers cut around a fault."""

    history_minutes: int = 60
    """Minutes of metrics kept before the incident window, for metric baselines."""
    window_before_minutes: float = 2.0
    """Minutes of telemetry before the alert time that belong to the incident window."""
    window_after_minutes: float = 5.0
    """Minutes of telemetry after the alert time that belong to the incident window."""

    def __post_init__(self) -> None:
        _require(self.history_minutes >= 0, "import.history_minutes must be >= 0")
        _require(self.window_before_minutes >= 0, "import.window_before_minutes must be >= 0")
        _require(self.window_after_minutes > 0, "import.window_after_minutes must be > 0")


@dataclass(kw_only=True)
class SecretRef:
    """Where a secret (token, routing key, webhook URL) is read from: never the config file itself.

    Read when it is used, so a rotated secret (a re-mounted Kubernetes secret, say) takes effect without a
    restart. Leave both empty for none.
    """

    env: str = ""
    """Name of the environment variable that holds it."""
    file: str = ""
    """Path of a file that holds it (surrounding whitespace dropped)."""

    def __post_init__(self) -> None:
        _require(not (self.env and self.file), "a secret is read from env or from file, not both")

    @property
    def is_set(self) -> bool:
        return bool(self.env or self.file)

    def read(self, what: str) -> str:
        """The secret's value; `what` names it in errors, which never contain the value."""
        if self.env:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise FlipmoeInputError(f"{what}: environment variable {self.env} is not set or empty")
            return value
        if self.file:
            try:
                value = Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise FlipmoeInputError(f"{what}: cannot read the secret file ({err.strerror})",
                                        path=self.file) from None
            if not value:
                raise FlipmoeInputError(f"{what}: the secret file is empty", path=self.file)
            return value
        raise FlipmoeInputError(f"{what}: no secret configured", hint="set its env or file")


@dataclass(kw_only=True)
class PrometheusConfig:
    """The Prometheus HTTP API connector."""

    url: str = "http://127.0.0.1:9090"
    """Base URL of the Prometheus server."""
    step_seconds: float = 15.0
    """Resolution of range queries."""
    timeout_seconds: float = 30.0
    """Timeout of one HTTP request."""
    max_points_per_series: int = 11_000
    """Prometheus refuses more than 11,000 points per series; longer ranges are split into chunks."""
    service_label: str = "service"
    """Series label that names the service."""
    pod_label: str = "pod"
    """Series label that names the pod."""
    node_label: str = "node"
    """Series label that names the node."""
    retries: int = 2
    """Extra attempts after a transient failure (connection error, or 502/503/504 from a proxy or a
    server that is not ready); a query Prometheus itself rejects is never retried."""
    retry_backoff_seconds: float = 0.25
    """Wait before the first retry; doubled before each further one."""
    queries: dict[str, str] | list[str] = field(default_factory=list)
    """What an alert pulls (`POST /v1/alertmanager`): a mapping metric name -> PromQL, or a list of PromQL
    (series then named by `__name__`). Empty: no metrics are pulled."""
    token: SecretRef = field(default_factory=SecretRef)
    """Bearer token sent to Prometheus (or the proxy in front of it), if it needs one."""

    def __post_init__(self) -> None:
        _require(self.url.startswith(("http://", "https://")), "prometheus.url must start with http:// or https://")
        _require(self.step_seconds > 0, "prometheus.step_seconds must be > 0")
        _require(self.timeout_seconds > 0, "prometheus.timeout_seconds must be > 0")
        _require(self.max_points_per_series > 1, "prometheus.max_points_per_series must be > 1")
        _require(self.retries >= 0, "prometheus.retries must be >= 0")
        _require(self.retry_backoff_seconds >= 0, "prometheus.retry_backoff_seconds must be >= 0")


@dataclass(kw_only=True)
class LokiConfig:
    """The Loki HTTP API connector (`flipmoe import loki`, and the logs an alert pulls)."""

    url: str = "http://127.0.0.1:3100"
    """Base URL of the Loki server (or its query frontend / gateway)."""
    queries: list[str] = field(default_factory=list)
    """What an alert pulls: LogQL log queries, e.g. `{namespace="prod"}` or `{app=~"checkout|cart"} |= "error"`.
    Empty: no logs are pulled."""
    service_labels: list[str] = field(default_factory=lambda: ["service", "service_name", "app", "job"])
    """Stream labels that name the service, in order of preference; a stream with none of them is dropped."""
    pod_labels: list[str] = field(default_factory=lambda: ["pod", "instance"])
    """Stream labels that name the pod, in order of preference."""
    node_labels: list[str] = field(default_factory=lambda: ["node", "node_name", "host", "hostname"])
    """Stream labels that name the node (recorded as the pod's placement in topology.json)."""
    level_labels: list[str] = field(default_factory=lambda: ["level", "detected_level", "severity"])
    """Stream labels (or structured metadata) that give the level; otherwise it is read off the line."""
    limit: int = 5000
    """Entries asked for per request (Loki refuses more than its max_entries_limit_per_query, 5000 by default);
    a longer window is read page by page."""
    max_lines: int = 200_000
    """Most lines read per query; the rest is left out with a warning."""
    tenant: str = ""
    """Sent as X-Scope-OrgID on a multi-tenant Loki."""
    username: str = ""
    """User of HTTP basic auth (with `password`), e.g. on Grafana Cloud."""
    password: SecretRef = field(default_factory=SecretRef)
    """Password of HTTP basic auth."""
    token: SecretRef = field(default_factory=SecretRef)
    """Bearer token, when Loki sits behind an authenticating proxy."""
    timeout_seconds: float = 30.0
    """Timeout of one HTTP request."""
    retries: int = 2
    """Extra attempts after a transient failure (connection error, 429, 502/503/504)."""
    retry_backoff_seconds: float = 0.25
    """Wait before the first retry; doubled before each further one."""

    def __post_init__(self) -> None:
        _require(self.url.startswith(("http://", "https://")), "loki.url must start with http:// or https://")
        _require(all(isinstance(q, str) and q.strip() for q in self.queries), "loki.queries must be LogQL strings")
        for name in ("service_labels", "pod_labels", "node_labels", "level_labels"):
            _require(all(isinstance(label, str) and label for label in getattr(self, name)),
                     f"loki.{name} must be a list of label names")
        _require(bool(self.service_labels), "loki.service_labels needs at least one label name")
        _require(self.limit >= 1, "loki.limit must be >= 1")
        _require(self.max_lines >= 1, "loki.max_lines must be >= 1")
        _require(not (self.username and self.token.is_set), "loki: use basic auth (username) or a token, not both")
        _require(self.timeout_seconds > 0, "loki.timeout_seconds must be > 0")
        _require(self.retries >= 0, "loki.retries must be >= 0")
        _require(self.retry_backoff_seconds >= 0, "loki.retry_backoff_seconds must be >= 0")


@dataclass(kw_only=True)
class OtlpConfig:
    """OTLP/JSON files (the OpenTelemetry Collector's file exporter) that an alert reads spans from."""

    trace_files: list[str] = field(default_factory=list)
    """Files or directories (every *.json, *.jsonl and their .gz in it); spans that start in the alert's window
    are kept. Empty: no spans are read."""

    def __post_init__(self) -> None:
        _require(all(isinstance(p, str) and p for p in self.trace_files), "otlp.trace_files must be paths")


@dataclass(kw_only=True)
class AlertsConfig:
    """Incidents opened by Alertmanager's webhook (`POST /v1/alertmanager`): the window around the alerts."""

    look_back_minutes: float = 15.0
    """The window starts this long before the earliest firing alert's startsAt."""
    margin_after_minutes: float = 5.0
    """The window ends this long after the latest startsAt, or when the webhook arrived if that is earlier."""
    max_window_minutes: float = 360.0
    """A group whose alerts started further apart is cut to its latest part."""

    def __post_init__(self) -> None:
        _require(self.look_back_minutes > 0, "alerts.look_back_minutes must be > 0")
        _require(self.margin_after_minutes >= 0, "alerts.margin_after_minutes must be >= 0")
        _require(self.max_window_minutes > self.look_back_minutes,
                 "alerts.max_window_minutes must be more than alerts.look_back_minutes")


DELIVERY_KINDS = ("slack", "pagerduty", "webhook")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


@dataclass(kw_only=True)
class DeliveryTarget:
    """One place an alert's analysis is sent to."""

    kind: str
    """`slack` (an incoming webhook; Mattermost and others take the same message), `pagerduty` (Events API v2)
    or `webhook` (the result as JSON)."""
    name: str = ""
    """Names the target in logs and in the job's delivery record (default: the kind)."""
    url: str = ""
    """Where to POST. PagerDuty's defaults to its Events API; for Slack, whose webhook URL holds its token, use
    `url_secret` instead."""
    url_secret: SecretRef = field(default_factory=SecretRef)
    """The URL, when it is itself a secret."""
    token: SecretRef = field(default_factory=SecretRef)
    """PagerDuty: the integration's routing key (required). Webhook: a bearer token, if the receiver wants one."""
    timeout_seconds: float = 10.0
    """Timeout of one POST."""
    retries: int = 3
    """Extra attempts after a transient failure (connection error, 429, 5xx)."""
    retry_backoff_seconds: float = 1.0
    """Wait before the first retry; doubled before each further one."""

    def __post_init__(self) -> None:
        _require(self.kind in DELIVERY_KINDS, f"delivery target kind must be one of {', '.join(DELIVERY_KINDS)}, "
                                              f"got {self.kind!r}")
        if self.kind == "pagerduty" and not self.url and not self.url_secret.is_set:
            self.url = PAGERDUTY_EVENTS_URL
        self.name = self.name or self.kind
        _require(bool(self.url) != self.url_secret.is_set,
                 f"delivery target {self.name!r}: give url or url_secret (exactly one)")
        _require(not self.url or self.url.startswith(("http://", "https://")),
                 f"delivery target {self.name!r}: url must start with http:// or https://")
        _require(self.kind != "pagerduty" or self.token.is_set,
                 f"delivery target {self.name!r}: PagerDuty needs its routing key in token (env or file)")
        _require(self.timeout_seconds > 0, f"delivery target {self.name!r}: timeout_seconds must be > 0")
        _require(self.retries >= 0, f"delivery target {self.name!r}: retries must be >= 0")
        _require(self.retry_backoff_seconds >= 0, f"delivery target {self.name!r}: retry_backoff_seconds must be >= 0")


@dataclass(kw_only=True)
class DeliveryConfig:
    """Where the analysis of an alert goes when it is done (or has failed)."""

    targets: list[DeliveryTarget] = field(default_factory=list)
    """Every target gets every result; one failing does not stop the others."""
    report_base_url: str = ""
    """This service's URL as the readers of the messages reach it (e.g. https://flipmoe.example.com), for the
    link to the report; without it the link is a path."""
    top_causes: int = 3
    """Root causes listed in a message."""

    def __post_init__(self) -> None:
        _require(not self.report_base_url or self.report_base_url.startswith(("http://", "https://")),
                 "delivery.report_base_url must start with http:// or https://")
        _require(self.top_causes >= 1, "delivery.top_causes must be >= 1")
        names = [t.name for t in self.targets]
        _require(len(set(names)) == len(names), "delivery.targets: give each target its own name")


@dataclass(kw_only=True)
class FlipmoeConfig:
    """All of flipmoe's settings; every section has defaults, so an empty file is a valid config."""

    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """Reading telemetry into the incident model."""
    imports: ImportConfig = field(default_factory=ImportConfig)
    """Importer windows."""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    """Prometheus connector."""
    loki: LokiConfig = field(default_factory=LokiConfig)
    """Loki connector."""
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    """OTLP/JSON trace files."""
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    """Incidents opened by Alertmanager."""
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    """Where alert analyses are sent."""

    @classmethod
    def load(cls, path: str | Path) -> FlipmoeConfig:
        return load_yaml(cls, path)

    def save(self, path: str | Path) -> None:
        save_yaml(self, path)


# -- where files go when no flag says ------------------------------------------------------------------
# XDG base directories, never the current directory: a command run from a source tree or from $HOME must
# not leave folders behind there.

def data_home() -> Path:
    """Files a user keeps and opens (demo incidents and reports): `$XDG_DATA_HOME/flipmoe`
    (default `~/.local/share/flipmoe`)."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def state_home() -> Path:
    """Files a program keeps between runs and prunes itself (the service's jobs, uploads and reports):
    `$XDG_STATE_HOME/flipmoe` (default `~/.local/state/flipmoe`)."""
    return _xdg("XDG_STATE_HOME", ".local/state")


def cache_home() -> Path:
    """Files that can be rebuilt (model bundles built on first use): `$XDG_CACHE_HOME/flipmoe`
    (default `~/.cache/flipmoe`)."""
    return _xdg("XDG_CACHE_HOME", ".cache")


def _xdg(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable, "")
    # The XDG spec: a relative path in these variables is invalid and is ignored.
    return (Path(base) if os.path.isabs(base) else Path.home() / fallback) / "flipmoe"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-serialisable data."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build the dataclass `cls` from plain data, checking keys and types; errors name the key."""
    if not isinstance(data, dict):
        raise FlipmoeInputError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FlipmoeInputError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {where or 'config'}",
            hint=f"valid keys: {', '.join(sorted(fields))}",
        )
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}" if where else name)
              for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, where=where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except FlipmoeInputError as err:
                errors.append(str(err))
        raise FlipmoeInputError(f"{where}: {value!r} matches none of {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise FlipmoeInputError(f"{where} must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise FlipmoeInputError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        raise FlipmoeInputError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into the config dataclass `cls`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlipmoeInputError("config file not found", path=path) from None
    except yaml.YAMLError as err:
        raise FlipmoeInputError(f"not valid YAML: {err}", path=path) from None
    try:
        return from_dict(cls, data or {})
    except FlipmoeInputError as err:
        raise FlipmoeInputError(err.problem, path=path, hint=err.hint) from None


def save_yaml(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(_plain(to_dict(config)), sort_keys=False), encoding="utf-8")


def _plain(value: Any) -> Any:
    """Tuples as lists: safe YAML has no tuple type, and `from_dict` turns them back into tuples."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
