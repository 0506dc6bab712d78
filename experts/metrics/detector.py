"""The metrics expert as a detector: a causal model of value tokens that knows what normal series look like.

The model (a Hugging Face `LlamaForCausalLM`, as every expert's decoder) reads a series as value
tokens (`experts.metrics.values`) and predicts a distribution over the next value's bin. It is trained
on fault-free series only (the chaos gym's baselines), so it learns what normal behaviour looks like and a
fault's change is what it does not expect; trained on incident windows too, it learnt that faults happen
and flagged them less (average precision 0.70 against 0.95 on unseen chaos series).

A sample's **score** is how far into the tails of the model's forecast it falls: 1 - 2 min(F, 1 - F), with
F the forecast probability of a lower value (plus half the observed bin's). 0 is the median guess, near 1
a value the model gave almost no chance. The score is in [0, 1] and needs no threshold per series.

Scoring is streaming: the series is cut into chunks of `chunk` samples; each chunk is scaled by the
`history` samples before it, and all its samples are judged by the one forecast the model makes from up to
`context` samples before the chunk. So the score of sample t depends on samples before t only (as an
alerting system needs), and the model cannot settle into a fault by reading its first samples in the
chunk. The first `min_history` samples of a series are not scored (score 0); a missing sample (NaN)
scores 0.

Checkpoint directory: `detector.json` (value tokenizer, decoder config, chunking), `model.safetensors`,
`card.json` (training data and run).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers import LlamaForCausalLM

from experts.config import ModelConfig, model_preset
from experts.metrics.values import NAN_ID, PAD_ID, ValueTokenizer, ValueTokenizerConfig
from experts.model import build_decoder
from flipmoe.errors import FlipmoeInputError

DETECTOR_FILE, WEIGHTS_FILE, CARD_FILE = "detector.json", "model.safetensors", "card.json"


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """The value tokenizer, the decoder, and how a series is cut for scoring."""

    tokenizer: ValueTokenizerConfig = field(default_factory=ValueTokenizerConfig)
    model: ModelConfig = field(default_factory=lambda: model_preset("nano"))
    chunk: int = 32
    """Samples judged by one forecast (all scaled by the history before the chunk)."""
    context: int = 96
    """Samples before a chunk that the model reads."""

    def to_json(self) -> dict[str, Any]:
        return {"tokenizer": asdict(self.tokenizer), "model": asdict(self.model), "chunk": self.chunk,
                "context": self.context}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetectorConfig:
        return cls(tokenizer=ValueTokenizerConfig(**data["tokenizer"]), model=ModelConfig(**data["model"]),
                   chunk=int(data["chunk"]), context=int(data["context"]))


@dataclass
class Window:
    """One forward pass: the token sequence and which samples of the series its chunk covers."""

    ids: np.ndarray
    start: int
    """Index in the series of the first sample the sequence holds (its context start)."""
    chunk_start: int
    chunk_end: int


class MetricsDetector:
    """A trained (or fresh) value model with its tokenizer; `score()` scores a series, streaming."""

    def __init__(self, config: DetectorConfig, model: LlamaForCausalLM | None = None,
                 card: dict[str, Any] | None = None) -> None:
        self.config = config
        self.tokenizer = ValueTokenizer(config.tokenizer)
        if config.model.vocab_size != self.tokenizer.vocab_size:
            raise FlipmoeInputError(f"detector model.vocab_size {config.model.vocab_size} differs from its value "
                                    f"tokenizer's {self.tokenizer.vocab_size}")
        self.model = model if model is not None else build_decoder(config.model)
        self.card = card or {}

    @classmethod
    def fresh(cls, tokenizer: ValueTokenizerConfig | None = None, preset: str = "nano",
              **kwargs: Any) -> MetricsDetector:
        tokens = ValueTokenizer(tokenizer)
        return cls(DetectorConfig(tokenizer=tokens.config, model=model_preset(preset, vocab_size=tokens.vocab_size),
                                  **kwargs))

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / DETECTOR_FILE).write_text(json.dumps(self.config.to_json(), indent=2) + "\n", encoding="utf-8")
        save_model(self.model, str(directory / WEIGHTS_FILE))
        (directory / CARD_FILE).write_text(json.dumps(self.card, indent=2) + "\n", encoding="utf-8")
        for path in directory.iterdir():
            path.chmod(0o644)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MetricsDetector:
        directory = Path(directory)
        missing = [f for f in (DETECTOR_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
        if missing:
            raise FlipmoeInputError(f"not a metrics detector: missing {', '.join(missing)}", path=directory,
                                    hint="train one with 'flipmoe train detector' or build a bundle")
        try:
            config = DetectorConfig.from_json(json.loads((directory / DETECTOR_FILE).read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:
            raise FlipmoeInputError(f"unreadable {DETECTOR_FILE}: {err}", path=directory) from None
        model = build_decoder(config.model)
        load_model(model, str(directory / WEIGHTS_FILE), strict=True, device="cpu")
        model.eval()
        card_path = directory / CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
        return cls(config, model, card)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- windows -------------------------------------------------------------------------------------------

    def window(self, metric: str, values: np.ndarray, chunk_start: int) -> Window:
        """The sequence that scores samples `chunk_start .. chunk_start + chunk` of `values`."""
        cfg = self.config
        chunk_end = min(chunk_start + cfg.chunk, len(values))
        centre, spread = self.tokenizer.scale(values[max(0, chunk_start - cfg.tokenizer.history):chunk_start])
        start = max(0, chunk_start - cfg.context)
        ids = self.tokenizer.sequence(metric, values[start:chunk_end], centre, spread)
        return Window(ids=ids, start=start, chunk_start=chunk_start, chunk_end=chunk_end)

    def windows(self, metric: str, values: np.ndarray) -> list[Window]:
        """The chunks to score: from the first sample with `min_history` real values before it, every `chunk`
        samples; a chunk whose history holds fewer real values (a gap in the data) is not scored."""
        cfg = self.config.tokenizer
        finite = np.concatenate([[0], np.cumsum(np.isfinite(values))])  # finite[t]: real values before t
        ready = np.flatnonzero(finite[:len(values)] >= cfg.min_history)
        if ready.size == 0:
            return []
        starts = range(max(int(ready[0]), cfg.min_history), len(values), self.config.chunk)
        return [self.window(metric, values, t) for t in starts
                if finite[t] - finite[max(0, t - cfg.history)] >= cfg.min_history]

    # -- scoring -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, values: Sequence[float] | np.ndarray, metric: str = "", *, batch: int = 64) -> np.ndarray:
        """One score in [0, 1] per sample; sample t is judged from samples before it (and scaled by them)."""
        series = np.asarray(values, dtype=np.float64)
        scores = np.zeros(len(series), dtype=np.float64)
        windows = self.windows(metric, series)
        self.model.eval()
        for first in range(0, len(windows), batch):
            group = windows[first:first + batch]
            # Sample i sits at sequence index 2 + (i - start): the forecast for a chunk is read after its context.
            contexts = [w.ids[:2 + w.chunk_start - w.start] for w in group]
            forecasts = self._next_logits(contexts)
            for row, (w, context) in enumerate(zip(group, contexts, strict=True)):
                observed = w.ids[len(context):]
                scores[w.chunk_start:w.chunk_end] = self._surprise(forecasts[row].expand(len(observed), -1), observed)
        return scores

    def _next_logits(self, sequences: list[np.ndarray]) -> torch.Tensor:
        """The model's logits for the token after each sequence."""
        # Left padding, so every sequence ends at the last position; rotary attention depends only on
        # relative positions, so the pads in front (masked out) do not change the forecast.
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, length - len(seq):] = torch.from_numpy(seq)
            mask[row, length - len(seq):] = 1
        return self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()

    def _surprise(self, logits: torch.Tensor, observed: np.ndarray) -> np.ndarray:
        """Two-sided tail of the observed bin under the predicted distribution: 1 - 2 min(F, 1 - F), with F the
        probability of a lower value plus half the observed bin's (0: the median guess; near 1: far in a tail)."""
        first_bin = self.tokenizer.first_bin
        probs = torch.softmax(logits[:, first_bin:].double(), dim=1).numpy()  # values only: NaN is not scored
        rows = np.arange(len(observed))
        index = np.clip(observed - first_bin, 0, probs.shape[1] - 1)
        below = np.cumsum(probs, axis=1)[rows, index] - 0.5 * probs[rows, index]
        tail = 1.0 - 2.0 * np.minimum(below, 1.0 - below)
        return np.where(observed == NAN_ID, 0.0, np.clip(tail, 0.0, 1.0))

    # -- training ------------------------------------------------------------------------------------------

    def train(self, series: Sequence[tuple[str, np.ndarray]], *, steps: int = 1500, batch_size: int = 32,
              lr: float = 3e-3, seed: int = 0, progress: Callable[[int, float], None] | None = None
              ) -> dict[str, Any]:
        """Next-bin cross-entropy on windows cut as scoring cuts them, sampled across `series`.

        A plain torch loop, not the text trainer (`experts.trainer`): the examples are value windows cut
        on the fly from numeric series, not tokenized text shards.
        """
        usable = [(m, np.asarray(v, dtype=np.float64)) for m, v in series
                  if len(v) > self.config.tokenizer.min_history + 1]
        if not usable:
            raise FlipmoeInputError("no series long enough to train the metrics detector",
                                    hint=f"series need more than {self.config.tokenizer.min_history + 1} samples")
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        weights = np.array([len(v) for _, v in usable], dtype=np.float64)
        weights /= weights.sum()
        optimiser = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        self.model.train()
        losses: list[float] = []
        started = time.perf_counter()
        for step in range(steps):
            sequences = []
            for index in rng.choice(len(usable), size=batch_size, p=weights):
                metric, values = usable[index]
                chunk_start = int(rng.integers(self.config.tokenizer.min_history, len(values)))
                sequences.append(self.window(metric, values, chunk_start).ids)
            length = max(len(s) for s in sequences)
            ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
            labels = torch.full((len(sequences), length), -100, dtype=torch.long)
            for row, seq in enumerate(sequences):
                ids[row, :len(seq)] = torch.from_numpy(seq)
                labels[row, 2:len(seq)] = torch.from_numpy(seq[2:])  # values only, not BOS or the category
            loss = self.model(input_ids=ids, attention_mask=(ids != PAD_ID).long(), labels=labels).loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(step, losses[-1])
        self.model.eval()
        tail = losses[-max(1, steps // 10):]
        return {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "series": len(usable),
                "samples": int(sum(len(v) for _, v in usable)), "final_loss": round(float(np.mean(tail)), 4),
                "first_loss": round(losses[0], 4), "seconds": round(time.perf_counter() - started, 1)}
