"""Launch `experts.megatron.train` on a Ray cluster with Ray Train (one worker per GPU).

    python -m experts.megatron.ray_launch --num-workers 16 --expert-config infra/configs/expert-1b.yaml \\
        --data /shared/shards/logs --tp 2 --save /shared/runs/logs-1b

Ray Train starts the workers, sets up the NCCL process group and the rank environment, and gathers
each step's metrics; megatron-core then carves that world into its tensor / pipeline / data groups
exactly as under torchrun. Data and checkpoints must be on storage every node sees (the KubeRay
manifests in `infra/kuberay/` mount one volume at /shared). The same flags as the torchrun entry point.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from experts.megatron.train import add_arguments


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from experts.megatron import parallel
    from experts.megatron.train import StepMetrics, configs_from_args, train

    torch.cuda.set_device(ray.train.torch.get_device())
    args = argparse.Namespace(**config["args"])
    expert, megatron, tokenizer = configs_from_args(args)

    def report(metrics: StepMetrics) -> None:
        ray.train.report({"step": metrics.step, "loss": metrics.loss, "lr": metrics.lr,
                          "tokens_per_second": metrics.tokens_per_second, "mfu": metrics.mfu})

    try:
        train(expert, megatron, data=args.data, save=args.save, load=args.load, init_expert=args.init_expert,
              tokenizer=tokenizer, on_step=report)
    finally:
        parallel.destroy()


def launch(args: argparse.Namespace, *, num_workers: int, gpus_per_worker: float = 1.0,
           cpus_per_worker: float = 8.0, address: str | None = None, name: str = "flipmoe-megatron",
           storage_path: str | None = None) -> Any:
    """Run the training job on the Ray cluster at `address` (default: the one this process belongs to)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address or "auto")
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"args": vars(args)},
        torch_config=TorchConfig(backend="nccl", timeout_s=1800),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=True,
                                     resources_per_worker={"GPU": gpus_per_worker, "CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    return trainer.fit()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experts.megatron.ray_launch", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--num-workers", type=int, required=True, help="GPUs in the job (one worker each)")
    parser.add_argument("--cpus-per-worker", type=float, default=8.0, help="CPUs reserved per worker")
    parser.add_argument("--address", help="Ray cluster address (default: auto)")
    parser.add_argument("--storage-path", help="where Ray Train keeps run state (shared storage)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    launch_args = {k: v for k, v in vars(args).items()
                   if k not in ("num_workers", "cpus_per_worker", "address", "storage_path")}
    result = launch(argparse.Namespace(**launch_args), num_workers=args.num_workers,
                    cpus_per_worker=args.cpus_per_worker, address=args.address, storage_path=args.storage_path)
    print(result.metrics)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
