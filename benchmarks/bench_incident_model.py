"""Incident model throughput: a 10-minute window of a 50-service system.

Prints the time to validate, write, read back and slice the incident, next to the baseline of a
bare `pyarrow.parquet.read_table(...).to_pandas()` of the same files (no validation), in one run.

    python benchmarks/bench_incident_model.py [--services 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from flipmoe.telemetry import Incident, IncidentMeta, Telemetry, TimeWindow, normalise_table
from flipmoe.telemetry.store import read_incident, write_incident

START = pd.Timestamp("2026-01-01T00:00:00Z")


def synthetic_tables(n_services: int, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """3 pods per service, 30 metrics at 15 s, ~170 log lines and ~400 spans per service-minute."""
    n_pods, n_metrics, n_steps = 3, 30, 40
    grid = pd.MultiIndex.from_product([range(n_services), range(n_pods), range(n_metrics), range(n_steps)])
    svc, pod, met, step = (grid.get_level_values(i).to_numpy() for i in range(4))
    metrics = pd.DataFrame({
        "timestamp": START + pd.to_timedelta(step * 15, "s"),
        "service": np.char.add("svc-", svc.astype(str)),
        "pod": np.char.add(np.char.add("svc-", svc.astype(str)), np.char.add("-", pod.astype(str))),
        "node": np.char.add("node-", (pod % 4).astype(str)),
        "metric": np.char.add("metric_", met.astype(str)),
        "value": rng.random(len(grid)),
    })
    n_logs = n_services * 10 * 170
    log_svc = rng.integers(0, n_services, n_logs).astype(str)
    logs = pd.DataFrame({
        "timestamp": START + pd.to_timedelta(rng.random(n_logs) * 600, "s"),
        "service": np.char.add("svc-", log_svc), "pod": np.char.add("svc-", log_svc),
        "level": rng.choice(["INFO", "WARN", "ERROR"], n_logs, p=[0.9, 0.07, 0.03]),
        "message": np.char.add("request handled in ms=", rng.integers(0, 900, n_logs).astype(str)),
        "trace_id": rng.integers(0, 1 << 62, n_logs).astype(str), "span_id": "0",
    })
    n_spans, fanout = n_services * 10 * 400, 8
    position = np.arange(n_spans) % fanout
    spans = pd.DataFrame({
        "trace_id": (np.arange(n_spans) // fanout).astype(str), "span_id": position.astype(str),
        "parent_span_id": np.where(position == 0, "", (position - 1).astype(str)),
        "service": np.char.add("svc-", rng.integers(0, n_services, n_spans).astype(str)), "pod": "p",
        "operation": "GET /api", "start": START + pd.to_timedelta(rng.random(n_spans) * 600, "s"),
        "duration": rng.lognormal(3, 1, n_spans), "status": rng.choice(["ok", "error"], n_spans, p=[0.98, 0.02]),
    })
    return {"metrics": metrics, "logs": logs, "spans": spans}


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    raw = synthetic_tables(args.services, np.random.default_rng(0))
    rows = {name: len(df) for name, df in raw.items()}
    print(f"{args.services} services, 10-minute window: " + ", ".join(f"{k} {v:,} rows" for k, v in rows.items()))

    def validate() -> Telemetry:
        return Telemetry(**{name: normalise_table(df, name, source=name) for name, df in raw.items()})

    telemetry = validate()
    meta = IncidentMeta(id="bench", alert="bench", window=TimeWindow(START, START + pd.Timedelta(minutes=10)))
    incident = Incident(meta=meta, telemetry=telemetry)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "bench"
        results = {
            "validate (normalise_table)": best_of(args.repeat, validate),
            "write_incident (parquet)": best_of(args.repeat, lambda: write_incident(incident, target, overwrite=True)),
            "read_incident (validated)": best_of(args.repeat, lambda: read_incident(target)),
            "baseline: bare parquet read": best_of(args.repeat, lambda: [
                pq.read_table(target / f"{n}.parquet").to_pandas() for n in raw]),
            "slice (3 min, 5 services)": best_of(args.repeat, lambda: incident.slice(
                start=START + pd.Timedelta(minutes=3), end=START + pd.Timedelta(minutes=6),
                services=[f"svc-{i}" for i in range(5)])),
        }
    print(f"{'step':<30} {'median s':>9} {'best s':>8} {'rows/s (median)':>16}")
    total = sum(rows.values())
    for step, (median, best) in results.items():
        print(f"{step:<30} {median:>9.3f} {best:>8.3f} {total / median:>16,.0f}")


if __name__ == "__main__":
    main()
