"""What every tokenizer shares: the objectives, the control symbols, the prompt format, the tokenizer config.

The data pipeline tokenizes shards with these and the experts read prompts in this format, so they live
in the lower layer both use.
"""

from __future__ import annotations

from dataclasses import dataclass
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
