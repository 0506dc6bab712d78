"""Task metrics, each normalised to [0, 1]: pure functions over plain data.

Text metrics shared with expert training (`exact_match`, `token_f1`, `rouge2`) live in
`experts.scoring`, so a task scored here and during training gets one score; this module adds:

- classification: accuracy, F1 / macro-F1;
- summaries: ROUGE-2 (the `rouge-score` package) normalised by inter-reference agreement — the mean
  ROUGE-2 of the output against the references divided by the mean pairwise ROUGE-2 among the
  references, capped at 1 (the Flip report's protocol: a model cannot be asked to agree with the
  references more than they agree with each other);
- hallucination: entities in the output absent from the input; more than `max_unknown` (2) -> 0;
- generation of queries and code: execution checks (SQL on SQLite, PromQL on a Prometheus server);
- forecasts: MAPE turned into a score, max(0, 1 - MAPE);
- localisation: A@k and MRR.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import combinations

from experts.scoring import rouge2

# Entities a hallucination check looks for: names with digits, dashes or dots (pods, hosts, ids),
# snake_case metric names, IPs, ports — the tokens a model can invent; plain words are not checked.
_ENTITY = re.compile(r"(?<![\w.-])(?:\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?|[A-Za-z][\w]*(?:[-_.][\w]+)+|[A-Za-z]+\d[\w]*)"
                     r"(?![\w-])")


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Macro-averaged F1 over the labels that occur in the references."""
    labels = sorted(set(references))
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(p == label and r == label for p, r in zip(predictions, references, strict=True))
        fp = sum(p == label and r != label for p, r in zip(predictions, references, strict=True))
        fn = sum(p != label and r == label for p, r in zip(predictions, references, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def reference_agreement(references: Sequence[str]) -> float:
    """Mean pairwise ROUGE-2 among the references (1.0 when there is only one)."""
    pairs = list(combinations(references, 2))
    if not pairs:
        return 1.0
    return sum(rouge2(a, b) for a, b in pairs) / len(pairs)


def normalised_rouge2(prediction: str, references: Sequence[str]) -> float:
    """Mean ROUGE-2 against the references ÷ their mutual agreement, capped at 1."""
    if not references:
        raise ValueError("normalised ROUGE-2 needs at least one reference")
    mean = sum(rouge2(prediction, r) for r in references) / len(references)
    agreement = reference_agreement(references)
    return min(1.0, mean / agreement) if agreement > 0 else float(mean > 0)


def entities(text: str) -> set[str]:
    return {m.group(0).rstrip(".") for m in _ENTITY.finditer(text)}


def unknown_entities(output: str, source: str) -> set[str]:
    """Entities named in `output` that appear nowhere in `source` (case-insensitive substring test)."""
    haystack = source.lower()
    return {e for e in entities(output) if e.lower() not in haystack}


def hallucination_gate(score: float, output: str, source: str, *, max_unknown: int = 2) -> float:
    """`score`, or 0 when the output names more than `max_unknown` entities absent from the input."""
    return 0.0 if len(unknown_entities(output, source)) > max_unknown else score


def mape_score(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """max(0, 1 - MAPE) over the points whose actual value is not zero."""
    pairs = [(p, a) for p, a in zip(predicted, actual, strict=False) if a != 0]
    if not pairs or len(predicted) < len(actual):
        return 0.0
    mape = sum(abs(p - a) / abs(a) for p, a in pairs) / len(pairs)
    return max(0.0, 1.0 - mape)


def parse_numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]


def sql_execution_match(query: str, reference: str, schema_sql: str) -> float:
    """1 when `query` runs on an in-memory SQLite built from `schema_sql` and returns the reference's rows."""
    with sqlite3.connect(":memory:") as db:
        db.executescript(schema_sql)
        expected = sorted(map(tuple, db.execute(reference).fetchall()))
        try:
            got = sorted(map(tuple, db.execute(query).fetchall()))
        except sqlite3.Error:
            return 0.0
    return float(got == expected)


def accuracy_at_k(ranked: Sequence[str], truth: str, k: int) -> float:
    return float(truth in list(ranked)[:k])


def reciprocal_rank(ranked: Iterable[str], truth: str) -> float:
    for rank, name in enumerate(ranked, start=1):
        if name == truth:
            return 1.0 / rank
    return 0.0
