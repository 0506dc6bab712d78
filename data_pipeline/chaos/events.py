"""Kubernetes events and change records: what the cluster and the deploy tooling would have recorded.

Rows come from three places: the cluster's lifecycle (scheduling, image pulls, starts, kills,
NodeNotReady, evictions, scaling, and the `deploy` / `config_change` records of rollouts and
ConfigMap edits); container restarts (OOMKilled, and BackOff once a container keeps failing); and
readiness probes, which fail when a pod is refused (its container is down) or too slow to answer
(its service time is many times its normal one) — at most one Unhealthy event per pod a minute,
as Kubernetes aggregates repeats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

from data_pipeline.chaos.simulate import ClusterEvent, Simulation
from flipmoe.telemetry.schema import STRING

_SLOW_PROBE = 8.0
"""A pod whose service time is this many times its unloaded one misses its 1 s readiness probe."""


def events_table(s: Simulation) -> pd.DataFrame:
    rows = list(s.cluster.events) + _restart_events(s) + _probe_events(s)
    rows = [e for e in rows if 0 <= e.time_s < s.timeline.end_s]
    rows.sort(key=lambda e: e.time_s)
    pods, nodes, services = s.cluster.pods, s.cluster.node_names, s.system.service_names

    def name(values: list[int | None], table: list[str]) -> ExtensionArray:
        return pd.array([table[v] if v is not None else None for v in values], dtype=STRING)

    return pd.DataFrame({
        "timestamp": s.timeline.timestamps(np.array([e.time_s for e in rows])),
        "kind": pd.array([e.kind for e in rows], dtype=STRING),
        "reason": pd.array([e.reason for e in rows], dtype=STRING),
        "service": name([e.service for e in rows], services),
        "pod": name([e.pod for e in rows], [p.name for p in pods]),
        "node": name([e.node for e in rows], nodes),
        "message": pd.array([e.message for e in rows], dtype=STRING),
    })


def _restart_events(s: Simulation) -> list[ClusterEvent]:
    out = []
    count: dict[int, int] = {}
    for r in sorted(s.cluster.restarts, key=lambda r: r.time_s):
        p = s.cluster.pods[r.pod]
        container = s.system.services[p.service].name
        count[r.pod] = count.get(r.pod, 0) + 1
        image = f"{s.system.namespace}/{container}:{p.version}"
        if r.reason == "OOMKilled":
            out.append(ClusterEvent(r.time_s, "k8s", "OOMKilled", p.service, r.pod, p.node,
                                    f"Container {container} in pod {p.name} was OOMKilled (exit code 137)"))
        if count[r.pod] > 1 and r.reason != "OOMKilled":
            out.append(ClusterEvent(r.time_s + 0.5, "k8s", "BackOff", p.service, r.pod, p.node,
                                    f"Back-off restarting failed container {container} in pod {p.name}"))
        out.append(ClusterEvent(r.time_s + 1.0, "k8s", "Pulled", p.service, r.pod, p.node,
                                f'Container image "{image}" already present on machine'))
        out.append(ClusterEvent(r.time_s + 1.2, "k8s", "Started", p.service, r.pod, p.node,
                                f"Started container {container}"))
    return out


def _probe_events(s: Simulation) -> list[ClusterEvent]:
    step = s.timeline.step_s
    starts = s.timeline.bucket_starts()
    slow = s.result.mult > _SLOW_PROBE                                             # (T, P)
    refused = np.zeros_like(slow)
    for o in s.cluster.outages:
        if o.mode == "crash":
            refused[(starts + step > o.start_s) & (starts < o.end_s), o.pod] = True
    out = []
    last: dict[int, float] = {}
    for t, pod in zip(*np.nonzero(slow | refused), strict=True):
        time = float(starts[t] + s.rng.uniform(0, step))
        p = s.cluster.pods[pod]
        if not p.born_s <= time < p.dead_s or time - last.get(pod, -np.inf) < 60:
            continue
        last[pod] = time
        svc = s.system.services[p.service]
        port = svc.resources()[3]
        if svc.kind != "service":  # data stores are probed over TCP, services over HTTP
            why = "connect: connection refused" if refused[t, pod] else "i/o timeout"
            message = f"Readiness probe failed: dial tcp {p.ip}:{port}: {why}"
        else:
            why = (f"dial tcp {p.ip}:{port}: connect: connection refused" if refused[t, pod]
                   else "context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
            message = f'Readiness probe failed: Get "http://{p.ip}:{port}/health": {why}'
        out.append(ClusterEvent(time, "k8s", "Unhealthy", p.service, int(pod), p.node, message))
    return out
