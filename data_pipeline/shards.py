"""Tokenized shards on disk, and the manifest that counts them.

The format is the one the megatron backend reads (`experts.megatron.data.TokenShards`), so shards go
from `flipmoe data build` to a megatron-core run without conversion, and `read_shards` gives the
single-process trainer its `TrainingSequence`s back:

```
<out>/shards/<expert>/
  tokenizer.model                     the expert's sentencepiece model the ids belong to
  train/part-00000.input_ids.npy      uint16 (vocab <= 65535) or int32 [rows, seq_len], right-padded with PAD_ID (0)
  train/part-00000.labels.npy         int32 [rows, seq_len], -100 where no loss (padding, prompts, kept context)
  train/part-00000.difficulty.npy     float64 [rows], the curriculum key of each row
  validation/part-00000.*             the same, for documents held out by id hash
  tasks/part-00000.*                  grounded instruction rows (`<task>..<input>..<answer>target eos`)
<out>/manifest.json                   counts per expert and split: rows, tokens, loss tokens, files, sha256
```

Rows are written in curriculum order and shards are numbered in that order, which is the order both
readers consume them in. Labels are aligned with the inputs (the Hugging Face convention: the model
shifts them), so a causal row has `labels == input_ids`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from flipmoe.errors import FlipmoeInputError

PAD_ID = 0
"""data_pipeline.tokenizer.PAD_ID (not imported: that module loads sentencepiece)."""
INPUT_SUFFIX, LABEL_SUFFIX, DIFFICULTY_SUFFIX = ".input_ids.npy", ".labels.npy", ".difficulty.npy"
MANIFEST = "manifest.json"
FORMAT = "flipmoe-token-shards/1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shards(directory: str | Path, sequences: Sequence[TrainingSequence], *, seq_len: int, vocab_size: int,
                 sequences_per_shard: int) -> dict[str, Any]:
    """Write `sequences` (already in curriculum order) as numbered shards; returns their manifest entry."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    input_dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32
    files = []
    for index, start in enumerate(range(0, len(sequences), sequences_per_shard)):
        part = sequences[start:start + sequences_per_shard]
        inputs = np.full((len(part), seq_len), PAD_ID, dtype=input_dtype)
        labels = np.full((len(part), seq_len), IGNORE_INDEX, dtype=np.int32)
        difficulty = np.empty(len(part), dtype=np.float64)
        for row, sequence in enumerate(part):
            if len(sequence.input_ids) > seq_len:
                raise FlipmoeInputError(f"sequence of {len(sequence.input_ids)} tokens exceeds seq_len {seq_len}")
            inputs[row, : len(sequence.input_ids)] = sequence.input_ids
            labels[row, : len(sequence.labels)] = sequence.labels
            difficulty[row] = sequence.difficulty
        name = f"part-{index:05d}"
        for suffix, array in ((INPUT_SUFFIX, inputs), (LABEL_SUFFIX, labels), (DIFFICULTY_SUFFIX, difficulty)):
            np.save(directory / (name + suffix), array)
        files.append({"name": name, "rows": len(part),
                      "sha256": {suffix: _sha256(directory / (name + suffix))
                                 for suffix in (INPUT_SUFFIX, LABEL_SUFFIX)}})
    return {"rows": len(sequences),
            "tokens": int(sum(len(s.input_ids) for s in sequences)),
            "loss_tokens": int(sum(s.loss_tokens for s in sequences)),
            "seq_len": seq_len, "input_dtype": np.dtype(input_dtype).name, "files": files}


def read_shards(directory: str | Path) -> list[TrainingSequence]:
    """Every row of a shard directory in order, trailing padding removed (PAD input with no label)."""
    directory = Path(directory)
    paths = sorted(directory.glob("*" + INPUT_SUFFIX))
    if not paths:
        raise FlipmoeInputError(f"no token shards (*{INPUT_SUFFIX}) found", path=directory)
    rows: list[TrainingSequence] = []
    for path in paths:
        stem = path.name[: -len(INPUT_SUFFIX)]
        inputs = np.load(path).astype(np.int64)
        labels = np.load(directory / (stem + LABEL_SUFFIX)).astype(np.int64)
        difficulty_path = directory / (stem + DIFFICULTY_SUFFIX)
        difficulty = np.load(difficulty_path) if difficulty_path.is_file() else np.zeros(len(inputs))
        padding = (inputs == PAD_ID) & (labels == IGNORE_INDEX)
        # Length = position after the last non-padding cell of the row.
        lengths = inputs.shape[1] - np.argmin(padding[:, ::-1], axis=1)
        lengths[padding.all(axis=1)] = 0
        for row, length in enumerate(lengths):
            rows.append(TrainingSequence(input_ids=tuple(int(x) for x in inputs[row, :length]),
                                         labels=tuple(int(x) for x in labels[row, :length]),
                                         difficulty=float(difficulty[row])))
    return rows


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(out) / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, **manifest}, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_manifest(out: str | Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlipmoeInputError("no manifest.json: not a data build output", path=path) from None
    return manifest
