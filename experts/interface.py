"""What every expert offers, local or remote: `Generation`, `Constraint`, `GenerativeExpert`.

Kept apart from `experts.expert` so that code which only talks to experts (remote experts, the router,
the serving layer) does not import torch and transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import LogitsProcessor

    from data_pipeline.tokenizer import Tokenizer

__all__ = ["Constraint", "Generation", "GenerativeExpert"]


@dataclass(frozen=True)
class Generation:
    """One answer: its text, the expert that wrote it, and why decoding stopped."""

    text: str
    expert: str
    finish_reason: str  # "stop" (eos or a stop sequence), "length" (max tokens) or "constraint"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Constraint(Protocol):
    """Restricts decoding to a language (a JSON schema, a regular expression, a grammar)."""

    def logits_processor(self, tokenizer: Tokenizer) -> LogitsProcessor:
        """A processor that masks, at each step, the tokens that cannot continue a valid output."""


@runtime_checkable
class GenerativeExpert(Protocol):
    """What the router, FlipMoE and the director call: a local or a remote expert."""

    name: str

    def generate(self, prompt: str, *, task: str | None = None, max_new_tokens: int = 64,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                 constraint: Constraint | None = None, seed: int | None = None) -> Generation: ...

    def generate_batch(self, prompts: Sequence[str], *, task: str | None = None, max_new_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                       seed: int | None = None) -> list[Generation]: ...
