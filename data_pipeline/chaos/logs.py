"""Log lines: request-scoped lines from the simulated calls, per-pod lines from the pods' state.

Request-scoped lines (with the trace and span id of the handler that wrote them) come from the
records of the requests kept by log sampling: every handler logs its entry and, when it finishes
normally, its exit (with its duration); Spring handlers write 0-3 business lines between them; some
handlers often end with a benign warning (an empty lookup) or log a swallowed sub-step failure at ERROR,
the same handlers in every incident of a system (`catalogues.benign_rates`); a handler that fails
logs why — the bug's exception and stack trace, an error status, a full disk — and a caller logs
each failed call in its runtime's words (timeout, refused, DNS, TLS, pool, 5xx), as a warning when it
retried, fell back to the database or could do without the answer. A server whose certificate was refused logs the
handshake; data stores log slow statements. Per-pod lines come from state: housekeeping and health
checks, memory and CPU pressure, disk trouble, start-up banners after (re)starts, crash messages,
shutdowns, configuration reloads, DEBUG lines while a service logs at DEBUG, and benign warning
bursts. Nothing here knows which fault was injected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.chaos import catalogues as cat
from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.code import CodeBase
from data_pipeline.chaos.simulate import Simulation, strings
from data_pipeline.chaos.spans import Ids
from flipmoe.telemetry.schema import STRING

Value: TypeAlias = str | np.ndarray | pa.Array


class Renderer:
    """Fill templates for many rows at once with Arrow string kernels."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._parsed: dict[str, list[tuple[str, str | None]]] = {}

    def __call__(self, template: str, n: int, given: Mapping[str, Value] | None = None) -> pa.Array:
        given = given or {}
        parts = self._parsed.get(template)
        if parts is None:
            parts = [(literal, name) for literal, name, _, _ in Formatter().parse(template)]
            self._parsed[template] = parts
        pieces: list[pa.Array | pa.Scalar] = []
        for literal, name in parts:
            if literal:
                pieces.append(pa.scalar(literal))
            if name is None:
                continue
            value = given[name] if name in given else cat.VARIABLES[name](self.rng, n)
            pieces.append(_as_arrow(value))
        if not any(isinstance(p, pa.Array) for p in pieces):
            return pa.array([template.format(**{k: v for k, v in given.items() if isinstance(v, str)})] * n)
        return pc.binary_join_element_wise(*pieces, "")


def _as_arrow(value: Value) -> pa.Array | pa.Scalar:
    if isinstance(value, str):
        return pa.scalar(value)
    if isinstance(value, pa.Array):
        return value
    if value.dtype.kind == "f":
        return pc.cast(pc.round(pa.array(value), 1), pa.string())
    if value.dtype.kind in "iu":
        return pc.cast(pa.array(value), pa.string())
    return pa.array(value, pa.string())


@dataclass
class _Lines:
    """Log lines collected from all sources, columnar."""

    time: list[np.ndarray] = field(default_factory=list)
    pod: list[np.ndarray] = field(default_factory=list)
    level: list[np.ndarray] = field(default_factory=list)
    message: list[pa.Array] = field(default_factory=list)
    sample: list[np.ndarray] = field(default_factory=list)
    span: list[np.ndarray] = field(default_factory=list)

    def add(self, time: np.ndarray, pod: np.ndarray, level: str, message: pa.Array,
            sample: np.ndarray | None = None, span: np.ndarray | None = None) -> None:
        n = len(time)
        if n == 0:
            return
        self.time.append(np.asarray(time, float))
        self.pod.append(np.broadcast_to(pod, n).astype(np.int64))
        self.level.append(np.full(n, level, dtype=object))
        self.message.append(message)
        self.sample.append(np.full(n, -1) if sample is None else sample.astype(np.int64))
        self.span.append(np.full(n, -1) if span is None else span.astype(np.int64))


class _Context:
    """Lookups shared by the log sources."""

    def __init__(self, s: Simulation, code: CodeBase, ids: Ids) -> None:
        self.s, self.code, self.ids = s, code, ids
        self.r = s.result.records
        self.render = Renderer(s.rng)
        self.services = s.system.services
        self.pod_service = np.array([p.service for p in s.cluster.pods])
        self.pod_ip = np.array([p.ip for p in s.cluster.pods], dtype=object)
        self.runtime = [svc.runtime for svc in self.services]
        self.logged = s.result.samples.logged[self.r.sample]
        self.benign_warn, self.benign_error = cat.benign_rates(s.system.name, len(s.compiled.op_keys))
        self.steps = cat.step_counts(s.system.name, len(s.compiled.op_keys))
        # Position of each record id, to find a record's parent (the handler that made a call).
        self.pos = np.full(int(self.r.rid.max()) + 1, -1, dtype=np.int64)
        self.pos[self.r.rid] = np.arange(self.r.rid.size)
        # The callee's own code behind each client record (a store's disk-full versus transient error).
        self.child_code = np.zeros(self.r.rid.size, dtype=np.int8)
        served = np.flatnonzero(self.r.role != sim.CLIENT)
        has_parent = served[self.r.parent[served] >= 0]
        self.child_code[self.pos[self.r.parent[has_parent]]] = self.r.code[has_parent]

    def java(self, op: int) -> dict[str, str]:
        """The Java logger name and statement lines of a handler."""
        service, method = self.s.compiled.op_keys[op]
        if (service, method) not in self.code.handlers:
            return {}
        lines = self.code.handlers[(service, method)].lines
        return {"logger": self.code.loggers.get(service, service), "entry_line": str(lines["entry"]),
                "exit_line": str(lines["exit"])}

    def op_fields(self, op: int) -> dict[str, str]:
        service, method = self.s.compiled.op_keys[op]
        name = self.s.compiled.span_names[op]
        verb, _, path = name.partition(" ")
        if verb not in ("GET", "POST", "PUT", "DELETE"):
            verb, path = "POST", "/" + name.replace(".", "/")
        svc = self.s.system.service(service)
        return {"peer": service, "port": str(svc.resources()[3]), "verb": verb, "path": path, "method": method,
                "op": name, "desc": cat.describe(method), "table": method.split(".")[0]}


def logs_table(s: Simulation, code: CodeBase, ids: Ids) -> pd.DataFrame:
    ctx = _Context(s, code, ids)
    lines = _Lines()
    _request_lines(ctx, lines)
    _client_lines(ctx, lines)
    _store_lines(ctx, lines)
    _background_lines(ctx, lines)
    _lifecycle_lines(ctx, lines)
    return _frame(ctx, lines)


# --- request-scoped ----------------------------------------------------------------------------------

def _request_lines(ctx: _Context, lines: _Lines) -> None:
    r, s = ctx.r, ctx.s
    rows = np.flatnonzero(ctx.logged & (r.role == sim.SERVER) & (r.pod >= 0))
    debug = s.cond.debug_logs[s.timeline.bucket(r.start[rows]), r.service[rows]]
    for op in np.unique(r.op[rows]):
        sel = rows[r.op[rows] == op]
        service, method = s.compiled.op_keys[op]
        runtime = s.system.service(service).runtime
        entry, exit_, debug_t = cat.request_templates(runtime, method, s.compiled.span_names[op])
        entry, exit_ = cat.OVERRIDES.get((service, method), (entry, exit_))
        fields = ctx.java(int(op))
        start, dur, pods, code = r.start[sel], r.dur[sel], r.pod[sel], r.code[sel]
        lines.add(start + 0.0004, pods, "INFO", ctx.render(entry, sel.size, fields), r.sample[sel], r.rid[sel])
        done = code <= sim.MISS
        if runtime == "java":
            # Business lines spread over the handler; one that failed wrote only those before its midpoint.
            steps = int(ctx.steps[op])
            for k in range(steps):
                reached = done | (k < steps // 2)
                lines.add(start[reached] + dur[reached] * (k + 1) / (steps + 1) / 1000, pods[reached], "INFO",
                          ctx.render(cat.java_step(method, k), int(reached.sum()), fields),
                          r.sample[sel][reached], r.rid[sel][reached])
        if done.any():
            given = {**fields, "ms": dur[done], "ms_int": np.round(dur[done]).astype(np.int64)}
            lines.add(start[done] + dur[done] / 1000, pods[done], "INFO", ctx.render(exit_, int(done.sum()), given),
                      r.sample[sel][done], r.rid[sel][done])
        benign = done & (s.rng.random(sel.size) < ctx.benign_warn[op])
        if benign.any():
            lines.add(start[benign] + dur[benign] / 1000, pods[benign], "WARN",
                      ctx.render(cat.business_warning(runtime, method), int(benign.sum()), fields),
                      r.sample[sel][benign], r.rid[sel][benign])
        swallowed = done & (s.rng.random(sel.size) < ctx.benign_error[op])
        if swallowed.any():
            lines.add(start[swallowed] + dur[swallowed] / 2000, pods[swallowed], "ERROR",
                      ctx.render(cat.business_error(runtime, method), int(swallowed.sum()), fields),
                      r.sample[sel][swallowed], r.rid[sel][swallowed])
        dbg = debug[r.op[rows] == op]
        if dbg.any():
            lines.add(start[dbg] + 0.0008, pods[dbg], "DEBUG",
                      ctx.render(debug_t, int(dbg.sum()), {**fields, "ms": dur[dbg]}), r.sample[sel][dbg],
                      r.rid[sel][dbg])
        for failure in (sim.EXCEPTION, sim.BUG, sim.ERROR_CODE, sim.DISK_FULL):
            hit = code == failure
            if hit.any():
                _handler_error(ctx, lines, int(op), failure, sel[hit])


def _handler_error(ctx: _Context, lines: _Lines, op: int, failure: int, sel: np.ndarray) -> None:
    r, s = ctx.r, ctx.s
    service, method = s.compiled.op_keys[op]
    runtime = s.system.service(service).runtime
    point = "compute" if failure == sim.BUG else "validate"
    code_fields = {**ctx.java(op), "method": method, "desc": cat.describe(method),
                   "line": str(ctx.code.line(service, method, point))}
    if failure in (sim.EXCEPTION, sim.BUG):
        if runtime == "go" and failure == sim.EXCEPTION:
            message = f"[{method}] invalid request: {ctx.code.exception(service, method, 'validate')}"
        else:
            header = cat.SERVER_ERRORS[runtime][sim.EXCEPTION].format(
                cause=ctx.code.exception(service, method, point), **code_fields)
            trace = ctx.code.stack_trace(service, method, point)
            # A Python traceback ends with the exception; the others start with it, already in the header.
            message = header + "\n" + (trace if runtime == "python" else trace.split("\n", 1)[1])
        text = pa.array([message] * sel.size)
    elif failure == sim.ERROR_CODE:
        subject = cat.subject(method)[0].replace("Id", "").replace("Name", "").lower() or "item"
        msg = cat.ERROR_MESSAGES[int(ctx.s.rng.integers(len(cat.ERROR_MESSAGES)))].format(subject=subject)
        text = ctx.render(cat.SERVER_ERRORS[runtime][sim.ERROR_CODE], sel.size, {**code_fields, "msg": msg})
    else:
        text = ctx.render(cat.SERVER_ERRORS[runtime][sim.DISK_FULL], sel.size, code_fields)
    level = "WARN" if failure == sim.ERROR_CODE else "ERROR"
    lines.add(r.start[sel] + r.dur[sel] / 1000, r.pod[sel], level, text, r.sample[sel], r.rid[sel])


def _client_lines(ctx: _Context, lines: _Lines) -> None:
    """A caller's view of its failed calls, and a refused server's view of failed handshakes."""
    r, s = ctx.r, ctx.s
    rows = np.flatnonzero(ctx.logged & (r.role == sim.CLIENT) & ((r.code >= 10) | (r.code == sim.WRONG)))
    if rows.size == 0:
        return
    parent = ctx.pos[r.parent[rows]]
    parent_op = r.op[parent]
    keys = np.stack([r.service[rows], r.op[rows], r.code[rows], r.absorbed[rows], parent_op], axis=1)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    for g, (caller, callee_op, code, absorbed, handler_op) in enumerate(groups):
        sel = rows[inverse.ravel() == g]
        if code == sim.WRONG:
            # A wrong answer is only logged where the caller noticed it and failed validation.
            noticed = sel[r.code[ctx.pos[r.parent[sel]]] == sim.VALIDATION]
            if noticed.size:
                _validation_lines(ctx, lines, noticed, int(handler_op))
            continue
        cause = _cause(ctx, int(caller), int(callee_op), int(code), sel)
        runtime = ctx.runtime[caller]
        handler = {**ctx.java(int(handler_op)), "method": s.compiled.op_keys[handler_op][1],
                   "peer": s.compiled.services[s.compiled.op_service[callee_op]], "cause": cause}
        if absorbed == sim.RETRIED:
            text = ctx.render(cat.RETRY_TEMPLATES[runtime], sel.size, {**handler, "attempt": (r.attempt[sel] + 1)})
            level = "WARN"
        elif absorbed in (sim.FELL_BACK, sim.TOLERATED):
            table = cat.FALLBACK_TEMPLATES if absorbed == sim.FELL_BACK else cat.DEGRADED_TEMPLATES
            text, level = ctx.render(table[runtime], sel.size, handler), "WARN"
        elif runtime == "java":
            call_line = _call_line(ctx, int(handler_op), int(callee_op))
            method = handler["method"]
            prefix = f"{handler.get('logger', '')}#{call_line} [{method}][{cat.describe(method)} error]["
            text = pc.binary_join_element_wise(pa.scalar(prefix), cause, pa.scalar("]"), "")
            level = "ERROR"
        else:
            text, level = cause, "ERROR"
        lines.add(r.start[sel] + r.dur[sel] / 1000, r.pod[sel], level, text, r.sample[sel], r.parent[sel])
        if code == sim.TLS:
            served = sel[r.peer_pod[sel] >= 0]
            lines.add(r.start[served] + 0.003, r.peer_pod[served], "WARN",
                      ctx.render(cat.TLS_SERVER, served.size, {"ip": ctx.pod_ip[r.pod[served]]}))


def _cause(ctx: _Context, caller: int, callee_op: int, code: int, sel: np.ndarray) -> pa.Array:
    """The error text a caller's client library produces for this outcome."""
    r, s = ctx.r, ctx.s
    fields = ctx.op_fields(callee_op)
    callee = s.system.service(fields["peer"])
    peer_ip = np.where(r.peer_pod[sel] >= 0, ctx.pod_ip[np.maximum(r.peer_pod[sel], 0)], "10.96.0.1").astype(object)
    given: dict[str, Value] = {**fields, "peer_ip": peer_ip, "ms_int": np.round(r.dur[sel]).astype(np.int64),
                               "now": s.timeline.timestamp(float(r.start[sel][0])).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "expiry": (s.timeline.timestamp(float(r.start[sel][0]))
                                          - pd.Timedelta(minutes=int(s.rng.integers(1, 30)))).strftime(
                                   "%Y-%m-%dT%H:%M:%SZ")}
    if code == sim.BAD_RESPONSE and callee.kind != "service":
        full = ctx.child_code[sel] == sim.DISK_FULL
        table = np.where(full, cat.STORE_ERRORS[callee.runtime], cat.STORE_TRANSIENT[callee.runtime])
        text = np.empty(sel.size, dtype=object)
        for template in np.unique(table):
            hit = table == template
            text[hit] = ctx.render(str(template), int(hit.sum()), {k: (v[hit] if isinstance(v, np.ndarray) else v)
                                                                   for k, v in given.items()}).to_numpy(
                zero_copy_only=False)
        return pa.array(text, pa.string())
    if callee.kind != "service" and ctx.runtime[caller] != "csharp":
        return ctx.render(cat.STORE_CLIENT_ERRORS[callee.runtime][code], sel.size, given)
    return ctx.render(cat.CLIENT_ERRORS[ctx.runtime[caller]][code], sel.size, given)


def _call_line(ctx: _Context, handler_op: int, callee_op: int) -> str:
    service, method = ctx.s.compiled.op_keys[handler_op]
    for j, cc in enumerate(ctx.s.compiled.op_calls[handler_op]):
        if callee_op in (cc.op, cc.fallback):
            return str(ctx.code.line(service, method, f"call:{j}"))
    return str(ctx.code.line(service, method, "exit"))


def _validation_lines(ctx: _Context, lines: _Lines, sel: np.ndarray, handler_op: int) -> None:
    r, s = ctx.r, ctx.s
    service, method = s.compiled.op_keys[handler_op]
    runtime = s.system.service(service).runtime
    detail = np.array(cat.WRONG_DETAILS, dtype=object)[s.rng.integers(0, len(cat.WRONG_DETAILS), sel.size)]
    given = {**ctx.java(handler_op), "method": method, "detail": detail,
             "peer": s.compiled.services[s.compiled.op_service[r.op[sel][0]]]}
    lines.add(r.start[sel] + r.dur[sel] / 1000, r.pod[sel], "ERROR",
              ctx.render(cat.SERVER_ERRORS[runtime][sim.VALIDATION], sel.size, given), r.sample[sel], r.parent[sel])


def _store_lines(ctx: _Context, lines: _Lines) -> None:
    """Slow statements and write failures, as the data store logs them (without trace ids)."""
    r, s = ctx.r, ctx.s
    rows = np.flatnonzero(ctx.logged & (r.role == sim.STORE) & (r.pod >= 0))
    for op in np.unique(r.op[rows]):
        sel = rows[r.op[rows] == op]
        service, method = s.compiled.op_keys[op]
        runtime = s.system.service(service).runtime
        slow = sel[r.dur[sel] > cat.SLOW_QUERY_MS[runtime]]
        if slow.size:
            given = _statement_fields(ctx, int(op), slow)
            lines.add(r.start[slow] + r.dur[slow] / 1000, r.pod[slow], "WARN" if runtime == "redis" else "INFO",
                      ctx.render(cat.SLOW_QUERY[runtime], slow.size, given))
        full = sel[r.code[sel] == sim.DISK_FULL]
        if full.size:
            lines.add(r.start[full] + r.dur[full] / 1000, r.pod[full], "ERROR",
                      ctx.render(cat.STORE_DISK_FULL[runtime], full.size, ctx.op_fields(int(op))))


def _statement_fields(ctx: _Context, op: int, sel: np.ndarray) -> dict[str, Value]:
    r, s = ctx.r, ctx.s
    name = s.compiled.span_names[op]
    verb, _, target = name.partition(" ")
    runtime = s.system.service(s.compiled.op_keys[op][0]).runtime
    statement = {"SELECT": f"SELECT * FROM {target} WHERE id = '{{uuid}}'",
                 "INSERT": f"INSERT INTO {target} VALUES ('{{uuid}}', ...)",
                 "UPDATE": f"UPDATE {target} SET status = {{qty}} WHERE id = '{{uuid}}'"}.get(verb, f"{name} {{hex16}}")
    if runtime == "redis":
        statement = f"{name} cart:{{uuid}}"
    times = s.timeline.timestamps(r.start[sel])
    return {"statement": ctx.render(statement, sel.size).to_numpy(zero_copy_only=False),
            "secs": r.dur[sel] / 1000, "ms": r.dur[sel], "ms_int": np.round(r.dur[sel]).astype(np.int64),
            "us": np.round(r.dur[sel] * 1000).astype(np.int64), "epoch": (times.astype("int64") // 10**9).to_numpy(),
            "namespace": target, "verb": verb, "collection": target.split(".")[-1],
            "redis_time": _redis_time(times)}


def _redis_time(times: pd.Series) -> np.ndarray:
    return times.dt.strftime("%d %b %Y %H:%M:%S.%f").str.slice(0, -3).to_numpy(dtype=object)


# --- per-pod state -----------------------------------------------------------------------------------

def _background_lines(ctx: _Context, lines: _Lines) -> None:
    """Housekeeping, pressure warnings, disk trouble and warning bursts, per pod and bucket."""
    s = ctx.s
    T, P, step = s.timeline.n_buckets, len(s.cluster.pods), s.timeline.step_s
    starts = s.timeline.bucket_starts()[:, None]
    born = np.array([p.born_s for p in s.cluster.pods])
    dead = np.array([p.dead_s for p in s.cluster.pods])
    alive = (born <= starts) & (dead > starts + step)
    for o in s.cluster.outages:
        alive[(starts[:, 0] >= o.start_s) & (starts[:, 0] < o.end_s), o.pod] = False
    mem_limit = np.array([ctx.services[p.service].resources()[1] for p in s.cluster.pods])
    mem_base = np.array([ctx.services[p.service].resources()[2] for p in s.cluster.pods])
    mem_ratio = (mem_base + s.cond.mem_extra_mb) / mem_limit
    debug = s.cond.debug_logs[:, ctx.pod_service]
    sources = [
        (alive, 0.04 * step, "background"),
        (alive & (mem_ratio > 0.88), 0.1 * step, "memory"),
        (alive & (s.result.rho > 0.9), 0.1 * step, "cpu"),
        (alive & (s.cond.io_busy > 0.8), 0.08 * step, "io"),
        (alive & (s.cond.disk_fill > 0.985), 0.05 * step, "disk_full"),
        (alive & s.cond.warn_burst[:, ctx.pod_service], 0.15 * step, "burst"),
    ]
    for mask, rate, kind in sources:
        counts = s.rng.poisson(rate, (T, P)) * mask
        if not counts.any():
            continue
        t_idx, p_idx = np.nonzero(counts)
        reps = counts[t_idx, p_idx]
        t_idx, p_idx = np.repeat(t_idx, reps), np.repeat(p_idx, reps)
        times = (t_idx + s.rng.random(t_idx.size)) * step
        _state_lines(ctx, lines, kind, times, p_idx, debug[t_idx, p_idx])


def _state_lines(ctx: _Context, lines: _Lines, kind: str, times: np.ndarray, pods: np.ndarray,
                 debug: np.ndarray) -> None:
    s = ctx.s
    runtimes = np.array([ctx.runtime[ctx.pod_service[p]] for p in pods], dtype=object)
    for runtime in np.unique(runtimes):
        sel = np.flatnonzero(runtimes == runtime)
        templates = _state_templates(kind, str(runtime))
        if not templates:
            continue
        pick = s.rng.integers(0, len(templates), sel.size)
        for k, (level, template) in enumerate(templates):
            chosen = sel[(pick == k) & ((level != "DEBUG") | debug[sel])]
            if chosen.size == 0:
                continue
            service = s.system.service_names[ctx.pod_service[pods[chosen[0]]]]
            given = {"service": service, "ms_small": s.rng.integers(1, 40, chosen.size),
                     "redis_time": _redis_time(s.timeline.timestamps(times[chosen])),
                     "gc_delta": np.char.add(s.rng.integers(1, 59, chosen.size).astype(str), "s").astype(object),
                     "ms_int": s.rng.integers(600, 9000, chosen.size), "logger": "o.s.w.s.DispatcherServlet",
                     "entry_line": "1131"}
            lines.add(times[chosen], pods[chosen], level, ctx.render(template, chosen.size, given))


def _state_templates(kind: str, runtime: str) -> tuple[tuple[str, str], ...]:
    if kind == "background":
        return cat.BACKGROUND[runtime]
    if kind in ("memory", "cpu"):
        entry = cat.PRESSURE[kind].get(runtime)
        return (entry,) if entry else ()
    if kind == "io":
        return (("WARN", cat.SLOW_IO[runtime]),)
    if kind == "disk_full":
        return (("ERROR", cat.DISK_FULL_STATE[runtime]),)
    return tuple(("WARN", t) for t in cat.WARN_BURST)


def _lifecycle_lines(ctx: _Context, lines: _Lines) -> None:
    """Start-up banners, crash messages, shutdowns and configuration reloads."""
    s = ctx.s
    for pod, p in enumerate(s.cluster.pods):
        if p.born_s > -1e8:
            _startup(ctx, lines, pod, p.born_s + 2.6, p.ready_s)
    for restart in s.cluster.restarts:
        p = s.cluster.pods[restart.pod]
        if restart.message:
            # A crash on start: the first banner lines, then the process dies with its message.
            _startup(ctx, lines, restart.pod, restart.time_s - 3.0, restart.time_s - 1.0, partial=True)
            lines.add(np.array([restart.time_s]), np.array([restart.pod]), "FATAL", pa.array([restart.message]))
            continue
        ends = [o.end_s for o in s.cluster.outages if o.pod == restart.pod and o.start_s == restart.time_s]
        ready = ends[0] if ends else restart.time_s + s.cluster.startup_s(p.service)
        _startup(ctx, lines, restart.pod, restart.time_s + 1.0, ready)
    for event in s.cluster.events:
        if event.reason == "Killing" and event.pod is not None:
            lines.add(np.array([event.time_s + 0.2]), np.array([event.pod]), "INFO",
                      pa.array(["received SIGTERM, shutting down gracefully"]))
        if event.kind == "config_change" and event.service is not None:
            key = re.search(r": (\w+): ", event.message)
            pods = [i for i in s.cluster.pods_of(event.service) if s.cluster.alive_at(i, event.time_s)]
            template = cat.CONFIG_RELOAD[ctx.runtime[event.service]]
            lines.add(np.full(len(pods), event.time_s + 2.0), np.array(pods), "INFO",
                      ctx.render(template, len(pods), {"key": key.group(1) if key else "config",
                                                       "logger": "o.s.c.e.event.RefreshEventListener"}))


def _startup(ctx: _Context, lines: _Lines, pod: int, start: float, ready: float, partial: bool = False) -> None:
    s = ctx.s
    if start >= s.timeline.end_s or ready < 0:
        return
    p = s.cluster.pods[pod]
    svc = ctx.services[p.service]
    templates = cat.STARTUP[svc.runtime][: 2 if partial else None]
    times = np.linspace(start, max(ready, start + 0.5), len(templates))
    given = {"app": svc.name, "version": p.version, "pod": p.name, "port": str(svc.resources()[3]),
             "startup": f"{max(ready - start, 0.5):.3f}", "peer": "redis-cart", "now": "2 minutes ago",
             "redis_time": _redis_time(s.timeline.timestamps(times)), "secs": f"{max(ready - start, 0.1):.3f}"}
    for k, template in enumerate(templates):
        lines.add(times[k:k + 1], np.array([pod]), "INFO",
                  ctx.render(template, 1, {key: (v[k:k + 1] if isinstance(v, np.ndarray) else v)
                                           for key, v in given.items()}))


# --- the table ---------------------------------------------------------------------------------------

def _frame(ctx: _Context, lines: _Lines) -> pd.DataFrame:
    s = ctx.s
    time = np.concatenate(lines.time)
    order = np.argsort(time, kind="stable")
    time = time[order]
    keep = (time >= 0) & (time < s.timeline.end_s)
    order, time = order[keep], time[keep]
    pod = np.concatenate(lines.pod)[order]
    sample = np.concatenate(lines.sample)[order]
    span = np.concatenate(lines.span)[order]
    message = pa.concat_arrays([m.cast(pa.string()) for m in lines.message]).take(pa.array(order))
    trace_ids = np.full(order.size, None, dtype=object)
    span_ids = np.full(order.size, None, dtype=object)
    has = sample >= 0
    trace_ids[has] = ctx.ids.trace(sample[has])
    has_span = span >= 0
    span_ids[has_span] = ctx.ids.span(span[has_span])
    # Inside a Spring handler the active span is the controller's internal span (see `spans`).
    spring = np.array([rt == "java" for rt in ctx.runtime])[ctx.pod_service[pod]] & has_span
    span_ids[spring] = ctx.ids.internal(span[spring])
    return pd.DataFrame({
        "timestamp": s.timeline.timestamps(time),
        "service": strings(ctx.pod_service[pod], s.system.service_names),
        "pod": strings(pod, [p.name for p in s.cluster.pods]),
        "level": pd.array(np.concatenate(lines.level)[order], dtype=STRING),
        "message": pd.Series(message, dtype=STRING),
        "trace_id": pd.array(trace_ids, dtype=STRING),
        "span_id": pd.array(span_ids, dtype=STRING),
    })
