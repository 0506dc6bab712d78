"""Per-pod and per-node metrics, read off the simulated calls and the conditions.

Every pod gets resource series (CPU, throttling, memory, network, disk, restarts), request series
(rate, error ratio, server latency p50/p95/p99, latency of its own outgoing calls) and its
runtime's series (GC time and busy threads for the JVM, goroutines for Go, event-loop lag for
Node, busy workers for Python; connections and slow queries for databases; hit ratio and
evictions for caches). Node series (CPU, memory, network, disk) are written on each pod's rows, as
the Nezha data set does, so every row names a service. Request series come from the records of
the full simulation pass weighted by how many real requests each sample stands for; latency
percentiles are over the samples of the bucket. A pod whose node is gone reports nothing; a pod
with no requests in a bucket has no latency sample for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.catalogues import SLOW_QUERY_MS
from data_pipeline.chaos.metric_names import spelling
from data_pipeline.chaos.simulate import Simulation, strings

_REQUEST_BYTES = 700.0
_RUNTIME_QUANTITIES = {
    "java": ("gc_time", "threads_busy"), "go": ("gc_time", "goroutines"), "node": ("gc_time", "event_loop_lag"),
    "python": ("workers_busy",), "csharp": ("gc_time", "threads_busy"),
    "mysql": ("db_connections", "slow_queries"), "postgres": ("db_connections", "slow_queries"),
    "mongodb": ("db_connections", "slow_queries"), "redis": ("cache_hit", "evictions", "slow_queries"),
}
_COMMON = ("cpu", "cpu_pressure", "cpu_throttle", "mem", "mem_ratio", "net_rx", "net_tx", "net_drop", "net_rtt_p90",
           "disk_write", "disk_io", "fs_usage", "syscall_read", "syscall_write", "restarts", "req_rate", "err_ratio",
           "lat_p50", "lat_p95", "lat_p99", "client_lat_p95")
_NODE = ("node_cpu", "node_mem", "node_net_rx", "node_disk_io")
# Resource series are burstier than request series (GC, background threads, page cache flushes).
_NOISE_SCALE = {"cpu": 4.0, "cpu_pressure": 2.0, "cpu_throttle": 2.0, "net_rx": 3.0, "net_tx": 3.0, "net_drop": 3.0,
                "disk_write": 5.0, "disk_io": 3.0, "gc_time": 4.0, "node_cpu": 1.5, "node_net_rx": 2.0,
                "node_disk_io": 2.0, "event_loop_lag": 3.0, "threads_busy": 2.0, "workers_busy": 2.0}
# Memory drifts slowly (heap growth and collection, page cache) instead of jumping from sample to sample:
# its noise is an AR(1) process in time, small and autocorrelated, as on the real TrainTicket day (pod
# memory: coefficient of variation 0.004, lag-1 autocorrelation 0.87; node memory 0.008 and 0.67).
_DRIFTING = {"mem": 0.1, "mem_ratio": 0.1, "node_mem": 0.25}
"""Quantity -> the stationary spread of its drift, in units of `noise`."""
_DRIFT_PHI = 0.9
_EXACT = {"restarts", "goroutines", "db_connections", "req_rate", "err_ratio", "lat_p50", "lat_p95", "lat_p99",
          "client_lat_p95", "slow_queries", "cache_hit"}
"""Quantities that carry their own sampling noise (or are counts) and get no extra noise."""


def group_quantiles(key: np.ndarray, values: np.ndarray, n_groups: int, qs: tuple[float, ...]) -> np.ndarray:
    """(n_groups, len(qs)) quantiles of `values` per integer `key`; NaN for empty groups."""
    order = np.lexsort((values, key))
    k, v = key[order], values[order]
    starts = np.searchsorted(k, np.arange(n_groups), "left")
    counts = np.searchsorted(k, np.arange(n_groups), "right") - starts
    out = np.full((n_groups, len(qs)), np.nan)
    has = counts > 0
    for j, q in enumerate(qs):
        idx = starts + np.floor(q * (counts - 1)).astype(np.int64)
        out[has, j] = v[idx[has]]
    return out


LATENCY_BUCKETS_S = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
"""Upper bounds of the latency histogram's buckets (the Prometheus client libraries' defaults)."""


def histogram_quantiles(key: np.ndarray, values: np.ndarray, n_groups: int, qs: tuple[float, ...],
                        bounds: np.ndarray = LATENCY_BUCKETS_S) -> np.ndarray:
    """(n_groups, len(qs)) quantiles of `values` per integer `key` as a metrics pipeline reports them: counted
    into histogram buckets, then interpolated linearly inside the bucket that holds the quantile, as
    Prometheus' `histogram_quantile` does (a quantile in the overflow bucket is the last finite bound). NaN
    for empty groups.

    The real TrainTicket day's latency percentiles are such values (0.005, 0.045, 0.375 s ...): with few
    requests per bucket they jump between histogram buckets, far more than exact percentiles do.
    """
    nb = bounds.size + 1
    bucket = np.searchsorted(bounds, values, side="left")                    # (lo, hi] -> index of hi
    counts = np.bincount(key * nb + bucket, minlength=n_groups * nb).reshape(n_groups, nb).astype(float)
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    lower = np.concatenate([[0.0], bounds])
    upper = np.concatenate([bounds, [bounds[-1]]])
    out = np.full((n_groups, len(qs)), np.nan)
    has = total > 0
    rows = np.flatnonzero(has)
    for j, q in enumerate(qs):
        rank = q * total[has]
        idx = np.minimum((cum[has] < rank[:, None]).sum(axis=1), nb - 1)
        before = np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], 0.0)
        inside = counts[rows, idx]
        frac = np.where(inside > 0, (rank - before) / np.maximum(inside, 1e-12), 1.0)
        value = lower[idx] + (upper[idx] - lower[idx]) * frac
        out[has, j] = np.where(idx == nb - 1, bounds[-1], value)
    return out


class _Quantities:
    """Canonical quantities per (T, P) in base units (cores, MiB, bytes/s, seconds, ratios)."""

    def __init__(self, s: Simulation) -> None:
        self.s = s
        res, r = s.result, s.result.records
        self.T, self.P = s.timeline.n_buckets, len(s.cluster.pods)
        T, P, step = self.T, self.P, s.timeline.step_s
        w = res.samples.weight[r.sample]
        t = s.timeline.bucket(r.start)
        valid = r.pod >= 0
        key = np.where(valid, t * P + np.maximum(r.pod, 0), T * P)      # invalid rows go to a spill group
        served = (r.role != sim.CLIENT) & valid
        client = (r.role == sim.CLIENT) & valid

        def per_pod(mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return np.bincount(key[mask], weights=weights[mask], minlength=T * P + 1)[:-1].reshape(T, P)

        count = per_pod(served, w)
        self.req_rate = count / step
        self.call_rate = per_pod(client, w) / step
        self.err_ratio = np.where(count > 0, per_pod(served, w * (r.code >= 10)) / np.maximum(count, 1e-12), np.nan)
        lat = histogram_quantiles(key[served], r.dur[served] / 1000, T * P, (0.5, 0.95, 0.99))
        self.lat_p50, self.lat_p95, self.lat_p99 = (lat[:, j].reshape(T, P) for j in range(3))
        self.client_lat_p95 = histogram_quantiles(key[client], r.dur[client] / 1000, T * P,
                                                  (0.95,))[:, 0].reshape(T, P)
        self.busy = per_pod(served, w * r.dur / 1000) / step              # concurrent requests (Little's law)
        op_bytes = s.compiled.op_bytes[r.op]
        self.bursts = res.background / sim.BACKGROUND_CORES                   # the pod's background work, mean 1
        # Background traffic (probes, scrapes, heartbeats) is half steady, half the pod's background bursts.
        steady_half = 0.5 + 0.5 * self.bursts
        self.net_rx = (per_pod(served, w * _REQUEST_BYTES) + per_pod(client, w * op_bytes)) / step + 1500 * steady_half
        self.net_tx = (per_pod(served, w * op_bytes) + per_pod(client, w * _REQUEST_BYTES)) / step + 1200 * steady_half
        writes = served & s.compiled.op_writes[r.op]
        self.write_rate = per_pod(writes, w) / step
        runtimes = [s.system.services[p.service].runtime for p in s.cluster.pods]
        slow_ms = np.array([SLOW_QUERY_MS.get(rt, np.inf) for rt in runtimes])
        slow = served & (r.dur > slow_ms[np.maximum(r.pod, 0)])
        self.slow_queries = per_pod(slow, w) / step
        reads = served & ~s.compiled.op_writes[r.op]
        misses = per_pod(reads & (r.code == sim.MISS), w)
        self.cache_hit = np.where(per_pod(reads, w) > 0, 1 - misses / np.maximum(per_pod(reads, w), 1e-12), np.nan)
        self.runtimes = runtimes


def metrics_table(s: Simulation, noise: float) -> pd.DataFrame:
    """The long metrics table of the whole timeline (baseline and window)."""
    q = _Quantities(s)
    values = _resource_quantities(s, q)
    present = _presence(s)                                                # (T, P)
    pods = s.cluster.pods
    limits = np.array([s.system.services[p.service].resources()[:2] for p in pods])   # (P, 2) cpu, memory
    chunks_t, chunks_p, chunks_m, chunks_v = [], [], [], []
    names: list[str] = []
    for quantity, arr in values.items():
        applies = _applies(quantity, q.runtimes)                          # (P,)
        mask = present & applies[None, :] & np.isfinite(arr)
        if not mask.any():
            continue
        t_idx, p_idx = np.nonzero(mask)
        v = arr[t_idx, p_idx]
        if quantity in _DRIFTING and noise > 0:
            v = v * np.exp(_drift(s.rng, arr.shape, noise * _DRIFTING[quantity]))[t_idx, p_idx]
        elif quantity not in _EXACT and noise > 0:
            v = v * s.rng.lognormal(0, noise * _NOISE_SCALE.get(quantity, 1.0), v.size)
        sp = spelling(s.scheme, quantity)
        if sp.complement:
            v = 1 - v
        if sp.per_limit is not None:
            v = v / limits[p_idx, 0 if sp.per_limit == "cpu" else 1]
        chunks_t.append(t_idx)
        chunks_p.append(p_idx)
        chunks_m.append(np.full(v.size, len(names), np.int32))
        chunks_v.append(v * sp.scale)
        names.append(sp.name)
    t_idx, p_idx = np.concatenate(chunks_t), np.concatenate(chunks_p)
    pod_service = np.array([p.service for p in pods])
    pod_node = np.array([p.node for p in pods])
    return pd.DataFrame({
        "timestamp": s.timeline.timestamps(t_idx * s.timeline.step_s),
        "service": strings(pod_service[p_idx], s.system.service_names),
        "pod": strings(p_idx, [p.name for p in pods]),
        "node": strings(pod_node[p_idx], s.cluster.node_names),
        "metric": strings(np.concatenate(chunks_m), names),
        "value": np.round(np.concatenate(chunks_v), 6),
    })


def _drift(rng: np.random.Generator, shape: tuple[int, ...], spread: float) -> np.ndarray:
    """(T, P) AR(1) noise along time with stationary standard deviation `spread`, started in its stationary state."""
    eps = rng.normal(0, spread * np.sqrt(1 - _DRIFT_PHI**2), shape)
    out = np.empty(shape)
    out[0] = rng.normal(0, spread, shape[1:])
    for t in range(1, shape[0]):
        out[t] = _DRIFT_PHI * out[t - 1] + eps[t]
    return out


def _applies(quantity: str, runtimes: list[str]) -> np.ndarray:
    if quantity in _COMMON or quantity in _NODE:
        return np.ones(len(runtimes), bool)
    return np.array([quantity in _RUNTIME_QUANTITIES[rt] for rt in runtimes])


def _presence(s: Simulation) -> np.ndarray:
    """(T, P) the pod exists in the bucket and its node's kubelet reports."""
    starts = s.timeline.bucket_starts()[:, None]
    born = np.array([p.born_s for p in s.cluster.pods])
    dead = np.array([p.dead_s for p in s.cluster.pods])
    present = (born < starts + s.timeline.step_s) & (dead > starts)
    pod_node = np.array([p.node for p in s.cluster.pods])
    for node, start, end in s.cluster.node_down:
        gone = (starts[:, 0] >= start) & (starts[:, 0] < end)
        present[np.ix_(gone, pod_node == node)] = False
    return present


def _down_fraction(s: Simulation) -> np.ndarray:
    """(T, P) fraction of each bucket the pod's container was not running."""
    starts = s.timeline.bucket_starts()[:, None]
    step = s.timeline.step_s
    frac = np.zeros((s.timeline.n_buckets, len(s.cluster.pods)))
    for o in s.cluster.outages:
        overlap = np.clip(np.minimum(starts[:, 0] + step, o.end_s) - np.maximum(starts[:, 0], o.start_s), 0, step)
        frac[:, o.pod] = np.maximum(frac[:, o.pod], overlap / step)
    return frac


def _resource_quantities(s: Simulation, q: _Quantities) -> dict[str, np.ndarray]:
    """Every quantity as a (T, P) array (NaN where it has no value)."""
    cond, res, rng = s.cond, s.result, s.rng
    T, P = q.T, q.P
    pods = s.cluster.pods
    cpu_limit = np.array([s.system.services[p.service].resources()[0] for p in pods])
    mem_limit = np.array([s.system.services[p.service].resources()[1] for p in pods])
    mem_base = np.array([s.system.services[p.service].resources()[2] for p in pods])
    running = 1 - _down_fraction(s)
    available = cpu_limit * cond.capacity * res.node_share                     # cores the pod may use
    managed = np.array([rt in ("java", "go", "csharp", "node") for rt in q.runtimes])
    mem = (mem_base + cond.mem_extra_mb + 0.8 * q.busy) * np.maximum(running, 0.05)
    mem_ratio = mem / mem_limit
    gc_pressure = np.clip((mem_ratio - 0.8) / 0.2, 0, 1) ** 2 * managed
    gc_cores = 0.3 * gc_pressure * cpu_limit
    cpu = np.minimum(res.cpu_demand + cond.hog_cores + gc_cores, available) * running
    throttle = np.clip((res.rho - 0.65) / 0.5, 0, 0.95) + 0.002
    # Pressure (PSI): the share of time runnable threads waited for a CPU, from throttling or a competitor.
    pressure = np.minimum(0.005 + 0.8 * throttle + cond.runqueue_ms / 20.0, 1.0) * running
    starts = s.timeline.bucket_starts()
    restarts = np.zeros((T, P))
    for r in s.cluster.restarts:
        restarts[starts >= r.time_s, r.pod] += 1
    loss = cond.loss
    packets = (q.net_rx + q.net_tx) / 1200
    writes = (q.write_rate * np.where(np.array([s.system.services[p.service].kind != "service" for p in pods]),
                                      16384, 2048) + 0.02 * q.req_rate * 2048 + 4096) * (1 - cond.write_error)
    disk_io = np.maximum(0.01 + writes / 150e6 + 0.02 * rng.random((T, P)), cond.io_busy)
    values = {
        "cpu": cpu, "cpu_pressure": pressure, "cpu_throttle": throttle, "mem": mem, "mem_ratio": mem,
        "net_rx": q.net_rx * running, "net_tx": q.net_tx * running,
        "net_drop": loss * packets + 0.01 * rng.random((T, P)),
        "net_rtt_p90": (0.4 + 2 * cond.net_delay_ms + 200 * np.minimum(1, loss / 0.1)) / 1000,
        "disk_write": writes, "disk_io": disk_io, "fs_usage": cond.disk_fill, "restarts": restarts,
        # read/write system calls: mostly socket I/O (a few per request and per call made), then the disk's.
        "syscall_read": (q.req_rate * 6 + q.call_rate * 4 + 20 * q.bursts) * running,
        "syscall_write": (q.req_rate * 4 + q.call_rate * 3 + q.write_rate * 2 + 12 * q.bursts) * running,
        "req_rate": q.req_rate, "err_ratio": q.err_ratio, "lat_p50": q.lat_p50, "lat_p95": q.lat_p95,
        "lat_p99": q.lat_p99, "client_lat_p95": q.client_lat_p95,
        "gc_time": (0.004 + 0.0004 * q.req_rate + 0.35 * gc_pressure) * running,
        "threads_busy": np.minimum(q.busy / np.array([sim.WORKERS[rt] for rt in q.runtimes]), 1.0),
        "goroutines": np.round(14 + 6 * q.busy + 0.5 * q.req_rate + rng.integers(0, 4, (T, P))),
        "event_loop_lag": 0.0012 + 0.05 * np.clip(res.rho - 0.5, 0, None),
        "workers_busy": np.minimum(q.busy / np.array([sim.WORKERS[rt] for rt in q.runtimes]), 1.0),
        "db_connections": _db_connections(s, q),
        "slow_queries": q.slow_queries, "cache_hit": q.cache_hit, "evictions": cond.evictions + 0.0,
    }
    values.update(_node_quantities(s, cpu, mem, q.net_rx, disk_io))
    return values


def _db_connections(s: Simulation, q: _Quantities) -> np.ndarray:
    """Open connections on a data store: idle pool members of its client pods plus the busy ones."""
    clients = np.zeros(len(s.cluster.pods))
    for svc_index in range(len(s.system.services)):
        callers = s.compiled.callers_of(svc_index)
        n_client_pods = sum(len(s.cluster.pods_of(c)) for c in callers)
        clients[[i for i, p in enumerate(s.cluster.pods) if p.service == svc_index]] = n_client_pods
    return np.round(3 * clients[None, :] + q.busy)


def _node_quantities(s: Simulation, cpu: np.ndarray, mem: np.ndarray, net_rx: np.ndarray,
                     disk_io: np.ndarray) -> dict[str, np.ndarray]:
    """Node series, computed per node and copied onto each of its pods' rows."""
    n_nodes = len(s.cluster.node_names)
    pod_node = np.array([p.node for p in s.cluster.pods])
    T = cpu.shape[0]

    def node_sum(arr: np.ndarray) -> np.ndarray:
        out = np.zeros((T, n_nodes))
        np.add.at(out.T, pod_node, np.nan_to_num(arr).T)
        return out

    node_disk = np.zeros((T, n_nodes))
    np.maximum.at(node_disk.T, pod_node, disk_io.T)
    # What runs on a node besides these pods (kubelet, the container runtime, other tenants) varies: its CPU
    # (0.4 cores on average, coefficient of variation 0.27) and its traffic (8 kB/s, CV 1.8: image pulls,
    # other tenants' transfers) are gamma-distributed per bucket.
    system_cores = s.rng.gamma(14.0, 0.4 / 14, (T, n_nodes))
    system_bytes = s.rng.gamma(0.3, 8000 / 0.3, (T, n_nodes))
    node_cpu = np.minimum((node_sum(cpu) + s.cond.neighbour_cores + system_cores) / s.system.node_cores, 1.0)
    node_mem = (node_sum(mem) + 2048) / (s.system.node_memory_gb * 1024)
    return {"node_cpu": node_cpu[:, pod_node], "node_mem": node_mem[:, pod_node],
            "node_net_rx": (node_sum(net_rx) + system_bytes)[:, pod_node], "node_disk_io": node_disk[:, pod_node]}
