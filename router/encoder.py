"""The router's own encoder: hashed character n-grams of the raw request, plus the task name.

Experts do not share a tokenizer, so the router cannot read any expert's tokens; it reads the text.
Character n-grams see what tells the modalities apart — timestamps and log levels, `key=value` pairs,
span arrows, digits runs, brackets and keywords of code — without a vocabulary to train or ship: the
features are hashed into a fixed space, so the encoder is stateless and its whole definition is its
config. (`benchmarks/bench_router.py --encoders` measures the alternatives: word tokens, and the static
WordLlama embeddings that ship inside their PyPI wheel.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer

from flipmoe.errors import FlipmoeInputError


@dataclass(kw_only=True, frozen=True)
class EncoderConfig:
    """Hashed n-gram features of a request; stateless, so this config is the whole encoder."""

    analyzer: Literal["char", "char_wb", "word"] = "char"
    """What the n-grams are made of: characters, characters within word boundaries, or word tokens."""
    ngram_min: int = 2
    """Shortest n-gram."""
    ngram_max: int = 4
    """Longest n-gram."""
    n_features: int = 2**16
    """Hash buckets of the text features (the classifier has one weight per bucket and expert)."""
    max_chars: int = 2048
    """Long requests are read at their head and tail only (half each): the task shape shows there."""
    task_features: int = 256
    """Hash buckets of the task name (0 = the router ignores the task even when it is given)."""
    task_weight: float = 1.0
    """Value of the task-name feature next to the unit-norm text features."""

    def __post_init__(self) -> None:
        if self.analyzer not in ("char", "char_wb", "word"):
            raise FlipmoeInputError("encoder.analyzer must be 'char', 'char_wb' or 'word'")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise FlipmoeInputError("encoder n-gram range must satisfy 1 <= ngram_min <= ngram_max")
        if self.n_features < 16 or self.task_features < 0 or self.max_chars < 16:
            raise FlipmoeInputError("encoder.n_features >= 16, task_features >= 0 and max_chars >= 16 required")

    @property
    def dim(self) -> int:
        return self.n_features + self.task_features


class HashedNgramEncoder:
    """`encode(prompts, tasks) -> X_NF`: l2-normalised n-gram counts, then a one-hot of the task name."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self._text = HashingVectorizer(analyzer=config.analyzer, ngram_range=(config.ngram_min, config.ngram_max),
                                       n_features=config.n_features, alternate_sign=False, norm="l2",
                                       lowercase=False, dtype=np.float32)
        self._task = (FeatureHasher(n_features=config.task_features, input_type="string", alternate_sign=False,
                                    dtype=np.float32) if config.task_features else None)

    @property
    def dim(self) -> int:
        return self.config.dim

    def encode(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> sp.csr_matrix:
        if tasks is not None and len(tasks) != len(prompts):
            raise FlipmoeInputError(f"{len(prompts)} prompts but {len(tasks)} tasks")
        text_NF = self._text.transform([_head_and_tail(p, self.config.max_chars) for p in prompts])
        if self._task is None:
            return sp.csr_matrix(text_NF)
        names = [[f"task={t}"] if t else [] for t in (tasks if tasks is not None else [None] * len(prompts))]
        task_NT = self._task.transform(names) * self.config.task_weight
        return sp.hstack([text_NF, task_NT], format="csr", dtype=np.float32)


def _head_and_tail(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "\n" + text[-half:]
