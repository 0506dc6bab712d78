"""Shared test helpers: tiny incidents built in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, Topology, normalise_table

START = pd.Timestamp("2026-03-01T10:00:00Z")


def tiny_incident(*, n_minutes: int = 10, seed: int = 0) -> Incident:
    """Three services (front -> api -> db) with metrics, logs, spans and events."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=n_minutes * 4, freq="15s")
    pods = {"front": "front-7d9-abc", "api": "api-55c-def", "db": "db-0"}
    metrics = pd.DataFrame([
        {"timestamp": t, "service": s, "pod": p, "node": "node-1", "metric": m, "value": float(rng.random())}
        for t in ts for s, p in pods.items() for m in ("cpu_usage_percent", "latency_p95_ms")
    ])
    logs = pd.DataFrame({
        "timestamp": ts, "service": "api", "pod": pods["api"],
        "level": ["info"] * (len(ts) - 1) + ["error"],
        "message": [f"handled request id={i} in {i % 7}ms" for i in range(len(ts))],
        "trace_id": [f"{i:032x}" for i in range(len(ts))], "span_id": "00000000000000a1",
    })
    spans = pd.DataFrame({
        "trace_id": ["t1", "t1", "t1"], "span_id": ["a", "b", "c"], "parent_span_id": [None, "a", "b"],
        "service": ["front", "api", "db"], "pod": [pods["front"], pods["api"], pods["db"]],
        "operation": ["GET /", "getItem", "SELECT"], "start": [START, START, START],
        "duration": [30.0, 20.0, 5.0], "status": ["ok", "ok", "error"],
    })
    events = pd.DataFrame({"timestamp": [START], "kind": ["deploy"], "reason": ["Deployed"],
                           "service": ["api"], "pod": [None], "node": [None], "message": ["v2"]})
    telemetry = Telemetry(**{name: normalise_table(df, name, source=name)
                             for name, df in {"metrics": metrics, "logs": logs, "spans": spans,
                                              "events": events}.items()})
    meta = IncidentMeta(id="tiny", alert="p95 latency of front above 1s",
                        window=TimeWindow(START, START + pd.Timedelta(minutes=n_minutes)),
                        alert_time=START + pd.Timedelta(minutes=5))
    topology = Topology(edges=[("front", "api"), ("api", "db")], kinds={"db": "database"},
                        placement={p: "node-1" for p in pods.values()})
    return Incident(meta=meta, telemetry=telemetry, baseline=telemetry, topology=topology)


@pytest.fixture
def incident() -> Incident:
    return tiny_incident()


def sandbox_unavailable() -> str | None:
    """Why the bubblewrap sandbox cannot run here, or None when it can (its tests skip with the reason)."""
    from director.agents.sandbox import SandboxUnavailableError, isolation

    try:
        isolation()
    except SandboxUnavailableError as err:
        return str(err)
    return None
