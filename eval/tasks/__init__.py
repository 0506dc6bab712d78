"""The evaluation task registry: 30+ tasks over the Flip report's categories, plus localisation and
fault-type diagnosis.

```python
from eval.tasks import EvalData, get_task, tasks
task = get_task("log_ner")
items = task.build(EvalData())          # held-out items, deterministic
task.score(task.rule(items), items)     # {"score": ..., ...}
```

Suites: `all`, a category name (`log_understanding`, ...), `experts` (the nine expert tasks),
`real` (the tasks whose references are independent labels of real data sets), `chaos` (the others),
`quick` (a few cheap tasks that need no simulation beyond the experts' four held-out incidents), or a
comma-separated list of task names.
"""

from __future__ import annotations

import functools

from eval.tasks._core import CATEGORIES, EvalItem, EvalTask
from eval.tasks._data import EvalConfig, EvalData
from flipmoe.errors import FlipmoeInputError

__all__ = ["CATEGORIES", "EvalConfig", "EvalData", "EvalItem", "EvalTask", "get_task", "suite", "tasks"]

QUICK = ("log_level", "log_ner", "exception_kind", "runtime_from_stack", "db_error_cause", "blast_radius",
         "sql_generation", "promql_generation", "trace_bottleneck", "latency_forecast")


@functools.cache
def _registry() -> dict[str, EvalTask]:
    from eval.tasks.code import code_tasks
    from eval.tasks.expert_tasks import expert_tasks
    from eval.tasks.incidents import incident_tasks
    from eval.tasks.logs import log_tasks
    from eval.tasks.queries import query_tasks
    from eval.tasks.real import real_tasks
    from eval.tasks.traces import trace_tasks

    registry: dict[str, EvalTask] = {}
    for task in (*expert_tasks(), *log_tasks(), *code_tasks(), *trace_tasks(), *query_tasks(), *incident_tasks(),
                 *real_tasks()):
        if task.name in registry:
            raise ValueError(f"evaluation task {task.name!r} registered twice")
        registry[task.name] = task
    return dict(sorted(registry.items(), key=lambda kv: (list(CATEGORIES).index(kv[1].category), kv[0])))


def tasks() -> list[EvalTask]:
    """Every task, grouped by category."""
    return list(_registry().values())


def get_task(name: str) -> EvalTask:
    registry = _registry()
    if name not in registry:
        raise FlipmoeInputError(f"unknown evaluation task {name!r}", hint="'flipmoe eval list' shows them")
    return registry[name]


def suite(name: str) -> list[EvalTask]:
    """The tasks of a suite: all, a category, experts, real, chaos, quick, or task names separated by commas."""
    registry = _registry()
    if name == "all":
        return tasks()
    if name in CATEGORIES:
        return [t for t in registry.values() if t.category == name]
    if name == "experts":
        return [t for t in registry.values() if t.source.startswith("experts:")]
    if name in ("real", "chaos"):
        return [t for t in registry.values() if t.ground_truth == name]
    if name == "quick":
        return [registry[n] for n in QUICK]
    names = [n.strip() for n in name.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown or not names:
        raise FlipmoeInputError(f"unknown suite or task(s): {', '.join(unknown) or name!r}",
                                hint=f"use all, experts, real, chaos, quick, a category ({', '.join(CATEGORIES)}) "
                                     "or task names")
    return [registry[n] for n in names]
