"""The types every evaluation task shares: an item, a task, and how a task's answers are scored.

A task is data plus a metric: `build(data)` makes its held-out items (deterministically: the same
`EvalData` gives the same items, in the same order), `rule(items)` is its rule/template baseline, and
`score(predictions, items)` returns named figures in [0, 1], the main one under "score". Items are
plain text in, plain text out, so any model that answers prompts answers every task; an item may
also carry a `payload` (the chaos incident it came from) that only rule baselines built on the
analysis toolkits use, and that is never written out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval import metrics
from experts import scoring

CATEGORIES: dict[str, str] = {
    "log_understanding": "Log understanding",
    "code_bugs_exceptions": "Code, bugs and exceptions",
    "software_engineering": "Software-engineering reasoning",
    "cloud_devops": "Cloud/DevOps reasoning",
    "trace_summary": "Trace summary",
    "database_debugging": "Database debugging",
    "log_metric_summarisation": "Log and metric summarisation",
    "metric_timeseries": "Metric time series",
    "localisation": "Root-cause localisation",
    "diagnosis": "Fault-type diagnosis",
}
"""The Flip report's categories, plus localisation and fault-type diagnosis."""


@dataclass(frozen=True, kw_only=True)
class EvalItem:
    """One held-out question: what the model reads, what counts as right, and where it came from."""

    id: str
    input: str
    references: tuple[str, ...]
    """Acceptable answers; summaries have several (their mutual agreement normalises ROUGE-2)."""
    context: str = ""
    """The text a summary may name entities from (hallucination gate); empty: the input."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """JSON-ready provenance: source (chaos seed, LogHub system), split, what the item needs to be scored."""
    payload: Any = field(default=None, compare=False, repr=False)
    """In-process only: the chaos sample behind the item, for toolkit baselines. Never serialised."""

    @property
    def source_text(self) -> str:
        return self.context or self.input


Scorer = Callable[[Sequence[str], Sequence[EvalItem]], dict[str, float]]
Builder = Callable[[Any], list[EvalItem]]
Rule = Callable[[Sequence[EvalItem]], list[str]]


@dataclass(frozen=True, kw_only=True)
class EvalTask:
    """One evaluation task."""

    name: str
    """Registry name; also the task name models are prompted with."""
    category: str
    """One of `CATEGORIES`."""
    description: str
    """One line: input -> output."""
    input_format: str
    """What an input looks like."""
    metric: str
    """Name of the main figure's metric, as `flipmoe eval list` shows it."""
    build: Builder
    """`build(EvalData) -> items` of the held-out split."""
    rule: Rule
    """Rule/template baseline: items -> answers."""
    score: Scorer
    """(predictions, items) -> {"score": main figure, ...other figures}, each in [0, 1]."""
    source: str = "chaos"
    """Where the items come from: chaos, loghub, chaos-code, experts:<family>."""
    max_new_tokens: int = 32
    """Answer budget for generative models."""
    size: int = 40
    """Items at most (the held-out set may be smaller when the data is)."""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"task {self.name!r}: unknown category {self.category!r}")


# --- scorers ----------------------------------------------------------------------------------------


def per_item(fn: Callable[[str, EvalItem], float]) -> Scorer:
    """A scorer that averages a per-item score."""
    def score(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        _check(predictions, items)
        values = [fn(p, item) for p, item in zip(predictions, items, strict=True)]
        return {"score": sum(values) / len(values) if values else 0.0}
    return score


def exact_scorer() -> Scorer:
    return per_item(lambda p, item: max(scoring.exact_match(p, r) for r in item.references))


def token_f1_scorer() -> Scorer:
    return per_item(lambda p, item: max(scoring.token_f1(p, r) for r in item.references))


def set_f1(prediction: str, reference: str, *, separator: str = ";") -> float:
    """F1 of the sets of `separator`-separated fields (order-free lists: entities, services)."""
    got = {f.strip().lower() for f in prediction.split(separator) if f.strip()}
    want = {f.strip().lower() for f in reference.split(separator) if f.strip()}
    if not got or not want:
        return float(got == want)
    common = len(got & want)
    return 0.0 if common == 0 else 2 * common / (len(got) + len(want))


def set_f1_scorer(separator: str = ";") -> Scorer:
    return per_item(lambda p, item: max(set_f1(p, r, separator=separator) for r in item.references))


def summary_scorer() -> Scorer:
    """Normalised ROUGE-2 (by the references' mutual agreement, capped at 1), 0 when the summary names
    more than two entities absent from its source; also reports raw ROUGE-2 and the gated share."""
    def score(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        _check(predictions, items)
        normalised, raw, gated = [], [], 0
        for p, item in zip(predictions, items, strict=True):
            value = metrics.normalised_rouge2(p, item.references)
            kept = metrics.hallucination_gate(value, p, item.source_text)
            gated += kept == 0.0 and value > 0.0
            normalised.append(kept)
            raw.append(sum(scoring.rouge2(p, r) for r in item.references) / len(item.references))
        n = max(1, len(items))
        return {"score": sum(normalised) / n, "rouge2": sum(raw) / n, "hallucinated": gated / n}
    return score


def macro_f1_scorer() -> Scorer:
    def score(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        _check(predictions, items)
        got = [_label(p) for p in predictions]
        want = [_label(item.references[0]) for item in items]
        accuracy = sum(g == w for g, w in zip(got, want, strict=True)) / max(1, len(items))
        return {"score": metrics.macro_f1(got, want), "accuracy": accuracy}
    return score


def mape_scorer() -> Scorer:
    return per_item(lambda p, item: metrics.mape_score(metrics.parse_numbers(p),
                                                        metrics.parse_numbers(item.references[0])))


def ranking_scorer(ks: Sequence[int] = (1, 3, 5)) -> Scorer:
    """A@k and MRR of comma-separated rankings; the main figure is A@1."""
    def score(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        _check(predictions, items)
        ranked = [_distinct([r.strip() for r in p.split(",") if r.strip()]) for p in predictions]
        truths = [item.references[0] for item in items]
        n = max(1, len(items))
        out = {f"A@{k}": sum(metrics.accuracy_at_k(r, t, k) for r, t in zip(ranked, truths, strict=True)) / n
               for k in ks}
        out["MRR"] = sum(metrics.reciprocal_rank(r, t) for r, t in zip(ranked, truths, strict=True)) / n
        return {"score": out[f"A@{ks[0]}"], **out}
    return score


def grouping_accuracy(templates: Sequence[str], truths: Sequence[str]) -> float:
    """Log parsing's grouping accuracy: the share of lines whose predicted group (lines given the same
    template) is exactly their true group."""
    predicted: dict[str, set[int]] = {}
    actual: dict[str, set[int]] = {}
    for i, (p, t) in enumerate(zip(templates, truths, strict=True)):
        predicted.setdefault(p.strip(), set()).add(i)
        actual.setdefault(t, set()).add(i)
    right = sum(predicted[p.strip()] == actual[t] for p, t in zip(templates, truths, strict=True))
    return right / len(truths) if truths else 0.0


def grouping_scorer() -> Scorer:
    def score(predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        _check(predictions, items)
        truths = [item.references[0] for item in items]
        exact = sum(scoring.exact_match(p, t) for p, t in zip(predictions, truths, strict=True))
        return {"score": grouping_accuracy(predictions, truths), "parsing_accuracy": exact / max(1, len(items))}
    return score


def _label(text: str) -> str:
    words = text.strip().split()
    return words[0].strip(".,;:").lower() if words else ""


def _distinct(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check(predictions: Sequence[str], items: Sequence[EvalItem]) -> None:
    if len(predictions) != len(items):
        raise ValueError(f"{len(predictions)} predictions for {len(items)} items")


def first_rule_match(rules: Sequence[tuple[str, re.Pattern[str]]], items: Sequence[EvalItem],
                     default: str) -> list[str]:
    """Rule baseline of keyword classifiers: the label of the first rule matching each input, else `default`."""
    return [next((label for label, rule in rules if rule.search(item.input)), default) for item in items]
