"""Token shards the megatron backend trains on: fixed-length rows of token ids and labels.

The format `flipmoe data build` writes (`data_pipeline.shards`); `write_shard` writes the same from
`data_pipeline.examples.TrainingSequence`s for other producers:

```
<data>/
  <name>.input_ids.npy   uint16 or int32 [rows, L]: token ids, right-padded with PAD_ID
  <name>.labels.npy      optional, int32 [rows, L]: labels aligned with input_ids (the HF convention,
                         label[t] = input_ids[t] for plain causal LM), IGNORE_INDEX (-100) where no loss
```

`<data>` may also be an expert's directory of a data build (`<out>/shards/<expert>/`), whose `train/`
split is then read.

Shards are read in file-name order and rows in file order — the pipeline's curriculum order — and
memory-mapped, so every rank opens them all without loading them. Without a labels file, a row is
plain causal LM on its non-pad tokens; objectives that choose their targets (UL2, significance
masking) must write labels. A row of length L trains L-1 positions: the model reads tokens 0..L-2
and predicts labels 1..L-1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from data_pipeline.tokenizer import PAD_ID
from flipmoe.errors import FlipmoeInputError

INPUT_SUFFIX, LABEL_SUFFIX = ".input_ids.npy", ".labels.npy"
TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Batch:
    """One micro-batch as megatron's GPTModel takes it (`S` = row length - 1)."""

    tokens_BS: torch.Tensor
    labels_BS: torch.Tensor
    """Target of each position (the next token, or whatever the objective asks for)."""
    loss_mask_BS: torch.Tensor
    """1.0 where the position carries loss."""
    position_ids_BS: torch.Tensor


class TokenShards:
    """All rows of a shard directory, addressable by a global row index (wrapping around for epochs)."""

    def __init__(self, directory: str | Path, *, objective: str = "causal") -> None:
        directory = Path(directory)
        if not any(directory.glob("*" + INPUT_SUFFIX)) and (directory / TRAIN_SPLIT).is_dir():
            directory = directory / TRAIN_SPLIT  # an expert's directory of `flipmoe data build` output
        paths = sorted(directory.glob("*" + INPUT_SUFFIX)) if directory.is_dir() else []
        if not paths:
            raise FlipmoeInputError(f"no token shards (*{INPUT_SUFFIX}) found", path=directory,
                                    hint="write them with experts.megatron.data.write_shard")
        self._inputs: list[np.ndarray] = []
        self._labels: list[np.ndarray | None] = []
        for path in paths:
            inputs = np.load(path, mmap_mode="r")
            label_path = path.with_name(path.name[: -len(INPUT_SUFFIX)] + LABEL_SUFFIX)
            labels = np.load(label_path, mmap_mode="r") if label_path.is_file() else None
            if inputs.ndim != 2 or (labels is not None and labels.shape != inputs.shape):
                raise FlipmoeInputError(f"shard must be a [rows, length] array (labels of the same shape), got "
                                        f"{inputs.shape}" + (f" and {labels.shape}" if labels is not None else ""),
                                        path=path)
            if labels is None and objective != "causal":
                raise FlipmoeInputError(f"shard has no labels, but the expert's objective {objective!r} chooses its "
                                        "targets", path=path, hint=f"write {label_path.name} next to it")
            self._inputs.append(inputs)
            self._labels.append(labels)
        lengths = {a.shape[1] for a in self._inputs}
        if len(lengths) != 1:
            raise FlipmoeInputError(f"shards have different row lengths {sorted(lengths)}", path=directory)
        self.row_length: int = lengths.pop()
        self._offsets = np.cumsum([0] + [len(a) for a in self._inputs])
        self.num_rows: int = int(self._offsets[-1])
        if self.num_rows == 0:
            raise FlipmoeInputError("token shards hold no rows", path=directory)

    @property
    def seq_length(self) -> int:
        """Positions the model sees per row."""
        return self.row_length - 1

    def rows(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) of the given global row indices, as int64 [len(indices), L]."""
        inputs, labels = [], []
        for index in indices:
            index %= self.num_rows
            shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
            row = index - int(self._offsets[shard])
            ids = np.asarray(self._inputs[shard][row], dtype=np.int64)
            shard_labels = self._labels[shard]
            if shard_labels is None:
                label = np.where(ids == PAD_ID, IGNORE_INDEX, ids)
            else:
                label = np.asarray(shard_labels[row], dtype=np.int64)
            inputs.append(ids)
            labels.append(label)
        return np.stack(inputs), np.stack(labels)

    def micro_batches(self, *, micro_batch: int, num_micro_batches: int, data_parallel_rank: int,
                      data_parallel_size: int, start_step: int = 0) -> Iterator[Batch]:
        """This data-parallel rank's micro-batches, step after step from `start_step`, in curriculum order.

        Step s consumes the global rows [s*G, (s+1)*G), G = micro_batch * num_micro_batches * dp; every
        tensor-parallel and pipeline rank of a data-parallel replica reads the same rows, so no broadcast
        is needed, and a resumed run continues exactly where the checkpoint stopped.
        """
        per_rank = micro_batch * num_micro_batches
        step = start_step
        while True:
            first = (step * data_parallel_size + data_parallel_rank) * per_rank
            for m in range(num_micro_batches):
                start = first + m * micro_batch
                yield to_batch(*self.rows(range(start, start + micro_batch)))
            step += 1


def to_batch(input_ids: np.ndarray, labels: np.ndarray) -> Batch:
    """Shift HF-style aligned rows into megatron's (tokens, next-position labels, loss mask)."""
    tokens = torch.from_numpy(input_ids[:, :-1].copy())
    targets = torch.from_numpy(labels[:, 1:].copy())
    loss_mask = (targets != IGNORE_INDEX).float()
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens).contiguous()
    return Batch(tokens_BS=tokens, labels_BS=targets.clamp(min=0), loss_mask_BS=loss_mask,
                 position_ids_BS=positions)


def write_shard(directory: str | Path, name: str, sequences: Sequence[TrainingSequence], *, row_length: int) -> Path:
    """Write `sequences` as one shard of rows of `row_length` (right-padded; longer ones keep their end)."""
    if not sequences:
        raise FlipmoeInputError(f"shard {name!r} has no sequences")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inputs = np.full((len(sequences), row_length), PAD_ID, dtype=np.int32)
    labels = np.full((len(sequences), row_length), IGNORE_INDEX, dtype=np.int32)
    for i, sequence in enumerate(sequences):
        ids, target = sequence.input_ids[-row_length:], sequence.labels[-row_length:]
        inputs[i, : len(ids)] = ids
        labels[i, : len(target)] = target
    path = directory / (name + INPUT_SUFFIX)
    np.save(path, inputs)
    np.save(directory / (name + LABEL_SUFFIX), labels)
    return path
