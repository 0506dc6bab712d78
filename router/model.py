"""The router: a linear classifier over the experts, read through temperature-scaled softmax.

Routing is per request, not per token, because the experts do not share a tokenizer. The router scores
each expert for a request, answers with the best one and a calibrated confidence (the temperature is
fitted on held-out predictions, so a confidence of 0.8 is right about 80% of the time), and names
fallback experts when the confidence is below a threshold — FlipMoE asks them too and keeps the answer
its own expert finds likelier.

```
<router>/
  config.yaml          RouterConfig (experts, encoder, temperature, threshold)
  weights.safetensors  weight_EF, bias_E
  card.json            training data, oracle label counts, accuracy, calibration (ECE)
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from flipmoe.config import load_yaml, save_yaml
from flipmoe.errors import FlipmoeInputError
from router.encoder import EncoderConfig, HashedNgramEncoder

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.yaml", "weights.safetensors", "card.json"


@dataclass(kw_only=True, frozen=True)
class RouterConfig:
    """What a trained router is: its experts, its encoder and how its scores are read."""

    experts: tuple[str, ...]
    """Expert names, in the order of the classifier's rows."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The tokenizer-independent request encoder."""
    temperature: float = 1.0
    """Softmax temperature fitted on held-out predictions (calibration); 1 = uncalibrated."""
    threshold: float = 0.6
    """Below this confidence the decision names fallback experts."""
    top_k: int = 2
    """Experts asked when the confidence is low (the chosen one and `top_k - 1` fallbacks)."""

    def __post_init__(self) -> None:
        if not self.experts or len(set(self.experts)) != len(self.experts):
            raise FlipmoeInputError("router.experts must be a non-empty list of distinct names")
        if self.temperature <= 0 or not 0 <= self.threshold <= 1 or self.top_k < 1:
            raise FlipmoeInputError("router needs temperature > 0, threshold in [0, 1] and top_k >= 1")


@dataclass(frozen=True)
class RouteDecision:
    """Where one request goes."""

    expert: str
    """The expert that answers."""
    scores: dict[str, float]
    """Calibrated probability of every expert being the best one."""
    confidence: float
    """`scores[expert]`."""
    fallback: list[str]
    """Next-best experts to ask as well, best first; empty when the router is confident."""

    @property
    def candidates(self) -> list[str]:
        return [self.expert, *self.fallback]


class Router:
    """Scores experts for raw requests: `route(prompts, tasks) -> [RouteDecision]`."""

    def __init__(self, config: RouterConfig, weight_EF: np.ndarray, bias_E: np.ndarray,
                 card: dict[str, Any] | None = None) -> None:
        n_experts, dim = len(config.experts), config.encoder.dim
        if weight_EF.shape != (n_experts, dim) or bias_E.shape != (n_experts,):
            raise FlipmoeInputError(f"router weights have shapes {weight_EF.shape} and {bias_E.shape}, "
                                    f"expected ({n_experts}, {dim}) and ({n_experts},) from its config")
        self.config = config
        self.encoder = HashedNgramEncoder(config.encoder)
        self.weight_EF = weight_EF.astype(np.float32)
        self.bias_E = bias_E.astype(np.float32)
        self.card: dict[str, Any] = card or {}

    @property
    def experts(self) -> tuple[str, ...]:
        return self.config.experts

    def logits(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        """Uncalibrated scores, one row per prompt: logits_NE."""
        x_NF = self.encoder.encode(prompts, tasks)
        return np.asarray(x_NF @ self.weight_EF.T) + self.bias_E

    def probabilities(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        return softmax(self.logits(prompts, tasks) / self.config.temperature)

    def route(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None, *,
              threshold: float | None = None, top_k: int | None = None) -> list[RouteDecision]:
        """The expert for each prompt, with fallbacks where the confidence is below the threshold."""
        threshold = self.config.threshold if threshold is None else threshold
        top_k = self.config.top_k if top_k is None else top_k
        if not prompts:
            return []
        probs_NE = self.probabilities(prompts, tasks)
        decisions = []
        for probs_E in probs_NE:
            order = np.argsort(-probs_E, kind="stable")
            best = int(order[0])
            confidence = float(probs_E[best])
            fallback = ([self.experts[int(i)] for i in order[1:top_k]] if confidence < threshold else [])
            decisions.append(RouteDecision(expert=self.experts[best], confidence=confidence, fallback=fallback,
                                           scores={e: float(p) for e, p in zip(self.experts, probs_E, strict=True)}))
        return decisions

    # -- checkpoint ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_yaml(self.config, directory / CONFIG_FILE)
        save_file({"weight_EF": self.weight_EF, "bias_E": self.bias_E}, str(directory / WEIGHTS_FILE),
                  metadata={"experts": ",".join(self.experts)})
        (directory / CARD_FILE).write_text(json.dumps(self.card, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Router:
        directory = Path(directory)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
        if missing:
            raise FlipmoeInputError(f"not a router checkpoint: missing {', '.join(missing)}", path=directory,
                                    hint="train one with 'flipmoe train router --bundle DIR'")
        config = load_yaml(RouterConfig, directory / CONFIG_FILE)
        tensors = load_file(str(directory / WEIGHTS_FILE))
        card_path = directory / CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
        return cls(config, tensors["weight_EF"], tensors["bias_E"], card)


def softmax(logits_NE: np.ndarray) -> np.ndarray:
    shifted = logits_NE - logits_NE.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
