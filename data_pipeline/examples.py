"""The plain data that flows into an expert's training: task examples and tokenized sequences.

Task examples are text (`TaskExample`: a task name, an input, a target and optional extra references);
objectives turn corpus text and task examples into `TrainingSequence`s — token ids plus labels, where
-100 marks positions that carry no loss — which the trainer batches. Both are pure data, so the
transforms that make them run anywhere (a test, a Ray worker, the data pipeline's shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
"""Label of a position that is not predicted (prompt tokens, padding, unmasked context)."""


@dataclass(frozen=True)
class TaskExample:
    """One supervised example: the expert reads `input` for `task` and should answer `target`."""

    task: str
    input: str
    target: str
    references: tuple[str, ...] = ()
    """Further acceptable answers (summaries have several); `target` is always the first reference."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """Provenance: source (chaos seed, shared file), split, difficulty."""


@dataclass(frozen=True)
class TrainingSequence:
    """One training row: token ids and the labels the loss is computed on (same length)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    difficulty: float = 0.0
    """Curriculum key: rows are ordered from easy to hard within a stage."""

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and labels ({len(self.labels)}) differ in length")

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)
