"""Measuring near-duplicate detection: a corpus with planted near-duplicates, and precision/recall of
detected pairs against exact Jaccard similarity of the same shingle sets.

A planted copy edits a base document at a random rate (words replaced, deleted or inserted, lines
dropped or swapped), so the planted pairs spread over Jaccard 0.4-1.0 and the threshold cuts through
them; the truth is computed, not assumed: every pair of documents whose exact Jaccard reaches the
threshold, planted or accidental.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from data_pipeline import dedup

_FILLER = ("alpha", "beta", "timeout", "retry", "cache", "node", "queue", "shard", "lease", "quorum")


def mutate(text: str, rate: float, rng: random.Random) -> str:
    """A near copy of `text`: each word replaced, deleted or followed by an insertion with prob. `rate`."""
    out_lines = []
    for line in text.split("\n"):
        words = []
        for word in line.split(" "):
            roll = rng.random()
            if roll < rate / 3:
                words.append(rng.choice(_FILLER) + str(rng.randint(0, 99)))
            elif roll < 2 * rate / 3:
                continue
            elif roll < rate:
                words += [word, rng.choice(_FILLER)]
            else:
                words.append(word)
        out_lines.append(" ".join(words))
    if len(out_lines) > 3 and rng.random() < rate:
        i = rng.randrange(len(out_lines) - 1)
        out_lines[i], out_lines[i + 1] = out_lines[i + 1], out_lines[i]
    return "\n".join(out_lines)


def plant_near_duplicates(texts: Sequence[str], modalities: Sequence[str], *, copies: int, seed: int = 0,
                          max_rate: float = 0.25) -> tuple[list[str], list[str]]:
    """`texts` followed by `copies` edited copies of randomly chosen ones (edit rates uniform in [0, max_rate])."""
    rng = random.Random(seed)
    out_texts, out_modalities = list(texts), list(modalities)
    for _ in range(copies):
        i = rng.randrange(len(texts))
        out_texts.append(mutate(texts[i], rng.uniform(0.0, max_rate), rng))
        out_modalities.append(modalities[i])
    return out_texts, out_modalities


def exact_pairs(texts: Sequence[str], modalities: Sequence[str], threshold: float,
                config: dedup.ShingleConfig = dedup.DEFAULT_SHINGLES) -> set[tuple[int, int]]:
    """All pairs (i < j) of the same shingling family whose exact Jaccard reaches `threshold`.

    Quadratic, for evaluation corpora of a few thousand documents; pairs whose set sizes alone
    rule the threshold out are skipped (J <= min/max).
    """
    sets = [dedup.shingle_set(t, m, config) for t, m in zip(texts, modalities, strict=True)]
    char = [m in dedup.CHAR_SHINGLE_MODALITIES for m in modalities]
    pairs = set()
    for j in range(len(sets)):
        for i in range(j):
            if char[i] != char[j]:
                continue
            small, large = sorted((len(sets[i]), len(sets[j])))
            if large and small / large < threshold:
                continue
            if dedup.jaccard(sets[i], sets[j]) >= threshold:
                pairs.add((i, j))
    return pairs


def precision_recall(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    hits = len(predicted & truth)
    return {"precision": hits / len(predicted) if predicted else 1.0,
            "recall": hits / len(truth) if truth else 1.0,
            "true_pairs": len(truth), "predicted_pairs": len(predicted)}
