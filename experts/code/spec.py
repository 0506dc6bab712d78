"""The code family: significance masking (identifiers, calls, literals, keys) over code and configs."""

from __future__ import annotations

from experts.code.corpus import corpus
from experts.code.tasks import TASK_NAMES, task_data
from experts.config import TokenizerConfig
from experts.registry import ExpertSpec

SPEC = ExpertSpec(
    family="code",
    description="source code and configuration: probable causes of exceptions, settings behind client errors",
    objective="significance",
    tokenizer=TokenizerConfig(vocab_size=2048),
    tasks=TASK_NAMES,
    corpus=corpus,
    task_data=task_data,
)
