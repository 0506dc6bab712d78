"""The dense baseline: one decoder as large as all the experts together, on all their data, for the same compute.

This is the question the mixture must answer: is a router over small independent experts (each with its
own tokenizer) better than one model of the same total size, with one tokenizer trained on the union
of the experts' corpora, trained on the union of their data — each family's documents under that
family's objective, every family's task data — for the same training compute (FLOPs ~ 6 N D, so
D_dense = sum_i N_i D_i / N_dense)? The result is an ordinary expert checkpoint (`Expert.from_checkpoint`)
named "dense", so it answers held-out requests exactly as the experts do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flipmoe.errors import FlipmoeInputError

Progress = Callable[[str], None]


@dataclass(kw_only=True, frozen=True)
class DenseConfig:
    """How the dense baseline is sized and trained."""

    vocab_size: int = 4096
    """One vocabulary for every modality: twice a nano expert's largest, well under all of theirs together."""
    widths: tuple[int, ...] = (128, 160, 192, 224, 256, 320)
    """Hidden sizes tried (heads of 32); the shape whose parameter count is closest to the experts' total wins."""
    max_layers: int = 16
    """Deepest decoder tried."""
    seed: int = 0
    """Seed of the tokenizer sampling, initialisation and data order."""
    steps: int | None = None
    """Optimizer steps; None: as many as match the experts' training compute (the card records the share)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 300 or not self.widths or min(self.widths) % 32 or self.max_layers < 1:
            raise FlipmoeInputError("dense baseline needs vocab_size >= 300, widths divisible by 32, max_layers >= 1")
        if self.steps is not None and self.steps < 1:
            raise FlipmoeInputError(f"dense baseline steps must be at least 1, not {self.steps}")


def dense_shape(target_parameters: int, *, vocab_size: int, config: DenseConfig, template: Any) -> Any:
    """The `ModelConfig` (from `template`) whose size is closest to the target, at least as deep as the template.

    Depth is kept at least the experts' so the baseline is not a wide, shallow model that spends its
    parameters on the embedding; among equally close shapes the deeper one wins.
    """
    best = None
    for width in config.widths:
        heads = width // 32
        kv_heads = max(h for h in range(1, heads + 1) if heads % h == 0 and h <= max(1, heads // 2))
        for layers in range(template.num_layers, config.max_layers + 1):
            shape = replace(template, vocab_size=vocab_size, hidden_size=width, intermediate_size=3 * width,
                            num_layers=layers, num_heads=heads, num_kv_heads=kv_heads)
            key = (abs(shape.num_parameters() - target_parameters), -layers)
            if best is None or key < best[0]:
                best = (key, shape)
    assert best is not None
    return best[1]


def build_dense_baseline(experts: Mapping[str, Any], out_dir: str | Path, *, sources: Any = None,
                         config: DenseConfig = DenseConfig(), progress: bool = True,
                         say: Progress | None = None) -> Any:
    """Train the dense baseline matched to `experts` (their cards give each one's tokens seen) into `out_dir`."""
    from data_pipeline.contamination import check_training_data
    from data_pipeline.examples import IGNORE_INDEX, TrainingSequence
    from data_pipeline.objectives import curriculum, objective_sequences, task_sequences
    from data_pipeline.tokenizer import train_tokenizer
    from experts.build import TRAIN_PRESETS
    from experts.config import ExpertConfig, TokenizerConfig
    from experts.expert import Expert
    from experts.registry import get_spec
    from experts.sources import Sources
    from experts.trainer import Trainer

    say = say or (lambda line: None)
    started = time.perf_counter()
    if not experts:
        raise FlipmoeInputError("dense baseline: no experts to match")
    untrained = sorted(name for name, e in experts.items()
                       if not isinstance(getattr(e, "card", None), Mapping)
                       or not e.card.get("training", {}).get("tokens_seen"))
    if untrained:
        raise FlipmoeInputError(f"dense baseline: expert(s) {', '.join(untrained)} have no training card "
                                "(card.json with training.tokens_seen), so their compute is unknown",
                                hint="match a bundle of trained local experts")
    sources = sources or Sources()
    first = next(iter(experts.values()))
    families = [e.config.family for e in experts.values()]
    specs = {family: get_spec(family) for family in families}
    seq_len = first.config.train.seq_len

    say("dense: data of every family")
    task_train = {family: spec.task_data(sources, "train") for family, spec in specs.items()}
    # The experts' contamination gate, family by family, so the dense model trains on what they train on.
    corpora = {family: check_training_data(
        family, spec.corpus(sources), [f"{e.input}\n{e.target}" for rows in task_train[family].values() for e in rows],
        {task: [e.input for e in rows] for task, rows in spec.task_data(sources, "heldout").items()})[0]
        for family, spec in specs.items()}
    symbols = tuple(dict.fromkeys(s for spec in specs.values() for s in spec.tokenizer.user_defined_symbols))
    tok_config = TokenizerConfig(vocab_size=config.vocab_size, split_digits=any(
        spec.tokenizer.split_digits for spec in specs.values()), user_defined_symbols=symbols)
    task_texts = (text for rows in task_train.values() for items in rows.values() for e in items
                  for text in (e.input, e.target))
    texts = [*(doc for docs in corpora.values() for doc in docs), *task_texts]
    say(f"dense: tokenizer on the union ({len(texts)} texts)")
    tokenizer = train_tokenizer(texts, tok_config, seed=config.seed)

    # Compute of the experts: 6 N_i D_i each, D_i the tokens they saw.
    expert_flops = sum(6 * e.num_parameters() * e.card["training"]["tokens_seen"] for e in experts.values())
    target_parameters = sum(e.num_parameters() for e in experts.values())
    model = dense_shape(target_parameters, vocab_size=tokenizer.vocab_size, config=config,
                        template=replace(first.config.model, max_seq_len=seq_len))

    rng = random.Random(config.seed)
    pretrain = curriculum([row for family, spec in specs.items()
                           for row in objective_sequences(spec.objective, corpora[family], tokenizer,
                                                          seq_len=seq_len, rng=rng)])
    examples = [e for family, spec in specs.items() for task in spec.tasks for e in task_train[family].get(task, [])]
    bos = tokenizer.bos_id
    tasks = [row if row.input_ids[:1] == (bos,) else
             TrainingSequence(input_ids=(bos, *row.input_ids), labels=(IGNORE_INDEX, *row.labels),
                              difficulty=row.difficulty)
             for row in task_sequences(examples, tokenizer, seq_len=seq_len)]

    preset = TRAIN_PRESETS[first.config.preset]
    dense_params = model.num_parameters()
    target_tokens = expert_flops / (6 * dense_params)
    expert_config = ExpertConfig(name="dense", family="dense", objective="causal", preset=first.config.preset,
                                 tasks=tuple(t for spec in specs.values() for t in spec.tasks), model=model,
                                 tokenizer=replace(tok_config, vocab_size=tokenizer.vocab_size), train=preset)
    dense = Expert.create(expert_config, tokenizer)
    out_dir = Path(out_dir)

    # A wider model needs a smaller step: the peak learning rate scales with 1 / width from the experts' own.
    lr = preset.lr * first.config.model.hidden_size / model.hidden_size

    def trainer(steps: int) -> Trainer:
        train = replace(preset, steps=steps, lr=lr, checkpoint_every=0, eval_every=0, seed=config.seed)
        return Trainer(dense.model, config=train, pretrain=pretrain, tasks=tasks, out_dir=out_dir,
                       pad_id=tokenizer.pad_id, max_len=seq_len, progress=progress)

    # The batch plan is fixed in advance, so the tokens a run will see are known before it starts: adjust
    # the step count until they match the experts' compute (unless the config fixes it).
    steps = config.steps or max(1, round(target_tokens / _tokens_per_step(preset, pretrain, tasks)))
    run = trainer(steps)
    for _ in range(0 if config.steps else 4):
        planned = _planned_tokens(run, pretrain, tasks, max_len=seq_len)
        better = max(1, round(steps * target_tokens / max(planned, 1)))
        if better == steps:
            break
        steps, run = better, trainer(better)
    dense.config = replace(dense.config, train=run.config)
    budget = (f"{steps} steps, fixed (the experts' 6ND = {expert_flops:.3g} FLOPs would take "
              f"~{target_tokens:,.0f} tokens)" if config.steps else
              f"{steps} steps for ~{target_tokens:,.0f} tokens (6ND = {expert_flops:.3g} FLOPs, as the experts)")
    say(f"dense: {model.hidden_size} wide, {model.num_layers} layers, {dense_params:,} parameters (experts: "
        f"{target_parameters:,}), peak lr {lr:.2g}, {budget}")
    result = run.fit()
    # transformers wraps `to` in functools.wraps, which typeshed types as an unbound callable.
    dense.model.to("cpu").eval()  # type: ignore[arg-type]
    dense.card = {
        "expert": "dense",
        "description": "dense baseline: one decoder, one tokenizer, all families' data, the experts' compute",
        "objectives": {family: spec.objective for family, spec in specs.items()},
        "parameters": dense_params,
        "matched_to": {"experts": {n: e.num_parameters() for n, e in experts.items()},
                       "parameters": target_parameters, "flops": expert_flops},
        "vocab_size": tokenizer.vocab_size,
        "data": {"corpus_documents": sum(len(d) for d in corpora.values()), "task_examples": len(examples),
                 "pretrain_sequences": len(pretrain), "task_sequences": len(tasks)},
        "training": {"steps": result.steps, "tokens_seen": result.tokens_seen,
                     "final_loss": round(result.final_loss, 4), "train_s": round(result.train_s, 1),
                     "flops": 6 * dense_params * result.tokens_seen,
                     "flops_vs_experts": round(6 * dense_params * result.tokens_seen / expert_flops, 3)},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    dense.save(out_dir)
    say(f"dense: done in {dense.card['wall_s']:.0f} s, {result.tokens_seen:,} tokens "
        f"({dense.card['training']['flops_vs_experts']:.2f}x the experts' FLOPs)")
    return dense


def _planned_tokens(trainer: Any, pretrain: Sequence[Any], tasks: Sequence[Any], *, max_len: int) -> int:
    """Non-padding tokens the trainer's batch plan will feed (source 0: pretraining rows, 1: task rows)."""
    rows = (pretrain, tasks)
    return sum(min(len(rows[source][i].input_ids), max_len) for source, indices in trainer.plan for i in indices)


def _tokens_per_step(train: Any, pretrain: Sequence[Any], tasks: Sequence[Any]) -> float:
    """First guess of the non-padding tokens of one optimizer step (the plan then corrects it)."""
    def mean_len(rows: Sequence[Any]) -> float:
        return sum(len(r.input_ids) for r in rows) / len(rows) if rows else 0.0

    share = train.task_fraction if tasks else 0.0
    per_row = (1 - share) * mean_len(pretrain) + share * mean_len(tasks)
    return max(1.0, per_row * train.batch_size * train.grad_accum)
