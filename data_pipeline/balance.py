"""Resampling a corpus to target modality mixture weights.

The mixture is measured in characters (a stand-in for tokens before any tokenizer exists). With the
corpus at `C_m` characters of modality `m` and target shares `w_m` (normalised over the modalities
present), the largest corpus that honours the weights without repeating any document more than
`max_repeat` times is `T = min_m (C_m * max_repeat / w_m)`, capped so the most abundant modality is not
grown beyond its size; each modality is then sampled to `w_m * T` characters: down-sampled without
replacement, or repeated whole with a random remainder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    """How many times each document is taken (0 = dropped), and the mixture before and after."""

    copies: np.ndarray
    before: dict[str, float]
    after: dict[str, float]
    target: dict[str, float]


def _shares(chars: Mapping[str, float]) -> dict[str, float]:
    total = sum(chars.values())
    return {m: (c / total if total else 0.0) for m, c in sorted(chars.items())}


def balance(modalities: Sequence[str], lengths: Sequence[int], weights: Mapping[str, float], *,
            max_repeat: float, seed: int, keys: Sequence[str] | None = None) -> Plan:
    """Copies per document so the character mixture approaches `weights`.

    Modalities without a weight keep all their documents once and count outside the mixture. `keys`
    (document ids) make the sampling independent of input order; without them the order decides.
    """
    modalities = list(modalities)
    lengths_arr = np.asarray(lengths, dtype=np.float64)
    present = sorted(set(modalities))
    weighted = [m for m in present if weights.get(m, 0) > 0]
    chars = {m: float(lengths_arr[[i for i, x in enumerate(modalities) if x == m]].sum()) for m in present}
    copies = np.ones(len(modalities), dtype=np.int64)
    for m in present:
        if m not in weights:
            continue
        if weights[m] <= 0:
            copies[[i for i, x in enumerate(modalities) if x == m]] = 0
    total_weight = sum(weights[m] for m in weighted)
    target = {m: weights[m] / total_weight for m in weighted} if weighted else {}
    if weighted:
        budget = min(chars[m] * max_repeat / target[m] for m in weighted)
        budget = min(budget, max(chars[m] / target[m] for m in weighted))
        rng = np.random.default_rng(seed)
        for m in weighted:
            index = np.asarray([i for i, x in enumerate(modalities) if x == m])
            if keys is not None:
                # Order by a hash of the id: the same document set samples the same way however it arrived.
                index = index[np.argsort([hashlib.sha1(f"{seed}:{keys[i]}".encode()).digest() for i in index])]
            else:
                index = index[rng.permutation(len(index))]
            copies[index] = _take(lengths_arr[index], target[m] * budget, max_repeat)
    after = {m: float((lengths_arr * copies)[[i for i, x in enumerate(modalities) if x == m]].sum()) for m in present}
    return Plan(copies=copies, before=_shares(chars), after=_shares(after), target=target)


def _take(lengths: np.ndarray, goal: float, max_repeat: float) -> np.ndarray:
    """Copies of documents (in the given, shuffled, order) adding up to about `goal` characters."""
    total = lengths.sum()
    if total == 0:
        return np.ones(len(lengths), dtype=np.int64)
    whole = int(min(max_repeat, goal // total))
    copies = np.full(len(lengths), whole, dtype=np.int64)
    remainder = goal - whole * total
    if whole < max_repeat and remainder > 0:
        # The first documents (in shuffled order) until the remainder is used up get one more copy.
        extra = np.cumsum(lengths) - lengths < remainder
        copies += extra
    return copies
