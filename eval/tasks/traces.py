"""Trace summary tasks on held-out chaos traces (rendered as the traces expert reads them).

- `trace_summary`: trace -> a summary (entry operation, size, duration, errors, where the time went).
  Three references state the same facts in different words; normalised ROUGE-2 with the gate.
  Baseline: a template over the classic longest-child descent (not the exclusive-time truth).
- `trace_bottleneck`: trace -> the service of the span with the most exclusive time. Exact.
  Baseline: the service at the end of the longest-child descent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eval.tasks._core import EvalItem, EvalTask, exact_scorer, summary_scorer
from eval.tasks._data import EvalData
from experts.sources import digest

if TYPE_CHECKING:
    from experts.traces.corpus import Trace

TRACES_PER_INCIDENT = 4


def trace_tasks() -> list[EvalTask]:
    return [
        EvalTask(name="trace_summary", category="trace_summary", metric="normalised_rouge2+gate",
                 description="trace -> summary: entry, spans, services, duration, errors, bottleneck",
                 input_format="a rendered trace tree", build=_summary_items, rule=_summary_rule,
                 score=summary_scorer(), max_new_tokens=96, notes="3 references per item"),
        EvalTask(name="trace_bottleneck", category="trace_summary", metric="exact",
                 description="trace -> the service whose span has the most exclusive time",
                 input_format="a rendered trace tree", build=_bottleneck_items, rule=_bottleneck_rule,
                 score=exact_scorer(), max_new_tokens=8),
    ]


def _traces(data: EvalData) -> list[tuple[int, Trace]]:
    from experts.traces.corpus import traces_of

    out = []
    for sample in data.chaos():
        out += [(sample.seed, t) for t in traces_of(sample.table("spans"), limit=TRACES_PER_INCIDENT)]
    return out


def _facts(trace: Trace) -> dict[str, object]:
    from experts.traces.tasks import exclusive_ms

    root = trace.root
    heaviest = max(trace.spans, key=lambda s: (exclusive_ms(trace, s), s))
    errors = [s for s in trace.spans.values() if s.error]
    return {"service": root.service, "operation": root.operation, "ms": f"{root.duration_ms:.1f}",
            "spans": len(trace.spans), "services": len({s.service for s in trace.spans.values()}),
            "errors": len(errors), "slow": trace.spans[heaviest].service,
            "slow_ms": f"{exclusive_ms(trace, heaviest):.1f}",
            "failed": errors[-1].service if errors else ""}


def _summary_items(data: EvalData) -> list[EvalItem]:
    from experts.traces.corpus import render_trace

    items = []
    for seed, trace in _traces(data):
        f = _facts(trace)
        errors = f"{f['errors']} spans failed, the deepest in {f['failed']}" if f["errors"] else "no span failed"
        references = (
            f"{f['service']} {f['operation']} took {f['ms']} ms over {f['spans']} spans in {f['services']} services; "
            f"{errors}. Most time was spent in {f['slow']} ({f['slow_ms']} ms of its own).",
            f"The request entered at {f['service']} ({f['operation']}) and lasted {f['ms']} ms. It made {f['spans']} "
            f"spans across {f['services']} services, {errors}. The bottleneck was {f['slow']} with {f['slow_ms']} ms "
            "exclusive time.",
            f"Trace of {f['operation']} on {f['service']}: {f['ms']} ms, {f['spans']} spans, {f['services']} services, "
            f"{errors}; {f['slow']} dominated ({f['slow_ms']} ms self time).",
        )
        text = render_trace(trace)
        items.append(EvalItem(id=f"tsum-{digest(text)[:10]}", input=text, references=references,
                              meta={"source": f"chaos:{seed}", "split": "heldout"}))
    return sorted(items, key=lambda item: item.id)[: data.config.max_items]


def _descent(text: str) -> tuple[list[tuple[int, str, float, float, bool]], str]:
    from experts.traces.tasks import parse_trace, slow_path_baseline

    path = slow_path_baseline([text])[0]
    return parse_trace(text), path.split(" > ")[-1] if path else ""


def _summary_rule(items: Sequence[EvalItem]) -> list[str]:
    answers = []
    for item in items:
        spans, slow = _descent(item.input)
        if not spans:
            answers.append("")
            continue
        _, service, _, duration, _ = spans[0]
        operation = item.input.split(" ", 2)[1] if " " in item.input else ""
        failed = sum(s[4] for s in spans)
        answers.append(f"{service} {operation} took {duration:.1f} ms over {len(spans)} spans; {failed} failed; "
                       f"the longest call chain ends in {slow}.")
    return answers


def _bottleneck_items(data: EvalData) -> list[EvalItem]:
    from experts.traces.corpus import render_trace

    items = []
    for seed, trace in _traces(data):
        text = render_trace(trace)
        items.append(EvalItem(id=f"tbn-{digest(text)[:10]}", input=text, references=(str(_facts(trace)["slow"]),),
                              meta={"source": f"chaos:{seed}", "split": "heldout"}))
    return sorted(items, key=lambda item: item.id)[: data.config.max_items]


def _bottleneck_rule(items: Sequence[EvalItem]) -> list[str]:
    return [_descent(item.input)[1] for item in items]
