"""Log-parsing accuracy (LogPAI definitions), pure functions for benchmarks and evaluation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence


def grouping_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group.

    `truth` and `predicted` label each line with a group (true template or event id; predicted
    template id). A line counts as right only when the two groups it belongs to are the same set.
    """
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    true_groups = _groups(truth)
    predicted_groups = _groups(predicted)
    right = sum(1 for t, p in zip(truth, predicted, strict=True) if true_groups[t] == predicted_groups[p])
    return right / len(truth)


def parsing_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of lines whose predicted template equals the true one, up to whitespace."""
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    right = sum(1 for t, p in zip(truth, predicted, strict=True) if _squash(t) == _squash(p))
    return right / len(truth)


def _groups(labels: Sequence[Hashable]) -> dict[Hashable, frozenset[int]]:
    members: dict[Hashable, set[int]] = defaultdict(set)
    for index, label in enumerate(labels):
        members[label].add(index)
    return {label: frozenset(indices) for label, indices in members.items()}


def _squash(text: str) -> str:
    return " ".join(text.split())


def _check_lengths(truth: Sequence[object], predicted: Sequence[object]) -> None:
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} lines but predicted has {len(predicted)}")
