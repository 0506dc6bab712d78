"""Objective transforms: an expert's documents and instructions -> tokenized rows in curriculum order.

The objectives themselves live with the experts (`experts.objectives`: causal, UL2, significance
masking, task rows, curriculum); this stage picks each expert's tokenizer and objective, splits its
documents into train and validation by a hash of their ids, and writes the shards (`shards`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from data_pipeline.config import ExpertShardConfig, ShardConfig
from data_pipeline.shards import write_shards
from experts.data import TaskExample
from flipmoe.errors import FlipmoeInputError


def heldout(doc_id: str, fraction: float) -> bool:
    """Whether a document belongs to the validation split (stable across runs and workers)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def _spec(family: str) -> Any:
    if not family:
        return None
    from experts.registry import get_spec

    try:
        return get_spec(family)
    except (ImportError, AttributeError):
        return None  # the family's folder is not written yet; the expert's config must say enough


def resolve(expert: ExpertShardConfig) -> tuple[str, Any]:
    """(objective, TokenizerConfig) of an expert: its config first, then its family's spec."""
    from experts.config import OBJECTIVES, TokenizerConfig

    spec = _spec(expert.family)
    objective = expert.objective or (spec.objective if spec else "")
    if objective not in OBJECTIVES:
        raise FlipmoeInputError(f"expert {expert.name!r}: no objective (family {expert.family!r} has no spec)",
                                hint=f"set experts[].objective to one of {', '.join(OBJECTIVES)}")
    tokenizer = spec.tokenizer if spec else TokenizerConfig()
    return objective, replace(tokenizer, vocab_size=expert.vocab_size)


def load_or_train_tokenizer(expert: ExpertShardConfig, tokenizer_config: Any, texts: Sequence[str], *,
                            seed: int) -> Any:
    from experts.tokenizer import Tokenizer, train_tokenizer

    if expert.tokenizer:
        return Tokenizer.load(expert.tokenizer)
    return train_tokenizer(texts, tokenizer_config, seed=seed)


def build_expert(expert: ExpertShardConfig, docs: Sequence[tuple[str, str]], examples: Sequence[TaskExample],
                 config: ShardConfig, out: Path) -> dict[str, Any]:
    """Tokenize and write one expert's shards; `docs` are (id, text), repeated as balancing decided."""
    from experts.objectives import curriculum, objective_sequences, task_sequences

    objective, tokenizer_config = resolve(expert)
    train = [text for doc_id, text in docs if not heldout(doc_id, config.heldout_fraction)]
    validation = [text for doc_id, text in docs if heldout(doc_id, config.heldout_fraction)]
    if not train:
        raise FlipmoeInputError(f"expert {expert.name!r} has no training documents after the earlier stages",
                                hint="check its modalities and the sources")
    directory = out / "shards" / expert.name
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = load_or_train_tokenizer(expert, tokenizer_config, train, seed=config.seed)
    tokenizer.save(directory)
    entry: dict[str, Any] = {"objective": objective, "family": expert.family, "modalities": list(expert.modalities),
                             "vocab_size": tokenizer.vocab_size, "tokenizer": "tokenizer.model",
                             "documents": {"train": len(train), "validation": len(validation)}, "splits": {}}
    splits = {"train": train, "validation": validation}
    for split, texts in splits.items():
        if not texts:
            continue
        rng = random.Random(f"{config.seed}:{expert.name}:{split}")
        rows = curriculum(objective_sequences(objective, texts, tokenizer, seq_len=config.seq_len, rng=rng))
        entry["splits"][split] = write_shards(directory / split, rows, seq_len=config.seq_len,
                                              vocab_size=tokenizer.vocab_size,
                                              sequences_per_shard=config.sequences_per_shard)
    if examples:
        rows = curriculum(task_sequences(examples, tokenizer, seq_len=config.seq_len))
        entry["splits"]["tasks"] = write_shards(directory / "tasks", rows, seq_len=config.seq_len,
                                                vocab_size=tokenizer.vocab_size,
                                                sequences_per_shard=config.sequences_per_shard)
        entry["documents"]["tasks"] = len(examples)
    return entry
