"""The logs expert as a detector: how unlike the logs it knows a line reads.

The expert is a causal language model of log text. A line's score is its mean negative log-likelihood per
token divided by that of a uniform guess over the vocabulary (ln V), capped at 1: a line made of familiar
pieces in a familiar order scores near 0, a line the model predicts no better than chance 1.

Streaming with adaptation (the default of `flipmoe detect logs`): lines are scored in blocks of
`adapt_every`; after a block is scored, the model takes `adapt_steps` steps of continued pretraining on it.
So the score of line n depends on lines before it only, and the expert learns the system it reads as it
goes: its routine lines stop surprising it, a line unlike anything before still does. Adaptation changes the
weights of the expert it is given; load a separate copy for other uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from data_pipeline.tokenizer import BOS_ID, PAD_ID

ADAPT_EVERY, ADAPT_STEPS = 256, 4
"""Streaming adaptation: after every ADAPT_EVERY lines are scored, ADAPT_STEPS steps of continued
pretraining on them, so the expert learns the system it reads (its templates, hosts, rhythm) as it goes."""


class LogsDetector:
    """Scores log lines with a local logs expert (`experts.expert.Expert`)."""

    def __init__(self, expert: Any, *, batch: int = 64, adapt_every: int = 0, adapt_steps: int = ADAPT_STEPS,
                 adapt_lr: float = 1e-3) -> None:
        self.expert, self.batch = expert, batch
        self.max_tokens = int(expert.config.model.max_seq_len) - 1
        self.adapt_every, self.adapt_steps, self.adapt_lr = adapt_every, adapt_steps, adapt_lr
        self._optimiser: Any = None

    @torch.no_grad()
    def nll_per_token(self, lines: list[str]) -> np.ndarray:
        """Mean negative log-likelihood (nats) per token of each line; 0 for an empty line."""
        encoded = [self.expert.tokenizer.encode(line)[: self.max_tokens] for line in lines]
        out = np.zeros(len(lines), dtype=np.float64)
        order = sorted(range(len(lines)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        model = self.expert.model
        model.eval()
        for first in range(0, len(order), self.batch):
            rows = [i for i in order[first:first + self.batch] if encoded[i]]
            if not rows:
                continue
            length = 1 + max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, :1 + len(encoded[i])] = torch.tensor([BOS_ID, *encoded[i]])
            mask = torch.zeros_like(ids)
            for r, i in enumerate(rows):
                mask[r, :1 + len(encoded[i])] = 1
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
            token_nll = -logp.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
            means = token_nll.sum(dim=1) / mask[:, 1:].sum(dim=1)
            out[rows] = means.double().numpy()
        return out

    def score(self, lines: list[str]) -> np.ndarray:
        """Mean surprise per token of each line relative to a uniform guess, in [0, 1]."""
        uniform = np.log(self.expert.config.model.vocab_size)
        if not self.adapt_every:
            return np.clip(self.nll_per_token(lines) / uniform, 0.0, 1.0)
        out = []
        for first in range(0, len(lines), self.adapt_every):
            block = lines[first:first + self.adapt_every]
            out.append(np.clip(self.nll_per_token(block) / uniform, 0.0, 1.0))
            self._adapt(block)
        return np.concatenate(out) if out else np.zeros(0)

    def _adapt(self, lines: list[str]) -> None:
        """A few steps of continued pretraining on lines already scored."""
        model = self.expert.model
        if self._optimiser is None:
            self._optimiser = torch.optim.AdamW(model.parameters(), lr=self.adapt_lr, weight_decay=0.0)
        encoded = [e[: self.max_tokens] for e in (self.expert.tokenizer.encode(line) for line in lines) if e]
        if not encoded:
            return
        rng = np.random.default_rng(len(encoded))
        model.train()
        for _ in range(self.adapt_steps):
            rows = [encoded[i] for i in rng.choice(len(encoded), size=min(32, len(encoded)), replace=False)]
            length = 1 + max(len(r) for r in rows)
            ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
            labels = torch.full((len(rows), length), -100, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, :1 + len(row)] = torch.tensor([BOS_ID, *row])
                labels[r, 1:1 + len(row)] = torch.tensor(row)
            loss = model(input_ids=ids, attention_mask=(ids != PAD_ID).long(),
                         labels=labels).loss
            self._optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self._optimiser.step()
        model.eval()
