"""Typed configuration: keyword-only dataclasses with defaults, validated, saved as YAML.

Each part of flipmoe owns one section dataclass; `FlipmoeConfig` gathers them. YAML is only the
storage format: a file is turned into dataclasses (unknown keys and wrong types are errors that
name the key) and every field keeps its default when the file leaves it out.
"""

from __future__ import annotations

import dataclasses
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

    def __post_init__(self) -> None:
        _require(self.url.startswith(("http://", "https://")), "prometheus.url must start with http:// or https://")
        _require(self.step_seconds > 0, "prometheus.step_seconds must be > 0")
        _require(self.timeout_seconds > 0, "prometheus.timeout_seconds must be > 0")
        _require(self.max_points_per_series > 1, "prometheus.max_points_per_series must be > 1")
        _require(self.retries >= 0, "prometheus.retries must be >= 0")
        _require(self.retry_backoff_seconds >= 0, "prometheus.retry_backoff_seconds must be >= 0")


@dataclass(kw_only=True)
class FlipmoeConfig:
    """All of flipmoe's settings; every section has defaults, so an empty file is a valid config."""

    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """Reading telemetry into the incident model."""
    imports: ImportConfig = field(default_factory=ImportConfig)
    """Importer windows."""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    """Prometheus connector."""

    @classmethod
    def load(cls, path: str | Path) -> FlipmoeConfig:
        return load_yaml(cls, path)

    def save(self, path: str | Path) -> None:
        save_yaml(self, path)


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
