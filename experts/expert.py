"""An expert: its config, its own tokenizer, its own decoder and its training card, in one directory.

```
<expert>/
  config.yaml          ExpertConfig (tokenizer, decoder, objective, tasks, training run)
  tokenizer.model      the expert's sentencepiece model
  model.safetensors    decoder weights
  card.json            training card: data sources and sizes, steps, tokens, final loss, task scores
```

`Expert.from_checkpoint(dir)` loads all of it; `generate()` answers prompts (greedy or sampled, stop
sequences, constrained decoding). Remote experts (`experts.remote.RemoteExpert`) offer the same
`name` / `generate` / `generate_batch` interface (`GenerativeExpert`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from transformers import LlamaForCausalLM, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from data_pipeline.tokenizer import TOKENIZER_FILE, Tokenizer
from experts.config import ExpertConfig, format_prompt
from experts.interface import Constraint, Generation
from experts.model import build_decoder
from flipmoe.config import load_yaml, save_yaml
from flipmoe.errors import FlipmoeInputError

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.yaml", "model.safetensors", "card.json"


@dataclass
class Expert:
    """A local expert: config, tokenizer, decoder, card."""

    config: ExpertConfig
    tokenizer: Tokenizer
    model: LlamaForCausalLM
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    def create(cls, config: ExpertConfig, tokenizer: Tokenizer) -> Expert:
        """An untrained expert around a trained tokenizer (the decoder's vocabulary is the tokenizer's)."""
        if config.model.vocab_size != tokenizer.vocab_size:
            raise FlipmoeInputError(f"expert {config.name!r}: model.vocab_size {config.model.vocab_size} differs "
                                    f"from its tokenizer's {tokenizer.vocab_size}")
        return cls(config=config, tokenizer=tokenizer, model=build_decoder(config.model, seed=config.train.seed))

    @classmethod
    def from_checkpoint(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Expert:
        directory = Path(directory)
        missing = [f for f in (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
        if missing:
            raise FlipmoeInputError(f"not an expert checkpoint: missing {', '.join(missing)}", path=directory,
                                    hint="train one with 'flipmoe train expert' or build a bundle")
        config = load_yaml(ExpertConfig, directory / CONFIG_FILE)
        tokenizer = Tokenizer.load(directory / TOKENIZER_FILE)
        model = build_decoder(config.model)
        load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=str(device))
        # transformers wraps `to` in functools.wraps, which typeshed types as an unbound callable.
        model.to(device).eval()  # type: ignore[arg-type]
        card_path = directory / CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
        return cls(config=config, tokenizer=tokenizer, model=model, card=card)

    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint; files are written to a temporary name and renamed, so a crash leaves the old one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic(directory / CONFIG_FILE, lambda p: save_yaml(self.config, p))
        _atomic(directory / TOKENIZER_FILE, lambda p: Path(p).write_bytes(self.tokenizer._proto))
        _atomic(directory / WEIGHTS_FILE, lambda p: save_model(self.model, p, metadata={"expert": self.name}))
        _atomic(directory / CARD_FILE, lambda p: Path(p).write_text(json.dumps(self.card, indent=2) + "\n",
                                                                     encoding="utf-8"))
        return directory

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- scoring ---------------------------------------------------------------------------------

    @torch.no_grad()
    def answer_loss(self, prompt: str, answer: str, *, task: str | None = None) -> float:
        """Mean negative log-likelihood per token of `answer` (then eos) after the prompt."""
        prompt_ids = self._prompt_ids(prompt, task)
        answer_ids = self.tokenizer.encode(answer, eos=True)
        ids = torch.tensor([prompt_ids + answer_ids], device=self.device)
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        self.model.eval()
        return float(self.model(input_ids=ids, labels=labels).loss)

    # -- generation ------------------------------------------------------------------------------

    def generate(self, prompt: str, *, task: str | None = None, max_new_tokens: int = 64,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                 constraint: Constraint | None = None, seed: int | None = None) -> Generation:
        """Answer one prompt. With `task`, the prompt is wrapped in the task format the expert was tuned on."""
        processors = [constraint.logits_processor(self.tokenizer)] if constraint is not None else []
        return self._generate([prompt], task=task, max_new_tokens=max_new_tokens, stop=stop,
                              temperature=temperature, top_p=top_p, processors=processors, seed=seed)[0]

    def generate_batch(self, prompts: Sequence[str], *, task: str | None = None, max_new_tokens: int = 64,
                       stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0,
                       seed: int | None = None, constraint: Constraint | None = None) -> list[Generation]:
        """Answer several prompts in one padded batch (left padding, so every row decodes from its end);
        with `constraint`, every row's answer follows it (one grammar state per row)."""
        processors = [constraint.logits_processor(self.tokenizer)] if constraint is not None else []
        return self._generate(list(prompts), task=task, max_new_tokens=max_new_tokens, stop=stop,
                              temperature=temperature, top_p=top_p, processors=processors, seed=seed)

    def stream(self, prompt: str, *, task: str | None = None, max_new_tokens: int = 64, stop: Sequence[str] = (),
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Answer one prompt, yielding text as tokens are decoded (generation runs in a helper thread)."""
        chunks: queue.Queue[str | BaseException | None] = queue.Queue()
        streamer = _TextStreamer(self.tokenizer, chunks)

        def run() -> None:
            try:
                self._generate([prompt], task=task, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                               top_p=top_p, processors=[], seed=seed, streamer=streamer)
            except BaseException as err:  # surfaced to the consumer below
                chunks.put(err)
            finally:
                chunks.put(None)

        threading.Thread(target=run, name=f"stream-{self.name}", daemon=True).start()
        emitted, text = "", ""
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            # Hold back text that could be the start of a stop sequence; cut at a complete one.
            text += item
            cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            if cut >= 0:
                if cut > len(emitted):
                    yield text[len(emitted):cut]
                return
            safe = len(text) - max((len(s) - 1 for s in stop), default=0)
            if safe > len(emitted):
                yield text[len(emitted):safe]
                emitted = text[:safe]
        if len(text) > len(emitted):
            yield text[len(emitted):]

    def _prompt_ids(self, prompt: str, task: str | None) -> list[int]:
        text = format_prompt(task, prompt) if task is not None else prompt
        ids = self.tokenizer.encode(text, bos=True)
        # Keep the end of long prompts: the answer marker and the latest evidence are there.
        budget = self.config.model.max_seq_len - 1
        return ids[-budget:] if len(ids) > budget else ids

    @torch.no_grad()
    def _generate(self, prompts: list[str], *, task: str | None, max_new_tokens: int, stop: Sequence[str],
                  temperature: float, top_p: float, processors: list[LogitsProcessor],
                  seed: int | None, streamer: Any = None) -> list[Generation]:
        if not prompts:
            return []
        if max_new_tokens < 1:
            raise FlipmoeInputError("max_new_tokens must be at least 1")
        if temperature < 0 or not 0 < top_p <= 1:
            raise FlipmoeInputError("temperature must be >= 0 and top_p in (0, 1]")
        rows = [self._prompt_ids(p, task) for p in prompts]
        max_new_tokens = min(max_new_tokens, self.config.model.max_seq_len - max(len(r) for r in rows))
        if max_new_tokens < 1:
            raise FlipmoeInputError(f"prompt fills the expert's context of {self.config.model.max_seq_len} tokens")
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        stopper = _StopSequences(self.tokenizer, stop, prompt_width=width) if stop else None
        generator_state = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        self.model.eval()
        with generator_state:
            if seed is not None:
                torch.manual_seed(seed)
            sampled = temperature > 0
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                do_sample=sampled, temperature=temperature if sampled else None, top_p=top_p if sampled else None,
                top_k=None, logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([stopper] if stopper else []),
                pad_token_id=pad, eos_token_id=self.tokenizer.eos_id, bos_token_id=self.tokenizer.bos_id,
                streamer=streamer,
            )
        results = []
        for row, prompt_ids in zip(output[:, width:].tolist(), rows, strict=True):
            new = row[: row.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in row else row
            text = self.tokenizer.decode(new)
            finish = "stop" if len(new) < len(row) else "length"
            for s in stop:
                cut = text.find(s)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            n_new = len([t for t in new if t != pad])
            results.append(Generation(text=text, expert=self.name, finish_reason=finish,
                                      prompt_tokens=len(prompt_ids), completion_tokens=n_new))
        return results


class _TextStreamer(BaseStreamer):
    """Receives token ids from `generate` and queues the newly decoded text (prompt ids are skipped).

    Decoding the whole answer each time (not token by token) keeps multi-byte characters that span
    byte-fallback pieces intact; only the new suffix is queued.
    """

    def __init__(self, tokenizer: Tokenizer, chunks: queue.Queue[Any]) -> None:
        self.tokenizer, self.chunks = tokenizer, chunks
        self.ids: list[int] = []
        self.text = ""
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            return
        if len(text) > len(self.text) and text.startswith(self.text):
            self.chunks.put(text[len(self.text):])
        self.text = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids)
        if len(text) > len(self.text) and text.startswith(self.text):
            self.chunks.put(text[len(self.text):])
        self.text = text


class _StopSequences(StoppingCriteria):
    """Stops a row once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], *, prompt_width: int) -> None:
        self.tokenizer, self.stop, self.prompt_width = tokenizer, tuple(stop), prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = [any(s in self.tokenizer.decode(row[self.prompt_width:].tolist()) for s in self.stop)
                for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is meant to be shared and served
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
