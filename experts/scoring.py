"""Text metrics shared by expert training and the evaluation harness, so a task has one score.

Pure functions of (prediction, reference) -> [0, 1]. `exact_match` and `token_f1` compare the texts
after one normalisation, `normalise_answer`:

- whitespace: leading and trailing whitespace removed, inner runs of whitespace (spaces, tabs,
  newlines) collapsed to one space;
- punctuation: only one trailing full stop is dropped (models end answers with a sentence's full
  stop); every other character is kept, because answers are templates (`<*>`), paths and
  `file:line` locations, where punctuation is part of the answer;
- case: kept, because identifiers, paths and log templates are case-sensitive.

`rouge2` is the `rouge-score` package's ROUGE-2 F-measure with its Porter stemmer, on its own
tokenisation (lower-cased, punctuation dropped).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any


def normalise_answer(text: str) -> str:
    """`text` with whitespace trimmed and collapsed and one trailing full stop dropped; case kept."""
    collapsed = " ".join(text.split())
    return collapsed.removesuffix(".").rstrip()


def exact_match(prediction: str, reference: str) -> float:
    """1 when the two answers are equal after `normalise_answer`, else 0."""
    return float(normalise_answer(prediction) == normalise_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 over the whitespace tokens of the answers after `normalise_answer`."""
    predicted, expected = normalise_answer(prediction).split(), normalise_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge2(prediction: str, reference: str) -> float:
    """ROUGE-2 F-measure of `prediction` against `reference` (stemmed, via `rouge-score`)."""
    return float(_rouge_scorer().score(reference, prediction)["rouge2"].fmeasure)


@functools.cache
def _rouge_scorer() -> Any:
    # Building the scorer loads NLTK's stemmer; it is stateless between calls, so one per process.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
