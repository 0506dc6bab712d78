"""The expert families: name -> module holding its `SPEC`, imported only when asked for.

Every family folder (`experts/logs/`, `experts/metrics/`, ...) has the same files: `spec.py` (the
`ExpertSpec`: objective, tokenizer settings, tasks), `corpus.py` (its pretraining text) and `tasks.py`
(its task data). Adding a family is adding a folder and a line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from experts.config import TokenizerConfig
from experts.data import TaskExample
from flipmoe.errors import FlipmoeInputError

EXPERT_FAMILIES: dict[str, str] = {
    "logs": "experts.logs.spec",
    "metrics": "experts.metrics.spec",
    "traces": "experts.traces.spec",
    "code": "experts.code.spec",
}
"""Default experts, each trained at nano size by `flipmoe train expert --expert NAME`."""


@dataclass(frozen=True, kw_only=True)
class ExpertSpec:
    """What makes a family different: its data, its objective, how its tokenizer splits text."""

    family: str
    """Registry name."""
    description: str
    """One line for `--help` and the training card."""
    objective: str
    """Pretraining objective (`experts.config.OBJECTIVES`)."""
    tokenizer: TokenizerConfig
    """Tokenizer settings (digits split for numeric data, structure symbols)."""
    tasks: tuple[str, ...]
    """Tasks the family is fine-tuned and scored on."""
    corpus: Callable[..., list[str]]
    """`corpus(sources) -> texts`: the family's pretraining documents."""
    task_data: Callable[..., dict[str, list[TaskExample]]]
    """`task_data(sources, split) -> {task: examples}` for split "train" or "heldout"."""


def expert_families() -> Sequence[str]:
    return tuple(EXPERT_FAMILIES)


def get_spec(family: str) -> ExpertSpec:
    if family not in EXPERT_FAMILIES:
        raise FlipmoeInputError(f"unknown expert family {family!r}",
                                hint=f"choose one of {', '.join(EXPERT_FAMILIES)}")
    spec: Any = importlib.import_module(EXPERT_FAMILIES[family]).SPEC
    return spec
