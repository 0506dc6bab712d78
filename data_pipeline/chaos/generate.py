"""Generate chaos-gym incidents: simulate a system, inject one fault, emit an incident directory and its label.

`generate_incident` lays out a timeline (a fault-free baseline window, then the incident window
with the fault starting at a random point inside it), injects the fault and some benign
distractors, simulates, and emits metrics, logs, spans and events for both windows, the topology,
and the system's source tree. The alert names a symptom at the user-facing entry service (its
p95 latency or error rate crossing a threshold set above its baseline, for a minute or more) and
says nothing about the cause. Everything is drawn from one generator seeded by `seed`, so the
same arguments give identical tables and files.

`generate_corpus` writes N incidents with the fault types taken round-robin, on Ray workers when
`workers > 1`.

Public data set fault types map onto this library through `flipmoe.telemetry.taxonomy.DATASET_MAPPINGS`:
Nezha `cpu_contention` -> cpu_contention, `cpu_consumed` -> cpu_hog, `network_delay` -> network_delay,
`return` -> code_wrong_result, `exception` -> code_exception; RCAEval (RE1/RE2) `cpu` -> cpu_hog,
`mem` -> memory_leak, `disk` -> disk_io, `delay` -> network_delay, `loss` -> packet_loss (RE2's
`socket` has no equivalent and stays unmapped).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_pipeline.chaos import simulate as sim
from data_pipeline.chaos.code import CodeBase
from data_pipeline.chaos.config import ChaosConfig
from data_pipeline.chaos.events import events_table
from data_pipeline.chaos.faults import (
    FAULTS,
    ONSETS,
    Distractor,
    Fault,
    FaultContext,
    choose_target,
    plan_distractors,
    plan_release_train,
)
from data_pipeline.chaos.logs import logs_table
from data_pipeline.chaos.metrics import group_quantiles, metrics_table
from data_pipeline.chaos.simulate import Cluster, Compiled, Conditions, Engine, Simulation, Timeline
from data_pipeline.chaos.spans import Ids, spans_table
from data_pipeline.chaos.systems import System, get_system
from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident, IncidentMeta, Telemetry, TimeWindow
from flipmoe.telemetry.label import Label
from flipmoe.telemetry.store import write_incident
from flipmoe.telemetry.taxonomy import FAULT_TYPES

_EPOCH = pd.Timestamp("2024-01-01T00:00:00Z")
MAX_TARGET_DRAWS = 3
log = logging.getLogger(__name__)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Time a stage; benchmarks read the DEBUG records (`record.stage`, `record.seconds`)."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    log.debug("stage %s took %.3f s", name, seconds, extra={"stage": name, "seconds": seconds})


def generate_incident(system: str | System, fault: str | None = None, *, seed: int, window_minutes: float = 30,
                      target: str | None = None, severity: float | None = None, onset: str | None = None,
                      config: ChaosConfig | None = None) -> tuple[Incident, Label]:
    """Simulate one incident of `system` with `fault` (random when None); returns it with its ground truth.

    `target` names the service, pod (or, for node_failure, node) to strike; `severity` in (0, 1]
    scales the fault; `onset` is 'sudden' or 'gradual'. Unset choices are drawn from `seed`.
    """
    config = config or ChaosConfig()
    _check_arguments(fault, seed, window_minutes, severity, onset)
    resolved = system if isinstance(system, System) else get_system(system, seed=seed)
    # Independent streams, so that changing how one stage draws leaves the others' draws alone.
    rng, sim_rng, emit_rng, alert_rng = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence([seed, 0xC4A05]).spawn(4))
    fault_name = fault or str(rng.choice(list(FAULT_TYPES)))
    severity = float(rng.uniform(0.4, 1.0)) if severity is None else severity
    onset = onset or str(rng.choice(ONSETS))
    timeline, onset_s = _timeline(rng, config.metric_step_seconds or resolved.metric_step_s, window_minutes, config)
    hold = _alert_hold(timeline, alert_rng)
    # An incident starts with an alert: a randomly drawn target whose fault trips none (a cache
    # nobody waits for, one replica of several) is drawn again, at most twice.
    for _ in range(1 if target is not None else MAX_TARGET_DRAWS):
        run = _simulate(resolved, fault_name, target, severity, onset, timeline, onset_s, (rng, sim_rng, emit_rng),
                        config)
        alert = _alert_rule(run.simulation, onset_s, hold)
        if alert.clear:
            break
    simulation, code = run.simulation, run.code
    ids = Ids(int(emit_rng.integers(0, 2**63)))
    emitters = {"metrics": lambda: metrics_table(simulation, config.noise),
                "logs": lambda: logs_table(simulation, code, ids), "spans": lambda: spans_table(simulation, ids),
                "events": lambda: events_table(simulation)}
    tables = {}
    for name, emit in emitters.items():
        with _stage(name):
            tables[name] = emit()
    with _stage("alert+label"):
        incident_id = _incident_id(resolved.name, seed, fault_name, window_minutes, target, severity, onset, config)
        window = TimeWindow(timeline.timestamp(timeline.window_start_s), timeline.timestamp(timeline.end_s))
        baseline, current = _split(tables, window.start)
        meta = IncidentMeta(id=incident_id, alert=_alert_text(alert, resolved.entry_services[0], alert_rng),
                            window=window, alert_time=alert.time(timeline), source=f"chaos:{resolved.name}")
        label = _label(run.fault, simulation, onset_s, severity, onset, run.distractors,
                       {"alert_sli": alert.sli, "alert_clear": alert.clear})
    with _stage("code"):
        code_dir = _write_code(code, incident_id) if config.include_code else None
    incident = Incident(meta=meta, telemetry=current, baseline=baseline,
                        topology=_topology(resolved, simulation.cluster), code_dir=code_dir)
    return incident, label


@dataclass
class _Run:
    simulation: Simulation
    fault: Fault
    distractors: list[Distractor]
    code: CodeBase


def _simulate(system: System, fault_name: str, target: str | None, severity: float, onset: str,
              timeline: Timeline, onset_s: float,
              rngs: tuple[np.random.Generator, np.random.Generator, np.random.Generator], config: ChaosConfig) -> _Run:
    """Plan the fault and distractors on a fresh cluster, and simulate the timeline.

    `rngs` are the planning, simulation and emission streams; emission draws only after the last attempt.
    """
    rng, sim_rng, emit_rng = rngs
    with _stage("setup"):
        cluster = Cluster(system, timeline, rng)
        compiled = Compiled(system)
        code = CodeBase(system)
        scheme = config.metric_scheme or system.metric_scheme
        ctx = FaultContext(system=system, compiled=compiled, cluster=cluster, code=code, timeline=timeline,
                           rng=rng, onset_s=onset_s, severity=severity, onset=onset, scheme=scheme,
                           rps=sim.request_rate(system, timeline, rng))
        fault_cls = FAULTS[fault_name]
        service, pod = choose_target(fault_cls, ctx, target)
        injected = fault_cls(ctx, service, pod)
        injected.plan()
        distractors = plan_distractors(ctx, injected.service, config.red_herrings)
        distractors += plan_release_train(ctx, injected.service, config.release_train, config.release_spread_s)
        cond = Conditions.neutral(timeline.n_buckets, len(cluster.pods), len(system.services), len(system.nodes))
        cond.disk_fill[:] = rng.uniform(0.15, 0.6, len(cluster.pods))
        injected.apply(cond)
        for distractor in distractors:
            distractor.apply(cond)
    with _stage("simulate"):
        trace_rate = config.trace_sample_rate or system.trace_sample_rate
        result = Engine(compiled, cluster, cond, timeline, sim_rng, config, trace_rate, ctx.rps).run()
    simulation = Simulation(system=system, compiled=compiled, cluster=cluster, cond=cond, timeline=timeline,
                            result=result, scheme=scheme, rng=emit_rng)
    return _Run(simulation=simulation, fault=injected, distractors=distractors, code=code)


def generate_corpus(system: str | System, n: int, *, seed: int, out: str | Path, faults: list[str] | None = None,
                    workers: int = 1, window_minutes: float = 30, config: ChaosConfig | None = None,
                    overwrite: bool = False) -> list[Path]:
    """Write `n` incident directories under `out`, fault types round-robin so every type appears."""
    faults = list(faults or FAULT_TYPES)
    for name in faults:
        if name not in FAULT_TYPES:
            raise FlipmoeInputError(f"unknown fault type {name!r}", hint=f"valid: {', '.join(FAULT_TYPES)}")
    if not isinstance(n, int) or n < 1:
        raise FlipmoeInputError(f"the number of incidents must be a positive integer, got {n!r}")
    if not isinstance(workers, int) or workers < 1:
        raise FlipmoeInputError(f"workers must be a positive integer, got {workers!r}")
    _check_arguments(None, seed, window_minutes, None, None)
    if isinstance(system, str):
        get_system(system, seed=seed)  # fail fast on an unknown name
    out = Path(out)
    jobs = [(system, faults[i % len(faults)], _child_seed(seed, i)) for i in range(n)]
    if workers == 1:
        return [_write_one(*job, out=out, window_minutes=window_minutes, config=config, overwrite=overwrite)
                for job in jobs]
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_write_one)  # type: ignore[arg-type]
    return ray.get([remote.remote(*job, out=out, window_minutes=window_minutes, config=config,  # type: ignore[call-arg]
                                  overwrite=overwrite) for job in jobs])


def _write_one(system: str | System, fault: str, seed: int, *, out: Path, window_minutes: float,
               config: ChaosConfig | None, overwrite: bool) -> Path:
    incident, label = generate_incident(system, fault, seed=seed, window_minutes=window_minutes, config=config)
    try:
        with _stage("write"):
            return write_incident(incident, out / incident.id, label=label, overwrite=overwrite)
    finally:
        if incident.code_dir is not None:
            shutil.rmtree(incident.code_dir, ignore_errors=True)


def _child_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _check_arguments(fault: str | None, seed: int, window_minutes: float, severity: float | None,
                     onset: str | None) -> None:
    if fault is not None and fault not in FAULT_TYPES:
        raise FlipmoeInputError(f"unknown fault type {fault!r}", hint=f"valid: {', '.join(FAULT_TYPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise FlipmoeInputError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(window_minutes, int | float) or not 2 <= window_minutes <= 24 * 60:
        raise FlipmoeInputError(f"window_minutes must be between 2 and 1440, got {window_minutes!r}")
    if severity is not None and not 0 < severity <= 1:
        raise FlipmoeInputError(f"severity must be in (0, 1], got {severity!r}")
    if onset is not None and onset not in ONSETS:
        raise FlipmoeInputError(f"unknown onset {onset!r}", hint=f"valid: {', '.join(ONSETS)}")


def _timeline(rng: np.random.Generator, step: float, window_minutes: float,
              config: ChaosConfig) -> tuple[Timeline, float]:
    """Baseline then window, starting at a random UTC time; the fault starts inside the window."""
    window_buckets = max(4, int(round(window_minutes * 60 / step)))
    baseline_minutes = config.baseline_minutes or window_minutes
    baseline_buckets = max(4, int(round(baseline_minutes * 60 / step)))
    start = _EPOCH + pd.Timedelta(seconds=int(rng.integers(0, int(730 * 86400 // step))) * step)
    timeline = Timeline(start=start, step_s=step, n_buckets=baseline_buckets + window_buckets,
                        window_bucket=baseline_buckets)
    lo, hi = config.fault_offset
    onset_s = timeline.window_start_s + float(rng.uniform(lo, hi)) * window_buckets * step
    return timeline, onset_s


def _split(tables: dict[str, pd.DataFrame], at: pd.Timestamp) -> tuple[Telemetry, Telemetry]:
    before, after = {}, {}
    for name, table in tables.items():
        time = table["start" if name == "spans" else "timestamp"]
        early = (time < at).to_numpy()
        before[name] = table[early].reset_index(drop=True)
        after[name] = table[~early].reset_index(drop=True)
    return Telemetry(**before), Telemetry(**after)


def _topology(system: System, cluster: Cluster) -> Any:
    topology = system.topology()
    topology.placement = {p.name: cluster.node_names[p.node] for p in cluster.pods}
    return topology


# --- the alert ------------------------------------------------------------------------------------

def _entry_slis(s: Simulation) -> tuple[np.ndarray, np.ndarray]:
    """(T,) p95 latency in seconds and (T,) error ratio of user requests over the trailing minute.

    Alert rules evaluate over a window (`[1m]`), which pools enough requests for a stable p95.
    """
    r, T = s.result.records, s.timeline.n_buckets
    roots = np.flatnonzero((r.role == sim.SERVER) & (r.parent < 0))
    t = s.timeline.bucket(r.start[roots])
    w = s.result.samples.weight[r.sample[roots]]
    span = max(1, int(round(60 / s.timeline.step_s)))
    # Each request counts in the windows that end in its bucket and the `span - 1` after it.
    shifted = np.concatenate([t + k for k in range(span)])                       # (span * R,)
    keep = shifted < T
    dur = np.tile(r.dur[roots] / 1000, span)[keep]
    p95 = group_quantiles(shifted[keep], dur, T, (0.95,))[:, 0]
    failed = np.tile(w * (r.code[roots] >= 10), span)[keep]
    total = np.bincount(shifted[keep], weights=np.tile(w, span)[keep], minlength=T)
    errors = np.bincount(shifted[keep], weights=failed, minlength=T)
    return p95, errors / np.maximum(total, 1e-12)


@dataclass(frozen=True)
class _Alert:
    bucket: int
    """Bucket in which the rule fired."""
    sli: str
    threshold: float
    hold: int
    """Buckets the condition held."""
    step_s: float
    clear: bool
    """A rule fired with a threshold above anything the baseline reached."""

    def time(self, timeline: Timeline) -> pd.Timestamp:
        return timeline.timestamp(min((self.bucket + 1) * timeline.step_s, timeline.end_s - 1.0))


def _alert_hold(timeline: Timeline, rng: np.random.Generator) -> int:
    """Buckets the system's alert rule must hold for: 1 to 3 minutes."""
    return max(1, int(round(float(rng.choice([60, 120, 120, 180])) / timeline.step_s)))


def _alert_rule(s: Simulation, onset_s: float, hold: int) -> _Alert:
    """The entry SLO rule that fires first after the onset; thresholds sit above the whole baseline."""
    tl = s.timeline
    p95, err = _entry_slis(s)
    base = slice(0, tl.window_bucket)
    first = int(tl.bucket(np.array([onset_s]))[0])
    thresholds = {"latency": _nice(np.nanmax(p95[base]) * 1.2), "errors": max(0.01, _nice(np.nanmax(err[base]) * 2))}
    series = {"latency": np.nan_to_num(p95), "errors": np.nan_to_num(err)}
    # Bursty symptoms that never last the rule's period trip a shorter rule (teams keep both).
    for h in sorted({hold, max(1, hold // 2), 1}, reverse=True):
        fired = [(t, sli) for sli in series
                 if (t := _first_sustained(series[sli] > thresholds[sli], first, h)) is not None]
        if fired:
            bucket, sli = min(fired)
            return _Alert(bucket, sli, thresholds[sli], h, tl.step_s, clear=True)
    # No rule fired: alert on the entry signal that moved most, at the level it held for `hold` buckets.
    sustained = {sli: _rolling_min(values, hold) for sli, values in series.items()}
    rise = {sli: (v[first:].max() + 1e-4) / (v[base].max() + 1e-4) for sli, v in sustained.items()}
    sli = max(rise, key=rise.__getitem__)
    peak = first + int(np.argmax(sustained[sli][first:]))
    return _Alert(peak, sli, _nice_below(float(sustained[sli][peak])), hold, tl.step_s, clear=False)


def _alert_text(alert: _Alert, entry: str, rng: np.random.Generator) -> str:
    seconds = alert.hold * alert.step_s
    period = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    thr = alert.threshold
    if alert.sli == "latency":
        value = f"{thr:g} s" if thr >= 1 else f"{thr * 1000:g} ms"
        return str(rng.choice([f"p95 latency of {entry} above {value} for {period}",
                               f"[FIRING] {entry}: p95 request latency > {value} (for {period})"]))
    return str(rng.choice([f"error rate of {entry} above {thr * 100:g}% for {period}",
                           f"[FIRING] {entry}: 5xx ratio > {thr * 100:g}% (for {period})"]))


def _nice(x: float) -> float:
    """Round up to 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten."""
    if not np.isfinite(x) or x <= 0:
        return 0.01
    exp = np.floor(np.log10(x))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * 10**exp >= x:
            return float(round(m * 10**exp, 6))
    return float(10 ** (exp + 1))


def _nice_below(x: float) -> float:
    return float(round(_nice(x * 0.85) * 0.8, 6)) if x > 0 else 0.001


def _rolling_min(series: np.ndarray, hold: int) -> np.ndarray:
    """(T,) the minimum of each value and the `hold - 1` before it (what held for `hold` buckets)."""
    out = series.copy()
    for k in range(1, hold):
        out[k:] = np.minimum(out[k:], series[:-k])
        out[:k] = 0.0
    return out


def _first_sustained(over: np.ndarray, start: int, hold: int) -> int | None:
    run = 0
    for t in range(start, over.size):
        run = run + 1 if over[t] else 0
        if run >= hold:
            return t
    return None


# --- the label ------------------------------------------------------------------------------------

def _label(fault: Fault, s: Simulation, onset_s: float, severity: float, onset: str, distractors: list[Distractor],
           alert_extra: dict[str, Any]) -> Label:
    cluster = s.cluster
    pod = cluster.pods[fault.pod].name if fault.pod is not None else None
    node = cluster.node_names[fault.node] if fault.node is not None else None
    extra = {"system": s.system.name, "severity": round(severity, 3),
             "onset": onset if type(fault).shaped else "own dynamics", "level": FAULT_TYPES[fault.name].level.value,
             "red_herrings": [d.description for d in distractors], **alert_extra, **fault.extra}
    return Label(service=fault.service, pod=pod, node=node, fault_type=fault.name, fine_grained=fault.fine_grained,
                 propagation_path=_propagation_path(s, fault.service, onset_s),
                 inject_time=s.timeline.timestamp(round(onset_s, 3)).isoformat().replace("+00:00", "Z"),
                 source="chaos", extra=extra)


def _propagation_path(s: Simulation, root: str, onset_s: float) -> list[str]:
    """The most common chain of services from the root cause up to the trace root among affected calls.

    A call is affected when it touches the root service (served by it, or a call to it, or a call
    from it) after the onset and failed, returned a wrong result, or took over twice its
    operation's baseline p99.
    """
    r, root_i = s.result.records, s.compiled.service_index[root]
    base = r.start < s.timeline.window_start_s
    key = r.op.astype(np.int64) * 3 + r.role
    p99 = group_quantiles(key[base], r.dur[base], int(key.max()) + 1, (0.99,))[:, 0]
    touches = (r.service == root_i) | ((r.role == sim.CLIENT) & (r.peer == root_i))
    slow = r.dur > 2 * np.nan_to_num(p99[key], nan=np.inf)
    affected = np.flatnonzero(touches & (r.start >= onset_s) & ((r.code >= 10) | (r.code == sim.WRONG) | slow))
    if affected.size == 0:
        return [root]
    if affected.size > 3000:
        affected = np.sort(s.rng.choice(affected, 3000, replace=False))
    pos = np.full(int(r.rid.max()) + 1, -1, dtype=np.int64)
    pos[r.rid] = np.arange(r.rid.size)
    chains: dict[tuple[str, ...], int] = {}
    current = affected.copy()
    steps = [r.service[current].astype(np.int64)]
    for _ in range(64):  # walk every affected call up to its trace root, one level per step
        parent = r.parent[current]
        nxt = np.where(parent >= 0, pos[np.maximum(parent, 0)], -1)
        if (nxt < 0).all():
            break
        steps.append(np.where(nxt >= 0, r.service[np.maximum(nxt, 0)], -1))
        current = np.where(nxt >= 0, nxt, current)
    matrix = np.stack(steps, axis=1)                                          # (A, depth)
    names = s.compiled.services
    for row in matrix:
        chain = [root]
        for svc in row:
            if svc < 0:
                break
            if names[svc] != chain[-1]:
                chain.append(names[svc])
        chains[tuple(chain)] = chains.get(tuple(chain), 0) + 1
    return list(max(chains.items(), key=lambda kv: (kv[1], -len(kv[0])))[0])


# --- ids and code ---------------------------------------------------------------------------------

def _incident_id(system: str, seed: int, fault: str, window_minutes: float, target: str | None,
                 severity: float, onset: str, config: ChaosConfig) -> str:
    """A stable id that says which system, not which fault."""
    params = json.dumps([system, int(seed), fault, window_minutes, target, severity, onset, repr(config)])
    return f"{system}-{hashlib.blake2b(params.encode(), digest_size=6).hexdigest()}"


def _write_code(code: CodeBase, incident_id: str) -> Path:
    """Write the source tree to a fresh directory of its own (removed at exit).

    Never a directory named by the id alone: simulating the same incident twice in one process must not
    rewrite, or let `_write_one`'s clean-up delete, the tree an earlier `Incident` still points at.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"{incident_id}-", dir=_code_root()))
    code.write(directory)
    return directory


@functools.cache
def _code_root() -> Path:
    # One parent per process only so that a single atexit hook removes every tree; it holds no results.
    root = Path(tempfile.mkdtemp(prefix="flipmoe-chaos-code-"))
    atexit.register(shutil.rmtree, root, True)
    return root
