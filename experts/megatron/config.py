"""An expert's decoder as a megatron-core model: parallel layout, MoE layers, and the config mapping.

`ModelConfig` (the Hugging Face Llama decoder every flipmoe expert has) maps one to one onto a
megatron-core `TransformerConfig` and a GPT layer spec: RMSNorm, SwiGLU (`gated_linear_unit` with
SiLU), rotary embeddings with the same base, grouped-query attention (`num_query_groups`), no biases,
tied or untied output weights. What megatron adds — tensor, pipeline and expert parallelism, MoE
feed-forward layers, the distributed optimizer — lives in `MegatronConfig`, which is not part of the
expert's checkpoint: the same expert trains on one GPU or on 64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from experts.config import ModelConfig, TrainConfig
from flipmoe.errors import FlipmoeInputError

if TYPE_CHECKING:
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
    from megatron.core.transformer.transformer_config import TransformerConfig

RMS_NORM_EPS = 1e-5
"""Must equal `rms_norm_eps` in `experts.model.hf_config`, or the two models differ."""
INIT_STD = 0.02
"""Must equal `initializer_range` in `experts.model.hf_config`."""

LayerImpl = Literal["local", "transformer_engine"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)


@dataclass(kw_only=True, frozen=True)
class ParallelConfig:
    """How one run is split over GPUs; data parallelism takes the GPUs the other dimensions leave."""

    tensor_parallel: int = 1
    """Tensor-parallel size (splits attention heads and feed-forward columns); keep it inside a node."""
    pipeline_parallel: int = 1
    """Pipeline stages (splits the layers); must divide the number of layers."""
    expert_parallel: int = 1
    """Expert-parallel size of MoE layers; must divide `MoEConfig.num_experts`."""
    sequence_parallel: bool = False
    """Shard norms and dropout along the sequence inside a tensor-parallel group (needs tensor_parallel > 1)."""
    distributed_optimizer: bool = False
    """Shard optimizer state over data-parallel ranks (ZeRO-1)."""

    def __post_init__(self) -> None:
        _require(min(self.tensor_parallel, self.pipeline_parallel, self.expert_parallel) >= 1,
                 "parallel sizes (tensor_parallel, pipeline_parallel, expert_parallel) must be >= 1")
        _require(not self.sequence_parallel or self.tensor_parallel > 1,
                 "parallel.sequence_parallel needs parallel.tensor_parallel > 1")


@dataclass(kw_only=True, frozen=True)
class MoEConfig:
    """Mixture-of-experts feed-forward layers inside one flipmoe expert (token-level routing)."""

    num_experts: int = 0
    """Feed-forward experts per MoE layer; 0 keeps every layer dense (and the model convertible to Llama)."""
    top_k: int = 2
    """Experts each token is routed to."""
    layer_freq: int = 1
    """Every `layer_freq`-th layer is an MoE layer (1: all of them); the others stay dense."""
    ffn_hidden_size: int | None = None
    """Width of each feed-forward expert (None: the dense `intermediate_size`)."""
    aux_loss_coeff: float = 1e-2
    """Weight of the load-balancing loss."""
    token_dispatcher: Literal["alltoall", "allgather"] = "alltoall"
    """How tokens reach their experts' ranks; models built on a CPU (conversion) always use "allgather"."""

    def __post_init__(self) -> None:
        _require(self.num_experts >= 0, "moe.num_experts must be >= 0")
        _require(self.num_experts == 0 or 1 <= self.top_k <= self.num_experts,
                 "moe.top_k must be between 1 and moe.num_experts")
        _require(self.layer_freq >= 1, "moe.layer_freq must be >= 1")
        _require(self.token_dispatcher in ("alltoall", "allgather"),
                 "moe.token_dispatcher must be 'alltoall' or 'allgather'")

    @property
    def enabled(self) -> bool:
        return self.num_experts > 0


@dataclass(kw_only=True, frozen=True)
class MegatronConfig:
    """What the megatron-core backend adds to an `ExpertConfig`: parallelism, MoE layers, kernels."""

    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Tensor / pipeline / expert / data parallelism."""
    moe: MoEConfig = field(default_factory=MoEConfig)
    """MoE feed-forward layers (off by default)."""
    layer_impl: LayerImpl = "local"
    """"local": megatron-core's own modules (no extra dependency); "transformer_engine": fused TE kernels."""
    peak_tflops: float = 989.0
    """Dense bf16 peak of one GPU, for the model-FLOPs-utilisation figure (H100 SXM: 989)."""

    def __post_init__(self) -> None:
        _require(self.layer_impl in ("local", "transformer_engine"),
                 "layer_impl must be 'local' or 'transformer_engine'")
        _require(self.moe.enabled or self.parallel.expert_parallel == 1,
                 "parallel.expert_parallel > 1 needs MoE layers (moe.num_experts > 0)")
        _require(not self.moe.enabled or self.moe.num_experts % self.parallel.expert_parallel == 0,
                 "moe.num_experts must be divisible by parallel.expert_parallel")

    def check(self, model: ModelConfig) -> None:
        """Refuse parallel layouts the model's shape cannot be split into, naming the sizes."""
        tp, pp = self.parallel.tensor_parallel, self.parallel.pipeline_parallel
        _require(model.num_heads % tp == 0 and model.num_kv_heads % tp == 0,
                 f"tensor_parallel {tp} must divide num_heads {model.num_heads} and num_kv_heads "
                 f"{model.num_kv_heads}")
        _require(model.vocab_size % tp == 0,
                 f"tensor_parallel {tp} must divide vocab_size {model.vocab_size} (the embedding is split by rows)")
        _require(model.num_layers % pp == 0,
                 f"pipeline_parallel {pp} must divide num_layers {model.num_layers}")


def transformer_config(model: ModelConfig, megatron: MegatronConfig | None = None, *,
                       bf16: bool = False, use_cpu_initialization: bool = False) -> TransformerConfig:
    """The megatron-core `TransformerConfig` of `model` under `megatron`'s parallel layout.

    Fusions that need apex or CUDA extensions stay off with the local layer implementation, so the
    same config builds on a CPU (for conversion) and trains on a GPU.
    """
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    megatron = megatron or MegatronConfig()
    megatron.check(model)
    parallel, moe = megatron.parallel, megatron.moe
    te = megatron.layer_impl == "transformer_engine"
    dtype = torch.bfloat16 if bf16 else torch.float32
    moe_kwargs: dict[str, object] = {}
    if moe.enabled:
        moe_kwargs = dict(
            num_moe_experts=moe.num_experts, moe_router_topk=moe.top_k, moe_layer_freq=moe.layer_freq,
            moe_ffn_hidden_size=moe.ffn_hidden_size or model.intermediate_size,
            moe_aux_loss_coeff=moe.aux_loss_coeff, moe_router_load_balancing_type="aux_loss",
            # With one expert per token a softmax after top-k would always give weight 1 (no gradient).
            moe_router_pre_softmax=moe.top_k == 1,
            # The all-to-all dispatcher allocates CUDA streams when built; the weights do not depend on it.
            moe_token_dispatcher_type="allgather" if use_cpu_initialization else moe.token_dispatcher,
            moe_grouped_gemm=False,
        )
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.intermediate_size,
        num_attention_heads=model.num_heads,
        num_query_groups=model.num_kv_heads,
        kv_channels=model.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=RMS_NORM_EPS,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=model.dropout,
        init_method_std=INIT_STD,
        tensor_model_parallel_size=parallel.tensor_parallel,
        pipeline_model_parallel_size=parallel.pipeline_parallel,
        expert_model_parallel_size=parallel.expert_parallel,
        sequence_parallel=parallel.sequence_parallel,
        bf16=bf16,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        use_cpu_initialization=use_cpu_initialization,
        # Fused kernels: apex/TE only. SwiGLU and bias-dropout fusions are plain torch and safe on CUDA.
        bias_activation_fusion=te,
        bias_dropout_fusion=te,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        # The loss is averaged over loss-carrying tokens of the whole global batch, as the HF trainer does.
        calculate_per_token_loss=True,
        **moe_kwargs,
    )


def layer_spec(config: TransformerConfig, megatron: MegatronConfig | None = None
               ) -> ModuleSpec | TransformerBlockSubmodules:
    """The GPT layer spec: one layer spec for dense models, a block spec when some layers are MoE."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_decoder_block_spec,
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    megatron = megatron or MegatronConfig()
    te = megatron.layer_impl == "transformer_engine"
    if megatron.moe.enabled:
        # The block spec places MoE and dense layers by `moe_layer_freq` and slices this pipeline stage.
        return get_gpt_decoder_block_spec(config, use_transformer_engine=te, normalization="RMSNorm")
    if te:
        return get_gpt_layer_with_transformer_engine_spec()
    return get_gpt_layer_local_spec(normalization="RMSNorm")


def batch_sizes(train: TrainConfig, *, data_parallel: int) -> tuple[int, int, int]:
    """(micro batch, micro batches per step, global batch) in sequences, from the expert's `TrainConfig`.

    `train.batch_size` is the per-GPU micro batch and `train.grad_accum` the micro batches per step, so
    a run on more GPUs sees proportionally more sequences per step.
    """
    global_batch = train.batch_size * train.grad_accum * data_parallel
    return train.batch_size, train.grad_accum, global_batch
