"""`flipmoe train expert --backend megatron ...`: the handler the CLI calls, and its flags.

Imports nothing heavy until the command runs, so `flipmoe --help` stays fast. On one GPU the job runs
in this process; with `--nproc-per-node N` it re-launches itself under torchrun on this host (for
several hosts use `infra/slurm/pretrain_megatron.sbatch` or `experts.megatron.ray_launch`). With
`--out`, the last checkpoint is converted into a flipmoe expert checkpoint when training ends.

It reads the flags `train expert` already has where they exist: `--expert` (must match the config's
family or name), `--out`, `--steps`, `--resume` (continue from the `--save` directory's checkpoint).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

_TRAIN_FLAGS = (("expert_config", "--expert-config"), ("data", "--data"), ("tp", "--tp"), ("pp", "--pp"),
                ("ep", "--ep"), ("megatron_config", "--megatron-config"), ("save", "--save"), ("load", "--load"),
                ("init_expert", "--init-expert"), ("tokenizer", "--tokenizer"), ("steps", "--steps"))


def add_megatron_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the megatron backend, in their own group of `flipmoe train expert`'s parser."""
    group = parser.add_argument_group("megatron backend (--backend megatron; CUDA GPUs)")
    group.add_argument("--expert-config", metavar="YAML",
                       help="ExpertConfig to train (e.g. infra/configs/expert-1b.yaml)")
    group.add_argument("--data", metavar="DIR", help="token shards: <name>.input_ids.npy [+ <name>.labels.npy]")
    group.add_argument("--tp", type=int, help="tensor-parallel size (default 1)")
    group.add_argument("--pp", type=int, help="pipeline-parallel size (default 1)")
    group.add_argument("--ep", type=int, help="expert-parallel size of MoE layers (default 1)")
    group.add_argument("--megatron-config", metavar="YAML", help="MegatronConfig: MoE layers, layer implementation")
    group.add_argument("--distributed-optimizer", action="store_true", help="shard optimizer state over DP ranks")
    group.add_argument("--save", metavar="DIR", help="megatron checkpoints (default: OUT-megatron when --out is given)")
    group.add_argument("--load", metavar="DIR", help="resume from the latest megatron checkpoint in DIR")
    group.add_argument("--init-expert", metavar="DIR", help="start from this flipmoe expert checkpoint's weights")
    group.add_argument("--tokenizer", metavar="PATH", help="the expert's tokenizer.model (default: from --init-expert "
                                                           "or next to --expert-config)")
    group.add_argument("--nproc-per-node", type=int, default=1, metavar="N", help="GPUs of this host to use")


def train_expert_megatron(args: argparse.Namespace) -> int:
    """Train with megatron-core, then (with `--out`) write the result as a flipmoe expert checkpoint."""
    import torch

    from flipmoe.errors import FlipmoeInputError

    if not args.expert_config or not args.data:
        raise FlipmoeInputError("--backend megatron needs --expert-config YAML and --data DIR")
    if not torch.cuda.is_available():
        raise FlipmoeInputError("--backend megatron trains on CUDA GPUs and none is visible",
                                hint="drop --backend megatron to train on this machine with the HF backend")
    if args.nproc_per_node > torch.cuda.device_count():
        raise FlipmoeInputError(f"--nproc-per-node {args.nproc_per_node} but {torch.cuda.device_count()} GPUs visible")
    from experts.config import ExpertConfig
    from flipmoe.config import load_yaml

    config = load_yaml(ExpertConfig, args.expert_config)
    family = getattr(args, "expert", None)
    if family is not None and family not in (config.family, config.name):
        raise FlipmoeInputError(f"--expert {family} but {args.expert_config} configures expert {config.name!r} "
                                f"of family {config.family!r}", hint="pass the matching --expert-config")
    out = getattr(args, "out", None)
    if args.save is None and out is not None:
        args.save = str(Path(out).with_name(Path(out).name + "-megatron"))
    if getattr(args, "resume", False) and args.load is None and args.save is not None:
        from experts.megatron.checkpoint import latest_iteration

        args.load = args.save if latest_iteration(args.save) is not None else None
    if args.nproc_per_node == 1:
        from experts.megatron import parallel
        from experts.megatron.train import configs_from_args, train

        expert, megatron, tokenizer = configs_from_args(_train_namespace(args))
        try:
            train(expert, megatron, data=args.data, save=args.save, load=args.load, init_expert=args.init_expert,
                  tokenizer=tokenizer)
        finally:
            parallel.destroy()
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={args.nproc_per_node}", "-m", "experts.megatron.train", *_train_argv(args)]
        code = subprocess.call(command)
        if code != 0:
            print(f"megatron training failed (exit {code}): {' '.join(command)}", file=sys.stderr)
            return code
    if out is not None:
        from experts.megatron.convert import megatron_to_expert

        print(f"wrote {megatron_to_expert(args.save, out)} from {args.save}")
    return 0


def _train_namespace(args: argparse.Namespace) -> argparse.Namespace:
    values = {dest: getattr(args, dest, None) for dest, _ in _TRAIN_FLAGS}
    return argparse.Namespace(**values, distributed_optimizer=args.distributed_optimizer)


def _train_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for dest, flag in _TRAIN_FLAGS:
        value = getattr(args, dest, None)
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--distributed-optimizer"] if args.distributed_optimizer else [])
