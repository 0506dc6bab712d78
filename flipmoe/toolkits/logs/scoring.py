"""Log-parsing accuracy (LogPAI definitions), pure functions for benchmarks and evaluation."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence


def grouping_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group.

    `truth` and `predicted` label each line with a group (true template or event id; predicted
    template id). A line counts as right only when the two groups it belongs to are the same set.
    """
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    # The lines of a (true, predicted) pair are right when the pair holds all lines of both groups.
    pairs = Counter(zip(truth, predicted, strict=True))
    true_sizes, predicted_sizes = Counter(truth), Counter(predicted)
    right = sum(count for (t, p), count in pairs.items() if count == true_sizes[t] == predicted_sizes[p])
    return right / len(truth)


def parsing_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of lines whose predicted template equals the true one, up to whitespace."""
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    right = sum(1 for t, p in zip(truth, predicted, strict=True) if _squash(t) == _squash(p))
    return right / len(truth)


def template_accuracy(truth: Sequence[str], predicted_ids: Sequence[Hashable],
                      predicted: Sequence[str]) -> float:
    """FTA (Khan et al., 2022): the F1 of template identification.

    A predicted template is right when its group holds exactly the lines of one true template and
    its text equals that template up to whitespace; precision is over the predicted templates,
    recall over the true ones.
    """
    _check_lengths(truth, predicted_ids)
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    true_groups = _groups(truth)
    predicted_groups = _groups(predicted_ids)
    text = {template_id: template for template_id, template in zip(predicted_ids, predicted, strict=True)}
    right = 0
    for template_id, lines in predicted_groups.items():
        true_template = truth[next(iter(lines))]
        if true_groups[true_template] == lines and _squash(text[template_id]) == _squash(true_template):
            right += 1
    precision, recall = right / len(predicted_groups), right / len(true_groups)
    return 0.0 if right == 0 else 2 * precision * recall / (precision + recall)


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
