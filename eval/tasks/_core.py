"""The types every evaluation task shares: an item, a task, and how a task's answers are scored.

A task is data plus a metric: `build(data)` makes its held-out items (deterministically: the same
`EvalData` gives the same items, in the same order), `rule(items)` is its rule/template baseline, and
`score(predictions, items)` returns named figures in [0, 1], the main one under "score". Items are
plain text in, plain text out, so any model that answers prompts answers every task. The rule baseline
reads exactly what the models read (`item.input`): equal inputs, so a gap between them is the
models', not the inputs'. An item may also carry a `payload` (the incident it came from) that only a
task's `toolkit` baseline reads — the platform's analysis path on the whole incident, reported as its
own model because it sees more than the others — and that is never written out.

Each task says where its references come from (`ground_truth`): `real` — independent labels of real
data sets (LogHub's templates, levels and alert labels, the TrainTicket and TVDiag fault labels) that
no baseline here computes; `chaos` — the chaos gym's ground truth or a generator's, kept only where no
real ground truth exists (a rule that inverts the generator can score 1 by construction there).
"""

from __future__ import annotations

import re
from collections import Counter
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
GROUND_TRUTHS = ("real", "chaos")


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
    """Where the items come from: chaos, loghub, chaos-code, tvdiag, nezha, experts:<family>."""
    ground_truth: str = "chaos"
    """Where the references come from: `real` (independent labels of a real data set) or `chaos`
    (the chaos gym's or a generator's ground truth)."""
    toolkit: Rule | None = None
    """Baseline that reads the item's payload (the whole incident), not only its input; None: the rule."""
    requires: str = ""
    """The data a task needs beyond the chaos gym, said when it is skipped for want of it."""
    max_new_tokens: int = 32
    """Answer budget for generative models."""
    size: int = 40
    """Items at most (the held-out set may be smaller when the data is)."""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"task {self.name!r}: unknown category {self.category!r}")
        if self.ground_truth not in GROUND_TRUTHS:
            raise ValueError(f"task {self.name!r}: ground_truth must be one of {', '.join(GROUND_TRUTHS)}")


# --- scorers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanScorer:
    """A scorer that averages a per-item score; `values` exposes the item scores, so a bootstrap
    resamples them directly instead of re-scoring every resample."""

    fn: Callable[[str, EvalItem], float]

    def values(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> list[float]:
        _check(predictions, items)
        return [self.fn(p, item) for p, item in zip(predictions, items, strict=True)]

    def __call__(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        values = self.values(predictions, items)
        return {"score": sum(values) / len(values) if values else 0.0}


def per_item(fn: Callable[[str, EvalItem], float]) -> Scorer:
    """A scorer that averages a per-item score."""
    return MeanScorer(fn)


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


@dataclass(frozen=True)
class SummaryScorer:
    """Normalised ROUGE-2 (by the references' mutual agreement, capped at 1), 0 when the summary names
    more than two entities absent from its source; also reports raw ROUGE-2 and the gated share."""

    def values(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> list[float]:
        return [v for v, _, _ in self._scored(predictions, items)]

    def __call__(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        scored = self._scored(predictions, items)
        n = max(1, len(items))
        return {"score": sum(v for v, _, _ in scored) / n, "rouge2": sum(r for _, r, _ in scored) / n,
                "hallucinated": sum(g for _, _, g in scored) / n}

    @staticmethod
    def _scored(predictions: Sequence[str], items: Sequence[EvalItem]) -> list[tuple[float, float, bool]]:
        """(gated normalised ROUGE-2, raw ROUGE-2, gated) per item."""
        _check(predictions, items)
        out = []
        for p, item in zip(predictions, items, strict=True):
            value = metrics.normalised_rouge2(p, item.references)
            kept = metrics.hallucination_gate(value, p, item.source_text)
            raw = sum(scoring.rouge2(p, r) for r in item.references) / len(item.references)
            out.append((kept, raw, kept == 0.0 and value > 0.0))
        return out


def summary_scorer() -> Scorer:
    return SummaryScorer()


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


@dataclass(frozen=True)
class RankingScorer:
    """A@k and MRR of comma-separated rankings; the main figure is A@(first k)."""

    ks: tuple[int, ...] = (1, 3, 5)

    def values(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> list[float]:
        return [metrics.accuracy_at_k(r, t, self.ks[0]) for r, t in self._pairs(predictions, items)]

    def __call__(self, predictions: Sequence[str], items: Sequence[EvalItem]) -> dict[str, float]:
        pairs = self._pairs(predictions, items)
        n = max(1, len(items))
        out = {f"A@{k}": sum(metrics.accuracy_at_k(r, t, k) for r, t in pairs) / n for k in self.ks}
        out["MRR"] = sum(metrics.reciprocal_rank(r, t) for r, t in pairs) / n
        return {"score": out[f"A@{self.ks[0]}"], **out}

    @staticmethod
    def _pairs(predictions: Sequence[str], items: Sequence[EvalItem]) -> list[tuple[list[str], str]]:
        _check(predictions, items)
        return [(_distinct([r.strip() for r in p.split(",") if r.strip()]), item.references[0])
                for p, item in zip(predictions, items, strict=True)]


def ranking_scorer(ks: Sequence[int] = (1, 3, 5)) -> Scorer:
    """A@k and MRR of comma-separated rankings; the main figure is A@1."""
    return RankingScorer(tuple(ks))


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

    def clusters(items: Sequence[EvalItem]) -> list[str]:
        # Grouping accuracy depends on whole groups: resampling single lines would drop some lines of a
        # template and make one-off answers look right. The bootstrap resamples whole templates instead.
        return [item.references[0] for item in items]

    score.clusters = clusters  # type: ignore[attr-defined]
    return score


def chance_level(task: EvalTask, items: Sequence[EvalItem], *, candidates: int = 10) -> float:
    """The best main figure an input-blind model gets: the task's score of the same answer to every
    item, over the `candidates` most common references and the empty answer. A model at or below it
    has learned nothing from the inputs."""
    common = [r for r, _ in Counter(item.references[0] for item in items).most_common(candidates)]
    return max(task.score([answer] * len(items), items)["score"] for answer in ["", *common]) if items else 0.0


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
