"""Megatron distributed checkpoints of an expert, self-describing like the expert checkpoint itself.

```
<run>/
  config.yaml        ExpertConfig (the decoder's shape, the objective, the training run)
  megatron.yaml      MegatronConfig the run used (parallel layout, MoE layers)
  tokenizer.model    the expert's sentencepiece model (when known)
  card.json          what was trained on, steps, last loss
  latest             the last complete iteration, written after it is
  iter_0000200/      megatron-core `dist_checkpointing` directory: model (+ optimizer, scheduler)
```

`dist_checkpointing` stores every tensor by its global shape and offsets, so a checkpoint written with
one tensor/pipeline layout loads into any other — including one process on a CPU, which is how
`experts.megatron.convert.megatron_to_expert` turns a run back into an HF expert. Saving needs CUDA:
megatron-core's writer synchronises the device after staging tensors, so checkpoints are written by
training jobs on GPUs; a new run starts from an HF expert with `train --init-expert` instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from experts.config import ExpertConfig
from experts.megatron.config import MegatronConfig
from flipmoe.config import load_yaml, save_yaml
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from megatron.core.optimizer import MegatronOptimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer.module import MegatronModule

EXPERT_CONFIG, MEGATRON_CONFIG, TOKENIZER, CARD, LATEST = (
    "config.yaml", "megatron.yaml", "tokenizer.model", "card.json", "latest")


@dataclass(frozen=True)
class CheckpointMetadata:
    """The plain files of a megatron run directory."""

    expert: ExpertConfig
    megatron: MegatronConfig
    tokenizer: bytes
    card: dict[str, Any]


def iteration_dir(directory: str | Path, iteration: int) -> Path:
    return Path(directory) / f"iter_{iteration:07d}"


def latest_iteration(directory: str | Path) -> int | None:
    """The last iteration saved completely, or None for a directory without one."""
    path = Path(directory) / LATEST
    return int(path.read_text().strip()) if path.is_file() else None


def read_metadata(directory: str | Path) -> CheckpointMetadata:
    directory = Path(directory)
    for name in (EXPERT_CONFIG, MEGATRON_CONFIG, TOKENIZER):
        if not (directory / name).is_file():
            raise FlipmoeInputError(f"not a flipmoe megatron checkpoint: missing {name}", path=directory,
                                    hint="write one with 'python -m experts.megatron.train --save DIR'")
    card_path = directory / CARD
    return CheckpointMetadata(
        expert=load_yaml(ExpertConfig, directory / EXPERT_CONFIG),
        megatron=load_yaml(MegatronConfig, directory / MEGATRON_CONFIG),
        tokenizer=(directory / TOKENIZER).read_bytes(),
        card=json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {},
    )


def save(directory: str | Path, *, iteration: int, model: list[MegatronModule], expert: ExpertConfig,
         megatron: MegatronConfig, tokenizer: bytes | None = None, optimizer: MegatronOptimizer | None = None,
         scheduler: OptimizerParamScheduler | None = None, card: Mapping[str, Any] | None = None) -> Path:
    """Collective: every rank calls it with its own model chunk(s) and optimizer shard.

    The iteration is written under a temporary name and renamed once every rank is done, and `latest`
    moves only then, so a job killed mid-save resumes from the previous checkpoint.
    """
    from megatron.core import dist_checkpointing

    directory = Path(directory)
    final = iteration_dir(directory, iteration)
    partial = final.with_name(final.name + ".partial")
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save_yaml(expert, directory / EXPERT_CONFIG)
        save_yaml(megatron, directory / MEGATRON_CONFIG)
        if tokenizer is not None:
            (directory / TOKENIZER).write_bytes(tokenizer)
        (directory / CARD).write_text(json.dumps(dict(card or {}), indent=2) + "\n", encoding="utf-8")
    _barrier()
    dist_checkpointing.save(_sharded_state(model, optimizer, scheduler, iteration, loading=False), str(partial))
    _barrier()
    if rank0:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        (directory / (LATEST + ".tmp")).write_text(f"{iteration}\n")
        (directory / (LATEST + ".tmp")).replace(directory / LATEST)
    _barrier()
    return final


def load(directory: str | Path, *, model: list[MegatronModule], optimizer: MegatronOptimizer | None = None,
         scheduler: OptimizerParamScheduler | None = None, iteration: int | None = None) -> int:
    """Collective: fill the model (and optimizer, scheduler) from a checkpoint; returns its iteration."""
    from megatron.core import dist_checkpointing

    iteration = latest_iteration(directory) if iteration is None else iteration
    if iteration is None or not iteration_dir(directory, iteration).is_dir():
        raise FlipmoeInputError("no complete megatron checkpoint iteration found", path=directory,
                                hint="pass the --save directory of a run that saved at least once")
    sharded = _sharded_state(model, optimizer, scheduler, iteration, loading=True)
    loaded = dist_checkpointing.load(sharded, str(iteration_dir(directory, iteration)))
    for i, chunk in enumerate(model):
        result = chunk.load_state_dict(loaded[_model_key(i, len(model))], strict=False)
        missing = [name for name in result.missing_keys if not name.endswith("_extra_state")]
        if missing:
            raise FlipmoeInputError(f"checkpoint lacks weights {missing[:5]}", path=directory,
                                    hint="load it with the config.yaml and megatron.yaml it was saved with")
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(loaded["scheduler"])
    return int(loaded["iteration"])


def _sharded_state(model: list[MegatronModule], optimizer: MegatronOptimizer | None,
                   scheduler: OptimizerParamScheduler | None, iteration: int, *, loading: bool) -> dict[str, Any]:
    state: dict[str, Any] = {"iteration": iteration}
    for i, chunk in enumerate(model):
        state[_model_key(i, len(model))] = chunk.sharded_state_dict()
    if optimizer is not None:
        model_state = {k: v for k, v in state.items() if k.startswith("model")}
        state["optimizer"] = optimizer.sharded_state_dict(model_state, is_loading=loading)
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return state


def _model_key(index: int, count: int) -> str:
    return "model" if count == 1 else f"model{index}"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
