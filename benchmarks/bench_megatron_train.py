"""Training throughput of the megatron-core backend on one GPU, next to the HF decoder in the same run.

Trains the same decoder preset on the same random-token rows for `--steps` steps twice: with
`experts.megatron.train.train` (megatron-core GPTModel, bf16, megatron's optimizer) and with the HF
`LlamaForCausalLM` the CPU trainer uses (bf16 autocast, fused AdamW). Prints tokens/s and model
FLOPs utilisation (`experts.megatron.model.num_flops_per_token` over `--peak-tflops`), medians over
the steps after `--warmup`. Needs a CUDA GPU.

    python benchmarks/bench_megatron_train.py --preset 125m --batch 8 --seq-len 2048 --steps 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from experts.config import ExpertConfig, TokenizerConfig, TrainConfig, model_preset
from experts.megatron import parallel
from experts.megatron.config import MegatronConfig
from experts.megatron.model import num_flops_per_token
from experts.megatron.train import train
from experts.model import build_decoder


def megatron_run(expert: ExpertConfig, megatron: MegatronConfig, data: Path) -> list[float]:
    try:
        result = train(expert, megatron, data=data, log_every=10)
    finally:
        parallel.destroy()
    return [m.seconds for m in result.steps]


def hf_run(expert: ExpertConfig, rows: np.ndarray) -> list[float]:
    run = expert.train
    model: torch.nn.Module = build_decoder(expert.model)
    model.to("cuda").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, betas=(0.9, 0.95), fused=True)
    seconds = []
    for step in range(run.steps):
        batch = torch.from_numpy(rows[step * run.batch_size:(step + 1) * run.batch_size]).long().cuda()
        began = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="125m")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM 989, H200 989)")
    args = parser.parse_args()

    model = model_preset(args.preset)
    expert = ExpertConfig(name="bench", family="logs", preset=args.preset, model=model,
                          tokenizer=TokenizerConfig(vocab_size=model.vocab_size),
                          train=TrainConfig(steps=args.steps, batch_size=args.batch, seq_len=args.seq_len,
                                            lr=3e-4, warmup_steps=2, precision="bf16", checkpoint_every=0))
    megatron = MegatronConfig(peak_tflops=args.peak_tflops)
    rows = np.random.default_rng(0).integers(4, model.vocab_size, (args.batch * args.steps, args.seq_len + 1),
                                             dtype=np.int32)
    tokens = args.batch * args.seq_len
    flops = num_flops_per_token(model, args.seq_len, megatron) * tokens
    print(f"{torch.cuda.get_device_name()}: preset {args.preset} ({model.num_parameters() / 1e6:.0f}M parameters), "
          f"{args.batch} x {args.seq_len} tokens per step, bf16")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "bench.input_ids.npy", rows)
        results = {"megatron-core": megatron_run(expert, megatron, Path(tmp)),
                   "HF Llama (baseline)": hf_run(expert, rows[:, :-1])}
    print(f"{'backend':<22}{'s/step':>10}{'tokens/s':>14}{'MFU':>8}")
    for name, seconds in results.items():
        step = statistics.median(seconds[args.warmup:])
        print(f"{name:<22}{step:>10.3f}{tokens / step:>14,.0f}{flops / step / (args.peak_tflops * 1e12):>8.1%}")


if __name__ == "__main__":
    main()
