"""The megatron-core `GPTModel` mirroring an expert's decoder (this rank's share of it).

Call after `experts.megatron.parallel.init_model_parallel` (or inside `parallel.single_process()` on a
CPU): the model takes its tensor-parallel shard and its pipeline stage from megatron's process groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from experts.config import ModelConfig
from experts.megatron.config import MegatronConfig, layer_spec, transformer_config

if TYPE_CHECKING:
    from megatron.core.models.gpt import GPTModel


def build_gpt_model(model: ModelConfig, megatron: MegatronConfig | None = None, *, bf16: bool = False,
                    seed: int = 0, vp_stage: int | None = None) -> GPTModel:
    """A freshly initialised `GPTModel` stage; on a machine without CUDA its weights are built on the CPU.

    Weights are initialised deterministically for `seed` and the parallel layout; to start from an
    existing expert, load `experts.megatron.convert.hf_to_megatron` of its weights afterwards.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    config = transformer_config(model, megatron, bf16=bf16, use_cpu_initialization=not torch.cuda.is_available())
    spec = layer_spec(config, megatron)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gpt = GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=model.vocab_size,
            max_sequence_length=model.max_seq_len,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=True),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=True),
            share_embeddings_and_output_weights=model.tie_embeddings,
            position_embedding_type="rope",
            rotary_percent=1.0,
            rotary_base=model.rope_theta,  # a float, like HF's rope_theta (megatron computes base ** x)
            vp_stage=vp_stage,
        )
    return gpt


def num_flops_per_token(model: ModelConfig, seq_len: int, megatron: MegatronConfig | None = None) -> float:
    """Model FLOPs of one trained token (forward + backward = 3 x forward), as in the PaLM MFU appendix.

    Matmul FLOPs of the active parameters (MoE layers count `top_k` experts) plus attention scores and
    values; the embedding lookup is free, the output projection is not.
    """
    megatron = megatron or MegatronConfig()
    d, f, layers = model.hidden_size, model.intermediate_size, model.num_layers
    kv = model.num_kv_heads * model.head_dim
    attention = d * d * 2 + d * kv * 2
    dense_mlp = 3 * d * f
    moe = megatron.moe
    if moe.enabled:
        moe_layers = len(range(0, layers, moe.layer_freq))
        expert_mlp = 3 * d * (moe.ffn_hidden_size or f) * moe.top_k + d * moe.num_experts
        mlp_params = moe_layers * expert_mlp + (layers - moe_layers) * dense_mlp
    else:
        mlp_params = layers * dense_mlp
    matmul_params = layers * attention + mlp_params + model.vocab_size * d
    attention_scores = layers * 2 * seq_len * d  # QK^T and AV, per token, causal mask not discounted
    return 3 * (2 * matmul_params + 2 * attention_scores)
