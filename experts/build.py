"""Build an expert from its family's data: corpus -> own tokenizer -> decoder -> training -> scores -> checkpoint.

```
spec.corpus(sources) ──► contamination gate ──► train_tokenizer ──► model_preset(vocab = tokenizer's) ──► Expert.create
spec.task_data(train) ──► objective_sequences + curriculum, task_sequences ──► Trainer.fit
spec.task_data(heldout) ──► greedy answers of the trained expert, of the untrained one, of the rule ──► card.json
```

`build_default_experts` builds logs, metrics, traces and code at nano size; together they take at most
15 minutes on two CPU cores (`TRAIN_PRESETS["nano"]` is sized for that).
"""

from __future__ import annotations

import dataclasses
import platform
import random
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from data_pipeline.contamination import check_training_data
from data_pipeline.examples import IGNORE_INDEX, TaskExample, TrainingSequence
from data_pipeline.tokenizer import Tokenizer, train_tokenizer
from experts.config import ExpertConfig, TrainConfig, format_prompt, model_preset
from experts.expert import Expert
from experts.registry import EXPERT_FAMILIES, ExpertSpec, get_spec
from experts.sources import Sources
from experts.trainer import STATE_DIR, STATE_FILE, Trainer, TrainResult, use_available_cpus
from flipmoe.errors import FlipmoeInputError

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # Sized by measurement for the 15-minute budget of the four default experts on two CPU cores:
    # ~0.25 s per step of 16 x 128 tokens on an idle machine, plus data, tokenizer and scoring.
    "nano": TrainConfig(steps=300, task_fraction=0.5, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=20,
                        eval_every=100, checkpoint_every=100),
    "micro": TrainConfig(steps=2000, task_fraction=0.4, batch_size=16, seq_len=256, lr=2e-3, warmup_steps=100,
                         eval_every=250, checkpoint_every=500),
    "125m": TrainConfig(steps=20_000, task_fraction=0.2, batch_size=32, seq_len=1024, lr=6e-4, warmup_steps=1000,
                        eval_every=1000, checkpoint_every=1000),
    "1b": TrainConfig(steps=50_000, task_fraction=0.1, batch_size=32, seq_len=2048, lr=3e-4, warmup_steps=2000,
                      eval_every=2000, checkpoint_every=2000),
}
"""Training run per decoder preset (the same names as `experts.config.MODEL_PRESETS`)."""

HELDOUT_DOCUMENT_EVERY = 20
"""One corpus document in this many is held out of pretraining to measure the held-out LM loss."""
MAX_HELDOUT_ROWS = 64
"""Rows per held-out loss set: enough for a stable mean, cheap enough to measure every `eval_every`."""
MAX_SCORED_EXAMPLES = 40
"""Held-out examples scored per task (greedy generation is the slow part of a nano build)."""
MAX_ANSWER_TOKENS = 96
"""Longest generated answer when scoring."""
_GENERATION_BATCH = 16


def train_config(preset: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The preset's training run with `overrides` (TrainConfig field names) applied."""
    if preset not in TRAIN_PRESETS:
        raise FlipmoeInputError(f"unknown preset {preset!r}", hint=f"choose one of {', '.join(TRAIN_PRESETS)}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise FlipmoeInputError(f"unknown training setting(s) {', '.join(unknown)}",
                                hint=f"valid: {', '.join(sorted(names))}")
    return replace(TRAIN_PRESETS[preset], **dict(overrides or {}))


def build_tokenizer(family: str, *, sources: Sources | None = None, vocab_size: int | None = None,
                    corpus: Sequence[str] | None = None,
                    task_examples: Mapping[str, Sequence[TaskExample]] | None = None,
                    seed: int = 0) -> Tokenizer:
    """The family's own sentencepiece tokenizer, trained on its pretraining documents (the corpus less its
    held-out documents, as `build_expert` trains it) and its training-split task text."""
    spec = get_spec(family)
    sources = sources or Sources()
    corpus = _split_documents(spec.corpus(sources))[0] if corpus is None else corpus
    task_examples = spec.task_data(sources, "train") if task_examples is None else task_examples
    config = replace(spec.tokenizer, vocab_size=vocab_size) if vocab_size else spec.tokenizer
    # Task text is in the modality too, and targets (templates with <*>, labels) must tokenize well.
    texts = [*corpus, *(text for rows in task_examples.values() for e in rows for text in (e.input, e.target))]
    return train_tokenizer(texts, config, seed=seed)


def build_expert(family: str, *, out_dir: str | Path, preset: str = "nano", sources: Sources | None = None,
                 train: Mapping[str, Any] | None = None, resume: bool = False, progress: bool = True) -> Expert:
    """Train the family's expert from scratch (or `resume` its interrupted run) and save it to `out_dir`."""
    spec = get_spec(family)
    out_dir = Path(out_dir)
    sources = sources or Sources()
    train_cfg = train_config(preset, train)
    if resume and not (out_dir / STATE_DIR / STATE_FILE).is_file():  # fail before minutes of data preparation
        raise FlipmoeInputError("nothing to resume: no trainer checkpoint", path=out_dir / STATE_DIR,
                                hint="run without --resume to start from scratch")
    use_available_cpus()  # before scoring too: generation suffers from oversubscribed threads as much as training
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()
    cpu_started = time.process_time()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    task_train = spec.task_data(sources, "train")
    task_heldout = spec.task_data(sources, "heldout")
    # The contamination gate of every build: evaluation sources and held-out inputs never train an expert.
    corpus, contamination = check_training_data(
        family, spec.corpus(sources), [f"{e.input}\n{e.target}" for rows in task_train.values() for e in rows],
        {task: [e.input for e in rows] for task, rows in task_heldout.items()})
    if not corpus and not any(task_train.values()):
        raise FlipmoeInputError(f"expert {family!r} has no training data", hint="check the data sources")
    pretrain_docs, heldout_docs = _split_documents(corpus)
    lap("data")

    tokenizer = build_tokenizer(family, sources=sources, corpus=pretrain_docs, task_examples=task_train,
                                seed=train_cfg.seed)
    lap("tokenizer")

    # The decoder's context is the length it is trained on: longer positions would be untrained.
    model_cfg = replace(model_preset(preset, vocab_size=tokenizer.vocab_size), max_seq_len=train_cfg.seq_len)
    config = ExpertConfig(name=family, family=family, objective=spec.objective, tasks=tuple(spec.tasks), preset=preset,
                          tokenizer=replace(spec.tokenizer, vocab_size=tokenizer.vocab_size), model=model_cfg,
                          train=train_cfg)
    expert = Expert.create(config, tokenizer)

    from data_pipeline.objectives import curriculum, objective_sequences, task_sequences

    rng = random.Random(train_cfg.seed)
    pretrain = curriculum(objective_sequences(spec.objective, pretrain_docs, tokenizer, seq_len=train_cfg.seq_len,
                                              rng=rng))
    train_examples = [e for task in spec.tasks for e in task_train.get(task, [])]
    # One position is kept for the bos that `_with_bos` adds.
    tasks = _with_bos(task_sequences(train_examples, tokenizer, seq_len=train_cfg.seq_len - 1), tokenizer)
    heldout = {
        "pretrain": objective_sequences(spec.objective, heldout_docs, tokenizer, seq_len=train_cfg.seq_len,
                                        rng=random.Random(train_cfg.seed + 1))[:MAX_HELDOUT_ROWS],
        "tasks": _with_bos(task_sequences(_interleave(task_heldout, spec.tasks, MAX_HELDOUT_ROWS), tokenizer,
                                          seq_len=train_cfg.seq_len - 1), tokenizer),
    }
    lap("sequences")

    scored = {task: task_heldout.get(task, [])[:MAX_SCORED_EXAMPLES] for task in spec.tasks}
    answer_tokens = _answer_budget(task_train, tokenizer)
    # Before training (and before a resumed run loads its checkpoint): the decoder as initialised.
    untrained = task_scores(expert, scored, answer_tokens=answer_tokens)
    lap("score_untrained")

    trainer = Trainer(expert.model, config=train_cfg, pretrain=pretrain, tasks=tasks, heldout=heldout,
                      out_dir=out_dir, pad_id=tokenizer.pad_id, max_len=train_cfg.seq_len, progress=progress)
    result = trainer.fit(resume=resume)
    # transformers wraps `to` in functools.wraps, which typeshed types as an unbound callable.
    expert.model.to("cpu")  # type: ignore[arg-type]
    lap("train")

    trained = task_scores(expert, scored, answer_tokens=answer_tokens)
    rule = {task: _rule_score(task, examples) for task, examples in scored.items() if examples}
    lap("score")

    expert.card = _card(spec, preset=preset, out_dir=out_dir, sources=sources, overrides=train, corpus=corpus,
                        pretrain_docs=pretrain_docs, heldout_docs=heldout_docs, task_train=task_train,
                        task_heldout=task_heldout, scored=scored, pretrain=pretrain, tasks=tasks, result=result,
                        expert=expert, scores={"expert": trained, "untrained": untrained, "rule": rule},
                        answer_tokens=answer_tokens, timings=timings, wall_s=time.perf_counter() - started,
                        cpu_s=time.process_time() - cpu_started)
    expert.card["contamination"] = contamination.to_json()
    expert.save(out_dir)
    return expert


def build_default_experts(out_dir: str | Path, *, preset: str = "nano", families: Sequence[str] | None = None,
                          sources: Sources | None = None, train: Mapping[str, Any] | None = None,
                          resume: bool = False, progress: bool = True) -> dict[str, Expert]:
    """Build each family's expert into `out_dir/<family>/` (one shared `Sources`, so simulations are reused)."""
    families = list(families or EXPERT_FAMILIES)
    for family in families:
        get_spec(family)  # fail on a bad name before hours of training
    sources = sources or Sources()
    return {family: build_expert(family, out_dir=Path(out_dir) / family, preset=preset, sources=sources, train=train,
                                 resume=resume, progress=progress)
            for family in families}


def task_scores(expert: Expert, examples: Mapping[str, Sequence[TaskExample]], *,
                answer_tokens: Mapping[str, int]) -> dict[str, float]:
    """Held-out score per task of the expert's greedy answers (`experts.tasks.score`)."""
    from experts.tasks import score

    scores = {}
    for task, rows in examples.items():
        if rows:
            answers = answer_examples(expert, task, rows, max_new_tokens=answer_tokens.get(task, MAX_ANSWER_TOKENS))
            scores[task] = round(score(task, answers, rows), 4)
    return scores


def answer_examples(expert: Expert, task: str, rows: Sequence[TaskExample], *, max_new_tokens: int) -> list[str]:
    """Greedy answers to `rows`; inputs are cut from the start, as in training, so prompt and answer fit."""
    context = expert.config.model.max_seq_len
    header = len(expert.tokenizer.encode(format_prompt(task, ""), bos=True))
    room = max(1, context - header - max_new_tokens)
    prompts = []
    for row in rows:
        ids = expert.tokenizer.encode(row.input)
        prompts.append(row.input if len(ids) <= room else expert.tokenizer.decode(ids[-room:]))
    answers: list[str] = []
    for start in range(0, len(prompts), _GENERATION_BATCH):
        batch = prompts[start:start + _GENERATION_BATCH]
        answers += [g.text for g in expert.generate_batch(batch, task=task, max_new_tokens=max_new_tokens)]
    return answers


def rebuild_command(family: str, *, preset: str, out_dir: str | Path, overrides: Mapping[str, Any] | None) -> str:
    """The command line that rebuilds an expert (overrides other than steps are listed for the API)."""
    words = ["flipmoe", "train", "expert", "--expert", family, "--preset", preset, "--out", _portable(out_dir)]
    if overrides and "steps" in overrides:
        words += ["--steps", str(overrides["steps"])]
    return " ".join(shlex.quote(w) for w in words)


# -- helpers ---------------------------------------------------------------------------------------

def _split_documents(corpus: Sequence[str]) -> tuple[list[str], list[str]]:
    """(pretraining documents, held-out documents): one in `HELDOUT_DOCUMENT_EVERY` is held out."""
    pretrain: list[str] = []
    heldout: list[str] = []
    for i, document in enumerate(corpus):
        (heldout if i % HELDOUT_DOCUMENT_EVERY == HELDOUT_DOCUMENT_EVERY - 1 else pretrain).append(document)
    return pretrain, heldout


def _with_bos(rows: Sequence[TrainingSequence], tokenizer: Tokenizer) -> list[TrainingSequence]:
    """Task rows opened with bos, as `Expert.generate` and `Expert.answer_loss` open every prompt."""
    return [row if row.input_ids[:1] == (tokenizer.bos_id,) else
            TrainingSequence(input_ids=(tokenizer.bos_id, *row.input_ids), labels=(IGNORE_INDEX, *row.labels),
                             difficulty=row.difficulty)
            for row in rows]


def _interleave(examples: Mapping[str, Sequence[TaskExample]], tasks: Sequence[str], limit: int) -> list[TaskExample]:
    """Up to `limit` examples taken in turn from each task, so every task weighs in the held-out loss."""
    queues = [list(examples.get(task, [])) for task in tasks]
    picked: list[TaskExample] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        picked += [q[depth] for q in queues if depth < len(q)]
    return picked[:limit]


def _answer_budget(task_train: Mapping[str, Sequence[TaskExample]], tokenizer: Tokenizer) -> dict[str, int]:
    """Tokens to generate per task: the longest training target (and eos), capped; never the held-out targets."""
    budget = {}
    for task, rows in task_train.items():
        longest = max((len(tokenizer.encode(e.target)) for e in rows), default=MAX_ANSWER_TOKENS)
        budget[task] = min(MAX_ANSWER_TOKENS, longest + 1)
    return budget


def _rule_score(task: str, examples: Sequence[TaskExample]) -> float:
    from experts.tasks import rule_baselines, score

    return round(score(task, rule_baselines(task, [e.input for e in examples]), examples), 4)


def _card(spec: ExpertSpec, *, preset: str, out_dir: Path, sources: Sources, overrides: Mapping[str, Any] | None,
          corpus: Sequence[str], pretrain_docs: Sequence[str], heldout_docs: Sequence[str],
          task_train: Mapping[str, Sequence[TaskExample]], task_heldout: Mapping[str, Sequence[TaskExample]],
          scored: Mapping[str, Sequence[TaskExample]], pretrain: Sequence[TrainingSequence],
          tasks: Sequence[TrainingSequence], result: TrainResult, expert: Expert,
          scores: dict[str, dict[str, float]], answer_tokens: Mapping[str, int], timings: dict[str, float],
          wall_s: float, cpu_s: float) -> dict[str, Any]:
    return {
        "expert": spec.family,
        "description": spec.description,
        "objective": spec.objective,
        "preset": preset,
        "parameters": expert.num_parameters(),
        "vocab_size": expert.tokenizer.vocab_size,
        "data": {
            "sources": sources.describe(),
            "corpus_documents": len(corpus),
            "corpus_chars": sum(len(d) for d in corpus),
            "pretrain_documents": len(pretrain_docs),
            "heldout_documents": len(heldout_docs),
            "pretrain_sequences": len(pretrain),
            "pretrain_tokens": sum(len(s.input_ids) for s in pretrain),
            "task_sequences": len(tasks),
            "task_examples": {"train": {t: len(v) for t, v in task_train.items()},
                              "heldout": {t: len(v) for t, v in task_heldout.items()},
                              "scored": {t: len(v) for t, v in scored.items()}},
        },
        "training": {
            "steps": result.steps,
            "stage_steps": result.stage_steps,
            "tokens_seen": result.tokens_seen,
            "final_loss": round(result.final_loss, 4),
            "heldout_loss": {k: round(v, 4) for k, v in result.heldout_loss.items()},
            "train_s": round(result.train_s, 1),
            "tokens_per_s": round(result.tokens_per_s),
            "device": result.device,
            "precision": result.precision,
            "torch_threads": torch.get_num_threads(),
            "config": dataclasses.asdict(expert.config.train),
        },
        "scores": scores,
        "scoring": {"answer_tokens": dict(answer_tokens), "max_examples": MAX_SCORED_EXAMPLES, "decoding": "greedy"},
        "timings_s": timings,
        "wall_s": round(wall_s, 1),
        # CPU seconds of this process: on a shared machine, closer than wall time to what an idle one takes.
        "cpu_s": round(cpu_s, 1),
        "command": rebuild_command(spec.family, preset=preset, out_dir=out_dir, overrides=overrides),
        "train_overrides": dict(overrides or {}),
        "built_with": {"torch": torch.__version__, "python": platform.python_version()},
        "files": ["config.yaml", "tokenizer.model", "model.safetensors", "card.json", "loss_curve.csv",
                  "loss_curve.json", "loss_curve.png", "trainer_state/"],
    }


def _portable(out_dir: str | Path) -> str:
    """`out_dir` as a card may show it: relative to the working directory, else its last two parts (a card
    ships with a bundle and must not hold this machine's paths; a bundle's `.partial` work folder is dropped)."""
    path = Path(out_dir)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path(*[part.removesuffix(".partial") for part in path.parts[-2:]]))
