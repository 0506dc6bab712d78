"""The nine expert tasks (`experts.tasks.TASKS`) on their held-out split, as evaluation tasks.

Items are the families' own held-out examples (chaos seeds >= 600000, LogHub lines of the held-out
hash split), so an expert is judged here on exactly what its card reports, next to every other model.
Label and template tasks keep the expert metric (`exact`, `token_f1`); the two summary tasks are
scored like every summary here (normalised ROUGE-2 with the hallucination gate). `log_template`'s
references are LogHub's own templates (real); the others' come from the chaos gym (`log_level` mixes
LogHub and chaos lines; `log_level_loghub` is its real-only counterpart).
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.tasks._core import EvalItem, EvalTask, exact_scorer, summary_scorer, token_f1_scorer
from eval.tasks._data import EvalData, take
from experts.sources import digest

_CATEGORY = {
    "log_template": "log_understanding", "log_level": "log_understanding",
    "log_change_summary": "log_metric_summarisation", "metric_pattern": "metric_timeseries",
    "metric_describe": "metric_timeseries", "trace_slow_path": "trace_summary",
    "trace_error_source": "trace_summary", "exception_cause": "code_bugs_exceptions",
    "config_key": "cloud_devops",
}
_FORMAT = {
    "log_template": "one LogHub log message", "log_level": "one log message without its header",
    "log_change_summary": "a service's template counts before and during an incident",
    "metric_pattern": "a metric series (name, service, values)", "metric_describe": "a metric series",
    "trace_slow_path": "a rendered trace tree", "trace_error_source": "a rendered failing trace",
    "exception_cause": "a service's exception with its stack trace",
    "config_key": "a service's settings and a client error",
}
_REAL = {"log_template"}
"""Expert tasks whose references are independent labels of real data (LogHub's templates)."""
_BUDGET = {"log_template": 48, "log_level": 4, "log_change_summary": 96, "metric_pattern": 6,
           "metric_describe": 64, "trace_slow_path": 32, "trace_error_source": 8, "exception_cause": 32,
           "config_key": 8}


def expert_tasks() -> list[EvalTask]:
    from experts.tasks import TASKS, rule_baselines

    tasks = []
    for name, spec in TASKS.items():
        summary = spec.metric == "rouge2"
        tasks.append(EvalTask(
            name=name, category=_CATEGORY[name], description=spec.description, input_format=_FORMAT[name],
            metric="normalised_rouge2+gate" if summary else spec.metric,
            build=_builder(spec.family, name), rule=_rule(name, rule_baselines),
            score=summary_scorer() if summary else (token_f1_scorer() if spec.metric == "token_f1" else exact_scorer()),
            source=f"experts:{spec.family}", ground_truth="real" if name in _REAL else "chaos",
            max_new_tokens=_BUDGET.get(name, 32),
            notes="the expert's own held-out split"))
    return tasks


def _builder(family: str, task: str):  # type: ignore[no-untyped-def]
    def build(data: EvalData) -> list[EvalItem]:
        examples = data.expert_heldout(family).get(task, [])
        return [EvalItem(id=f"{task}-{digest(e.input)[:10]}", input=e.input,
                         references=tuple(dict.fromkeys((e.target, *e.references))),
                         meta={"source": e.meta.get("source", ""), "split": "heldout"})
                for e in take(examples, data.config.max_items)]
    return build


def _rule(task: str, rule_baselines):  # type: ignore[no-untyped-def]
    def rule(items: Sequence[EvalItem]) -> list[str]:
        return rule_baselines(task, [item.input for item in items])
    return rule
