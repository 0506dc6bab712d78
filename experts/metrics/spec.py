"""The metrics family: causal LM on rendered series; one piece per digit, so numbers compose."""

from __future__ import annotations

from experts.config import TokenizerConfig
from experts.metrics.corpus import corpus
from experts.metrics.tasks import TASK_NAMES, task_data
from experts.registry import ExpertSpec

SPEC = ExpertSpec(
    family="metrics",
    description="metric series: their pattern (spike, level shift, trend) and a description of it",
    objective="causal",
    tokenizer=TokenizerConfig(vocab_size=1024, split_digits=True),
    tasks=TASK_NAMES,
    corpus=corpus,
    task_data=task_data,
)
