"""Oracle labels: which frozen expert does each held-out request best.

Every expert answers every request (greedy, batched per expert and task); each answer gets the task's
score; the label is the expert with the best score, and among tied experts the one that finds the
reference answer likeliest. Likelihoods of different tokenizers are compared per byte of the answer,
not per token: a token of one vocabulary is not a token of another.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zlib import crc32

from data_pipeline.examples import TaskExample
from experts.config import format_prompt

Scorer = Callable[[str, list[str], list[TaskExample]], float]
"""`score(task, predictions, examples) -> float`, higher is better (the task registry's scoring)."""
Progress = Callable[[str], None]

_TIE = 1e-9


@dataclass(frozen=True)
class OracleRecord:
    """One held-out request, every expert's answer and score, and the best expert (the label)."""

    example: TaskExample
    predictions: dict[str, str]
    """Each expert's greedy answer."""
    scores: dict[str, float]
    """Task score of each expert's answer on this request alone."""
    label: str
    """The oracle expert."""
    nll_per_byte: dict[str, float]
    """Negative log-likelihood per answer byte of the reference, for the experts tied at the best score."""


def default_scorer() -> Scorer:
    from experts.tasks import score

    return score


def nll_per_byte(expert: Any, prompt: str, answer: str, *, task: str | None) -> float:
    """Negative log-likelihood of `answer` per UTF-8 byte (eos counted as one), comparable across tokenizers.

    Experts without `answer_loss` (remote ones) get +inf: they can be chosen, never preferred on likelihood.
    """
    answer_loss = getattr(expert, "answer_loss", None)
    tokenizer = getattr(expert, "tokenizer", None)
    if answer_loss is None or tokenizer is None:
        return math.inf
    n_tokens = len(tokenizer.encode(answer, eos=True))
    return float(answer_loss(prompt, answer, task=task)) * n_tokens / (len(answer.encode("utf-8")) + 1)


def answer_budget(expert: Any, references: Sequence[str], *, cap: int) -> int:
    """New tokens to generate for a task: its longest training answer in the expert's tokens (and eos), capped.

    Budgets come from training answers, never held-out ones; without any, the cap.
    """
    tokenizer = getattr(expert, "tokenizer", None)
    if tokenizer is None or not references:
        return cap
    return max(1, min(cap, max(len(tokenizer.encode(r)) for r in references) + 1))


def task_budgets(experts: Mapping[str, Any], references: Mapping[str, Sequence[str]], *, cap: int,
                 ) -> dict[str, int]:
    """Task -> new tokens to generate: the largest budget any expert needs for the task's training answers."""
    return {task: max(answer_budget(e, refs, cap=cap) for e in experts.values()) for task, refs in references.items()}


def fit_prompt(expert: Any, text: str, *, task: str | None, max_new_tokens: int) -> str:
    """`text` cut from its start so that the formatted prompt and `max_new_tokens` fit the expert's context.

    The expert itself keeps the end of a prompt that is too long but then may have no room left to answer;
    this leaves the room, as the experts' own scoring does (`experts.build.answer_examples`).
    """
    tokenizer, config = getattr(expert, "tokenizer", None), getattr(expert, "config", None)
    if tokenizer is None or config is None:
        return text
    header = len(tokenizer.encode(format_prompt(task, "") if task is not None else "", bos=True))
    room = max(1, config.model.max_seq_len - header - max_new_tokens)
    ids = tokenizer.encode(text)
    return text if len(ids) <= room else tokenizer.decode(ids[-room:])


def generate_all(expert: Any, examples: Sequence[TaskExample], *, budgets: Mapping[str, int] | None = None,
                 batch_size: int = 32, max_new_tokens: int = 96) -> list[str]:
    """The expert's greedy answer to every example, batched per task and by prompt length."""
    answers: list[str] = [""] * len(examples)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_task[ex.task].append(i)
    for task, indices in by_task.items():
        budget = (budgets or {}).get(task, max_new_tokens)
        indices = sorted(indices, key=lambda i: len(examples[i].input))
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            prompts = [fit_prompt(expert, examples[i].input, task=task, max_new_tokens=budget) for i in chunk]
            for i, out in zip(chunk, expert.generate_batch(prompts, task=task, max_new_tokens=budget), strict=True):
                answers[i] = out.text
    return answers


def label_requests(experts: Mapping[str, Any], examples: Sequence[TaskExample], *,
                   scorer: Scorer | None = None, references: Mapping[str, Sequence[str]] | None = None,
                   batch_size: int = 32, max_new_tokens: int = 96,
                   progress: Progress | None = None) -> list[OracleRecord]:
    """Oracle records for `examples` (held-out requests the experts never trained on).

    `references` (task -> training answers) sets each task's answer budget, the same for every expert (the
    largest any of them needs), as FlipMoE will use; without it, `max_new_tokens`.
    """
    score = scorer or default_scorer()
    budgets = task_budgets(experts, references or {}, cap=max_new_tokens)
    predictions: dict[str, list[str]] = {}
    for name, expert in experts.items():
        if progress:
            progress(f"oracle: {name} answers {len(examples)} held-out requests")
        predictions[name] = generate_all(expert, examples, budgets=budgets, batch_size=batch_size,
                                         max_new_tokens=max_new_tokens)
    records = []
    for i, ex in enumerate(examples):
        scores = {name: float(score(ex.task, [predictions[name][i]], [ex])) for name in experts}
        best = max(scores.values())
        tied = [name for name, s in scores.items() if s >= best - _TIE]
        nll = ({name: nll_per_byte(experts[name], ex.input, ex.target, task=ex.task) for name in tied}
               if len(tied) > 1 else {})
        label = min(tied, key=lambda name: nll[name]) if nll else tied[0]
        records.append(OracleRecord(example=ex, predictions={n: predictions[n][i] for n in experts},
                                    scores=scores, label=label, nll_per_byte=nll))
    return records


def split_records(records: Sequence[OracleRecord], *, test_fraction: float = 0.5,
                  ) -> tuple[list[OracleRecord], list[OracleRecord]]:
    """(router-train, router-test): a stable split by a hash of task and request, the same on every run."""
    train: list[OracleRecord] = []
    test: list[OracleRecord] = []
    for record in records:
        key = f"{record.example.task}\x00{record.example.input}".encode()
        (test if crc32(key) % 1000 < test_fraction * 1000 else train).append(record)
    return train, test
