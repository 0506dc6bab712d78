"""An expert's decoder: a Hugging Face `LlamaForCausalLM` built from the expert's `ModelConfig`.

Using the library's model (rather than a hand-written one) keeps generation, KV caching and the
safetensors format standard, and lets the megatron-core backend convert weights to and from it.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from data_pipeline.tokenizer import BOS_ID, EOS_ID, PAD_ID
from experts.config import ModelConfig


def hf_config(config: ModelConfig) -> LlamaConfig:
    """The transformers config mirroring `config` (special ids are the tokenizer's fixed ones)."""
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_seq_len,
        # transformers 5 declares only `rope_parameters` but still maps this 4.x keyword onto it.
        rope_theta=config.rope_theta,  # type: ignore[call-arg]
        tie_word_embeddings=config.tie_embeddings,
        attention_dropout=config.dropout,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        attention_bias=False,
        mlp_bias=False,
    )


def build_decoder(config: ModelConfig, *, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised decoder (deterministic for a given seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config(config))
    return model
