"""An incident pulled live from the configured backends: Prometheus metrics, Loki logs, OTLP trace files.

`pull_incident` is what an alert needs (`POST /v1/alertmanager`): given a window, it asks every backend
that has queries (or files) configured, and keeps going when one of them is down or returns nothing: the
incident is written with what could be had, and `IncidentMeta.missing` says, per backend, what is absent
and why, so the report does too. Only when no backend gave anything is there no incident to analyse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from flipmoe.config import FlipmoeConfig, OtlpConfig
from flipmoe.errors import FlipmoeInputError
from flipmoe.importers.loki import fetch_logs
from flipmoe.importers.otlp import read_otlp
from flipmoe.importers.prometheus import fetch_metrics
from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, Topology

__all__ = ["configured_backends", "pull_incident", "trace_files"]

_OTLP_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def configured_backends(config: FlipmoeConfig) -> list[str]:
    """The backends an alert pulls from: those with queries or files configured."""
    return [name for name, on in (("prometheus", bool(config.prometheus.queries)), ("loki", bool(config.loki.queries)),
                                  ("otlp", bool(config.otlp.trace_files))) if on]


def pull_incident(meta: IncidentMeta, config: FlipmoeConfig, *,
                  progress: Callable[[str], None] | None = None) -> Incident:
    """The telemetry of `meta.window` from every configured backend, as an incident.

    Metrics start `imports.history_minutes` before the window, as the importers' do, so that detectors
    have history. What a backend could not give is appended to `meta.missing`. Raises `FlipmoeInputError`
    when no backend is configured or none gave any telemetry.
    """
    backends = configured_backends(config)
    if not backends:
        raise FlipmoeInputError("no telemetry backend is configured",
                                hint="set prometheus.queries, loki.queries or otlp.trace_files in the config")
    window, missing = meta.window, list(meta.missing)
    tables: dict[str, pd.DataFrame | None] = {"metrics": None, "logs": None, "spans": None}
    placement: dict[str, str] = {}
    for backend in backends:
        if progress:
            progress(f"pulling telemetry from {backend}")
        warnings: list[str] = []
        try:
            if backend == "prometheus":
                history = TimeWindow(window.start - pd.Timedelta(minutes=config.imports.history_minutes), window.end)
                tables["metrics"] = fetch_metrics(config.prometheus.queries, history, config=config, warnings=warnings)
            elif backend == "loki":
                tables["logs"], placement = fetch_logs(config.loki.queries, window, config=config, warnings=warnings)
            else:
                tables["spans"] = _spans(config.otlp, window, config, warnings)
        except FlipmoeInputError as err:
            missing.append(f"{_MODALITY[backend]}: {err}")
        else:
            missing.extend(f"{_MODALITY[backend]}: {warning}" for warning in warnings)
    telemetry = Telemetry(**tables)
    if not telemetry.modalities:
        raise FlipmoeInputError(f"no telemetry for {window.start} .. {window.end}: {'; '.join(missing)}")
    spans = telemetry.spans
    topology = None
    if spans is not None or placement:
        services = set(telemetry.services())
        topology = (Topology.from_spans(spans, placement=placement, services=services) if spans is not None
                    else Topology(services=sorted(services), placement=placement))
    return Incident(meta=IncidentMeta(id=meta.id, alert=meta.alert, window=window, alert_time=meta.alert_time,
                                      scope=meta.scope, source=meta.source, missing=missing),
                    telemetry=telemetry, topology=topology)


_MODALITY = {"prometheus": "metrics from Prometheus", "loki": "logs from Loki", "otlp": "spans from OTLP files"}


def trace_files(config: OtlpConfig) -> list[Path]:
    """The files `otlp.trace_files` names: files as given, directories by their OTLP/JSON files (not recursive)."""
    found = []
    for entry in map(Path, config.trace_files):
        if entry.is_dir():
            found.extend(sorted(p for p in entry.iterdir() if p.is_file() and p.name.endswith(_OTLP_SUFFIXES)))
        elif entry.is_file():
            found.append(entry)
        else:
            raise FlipmoeInputError("no such OTLP trace file or directory", path=entry,
                                    hint="check otlp.trace_files, and that the collector's file exporter writes there")
    if not found:
        raise FlipmoeInputError(f"no OTLP/JSON files in {', '.join(config.trace_files)}")
    return found


def _spans(config: OtlpConfig, window: TimeWindow, full: FlipmoeConfig, warnings: list[str]) -> pd.DataFrame | None:
    spans = read_otlp(trace_files(config), config=full.telemetry, warnings=warnings).spans
    if spans is not None:
        spans = spans[(spans["start"] >= window.start) & (spans["start"] < window.end)].reset_index(drop=True)
    if spans is None or spans.empty:
        warnings.append(f"no spans start between {window.start} and {window.end}")
        return None
    return spans
