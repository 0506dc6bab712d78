"""Grounded instruction synthesis: task pairs cut from real windows of an incident's telemetry.

Every answer is computed from the window the question shows (and, for "why", from the incident's
ground truth), never invented:
- a service's log window -> what changed (the log template whose rate moved most against the
  fault-free baseline) and why (the injected fault and where it struck);
- a trace -> which call was slow (the span with the largest self time: its duration minus its
  children's);
- a service's metrics -> which metric shifted (largest change of the window mean, in baseline
  standard deviations).

Each example comes in `variations` phrasings of the instruction (prompt variation), and, with
inversion on, also inverted (FLAN's input inversion: the finding is given and the evidence is asked
for). Task names are `instruct_<kind>` and `instruct_<kind>_inverted`; `TASK_EXPERT` says which expert
family learns each kind.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd

from data_pipeline.config import InstructConfig
from data_pipeline.examples import TaskExample
from data_pipeline.sources import render_metrics, render_trace

TASK_EXPERT = {"instruct_log_change": "logs", "instruct_slow_call": "traces", "instruct_metric_shift": "metrics"}
"""Instruction kind -> expert family it trains (inverted tasks go to the same family)."""

PROMPTS = {
    "instruct_log_change": ("What changed in these logs, and why?",
                            "Summarise how this service's logs changed during the incident and the likely cause.",
                            "Read the log window below. Which message pattern changed, and what caused it?"),
    "instruct_slow_call": ("Which call in this trace was slow?",
                           "Find the span that spent the most time itself (not in its children).",
                           "Here is a distributed trace. Name the slowest call and its self time."),
    "instruct_metric_shift": ("Which metric shifted in this window?",
                              "Compare these series with normal behaviour: which one moved the most?",
                              "Look at the scrapes below and name the metric that changed, with its direction."),
}
INVERTED_PROMPTS = {
    "instruct_log_change": "Write log lines of {service} that would show this change: {finding}",
    "instruct_slow_call": "Write a trace in which this call is the slowest: {finding}",
    "instruct_metric_shift": "Write metric scrapes of {service} that show this shift: {finding}",
}
_LOG_WINDOW = 24
_INVERTED_LINES = 8
_MIN_LINES = 5  # a template seen fewer times in the window says nothing about a change
_MASK = re.compile(r"[0-9a-f]*[0-9][0-9a-f]*")


def _template(message: str) -> str:
    return _MASK.sub("<*>", message.lower())


def synthesise(incident: Any, label: Any, config: InstructConfig, *, key: str) -> list[TaskExample]:
    """Grounded examples of one incident (`label` may be None for incidents without ground truth)."""
    rng = random.Random(f"{config.seed}:{key}")
    examples: list[TaskExample] = []
    for task, service, window, finding in _findings(incident, label, config.per_incident, rng):
        prompts = list(PROMPTS[task])
        rng.shuffle(prompts)
        meta = {"source": key, "service": service, "grounded": True}
        for prompt in prompts[: max(1, config.variations)]:
            examples.append(TaskExample(task=task, input=f"{prompt}\n{window}", target=finding, meta=meta))
        if config.inversion:
            evidence = "\n".join(window.split("\n")[:_INVERTED_LINES])
            inverted = INVERTED_PROMPTS[task].format(service=service, finding=finding)
            examples.append(TaskExample(task=f"{task}_inverted", input=inverted, target=evidence, meta=meta))
    return examples


def _findings(incident: Any, label: Any, per_kind: int, rng: random.Random) -> Iterator[tuple[str, str, str, str]]:
    yield from _log_changes(incident, label, per_kind)
    yield from _slow_calls(incident, per_kind, rng)
    yield from _metric_shifts(incident, per_kind)


def _cause(label: Any) -> str:
    if label is None:
        return "cause not labelled"
    where = label.pod or label.service or label.node
    return f"injected {label.fault_type} at {where}"


def _log_changes(incident: Any, label: Any, n: int) -> Iterator[tuple[str, str, str, str]]:
    logs = incident.logs
    baseline = incident.baseline.logs if incident.baseline is not None else None
    if logs is None or not len(logs) or baseline is None or not len(baseline):
        return
    minutes_now = max(1e-9, (logs["timestamp"].max() - logs["timestamp"].min()).total_seconds() / 60)
    minutes_before = max(1e-9, (baseline["timestamp"].max() - baseline["timestamp"].min()).total_seconds() / 60)
    now = logs.assign(template=logs["message"].astype(str).map(_template))
    before = baseline.assign(template=baseline["message"].astype(str).map(_template))
    rate_now = now.groupby(["service", "template"]).size() / minutes_now
    rate_before = before.groupby(["service", "template"]).size() / minutes_before
    rates = pd.concat({"before": rate_before, "now": rate_now}, axis=1).fillna(0.0)
    rates["change"] = (rates["now"] - rates["before"]).abs() / (rates["before"] + 1.0)
    if label is not None:
        # "Why" is the injected fault only for services it reached; elsewhere a change is noise.
        affected = {label.service, *(label.propagation_path or [])}
        rates = rates[rates.index.get_level_values("service").isin(affected)]
    rates = rates[(rates["now"] + rates["before"]) * minutes_now >= _MIN_LINES]
    best = rates.sort_values("change", ascending=False).groupby(level="service").head(1)
    for (service, template), row in best.sort_values("change", ascending=False).head(n).iterrows():
        if row["change"] < 0.5:
            break
        lines = now[(now["service"] == service) & (now["template"] == template)]
        anchor = lines["timestamp"].iloc[len(lines) // 2] if len(lines) else now["timestamp"].iloc[0]
        window = now[now["service"] == service].sort_values("timestamp")
        window = window[window["timestamp"] >= anchor].head(_LOG_WINDOW)
        text = "\n".join((window["timestamp"].dt.strftime("%H:%M:%S") + " " + window["level"].astype(str) + " "
                          + window["message"].astype(str)).tolist())
        direction = "rose" if row["now"] > row["before"] else "fell"
        finding = (f"{service}: '{template}' {direction} from {row['before']:.1f} to {row['now']:.1f} lines/min; "
                   f"{_cause(label)}")
        yield "instruct_log_change", str(service), text, finding


def _slow_calls(incident: Any, n: int, rng: random.Random) -> Iterator[tuple[str, str, str, str]]:
    spans = incident.spans
    if spans is None or not len(spans):
        return
    roots = spans[spans["parent_span_id"].isna()].sort_values("duration", ascending=False)
    slowest = roots["trace_id"].head(max(n * 4, n)).tolist()
    for trace_id in rng.sample(slowest, min(n, len(slowest))):
        trace = spans[spans["trace_id"] == trace_id]
        children = trace.groupby("parent_span_id")["duration"].sum()
        self_time = trace["duration"] - trace["span_id"].map(children).fillna(0.0)
        worst = trace.loc[self_time.idxmax()]
        finding = (f"{worst['service']} {worst['operation']}: {self_time.max():.1f} ms self time of "
                   f"{worst['duration']:.1f} ms (status {worst['status']})")
        yield "instruct_slow_call", str(worst["service"]), render_trace(trace), finding


def _metric_shifts(incident: Any, n: int) -> Iterator[tuple[str, str, str, str]]:
    metrics = incident.metrics
    baseline = incident.baseline.metrics if incident.baseline is not None else None
    if metrics is None or not len(metrics) or baseline is None or not len(baseline):
        return
    now = metrics.groupby(["service", "metric"])["value"].mean()
    stats = baseline.groupby(["service", "metric"])["value"].agg(["mean", "std"])
    joined = stats.join(now.rename("now"), how="inner").dropna(subset=["mean", "now"])
    scale = joined["std"].fillna(0.0) + joined["mean"].abs() * 0.01 + 1e-9
    joined["z"] = (joined["now"] - joined["mean"]) / scale
    best = joined.reindex(joined["z"].abs().sort_values(ascending=False).index).groupby(level="service").head(1)
    for (service, metric), row in best.head(n).iterrows():
        if abs(row["z"]) < 3.0:
            break
        series = metrics[metrics["service"] == service]
        shown = [metric, *[m for m in series["metric"].unique() if m != metric][:3]]
        times = sorted(series["timestamp"].unique())[-4:]
        window = series[series["metric"].isin(shown) & series["timestamp"].isin(set(times))]
        window = window.sort_values(["timestamp", "metric"])
        direction = "up" if row["z"] > 0 else "down"
        spread = (f"{abs(row['z']):.1f} baseline std" if row["std"] > 0 else "constant before")
        finding = (f"{metric} of {service} went {direction}: mean {row['now']:.4g} vs {row['mean']:.4g} before "
                   f"({spread})")
        yield "instruct_metric_shift", str(service), render_metrics(window), finding


def example_text(example: TaskExample) -> str:
    """The text of an example that a contamination check compares (input and answer)."""
    return f"{example.input}\n{example.target}"


def to_record(example: TaskExample) -> dict[str, Any]:
    return {"task": example.task, "input": example.input, "target": example.target, "meta": example.meta}

