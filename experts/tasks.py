"""The task registry: every task an expert is fine-tuned and scored on, its metric and its rule baseline.

A task's data comes from its family (`experts/<family>/tasks.py`, `task_data(sources, split)`); this
module says how answers are scored and what a deterministic rule answers, so every expert's score
has a baseline measured on the same examples. Metrics:

- `exact`: the answer equals a reference (labels, templates, keys);
- `token_f1`: F1 of the whitespace tokens shared with the best reference (locations, paths);
- `rouge2`: ROUGE-2 F-measure against the best reference (sentences), via `rouge-score`.

The metrics live in `experts.scoring`, which the evaluation harness uses too; its docstring says how
answers are normalised before they are compared.

Baselines take a batch of inputs, because some rules learn from the batch they read (Drain mines
templates from all the lines it is given, as it would in production); `rule_baseline` answers one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from data_pipeline.examples import TaskExample
from experts.code import tasks as code_tasks
from experts.logs import tasks as logs_tasks
from experts.metrics import tasks as metrics_tasks
from experts.scoring import exact_match, rouge2, token_f1
from experts.traces import tasks as traces_tasks
from flipmoe.errors import FlipmoeInputError

Metric = Literal["exact", "token_f1", "rouge2"]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task: who answers it, how answers are scored, and what a rule answers."""

    name: str
    """Task name, as written in prompts (`<task>name<input>...`)."""
    family: str
    """Expert family whose data and expert serve it."""
    description: str
    """One line: input -> output."""
    metric: Metric
    """How a prediction is scored against the example's references."""
    baseline: Callable[[Sequence[str]], list[str]]
    """Deterministic rule or template: inputs -> answers."""


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(name="log_template", family="logs", metric="exact", baseline=logs_tasks.template_baseline,
             description="log line -> its template, variables written <*> (LogHub ground truth)"),
    TaskSpec(name="log_level", family="logs", metric="exact", baseline=logs_tasks.level_baseline,
             description="log message without its header -> severity (DEBUG, INFO, WARN, ERROR, FATAL)"),
    TaskSpec(name="log_change_summary", family="logs", metric="rouge2", baseline=logs_tasks.change_baseline,
             description="template counts of a service before and during an incident -> what changed"),
    TaskSpec(name="metric_pattern", family="metrics", metric="exact", baseline=metrics_tasks.pattern_baseline,
             description="metric series -> steady, spike, level_shift_up/down or trend_up/down"),
    TaskSpec(name="metric_describe", family="metrics", metric="rouge2", baseline=metrics_tasks.describe_baseline,
             description="metric series -> one sentence describing its shape and levels"),
    TaskSpec(name="trace_slow_path", family="traces", metric="exact", baseline=traces_tasks.slow_path_baseline,
             description="trace -> call path (services) down to the span with the most exclusive time"),
    TaskSpec(name="trace_error_source", family="traces", metric="exact",
             baseline=traces_tasks.error_source_baseline,
             description="failing trace of an incident -> the service where the fault was injected"),
    TaskSpec(name="exception_cause", family="code", metric="token_f1", baseline=code_tasks.exception_baseline,
             description="exception and stack trace -> kind of cause, handler and file:line"),
    TaskSpec(name="config_key", family="code", metric="exact", baseline=code_tasks.config_key_baseline,
             description="a service's settings and a client error -> the setting to check"),
)}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise FlipmoeInputError(f"unknown task {task!r}", hint=f"choose one of {', '.join(TASKS)}")
    return TASKS[task]


def rule_baselines(task: str, inputs: Sequence[str]) -> list[str]:
    """The rule baseline's answers to `inputs`, read as one batch."""
    return list(task_spec(task).baseline(inputs))


def rule_baseline(task: str, input: str) -> str:  # noqa: A002 - the task input, as in TaskExample
    """The rule baseline's answer to one input."""
    return rule_baselines(task, [input])[0]


def score(task: str, predictions: Sequence[str], examples: Sequence[TaskExample]) -> float:
    """Mean score in [0, 1] of `predictions` against the examples' references (best reference each)."""
    if len(predictions) != len(examples):
        raise FlipmoeInputError(f"{len(predictions)} predictions for {len(examples)} examples of {task!r}")
    if not examples:
        return 0.0
    metric = _METRICS[task_spec(task).metric]
    total = sum(max(metric(prediction, reference) for reference in (example.target, *example.references))
                for prediction, example in zip(predictions, examples, strict=True))
    return total / len(examples)


_METRICS: dict[str, Callable[[str, str], float]] = {"exact": exact_match, "token_f1": token_f1, "rouge2": rouge2}
