"""Objective transforms: an expert's documents and instructions -> tokenized rows in curriculum order.

The objectives (`data_pipeline.objectives`: causal, UL2, significance masking, task rows, curriculum)
and tokenizers (`data_pipeline.tokenizer`) live here, below the experts that read the shards. This
stage picks each expert's tokenizer and objective, splits its documents into train and validation by a
hash of their ids, and writes the shards (`shards`). Family defaults (a family's objective and
tokenizer settings) come from a `FamilyCatalog` the caller passes in — `experts.registry.catalog()` in
`flipmoe data build` — because the experts sit above the data pipeline and may not be imported here.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from data_pipeline.config import ExpertShardConfig, ShardConfig
from data_pipeline.examples import TaskExample
from data_pipeline.shards import write_shards
from data_pipeline.tokens import OBJECTIVES, TokenizerConfig
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from data_pipeline.tokenizer import Tokenizer


def heldout(doc_id: str, fraction: float) -> bool:
    """Whether a document belongs to the validation split (stable across runs and workers)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


class FamilyCatalog(Protocol):
    """What the data pipeline needs to know about expert families (implemented by `experts.registry`)."""

    def defaults(self, family: str) -> tuple[str, TokenizerConfig] | None:
        """(objective, tokenizer settings) of `family`; None when there is no such family."""
        ...

    def heldout_texts(self, families: Sequence[str]) -> tuple[list[str], list[str]]:
        """(texts, notes): every family's held-out task inputs and targets, for the contamination check."""
        ...


def resolve(expert: ExpertShardConfig, families: FamilyCatalog | None = None) -> tuple[str, TokenizerConfig]:
    """(objective, TokenizerConfig) of an expert: its config first, then its family's defaults."""
    defaults = families.defaults(expert.family) if families is not None and expert.family else None
    objective = expert.objective or (defaults[0] if defaults else "")
    if objective not in OBJECTIVES:
        raise FlipmoeInputError(f"expert {expert.name!r}: no objective (family {expert.family!r} has no defaults "
                                "here)", hint=f"set experts[].objective to one of {', '.join(OBJECTIVES)}")
    tokenizer = defaults[1] if defaults else TokenizerConfig()
    return objective, replace(tokenizer, vocab_size=expert.vocab_size)


def load_or_train_tokenizer(expert: ExpertShardConfig, tokenizer_config: TokenizerConfig, texts: Sequence[str], *,
                            seed: int) -> Tokenizer:
    from data_pipeline.tokenizer import Tokenizer, train_tokenizer  # sentencepiece: loaded when needed

    if expert.tokenizer:
        return Tokenizer.load(expert.tokenizer)
    return train_tokenizer(texts, tokenizer_config, seed=seed)


def build_expert(expert: ExpertShardConfig, docs: Sequence[tuple[str, str]], examples: Sequence[TaskExample],
                 config: ShardConfig, out: Path, *, families: FamilyCatalog | None = None) -> dict[str, Any]:
    """Tokenize and write one expert's shards; `docs` are (id, text), repeated as balancing decided."""
    from data_pipeline.objectives import curriculum, objective_sequences, task_sequences

    objective, tokenizer_config = resolve(expert, families)
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
