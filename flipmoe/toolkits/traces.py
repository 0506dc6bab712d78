"""Trace analysis: call trees, latency limits, exclusive time, error origins and call-structure changes.

All spans (the reference and the incident's) are analysed together as flat arrays:

  spans ──► call trees (parent index, depth, call path from the root; orphans become roots)
        ──► exclusive (self) time: duration minus the union of the children's intervals
        ──► limits per call path and per operation from the reference: mean + 3 sigma
            (median + 3 robust sigma when the reference is small)
        ──► slow operations (calls over their self-time limit far more often than in the reference),
            error chains (the deepest erroring span is the origin),
            missing / added calls (parent op -> child op edges versus the reference),
            per-service summaries.

The reference is the incident's baseline when it has spans, else the traces that start before the
alert time. Latency is judged on exclusive time so a slow callee is not blamed on its callers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flipmoe.errors import FlipmoeInputError
from flipmoe.telemetry.incident import Incident
from flipmoe.toolkits.findings import ServiceTraceSummary, SlowSpan, TraceAnomaly, TraceEvidence
from flipmoe.toolkits.metrics import format_utc_clock, reference_split_time


@dataclass(frozen=True, kw_only=True)
class TraceToolkitConfig:
    """How trace anomalies are judged."""

    sigmas: float = 3.0
    """Width of the normal band: a span is slow beyond centre + sigmas * spread."""
    min_baseline_spans: int = 20
    """Below this many reference spans, an operation's limit uses median and MAD instead of mean and std."""
    min_path_spans: int = 20
    """A call path needs this many reference spans for a limit of its own; rarer paths use the operation's."""
    relative_floor: float = 0.05
    """Lowest spread as a fraction of the centre: constant-latency operations are not flagged for 1 us."""
    min_sigma_ms: float = 0.5
    """Lowest spread in ms: sub-millisecond jitter is never an incident."""
    min_latency_score: float = 3.0
    """Slow operations need at least this binomial z of their share of calls over the self-time limit..."""
    min_slow_spans: int = 2
    """...and at least this many spans over their self-time limit..."""
    min_slow_fraction: float = 0.05
    """...and at least this share of their calls over it: with many calls a tiny rise is significant
    but is no incident."""
    min_error_score: float = 3.0
    """Error origins are reported from this binomial z of their rate versus the reference."""
    min_call_score: float = 3.0
    """Call edges are reported from this Poisson z of their count versus the expected count."""
    min_caller_spans: int = 5
    """A call counts as added only when the caller had at least this many reference spans."""
    max_findings: int = 50
    """Most findings kept per kind (slow, errors, call changes), best first."""
    examples: int = 5
    """Example traces kept as evidence per finding."""

    def __post_init__(self) -> None:
        if self.sigmas <= 0 or self.relative_floor < 0 or self.min_sigma_ms <= 0:
            raise FlipmoeInputError("traces.sigmas and traces.min_sigma_ms must be > 0, relative_floor >= 0")
        if min(self.min_baseline_spans, self.min_path_spans, self.min_slow_spans, self.examples) < 1:
            raise FlipmoeInputError("traces: span counts and examples must be at least 1")
        if not 0 <= self.min_slow_fraction <= 1:
            raise FlipmoeInputError("traces.min_slow_fraction must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class TraceReport:
    """Result of `analyse_traces`."""

    anomalies: tuple[TraceAnomaly, ...]
    """Sorted by score (all kinds score as z values), highest first."""
    services: tuple[ServiceTraceSummary, ...]
    """One summary per service with spans during the incident, most anomalous first."""
    notes: tuple[str, ...]
    """What could not be used and why."""
    spans: int
    """Spans analysed during the incident."""
    traces: int
    reference: str
    """What served as the normal reference, in words."""


# ------------------------------------------------------------------------------------- call trees


def resolve_parents(trace_code: np.ndarray, span_id: pd.Series, parent_id: pd.Series) -> np.ndarray:
    """Row index of each span's parent within its trace; -1 for roots and for orphans whose parent
    span is absent (a lost or unsampled span): they become roots of their own subtree."""
    n = len(span_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ids, _ = pd.factorize(pd.concat([span_id, parent_id], ignore_index=True))
    width = int(ids.max()) + 2
    own_key = trace_code * width + ids[:n]
    parent_key = trace_code * width + ids[n:]
    order = np.argsort(own_key, kind="stable")
    found = np.minimum(np.searchsorted(own_key, parent_key, sorter=order), n - 1)
    parent = np.where(own_key[order[found]] == parent_key, order[found], -1)
    parent[parent_id.isna().to_numpy()] = -1
    return parent  # type: ignore[no-any-return]


def depths(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth, parent) by pointer doubling; spans caught in a parent cycle (or under one) become roots."""
    ancestor, distance = parent.copy(), (parent >= 0).astype(np.int64)
    for _ in range(int(np.ceil(np.log2(len(parent) + 1))) + 1):
        has = ancestor >= 0
        if not has.any():
            return distance, parent
        distance = distance + np.where(has, distance[np.where(has, ancestor, 0)], 0)
        ancestor = np.where(has, ancestor[np.where(has, ancestor, 0)], -1)
    cyclic = ancestor >= 0
    parent = np.where(cyclic, -1, parent)
    return depths(parent)[0], parent


def exclusive_time(start_ms: np.ndarray, duration_ms: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Duration minus the union of the children's intervals, each clipped to the parent's interval.

    Children are sorted by start within their parent; a child adds only the part of it that lies
    beyond the furthest end of the children before it, which is exactly the union's length even
    for overlapping (parallel) calls.
    """
    end_ms = start_ms + duration_ms
    child = np.flatnonzero(parent >= 0)
    p = parent[child]
    lo = np.maximum(start_ms[child], start_ms[p])
    hi = np.minimum(end_ms[child], end_ms[p])
    keep = hi > lo
    p, lo, hi = p[keep], lo[keep], hi[keep]
    order = np.lexsort((lo, p))
    p, lo, hi = p[order], lo[order], hi[order]
    reach = pd.Series(hi).groupby(p).cummax().to_numpy()
    previous_reach = np.where(np.r_[False, p[1:] == p[:-1]], np.r_[-np.inf, reach[:-1]], -np.inf)
    covered = np.maximum(0.0, hi - np.maximum(lo, previous_reach))
    union = np.bincount(p, weights=covered, minlength=len(parent))
    return np.maximum(duration_ms - union, 0.0)  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class _Spans:
    """All spans as aligned arrays (N,), reference and incident together."""

    trace_id: np.ndarray
    span_id: np.ndarray
    trace_code: np.ndarray
    op: np.ndarray
    """Code of (service, operation); names in `op_service` / `op_name`."""
    op_service: list[str]
    op_name: list[str]
    service: np.ndarray
    """Code of the service; names in `services`."""
    services: list[str]
    start_ns: np.ndarray
    duration_ms: np.ndarray
    self_ms: np.ndarray
    error: np.ndarray
    reference: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    path: np.ndarray
    path_parent: np.ndarray
    """Path table: each path's prefix path (-1 at the root) and last operation."""
    path_op: np.ndarray

    def op_label(self, op: int) -> str:
        return f"{self.op_service[op]}:{self.op_name[op]}"

    def path_labels(self, path: int) -> tuple[str, ...]:
        labels = []
        while path >= 0:
            labels.append(self.op_label(int(self.path_op[path])))
            path = int(self.path_parent[path])
        return tuple(reversed(labels))


def _call_paths(op: np.ndarray, parent: np.ndarray, depth: np.ndarray, n_ops: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Path id of every span (the chain of operations from its root), built one depth level at a time."""
    path = np.full(len(op), -1, dtype=np.int64)
    path_parent, path_op = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    order = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max(initial=0)) + 2))
    offset = 0
    for level in range(len(bounds) - 1):
        idx = order[bounds[level]: bounds[level + 1]]
        prefix = path[parent[idx]] if level > 0 else np.full(idx.size, -1)
        unique_keys, inverse = np.unique((prefix + 1) * n_ops + op[idx], return_inverse=True)
        path[idx] = offset + inverse
        path_parent.append(unique_keys // n_ops - 1)
        path_op.append(unique_keys % n_ops)
        offset += unique_keys.size
    return path, np.concatenate(path_parent), np.concatenate(path_op)


def _build_spans(reference: pd.DataFrame, current: pd.DataFrame, notes: list[str]) -> _Spans:
    table = pd.concat([reference, current], ignore_index=True)
    # Hand-built tables may lack the optional parent and status columns: every span is then a root / unset.
    table = table.reindex(columns=table.columns.union(["parent_span_id", "status"], sort=False))
    is_reference = np.r_[np.ones(len(reference), bool), np.zeros(len(current), bool)]
    trace_raw, _ = pd.factorize(table["trace_id"])
    trace_code, _ = pd.factorize(trace_raw * 2 + is_reference)
    parent = resolve_parents(trace_code, table["span_id"], table["parent_span_id"])
    orphans = int((table["parent_span_id"].notna().to_numpy() & (parent < 0)).sum())
    if orphans:
        notes.append(f"{orphans} span(s) name a parent that is not in the data: treated as roots")
    depth, parent_fixed = depths(parent)
    if (parent_fixed != parent).any():
        notes.append(f"{int((parent_fixed != parent).sum())} span(s) sat in parent cycles: treated as roots")
    service_name = table["service"].fillna("unknown").astype(str)
    service, services = pd.factorize(service_name)
    op, op_keys = pd.factorize(service_name + "\x00" + table["operation"].fillna("unknown").astype(str))
    op_service, op_name = [k.split("\x00", 1)[0] for k in op_keys], [k.split("\x00", 1)[1] for k in op_keys]
    path, path_parent, path_op = _call_paths(op, parent_fixed, depth, len(op_keys))
    start_ns = table["start"].to_numpy(dtype="datetime64[ns]").view("int64")
    duration_ms = table["duration"].to_numpy(dtype=np.float64)
    start_ms = (start_ns - start_ns.min()) / 1e6
    return _Spans(
        trace_id=table["trace_id"].astype(str).to_numpy(dtype=object),
        span_id=table["span_id"].astype(str).to_numpy(dtype=object),
        trace_code=trace_code, op=op, op_service=op_service, op_name=op_name, service=service,
        services=[str(s) for s in services], start_ns=start_ns, duration_ms=duration_ms,
        self_ms=exclusive_time(start_ms, duration_ms, parent_fixed),
        error=(table["status"].astype(str).str.lower() == "error").to_numpy(dtype=bool),
        reference=is_reference, parent=parent_fixed, depth=depth, path=path, path_parent=path_parent,
        path_op=path_op,
    )


# ------------------------------------------------------------------------------------------ limits


@dataclass(frozen=True, kw_only=True)
class _Limits:
    """Reference centre, spread and count per group (or per span); upper = centre + sigmas * spread."""

    center: np.ndarray
    sigma: np.ndarray
    count: np.ndarray
    upper: np.ndarray


def _limits(group: np.ndarray, values: np.ndarray, reference: np.ndarray, n_groups: int,
            config: TraceToolkitConfig) -> _Limits:
    """Mean and std when a group has enough reference spans; median and 1.4826 MAD otherwise, because
    a handful of spans gives a std dominated by one outlier."""
    g, v = group[reference], values[reference]
    frame = pd.DataFrame({"g": g, "v": v})
    stats = frame.groupby("g")["v"].agg(["count", "mean", "std", "median"]).reindex(range(n_groups))
    frame["dev"] = np.abs(v - stats["median"].to_numpy()[g])
    mad = frame.groupby("g")["dev"].median().reindex(range(n_groups)).to_numpy() * 1.4826
    count = stats["count"].fillna(0).to_numpy()
    large = count >= config.min_baseline_spans
    center = np.where(large, stats["mean"].to_numpy(), stats["median"].to_numpy())
    sigma = np.where(large, stats["std"].fillna(0).to_numpy(), mad)
    floor = np.maximum(config.relative_floor * np.abs(center), config.min_sigma_ms)
    sigma = np.where(count > 0, np.maximum(np.nan_to_num(sigma), floor), np.nan)
    return _Limits(center=center, sigma=sigma, count=count, upper=center + config.sigmas * sigma)


def _path_or_op_limits(s: _Spans, values: np.ndarray, config: TraceToolkitConfig) -> _Limits:
    """Per-span limits: the call path's when the path has enough reference spans (one operation can be
    fast on one path and slow on another), else the operation's."""
    by_op = _limits(s.op, values, s.reference, len(s.op_name), config)
    by_path = _limits(s.path, values, s.reference, len(s.path_op), config)
    use_path = by_path.count[s.path] >= config.min_path_spans
    pick = {name: np.where(use_path, getattr(by_path, name)[s.path], getattr(by_op, name)[s.op])
            for name in ("center", "sigma", "count", "upper")}
    return _Limits(**pick)


# -------------------------------------------------------------------------------------- analysis


def analyse_traces(incident: Incident, *, config: TraceToolkitConfig | None = None) -> TraceReport:
    """Find slow operations, error origins and call-structure changes in the incident's traces."""
    config = config or TraceToolkitConfig()
    notes: list[str] = []
    spans = incident.spans
    if spans is None:
        return _nothing(["no spans in the incident: trace analysis skipped"], reference="none")
    reference, current, described = _split(incident, spans, notes)
    if current.empty:
        notes.append("no spans inside the incident window: nothing to analyse")
        return _nothing(notes, reference=described)
    if reference.empty:
        notes.append("no normal traces to compare with: latency limits and call structure were not judged")
    s = _build_spans(reference, current, notes)
    view = _Analysis.build(s, config, notes)
    anomalies = _slow_operations(view, config) + _error_chains(view, config) + _call_changes(view, config)
    anomalies.sort(key=lambda t: -t.score)
    services = _service_summaries(view, notes)
    return TraceReport(anomalies=tuple(anomalies), services=services, notes=tuple(notes),
                       spans=len(current), traces=int(current["trace_id"].nunique()), reference=described)


def _nothing(notes: list[str], *, reference: str) -> TraceReport:
    return TraceReport(anomalies=(), services=(), notes=tuple(notes), spans=0, traces=0, reference=reference)


def _split(incident: Incident, spans: pd.DataFrame, notes: list[str]
           ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(reference spans, incident spans, description). Without a baseline, a whole trace is normal when
    it starts before the split time, so no tree is cut in two."""
    window = incident.meta.window
    baseline = incident.baseline.spans if incident.baseline is not None else None
    split = reference_split_time(incident.meta)
    trace_start = spans.groupby("trace_id")["start"].transform("min")
    if baseline is not None:
        before = (trace_start < split).to_numpy()
        if incident.meta.alert_time is not None and before.any():
            # The minutes just before the alert are the same time of day and load as the incident;
            # a baseline may come from another hour. Both together are the reference.
            inside = ((trace_start >= split) & (trace_start < window.end)).to_numpy()
            return (pd.concat([baseline, spans[before]], ignore_index=True), spans[inside],
                    f"the baseline window and traces starting before {format_utc_clock(split)}")
        in_window = (spans["start"] >= window.start) & (spans["start"] < window.end)
        return baseline, spans[in_window], "the baseline window"
    why = "no trace baseline"
    if incident.meta.alert_time is None and not (trace_start < split).any():
        split = window.start + window.duration / 3
        why = "no baseline, no alert time and no traces before the window (the first third of it is used)"
    reference = f"traces starting before {format_utc_clock(split)}"
    notes.append(f"{why}: {reference} are taken as normal")
    before = (trace_start < split).to_numpy()
    inside = ((trace_start >= split) & (trace_start < window.end)).to_numpy()
    return spans[before], spans[inside], reference


@dataclass(frozen=True, kw_only=True)
class _Analysis:
    """Spans plus their limits and per-span judgements, shared by the finding builders."""

    s: _Spans
    upper_ms: np.ndarray
    """Duration limit of each span (see `_path_or_op_limits`)."""
    self_excess: np.ndarray
    """max(0, self time - its limit) / its sigma; NaN where the operation has no reference."""
    origin: np.ndarray
    """Error spans without an erroring child: where the error chain starts."""
    current: np.ndarray
    added_self_ms: np.ndarray
    """max(0, self time - its operation's median self time in the reference); 0 without a reference."""
    trace_ms: np.ndarray
    """End-to-end time of each span's trace: the longest of its root spans."""

    @classmethod
    def build(cls, s: _Spans, config: TraceToolkitConfig, notes: list[str]) -> _Analysis:
        duration_limits = _path_or_op_limits(s, s.duration_ms, config)
        self_limits = _path_or_op_limits(s, s.self_ms, config)
        excess = (s.self_ms - self_limits.upper) / self_limits.sigma
        erroring_children = np.bincount(s.parent[s.error & (s.parent >= 0)], minlength=len(s.op))
        current = ~s.reference
        unjudged = np.unique(s.op[current & np.isnan(self_limits.upper)])
        if unjudged.size and s.reference.any():
            names = ", ".join(s.op_label(int(o)) for o in unjudged[:5])
            notes.append(f"{unjudged.size} operation(s) have no reference spans, so their latency was not "
                         f"judged: {names}{' ...' if unjudged.size > 5 else ''}")
        self_excess = np.where(np.isnan(excess), np.nan, np.maximum(excess, 0.0))
        n_ops = len(s.op_name)
        ref_median = pd.Series(s.self_ms[s.reference]).groupby(s.op[s.reference]).median().reindex(range(n_ops))
        added = np.nan_to_num(np.maximum(s.self_ms - ref_median.to_numpy(np.float64)[s.op], 0.0))
        roots = s.parent < 0
        trace_ms = np.zeros(int(s.trace_code.max(initial=-1)) + 1)
        np.maximum.at(trace_ms, s.trace_code[roots], s.duration_ms[roots])
        return cls(s=s, upper_ms=duration_limits.upper, self_excess=self_excess,
                   origin=s.error & (erroring_children == 0), current=current, added_self_ms=added,
                   trace_ms=trace_ms[s.trace_code])

    def latency_share(self, mask: np.ndarray) -> float | None:
        """The added self time of the spans in `mask` over the end-to-end time of the traces they ran in:
        how much of the user-visible latency of those requests the slowdown explains (None without time)."""
        if not mask.any():
            return None
        _, first = np.unique(self.s.trace_code[mask], return_index=True)
        total = float(self.trace_ms[np.flatnonzero(mask)[first]].sum())
        return min(float(self.added_self_ms[mask].sum()) / total, 1.0) if total > 0 else None

    def time_range(self, idx: np.ndarray) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        if idx.size == 0:
            return None, None
        first = int(self.s.start_ns[idx].min())
        last = int((self.s.start_ns[idx] + (self.s.duration_ms[idx] * 1e6).astype(np.int64)).max())
        return pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC")

    def evidence(self, idx: np.ndarray, limit: int) -> TraceEvidence:
        """Evidence from spans `idx` given worst first: at most `limit` distinct traces."""
        traces = list(dict.fromkeys(self.s.trace_id[idx]))[:limit]
        chosen = set(traces)
        keep = [i for i in idx if self.s.trace_id[i] in chosen][: limit * 3]
        start, end = self.time_range(idx)
        spans = tuple((str(self.s.trace_id[i]), str(self.s.span_id[i])) for i in keep)
        return TraceEvidence(trace_ids=tuple(str(t) for t in traces), spans=spans, start=start, end=end)

    def most_common_path(self, idx: np.ndarray) -> tuple[str, ...]:
        if idx.size == 0:
            return ()
        paths, counts = np.unique(self.s.path[idx], return_counts=True)
        return self.s.path_labels(int(paths[np.argmax(counts)]))

    def median(self, values: np.ndarray, mask: np.ndarray) -> float | None:
        return float(np.median(values[mask])) if mask.any() else None


def _slow_operations(a: _Analysis, config: TraceToolkitConfig) -> list[TraceAnomaly]:
    """Operations whose calls exceed their self-time limit far more often than in the reference.

    Counting calls over the limit (rather than averaging how far over they are) keeps one huge
    outlier, a GC pause say, from making an operation look slow."""
    s, cur, ref = a.s, a.current, a.s.reference
    judged = ~np.isnan(a.self_excess)
    slow = judged & (a.self_excess > 0)
    n_ops = len(s.op_name)
    masks = (judged & cur, slow & cur, judged & ref, slow & ref)
    calls, slow_count, calls_ref, slow_ref = (np.bincount(s.op[mask], minlength=n_ops) for mask in masks)
    prior = (slow_ref.sum() + 1) / (calls_ref.sum() + 2)
    score = _binomial_z(slow_count, calls, slow_ref, calls_ref, prior)
    material = (slow_count >= config.min_slow_spans) & (slow_count >= config.min_slow_fraction * calls)
    found = np.flatnonzero((score >= config.min_latency_score) & material)
    findings = []
    for op in found[np.argsort(-score[found], kind="stable")][: config.max_findings]:
        of_op = s.op == op
        slow_idx = np.flatnonzero(slow & cur & of_op)
        slow_idx = slow_idx[np.argsort(-a.self_excess[slow_idx], kind="stable")]
        start, end = a.time_range(slow_idx)
        findings.append(TraceAnomaly(
            kind="slow_operation", service=s.op_service[op], operation=s.op_name[op], score=float(score[op]),
            path=a.most_common_path(slow_idx), calls=int(np.sum(of_op & cur)), affected=int(slow_count[op]),
            start=start, end=end, evidence=a.evidence(slow_idx, config.examples),
            baseline_p50_ms=a.median(s.duration_ms, of_op & ref), p50_ms=a.median(s.duration_ms, of_op & cur),
            baseline_self_p50_ms=a.median(s.self_ms, of_op & ref),
            self_p50_ms=a.median(s.self_ms, of_op & cur), latency_share=a.latency_share(of_op & cur),
            timeouts=int(np.sum(of_op & cur & (s.duration_ms > a.upper_ms))),
            slow_spans=_slow_path(a, int(slow_idx[0])),
        ))
    return findings


def _slow_path(a: _Analysis, worst: int) -> tuple[SlowSpan, ...]:
    """The worst span and those of its ancestors that ran over their duration limit, root first: the
    call path of the worst trace with its slow nodes (siblings off the path would only add noise)."""
    s, chain, span = a.s, [], worst
    while span >= 0:
        if span == worst or s.duration_ms[span] > a.upper_ms[span]:
            chain.append(span)
        span = int(s.parent[span])
    return tuple(SlowSpan(service=s.op_service[s.op[i]], operation=s.op_name[s.op[i]],
                          span_id=str(s.span_id[i]), duration_ms=float(s.duration_ms[i]),
                          upper_ms=float(a.upper_ms[i]), self_ms=float(s.self_ms[i]))
                 for i in reversed(chain))


def _binomial_z(k: np.ndarray, n: np.ndarray, k_ref: np.ndarray, n_ref: np.ndarray, prior: float
                ) -> np.ndarray:
    """z of the rate k/n against the reference rate, smoothed (Laplace) so zero reference events still
    give a finite expectation; groups without reference spans fall back to the overall reference rate."""
    p0 = np.where(n_ref > 0, (k_ref + 1) / (n_ref + 2), prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (k / n - p0) / np.sqrt(p0 * (1 - p0) / n)
    return np.where(n > 0, np.maximum(z, 0.0), 0.0)  # type: ignore[no-any-return]


def _error_chains(a: _Analysis, config: TraceToolkitConfig) -> list[TraceAnomaly]:
    s, cur, ref = a.s, a.current, a.s.reference
    n_ops = len(s.op_name)
    calls, calls_ref = np.bincount(s.op[cur], minlength=n_ops), np.bincount(s.op[ref], minlength=n_ops)
    origins = np.bincount(s.op[cur & a.origin], minlength=n_ops)
    origins_ref = np.bincount(s.op[ref & a.origin], minlength=n_ops)
    prior = (origins_ref.sum() + 1) / (calls_ref.sum() + 2)
    score = _binomial_z(origins, calls, origins_ref, calls_ref, prior)
    found = np.flatnonzero((origins > 0) & (score >= config.min_error_score))
    findings = []
    for op in found[np.argsort(-score[found], kind="stable")][: config.max_findings]:
        idx = np.flatnonzero(cur & a.origin & (s.op == op))
        idx = idx[np.argsort(-s.depth[idx], kind="stable")]
        start, end = a.time_range(idx)
        findings.append(TraceAnomaly(
            kind="error_chain", service=s.op_service[op], operation=s.op_name[op], score=float(score[op]),
            path=a.most_common_path(idx), calls=int(calls[op]), affected=int(origins[op]), start=start,
            end=end, evidence=a.evidence(idx, config.examples), error_rate=float(origins[op] / calls[op]),
            baseline_error_rate=float(origins_ref[op] / calls_ref[op]) if calls_ref[op] else None,
            chain=_error_chain(s, int(idx[0])),
        ))
    return findings


def _error_chain(s: _Spans, origin: int) -> tuple[str, ...]:
    """Erroring ancestors of an origin span, outermost first, ending at the origin."""
    chain, span = [], origin
    while span >= 0 and s.error[span]:
        chain.append(s.op_label(int(s.op[span])))
        span = int(s.parent[span])
    return tuple(reversed(chain))


def _call_changes(a: _Analysis, config: TraceToolkitConfig) -> list[TraceAnomaly]:
    """Caller op -> callee op edges whose count departs from the reference rate per caller span
    (Poisson z, with half a call of smoothing so unseen edges have a small non-zero expectation)."""
    s, cur, ref = a.s, a.current, a.s.reference
    if not ref.any():
        return []
    n_ops = len(s.op_name)
    child = np.flatnonzero(s.parent >= 0)
    edge = s.op[s.parent[child]] * n_ops + s.op[child]
    edges, inverse = np.unique(edge, return_inverse=True)
    seen = np.bincount(inverse[cur[child]], minlength=edges.size)
    seen_ref = np.bincount(inverse[ref[child]], minlength=edges.size)
    caller, callee = edges // n_ops, edges % n_ops
    caller_calls = np.bincount(s.op[cur], minlength=n_ops)[caller]
    caller_calls_ref = np.bincount(s.op[ref], minlength=n_ops)[caller]
    expected = (seen_ref + 0.5) / (caller_calls_ref + 1) * caller_calls
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (seen - expected) / np.sqrt(expected)
    missing = (seen_ref > 0) & (caller_calls > 0) & (z <= -config.min_call_score)
    added = (seen_ref == 0) & (caller_calls_ref >= config.min_caller_spans) & (z >= config.min_call_score)
    candidates = np.flatnonzero(missing | added)
    findings = []
    for e in candidates[np.argsort(-np.abs(z[candidates]), kind="stable")][: config.max_findings]:
        callee_spans = child[(inverse == e) & (cur if added[e] else ref)[child]]
        if missing[e]:
            # Evidence of absence: incident spans of the caller that made no such call.
            caller_spans = np.flatnonzero(cur & (s.op == caller[e]))
            with_call = np.isin(caller_spans, s.parent[child[(inverse == e) & cur[child]]])
            evidence_idx = caller_spans[~with_call]
        else:
            evidence_idx = callee_spans
        start, end = a.time_range(evidence_idx)
        findings.append(TraceAnomaly(
            kind="missing_call" if missing[e] else "added_call", service=s.op_service[callee[e]],
            operation=s.op_name[callee[e]], score=float(abs(z[e])),
            path=a.most_common_path(callee_spans), calls=int(caller_calls[e]), affected=int(seen[e]),
            start=start, end=end, evidence=a.evidence(evidence_idx, config.examples),
            caller=s.op_label(int(caller[e])), expected_calls=float(expected[e]),
        ))
    return findings


def _per_service(a: _Analysis, mask: np.ndarray) -> pd.DataFrame:
    judged = ~np.isnan(a.self_excess)
    frame = pd.DataFrame({"service": a.s.service, "error": a.s.error, "origin": a.origin, "self": a.s.self_ms,
                          "judged": judged, "slow": judged & (a.self_excess > 0)})[mask]
    by = frame.groupby("service")
    stats = by.agg(requests=("error", "size"), errors=("error", "sum"), origins=("origin", "sum"),
                   judged=("judged", "sum"), slow=("slow", "sum"))
    stats["p50"], stats["p95"] = by["self"].quantile(0.5), by["self"].quantile(0.95)
    return stats


def _service_summaries(a: _Analysis, notes: list[str]) -> tuple[ServiceTraceSummary, ...]:
    cur = _per_service(a, a.current)
    ref_all = _per_service(a, a.s.reference)
    silent = sorted(a.s.services[int(c)] for c in ref_all.index.difference(cur.index))
    if silent:
        notes.append(f"service(s) with reference spans but none during the incident: {', '.join(silent)}")
    ref = ref_all.reindex(cur.index)
    error_score = _rate_score(cur, ref, ref_all, "origins", "requests")
    latency_score = _rate_score(cur, ref, ref_all, "slow", "judged")
    codes = cur.index.to_numpy(np.int64)
    # NaN where a service has no reference spans.
    ref_errors, ref_requests, ref_p50, ref_p95 = (ref[c].to_numpy(np.float64)
                                                  for c in ("errors", "requests", "p50", "p95"))
    summaries = [
        ServiceTraceSummary(
            service=a.s.services[int(codes[i])], requests=int(row.requests), errors=int(row.errors),
            error_rate=float(row.errors / row.requests), origin_errors=int(row.origins),
            baseline_error_rate=_ratio(ref_errors[i], ref_requests[i]),
            self_p50_ms=float(row.p50), self_p95_ms=float(row.p95),
            baseline_self_p50_ms=_float_or_none(ref_p50[i]), baseline_self_p95_ms=_float_or_none(ref_p95[i]),
            latency_score=float(latency_score[i]), error_score=float(error_score[i]),
            latency_share=a.latency_share(a.current & (a.s.service == codes[i])),
        )
        for i, (_, row) in enumerate(cur.iterrows())
    ]
    summaries.sort(key=lambda x: (-max(x.latency_score, x.error_score), x.service))
    return tuple(summaries)


def _rate_score(cur: pd.DataFrame, ref: pd.DataFrame, ref_all: pd.DataFrame, events: str, trials: str
                ) -> np.ndarray:
    """Binomial z per service of events/trials (errors, slow calls) against the service's reference rate."""
    prior = (ref_all[events].sum() + 1) / (ref_all[trials].sum() + 2)
    return _binomial_z(cur[events].to_numpy(float), cur[trials].to_numpy(float),
                       ref[events].fillna(0).to_numpy(float), ref[trials].fillna(0).to_numpy(float), prior)


def _float_or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _ratio(numerator: float, denominator: float) -> float | None:
    if np.isnan(denominator) or not denominator:
        return None
    return float(numerator) / float(denominator)
