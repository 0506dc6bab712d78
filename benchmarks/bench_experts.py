"""The default experts, measured against baselines in the same run.

1. Held-out task scores of each trained expert vs the same decoder untrained (its initial weights, same
   tokenizer) vs the task's rule baseline, on the same held-out examples (`experts.tasks.score`).
2. Training throughput of flipmoe's trainer vs the Hugging Face `transformers.Trainer` on the same
   model (same initial weights), the same batches (identical padded tensors, in the same order for
   flipmoe; HF's sampler may reorder them) and the same optimizer settings (AdamW, betas, peak rate,
   warm-up + cosine, clipping), `--steps` steps each, alternating `--repeats` times. Tokens/s is the
   non-padding input tokens the model was fed over the wall time from building the trainer to the end
   of training (set-up included for both). The best of the repeats is printed, as the machine may be
   shared.

    python benchmarks/bench_experts.py --experts build/experts [--families logs,metrics] [--steps 30]

Experts missing from `--experts DIR` are built there first (`experts.build.build_expert`); without
`--experts` they are built in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from experts.build import MAX_ANSWER_TOKENS, MAX_SCORED_EXAMPLES, answer_examples, build_expert
from experts.expert import Expert
from experts.model import build_decoder
from experts.registry import EXPERT_FAMILIES, get_spec
from experts.sources import Sources
from experts.trainer import Trainer, collate, use_available_cpus


def score_table(expert: Expert, sources: Sources) -> list[tuple[str, float, float, float, int]]:
    """(task, trained, untrained, rule, examples) on the family's held-out examples."""
    from experts.tasks import rule_baselines, score

    spec = get_spec(expert.config.family)
    heldout = spec.task_data(sources, "heldout")
    untrained = Expert.create(expert.config, expert.tokenizer)
    # The answer lengths the build scored with (from training targets, never held-out ones).
    budget = expert.card.get("scoring", {}).get("answer_tokens", {})
    rows = []
    for task in spec.tasks:
        examples = heldout.get(task, [])[:MAX_SCORED_EXAMPLES]
        if not examples:
            continue
        max_new = budget.get(task, MAX_ANSWER_TOKENS)
        trained = score(task, answer_examples(expert, task, examples, max_new_tokens=max_new), examples)
        initial = score(task, answer_examples(untrained, task, examples, max_new_tokens=max_new), examples)
        rule = score(task, rule_baselines(task, [e.input for e in examples]), examples)
        rows.append((task, trained, initial, rule, len(examples)))
    return rows


def throughput(expert: Expert, sources: Sources, *, steps: int, repeats: int) -> tuple[float, float, str]:
    """Best tokens/s of flipmoe's trainer and of HF's Trainer over `repeats` alternating runs."""
    from data_pipeline.objectives import curriculum, objective_sequences

    spec = get_spec(expert.config.family)
    config = replace(expert.config.train, steps=steps, task_fraction=0.0, eval_every=0, checkpoint_every=0,
                     warmup_steps=max(1, steps // 10))
    rows = curriculum(objective_sequences(spec.objective, spec.corpus(sources), expert.tokenizer,
                                          seq_len=config.seq_len, rng=random.Random(0)))
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(_flipmoe_run(expert, config, rows))
        theirs.append(_hf_run(expert, config, rows))
    shape = f"batch {config.batch_size} x <={config.seq_len}, {steps} steps"
    return max(ours), max(theirs), shape


def _flipmoe_run(expert: Expert, config, rows) -> float:  # type: ignore[no-untyped-def]
    model = build_decoder(expert.config.model, seed=config.seed)
    started = time.perf_counter()  # set-up included, as for HF's Trainer
    result = Trainer(model, config=config, pretrain=rows, pad_id=expert.tokenizer.pad_id, progress=False).fit()
    return result.tokens_seen / (time.perf_counter() - started)


def _hf_run(expert: Expert, config, rows) -> float:  # type: ignore[no-untyped-def]
    from transformers import Trainer as HFTrainer
    from transformers import TrainingArguments

    # The very batches flipmoe's trainer builds, pre-collated: one dataset item is one padded batch.
    plan = Trainer(build_decoder(expert.config.model), config=config, pretrain=rows, progress=False).plan
    batches = []
    for _, indices in plan:
        input_ids, attention_mask, labels = collate([rows[i] for i in indices], pad_id=expert.tokenizer.pad_id)
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    model = build_decoder(expert.config.model, seed=config.seed)
    fed = [0]
    model.register_forward_pre_hook(lambda _m, _a, kw: fed.__setitem__(0, fed[0] + int(kw["attention_mask"].sum())),
                                    with_kwargs=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        args = TrainingArguments(
            output_dir=tmp, max_steps=config.steps, per_device_train_batch_size=1, learning_rate=config.lr,
            lr_scheduler_type="cosine", warmup_steps=max(1, config.steps // 10), weight_decay=config.weight_decay,
            adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=config.grad_clip, optim="adamw_torch",
            use_cpu=not torch.cuda.is_available(), bf16=False, logging_strategy="no", save_strategy="no",
            report_to=[], disable_tqdm=True, dataloader_num_workers=0, seed=config.seed,
            remove_unused_columns=False)
        trainer = HFTrainer(model=model, args=args, train_dataset=batches, data_collator=lambda items: items[0])
        trainer.train()
        elapsed = time.perf_counter() - started
    return fed[0] / elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", type=Path, help="folder of built experts (missing ones are built there)")
    parser.add_argument("--families", default=",".join(EXPERT_FAMILIES), help="comma-separated expert families")
    parser.add_argument("--preset", default="nano", help="preset of experts built here (default nano)")
    parser.add_argument("--steps", type=int, default=30, help="steps of each throughput run (default 30)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating throughput runs per trainer (default 2)")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    threads = use_available_cpus()
    # Both trainers on the same thread count for the whole run (flipmoe's would re-read the load average).
    os.environ["OMP_NUM_THREADS"] = str(threads)
    sources = Sources()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.experts or Path(tmp)
        experts = {}
        for family in families:
            directory = root / family
            if (directory / "model.safetensors").is_file():
                experts[family] = Expert.from_checkpoint(directory)
            else:
                print(f"building {family} into {directory} ...", flush=True)
                experts[family] = build_expert(family, out_dir=directory, preset=args.preset, sources=sources)
        device = "cuda" if torch.cuda.is_available() else f"cpu, {threads} torch thread(s)"
        print(f"\nheld-out task scores (greedy; exact match, token F1 or ROUGE-2 per task), {device}")
        print(f"{'expert':<8} {'task':<22} {'n':>3}  {'expert':>7} {'untrained':>9} {'rule':>7}")
        for family, expert in experts.items():
            for task, trained, initial, rule, n in score_table(expert, sources):
                print(f"{family:<8} {task:<22} {n:>3}  {trained:>7.3f} {initial:>9.3f} {rule:>7.3f}")
        print(f"\ntraining throughput, non-padding tokens/s (best of {args.repeats}), {device}")
        print(f"{'expert':<8} {'params':>9}  {'flipmoe':>9} {'HF Trainer':>10} {'ratio':>6}  batches")
        for family, expert in experts.items():
            ours, theirs, shape = throughput(expert, sources, steps=args.steps, repeats=args.repeats)
            print(f"{family:<8} {expert.num_parameters():>9,}  {ours:>9,.0f} {theirs:>10,.0f} {ours / theirs:>6.2f}  "
                  f"{shape}", flush=True)
        for family, expert in experts.items():
            card = expert.card
            if card:
                print(f"{family}: built in {card.get('wall_s', float('nan')):.0f} s "
                      f"({card.get('timings_s', {})}), {card['training']['steps']} steps, "
                      f"{card['training']['tokens_seen']:,} tokens, final loss {card['training']['final_loss']:.3f}, "
                      f"held-out loss {card['training']['heldout_loss']}")


if __name__ == "__main__":
    main()
