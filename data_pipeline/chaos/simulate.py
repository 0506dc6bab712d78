"""The simulation engine: pods over time, the conditions faults change, and requests through the call graph.

The timeline is cut into metric buckets (T of them, `step_s` seconds each) and covers the baseline
window followed by the incident window. Three layers:

- `Cluster`: pods over time (births, readiness, deaths from deploys, evictions and scaling), outages
  (a container down or a node gone), container restarts and the lifecycle events they produce.
- `Conditions`: what faults and distractors change, as arrays over buckets and pods (T, P) or
  services (T, S): CPU capacity, CPU hogs, service-time multipliers, network delay and loss, DNS
  and TLS failure probabilities, per-operation errors, slowness and wrong results, disk and memory.
- `Engine`: a statistical sample of requests (about `samples_per_minute` per minute, each standing
  for `weight` real requests) walks the operation call graph, one numpy array per call site over
  all samples that reach it. Each call routes to a ready pod, may fail before reaching it (DNS, no
  endpoint, TLS, refused, unreachable, connection pool), pays network delay and retransmits, runs
  a log-normal self time scaled by the pod's service-time multiplier, makes its own calls (with
  timeouts, retries, cache fallbacks and optional calls) and fails when a required call fails.
  The multiplier comes from queueing on the pod's CPU (utilisation from a cheaper probe pass, so
  retries and fallbacks raise the load that slows the pod), garbage-collection pressure from
  memory, JIT warm-up of new pods, and the conditions. Every call leaves a record (a server span,
  a client span, or a data-store call); metrics, spans and logs are all read from these records,
  so symptoms at callers emerge from the propagation rather than being written in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from data_pipeline.chaos.config import ChaosConfig
from data_pipeline.chaos.systems import Call, System, k8s_suffix, pod_name
from flipmoe.telemetry.schema import STRING

# Result codes of a call. Below 10 the call succeeded (possibly a cache miss or a silently wrong result).
OK, MISS, WRONG = 0, 1, 2
EXCEPTION, ERROR_CODE, DISK_FULL, DOWNSTREAM, VALIDATION, BUG = 10, 11, 12, 13, 14, 15
TIMEOUT, REFUSED, UNREACHABLE, NO_ENDPOINT, DNS, TLS, POOL, BAD_RESPONSE = 20, 21, 22, 23, 24, 25, 26, 27
RETRYABLE = np.zeros(32, dtype=bool)
RETRYABLE[[TIMEOUT, REFUSED, UNREACHABLE, NO_ENDPOINT, BAD_RESPONSE]] = True
# What the caller sees of a server's code: any failure is a bad response; a miss or a wrong result passes through.
_CLIENT_VIEW = np.zeros(32, dtype=np.int8)
_CLIENT_VIEW[10:] = BAD_RESPONSE
_CLIENT_VIEW[MISS], _CLIENT_VIEW[WRONG] = MISS, WRONG
_CUTS_SHORT = np.zeros(32, dtype=bool)
"""Codes after which the handler makes none of its remaining calls (it threw or returned early)."""
_CUTS_SHORT[[EXCEPTION, BUG, ERROR_CODE, WRONG]] = True

# Record roles.
SERVER, CLIENT, STORE = 0, 1, 2
# How a caller absorbed a failed call (`Records.absorbed`).
UNHANDLED, RETRIED, FELL_BACK, TOLERATED = 0, 1, 2, 3

_KIND_CODE = {"service": 0, "database": 1, "cache": 2}
_STARTUP_S = {"java": (25, 45), "go": (3, 6), "python": (5, 10), "node": (4, 8), "csharp": (8, 15),
              "mysql": (12, 25), "postgres": (8, 15), "mongodb": (10, 20), "redis": (1, 3)}
# Worker threads or processes per pod: concurrency beyond this shows as saturation.
WORKERS = {"java": 64, "go": 256, "python": 8, "node": 32, "csharp": 48, "mysql": 151, "postgres": 100,
           "mongodb": 200, "redis": 10_000}
BACKGROUND_CORES = 0.01
"""Mean CPU a pod spends between requests (timers, health probes, metric scrapes, log flushes)."""
CFS_PERIOD_MS = 100.0
POOL_SIZE = 10
"""Connections per pod to its data stores (HikariCP's default)."""
POOL_TIMEOUT_MS = 3000.0
CONNECT_TIMEOUT_MS = 3000.0


# --- time ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timeline:
    """Baseline window then incident window, cut into T buckets of `step_s` seconds; times are seconds from `start`."""

    start: pd.Timestamp
    step_s: float
    n_buckets: int
    window_bucket: int
    """First bucket of the incident window."""

    @property
    def end_s(self) -> float:
        return self.n_buckets * self.step_s

    @property
    def window_start_s(self) -> float:
        return self.window_bucket * self.step_s

    def bucket(self, seconds: np.ndarray) -> np.ndarray:
        return np.clip((seconds // self.step_s).astype(np.int64), 0, self.n_buckets - 1)

    def bucket_starts(self) -> np.ndarray:
        return np.arange(self.n_buckets) * self.step_s

    def timestamp(self, seconds: float) -> pd.Timestamp:
        return self.start + pd.Timedelta(seconds=float(seconds))

    def timestamps(self, seconds: np.ndarray) -> pd.Series:
        ns = np.int64(self.start.value) + np.round(np.asarray(seconds) * 1e9).astype(np.int64)
        return pd.Series(pd.to_datetime(ns, unit="ns", utc=True)).astype("datetime64[ns, UTC]")


def strings(codes: np.ndarray, names: Sequence[str | None]) -> pd.api.extensions.ExtensionArray:
    """A string column from integer codes into `names` (None is missing), built by Arrow without Python objects."""
    dictionary = pa.array(list(names), pa.string())
    return pd.array(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary).cast(pa.string()),
                    dtype=STRING)


def request_rate(system: System, timeline: Timeline, rng: np.random.Generator) -> np.ndarray:
    """(T,) user requests per second: the daily shape times a slow AR(1) wobble."""
    start = timeline.start
    hours = start.hour + start.minute / 60 + system.utc_offset_hours + timeline.bucket_starts() / 3600.0
    eps = rng.normal(0, 0.035, timeline.n_buckets)
    wobble = np.zeros(timeline.n_buckets)
    for i in range(1, timeline.n_buckets):
        wobble[i] = 0.85 * wobble[i - 1] + eps[i]
    return system.peak_rps * load_shape(hours) * np.exp(wobble)


def load_shape(hours_local: np.ndarray) -> np.ndarray:
    """Daily traffic shape in [0.25, 1]: quiet nights, a late-morning and a larger evening peak."""
    h = np.mod(hours_local, 24.0)

    def bump(centre: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(h - centre), 24 - np.abs(h - centre))
        return np.exp(-0.5 * (distance / width) ** 2)

    return np.minimum(0.25 + 0.55 * bump(11.0, 2.5) + 0.75 * bump(20.0, 2.8), 1.0)


# --- the cluster over time ----------------------------------------------------------------------------

@dataclass
class PodState:
    name: str
    service: int
    node: int
    ip: str
    born_s: float
    ready_s: float
    dead_s: float
    version: str


@dataclass(frozen=True)
class Outage:
    """A pod not serving in [start_s, end_s): 'crash' refuses connections, 'blackhole' (node gone) times out."""

    pod: int
    start_s: float
    end_s: float
    mode: str
    detect_s: float
    """Seconds until the pod leaves the service's endpoints (readiness probe or node monitor grace)."""


@dataclass(frozen=True)
class Restart:
    pod: int
    time_s: float
    reason: str
    exit_code: int
    message: str = ""
    """What the process printed as it died (empty when the kernel killed it)."""


@dataclass(frozen=True)
class ClusterEvent:
    time_s: float
    kind: str
    reason: str
    service: int | None
    pod: int | None
    node: int | None
    message: str


class Cluster:
    """Pods of a system over the timeline, and what happened to them."""

    def __init__(self, system: System, timeline: Timeline, rng: np.random.Generator) -> None:
        self.system = system
        self.timeline = timeline
        self.rng = rng
        self.service_index = {s.name: i for i, s in enumerate(system.services)}
        self.node_names = list(system.nodes)
        self.versions = {s.name: _initial_version(system.name, s.name) for s in system.services}
        self.initial_versions = dict(self.versions)
        self.pods: list[PodState] = [
            PodState(name=p.name, service=self.service_index[p.service], node=self.node_names.index(p.node),
                     ip=p.ip, born_s=-1e9, ready_s=-1e9, dead_s=np.inf, version=self.versions[p.service])
            for p in system.pods]
        self.outages: list[Outage] = []
        self.restarts: list[Restart] = []
        self.events: list[ClusterEvent] = []
        self.node_down: list[tuple[int, float, float]] = []
        self._ip_counter = 200

    def pods_of(self, service: int) -> list[int]:
        return [i for i, p in enumerate(self.pods) if p.service == service]

    def startup_s(self, service: int) -> float:
        lo, hi = _STARTUP_S[self.system.services[service].runtime]
        return float(self.rng.uniform(lo, hi))

    def alive_at(self, pod: int, time_s: float) -> bool:
        p = self.pods[pod]
        return p.born_s <= time_s < p.dead_s

    def add_pod(self, service: int, at_s: float, *, version: str, exclude_nodes: Sequence[int] = ()) -> int:
        """Schedule a new pod of `service` at `at_s` on the least loaded node that is up."""
        svc = self.system.services[service]
        down = {n for n, start, end in self.node_down if start <= at_s < end}
        candidates = [n for n in range(len(self.node_names)) if n not in down and n not in exclude_nodes]
        counts = [sum(1 for p in self.pods if p.node == n and p.born_s <= at_s < p.dead_s) for n in candidates]
        node = candidates[int(np.argmin(np.asarray(counts) + self.rng.random(len(counts)) * 0.5))]
        index = sum(1 for p in self.pods if p.service == service)
        # Pods of one version share their ReplicaSet's template hash; a new version gets a new one.
        generation = "" if version == self.initial_versions[svc.name] else version
        name = pod_name(self.system.name, svc, index, generation=generation)
        self._ip_counter += 1
        ready = at_s + self.startup_s(service)
        self.pods.append(PodState(name=name, service=service, node=node,
                                  ip=f"10.{40 + node // 250}.{node % 250}.{self._ip_counter % 250 + 2}",
                                  born_s=at_s, ready_s=ready, dead_s=np.inf, version=version))
        pod = len(self.pods) - 1
        self._pod_start_events(pod, at_s)
        return pod

    def _pod_start_events(self, pod: int, at_s: float) -> None:
        p = self.pods[pod]
        svc = self.system.services[p.service]
        image = f"{self.system.namespace}/{svc.name}:{p.version}"
        node = self.node_names[p.node]
        for offset, reason, message in (
                (0.0, "Scheduled", f"Successfully assigned {self.system.namespace}/{p.name} to {node}"),
                (0.4, "Pulling", f'Pulling image "{image}"'),
                (2.1, "Pulled", f'Successfully pulled image "{image}" in 1.{int(self.rng.integers(100, 999))}s'),
                (2.3, "Created", f"Created container {svc.name}"),
                (2.6, "Started", f"Started container {svc.name}")):
            self.events.append(ClusterEvent(at_s + offset, "k8s", reason, p.service, pod, p.node, message))

    def rollout(self, service: int, at_s: float, *, version: str, change: str) -> list[int]:
        """A rolling update: each old pod is replaced by a new one once the new one is ready."""
        svc = self.system.services[service]
        old_version = self.versions[svc.name]
        self.versions[svc.name] = version
        self.events.append(ClusterEvent(at_s, "deploy", "Deployed", service, None, None,
                                        f"{svc.name} {old_version} -> {version}: {change}"))
        new_pods: list[int] = []
        start = at_s + 1.0
        for old in [i for i in self.pods_of(service) if self.alive_at(i, at_s)]:
            new = self.add_pod(service, start, version=version)
            self.events.append(ClusterEvent(start - 0.5, "k8s", "ScalingReplicaSet", service, None, None,
                                            f"Scaled up replica set {self.pods[new].name.rsplit('-', 1)[0]} "
                                            f"to {len(new_pods) + 1}"))
            self.retire(old, self.pods[new].ready_s)
            new_pods.append(new)
            start = self.pods[new].ready_s + 1.0
        return new_pods

    def retire(self, pod: int, at_s: float) -> None:
        """Graceful termination: the pod leaves the endpoints at once and exits shortly after."""
        p = self.pods[pod]
        p.dead_s = at_s + 0.5
        self.events.append(ClusterEvent(at_s, "k8s", "Killing", p.service, pod, p.node,
                                        f"Stopping container {self.system.services[p.service].name}"))

    def crash(self, pod: int, at_s: float, *, down_s: float, reason: str, exit_code: int) -> None:
        """The container is killed and restarts; it serves again after `down_s` (restart plus start-up)."""
        self.restarts.append(Restart(pod, at_s, reason, exit_code))
        self.outages.append(Outage(pod, at_s, at_s + down_s, "crash", detect_s=float(self.rng.uniform(5, 15))))

    def fail_node(self, node: int, at_s: float, *, eviction_s: float) -> None:
        """A node goes NotReady: its pods stop answering; after `eviction_s` they are rescheduled elsewhere.

        StatefulSet pods (the data stores) are not: Kubernetes cannot confirm they stopped, so they
        stay Terminating and their store stays down.
        """
        self.node_down.append((node, at_s, np.inf))
        name = self.node_names[node]
        grace = 40.0 + float(self.rng.uniform(0, 5))
        self.events.append(ClusterEvent(at_s + grace, "k8s", "NodeNotReady", None, None, node,
                                        f"Node {name} status is now: NodeNotReady"))
        for pod in [i for i, p in enumerate(self.pods) if p.node == node and self.alive_at(i, at_s)]:
            p = self.pods[pod]
            self.outages.append(Outage(pod, at_s, np.inf, "blackhole", detect_s=grace))
            self.events.append(ClusterEvent(at_s + grace + 0.2, "k8s", "NodeNotReady", p.service, pod, node,
                                            "Node is not ready"))
            evict_at = at_s + grace + eviction_s
            if evict_at < self.timeline.end_s:
                self.events.append(ClusterEvent(evict_at, "k8s", "TaintManagerEviction", p.service, pod, node,
                                                f"Marking for deletion Pod {self.system.namespace}/{p.name}"))
                if self.system.services[p.service].kind == "service":
                    p.dead_s = evict_at
                    self.add_pod(p.service, evict_at + 1.0, version=p.version, exclude_nodes=[node])


def _initial_version(system: str, service: str) -> str:
    digest = k8s_suffix(f"{system}/{service}/version", 3)
    return f"1.{ord(digest[0]) % 9 + 1}.{ord(digest[1]) % 20}"


# --- conditions ---------------------------------------------------------------------------------------

@dataclass
class Conditions:
    """What faults and distractors change; all neutral by default. Shapes: T buckets, P pods, S services."""

    capacity: np.ndarray
    """(T, P) fraction of the CPU limit left to the application."""
    hog_cores: np.ndarray
    """(T, P) cores the application burns outside request work (a runaway loop)."""
    neighbour_cores: np.ndarray
    """(T, N) cores used on the node by workloads outside the system."""
    runqueue_ms: np.ndarray
    """(T, P) mean wait for a CPU each time a request thread wakes up (a competing workload)."""
    slow: np.ndarray
    """(T, P) service-time multiplier not caused by CPU (locks, stalls)."""
    cpu_cost: np.ndarray
    """(T, P) multiplier of CPU time per request (an expensive code path)."""
    net_delay_ms: np.ndarray
    """(T, P) added egress delay of the pod."""
    loss: np.ndarray
    """(T, P) packet loss probability on the pod's interface."""
    dns_fail: np.ndarray
    """(T, P) probability a name lookup from the pod fails."""
    dns_ms: float
    """How long a failed lookup takes (fast NXDOMAIN or a resolver timeout)."""
    tls_fail: np.ndarray
    """(T, S) probability a TLS handshake to the service fails."""
    write_error: np.ndarray
    """(T, P) probability a writing request fails on the pod (disk full)."""
    write_slow: np.ndarray
    """(T, P) multiplier of writing requests (IO saturation)."""
    mem_extra_mb: np.ndarray
    """(T, P) memory held beyond the resident baseline (a leak)."""
    disk_fill: np.ndarray
    """(T, P) filesystem usage ratio."""
    io_busy: np.ndarray
    """(T, P) disk busy ratio caused by conditions (on top of the pod's own writes)."""
    cache_miss: np.ndarray
    """(T, P) miss probability of cache reads (meaningful on cache pods)."""
    evictions: np.ndarray
    """(T, P) cache evictions per second."""
    debug_logs: np.ndarray
    """(T, S) the service logs at DEBUG level."""
    warn_burst: np.ndarray
    """(T, S) the service logs a burst of benign warnings."""
    pool_size: np.ndarray
    """(T, P) data-store connections per pod."""
    op_error: dict[int, np.ndarray] = field(default_factory=dict)
    """Operation -> (T, P) probability the handler fails on that pod."""
    op_error_code: dict[int, int] = field(default_factory=dict)
    """Operation -> BUG (throws at its compute line) or ERROR_CODE (returns an error status)."""
    op_wrong: dict[int, np.ndarray] = field(default_factory=dict)
    """Operation -> (T, P) probability the handler returns early with a wrong result."""
    op_slow: dict[int, np.ndarray] = field(default_factory=dict)
    """Operation -> (T, P) self-time multiplier."""
    edge_fail: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    """(caller, callee) service -> (T, P) probability a call from that caller pod is refused (wrong port)."""
    edge_timeout_ms: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    """(caller, callee) service -> (T,) client timeout overriding the call's own (NaN keeps it)."""

    @classmethod
    def neutral(cls, n_buckets: int, n_pods: int, n_services: int, n_nodes: int) -> Conditions:
        tp = (n_buckets, n_pods)
        return cls(capacity=np.ones(tp), hog_cores=np.zeros(tp), runqueue_ms=np.zeros(tp),
                   neighbour_cores=np.zeros((n_buckets, n_nodes)), slow=np.ones(tp), cpu_cost=np.ones(tp),
                   net_delay_ms=np.zeros(tp), loss=np.zeros(tp), dns_fail=np.zeros(tp), dns_ms=2.0,
                   tls_fail=np.zeros((n_buckets, n_services)), write_error=np.zeros(tp), write_slow=np.ones(tp),
                   mem_extra_mb=np.zeros(tp), disk_fill=np.zeros(tp), io_busy=np.zeros(tp),
                   cache_miss=np.full(tp, 0.08), evictions=np.zeros(tp),
                   debug_logs=np.zeros((n_buckets, n_services), dtype=bool), pool_size=np.full(tp, POOL_SIZE),
                   warn_burst=np.zeros((n_buckets, n_services), dtype=bool))


# --- the compiled system ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompiledCall:
    op: int
    probability: float
    count: int
    timeout_ms: float
    retries: int
    fallback: int
    optional: bool


class Compiled:
    """A system as arrays indexed by service (S) and operation (O)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.services = system.service_names
        self.service_index = {name: i for i, name in enumerate(self.services)}
        self.kind = np.array([_KIND_CODE[s.kind] for s in system.services], dtype=np.int8)  # (S,)
        self.runtime = [s.runtime for s in system.services]
        self.op_keys: list[tuple[str, str]] = [(s.name, o.method) for s in system.services for o in s.operations]
        self.op_index = {key: i for i, key in enumerate(self.op_keys)}
        ops = [o for s in system.services for o in s.operations]
        self.operations = ops
        self.op_service = np.array([self.service_index[k[0]] for k in self.op_keys], dtype=np.int32)  # (O,)
        self.op_median = np.array([o.median_ms for o in ops])
        self.op_sigma = np.array([o.sigma for o in ops])
        self.op_cpu_ms = np.array([o.cpu_cost_ms for o in ops])
        self.op_writes = np.array([o.writes for o in ops])
        self.op_error_rate = np.array([o.error_rate for o in ops])
        self.op_bytes = np.array([o.response_bytes for o in ops], dtype=np.float64)
        self.op_calls = [[self._compile_call(c) for c in o.calls] for o in ops]
        # Code-level faults strike at the handler's midpoint: calls before it are made, the rest are not.
        self.op_cut = np.array([len(o.calls) // 2 for o in ops], dtype=np.int32)
        self.op_parallel = np.array([o.parallel for o in ops])
        self.span_names = [o.name for o in ops]
        self.entry_ops = np.array([self.op_index[(rt.service, rt.operation)] for rt in system.request_types])
        weights = np.array([rt.weight for rt in system.request_types], dtype=np.float64)
        self.entry_weights = weights / weights.sum()
        self.visits = self._expected_visits()

    def _compile_call(self, call: Call) -> CompiledCall:
        fallback = self.op_index[call.fallback] if call.fallback is not None else -1
        return CompiledCall(op=self.op_index[(call.service, call.operation)], probability=call.probability,
                            count=call.count, timeout_ms=call.timeout_ms, retries=call.retries,
                            fallback=fallback, optional=call.optional)

    def _expected_visits(self) -> np.ndarray:
        """(S,) expected calls into each service per user request, without faults."""
        visits = np.zeros(len(self.services))
        memo: dict[int, np.ndarray] = {}

        def per_op(op: int) -> np.ndarray:
            if op not in memo:
                v = np.zeros(len(self.services))
                v[self.op_service[op]] += 1
                for cc in self.op_calls[op]:
                    v += cc.probability * cc.count * per_op(cc.op)
                    if cc.fallback >= 0:
                        v += cc.probability * cc.count * 0.08 * per_op(cc.fallback)
                memo[op] = v
            return memo[op]

        for op, w in zip(self.entry_ops, self.entry_weights, strict=True):
            visits += w * per_op(int(op))
        return visits

    def callers_of(self, service: int) -> list[int]:
        return sorted({int(self.op_service[o]) for o, calls in enumerate(self.op_calls)
                       for cc in calls if self.op_service[cc.op] == service or
                       (cc.fallback >= 0 and self.op_service[cc.fallback] == service)})


# --- records ------------------------------------------------------------------------------------------

@dataclass
class Records:
    """Every simulated call, columnar; one row is a server span, a client span or a data-store call."""

    sample: np.ndarray   # (R,) request sample index
    rid: np.ndarray      # (R,) record id (the span id's seed)
    parent: np.ndarray   # (R,) parent record id, -1 for a trace root
    role: np.ndarray     # (R,) SERVER, CLIENT or STORE
    service: np.ndarray  # (R,) service the record belongs to (the caller for client spans)
    pod: np.ndarray      # (R,) pod of that service, -1 when none
    peer: np.ndarray     # (R,) callee service for client spans, caller service otherwise (-1 for roots)
    peer_pod: np.ndarray  # (R,)
    op: np.ndarray       # (R,) operation called (callee's operation for client spans)
    start: np.ndarray    # (R,) seconds from the timeline start
    dur: np.ndarray      # (R,) milliseconds
    code: np.ndarray     # (R,) result code
    attempt: np.ndarray  # (R,) 0 for the first attempt of a call
    absorbed: np.ndarray  # (R,) how the caller absorbed a failure: UNHANDLED, RETRIED, FELL_BACK, TOLERATED


@dataclass
class Samples:
    """The simulated requests: arrays of length N."""

    bucket: np.ndarray
    arrival: np.ndarray
    rtype: np.ndarray
    weight: np.ndarray
    """Real requests each sample stands for."""
    traced: np.ndarray
    """Spans of this request are kept."""
    logged: np.ndarray
    """Request-scoped log lines of this request are kept."""


@dataclass
class SimResult:
    records: Records
    samples: Samples
    mult: np.ndarray
    """(T, P) service-time multiplier of the full pass."""
    cpu_demand: np.ndarray
    """(T, P) cores demanded: request work plus the background."""
    rho: np.ndarray
    """(T, P) CPU utilisation of the pod's available capacity."""
    node_share: np.ndarray
    """(T, P) fraction of CPU demand the node could serve."""
    pool_util: np.ndarray
    """(T, P) data-store connection pool utilisation."""
    background: np.ndarray
    """(T, P) cores of work between requests (timers, probes, scrapes), bursty; in `cpu_demand` too."""


@dataclass
class Simulation:
    """One simulated timeline and everything the emitters read."""

    system: System
    compiled: Compiled
    cluster: Cluster
    cond: Conditions
    timeline: Timeline
    result: SimResult
    scheme: str
    rng: np.random.Generator


# --- the engine ---------------------------------------------------------------------------------------

class Engine:
    """Simulate requests through the call graph under `Conditions`; see the module docstring."""

    def __init__(self, compiled: Compiled, cluster: Cluster, cond: Conditions, timeline: Timeline,
                 rng: np.random.Generator, config: ChaosConfig, trace_rate: float, rps: np.ndarray) -> None:
        self.c = compiled
        self.cluster = cluster
        self.cond = cond
        self.tl = timeline
        self.rng = rng
        self.config = config
        self.trace_rate = trace_rate
        pods = cluster.pods
        self.n_pods = len(pods)
        self.pod_service = np.array([p.service for p in pods], dtype=np.int32)
        self.pod_node = np.array([p.node for p in pods], dtype=np.int32)
        self.born = np.array([p.born_s for p in pods])
        self.ready = np.array([p.ready_s for p in pods])
        self.dead = np.array([p.dead_s for p in pods])
        self.svc_pods = [np.array(cluster.pods_of(s), dtype=np.int32) for s in range(len(compiled.services))]
        self.svc_outages = [[o for o in cluster.outages if pods[o.pod].service == s]
                            for s in range(len(compiled.services))]
        self.rps = rps
        self._counts: np.ndarray | None = None
        # Work a pod does between requests comes in bursts: BACKGROUND_CORES on average, gamma-distributed per
        # bucket (coefficient of variation 0.5; idle pods of the real TrainTicket day vary by about that much).
        # Metrics scale the pod's background network traffic and system calls by the same bursts.
        self.background = rng.gamma(4.0, BACKGROUND_CORES / 4, (timeline.n_buckets, len(cluster.pods)))
        resources = [s.resources() for s in compiled.system.services]
        self.cpu_limit = np.array([resources[s][0] for s in self.pod_service])        # (P,)
        self.mem_limit = np.array([resources[s][1] for s in self.pod_service])        # (P,)
        self.mem_base = np.array([resources[s][2] for s in self.pod_service])         # (P,)
        self.base_mult = self._base_multiplier()
        self.dns_active = bool(cond.dns_fail.any())
        self.tls_active: np.ndarray = np.asarray(cond.tls_fail.any(axis=0))  # (S,)
        self.delay_active = bool(cond.net_delay_ms.any())
        self.loss_active = bool(cond.loss.any())

    # -- load ---------------------------------------------------------------------------------------

    def _real_counts(self) -> np.ndarray:
        """(T, K) real user requests of each type in each bucket: Poisson arrivals at the bucket's rate.

        Counting noise is what makes a lightly loaded pod's request series jumpy; drawn once, so the
        load probes and the full pass see the same requests.
        """
        if self._counts is None:
            expected = self.rps[:, None] * self.c.entry_weights[None, :] * self.tl.step_s
            self._counts = self.rng.poisson(expected)
        return self._counts

    def _samples(self, per_bucket: float, rng: np.random.Generator) -> Samples:
        step = self.tl.step_s
        counts = self._real_counts()                                                     # (T, K)
        # At most `per_bucket` samples (by type share) stand for a bucket's requests; fewer real requests
        # than that are simulated one by one (weight 1), and a type with none that bucket has no sample.
        m = np.maximum(1, np.round(self.c.entry_weights * per_bucket)).astype(np.int64)  # (K,) samples per type
        per_cell = np.minimum(m[None, :], counts)                                        # (T, K)
        cell = np.repeat(np.arange(per_cell.size), per_cell.ravel())                     # (N,)
        bucket, rtype = np.divmod(cell, per_cell.shape[1])
        arrival = bucket * step + rng.random(bucket.size) * step
        weight = counts.ravel()[cell] / per_cell.ravel()[cell]
        traced = rng.random(bucket.size) < np.minimum(1.0, weight * self.trace_rate)
        logged = rng.random(bucket.size) < (self.config.log_sample_rate or self.c.system.log_sample_rate)
        order = np.argsort(arrival, kind="stable")
        return Samples(bucket=bucket[order], arrival=arrival[order], rtype=rtype[order], weight=weight[order],
                       traced=traced[order], logged=logged[order])

    # -- multipliers --------------------------------------------------------------------------------

    def _base_multiplier(self) -> np.ndarray:
        """(T, P) service-time multiplier without queueing: conditions, GC pressure, JIT warm-up."""
        t_mid = self.tl.bucket_starts()[:, None] + self.tl.step_s / 2                   # (T, 1)
        runtime = [self.c.runtime[s] for s in self.pod_service]
        managed = np.array([r in ("java", "go", "csharp", "node") for r in runtime])   # (P,)
        mem_ratio = (self.mem_base + self.cond.mem_extra_mb) / self.mem_limit           # (T, P)
        gc = 1 + 8 * np.clip((mem_ratio - 0.8) / 0.2, 0, 1) ** 2 * managed
        jit = np.where(np.array(runtime) == "java", 1.5, 0.3)
        since = np.maximum(t_mid - self.ready, 0)
        fresh = self.born > -1e8
        warm = 1 + jit * np.exp(-since / 60.0) * fresh
        return self.cond.slow * gc * warm * self.cond.cpu_cost

    def _multiplier(self, load: tuple[np.ndarray, ...] | None) -> tuple[np.ndarray, np.ndarray]:
        """(T, P) service-time multiplier with queueing, and (T, P) mean CFS throttling stall in ms.

        A pod using its whole CPU quota is throttled for the rest of each 100 ms CFS period, so
        even short requests wait up to a period: a stall that does not scale with service time.
        """
        if load is None:
            return self.base_mult, np.zeros_like(self.base_mult)
        rho = load[1]
        stall = CFS_PERIOD_MS * np.clip((rho - 0.75) / 0.25, 0, 1) ** 1.5
        return self.base_mult / (1 - np.minimum(rho, 0.985)), stall

    def _utilisation(self, records: Records, weight: np.ndarray) -> tuple[np.ndarray, ...]:
        """(request CPU demand in cores, utilisation of the pod's quota, node share), each (T, P).

        Utilisation counts everything in the pod's CPU quota (requests and a runaway loop) against
        what the quota, contention and the node leave: CFS throttling slows requests even when they
        themselves need little CPU.
        """
        T, P = self.tl.n_buckets, self.n_pods
        served = (records.role != CLIENT) & (records.pod >= 0)
        t = self.tl.bucket(records.start[served])
        pod = records.pod[served]
        cost = self.c.op_cpu_ms[records.op[served]] * self.cond.cpu_cost[t, pod]
        demand = np.bincount(t * P + pod, weights=weight[records.sample[served]] * cost,
                             minlength=T * P).reshape(T, P) / (self.tl.step_s * 1000) + self.background
        in_quota = demand + self.cond.hog_cores
        node_demand = np.zeros((T, self.cond.neighbour_cores.shape[1]))
        np.add.at(node_demand.T, self.pod_node, in_quota.T)
        node_demand += self.cond.neighbour_cores + 0.4
        share = np.minimum(1.0, self.c.system.node_cores / node_demand)[:, self.pod_node]
        rho = in_quota / np.maximum(self.cpu_limit * self.cond.capacity * share, 1e-3)
        return demand, rho, share

    def _pool_util(self, records: Records, weight: np.ndarray) -> np.ndarray:
        """(T, P) in-flight data-store calls per pod over its pool size (Little's law)."""
        T, P = self.tl.n_buckets, self.n_pods
        store_call = (records.role == CLIENT) & (self.c.kind[self.c.op_service[records.op]] > 0) & (records.pod >= 0)
        t = self.tl.bucket(records.start[store_call])
        busy = np.bincount(t * P + records.pod[store_call],
                           weights=weight[records.sample[store_call]] * records.dur[store_call] / 1000,
                           minlength=T * P).reshape(T, P) / self.tl.step_s
        return busy / self.cond.pool_size

    # -- passes -------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        per_bucket = self.config.samples_per_minute * self.tl.step_s / 60.0
        load = None
        pool = np.zeros((self.tl.n_buckets, self.n_pods))
        for _ in range(self.config.load_probes):
            probe = _Pass(self, self._samples(per_bucket / 4, self.rng), *self._multiplier(load), pool)
            records = probe.run()
            load = self._utilisation(records, probe.samples.weight)
            pool = self._pool_util(records, probe.samples.weight)
        mult, stall = self._multiplier(load)
        full = _Pass(self, self._samples(per_bucket, self.rng), mult, stall, pool)
        records = full.run()
        demand, rho, share = self._utilisation(records, full.samples.weight)
        return SimResult(records=records, samples=full.samples, mult=mult, cpu_demand=demand, rho=rho,
                         node_share=share, pool_util=pool, background=self.background)


class _Pass:
    """One simulation pass over a sample of requests; builds the records."""

    def __init__(self, engine: Engine, samples: Samples, mult: np.ndarray, stall: np.ndarray,
                 pool_util: np.ndarray) -> None:
        self.e = engine
        self.c = engine.c
        self.cond = engine.cond
        self.rng = engine.rng
        self.samples = samples
        self.mult = mult
        self.stall = stall
        self.stall_active = bool(stall.any())
        self.runqueue_active = bool(engine.cond.runqueue_ms.any())
        self.pool_util = pool_util
        self.pool_active = bool((pool_util > 0.7).any())
        self.bucket = samples.bucket
        self.chunks: list[tuple[np.ndarray, ...]] = []
        self.scalars: list[tuple[int, int, int, int, int]] = []
        self.next_id = 0

    def run(self) -> Records:
        s = self.samples
        for k, op in enumerate(self.c.entry_ops):
            rows = np.flatnonzero(s.rtype == k)
            svc = int(self.c.op_service[op])
            pod = self._route(svc, s.arrival[rows])
            none = pod < 0
            # Without a ready entry pod the ingress answers 503 itself: a record without a pod (no span).
            self._record(rows[none], self._ids(int(none.sum())), np.full(int(none.sum()), -1, np.int64), SERVER,
                         svc, pod[none], -1, pod[none], int(op), s.arrival[rows[none]],
                         self.rng.lognormal(0.0, 0.3, int(none.sum())), np.full(int(none.sum()), NO_ENDPOINT),
                         0, UNHANDLED)
            rows, pod = rows[~none], pod[~none]
            self._serve(int(op), rows, s.arrival[rows], pod, -1, np.full(rows.size, -1, np.int32),
                        np.full(rows.size, -1, dtype=np.int64))
        arrays = [np.concatenate(col) for col in zip(*self.chunks, strict=True)]
        # Per-chunk constants are expanded once here rather than once per call site.
        sizes = np.array([c[0].size for c in self.chunks])
        scalars = np.array(self.scalars, dtype=np.int64).T                                   # (5, chunks)
        role, service, peer, op, attempt = (np.repeat(col, sizes) for col in scalars)
        rows, rid, parent, pod, peer_pod, start, dur, code, absorbed = arrays
        return Records(sample=rows, rid=rid, parent=parent, role=role.astype(np.int8), service=service.astype(np.int16),
                       pod=pod, peer=peer.astype(np.int16), peer_pod=peer_pod, op=op.astype(np.int32), start=start,
                       dur=dur, code=code, attempt=attempt.astype(np.int8), absorbed=absorbed)

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def _record(self, rows: np.ndarray, rid: np.ndarray, parent: np.ndarray, role: int, service: int,
                pod: np.ndarray, peer: int, peer_pod: np.ndarray, op: int, start: np.ndarray,
                dur: np.ndarray, code: np.ndarray, attempt: int, absorbed: np.ndarray | int) -> None:
        n = rows.size
        how = absorbed.astype(np.int8) if isinstance(absorbed, np.ndarray) else np.full(n, absorbed, np.int8)
        self.chunks.append((rows, rid, parent, pod, peer_pod, start, dur, code.astype(np.int8, copy=False), how))
        self.scalars.append((role, service, peer, op, attempt))

    # -- routing ------------------------------------------------------------------------------------

    def _route(self, service: int, time: np.ndarray) -> np.ndarray:
        """(n,) a ready pod of `service` for each request at `time`, -1 when the service has none."""
        pods = self.e.svc_pods[service]                                               # (r,)
        tt = time[:, None]
        ok = (self.e.ready[pods] <= tt) & (tt < self.e.dead[pods])                    # (n, r)
        for o in self.e.svc_outages[service]:
            ok &= ~((pods == o.pod) & (tt >= o.start_s + o.detect_s) & (tt < o.end_s))
        if pods.size == 1:
            return np.where(ok[:, 0], pods[0], -1).astype(np.int32)
        count = ok.sum(axis=1)
        pick = np.floor(self.rng.random(time.size) * count)
        choice = np.argmax(np.cumsum(ok, axis=1) > pick[:, None], axis=1)
        return np.where(count > 0, pods[choice], -1).astype(np.int32)

    def _down_mode(self, service: int, pod: np.ndarray, time: np.ndarray) -> np.ndarray:
        """(n,) 0 when the pod answers, 1 when its container is down, 2 when its node is gone."""
        mode = np.zeros(pod.size, np.int8)
        for o in self.e.svc_outages[service]:
            hit = (pod == o.pod) & (time >= o.start_s) & (time < o.end_s)
            mode[hit] = 1 if o.mode == "crash" else 2
        return mode

    # -- calls --------------------------------------------------------------------------------------

    def _call(self, cc: CompiledCall, op: int, rows: np.ndarray, start: np.ndarray, caller_svc: int,
              caller_pod: np.ndarray, parent: np.ndarray, attempt: int, may_retry: bool,
              absorbed: int) -> tuple[np.ndarray, np.ndarray]:
        """A client call from `caller_pod` to operation `op`: (client-side ms, client-side code), both (n,)."""
        n = rows.size
        svc = int(self.c.op_service[op])
        t = self.bucket[rows]
        cond, rng = self.cond, self.rng
        rid = self._ids(n)  # reserved first: the callee's server span points at this client span
        pod = self._route(svc, start)
        code = np.zeros(n, np.int8)
        ms = np.zeros(n)
        override = cond.edge_timeout_ms.get((caller_svc, svc))
        timeout = cc.timeout_ms if override is None else np.where(np.isnan(override[t]), cc.timeout_ms, override[t])

        def fail(mask: np.ndarray, what: int, median_ms: np.ndarray | float, spread: float = 0.3) -> None:
            mask &= code == OK
            if mask.any():
                code[mask] = what
                ms[mask] = np.broadcast_to(median_ms, (n,))[mask] * rng.lognormal(0, spread, int(mask.sum()))

        # Each failure mode costs random draws only where some condition enables it.
        if self.e.dns_active:
            fail(rng.random(n) < cond.dns_fail[t, caller_pod], DNS, cond.dns_ms, 0.2)
        fail(pod < 0, NO_ENDPOINT, 1.0)
        if self.e.tls_active[svc]:
            fail(rng.random(n) < cond.tls_fail[t, svc], TLS, 4.0)
        edge = cond.edge_fail.get((caller_svc, svc))
        if edge is not None:
            fail(rng.random(n) < edge[t, caller_pod], REFUSED, 1.0)
        wait = self._pool_wait(t, caller_pod, fail) if self.c.kind[svc] > 0 and self.pool_active else 0.0
        if self.e.svc_outages[svc]:
            mode = self._down_mode(svc, pod, start)
            fail(mode == 1, REFUSED, 1.2)
            fail(mode == 2, UNREACHABLE, np.minimum(timeout, CONNECT_TIMEOUT_MS), 0.0)
        reached = np.flatnonzero(code == OK)
        if reached.size:
            r_t, r_pod, r_caller = t[reached], pod[reached], caller_pod[reached]
            out_ms = 0.15 + (wait[reached] if isinstance(wait, np.ndarray) else 0.0)
            back_ms = 0.15
            if self.e.delay_active:
                out_ms = out_ms + cond.net_delay_ms[r_t, r_caller]
                back_ms = back_ms + cond.net_delay_ms[r_t, r_pod]
            if self.e.loss_active:
                out_ms = out_ms + self._retransmit_ms(np.maximum(cond.loss[r_t, r_caller], cond.loss[r_t, r_pod]))
            server_ms, server_code = self._serve(op, rows[reached], start[reached] + out_ms / 1000, r_pod,
                                                 caller_svc, r_caller, rid[reached])
            ms[reached] = out_ms + server_ms + back_ms
            code[reached] = _CLIENT_VIEW[server_code]
        over = ms > timeout
        code[over] = TIMEOUT
        ms[over] = np.broadcast_to(timeout, (n,))[over]
        how = np.where(code < 10, UNHANDLED, np.where(may_retry & RETRYABLE[code], RETRIED, absorbed))
        self._record(rows, rid, parent, CLIENT, caller_svc, caller_pod, svc, pod, op, start, ms, code, attempt, how)
        return ms, code

    def _pool_wait(self, t: np.ndarray, caller_pod: np.ndarray, fail) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Connection-pool wait in ms; beyond a full pool some callers give up after the pool timeout."""
        n = t.size
        util = self.pool_util[t, caller_pod]
        fail(self.rng.random(n) < np.clip(1 - 1 / np.maximum(util, 1e-9), 0, 0.97), POOL, POOL_TIMEOUT_MS, 0.0)
        mean_wait = np.where(util > 0.7, 20.0 * util / (1 - np.minimum(util, 0.95)), 0.0)
        return self.rng.exponential(1.0, n) * mean_wait

    def _retransmit_ms(self, loss: np.ndarray) -> np.ndarray:
        """TCP retransmission delays: an exchange of ~6 packets, RTO 200 ms doubling per retry."""
        p = np.clip(1 - (1 - loss) ** 6, 1e-12, 0.999)
        k = np.floor(np.log(self.rng.random(loss.size)) / np.log(p))
        k = np.where(loss > 0, np.minimum(k, 6), 0)
        return 200.0 * (2 ** k - 1)

    # -- handlers -----------------------------------------------------------------------------------

    def _serve(self, op: int, rows: np.ndarray, start: np.ndarray, pod: np.ndarray, caller_svc: int,
               caller_pod: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The callee's handler on `pod`: (server ms, server code), both (n,)."""
        n = rows.size
        svc = int(self.c.op_service[op])
        t = self.bucket[rows]
        cond, rng = self.cond, self.rng
        rid = self._ids(n)
        mult = self.mult[t, pod]
        slow = cond.op_slow.get(op)
        if slow is not None:
            mult = mult * slow[t, pod]
        writes = bool(self.c.op_writes[op])
        if writes:
            mult = mult * cond.write_slow[t, pod]
        self_ms = self.c.op_median[op] * mult * rng.lognormal(0, self.c.op_sigma[op], n)
        if self.stall_active:
            self_ms += self.stall[t, pod] * rng.exponential(1.0, n)
        if self.runqueue_active:
            # The thread waits for a CPU when the request arrives and again after each call returns.
            wakeups = 1 + len(self.c.op_calls[op])
            self_ms += cond.runqueue_ms[t, pod] * rng.gamma(wakeups, 1.0, n)
        code = np.where(rng.random(n) < self.c.op_error_rate[op], EXCEPTION, OK).astype(np.int8)
        fault = cond.op_error.get(op)
        if fault is not None:
            code[(code == OK) & (rng.random(n) < fault[t, pod])] = cond.op_error_code[op]
        wrong = cond.op_wrong.get(op)
        if wrong is not None:
            code[(code == OK) & (rng.random(n) < wrong[t, pod])] = WRONG
        if self.c.kind[svc] == 2 and not writes:
            code[(code == OK) & (rng.random(n) < cond.cache_miss[t, pod])] = MISS
        # Code-level failures happen at the handler's midpoint: the calls after it are never made.
        cut = np.where(_CUTS_SHORT[code], self.c.op_cut[op], len(self.c.op_calls[op]))
        kids_ms, kids_fail = self._children(op, rows, start + 0.35 * self_ms / 1000, svc, pod, rid, cut)
        code[(code == OK) & (kids_fail == 1)] = DOWNSTREAM
        code[(code == OK) & (kids_fail == 2)] = VALIDATION
        if writes:
            code[(code <= MISS) & (rng.random(n) < cond.write_error[t, pod])] = DISK_FULL
        server_ms = self_ms + kids_ms
        role = STORE if self.c.kind[svc] > 0 else SERVER
        self._record(rows, rid, parent, role, svc, pod, caller_svc, caller_pod, op, start, server_ms, code, 0,
                     UNHANDLED)
        return server_ms, code

    def _children(self, op: int, rows: np.ndarray, start: np.ndarray, svc: int, pod: np.ndarray,
                  rid: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the handler's calls: (ms spent in calls, failure 0 none / 1 a call failed / 2 wrong result seen)."""
        n = rows.size
        calls = self.c.op_calls[op]
        fail = np.zeros(n, np.int8)
        if not calls:
            return np.zeros(n), fail
        parallel = bool(self.c.op_parallel[op])
        cursor = start.copy()
        longest = np.zeros(n)
        for j, cc in enumerate(calls):
            active = (cut > j) & (fail == 0)
            if cc.probability < 1:
                active &= self.rng.random(n) < cc.probability
            for _ in range(cc.count):
                idx = np.flatnonzero(active)
                if idx.size == 0:
                    break
                begin = start[idx] if parallel else cursor[idx]
                ms, final = self._attempts(cc, rows[idx], begin, svc, pod[idx], rid[idx])
                failed = (final >= 10) & (not cc.optional)
                seen_wrong = (final == WRONG) & (self.rng.random(idx.size) < 0.85)
                fail[idx[seen_wrong]] = 2
                fail[idx[failed]] = 1
                active[idx[failed | seen_wrong]] = False
                if parallel:
                    longest[idx] = np.maximum(longest[idx], ms)
                else:
                    cursor[idx] += (ms + self.rng.exponential(0.15, idx.size)) / 1000
        kids_ms = longest if parallel else (cursor - start) * 1000
        return kids_ms, fail

    def _attempts(self, cc: CompiledCall, rows: np.ndarray, start: np.ndarray, svc: int, pod: np.ndarray,
                  parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One logical call with its retries, then its fallback: (total ms, final code)."""
        n = rows.size
        total = np.zeros(n)
        code = np.zeros(n, np.int8)
        pending = np.arange(n)
        absorbed = FELL_BACK if cc.fallback >= 0 else TOLERATED if cc.optional else UNHANDLED
        for attempt in range(cc.retries + 1):
            may_retry = attempt < cc.retries
            ms, c = self._call(cc, cc.op, rows[pending], start[pending] + total[pending] / 1000, svc, pod[pending],
                               parent[pending], attempt, may_retry, absorbed)
            total[pending] += ms
            code[pending] = c
            retry = RETRYABLE[c] if may_retry else np.zeros(c.size, bool)
            pending = pending[retry]
            if pending.size == 0:
                break
            total[pending] += self.rng.uniform(20, 60, pending.size) * 2 ** attempt   # back-off
        if cc.fallback >= 0:
            fb = np.flatnonzero((code >= 10) | (code == MISS))
            if fb.size:
                fallback = CompiledCall(op=cc.fallback, probability=1.0, count=1, timeout_ms=5000.0, retries=0,
                                        fallback=-1, optional=False)
                ms, c = self._call(fallback, cc.fallback, rows[fb], start[fb] + total[fb] / 1000, svc, pod[fb],
                                   parent[fb], 0, False, UNHANDLED)
                total[fb] += ms
                code[fb] = c
        return total, code
