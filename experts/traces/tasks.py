"""Task data of the traces expert, and the rule baselines of its tasks. Split by chaos seed.

- `trace_slow_path`: trace -> the services from the root down to the span with the most exclusive
  time (its duration minus the time covered by its children), written `a > b > c`. Baseline: the
  classic rule that descends into the longest child until a leaf.
- `trace_error_source`: a failing trace from after the fault started -> the service the chaos label
  names as the root cause. Baseline: the service of the deepest failing span (the latest to start
  among equals), which is right when the failure starts where it shows first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from data_pipeline.examples import TaskExample
from experts.sources import Sources, balanced, check_split, digest, without_heldout
from experts.traces.corpus import SPAN_CLOSE, SPAN_OPEN, Trace, render_trace, traces_of

TASK_NAMES = ("trace_slow_path", "trace_error_source")
_PATH_SEPARATOR = " > "


def task_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    """{task: examples} of `split`; no training input is also a held-out input."""
    check_split(split)
    data = _split_data(sources, split)
    return data if split == "heldout" else without_heldout(data, _split_data(sources, "heldout"))


def _split_data(sources: Sources, split: str) -> dict[str, list[TaskExample]]:
    n = sources.examples(split)
    slow, failing = [], []
    chaos = sources.chaos(split)
    # Enough per incident for the balanced pick below, without building every trace of every incident.
    per_incident = max(20, 3 * n // len(chaos))
    for sample in chaos:
        meta = {"source": f"chaos:{sample.seed}", "split": split}
        spans = sample.table("spans")
        slow += [TaskExample(task="trace_slow_path", input=render_trace(t), target=slow_path(t), meta=meta)
                 for t in traces_of(spans, limit=per_incident)]
        if sample.label.inject_time is None:
            continue
        onset = pd.Timestamp(sample.label.inject_time)
        errored = set(spans.loc[(spans["status"] == "error") & (spans["start"] >= onset), "trace_id"])
        # Only traces that show the faulty service (a span of it, or a call naming it) can point to it.
        culprit = _squash(sample.label.service)
        for trace in traces_of(spans[spans["trace_id"].isin(errored)], limit=per_incident):
            text = render_trace(trace)
            if culprit in _squash(text):
                failing.append(TaskExample(task="trace_error_source", input=text, target=sample.label.service,
                                           meta=meta))
    slow.sort(key=lambda e: digest(e.input))
    failing.sort(key=lambda e: digest(e.input))
    # Balanced over answers (slow paths) and over incidents (failures), so no single one dominates.
    return {"trace_slow_path": balanced(slow, lambda e: e.target, n),
            "trace_error_source": balanced(failing, lambda e: e.meta["source"], n)}


def _squash(text: str) -> str:
    """Lower case without separators: `cart-service`, `CartService` and `cart_service` read alike."""
    return re.sub(r"[-_.\s]", "", text.lower())


def _services(path: Sequence[str]) -> str:
    """Services along a path, a client span and the server span it calls in the same service merged."""
    merged = [s for i, s in enumerate(path) if i == 0 or s != path[i - 1]]
    return _PATH_SEPARATOR.join(merged)


def exclusive_ms(trace: Trace, span_id: str) -> float:
    """Duration of a span not covered by any of its children (overlapping children counted once)."""
    span = trace.spans[span_id]
    end_of_span = span.start_ms + span.duration_ms
    covered, reach = 0.0, span.start_ms
    for child in sorted((trace.spans[c] for c in trace.children.get(span_id, [])), key=lambda s: s.start_ms):
        start, end = max(child.start_ms, reach), min(child.start_ms + child.duration_ms, end_of_span)
        if end > start:
            covered += end - start
            reach = end
    return max(0.0, span.duration_ms - covered)


def slow_path(trace: Trace) -> str:
    heaviest = max(trace.spans, key=lambda s: (exclusive_ms(trace, s), s))
    return _services([s.service for s in trace.path_to(heaviest)])


# --- rules on the rendered text ---------------------------------------------------------------------

_SPAN = re.compile(re.escape(SPAN_OPEN) + r"(\S+) (.*?) \+([\d.]+)ms ([\d.]+)ms (ok|error)")


def parse_trace(text: str) -> list[tuple[int, str, float, float, bool]]:
    """(depth, service, start_ms, duration_ms, failed) per span of a `render_trace` text, in document order."""
    spans, depth = [], -1
    for token in re.finditer(re.escape(SPAN_OPEN) + "|" + re.escape(SPAN_CLOSE), text):
        if token.group() == SPAN_CLOSE:
            depth -= 1
            continue
        depth += 1
        match = _SPAN.match(text, token.start())
        if match is not None:
            spans.append((depth, match[1], float(match[3]), float(match[4]), match[5] == "error"))
    return spans


def slow_path_baseline(inputs: Sequence[str]) -> list[str]:
    """Descend from the root into the child with the longest duration, down to a leaf."""
    answers = []
    for text in inputs:
        spans = parse_trace(text)
        if not spans:
            answers.append("")
            continue
        path, index = [spans[0][1]], 0
        while True:
            depth = spans[index][0]
            children = []
            for j in range(index + 1, len(spans)):
                if spans[j][0] <= depth:
                    break
                if spans[j][0] == depth + 1:
                    children.append(j)
            if not children:
                break
            index = max(children, key=lambda j: spans[j][3])
            path.append(spans[index][1])
        answers.append(_services(path))
    return answers


def error_source_baseline(inputs: Sequence[str]) -> list[str]:
    """The service of the deepest failing span; the root's service when none failed."""
    answers = []
    for text in inputs:
        spans = parse_trace(text)
        failed = [s for s in spans if s[4]] or spans[:1]
        answers.append(max(failed, key=lambda s: (s[0], s[2]))[1] if failed else "")
    return answers
