"""Single-process trainer of an expert's decoder.

One process, one device, the Hugging Face model untouched (no ray, no torch.distributed: scaling out is
`infra/`'s job). A run has two stages over a step budget fixed in advance:

```
steps:   0 ─────────── pretraining ───────────┬────── tasks (last task_fraction) ──────┐ steps
data:    objective sequences, curriculum order │ task sequences, every 8th micro-batch  │
         (easy -> hard, repeated per epoch)    │ replays pretraining data (no forgetting)│
```

The whole batch plan is a pure function of the config and the data sizes, so a checkpoint only has to
remember how far along the plan it is: `resume=True` continues exactly where the last checkpoint left
off (same batches, same learning rate, same RNG), and the result equals an uninterrupted run.

Labels follow the Hugging Face convention: `labels[i]` is the token at position `i` (or -100), predicted
from the positions before it. The loss of an optimizer step is the mean over all its labelled tokens,
whatever the padding and however they are split into micro-batches, so gradient accumulation is
equivalent to one large batch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
from experts.config import TrainConfig
from flipmoe.errors import FlipmoeInputError

STATE_DIR = "trainer_state"
"""Resumable checkpoint folder inside the run's output directory."""
STATE_FILE = "state.pt"
CURVE_FILES = ("loss_curve.csv", "loss_curve.json", "loss_curve.png")

_STATE_FORMAT = 1
# In the task stage every REPLAY_EVERY-th micro-batch is pretraining data: a little replay keeps the
# language model from being overwritten by a few hundred short task examples, while whole micro-batches
# (not single rows) keep the padding of the short task batches small.
REPLAY_EVERY = 8
# Sequences are sorted by length within windows of this many micro-batches before batching: it cuts
# padding several-fold on task data while keeping the curriculum order at the scale of the run.
_BUCKET_WINDOW = 16

Stage = Literal["pretrain", "tasks"]


@dataclass(kw_only=True, frozen=True)
class StepRecord:
    """One optimizer step of the loss curve."""

    step: int
    """1-based optimizer step."""
    stage: str
    """"pretrain" or "tasks"."""
    lr: float
    """Learning rate the step used."""
    loss: float
    """Mean training loss per labelled token of the step."""
    grad_norm: float
    """Global gradient norm before clipping."""
    tokens_seen: int
    """Non-padding input tokens processed so far, this step included."""


@dataclass(kw_only=True, frozen=True)
class EvalRecord:
    """Held-out losses at one step."""

    step: int
    """Optimizer steps done when it was measured."""
    losses: dict[str, float]
    """Mean loss per labelled token, per held-out set."""


@dataclass(kw_only=True, frozen=True)
class TrainResult:
    """What a finished run reports (the training card takes its numbers from here)."""

    steps: int
    """Optimizer steps done."""
    stage_steps: dict[str, int]
    """Steps per stage."""
    tokens_seen: int
    """Non-padding input tokens processed."""
    final_loss: float
    """Mean training loss over the last 5% of steps (at least one)."""
    heldout_loss: dict[str, float]
    """Held-out losses at the end of the run."""
    train_s: float
    """Seconds spent in optimizer steps (evaluation and checkpointing excluded), over all sessions of a resumed run."""
    tokens_per_s: float
    """tokens_seen / train_s."""
    device: str
    """Device the run used."""
    precision: str
    """"bf16" or "fp32", as resolved from the config and the hardware."""
    curve: tuple[StepRecord, ...]
    """Every step."""
    evals: tuple[EvalRecord, ...]
    """Every held-out evaluation."""


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of `config.lr` at 0-based optimizer step `step`: linear warm-up, then cosine decay.

    The warm-up never takes more than a fifth of the run, so a shortened run (`--steps 50`) still reaches
    its peak rate; the decay ends at `min_lr_ratio` on the last step.
    """
    warmup = min(config.warmup_steps, config.steps // 5)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - 1 - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def stage_steps(config: TrainConfig, *, has_pretrain: bool, has_tasks: bool) -> dict[str, int]:
    """Steps per stage: the last `task_fraction` of the run on task data, the rest on pretraining data."""
    if not has_pretrain and not has_tasks:
        raise FlipmoeInputError("nothing to train on: no pretraining and no task sequences")
    task_steps = round(config.steps * config.task_fraction) if has_tasks else 0
    if not has_pretrain:
        task_steps = config.steps
    return {"pretrain": config.steps - task_steps, "tasks": task_steps}


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """"auto" is bf16 on CUDA devices that support it; CPUs stay fp32 (CPU bf16 autocast is slower there)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def use_available_cpus() -> int:
    """Set torch's CPU threads to the CPUs this process can have to itself, and return that number.

    One thread per CPU on an idle machine. On a busy one (the load average says how many CPUs others
    keep busy), fewer: torch's OpenMP threads meet at a barrier after every operator, so one preempted
    thread stalls the rest, and two threads on a shared two-core machine were measured 5-20x slower than
    one. An explicit OMP_NUM_THREADS is left alone.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    others = max(0.0, os.getloadavg()[0] - 1.0)  # this process is running, so it counts in the load
    threads = max(1, min(cpus, round(cpus - others)))
    torch.set_num_threads(threads)
    return threads


class Trainer:
    """Trains `model` on pretraining then task sequences; `fit()` runs (or resumes) the whole plan.

    `out_dir` receives `trainer_state/` (resumable checkpoints) and the loss curve files; without it the
    run keeps nothing on disk (tests, benchmarks).
    """

    def __init__(self, model: torch.nn.Module, *, config: TrainConfig, pretrain: Sequence[TrainingSequence],
                 tasks: Sequence[TrainingSequence] = (),
                 heldout: Mapping[str, Sequence[TrainingSequence]] | None = None,
                 out_dir: str | Path | None = None, pad_id: int = 0, device: str | torch.device = "auto",
                 max_len: int | None = None, progress: bool = True) -> None:
        self.config = config
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        if self.device.type == "cpu":
            use_available_cpus()
        self.precision = resolve_precision(config.precision, self.device)
        model.to(self.device)
        self.model = model
        self.pretrain, self.tasks = list(pretrain), list(tasks)
        self.heldout = {name: list(rows) for name, rows in (heldout or {}).items() if rows}
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.pad_id, self.progress = pad_id, progress
        self.max_len = max_len
        self.stages = stage_steps(config, has_pretrain=bool(self.pretrain), has_tasks=bool(self.tasks))
        self.plan = _batch_plan(config, self.stages, lengths=([len(s.input_ids) for s in self.pretrain],
                                                              [len(s.input_ids) for s in self.tasks]))
        self.fingerprint = _fingerprint(self.pretrain, self.tasks)
        self.optimizer = _adamw(self.model, config, fused=self.device.type == "cuda")
        # A plain function keeps the scheduler's state dict free of pickled objects (see load_checkpoint).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.step = 0
        self.tokens_seen = 0
        self.train_s = 0.0
        self.curve: list[StepRecord] = []
        self.evals: list[EvalRecord] = []
        torch.manual_seed(config.seed)  # dropout masks; data order comes from the plan

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Run the plan to the end (from the last checkpoint with `resume`) and write the curve files."""
        if resume:
            self.load_checkpoint()
        if self.step == 0 and self.heldout:
            self.evaluate()  # the curve starts from the initial weights
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc="train")
        try:
            while self.step < self.config.steps:
                record = self.train_step()
                bar.update(1)
                bar.set_postfix(stage=record.stage, loss=f"{record.loss:.3f}", lr=f"{record.lr:.1e}",
                                tok_s=f"{self.tokens_seen / max(self.train_s, 1e-9):.0f}", refresh=False)
                done = self.step == self.config.steps
                if self.config.eval_every and self.step % self.config.eval_every == 0 and not done:
                    self.evaluate()
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0 and not done:
                    self.save_checkpoint()
        finally:
            bar.close()
        if not self.evals or self.evals[-1].step != self.step:
            self.evaluate()
        self.save_checkpoint()
        result = self.result()
        if self.out_dir is not None:
            write_loss_curve(self.out_dir, result)
        return result

    def train_step(self) -> StepRecord:
        """One optimizer step: its micro-batches, clipping, the update, the schedule."""
        micro_batches = self.plan[self.step * self.config.grad_accum:(self.step + 1) * self.config.grad_accum]
        stage = _stage_of(self.step, self.stages)
        started = time.perf_counter()
        self.model.train()
        batches = [self._collate([(self.pretrain if source == 0 else self.tasks)[i] for i in indices])
                   for source, indices in micro_batches]
        # Every labelled token of the step weighs the same, however padding splits them into micro-batches.
        n_labelled = sum(int((labels[:, 1:] != IGNORE_INDEX).sum()) for _, _, labels in batches)
        loss_sum = 0.0
        tokens = 0
        for input_ids, attention_mask, labels in batches:
            with self._autocast():
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            token_loss_sum = _token_loss_sum(logits, labels)
            (token_loss_sum / max(n_labelled, 1)).backward()
            loss_sum += float(token_loss_sum.detach())
            tokens += int(attention_mask.sum())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_s += time.perf_counter() - started
        self.step += 1
        self.tokens_seen += tokens
        record = StepRecord(step=self.step, stage=stage, lr=lr, loss=loss_sum / max(n_labelled, 1),
                            grad_norm=grad_norm, tokens_seen=self.tokens_seen)
        self.curve.append(record)
        return record

    @torch.no_grad()
    def evaluate(self) -> EvalRecord:
        """Mean loss per labelled token on each held-out set, recorded at the current step."""
        self.model.eval()
        losses: dict[str, float] = {}
        for name, rows in self.heldout.items():
            total, count = 0.0, 0
            ordered = sorted(rows, key=lambda row: len(row.input_ids))  # little padding
            for start in range(0, len(ordered), self.config.batch_size):
                input_ids, attention_mask, labels = self._collate(ordered[start:start + self.config.batch_size])
                with self._autocast():
                    logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                total += float(_token_loss_sum(logits, labels))
                count += int((labels[:, 1:] != IGNORE_INDEX).sum())
            losses[name] = total / max(count, 1)
        record = EvalRecord(step=self.step, losses=losses)
        self.evals.append(record)
        return record

    def result(self) -> TrainResult:
        tail = self.curve[-max(1, len(self.curve) // 20):]
        return TrainResult(
            steps=self.step, stage_steps=dict(self.stages), tokens_seen=self.tokens_seen,
            final_loss=sum(r.loss for r in tail) / len(tail) if tail else float("nan"),
            heldout_loss=dict(self.evals[-1].losses) if self.evals else {}, train_s=self.train_s,
            tokens_per_s=self.tokens_seen / self.train_s if self.train_s else 0.0,
            device=str(self.device), precision=self.precision, curve=tuple(self.curve), evals=tuple(self.evals))

    # -- checkpoints -------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path | None:
        return self.out_dir / STATE_DIR / STATE_FILE if self.out_dir is not None else None

    def save_checkpoint(self) -> Path | None:
        """Everything `resume` needs, written atomically (a crash while saving keeps the previous one)."""
        path = self.state_path
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "format": _STATE_FORMAT, "config": asdict(self.config), "fingerprint": self.fingerprint,
            "step": self.step, "data_position": self.step * self.config.grad_accum,
            "tokens_seen": self.tokens_seen, "train_s": self.train_s,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng,
            "curve": [asdict(r) for r in self.curve], "evals": [asdict(r) for r in self.evals],
        }
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self) -> None:
        """Continue from `trainer_state/`; refuses a checkpoint written by a different run or data."""
        path = self.state_path
        if path is None or not path.is_file():
            raise FlipmoeInputError("nothing to resume: no trainer checkpoint", path=path or STATE_DIR,
                                    hint="run without --resume to start from scratch")
        # Tensors and plain Python values only: a checkpoint folder cannot run code when it is loaded.
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != _STATE_FORMAT or state["config"] != asdict(self.config):
            raise FlipmoeInputError("trainer checkpoint was written with a different training config", path=path,
                                    hint="resume with the same options, or delete trainer_state/ to start over")
        if state["fingerprint"] != self.fingerprint:
            raise FlipmoeInputError("trainer checkpoint was written for different training data", path=path,
                                    hint="the corpus or task data changed; delete trainer_state/ to start over")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.step, self.tokens_seen, self.train_s = state["step"], state["tokens_seen"], state["train_s"]
        self.curve = [StepRecord(**r) for r in state["curve"]]
        self.evals = [EvalRecord(**r) for r in state["evals"]]

    # -- helpers -----------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _collate(self, rows: Sequence[TrainingSequence]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded to the longest row of this batch (not to seq_len): pad positions are masked and unlabelled."""
        input_ids, attention_mask, labels = collate(rows, pad_id=self.pad_id, max_len=self.max_len)
        return input_ids.to(self.device), attention_mask.to(self.device), labels.to(self.device)


def collate(rows: Sequence[TrainingSequence], *, pad_id: int,
            max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels (B, T) for `rows`, right-padded to the longest; rows beyond
    `max_len` keep their end (the answer is there)."""
    cut = [(r.input_ids[-max_len:], r.labels[-max_len:]) if max_len and len(r.input_ids) > max_len
           else (r.input_ids, r.labels) for r in rows]
    width = max(len(ids) for ids, _ in cut)
    input_ids = torch.full((len(cut), width), pad_id, dtype=torch.long)
    labels = torch.full((len(cut), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(cut), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(cut):
        input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[i, :len(labs)] = torch.tensor(labs, dtype=torch.long)
        attention_mask[i, :len(ids)] = 1
    return input_ids, attention_mask, labels


def _token_loss_sum(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of next-token predictions (position t predicts label t+1), in fp32."""
    vocab = logits_BTV.shape[-1]
    return F.cross_entropy(logits_BTV[:, :-1].reshape(-1, vocab).float(), labels_BT[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def _adamw(model: torch.nn.Module, config: TrainConfig, *, fused: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices of attention and MLP only.

    Norm gains and embeddings are left undecayed: decaying a gain pulls it towards zero rather than
    towards "no effect", and rare tokens' embeddings would shrink between their few updates.
    """
    from transformers import PreTrainedModel

    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    if isinstance(output, torch.nn.Linear):  # untied output projection (tied ones are the embedding itself)
        embeddings.add(id(output.weight))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused or None)


MicroBatch = tuple[int, tuple[int, ...]]
"""(source, row indices): source 0 is the pretraining sequences, 1 the task sequences."""


def _batch_plan(config: TrainConfig, stages: Mapping[str, int], *,
                lengths: tuple[list[int], list[int]]) -> list[MicroBatch]:
    """Every micro-batch of the run, in order: a pure function of the config and the rows' lengths."""
    n_pretrain, n_tasks = len(lengths[0]), len(lengths[1])
    rng = random.Random(config.seed)
    per_stage = {stage: steps * config.grad_accum for stage, steps in stages.items()}
    plan: list[MicroBatch] = []
    pretrain = _stream(0, n_pretrain, lengths[0], config.batch_size, rng, curriculum=True)
    for _ in range(per_stage["pretrain"]):
        plan.append(next(pretrain))
    if per_stage["tasks"]:
        tasks = _stream(1, n_tasks, lengths[1], config.batch_size, rng, curriculum=False)
        replay = _stream(0, n_pretrain, lengths[0], config.batch_size, rng, curriculum=False) if n_pretrain else None
        for i in range(per_stage["tasks"]):
            plan.append(next(replay) if replay is not None and i % REPLAY_EVERY == REPLAY_EVERY - 1 else next(tasks))
    return plan


def _stream(source: int, n: int, lengths: list[int], batch_size: int, rng: random.Random, *, curriculum: bool):  # type: ignore[no-untyped-def]
    """Endless micro-batches over `n` rows, epoch after epoch, bucketed by length within small windows.

    With `curriculum`, each epoch keeps the given order (the objectives' easy -> hard curriculum);
    otherwise each epoch is a fresh shuffle.
    """
    while True:
        order = list(range(n))
        if not curriculum:
            rng.shuffle(order)
        window = batch_size * _BUCKET_WINDOW
        for start in range(0, n, window):
            chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
            batches = [tuple(chunk[j:j + batch_size]) for j in range(0, len(chunk), batch_size)]
            if not curriculum:
                rng.shuffle(batches)
            for batch in batches:
                yield source, batch


def _stage_of(step: int, stages: Mapping[str, int]) -> Stage:
    return "pretrain" if step < stages["pretrain"] else "tasks"


def _fingerprint(pretrain: Sequence[TrainingSequence], tasks: Sequence[TrainingSequence]) -> str:
    digest = hashlib.sha256()
    for name, rows in (("pretrain", pretrain), ("tasks", tasks)):
        digest.update(f"{name}:{len(rows)}".encode())
        for row in rows:
            digest.update(len(row.input_ids).to_bytes(4, "little"))
            digest.update(bytes(str(row.input_ids[:8]), "ascii"))
    return digest.hexdigest()[:16]


# -- loss curve files ------------------------------------------------------------------------------

def write_loss_curve(directory: str | Path, result: TrainResult) -> list[Path]:
    """loss_curve.csv (one row per step, held-out losses on the steps they were measured),
    loss_curve.json (the same plus the run's summary) and loss_curve.png."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted({name for e in result.evals for name in e.losses})
    by_step = {e.step: e.losses for e in result.evals}
    csv_path, json_path, png_path = (directory / name for name in CURVE_FILES)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "stage", "lr", "loss", "grad_norm", "tokens_seen", *(f"heldout_{n}" for n in names)])
        for r in result.curve:
            held = by_step.get(r.step, {})
            writer.writerow([r.step, r.stage, f"{r.lr:.6g}", f"{r.loss:.6f}", f"{r.grad_norm:.4f}", r.tokens_seen,
                             *(f"{held[n]:.6f}" if n in held else "" for n in names)])
    summary = {k: v for k, v in asdict(result).items() if k not in ("curve", "evals")}
    json_path.write_text(json.dumps({**summary, "curve": [asdict(r) for r in result.curve],
                                     "evals": [asdict(e) for e in result.evals]}, indent=1) + "\n", encoding="utf-8")
    _plot(png_path, result, names)
    return [csv_path, json_path, png_path]


def _plot(path: Path, result: TrainResult, names: list[str]) -> None:
    # The object-oriented API with its own Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    steps = [r.step for r in result.curve]
    losses = [r.loss for r in result.curve]
    axes.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="train (per step)")
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
              for i in range(len(losses))]
    axes.plot(steps, smooth, color="tab:blue", linewidth=1.6, label=f"train (mean of {window})")
    for name, color in zip(names, ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
        points = [(e.step, e.losses[name]) for e in result.evals if name in e.losses]
        axes.plot([p[0] for p in points], [p[1] for p in points], "o-", color=color, label=f"held-out {name}")
    if result.stage_steps.get("pretrain") and result.stage_steps.get("tasks"):
        axes.axvline(result.stage_steps["pretrain"], color="grey", linestyle="--", linewidth=1)
        axes.text(result.stage_steps["pretrain"], axes.get_ylim()[1], " tasks", va="top", color="grey")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss per token (nats)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    axes.set_title(f"{result.tokens_seen:,} tokens, {result.tokens_per_s:,.0f} tok/s on {result.device}")
    figure.tight_layout()
    figure.savefig(path)
