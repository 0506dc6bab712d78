"""Typed configuration of an expert: its tokenizer, its decoder, its objective and its training run.

An expert is described entirely by an `ExpertConfig`, saved as `config.yaml` inside its checkpoint
directory, so a checkpoint can be rebuilt and retrained from itself. Decoder sizes come from named
presets (`MODEL_PRESETS`): "nano" trains on two CPU cores in minutes, the others are meant for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from flipmoe.errors import FlipmoeInputError

Objective = Literal["causal", "ul2", "significance"]
"""Pretraining objective: causal LM (logs, traces, metrics), UL2 mixture of denoisers (prose),
significance masking of identifiers, calls, literals and keys (code, configuration)."""

OBJECTIVES: tuple[str, ...] = ("causal", "ul2", "significance")

# Control symbols every expert's tokenizer reserves as single pieces (user-defined symbols), so a
# prompt's structure never depends on how the corpus happened to split them.
TASK_OPEN = "<task>"
"""Opens the task name at the start of a prompt: `<task>log_template<input>...<answer>`."""
INPUT_OPEN = "<input>"
"""Separates the task name from the task input."""
ANSWER_OPEN = "<answer>"
"""Ends the prompt; the expert's answer follows, then end-of-sequence."""
PROMPT_SYMBOLS: tuple[str, ...] = (TASK_OPEN, INPUT_OPEN, ANSWER_OPEN)
N_SENTINELS = 32
"""Sentinel tokens `<extra_id_0>`... reserved for span corruption (UL2, significance masking)."""
SENTINELS: tuple[str, ...] = tuple(f"<extra_id_{i}>" for i in range(N_SENTINELS))
DENOISER_MODES: tuple[str, ...] = ("[R]", "[X]", "[S]")
"""UL2 mode tokens: regular span corruption, extreme span corruption, sequential (prefix LM)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FlipmoeInputError(message)


def format_prompt(task: str, text: str) -> str:
    """The prompt an expert answers: task name, input, and the answer marker the answer follows."""
    return f"{TASK_OPEN}{task}{INPUT_OPEN}{text}{ANSWER_OPEN}"


@dataclass(kw_only=True, frozen=True)
class TokenizerConfig:
    """A sentencepiece model trained on the expert's own corpus."""

    vocab_size: int = 2048
    """Pieces in the vocabulary, control symbols and byte pieces included."""
    model_type: Literal["unigram", "bpe"] = "unigram"
    """Segmentation algorithm."""
    byte_fallback: bool = True
    """Unknown characters become UTF-8 byte pieces, so every string round-trips losslessly."""
    split_digits: bool = False
    """One piece per digit; on for experts that read numbers (metrics, time series)."""
    user_defined_symbols: tuple[str, ...] = ()
    """Structure markers kept whole (span or field boundaries), beyond the prompt and sentinel symbols."""
    character_coverage: float = 0.9995
    """Share of characters covered by pieces; the rest go through byte fallback."""
    max_sentence_length: int = 16384
    """Longest training sentence in bytes; longer ones are skipped by the trainer."""
    input_sentence_size: int = 200_000
    """Sentences sampled from the corpus to train on (0 = all)."""

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 300, "tokenizer.vocab_size must be at least 300 (256 byte pieces + symbols)")
        _require(self.model_type in ("unigram", "bpe"), "tokenizer.model_type must be 'unigram' or 'bpe'")
        _require(0.9 <= self.character_coverage <= 1.0, "tokenizer.character_coverage must be in [0.9, 1]")


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
