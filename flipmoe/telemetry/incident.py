"""The incident model: what every analysis reads.

An `Incident` is its metadata (id, alert text, time window), the telemetry of the window
(`Telemetry`: metrics, logs, spans, events as long-format DataFrames), an optional fault-free
`baseline` in the same shape, an optional service `Topology`, and an optional source tree. It
carries nothing about the answer: ground truth lives in `label.json` and is read only through
`flipmoe.telemetry.label.load_label`, which evaluation uses and the analysis path never imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flipmoe.errors import FlipmoeInputError

MODALITIES = ("metrics", "logs", "spans", "events")


def utc_timestamp(value: Any, *, what: str = "timestamp") -> pd.Timestamp:
    """Parse one timestamp into a UTC `pd.Timestamp`; a timestamp without timezone is an error."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise FlipmoeInputError(f"{what}: unparseable timestamp {value!r} ({err})") from None
    if ts is pd.NaT:
        raise FlipmoeInputError(f"{what}: missing timestamp")
    if ts.tzinfo is None:
        raise FlipmoeInputError(f"{what}: timestamp {value!r} has no timezone",
                                hint="write it in UTC with a 'Z' suffix")
    return ts.tz_convert("UTC")


@dataclass(frozen=True)
class TimeWindow:
    """A half-open UTC time interval [start, end)."""

    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc_timestamp(self.start, what="window.start"))
        object.__setattr__(self, "end", utc_timestamp(self.end, what="window.end"))
        if not self.start < self.end:
            raise FlipmoeInputError(f"window start {self.start} is not before its end {self.end}")

    @property
    def duration(self) -> pd.Timedelta:
        return self.end - self.start

    def to_json(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}


def _iso(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").isoformat().replace("+00:00", "Z")


@dataclass(kw_only=True)
class IncidentMeta:
    """What the on-call engineer knows when the incident starts; nothing about the answer."""

    id: str
    """Stable identifier, also the incident directory's name."""
    alert: str
    """The alert text, e.g. 'p95 latency of frontend above 1s'."""
    window: TimeWindow
    """The time window to analyse."""
    alert_time: pd.Timestamp | None = None
    """When the alert fired, if known; inside the window."""
    scope: dict[str, Any] | None = None
    """Optional scope hints, e.g. {"services": [...], "namespace": "prod"}."""
    source: str = ""
    """Where the incident came from (importer or generator), for provenance."""
    missing: list[str] = field(default_factory=list)
    """Telemetry that could not be collected (a backend that was down, a query without data), one line each;
    analyses report it as a gap."""

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id or self.id in (".", ".."):
            raise FlipmoeInputError(f"incident id {self.id!r} must be a non-empty name without '/'")
        if self.alert_time is not None:
            self.alert_time = utc_timestamp(self.alert_time, what="alert_time")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "alert": self.alert, "window": self.window.to_json()}
        if self.alert_time is not None:
            data["alert_time"] = _iso(self.alert_time)
        if self.scope is not None:
            data["scope"] = self.scope
        if self.source:
            data["source"] = self.source
        if self.missing:
            data["missing"] = list(self.missing)
        return data

    @classmethod
    def from_json(cls, data: Any, *, path: str, warnings: list[str]) -> IncidentMeta:
        if not isinstance(data, dict):
            raise FlipmoeInputError("must hold a JSON object", path=path)
        known = {"id", "alert", "window", "alert_time", "scope", "source", "missing"}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.append(f"{path}: ignored unknown field(s) {', '.join(unknown)}")
        for key in ("id", "alert", "window"):
            if key not in data:
                raise FlipmoeInputError(f"missing field '{key}'", path=path,
                                        hint="incident.json needs id, alert and window {start, end}")
        window = data["window"]
        if not isinstance(window, dict) or "start" not in window or "end" not in window:
            raise FlipmoeInputError("'window' must be an object with 'start' and 'end'", path=path)
        missing = data.get("missing", [])
        if not isinstance(missing, list):
            raise FlipmoeInputError("'missing' must be a list of strings", path=path)
        try:
            return cls(id=str(data["id"]), alert=str(data["alert"]),
                       window=TimeWindow(window["start"], window["end"]),
                       alert_time=data.get("alert_time"), scope=data.get("scope"),
                       source=str(data.get("source", "")), missing=[str(m) for m in missing])
        except FlipmoeInputError as err:
            raise FlipmoeInputError(err.problem, path=path, hint=err.hint) from None


def call_edges(spans: pd.DataFrame) -> list[tuple[str, str]]:
    """(caller, callee) service pairs: one for every span whose parent span is in another service."""
    n = len(spans)
    if n == 0:
        return []
    # Integer keys (trace, span) and a sorted lookup: a string merge of a day's spans costs ~150 MB more.
    trace = pd.factorize(spans["trace_id"])[0].astype(np.int64)
    ids = pd.factorize(pd.concat([spans["span_id"], spans["parent_span_id"]], ignore_index=True))[0]
    width = int(ids.max()) + 2
    own, parent = trace * width + ids[:n], trace * width + ids[n:]
    order = np.argsort(own, kind="stable")
    found = order[np.minimum(np.searchsorted(own, parent, sorter=order), n - 1)]
    linked = spans["parent_span_id"].notna().to_numpy() & (own[found] == parent)
    service_codes, names = pd.factorize(spans["service"])
    caller, callee = service_codes[found[linked]], service_codes[linked]
    pairs = np.unique(np.stack([caller, callee], axis=1)[caller != callee], axis=0)
    return sorted((str(names[a]), str(names[b])) for a, b in pairs)


@dataclass(kw_only=True)
class Topology:
    """Service dependency graph: `edges` are (caller, callee); `kinds` marks databases and caches."""

    services: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    """Service -> 'service' | 'database' | 'cache' | 'queue' | 'external'."""
    placement: dict[str, str] = field(default_factory=dict)
    """Pod -> node, when known."""

    def to_json(self) -> dict[str, Any]:
        return {"services": self.services, "edges": [list(e) for e in self.edges],
                "kinds": self.kinds, "placement": self.placement}

    @classmethod
    def from_json(cls, data: Any, *, path: str) -> Topology:
        if not isinstance(data, dict):
            raise FlipmoeInputError("must hold a JSON object", path=path)
        edges = data.get("edges", [])
        if not isinstance(edges, list) or not all(isinstance(e, list | tuple) and len(e) == 2 for e in edges):
            raise FlipmoeInputError("'edges' must be a list of [caller, callee] pairs", path=path)
        services = list(data.get("services") or sorted({s for e in edges for s in e}))
        return cls(services=[str(s) for s in services], edges=[(str(a), str(b)) for a, b in edges],
                   kinds=dict(data.get("kinds", {})), placement=dict(data.get("placement", {})))

    @classmethod
    def from_spans(cls, spans: pd.DataFrame, *, placement: dict[str, str] | None = None,
                   services: Iterable[str] = ()) -> Topology:
        """Services of `spans` (plus `services`), with a caller -> callee edge per cross-service call."""
        names = sorted(set(spans["service"].dropna()) | set(services))
        return cls(services=names, edges=call_edges(spans), placement=dict(sorted((placement or {}).items())))

    def callees(self, service: str) -> list[str]:
        return [b for a, b in self.edges if a == service]

    def callers(self, service: str) -> list[str]:
        return [a for a, b in self.edges if b == service]


@dataclass(kw_only=True)
class Telemetry:
    """The four long-format tables of one time window; a missing modality is `None`."""

    metrics: pd.DataFrame | None = None
    logs: pd.DataFrame | None = None
    spans: pd.DataFrame | None = None
    events: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        # An empty table carries no evidence: treat it like a missing modality.
        for name in MODALITIES:
            table = getattr(self, name)
            if table is not None and len(table) == 0:
                setattr(self, name, None)

    @property
    def modalities(self) -> list[str]:
        return [name for name in MODALITIES if getattr(self, name) is not None]

    def table(self, name: str) -> pd.DataFrame | None:
        if name not in MODALITIES:
            raise KeyError(f"unknown modality {name!r}; valid: {', '.join(MODALITIES)}")
        return getattr(self, name)  # type: ignore[no-any-return]

    def slice(
        self,
        *,
        start: Any = None,
        end: Any = None,
        services: Iterable[str] | None = None,
        pods: Iterable[str] | None = None,
    ) -> Telemetry:
        """Rows in [start, end) and (when given) of the listed services or pods."""
        lo = utc_timestamp(start, what="start") if start is not None else None
        hi = utc_timestamp(end, what="end") if end is not None else None
        service_set = set(services) if services is not None else None
        pod_set = set(pods) if pods is not None else None
        sliced = {}
        for name in MODALITIES:
            table = getattr(self, name)
            if table is None:
                continue
            time_col = "start" if name == "spans" else "timestamp"
            mask = pd.Series(True, index=table.index)
            if lo is not None:
                mask &= table[time_col] >= lo
            if hi is not None:
                mask &= table[time_col] < hi
            if service_set is not None:
                mask &= table["service"].isin(service_set).fillna(False)
            if pod_set is not None:
                mask &= table["pod"].isin(pod_set).fillna(False)
            sliced[name] = table[mask.to_numpy()]
        return Telemetry(**sliced)

    def services(self) -> list[str]:
        names: set[str] = set()
        for name in self.modalities:
            names.update(self.table(name)["service"].dropna().unique())  # type: ignore[index]
        return sorted(names)

    def pods(self) -> list[str]:
        names: set[str] = set()
        for name in self.modalities:
            names.update(self.table(name)["pod"].dropna().unique())  # type: ignore[index]
        return sorted(names)


@dataclass(kw_only=True)
class Incident:
    """One incident: metadata, the window's telemetry, optional baseline, topology and code."""

    meta: IncidentMeta
    telemetry: Telemetry = field(default_factory=Telemetry)
    baseline: Telemetry | None = None
    """A fault-free window of the same system, when one exists."""
    topology: Topology | None = None
    code_dir: Path | None = None
    """A source tree the incident carries (code-level faults point into it)."""
    warnings: list[str] = field(default_factory=list)
    """Problems fixed while reading (documented skips); analyses report them."""

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def metrics(self) -> pd.DataFrame | None:
        return self.telemetry.metrics

    @property
    def logs(self) -> pd.DataFrame | None:
        return self.telemetry.logs

    @property
    def spans(self) -> pd.DataFrame | None:
        return self.telemetry.spans

    @property
    def events(self) -> pd.DataFrame | None:
        return self.telemetry.events

    @property
    def modalities(self) -> list[str]:
        return self.telemetry.modalities

    def slice(self, **kwargs: Any) -> Incident:
        """The same incident restricted to a time range, services or pods (see `Telemetry.slice`)."""
        return replace(self, telemetry=self.telemetry.slice(**kwargs))

    def in_window(self) -> Telemetry:
        """Telemetry inside the incident window only (metric history before it is dropped)."""
        return self.telemetry.slice(start=self.meta.window.start, end=self.meta.window.end)
