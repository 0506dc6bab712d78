"""The logs expert pretrained at 125m with megatron-core for a fixed token budget, next to the nano expert.

Two commands, so the GPU machine spends its time on the GPU:

- `prepare` (any machine, a few minutes of one CPU core): the logs family's data exactly as
  `experts.build.build_expert` made it for the shipped nano expert — same sources, the nano expert's
  own tokenizer, its sequence length — written with the data pipeline's shard writer
  (`data_pipeline.shards.write_shards`): pretraining rows in curriculum order, task rows, held-out
  rows, and the held-out task examples the nano build scored.
- `run` (a CUDA GPU): a 125m decoder (the preset's shape, the nano tokenizer's vocabulary) trained by
  `experts.megatron.train` for `--tokens` tokens on the same micro-batches the HF trainer would take
  (`experts.trainer`'s batch plan: pretraining, then tasks with replay), converted back to a flipmoe
  expert (`experts.megatron.convert.megatron_to_expert`), then scored next to the shipped nano expert
  on the same held-out task examples (`experts.build.task_scores`) and held-out pretraining rows.

The 125m decoder does not start from the nano weights (the shapes differ): "continued" means the nano
expert's data and tokenizer carried on at the larger size, for the given token budget.

    python benchmarks/bench_megatron_expert.py prepare --out build/issue23/logs
    python benchmarks/bench_megatron_expert.py run --data build/issue23/logs --tokens 4000000
    python benchmarks/bench_megatron_expert.py run --data build/issue23/logs --dry-run   # CPU stand-ins

`--dry-run` walks the same steps on a CPU with stand-ins (a nano-sized decoder trained a few steps by
the HF trainer, and the HF -> megatron -> HF weight conversion instead of a megatron checkpoint); its
figures are not measurements.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from data_pipeline.examples import IGNORE_INDEX, TaskExample, TrainingSequence
from data_pipeline.objectives import curriculum, objective_sequences, task_sequences
from data_pipeline.shards import read_shards, write_shards
from data_pipeline.tokenizer import Tokenizer

# build_expert's own data steps and the trainer's batch plan (private there), reused so the rows are the
# ones the nano expert was built from and megatron reads them in the order the HF trainer would.
from experts.build import (
    MAX_HELDOUT_ROWS,
    MAX_SCORED_EXAMPLES,
    _answer_budget,
    _split_documents,
    _with_bos,
    task_scores,
    train_config,
)
from experts.config import ExpertConfig, model_preset
from experts.expert import Expert
from experts.registry import get_spec
from experts.sources import Sources
from experts.trainer import _batch_plan, collate, stage_steps
from flipmoe.config import load_yaml, save_yaml

REPO = Path(__file__).resolve().parent.parent
NANO_LOGS = REPO / "flipmoe" / "bundles" / "nano" / "experts" / "logs"
FAMILY = "logs"
SPLITS = ("pretrain", "tasks", "heldout")


# -- prepare (CPU) --------------------------------------------------------------------------------


def prepare(out: Path, *, nano: Path = NANO_LOGS, sources: Sources | None = None) -> dict[str, Any]:
    """Write the nano logs expert's training data, held-out rows and scored examples under `out`."""
    began = time.perf_counter()
    nano_config = load_yaml(ExpertConfig, nano / "config.yaml")
    tokenizer = Tokenizer.load(nano / "tokenizer.model")
    sources = sources or Sources()
    spec = get_spec(FAMILY)
    seq_len, seed = nano_config.train.seq_len, nano_config.train.seed
    corpus = spec.corpus(sources)
    task_train = spec.task_data(sources, "train")
    task_heldout = spec.task_data(sources, "heldout")
    pretrain_docs, heldout_docs = _split_documents(corpus)
    rows = {
        "pretrain": curriculum(objective_sequences(spec.objective, pretrain_docs, tokenizer, seq_len=seq_len,
                                                   rng=random.Random(seed))),
        "tasks": _with_bos(task_sequences([e for task in spec.tasks for e in task_train.get(task, [])], tokenizer,
                                          seq_len=seq_len - 1), tokenizer),
        "heldout": objective_sequences(spec.objective, heldout_docs, tokenizer, seq_len=seq_len,
                                       rng=random.Random(seed + 1))[:MAX_HELDOUT_ROWS],
    }
    out.mkdir(parents=True, exist_ok=True)
    counts = {name: write_shards(out / name, sequences, seq_len=seq_len, vocab_size=tokenizer.vocab_size,
                                 sequences_per_shard=max(1, len(sequences)))
              for name, sequences in rows.items()}
    scored = {task: [asdict(e) for e in task_heldout.get(task, [])[:MAX_SCORED_EXAMPLES]] for task in spec.tasks}
    (out / "scored.json").write_text(json.dumps(scored, indent=1) + "\n", encoding="utf-8")
    (out / "tokenizer.model").write_bytes((nano / "tokenizer.model").read_bytes())
    meta = {"family": FAMILY, "nano": str(nano.relative_to(REPO)) if nano.is_relative_to(REPO) else str(nano),
            "seq_len": seq_len, "vocab_size": tokenizer.vocab_size,
            "sources": {"shared_data": str(sources.shared_data) if sources.shared_data else None,
                        "train_incidents": sources.train_incidents, "heldout_incidents": sources.heldout_incidents},
            "rows": {name: entry["rows"] for name, entry in counts.items()},
            "tokens": {name: entry["tokens"] for name, entry in counts.items()},
            "answer_tokens": _answer_budget(task_train, tokenizer), "prepare_s": round(time.perf_counter() - began, 1)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


# -- run (GPU) ------------------------------------------------------------------------------------


def planned_rows(pretrain: list[TrainingSequence], tasks: list[TrainingSequence], expert: ExpertConfig
                 ) -> list[TrainingSequence]:
    """The HF trainer's micro-batches for this run laid out row after row, the order megatron reads shards in.

    A micro-batch the plan leaves short (the end of an epoch window) is filled up with its own rows,
    so every micro-batch starts at a multiple of the micro-batch size.
    """
    train = expert.train
    stages = stage_steps(train, has_pretrain=bool(pretrain), has_tasks=bool(tasks))
    plan = _batch_plan(train, stages, lengths=([len(s.input_ids) for s in pretrain], [len(s.input_ids) for s in tasks]))
    rows: list[TrainingSequence] = []
    for source, indices in plan:
        picked = [(pretrain if source == 0 else tasks)[i] for i in indices]
        rows += [picked[i % len(picked)] for i in range(train.batch_size)]
    return rows


def run_config(meta: dict[str, Any], nano: ExpertConfig, *, preset: str, tokens: int, micro_batch: int,
               lr: float | None) -> ExpertConfig:
    """The preset's training run (`experts.build.TRAIN_PRESETS`) cut to `tokens`, at the nano sequence length."""
    seq_len = meta["seq_len"]
    steps = max(2, tokens // (micro_batch * seq_len))
    overrides: dict[str, Any] = {"steps": steps, "batch_size": micro_batch, "grad_accum": 1, "seq_len": seq_len,
                                 "warmup_steps": max(1, steps // 20), "precision": "bf16", "checkpoint_every": 0,
                                 "eval_every": 0}
    if lr is not None:
        overrides["lr"] = lr
    train = train_config(preset, overrides)
    model = replace(model_preset(preset, vocab_size=meta["vocab_size"]), max_seq_len=seq_len)
    return replace(nano, name=FAMILY, preset=preset, model=model, train=train)


def megatron_expert(expert: ExpertConfig, rows: list[TrainingSequence], *, tokenizer: bytes, work: Path
                    ) -> tuple[Path, dict[str, Any]]:
    """Train with megatron-core on this process's GPU, then convert the run into a flipmoe expert."""
    from experts.megatron import parallel
    from experts.megatron.config import MegatronConfig
    from experts.megatron.convert import megatron_to_expert
    from experts.megatron.train import train

    data = work / "plan"
    write_shards(data, rows, seq_len=expert.train.seq_len, vocab_size=expert.model.vocab_size,
                 sequences_per_shard=len(rows))
    began = time.perf_counter()
    try:
        result = train(expert, MegatronConfig(), data=data, save=work / "run", tokenizer=tokenizer, log_every=50)
    finally:
        parallel.destroy()
    train_s = time.perf_counter() - began
    steps = result.steps
    converted = megatron_to_expert(work / "run", work / "expert", card={"trained_by": "bench_megatron_expert"})
    timed = steps[len(steps) // 10:] or steps
    return converted, {"backend": "megatron-core", "steps": len(steps), "first_loss": steps[0].loss,
                       "last_loss": steps[-1].loss, "train_s": round(train_s, 1),
                       "tokens_per_second": sum(s.tokens_per_second for s in timed) / len(timed),
                       "mfu": sum(s.mfu for s in timed) / len(timed)}


def stand_in_expert(expert: ExpertConfig, rows: list[TrainingSequence], *, tokenizer: Tokenizer, work: Path
                    ) -> tuple[Path, dict[str, Any]]:
    """Dry run: the HF trainer trains the same rows on the CPU, and the weights go HF -> megatron -> HF."""
    from experts.megatron import convert
    from experts.model import build_decoder
    from experts.trainer import Trainer

    trainer = Trainer(build_decoder(expert.model, seed=expert.train.seed), config=expert.train, pretrain=rows,
                      device="cpu", progress=False)
    records = [trainer.train_step() for _ in range(expert.train.steps)]
    model = trainer.model
    state = convert.megatron_to_hf(convert.hf_to_megatron(model.state_dict(), expert.model), expert.model)
    decoder = build_decoder(expert.model)
    decoder.load_state_dict(state, strict=not expert.model.tie_embeddings)
    decoder.tie_weights()
    out = Expert(config=expert, tokenizer=tokenizer, model=decoder.eval(), card={"dry_run": True}).save(work / "expert")
    return out, {"backend": "HF trainer on the CPU (dry-run stand-in)", "steps": len(records),
                 "first_loss": records[0].loss, "last_loss": records[-1].loss}


@torch.no_grad()
def heldout_loss(expert: Expert, rows: list[TrainingSequence], *, batch_size: int = 32) -> float:
    """Mean loss per labelled token of held-out rows (next-token, as the trainer measures it)."""
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        input_ids, attention_mask, labels = (t.to(expert.device) for t in
                                             collate(rows[start:start + batch_size], pad_id=expert.tokenizer.pad_id))
        logits = expert.model(input_ids=input_ids, attention_mask=attention_mask).logits
        total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((labels[:, 1:] != IGNORE_INDEX).sum())
    return total / max(count, 1)


def evaluate(expert: Expert, scored: dict[str, list[TaskExample]], heldout: list[TrainingSequence],
             answer_tokens: dict[str, int]) -> dict[str, Any]:
    began = time.perf_counter()
    scores = task_scores(expert, scored, answer_tokens=answer_tokens)
    return {"parameters": expert.num_parameters(), "heldout_loss": round(heldout_loss(expert, heldout), 4),
            "task_scores": scores, "eval_s": round(time.perf_counter() - began, 1)}


def run(data: Path, *, work: Path, tokens: int, micro_batch: int, preset: str, lr: float | None, dry_run: bool,
        max_examples: int, nano_dir: Path = NANO_LOGS) -> dict[str, Any]:
    from experts.tasks import rule_baselines, score

    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    nano = Expert.from_checkpoint(nano_dir)
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    rows = {name: read_shards(data / name) for name in SPLITS}
    scored = {task: [TaskExample(**{**e, "references": tuple(e["references"])}) for e in examples[:max_examples]]
              for task, examples in json.loads((data / "scored.json").read_text(encoding="utf-8")).items()}
    answer_tokens = dict(meta["answer_tokens"])
    if dry_run:
        answer_tokens = {task: min(8, n) for task, n in answer_tokens.items()}
    expert = run_config(meta, nano.config, preset=preset, tokens=tokens, micro_batch=micro_batch, lr=lr)
    plan = planned_rows(rows["pretrain"], rows["tasks"], expert)
    work.mkdir(parents=True, exist_ok=True)
    save_yaml(expert, work / "expert.yaml")
    print(f"{'DRY RUN: ' if dry_run else ''}{preset} {FAMILY} expert: {expert.model.num_parameters():,} parameters, "
          f"{expert.train.steps} steps x {micro_batch} x {expert.train.seq_len} = "
          f"{expert.train.steps * micro_batch * expert.train.seq_len:,} tokens, task fraction "
          f"{expert.train.task_fraction}, lr {expert.train.lr}", flush=True)
    if dry_run:
        trained_dir, training = stand_in_expert(expert, plan, tokenizer=tokenizer, work=work)
        device = "cpu"
    else:
        trained_dir, training = megatron_expert(expert, plan, tokenizer=tokenizer._proto, work=work)
        device = "cuda"
    print(f"trained: {training}", flush=True)
    figures: dict[str, Any] = {
        "dry_run": dry_run, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "data": {k: meta[k] for k in ("seq_len", "vocab_size", "rows", "tokens", "sources")},
        "run": {"preset": preset, "steps": expert.train.steps, "micro_batch": micro_batch,
                "seq_len": expert.train.seq_len, "tokens": expert.train.steps * micro_batch * expert.train.seq_len,
                "lr": expert.train.lr, "task_fraction": expert.train.task_fraction},
        "training": training, "scored_examples": {task: len(e) for task, e in scored.items()}, "experts": {}}
    for name, directory in ((f"{preset} (megatron)" if not dry_run else f"{preset} (dry-run stand-in)", trained_dir),
                            ("nano (shipped)", nano_dir)):
        candidate = Expert.from_checkpoint(directory, device=device)
        figures["experts"][name] = evaluate(candidate, scored, rows["heldout"], answer_tokens)
        print(f"{name}: {figures['experts'][name]}", flush=True)
        del candidate
    figures["experts"]["rule baseline"] = {
        "task_scores": {task: round(score(task, rule_baselines(task, [e.input for e in examples]), examples), 4)
                        for task, examples in scored.items() if examples}}
    return figures


def markdown(figures: dict[str, Any]) -> str:
    run_ = figures["run"]
    if figures["dry_run"]:
        title = (f"### Logs expert at {run_['preset']} vs the shipped nano expert "
                 "(DRY RUN on a CPU: stand-ins, not measurements)")
    else:
        title = f"### Logs expert at {run_['preset']} (megatron-core) vs the shipped nano expert"
    tasks = sorted({t for e in figures["experts"].values() for t in e.get("task_scores", {})})
    lines = [title, "",
             f"{figures['device']}; {run_['steps']} steps x {run_['micro_batch']} x {run_['seq_len']} = "
             f"{run_['tokens']:,} tokens, lr {run_['lr']}, task fraction {run_['task_fraction']}; data: "
             f"{figures['data']['rows']} rows, sources {figures['data']['sources']}; scored examples "
             f"{figures['scored_examples']}; training {figures['training']}", "",
             "| expert | parameters | held-out loss | " + " | ".join(tasks) + " |",
             "|---|---|---|" + "---|" * len(tasks)]
    for name, e in figures["experts"].items():
        params = f"{e['parameters']:,}" if "parameters" in e else ""
        loss = f"{e['heldout_loss']:.3f}" if "heldout_loss" in e else ""
        lines.append(f"| {name} | {params} | {loss} | "
                     + " | ".join(f"{e['task_scores'].get(t, float('nan')):.3f}" for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write the nano logs expert's data (CPU)")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--small", action="store_true", help="few chaos incidents and LogHub lines (dry runs)")
    go = commands.add_parser("run", help="train at 125m with megatron-core, convert, score next to nano (GPU)")
    go.add_argument("--data", type=Path, required=True, help="the prepare --out directory")
    go.add_argument("--work", type=Path, default=Path("/tmp/bench_megatron_expert"), help="run and expert dirs")
    go.add_argument("--tokens", type=int, default=4_000_000, help="training token budget")
    go.add_argument("--micro-batch", type=int, default=64)
    go.add_argument("--preset", default="125m")
    go.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    go.add_argument("--max-examples", type=int, default=MAX_SCORED_EXAMPLES, help="scored examples per task")
    go.add_argument("--dry-run", action="store_true", help="CPU stand-ins for the GPU steps")
    go.add_argument("--json", type=Path)
    go.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    if args.command == "prepare":
        # The logs family needs LogHub (`experts/logs/tasks.py` fails on an empty LogHub table), so the
        # small set keeps the shared data and shrinks the rest.
        sources = (Sources(train_incidents=2, heldout_incidents=1, loghub_lines=300, nezha_files=0,
                           train_examples=60, heldout_examples=12) if args.small else None)
        print(json.dumps(prepare(args.out, sources=sources), indent=1))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("bench_megatron_expert run: needs a CUDA GPU and none is visible (--dry-run walks it with stand-ins)")
        return 0
    figures = run(args.data, work=args.work, tokens=args.tokens, micro_batch=args.micro_batch, preset=args.preset,
                  lr=args.lr, dry_run=args.dry_run, max_examples=args.max_examples)
    text = markdown(figures)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
