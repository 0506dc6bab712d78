"""Training throughput of the megatron-core backend on one GPU, next to the HF trainer in the same run.

Trains the same decoder preset on the same random-token rows, `--micro-batch` rows of `--seq-len`
positions per step, for `--steps` steps twice: with `experts.megatron.train.train` (megatron-core
GPTModel, bf16, megatron's optimizer) and with `experts.trainer.Trainer` (the HF `LlamaForCausalLM`
the default backend trains: bf16 autocast, fused AdamW). Prints the GPU's name, seconds per step,
tokens/s and model FLOPs utilisation, medians over the steps after `--warmup`.

MFU = model FLOPs per second / the GPU's dense bf16 peak. Model FLOPs per trained token are
`experts.megatron.model.num_flops_per_token`: 6 N (N: the matmul weights, output projection included,
embedding lookup not) + 12 L h s (attention scores and values; L layers, width h, sequence s), as in
the PaLM paper's appendix B. The peak comes from the device name (`PEAK_BF16_TFLOPS`) or `--peak-tflops`.

    python benchmarks/bench_megatron_train.py --preset 125m --micro-batch 8 --seq-len 2048 --steps 30
    python benchmarks/bench_megatron_train.py --dry-run   # no GPU: FLOP accounting, tiny models on the CPU

Without a CUDA GPU (and without `--dry-run`) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experts.config import ExpertConfig, ModelConfig, TokenizerConfig, TrainConfig, model_preset
from experts.megatron.config import MegatronConfig
from experts.megatron.model import num_flops_per_token

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    # Dense (not 2:4 sparse) bf16 tensor-core peak per GPU from the vendors' datasheets; the first
    # name contained in `torch.cuda.get_device_name()` wins, so specific variants come first.
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),  # SXM ("NVIDIA H200"), GH200
    ("A100", 312.0),
)
TINY = ModelConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                   max_seq_len=64)
"""The models `--dry-run` builds on a CPU."""


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by its name, or None for a GPU not in `PEAK_BF16_TFLOPS`."""
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


@dataclass(frozen=True, kw_only=True)
class FlopAccounting:
    """Model FLOPs of one trained token, split as 6 N + 12 L h s."""

    matmul_parameters: int
    """N: weights that take part in a matmul (output projection included, embedding lookup excluded)."""
    dense_term: float
    """6 N (forward 2 N, backward 4 N)."""
    attention_term: float
    """12 L h s: attention scores and values, forward and backward, causal mask not discounted."""

    @property
    def per_token(self) -> float:
        return self.dense_term + self.attention_term


def flop_accounting(model: ModelConfig, seq_len: int) -> FlopAccounting:
    """The split of `num_flops_per_token` (which the training loop's MFU uses) into its two terms."""
    total = num_flops_per_token(model, seq_len)
    attention = 12.0 * model.num_layers * model.hidden_size * seq_len
    dense = total - attention
    return FlopAccounting(matmul_parameters=round(dense / 6), dense_term=dense, attention_term=attention)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation (a fraction), or None without a known peak (TFLOP/s)."""
    return tokens_per_second * flops_per_token / (peak * 1e12) if peak else None


@dataclass(frozen=True, kw_only=True)
class BackendResult:
    name: str
    seconds: list[float]
    losses: list[float]
    peak_memory_gib: float | None = None
    error: str | None = None


def bench_expert(model: ModelConfig, *, steps: int, micro_batch: int, seq_len: int) -> ExpertConfig:
    """The expert both backends train: rows of `seq_len + 1` tokens train `seq_len` positions."""
    model = replace(model, max_seq_len=max(model.max_seq_len, seq_len + 1))
    return ExpertConfig(name="bench", family="logs", preset="bench", model=model,
                        tokenizer=TokenizerConfig(vocab_size=model.vocab_size),
                        train=TrainConfig(steps=steps, batch_size=micro_batch, grad_accum=1, seq_len=seq_len + 1,
                                          lr=3e-4, warmup_steps=2, precision="bf16", checkpoint_every=0,
                                          eval_every=0))


def random_rows(vocab_size: int, rows: int, length: int) -> np.ndarray:
    """Token ids from 4 up (no pad, bos, eos or unk), the same for both backends."""
    return np.random.default_rng(0).integers(4, vocab_size, (rows, length), dtype=np.int32)


def megatron_run(expert: ExpertConfig, megatron: MegatronConfig, rows: np.ndarray) -> BackendResult:
    from experts.megatron import parallel
    from experts.megatron.train import train

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "bench.input_ids.npy", rows)
        try:
            result = train(expert, megatron, data=tmp, log_every=10)
        finally:
            parallel.destroy()
    return BackendResult(name="megatron-core", seconds=[m.seconds for m in result.steps],
                         losses=[m.loss for m in result.steps])


def hf_trainer_run(expert: ExpertConfig, rows: np.ndarray, *, device: str) -> BackendResult:
    """`experts.trainer.Trainer` (what `flipmoe train expert` runs) on the same rows, one timed step at a time."""
    from data_pipeline.examples import TrainingSequence
    from experts.model import build_decoder
    from experts.trainer import Trainer

    sequences = [TrainingSequence(input_ids=tuple(row.tolist()), labels=tuple(row.tolist())) for row in rows]
    trainer = Trainer(build_decoder(expert.model, seed=expert.train.seed), config=expert.train, pretrain=sequences,
                      device=device, progress=False)
    seconds, losses = [], []
    for _ in range(expert.train.steps):
        began = time.perf_counter()
        record = trainer.train_step()  # synchronises the GPU before it returns
        seconds.append(time.perf_counter() - began)
        losses.append(record.loss)
    return BackendResult(name="HF trainer (baseline)", seconds=seconds, losses=losses)


def measured(run: Callable[[], BackendResult], name: str) -> BackendResult:
    """Run one backend; an error (out of memory, say) becomes its row instead of ending the benchmark."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        result = run()
    except Exception as err:  # noqa: BLE001 - reported in the table, the other backend still runs
        return BackendResult(name=name, seconds=[], losses=[], error=f"failed: {type(err).__name__}: {str(err)[:300]}")
    memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return dataclasses.replace(result, peak_memory_gib=memory)


def summarise(result: BackendResult, *, warmup: int, tokens_per_step: int, flops_per_token: float,
              peak: float | None) -> dict[str, Any]:
    if result.error or not result.seconds:
        return {"backend": result.name, "error": result.error or "failed: no steps"}
    timed = result.seconds[warmup:] or result.seconds
    step = statistics.median(timed)
    tokens_per_second = tokens_per_step / step
    return {"backend": result.name, "seconds_per_step": step, "tokens_per_second": tokens_per_second,
            "mfu": mfu(tokens_per_second, flops_per_token, peak), "timed_steps": len(timed),
            "first_loss": result.losses[0], "last_loss": result.losses[-1],
            "peak_memory_gib": result.peak_memory_gib}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | s/step | tokens/s | MFU | loss first → last | peak GPU memory |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['backend']} | {row['error']} | | | | |")
            continue
        mfu_text = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a (unknown peak)"
        memory = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else "n/a"
        lines.append(f"| {row['backend']} | {row['seconds_per_step']:.4f} | {row['tokens_per_second']:,.0f} | "
                     f"{mfu_text} | {row['first_loss']:.3f} → {row['last_loss']:.3f} | {memory} |")
    return "\n".join(lines)


def accounting_lines(model: ModelConfig, seq_len: int, tokens_per_step: int) -> list[str]:
    flops = flop_accounting(model, seq_len)
    lines = [f"parameters {model.num_parameters():,}; matmul weights N = {flops.matmul_parameters:,}",
             f"FLOPs per token: 6N = {flops.dense_term:.4g} + 12·L·h·s = {flops.attention_term:.4g} "
             f"-> {flops.per_token:.4g}; per step ({tokens_per_step:,} tokens): "
             f"{flops.per_token * tokens_per_step:.4g}"]
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        peak = peak_tflops(name)
        if peak:
            lines.append(f"{name}: peak {peak:.0f} TFLOP/s bf16 -> 40% MFU is "
                         f"{0.4 * peak * 1e12 / flops.per_token:,.0f} tokens/s")
    return lines


def dry_run(args: argparse.Namespace) -> dict[str, Any]:
    """What can run on a CPU: the FLOP accounting of the asked preset, and both backends built tiny."""
    from experts.megatron import parallel
    from experts.megatron.model import build_gpt_model
    from experts.model import build_decoder

    print("DRY RUN on the CPU: FLOP accounting and tiny stand-in models; no figure below is a GPU measurement")
    model = model_preset(args.preset)
    tokens_per_step = args.micro_batch * args.seq_len
    print(f"preset {args.preset}, {args.micro_batch} x {args.seq_len} tokens per step")
    accounting = accounting_lines(model, args.seq_len, tokens_per_step)
    for line in accounting:
        print("  " + line)
    # The same N on both sides: megatron's GPTModel and the HF decoder of a tiny config, built on the CPU.
    with parallel.single_process():
        megatron_parameters = sum(p.numel() for p in build_gpt_model(TINY).parameters())
    hf_parameters = sum(p.numel() for p in build_decoder(TINY).parameters())
    print(f"tiny model: megatron GPTModel {megatron_parameters:,} parameters, HF decoder {hf_parameters:,}, "
          f"ModelConfig {TINY.num_parameters():,}")
    steps, micro, seq = 3, 2, 32
    expert = bench_expert(TINY, steps=steps, micro_batch=micro, seq_len=seq)
    rows = random_rows(TINY.vocab_size, steps * micro, seq + 1)
    hf = summarise(measured(lambda: hf_trainer_run(expert, rows, device="cpu"), "HF trainer (baseline)"),
                   warmup=1, tokens_per_step=micro * seq, flops_per_token=num_flops_per_token(TINY, seq), peak=None)
    hf["backend"] = "HF trainer, tiny, CPU (stand-in)"
    megatron = {"backend": "megatron-core", "error": "not run: its training step needs CUDA"}
    print(table([megatron, hf]))
    return {"dry_run": True, "device": "cpu", "preset": args.preset, "seq_len": args.seq_len,
            "micro_batch": args.micro_batch, "flops": dataclasses.asdict(flop_accounting(model, args.seq_len)),
            "accounting": accounting, "tiny_parameters": {"megatron": megatron_parameters, "hf": hf_parameters},
            "results": [megatron, hf]}


def gpu_run(args: argparse.Namespace) -> dict[str, Any]:
    device_name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(device_name)
    model = model_preset(args.preset)
    expert = bench_expert(model, steps=args.steps, micro_batch=args.micro_batch, seq_len=args.seq_len)
    tokens_per_step = args.micro_batch * args.seq_len
    flops = flop_accounting(model, args.seq_len)
    print(f"{device_name} (peak {f'{peak:.0f} TFLOP/s bf16' if peak else 'unknown: pass --peak-tflops'}), "
          f"torch {torch.__version__}: preset {args.preset}, {args.micro_batch} x {args.seq_len} tokens per step, "
          f"{args.steps} steps, medians after {args.warmup}")
    for line in accounting_lines(model, args.seq_len, tokens_per_step):
        print("  " + line)
    rows = random_rows(model.vocab_size, args.steps * args.micro_batch, args.seq_len + 1)
    results = [measured(lambda: megatron_run(expert, MegatronConfig(peak_tflops=peak or 989.0), rows),
                        "megatron-core"),
               measured(lambda: hf_trainer_run(expert, rows, device="cuda"), "HF trainer (baseline)")]
    summary = [summarise(r, warmup=args.warmup, tokens_per_step=tokens_per_step, flops_per_token=flops.per_token,
                         peak=peak) for r in results]
    print(table(summary))
    return {"dry_run": False, "device": device_name, "peak_tflops": peak, "torch": torch.__version__,
            "preset": args.preset, "parameters": model.num_parameters(), "seq_len": args.seq_len,
            "micro_batch": args.micro_batch, "steps": args.steps, "warmup": args.warmup,
            "flops": dataclasses.asdict(flops), "results": summary}


def markdown(figures: dict[str, Any]) -> str:
    title = f"### Training throughput, preset {figures['preset']}"
    if figures["dry_run"]:
        accounting = "\n".join(f"- {line}" for line in figures["accounting"])
        return f"{title} (DRY RUN on a CPU: not a measurement)\n\n{accounting}\n\n{table(figures['results'])}\n"
    peak = figures["peak_tflops"]
    return (f"{title}\n\n{figures['device']}, torch {figures['torch']}, peak "
            f"{f'{peak:.0f}' if peak else 'unknown'} TFLOP/s bf16; {figures['micro_batch']} x {figures['seq_len']} "
            f"tokens per step, {figures['steps']} steps (medians after {figures['warmup']}); "
            f"{figures['flops']['dense_term'] + figures['flops']['attention_term']:.4g} model FLOPs per token\n\n"
            f"{table(figures['results'])}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--preset", default="125m", help="decoder preset (experts.config.MODEL_PRESETS)")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per step (one micro-batch)")
    parser.add_argument("--seq-len", type=int, default=2048, help="positions trained per sequence")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (default: by its name)")
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: FLOP accounting and tiny models only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write the figures here as a Markdown section")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        figures = dry_run(args)
    elif not torch.cuda.is_available():
        print("bench_megatron_train: needs a CUDA GPU and none is visible (--dry-run prints the FLOP accounting)")
        return 0
    else:
        figures = gpu_run(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(figures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
