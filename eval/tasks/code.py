"""Code, bugs and exceptions, and reading stack traces (software-engineering reasoning).

All three read the code expert's held-out exception inputs (stack traces of random systems of the
evaluation seeds, whose handlers and files no training run saw), asking other questions of them:

- `exception_kind`: -> `bug` (a null dereference injected into the handler) or `validation` (the
  request was rejected by input validation). Macro-F1. Baseline: validation keywords.
- `exception_location`: -> `path:line` of the faulting line in the code tree. Exact. Baseline: the
  first application frame, under the service's folder (stacks name paths without it).
- `runtime_from_stack`: -> the service's runtime (java, go, python, node, csharp). Macro-F1.
  Baseline: frame syntax.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from eval.tasks._core import EvalItem, EvalTask, exact_scorer, macro_f1_scorer
from eval.tasks._data import EvalData
from experts.sources import balanced, digest


def code_tasks() -> list[EvalTask]:
    return [
        EvalTask(name="exception_kind", category="code_bugs_exceptions", source="chaos-code",
                 description="exception and stack trace -> bug (null dereference) or validation",
                 input_format="a service's exception with its stack trace", metric="macro_f1",
                 build=_kind_items, rule=_kind_rule, score=macro_f1_scorer(), max_new_tokens=4),
        EvalTask(name="exception_location", category="code_bugs_exceptions", source="chaos-code",
                 description="exception and stack trace -> path:line of the faulting line in the code tree",
                 input_format="a service's exception with its stack trace", metric="exact",
                 build=_location_items, rule=_location_rule, score=exact_scorer(), max_new_tokens=24),
        EvalTask(name="runtime_from_stack", category="software_engineering", source="chaos-code",
                 description="stack trace -> the runtime that wrote it (java, go, python, node, csharp)",
                 input_format="a service's exception with its stack trace", metric="macro_f1",
                 build=_runtime_items, rule=_runtime_rule, score=macro_f1_scorer(), max_new_tokens=4),
    ]


def _exceptions(data: EvalData) -> list[tuple[str, str, str]]:
    """(input, target, source) of the code expert's held-out `exception_cause` examples."""
    return [(e.input, e.target, str(e.meta.get("source", "")))
            for e in data.expert_heldout("code").get("exception_cause", [])]


def _kind_items(data: EvalData) -> list[EvalItem]:
    from experts.code.tasks import BUG

    items = [EvalItem(id=f"kind-{digest(text)[:10]}", input=text,
                      references=("bug" if target.startswith(BUG) else "validation",),
                      meta={"source": source, "split": "heldout"})
             for text, target, source in _exceptions(data)]
    return balanced(items, lambda item: item.references[0], data.config.max_items)


def _kind_rule(items: Sequence[EvalItem]) -> list[str]:
    from experts.code.tasks import BUG, exception_baseline

    return ["bug" if a.startswith(BUG) else "validation" for a in exception_baseline([i.input for i in items])]


def _location_items(data: EvalData) -> list[EvalItem]:
    return [EvalItem(id=f"loc-{digest(text)[:10]}", input=text, references=(target.rsplit(" at ", 1)[-1],),
                     meta={"source": source, "split": "heldout"})
            for text, target, source in _exceptions(data)][: data.config.max_items]


def _location_rule(items: Sequence[EvalItem]) -> list[str]:
    from experts.code.tasks import exception_baseline

    answers = []
    for item, answer in zip(items, exception_baseline([i.input for i in items]), strict=True):
        where = answer.rsplit(" at ", 1)[-1] if " at " in answer else ""
        service = item.input.split("\n", 1)[0].removeprefix("service: ").strip()
        # Stacks name files relative to the service's folder; the tree has one folder per service.
        answers.append(where if not where or where.startswith(service + "/") else f"{service}/{where}")
    return answers


def _runtime_items(data: EvalData) -> list[EvalItem]:
    items = []
    for text, _target, source in _exceptions(data):
        seed = int(source.rsplit("@", 1)[-1]) if "@" in source else None
        service = text.split("\n", 1)[0].removeprefix("service: ").strip()
        if seed is None:
            continue
        items.append(EvalItem(id=f"rt-{digest(text)[:10]}", input=text, references=(_runtime(seed, service),),
                              meta={"source": source, "split": "heldout"}))
    return balanced(items, lambda item: item.references[0], data.config.max_items)


@functools.lru_cache(maxsize=64)
def _system(seed: int):  # type: ignore[no-untyped-def]
    from data_pipeline.chaos.systems import get_system

    return get_system("random", seed=seed)


def _runtime(seed: int, service: str) -> str:
    return str(_system(seed).service(service).runtime)


_RUNTIME_RULES = (
    ("java", re.compile(r"\tat [\w.$]+\([\w$]+\.java:\d+\)")),
    ("csharp", re.compile(r"ServerCallContext|\.cs:line \d+")),
    ("python", re.compile(r'File "[^"]+\.py", line \d+')),
    ("go", re.compile(r"goroutine \d+|\.go:\d+")),
    ("node", re.compile(r"\.(?:js|ts):\d+:\d+\)")),
)


def _runtime_rule(items: Sequence[EvalItem]) -> list[str]:
    return [next((name for name, rule in _RUNTIME_RULES if rule.search(item.input)), "java") for item in items]
