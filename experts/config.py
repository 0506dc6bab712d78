"""Typed configuration of an expert: its tokenizer, its decoder, its objective and its training run.

An expert is described entirely by an `ExpertConfig`, saved as `config.yaml` inside its checkpoint
directory, so a checkpoint can be rebuilt and retrained from itself. Decoder sizes come from named
presets (`MODEL_PRESETS`): "nano" trains on two CPU cores in minutes, the others are meant for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from data_pipeline.tokens import (  # noqa: F401 (re-exported: part of an expert's config)
    ANSWER_OPEN,
    DENOISER_MODES,
    INPUT_OPEN,
    N_SENTINELS,
    OBJECTIVES,
    PROMPT_SYMBOLS,
    SENTINELS,
    TASK_OPEN,
    Objective,
    TokenizerConfig,
    format_prompt,
)
from flipmoe.errors import FlipmoeInputError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)


@dataclass(kw_only=True, frozen=True)
class ModelConfig:
    """A Llama-style decoder (Hugging Face `LlamaForCausalLM`); `vocab_size` comes from the tokenizer."""

    vocab_size: int = 2048
    """Rows of the embedding table; equals the expert's tokenizer vocabulary."""
    hidden_size: int = 128
    """Width of the residual stream."""
    intermediate_size: int = 384
    """Width of the SwiGLU feed-forward layer."""
    num_layers: int = 4
    """Decoder blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention); divides `num_heads`."""
    max_seq_len: int = 512
    """Longest sequence the rotary embedding is configured for."""
    rope_theta: float = 10_000.0
    """Rotary embedding base."""
    tie_embeddings: bool = True
    """Share input embedding and output projection (saves parameters at small sizes)."""
    dropout: float = 0.0
    """Attention dropout during training."""

    def __post_init__(self) -> None:
        _require(self.vocab_size > 0 and self.hidden_size > 0 and self.num_layers > 0,
                 "model sizes (vocab_size, hidden_size, num_layers) must be positive")
        _require(self.hidden_size % self.num_heads == 0, "model.hidden_size must be divisible by model.num_heads")
        _require(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be divisible by model.num_kv_heads")
        _require(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_parameters(self) -> int:
        """Parameter count of the decoder this config builds (no bias terms, RMSNorm weights included)."""
        d, f, kv = self.hidden_size, self.intermediate_size, self.num_kv_heads * self.head_dim
        per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embeddings + d


MODEL_PRESETS: dict[str, ModelConfig] = {
    # ~1M parameters at a 2k vocabulary: trains on two CPU cores in a few minutes.
    "nano": ModelConfig(hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
                        max_seq_len=512),
    "micro": ModelConfig(hidden_size=256, intermediate_size=768, num_layers=6, num_heads=8, num_kv_heads=4,
                         max_seq_len=1024),
    # GPU sizes: ~125M and ~1B parameters per expert at a 32k vocabulary.
    "125m": ModelConfig(vocab_size=32_000, hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12,
                        num_kv_heads=4, max_seq_len=2048, tie_embeddings=True),
    "1b": ModelConfig(vocab_size=32_000, hidden_size=2048, intermediate_size=5632, num_layers=22, num_heads=32,
                      num_kv_heads=4, max_seq_len=4096, tie_embeddings=False, rope_theta=500_000.0),
}


def model_preset(name: str, *, vocab_size: int | None = None) -> ModelConfig:
    """The named decoder preset, with the vocabulary size of the expert's tokenizer when given."""
    if name not in MODEL_PRESETS:
        raise FlipmoeInputError(f"unknown model preset {name!r}", hint=f"choose one of {', '.join(MODEL_PRESETS)}")
    preset = MODEL_PRESETS[name]
    return replace(preset, vocab_size=vocab_size) if vocab_size else preset


@dataclass(kw_only=True, frozen=True)
class TrainConfig:
    """One single-process training run (pretraining on the corpus, then fine-tuning on task data)."""

    steps: int = 600
    """Optimizer steps in total (pretraining and task fine-tuning together)."""
    task_fraction: float = 0.5
    """Share of `steps` spent on task data at the end of the run (the curriculum's hardest stage)."""
    batch_size: int = 16
    """Sequences per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seq_len: int = 256
    """Tokens per packed pretraining sequence; task examples longer than this are truncated from the left."""
    lr: float = 3e-3
    """Peak learning rate of AdamW."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to `lr * min_lr_ratio`."""
    warmup_steps: int = 30
    """Linear warm-up before the cosine decay."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to norms and embeddings)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast where the hardware supports it ("auto": on CUDA with bf16 support), else fp32."""
    seed: int = 0
    """Seed of initialisation, data order and masking."""
    checkpoint_every: int = 200
    """Steps between resumable checkpoints (0 = only at the end)."""
    eval_every: int = 100
    """Steps between held-out loss evaluations (0 = only at the end)."""

    def __post_init__(self) -> None:
        _require(self.steps > 0 and self.batch_size > 0 and self.grad_accum > 0 and self.seq_len >= 16,
                 "train.steps, train.batch_size, train.grad_accum must be positive and train.seq_len >= 16")
        _require(0.0 <= self.task_fraction <= 1.0, "train.task_fraction must be in [0, 1]")
        _require(self.lr > 0 and 0 <= self.min_lr_ratio <= 1, "train.lr must be > 0, train.min_lr_ratio in [0, 1]")
        _require(self.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16")


@dataclass(kw_only=True, frozen=True)
class ExpertConfig:
    """Everything that defines one expert; saved as `config.yaml` in its checkpoint."""

    name: str
    """Expert name, unique in a bundle (e.g. "logs")."""
    family: str
    """Expert family in the registry (`experts.EXPERT_FAMILIES`)."""
    objective: str = "causal"
    """Pretraining objective, one of `OBJECTIVES`."""
    tasks: tuple[str, ...] = ()
    """Task names this expert is fine-tuned on (the task registry in `experts.tasks`)."""
    preset: str = "nano"
    """Name of the decoder preset the model config came from."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The expert's own sentencepiece tokenizer."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The expert's own decoder."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How it is trained."""

    def __post_init__(self) -> None:
        _require(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
                 f"expert name {self.name!r} must be letters, digits, '-' or '_'")
        _require(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}")
        _require(self.model.vocab_size == self.tokenizer.vocab_size,
                 "model.vocab_size must equal tokenizer.vocab_size (each expert owns its vocabulary)")
