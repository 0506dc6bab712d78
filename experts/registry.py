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

from data_pipeline.examples import TaskExample
from experts.config import TokenizerConfig
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


def get_spec(family: str) -> ExpertSpec:
    if family not in EXPERT_FAMILIES:
        raise FlipmoeInputError(f"unknown expert family {family!r}",
                                hint=f"choose one of {', '.join(EXPERT_FAMILIES)}")
    spec: Any = importlib.import_module(EXPERT_FAMILIES[family]).SPEC
    return spec


class FamilyCatalog:
    """The registry as the data pipeline sees it (`data_pipeline.transform.FamilyCatalog`)."""

    def defaults(self, family: str) -> tuple[str, TokenizerConfig] | None:
        if family not in EXPERT_FAMILIES:
            return None
        spec = get_spec(family)
        return spec.objective, spec.tokenizer

    def heldout_texts(self, families: Sequence[str]) -> tuple[list[str], list[str]]:
        from experts.sources import Sources

        texts: list[str] = []
        notes: list[str] = []
        sources = Sources()
        for family in families:
            if family not in EXPERT_FAMILIES:
                notes.append(f"{family}: no such expert family, its held-out task data was not checked")
                continue
            for examples in get_spec(family).task_data(sources, "heldout").values():
                texts += [f"{e.input}\n{e.target}" for e in examples]
        return texts, notes


def catalog() -> FamilyCatalog:
    """The expert families, for `data_pipeline.pipeline.build(..., families=catalog())`."""
    return FamilyCatalog()
