"""Modality experts: one folder per expert family, each with its own tokenizer and decoder.

Names are imported on first use, so importing `experts` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Expert": "experts.expert",
    "Generation": "experts.interface",
    "GenerativeExpert": "experts.interface",
    "RemoteExpert": "experts.remote",
    "JsonSchemaConstraint": "experts.constrained",
    "RegexConstraint": "experts.constrained",
    "GrammarConstraint": "experts.constrained",
    "ExpertConfig": "experts.config",
    "ModelConfig": "experts.config",
    "TokenizerConfig": "experts.config",
    "TrainConfig": "experts.config",
    "MODEL_PRESETS": "experts.config",
    "Tokenizer": "data_pipeline.tokenizer",
    "train_tokenizer": "data_pipeline.tokenizer",
    "TaskExample": "data_pipeline.examples",
    "TrainingSequence": "data_pipeline.examples",
    "EXPERT_FAMILIES": "experts.registry",
    "ExpertSpec": "experts.registry",
    "get_spec": "experts.registry",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'experts' has no attribute {name!r}")
