"""The megatron-core backend: pretrain an expert's decoder with tensor, pipeline and data parallelism.

| file | its job |
|---|---|
| `config.py` | `MegatronConfig` (parallel layout, MoE layers) and `ModelConfig` -> `TransformerConfig` + layer spec |
| `model.py` | the `GPTModel` mirroring an expert's decoder; model FLOPs per token |
| `parallel.py` | process groups, set up from outside the model |
| `convert.py` | state-dict adapter HF Llama <-> megatron-core, sharding for a rank, megatron -> expert checkpoint |
| `checkpoint.py` | self-describing megatron distributed checkpoints |
| `data.py` | the token shards it reads |
| `train.py` | the training loop (`torchrun -m experts.megatron.train`) |
| `ray_launch.py` | the same job on Ray Train |
| `cli.py` | `flipmoe train expert --backend megatron` |

Names are imported on first use: importing `experts.megatron` loads neither torch nor megatron-core.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MegatronConfig": "experts.megatron.config",
    "MoEConfig": "experts.megatron.config",
    "ParallelConfig": "experts.megatron.config",
    "transformer_config": "experts.megatron.config",
    "build_gpt_model": "experts.megatron.model",
    "hf_to_megatron": "experts.megatron.convert",
    "megatron_to_hf": "experts.megatron.convert",
    "megatron_to_expert": "experts.megatron.convert",
    "train": "experts.megatron.train",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'experts.megatron' has no attribute {name!r}")
