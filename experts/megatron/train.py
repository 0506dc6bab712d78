"""Pretrain an expert with megatron-core: tensor, pipeline, expert and data parallelism on CUDA GPUs.

One process per GPU, launched by `torchrun`, Slurm (`infra/slurm/pretrain_megatron.sbatch`) or Ray
Train (`experts.megatron.ray_launch`):

    torchrun --nproc-per-node 8 -m experts.megatron.train --expert-config infra/configs/expert-1b.yaml \\
        --data shards/logs --tp 2 --pp 1 --save runs/logs-1b

The expert's `TrainConfig` sets the schedule: `batch_size` sequences per GPU micro-batch,
`grad_accum` micro-batches per step, `steps`, AdamW with a cosine learning rate and warm-up, gradient
clipping, bf16 ("auto": when the GPU supports it). Shards (`experts.megatron.data`) carry the
objective's labels, in curriculum order (so `task_fraction` is the shards' business here, and held-out
evaluation, `eval_every`, runs on the converted expert). The loss is the mean over loss-carrying
tokens of the global batch (MoE layers add their load-balancing loss). Checkpoints are megatron distributed checkpoints
(`experts.megatron.checkpoint`); `python -m experts.megatron.convert` turns one into an HF expert.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from experts.config import ExpertConfig
from experts.megatron import checkpoint, parallel
from experts.megatron.config import MegatronConfig, batch_sizes
from experts.megatron.data import Batch, TokenShards
from experts.megatron.model import build_gpt_model, num_flops_per_token
from flipmoe.config import load_yaml
from flipmoe.errors import FlipmoeInputError


@dataclass(frozen=True)
class StepMetrics:
    """What one optimizer step reports (identical on every rank)."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float
    tokens_per_second: float
    mfu: float
    """Model FLOPs utilisation: achieved model FLOP/s over the GPUs' bf16 peak (`MegatronConfig.peak_tflops`)."""


@dataclass
class TrainResult:
    steps: list[StepMetrics] = field(default_factory=list)
    checkpoint: Path | None = None


def train(expert: ExpertConfig, megatron: MegatronConfig, *, data: str | Path, save: str | Path | None = None,
          load: str | Path | None = None, init_expert: str | Path | None = None, tokenizer: bytes | None = None,
          on_step: Callable[[StepMetrics], None] | None = None, log_every: int = 10) -> TrainResult:
    """Train on this process's GPU as one rank of the job; every rank calls it with the same arguments.

    `load` resumes a run (model, optimizer, scheduler, data position); `init_expert` starts from an HF
    expert's weights instead of a random init. Leaves the process group up for the caller to tear down.
    """
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module

    if not torch.cuda.is_available():
        raise FlipmoeInputError("the megatron backend trains on CUDA GPUs and none is visible",
                                hint="train on CPU with the default HF backend, or run this on a GPU host")
    run = expert.train
    parallel.init_distributed()
    parallel.init_model_parallel(megatron.parallel, seed=run.seed)
    bf16 = run.precision == "bf16" or (run.precision == "auto" and torch.cuda.is_bf16_supported())
    shards = TokenShards(data, objective=expert.objective)
    if shards.seq_length > expert.model.max_seq_len:
        raise FlipmoeInputError(f"shard rows train {shards.seq_length} positions, more than the expert's "
                                f"max_seq_len {expert.model.max_seq_len}", path=data)

    gpt = build_gpt_model(expert.model, megatron, bf16=bf16, seed=run.seed).cuda()
    if init_expert is not None:
        from experts.megatron.convert import init_from_expert

        init_from_expert(gpt, init_expert, expert.model, megatron)
    config = gpt.config
    # bf16 weights and activations; the optimizer keeps fp32 master weights (megatron's mixed precision).
    module: torch.nn.Module = Float16Module(config, gpt) if bf16 else gpt
    ddp = DistributedDataParallel(
        config=config,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                                 use_distributed_optimizer=megatron.parallel.distributed_optimizer),
        module=module,
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=run.lr, min_lr=run.lr * run.min_lr_ratio,
                        weight_decay=run.weight_decay, adam_beta1=0.9, adam_beta2=0.95, clip_grad=run.grad_clip,
                        bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
                        use_distributed_optimizer=megatron.parallel.distributed_optimizer),
        [ddp],
    )
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=run.lr, min_lr=run.lr * run.min_lr_ratio,
        lr_warmup_steps=min(run.warmup_steps, run.steps - 1), lr_decay_steps=run.steps, lr_decay_style="cosine",
        start_wd=run.weight_decay, end_wd=run.weight_decay, wd_incr_steps=run.steps, wd_incr_style="constant")
    config.no_sync_func = ddp.no_sync
    config.finalize_model_grads_func = finalize_model_grads

    start = checkpoint.load(load, model=[gpt], optimizer=optimizer, scheduler=scheduler) if load else 0
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    micro_batch, num_micro, global_batch = batch_sizes(run, data_parallel=dp_size)
    batches = shards.micro_batches(micro_batch=micro_batch, num_micro_batches=num_micro,
                                   data_parallel_rank=dp_rank, data_parallel_size=dp_size, start_step=start)
    forward_backward = get_forward_backward_func()
    flops_per_step = num_flops_per_token(expert.model, shards.seq_length, megatron) * global_batch * shards.seq_length
    peak_flops = megatron.peak_tflops * 1e12 * dist.get_world_size()
    meta: dict[str, Any] = {"data": str(data), "rows": shards.num_rows, "seq_length": shards.seq_length,
                            "global_batch": global_batch, "world_size": dist.get_world_size(), "bf16": bf16}
    result = TrainResult()
    for step in range(start + 1, run.steps + 1):
        began = time.perf_counter()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        reports = forward_backward(forward_step_func=_forward_step, data_iterator=batches, model=[ddp],
                                   num_microbatches=num_micro, seq_length=shards.seq_length,
                                   micro_batch_size=micro_batch, forward_only=False)
        _, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        loss = _global_mean_loss(reports)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        metrics = StepMetrics(step=step, loss=loss, lr=optimizer.param_groups[0]["lr"],
                              grad_norm=float(grad_norm or 0.0), seconds=seconds,
                              tokens_per_second=global_batch * shards.seq_length / seconds,
                              mfu=flops_per_step / seconds / peak_flops)
        result.steps.append(metrics)
        if on_step is not None:
            on_step(metrics)
        if dist.get_rank() == 0 and (step % log_every == 0 or step == start + 1 or step == run.steps):
            print(f"step {step}/{run.steps} loss {loss:.4f} lr {metrics.lr:.2e} grad-norm {metrics.grad_norm:.2f} "
                  f"{metrics.tokens_per_second:,.0f} tok/s MFU {metrics.mfu:.1%}", flush=True)
        if save is not None and (step == run.steps or (run.checkpoint_every and step % run.checkpoint_every == 0)):
            card = {**meta, "backend": "megatron", "steps": step, "final_loss": loss,
                    "tokens": step * global_batch * shards.seq_length}
            result.checkpoint = checkpoint.save(save, iteration=step, model=[gpt], expert=expert, megatron=megatron,
                                                tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
                                                card=card)
    return result


def _forward_step(data_iterator: Iterator[Batch], model: torch.nn.Module) -> tuple[torch.Tensor, Callable]:
    batch = next(data_iterator)
    tokens, labels, positions = (t.cuda(non_blocking=True) for t in (batch.tokens_BS, batch.labels_BS,
                                                                      batch.position_ids_BS))
    loss_mask = batch.loss_mask_BS.cuda(non_blocking=True)
    # The local and TE attention build the causal mask themselves; rows need no padding mask since
    # pads sit at the end of a row and carry no loss.
    losses_BS = model(tokens, positions, None, labels=labels)
    return losses_BS, partial(_loss, loss_mask)


def _loss(loss_mask_BS: torch.Tensor, losses_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Summed token loss and token count; megatron divides by the global token count (per-token loss)."""
    loss = torch.sum(losses_BS.float() * loss_mask_BS)
    num_tokens = loss_mask_BS.sum().to(torch.int)
    return loss, num_tokens, {"lm loss": torch.stack([loss.detach().clone(), num_tokens.float()])}


def _global_mean_loss(reports: list[dict[str, torch.Tensor]]) -> float:
    """Mean token loss of the step over the whole job (reported by the last pipeline stage, shared by all)."""
    from megatron.core import parallel_state

    totals = torch.zeros(2, device="cuda")
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        for report in reports:
            totals += report["lm loss"]
        dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    # Every rank returns the same figure: the last stage's first rank broadcasts it.
    dist.broadcast(totals, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                   group=parallel_state.get_pipeline_model_parallel_group())
    return float(totals[0] / totals[1].clamp(min=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experts.megatron.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The backend's flags (shared with `flipmoe train expert --backend megatron`)."""
    parser.add_argument("--expert-config", required=True, metavar="YAML", help="ExpertConfig (infra/configs/)")
    parser.add_argument("--data", required=True, metavar="DIR", help="token shards (experts.megatron.data)")
    parser.add_argument("--tp", type=int, help="tensor-parallel size (default 1)")
    parser.add_argument("--pp", type=int, help="pipeline-parallel size (default 1)")
    parser.add_argument("--ep", type=int, help="expert-parallel size of MoE layers (default 1)")
    parser.add_argument("--megatron-config", metavar="YAML",
                        help="MegatronConfig (MoE layers, layer implementation, ...); --tp/--pp/--ep override it")
    parser.add_argument("--distributed-optimizer", action="store_true", help="shard optimizer state over DP ranks")
    parser.add_argument("--save", metavar="DIR", help="write megatron distributed checkpoints here")
    parser.add_argument("--load", metavar="DIR", help="resume from the latest checkpoint in DIR")
    parser.add_argument("--init-expert", metavar="DIR", help="start from a flipmoe expert checkpoint's weights")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="the expert's tokenizer.model, stored with the checkpoints (default: the "
                             "--init-expert's, else the data build's, else the one next to --expert-config)")
    parser.add_argument("--steps", type=int, help="override train.steps of the expert config")


def configs_from_args(args: argparse.Namespace) -> tuple[ExpertConfig, MegatronConfig, bytes | None]:
    """The expert config, the megatron config with command-line overrides, and the tokenizer bytes."""
    expert = load_yaml(ExpertConfig, args.expert_config)
    if args.steps is not None:
        expert = replace(expert, train=replace(expert.train, steps=args.steps))
    megatron = load_yaml(MegatronConfig, args.megatron_config) if args.megatron_config else MegatronConfig()
    overrides = {name: value for name, value in (("tensor_parallel", args.tp), ("pipeline_parallel", args.pp),
                                                 ("expert_parallel", args.ep)) if value is not None}
    if args.distributed_optimizer:
        overrides["distributed_optimizer"] = True
    megatron = replace(megatron, parallel=replace(megatron.parallel, **overrides))
    megatron.check(expert.model)
    # A data build keeps the tokenizer next to the expert's splits: <out>/shards/<expert>/tokenizer.model.
    candidates = [Path(args.tokenizer)] if args.tokenizer else [
        *([Path(args.init_expert) / "tokenizer.model"] if args.init_expert else []),
        Path(args.data) / "tokenizer.model", Path(args.data).parent / "tokenizer.model",
        Path(args.expert_config).with_name("tokenizer.model")]
    tokenizer = next((p.read_bytes() for p in candidates if p.is_file()), None)
    if args.tokenizer and tokenizer is None:
        raise FlipmoeInputError("tokenizer not found", path=args.tokenizer)
    return expert, megatron, tokenizer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        expert, megatron, tokenizer = configs_from_args(args)
        train(expert, megatron, data=args.data, save=args.save, load=args.load, init_expert=args.init_expert,
              tokenizer=tokenizer)
    except FlipmoeInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            parallel.destroy()
    return 0


__all__ = ["StepMetrics", "TrainResult", "add_arguments", "configs_from_args", "main", "train"]

if __name__ == "__main__":
    raise SystemExit(main())
