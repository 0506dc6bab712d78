"""Pretraining text of the traces expert: span trees of the training incidents, rendered as text.

`render_trace` writes a trace depth-first, each span as
`<span>service operation +start_ms duration_ms status` followed by its children and `</span>`;
start offsets are relative to the trace's first span, so the model reads overlap and ordering.
Traces with more than `MAX_SPANS` spans are left out (a nano expert's rows hold about 256 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from experts.sources import Sources, digest

SPAN_OPEN, SPAN_CLOSE = "<span>", "</span>"
MAX_SPANS = 16
TRACES_PER_INCIDENT = 200


@dataclass(frozen=True, kw_only=True)
class Span:
    span_id: str
    parent: str | None
    service: str
    operation: str
    start_ms: float
    """Start relative to the trace's earliest span."""
    duration_ms: float
    error: bool


@dataclass(frozen=True, kw_only=True)
class Trace:
    """One trace as a tree: its spans by id, and each span's children in start order."""

    trace_id: str
    spans: dict[str, Span]
    children: dict[str | None, list[str]]

    @property
    def root(self) -> Span:
        return self.spans[self.children[None][0]]

    def path_to(self, span_id: str) -> list[Span]:
        path = [self.spans[span_id]]
        while path[-1].parent is not None:
            path.append(self.spans[path[-1].parent])
        return path[::-1]

    def depth(self, span_id: str) -> int:
        return len(self.path_to(span_id)) - 1


def traces_of(spans: pd.DataFrame, *, limit: int | None = None, max_spans: int = MAX_SPANS) -> list[Trace]:
    """Well-formed traces (one root, every parent present, 2 to `max_spans` spans) of a spans table,
    in a fixed hashed order of their ids; the first `limit` of them when given."""
    sizes = spans["trace_id"].value_counts()
    candidates = sorted(map(str, sizes.index[(sizes >= 2) & (sizes <= max_spans)]), key=digest)
    traces: list[Trace] = []
    wanted = spans[spans["trace_id"].isin(candidates[: 2 * limit] if limit is not None else candidates)]
    groups = {str(k): g for k, g in wanted.groupby("trace_id", sort=False)}
    for trace_id in candidates:
        if limit is not None and len(traces) >= limit:
            break
        if trace_id in groups:
            trace = _tree(trace_id, groups[trace_id])
            if trace is not None:
                traces.append(trace)
    return traces


def _tree(trace_id: str, group: pd.DataFrame) -> Trace | None:
    first = group["start"].min()
    offsets = ((group["start"] - first).dt.total_seconds() * 1000).to_numpy()
    table: dict[str, Span] = {}
    for span_id, parent, service, operation, start, duration, status in zip(
            group["span_id"], group["parent_span_id"], group["service"], group["operation"], offsets,
            group["duration"], group["status"], strict=True):
        table[str(span_id)] = Span(span_id=str(span_id), parent=None if pd.isna(parent) else str(parent),
                                   service=str(service), operation=str(operation), start_ms=float(start),
                                   duration_ms=float(duration), error=status == "error")
    children: dict[str | None, list[str]] = {}
    for span in sorted(table.values(), key=lambda s: (s.start_ms, s.span_id)):
        children.setdefault(span.parent, []).append(span.span_id)
    if len(children.get(None, [])) != 1 or any(p is not None and p not in table for p in children):
        return None
    return Trace(trace_id=trace_id, spans=table, children=children)


def render_trace(trace: Trace) -> str:
    def render(span_id: str) -> str:
        span = trace.spans[span_id]
        inner = "".join(render(child) for child in trace.children.get(span_id, []))
        status = "error" if span.error else "ok"
        return (f"{SPAN_OPEN}{span.service} {span.operation} +{span.start_ms:.1f}ms {span.duration_ms:.1f}ms "
                f"{status}{inner}{SPAN_CLOSE}")

    return render(trace.root.span_id)


def corpus(sources: Sources) -> list[str]:
    documents = []
    for sample in sources.chaos("train"):
        documents += [render_trace(t) for t in traces_of(sample.table("spans"), limit=TRACES_PER_INCIDENT)]
    return documents
