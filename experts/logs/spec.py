"""The logs family: causal LM on log lines (LogHub, chaos gym, Nezha), default tokenizer settings."""

from __future__ import annotations

from experts.config import TokenizerConfig
from experts.logs.corpus import corpus
from experts.logs.tasks import TASK_NAMES, task_data
from experts.registry import ExpertSpec

SPEC = ExpertSpec(
    family="logs",
    description="log lines: templates, severity, and what changed in a service's logs during an incident",
    objective="causal",
    tokenizer=TokenizerConfig(vocab_size=2048),
    tasks=TASK_NAMES,
    corpus=corpus,
    task_data=task_data,
)
