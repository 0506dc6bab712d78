"""The fault library — the 16 types of `flipmoe.telemetry.taxonomy.FAULT_TYPES` — and benign distractors.

A fault is injected in two steps: `plan` changes the cluster (deploys, crashes, node loss) before
the condition arrays exist, `apply` writes into the `Conditions` (T buckets x P pods). It changes
only the mechanism at the root cause; callers' symptoms come out of the simulation. Severity in
(0, 1] scales magnitudes; onset 'sudden' switches the fault on within one bucket, 'gradual' ramps
it up over a third to a half of the remaining window (faults whose dynamics are their own — a
rollout, a crash loop, a lost node, a config reload, a certificate — ignore the onset shape).

Where the label points (`service`, `pod`, `node`, `fine_grained`):
- pod-level faults (CPU, memory, disk, network, DNS, crash loop): the pod, its service and node;
  `fine_grained` is the metric that carries the mechanism in the system's naming scheme, or the
  crash cause.
- `node_failure`: the node, and of the pods it hosted the one whose service takes the most
  traffic (the service an SRE would name first); `fine_grained` says the node went NotReady.
- database and cache faults (`db_slow_query`, `cache_outage`): the data store itself, as a real
  SRE names the database or cache, not its callers; `fine_grained` is the slow statement or the
  cache signal.
- service-wide faults (deploys, config changes, certificates, retry storms): the service; `pod` is
  set only when a single pod carries the fault; `fine_grained` is the code location (`path:line`
  in the carried source tree), the config key, the certificate, or the overloaded metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.code import CodeBase, config_prefix
from data_pipeline.chaos.metric_names import metric_name
from data_pipeline.chaos.simulate import Cluster, Compiled, Conditions, Timeline
from data_pipeline.chaos.systems import System
from flipmoe.errors import FlipmoeInputError

MIN_TRAFFIC = 0.03
"""A randomly chosen target takes part in at least this share of user requests (expected visits)."""

ONSETS = ("sudden", "gradual")

_COMMITS = ("refactor {desc} handling", "bump spring-boot to 2.7.18", "add metrics to {method}",
            "improve logging around {method}", "support new {key} format", "tidy up error messages",
            "update grpc dependencies", "cache {key} lookups", "remove deprecated endpoint")


@dataclass
class FaultContext:
    """Everything a fault needs to choose its target and inject itself."""

    system: System
    compiled: Compiled
    cluster: Cluster
    code: CodeBase
    timeline: Timeline
    rng: np.random.Generator
    onset_s: float
    severity: float
    onset: str
    scheme: str
    rps: np.ndarray
    """(T,) user requests per second."""
    ramp_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.ramp_s = float(self.rng.uniform(0.33, 0.5)) * (self.timeline.end_s - self.onset_s)

    def profile(self, *, ramp_s: float | None = None) -> np.ndarray:
        """(T,) fault intensity in [0, 1] per bucket: the onset shape, or a linear ramp over `ramp_s`."""
        starts = self.timeline.bucket_starts()
        if self.onset == "sudden" and ramp_s is None:
            # The first bucket holds the fault for part of its length.
            return np.clip((starts + self.timeline.step_s - self.onset_s) / self.timeline.step_s, 0.0, 1.0)
        mid = starts + self.timeline.step_s / 2
        return np.clip((mid - self.onset_s) / (ramp_s or self.ramp_s), 0.0, 1.0)

    def service_index(self, name: str) -> int:
        return self.compiled.service_index[name]

    def pods_at(self, service: str, time_s: float) -> list[int]:
        return [p for p in self.cluster.pods_of(self.service_index(service)) if self.cluster.alive_at(p, time_s)]

    def metric(self, quantity: str) -> str:
        return metric_name(self.scheme, quantity)

    def busy_services(self, kinds: tuple[str, ...] = ("service",)) -> list[str]:
        """Services of the given kinds that take part in enough requests to matter."""
        return [s.name for i, s in enumerate(self.system.services)
                if s.kind in kinds and self.compiled.visits[i] >= MIN_TRAFFIC]

    def iso(self, seconds: float) -> str:
        return self.timeline.timestamp(seconds).isoformat().replace("+00:00", "Z")


class Fault:
    """Base class: a fault with its target; subclasses set `name`, `scope` and the two steps."""

    name: ClassVar[str]
    scope: ClassVar[str] = "pod"
    """'pod' (one pod), 'service' (all pods of a service), 'store' (a data store) or 'node'."""
    shaped: ClassVar[bool] = True
    """The onset shape applies (otherwise the fault has its own dynamics)."""

    def __init__(self, ctx: FaultContext, service: str, pod: int | None) -> None:
        self.ctx = ctx
        self.service = service
        self.pod = pod
        self.node: int | None = ctx.cluster.pods[pod].node if pod is not None else None
        self.fine_grained = ""
        self.extra: dict[str, Any] = {}

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        """Services this fault can strike."""
        return [s.name for s in ctx.system.services]

    @classmethod
    def preferred(cls, ctx: FaultContext) -> list[str]:
        """Eligible services with enough traffic to show at the entry: random targets come from these."""
        busy = set(ctx.busy_services(("service", "database", "cache")))
        return [s for s in cls.eligible(ctx) if s in busy] or cls.eligible(ctx)

    @property
    def target_pod(self) -> int:
        """The struck pod of a fault that strikes one pod."""
        assert self.pod is not None, f"{self.name} strikes one pod"
        return self.pod

    @property
    def target_node(self) -> int:
        assert self.node is not None, f"{self.name} strikes one node"
        return self.node

    def plan(self) -> None:
        """Change the cluster (before conditions are allocated)."""

    def apply(self, cond: Conditions) -> None:
        """Write the fault's effect into the per-second conditions; every fault type defines its own."""
        raise TypeError(f"{type(self).__name__} must define apply(): it is an abstract fault")

    @property
    def pods(self) -> list[int]:
        """Pods that carry the fault."""
        return [self.pod] if self.pod is not None else self.ctx.pods_at(self.service, self.ctx.onset_s)


# --- infrastructure -----------------------------------------------------------------------------------

class CpuContention(Fault):
    name = "cpu_contention"

    def apply(self, cond: Conditions) -> None:
        ctx = self.ctx
        x = ctx.profile()
        sev = ctx.severity
        # A foreign workload pinned to the victim's CPUs: its threads wait for a timeslice each time
        # they wake, it keeps less of its quota, and thrashed caches make each request cost more CPU.
        # The node gets busier; the victim's neighbours on it wait a little too.
        wait_ms = x * (3 + 12 * sev)
        neighbours = [p for p, state in enumerate(ctx.cluster.pods) if state.node == self.node and p != self.pod]
        cond.runqueue_ms[:, neighbours] += 0.15 * wait_ms[:, None]
        cond.runqueue_ms[:, self.target_pod] += wait_ms
        cond.capacity[:, self.pod] *= 1 - (0.5 + 0.3 * sev) * x
        cond.cpu_cost[:, self.pod] *= 1 + 0.5 * sev * x
        cond.neighbour_cores[:, self.node] += x * (0.3 + 0.3 * sev) * ctx.system.node_cores
        self.fine_grained = ctx.metric("cpu_pressure")


class CpuHog(Fault):
    name = "cpu_hog"

    def apply(self, cond: Conditions) -> None:
        x = self.ctx.profile()
        limit = self.ctx.system.service(self.service).resources()[0]
        cond.hog_cores[:, self.pod] += x * (0.6 + 0.38 * self.ctx.severity) * limit
        self.fine_grained = self.ctx.metric("cpu")


class MemoryLeak(Fault):
    name = "memory_leak"

    def plan(self) -> None:
        ctx = self.ctx
        _, limit, base, _ = ctx.system.service(self.service).resources()
        headroom = 0.97 * limit - base
        remaining = ctx.timeline.end_s - ctx.onset_s
        first_oom = remaining * float(ctx.rng.uniform(0.3, 0.5)) * (1.35 - 0.6 * ctx.severity)
        secs = np.arange(ctx.onset_s, ctx.timeline.end_s, 1.0)
        ramp = np.clip((secs - ctx.onset_s) / ctx.ramp_s, 0, 1) if ctx.onset == "gradual" else np.ones(secs.size)
        shape = np.cumsum(ramp)                                        # leaked MiB per unit rate
        rate = headroom / shape[min(int(first_oom), shape.size - 1)]  # MiB/s so the first OOM lands on time
        leaked = rate * shape
        self.extra.update(leak_mib_per_s=round(float(rate * ramp[-1]), 3))
        # Walk OOM kills: memory resets at each restart, the leak carries on; restarts back off.
        self.trajectory = np.zeros(secs.size)
        offset, i, restarts = 0.0, 0, 0
        while i < secs.size:
            over = np.flatnonzero(leaked[i:] - offset >= headroom)
            if over.size == 0:
                self.trajectory[i:] = leaked[i:] - offset
                break
            oom = i + int(over[0])
            self.trajectory[i:oom] = leaked[i:oom] - offset
            down = (10.0 * 2 ** max(restarts - 1, 0) if restarts else 0.0) + ctx.cluster.startup_s(
                ctx.service_index(self.service))
            ctx.cluster.crash(self.target_pod, float(secs[oom]), down_s=down, reason="OOMKilled", exit_code=137)
            restarts += 1
            back = min(secs.size, oom + int(down) + 1)
            offset = leaked[back - 1] if back - 1 < secs.size else leaked[-1]
            i = back
        self.secs = secs
        self.fine_grained = ctx.metric("mem")

    def apply(self, cond: Conditions) -> None:
        mid = self.ctx.timeline.bucket_starts() + self.ctx.timeline.step_s / 2
        cond.mem_extra_mb[:, self.pod] += np.interp(mid, self.secs, self.trajectory, left=0.0)


class DiskIO(Fault):
    name = "disk_io"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        return [s.name for s in ctx.system.services if any(o.writes for o in s.operations)]

    def apply(self, cond: Conditions) -> None:
        ctx, sev = self.ctx, self.ctx.severity
        stateful = ctx.system.service(self.service).kind != "service"
        self.variant = str(ctx.rng.choice(["disk_full", "io_saturation"], p=[0.4, 0.6] if stateful else [0.6, 0.4]))
        if self.variant == "disk_full":
            # Something writes fast (a log storm, a runaway temp file) until the volume is full.
            x = ctx.profile(ramp_s=float(ctx.rng.uniform(60, 240)) * (1.6 - sev))
            base = cond.disk_fill[:, self.pod].copy()
            cond.disk_fill[:, self.pod] = base + (1 - base) * x
            cond.write_error[:, self.pod] = np.clip((x - 0.985) / 0.015, 0, 1) * (0.6 + 0.4 * sev)
            cond.io_busy[:, self.pod] = np.maximum(cond.io_busy[:, self.pod], 0.5 * x * (x < 1))
            self.fine_grained = ctx.metric("fs_usage")
        else:
            x = ctx.profile()
            cond.io_busy[:, self.pod] = np.maximum(cond.io_busy[:, self.pod], 0.97 * x)
            cond.write_slow[:, self.pod] *= 1 + x * float(ctx.rng.uniform(8, 30)) * sev
            cond.slow[:, self.pod] *= 1 + x * float(ctx.rng.uniform(0.5, 2.0)) * sev
            self.fine_grained = ctx.metric("disk_io")
        self.extra["variant"] = self.variant


# --- network ------------------------------------------------------------------------------------------

class NetworkDelay(Fault):
    name = "network_delay"

    def apply(self, cond: Conditions) -> None:
        ctx = self.ctx
        delay = (60 + 540 * ctx.severity) * float(ctx.rng.uniform(0.8, 1.2))
        jitter = ctx.rng.lognormal(0, 0.1, ctx.timeline.n_buckets)
        cond.net_delay_ms[:, self.pod] += ctx.profile() * delay * jitter
        self.extra["delay_ms"] = round(delay, 1)
        self.fine_grained = ctx.metric("net_rtt_p90")


class PacketLoss(Fault):
    name = "packet_loss"

    def apply(self, cond: Conditions) -> None:
        loss = 0.04 + 0.3 * self.ctx.severity
        cond.loss[:, self.pod] = np.maximum(cond.loss[:, self.pod], self.ctx.profile() * loss)
        self.extra["loss"] = round(loss, 3)
        self.fine_grained = self.ctx.metric("net_drop")


class DnsFailure(Fault):
    name = "dns_failure"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        return [s.name for s in ctx.system.services if s.kind == "service" and any(o.calls for o in s.operations)]

    def apply(self, cond: Conditions) -> None:
        ctx = self.ctx
        self.variant = str(ctx.rng.choice(["nxdomain", "resolver_timeout"]))
        cond.dns_ms = 2.0 if self.variant == "nxdomain" else 5000.0
        cond.dns_fail[:, self.pod] = np.maximum(cond.dns_fail[:, self.pod],
                                                ctx.profile() * (0.5 + 0.5 * ctx.severity))
        self.extra["variant"] = self.variant
        self.fine_grained = ("dns: NXDOMAIN for in-cluster service names (search domains)"
                             if self.variant == "nxdomain" else "dns: nameserver in /etc/resolv.conf not answering")


# --- orchestration ------------------------------------------------------------------------------------

_CRASH_CAUSES = {
    "java": ("Failed to bind properties under 'spring.datasource.password': secret key not found", 1),
    "go": ("panic: open /etc/secrets/api-key: no such file or directory", 2),
    "python": ("ModuleNotFoundError: No module named 'opentelemetry.exporter'", 1),
    "node": ("Error: Cannot find module './config/production.json'", 1),
    "csharp": ("Unhandled exception. System.InvalidOperationException: Unable to resolve service for type "
               "'IConnectionMultiplexer'", 139),
    "mysql": ("[ERROR] [MY-012592] [InnoDB] Operating system error number 13 in a file operation", 1),
    "postgres": ('FATAL:  data directory "/var/lib/postgresql/data" has invalid permissions', 1),
    "mongodb": ("Fatal assertion: 28595 Permission denied opening WiredTiger.wt", 14),
    "redis": ("Fatal error loading the DB: Permission denied. Exiting.", 1),
}


class PodCrashLoop(Fault):
    name = "pod_crash_loop"
    shaped = False

    def plan(self) -> None:
        ctx = self.ctx
        runtime = ctx.system.service(self.service).runtime
        cause, exit_code = _CRASH_CAUSES[runtime]
        # The container dies right after each start; kubelet backs off 10 s, 20 s, ... up to 5 min.
        t, k = ctx.onset_s, 0
        while t < ctx.timeline.end_s:
            ctx.cluster.restarts.append(sim.Restart(self.target_pod, t, "Error", exit_code, cause))
            t += min(10.0 * 2**k, 300.0) + float(ctx.rng.uniform(2, 6))
            k += 1
        ctx.cluster.outages.append(sim.Outage(self.target_pod, ctx.onset_s, np.inf, "crash",
                                              detect_s=float(ctx.rng.uniform(5, 15))))
        self.extra.update(exit_code=exit_code, crash_cause=cause)
        self.fine_grained = f"CrashLoopBackOff: exit code {exit_code}: {cause}"

    def apply(self, cond: Conditions) -> None:
        pass


class NodeFailure(Fault):
    name = "node_failure"
    scope = "node"
    shaped = False

    def __init__(self, ctx: FaultContext, service: str, pod: int | None) -> None:
        super().__init__(ctx, service, pod)
        node = self.node
        victims = [p for p, state in enumerate(ctx.cluster.pods)
                   if state.node == node and ctx.cluster.alive_at(p, ctx.onset_s)]
        # Name the hosted pod whose service matters most to users (app services before data stores).
        services = [ctx.cluster.pods[p].service for p in victims]
        score = [ctx.compiled.visits[s] + (ctx.compiled.kind[s] == 0) for s in services]
        self.pod = victims[int(np.argmax(score))]
        self.service = ctx.system.services[ctx.cluster.pods[self.pod].service].name
        self.extra["pods_on_node"] = [ctx.cluster.pods[p].name for p in victims]

    def plan(self) -> None:
        ctx = self.ctx
        node = self.target_node
        ctx.cluster.fail_node(node, ctx.onset_s, eviction_s=300.0 + float(ctx.rng.uniform(0, 10)))
        self.fine_grained = f"node {ctx.cluster.node_names[node]} NotReady (kubelet stopped posting status)"

    def apply(self, cond: Conditions) -> None:
        pass

    @property
    def pods(self) -> list[int]:
        return [p for p, s in enumerate(self.ctx.cluster.pods) if s.node == self.node]


class BadConfig(Fault):
    name = "bad_config"
    scope = "service"
    shaped = False

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        return [s.name for s in ctx.system.services
                if s.kind == "service" and any(not c.optional for o in s.operations for c in o.calls)]

    def plan(self) -> None:
        ctx = self.ctx
        svc = ctx.system.service(self.service)
        # A broken setting for a dependency the service can do without would not be an incident.
        callees = list(dict.fromkeys(c.service for o in svc.operations for c in o.calls if not c.optional))
        services = [c for c in callees if ctx.system.service(c).kind == "service"]
        # A one-connection pool only bites where the service keeps a database busy.
        databases = [c for c in callees if ctx.system.service(c).kind == "database"
                     and _store_concurrency(ctx, self.service, c) > 0.3]
        choices = {"wrong_port": callees, "low_timeout": services, "small_pool": databases}
        self.variant = str(ctx.rng.choice([v for v, options in choices.items() if options]))
        options = choices[self.variant]
        self.callee = options[int(ctx.rng.integers(len(options)))]
        prefix = config_prefix(self.callee)
        self.key = {"wrong_port": f"{prefix}_PORT", "low_timeout": f"{prefix}_TIMEOUT_MS",
                    "small_pool": "DB_POOL_MAX_SIZE"}[self.variant]
        old = ctx.code.env[self.service][self.key]
        if self.variant == "wrong_port":
            new = str(int(old) + int(ctx.rng.choice([1, 10, 1000])))
        elif self.variant == "low_timeout":
            # A timeout near the dependency's typical latency: about half the calls time out.
            self.timeout_ms = max(2.0, round(_typical_ms(ctx, self.callee) * float(ctx.rng.uniform(0.7, 1.2))))
            new = str(int(self.timeout_ms))
        else:
            new = "1"
        ctx.code.set_env(self.service, self.key, new)
        self.reload_s = ctx.onset_s + float(ctx.rng.uniform(2, 8))
        ctx.cluster.events.append(sim.ClusterEvent(
            ctx.onset_s, "config_change", "ConfigMapUpdated", ctx.service_index(self.service), None, None,
            f"ConfigMap {ctx.system.namespace}/{self.service}-config: {self.key}: {old} -> {new}"))
        self.extra.update(variant=self.variant, key=self.key, old=old, new=new, dependency=self.callee)
        self.fine_grained = self.key

    def apply(self, cond: Conditions) -> None:
        ctx = self.ctx
        on = ctx.timeline.bucket_starts() + ctx.timeline.step_s > self.reload_s      # (T,)
        caller, callee = ctx.service_index(self.service), ctx.service_index(self.callee)
        pods = self.pods
        if self.variant == "wrong_port":
            fail = np.zeros((ctx.timeline.n_buckets, cond.capacity.shape[1]))
            fail[np.ix_(on, np.array(pods))] = 1.0
            cond.edge_fail[(caller, callee)] = fail
        elif self.variant == "low_timeout":
            cond.edge_timeout_ms[(caller, callee)] = np.where(on, self.timeout_ms, np.nan)
        else:
            cond.pool_size[np.ix_(on, np.array(pods))] = 1


def _store_concurrency(ctx: FaultContext, service: str, store: str) -> float:
    """Expected in-flight calls from one pod of `service` to `store` at the onset (Little's law)."""
    comp = ctx.compiled
    visits = _op_visits(comp)
    calls = sum(visits[o] * cc.probability * cc.count for o, calls in enumerate(comp.op_calls)
                if comp.op_keys[o][0] == service for cc in calls if comp.op_keys[cc.op][0] == store)
    t_on = ctx.timeline.bucket(np.array([ctx.onset_s]))[0]
    replicas = max(1, len(ctx.pods_at(service, ctx.onset_s)))
    return float(ctx.rps[t_on] * calls * _typical_ms(ctx, store) / 1000 / replicas)


def _typical_ms(ctx: FaultContext, service: str) -> float:
    """Median latency of a service's busiest operation including its calls (a rough sum of medians)."""
    comp = ctx.compiled

    def total(op: int) -> float:
        return comp.op_median[op] + sum(cc.probability * cc.count * total(cc.op) for cc in comp.op_calls[op])

    ops = [i for i, (s, _) in enumerate(comp.op_keys) if s == service]
    return max(total(op) for op in ops)


# --- code ---------------------------------------------------------------------------------------------

class _Deploy(Fault):
    """A faulty version rolled out at the onset: the new pods run a bug in one handler."""

    scope = "service"
    shaped = False
    bug: ClassVar[str]

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        return [s.name for s in ctx.system.services if s.kind == "service"]

    def plan(self) -> None:
        ctx = self.ctx
        service = ctx.service_index(self.service)
        ops = [i for i, (s, _) in enumerate(ctx.compiled.op_keys) if s == self.service]
        visits = _op_visits(ctx.compiled)[ops]
        self.op = ops[int(ctx.rng.choice(len(ops), p=visits / visits.sum()))] if visits.sum() else ops[0]
        method = ctx.compiled.op_keys[self.op][1]
        self.variant = self.choose_variant()
        location = ctx.code.inject_bug(self.service, method, self.variant)
        version = _bump(ctx.cluster.versions[self.service])
        change = f"commit {_sha(ctx.rng)}: {_commit_message(ctx.rng, method)}"
        self.new_pods = ctx.cluster.rollout(service, ctx.onset_s, version=version, change=change)
        self.pod = self.new_pods[0] if len(self.new_pods) == 1 else None
        self.node = ctx.cluster.pods[self.pod].node if self.pod is not None else None
        self.fine_grained = str(location)
        self.extra.update(variant=self.variant, operation=ctx.compiled.span_names[self.op], method=method,
                          version=version, pods=[ctx.cluster.pods[p].name for p in self.new_pods])

    def choose_variant(self) -> str:
        return self.bug

    @property
    def pods(self) -> list[int]:
        return self.new_pods

    def _fault_array(self, cond: Conditions, probability: float) -> np.ndarray:
        arr = np.zeros_like(cond.capacity)
        arr[:, self.new_pods] = probability
        return arr


class CodeException(_Deploy):
    name = "code_exception"
    bug = "exception"

    def apply(self, cond: Conditions) -> None:
        cond.op_error[self.op] = self._fault_array(cond, 0.3 + 0.7 * self.ctx.severity)
        cond.op_error_code[self.op] = sim.BUG


class CodeWrongResult(_Deploy):
    name = "code_wrong_result"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        # A wrong result needs a caller that reads it; the entry's callers are outside the system.
        entry = set(ctx.system.entry_services)
        return [s for s in _Deploy.eligible(ctx) if s not in entry]

    def choose_variant(self) -> str:
        return str(self.ctx.rng.choice(["wrong_value", "error_code"], p=[0.6, 0.4]))

    def apply(self, cond: Conditions) -> None:
        probability = 0.3 + 0.7 * self.ctx.severity
        if self.variant == "wrong_value":
            cond.op_wrong[self.op] = self._fault_array(cond, probability)
        else:
            cond.op_error[self.op] = self._fault_array(cond, probability)
            cond.op_error_code[self.op] = sim.ERROR_CODE


# --- dependencies -------------------------------------------------------------------------------------

class DbSlowQuery(Fault):
    name = "db_slow_query"
    scope = "store"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        # Slow statements live in databases; a system without one has slow commands in its cache.
        dbs = [s.name for s in ctx.system.services if s.kind == "database"]
        return dbs or [s.name for s in ctx.system.services if s.kind == "cache"]

    def apply(self, cond: Conditions) -> None:
        ctx, sev = self.ctx, self.ctx.severity
        comp = ctx.compiled
        ops = [i for i, (s, _) in enumerate(comp.op_keys) if s == self.service]
        visits = _op_visits(comp)[ops]
        reads = [o for o, v in zip(ops, visits, strict=True) if not comp.op_writes[o] and v > 0] or ops
        weights = np.array([_op_visits(comp)[o] for o in reads]) + 1e-9
        self.op = reads[int(ctx.rng.choice(len(reads), p=weights / weights.sum()))]
        runtime = ctx.system.service(self.service).runtime
        variants = ["slow_command"] if runtime == "redis" else ["missing_index", "lock_contention"]
        self.variant = str(ctx.rng.choice(variants))
        x = ctx.profile()
        pods = self.pods
        scale = (300, 2000) if runtime == "redis" else (25, 90)
        factor = 1 + x * float(ctx.rng.uniform(*scale)) * sev                       # (T,)
        slowed = [self.op]
        if self.variant == "lock_contention":
            table = comp.op_keys[self.op][1].split(".")[0]
            slowed += [o for o in ops if comp.op_keys[o][1].split(".")[0] == table and comp.op_writes[o]]
        for op in slowed:
            arr = np.ones_like(cond.capacity)
            arr[:, pods] = factor[:, None]
            cond.op_slow[op] = arr
        if self.variant == "missing_index":
            # A full scan per query also burns the database's CPU, slowing every other query a little.
            cond.cpu_cost[:, pods] *= (1 + x * 3 * sev)[:, None]
        if self.variant == "slow_command":
            # Redis runs commands on one thread: every other command queues behind the slow one.
            cond.slow[:, pods] *= (1 + x * float(ctx.rng.uniform(20, 100)) * sev)[:, None]
        self.fine_grained = comp.span_names[self.op]
        self.extra.update(variant=self.variant, statement=comp.span_names[self.op])
        self.pod = pods[0] if len(pods) == 1 else None
        self.node = ctx.cluster.pods[pods[0]].node if len(pods) == 1 else None


class CacheOutage(Fault):
    name = "cache_outage"
    scope = "store"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        return [s.name for s in ctx.system.services if s.kind == "cache"]

    def plan(self) -> None:
        ctx = self.ctx
        comp = ctx.compiled
        cache = ctx.service_index(self.service)
        with_fallback = any(cc.fallback >= 0 and comp.op_service[cc.op] == cache
                            for calls in comp.op_calls for cc in calls)
        self.variant = str(ctx.rng.choice(["down", "evicting"])) if with_fallback else "down"
        pods = self.pods
        if self.variant == "down":
            # The cache process dies and its restart spends minutes loading the dataset.
            for pod in pods:
                down = (ctx.timeline.end_s - ctx.onset_s) * float(ctx.rng.uniform(0.5, 1.1))
                ctx.cluster.crash(pod, ctx.onset_s, down_s=down, reason="Error", exit_code=1)
            self.fine_grained = f"{self.service}:{ctx.system.service(self.service).resources()[3]} connection refused"
        else:
            self.fine_grained = ctx.metric("cache_hit")
        self.pod = pods[0] if len(pods) == 1 else None
        self.node = ctx.cluster.pods[pods[0]].node if len(pods) == 1 else None
        self.extra["variant"] = self.variant

    def apply(self, cond: Conditions) -> None:
        if self.variant != "evicting":
            return
        ctx = self.ctx
        x = ctx.profile()[:, None]
        cond.cache_miss[:, self.pods] = np.maximum(cond.cache_miss[:, self.pods], x * (0.55 + 0.4 * ctx.severity))
        cond.evictions[:, self.pods] += x * float(ctx.rng.uniform(300, 3000))
        _, limit, base, _ = ctx.system.service(self.service).resources()
        cond.mem_extra_mb[:, self.pods] += x * (0.95 * limit - base)


class CertificateExpiry(Fault):
    name = "certificate_expiry"
    scope = "service"
    shaped = False

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        entry = set(ctx.system.entry_services)
        return [s.name for s in ctx.system.services if s.kind == "service" and s.name not in entry]

    def apply(self, cond: Conditions) -> None:
        ctx = self.ctx
        # Existing connections keep working; as pools recycle them, new handshakes fail.
        x = ctx.profile(ramp_s=float(ctx.rng.uniform(30, 120)))
        cond.tls_fail[:, ctx.service_index(self.service)] = x
        self.fine_grained = (f"TLS certificate CN={self.service}.{ctx.system.namespace}.svc expired "
                             f"{ctx.iso(ctx.onset_s)}")
        pods = self.pods
        self.pod = pods[0] if len(pods) == 1 else None
        self.node = ctx.cluster.pods[pods[0]].node if len(pods) == 1 else None


class RetryStorm(Fault):
    name = "retry_storm"
    scope = "service"

    @classmethod
    def eligible(cls, ctx: FaultContext) -> list[str]:
        retried = {c.service for s in ctx.system.services for o in s.operations for c in o.calls if c.retries}
        return [s.name for s in ctx.system.services if s.name in retried and s.kind == "service"]

    def apply(self, cond: Conditions) -> None:
        ctx, comp = self.ctx, self.ctx.compiled
        pods = self.pods
        # The downstream's handlers turn CPU-heavy so that it runs near saturation before any retry;
        # its callers' timeouts and retries then push it over the edge.
        ops = [i for i, (s, _) in enumerate(comp.op_keys) if s == self.service]
        cpu_s = float(sum(_op_visits(comp)[o] * comp.op_cpu_ms[o] for o in ops)) / 1000
        t_on = ctx.timeline.bucket(np.array([ctx.onset_s]))[0]
        limit = ctx.system.service(self.service).resources()[0] * len(pods)
        rho = max(ctx.rps[t_on] * cpu_s / limit, 1e-4)
        k = float(np.clip((0.6 + 0.3 * ctx.severity) / rho, 3.0, 400.0))
        x = ctx.profile()[:, None]
        cond.cpu_cost[:, pods] *= 1 + (k - 1) * x
        timeouts = [c.timeout_ms for s in ctx.system.services for o in s.operations for c in o.calls
                    if c.service == self.service and c.retries]
        # ... and slow enough per request that the retried calls time out.
        typical = _typical_ms(ctx, self.service) * k
        stall = max(1.0, min(timeouts) * float(ctx.rng.uniform(0.5, 0.9)) / typical)
        cond.slow[:, pods] *= 1 + (stall - 1) * x
        callers = sorted({s.name for s in ctx.system.services for o in s.operations for c in o.calls
                          if c.service == self.service and c.retries})
        self.extra.update(retried_by=callers, cpu_cost_factor=round(k, 1), timeout_ms=min(timeouts))
        self.fine_grained = ctx.metric("lat_p95")
        self.pod = pods[0] if len(pods) == 1 else None
        self.node = ctx.cluster.pods[pods[0]].node if len(pods) == 1 else None


def _op_visits(comp: Compiled) -> np.ndarray:
    """(O,) expected calls of each operation per user request."""
    visits = np.zeros(len(comp.op_keys))

    def walk(op: int, weight: float) -> None:
        visits[op] += weight
        for cc in comp.op_calls[op]:
            walk(cc.op, weight * cc.probability * cc.count)
            if cc.fallback >= 0:
                walk(cc.fallback, weight * cc.probability * cc.count * 0.08)

    for op, w in zip(comp.entry_ops, comp.entry_weights, strict=True):
        walk(int(op), float(w))
    return visits


FAULTS: dict[str, type[Fault]] = {cls.name: cls for cls in (
    CpuContention, CpuHog, MemoryLeak, DiskIO, NetworkDelay, PacketLoss, DnsFailure, PodCrashLoop, NodeFailure,
    BadConfig, CodeException, CodeWrongResult, DbSlowQuery, CacheOutage, CertificateExpiry, RetryStorm)}


def choose_target(cls: type[Fault], ctx: FaultContext, target: str | None) -> tuple[str, int | None]:
    """(service, pod) to strike: the user's target (a service, pod or node name) or a random one."""
    cluster = ctx.cluster
    alive = {cluster.pods[p].name: p for p in range(len(cluster.pods)) if cluster.alive_at(p, ctx.onset_s)}
    if cls.scope == "node":
        return _node_target(cls, ctx, target, alive)
    eligible = cls.eligible(ctx)
    if not eligible:
        raise FlipmoeInputError(f"system {ctx.system.name} has nothing {cls.name} can strike",
                                hint=_scope_hint(cls))
    pod: int | None = None
    if target is None:
        # Services on most requests weigh alike (a cache hit ten times per request is not ten
        # times likelier to fail); the entry weighs less, so most roots sit below the alert.
        pool = cls.preferred(ctx)
        entry = set(ctx.system.entry_services)
        weights = np.array([np.sqrt(min(ctx.compiled.visits[ctx.service_index(s)], 1.0)) * (0.4 if s in entry else 1)
                            for s in pool]) + 1e-6
        service = pool[int(ctx.rng.choice(len(pool), p=weights / weights.sum()))]
    elif target in alive:
        pod = alive[target]
        service = ctx.system.services[cluster.pods[pod].service].name
    else:
        service = target
    if service not in eligible:
        valid = ", ".join(eligible)
        what = "service" if target in ctx.system.service_names or target is None else "service or pod"
        raise FlipmoeInputError(f"{cls.name} cannot target {what} {target!r} in {ctx.system.name}",
                                hint=f"valid: {valid}")
    if cls.scope == "pod" and pod is None:
        candidates = ctx.pods_at(service, ctx.onset_s)
        pod = candidates[int(ctx.rng.integers(len(candidates)))]
    return service, pod


def _node_target(cls: type[Fault], ctx: FaultContext, target: str | None, alive: dict[str, int]) -> tuple[str, int]:
    cluster = ctx.cluster
    if target is None:
        busy = set(ctx.busy_services(("service",)))
        nodes = sorted({cluster.pods[p].node for p in alive.values()
                        if ctx.system.services[cluster.pods[p].service].name in busy})
        node = nodes[int(ctx.rng.integers(len(nodes)))]
    elif target in cluster.node_names:
        node = cluster.node_names.index(target)
    elif target in alive:
        node = cluster.pods[alive[target]].node
    elif target in ctx.system.service_names:
        node = cluster.pods[ctx.pods_at(target, ctx.onset_s)[0]].node
    else:
        raise FlipmoeInputError(f"node_failure target {target!r} is not a node, pod or service of {ctx.system.name}",
                                hint=f"nodes: {', '.join(cluster.node_names)}")
    hosted = [p for p in alive.values() if cluster.pods[p].node == node]
    if not hosted:
        raise FlipmoeInputError(f"node {cluster.node_names[node]} hosts no pods", hint="choose another node")
    return ctx.system.services[cluster.pods[hosted[0]].service].name, hosted[0]


def _scope_hint(cls: type[Fault]) -> str:
    return {"disk_io": "it needs a service with writing operations", "db_slow_query": "it needs a database or cache",
            "cache_outage": "it needs a cache", "retry_storm": "it needs a call with retries",
            "certificate_expiry": "it needs a service below the entry",
            "code_wrong_result": "it needs a service below the entry"}.get(cls.name, "choose another system")


def _bump(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def _sha(rng: np.random.Generator) -> str:
    return "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, 7))


def _commit_message(rng: np.random.Generator, method: str) -> str:
    from data_pipeline.chaos.catalogues import describe, subject

    template = _COMMITS[int(rng.integers(len(_COMMITS)))]
    return template.format(desc=describe(method).lower(), method=method, key=subject(method)[0])


# --- distractors --------------------------------------------------------------------------------------

@dataclass
class Distractor:
    """A benign change or anomaly near the fault: an innocent deploy, a config change, a CPU spike ..."""

    kind: str
    service: str
    at_s: float
    description: str
    apply: Callable[[Conditions], None]


def plan_distractors(ctx: FaultContext, root: str, count: int) -> list[Distractor]:
    """Up to `count` distractors on services other than the root cause, within the incident window."""
    if count == 0:
        return []
    innocent = [s for s in ctx.busy_services(("service",)) if s != root] or \
        [s.name for s in ctx.system.services if s.kind == "service" and s.name != root]
    if not innocent:
        return []
    n = int(ctx.rng.choice(np.arange(count + 1), p=_distractor_counts(count)))
    kinds = list(ctx.rng.choice(["deploy", "config_change", "cpu_spike", "scale_up", "log_burst"], size=n,
                                replace=False, p=[0.35, 0.2, 0.2, 0.1, 0.15]))
    window_lo, window_hi = ctx.timeline.window_start_s + 30, ctx.timeline.end_s - 60
    out = []
    for kind in kinds:
        service = str(innocent[int(ctx.rng.integers(len(innocent)))])
        at = float(np.clip(ctx.onset_s + ctx.rng.uniform(-360, 240), window_lo, window_hi))
        out.append(_DISTRACTORS[str(kind)](ctx, service, at))
    return out


def plan_release_train(ctx: FaultContext, root: str, count: int, spread_s: float = 60.0) -> list[Distractor]:
    """Innocent deploys of `count` other services from `spread_s` before the onset to 30 s after it (a release
    train; about a minute by default)."""
    if count == 0:
        return []
    innocent = [s.name for s in ctx.system.services if s.kind == "service" and s.name != root]
    chosen = ctx.rng.choice(innocent, size=min(count, len(innocent)), replace=False)
    window_lo, window_hi = ctx.timeline.window_start_s + 30, ctx.timeline.end_s - 60
    return [_innocent_deploy(ctx, str(service), float(np.clip(ctx.onset_s + ctx.rng.uniform(-spread_s, 30),
                                                                 window_lo, window_hi)))
            for service in chosen]


def _distractor_counts(count: int) -> np.ndarray:
    p = np.array([0.15] + [0.85 / count] * count)
    return p / p.sum()


def _innocent_deploy(ctx: FaultContext, service: str, at: float) -> Distractor:
    method = ctx.system.service(service).operations[0].method
    version = _bump(ctx.cluster.versions[service])
    ctx.cluster.rollout(ctx.service_index(service), at, version=version,
                        change=f"commit {_sha(ctx.rng)}: {_commit_message(ctx.rng, method)}")
    return Distractor("deploy", service, at, f"deploy of {service} {version}", lambda cond: None)


def _innocent_config(ctx: FaultContext, service: str, at: float) -> Distractor:
    debug = bool(ctx.rng.random() < 0.5)
    key, new = ("LOG_LEVEL", "DEBUG") if debug else ("FEATURE_NEW_CHECKOUT_UI", "true")
    old = ctx.code.set_env(service, key, new) or "false"
    ctx.cluster.events.append(sim.ClusterEvent(at, "config_change", "ConfigMapUpdated", ctx.service_index(service),
                                               None, None, f"ConfigMap {ctx.system.namespace}/{service}-config: "
                                                           f"{key}: {old} -> {new}"))

    def apply(cond: Conditions) -> None:
        if debug:
            cond.debug_logs[ctx.timeline.bucket_starts() + ctx.timeline.step_s > at, ctx.service_index(service)] = True

    return Distractor("config_change", service, at, f"{service} {key}={new}", apply)


def _cpu_spike(ctx: FaultContext, service: str, at: float) -> Distractor:
    pod = ctx.pods_at(service, at)[0]
    length = float(ctx.rng.uniform(90, 300))
    limit = ctx.system.service(service).resources()[0]

    def apply(cond: Conditions) -> None:
        starts = ctx.timeline.bucket_starts()
        on = (starts + ctx.timeline.step_s > at) & (starts < at + length)
        cond.hog_cores[on, pod] += 0.25 * limit   # a scheduled report job: visible, not saturating

    return Distractor("cpu_spike", service, at, f"scheduled job on {ctx.cluster.pods[pod].name}", apply)


def _scale_up(ctx: FaultContext, service: str, at: float) -> Distractor:
    svc = ctx.service_index(service)
    before = len(ctx.pods_at(service, at))
    ctx.cluster.events.append(sim.ClusterEvent(
        at, "scaling", "SuccessfulRescale", svc, None, None,
        f"New size: {before + 1}; reason: cpu resource utilization (percentage of request) above target"))
    ctx.cluster.add_pod(svc, at + 1.0, version=ctx.cluster.versions[service])
    return Distractor("scale_up", service, at, f"{service} scaled to {before + 1}", lambda cond: None)


def _log_burst(ctx: FaultContext, service: str, at: float) -> Distractor:
    length = float(ctx.rng.uniform(60, 180))

    def apply(cond: Conditions) -> None:
        starts = ctx.timeline.bucket_starts()
        cond.warn_burst[(starts + ctx.timeline.step_s > at) & (starts < at + length), ctx.service_index(service)] = True

    return Distractor("log_burst", service, at, f"benign warning burst in {service}", apply)


_DISTRACTORS = {"deploy": _innocent_deploy, "config_change": _innocent_config, "cpu_spike": _cpu_spike,
                "scale_up": _scale_up, "log_burst": _log_burst}
