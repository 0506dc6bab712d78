"""The traces family: causal LM on span trees written with `<span>` ... `</span>` structure symbols."""

from __future__ import annotations

from experts.config import TokenizerConfig
from experts.registry import ExpertSpec
from experts.traces.corpus import SPAN_CLOSE, SPAN_OPEN, corpus
from experts.traces.tasks import TASK_NAMES, task_data

SPEC = ExpertSpec(
    family="traces",
    description="distributed traces: the slow call path and the service a failure comes from",
    objective="causal",
    # The tree structure is two symbols, always one piece each, so nesting never hides inside a word.
    tokenizer=TokenizerConfig(vocab_size=1024, user_defined_symbols=(SPAN_OPEN, SPAN_CLOSE)),
    tasks=TASK_NAMES,
    corpus=corpus,
    task_data=task_data,
)
