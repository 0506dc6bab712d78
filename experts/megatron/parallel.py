"""Process groups for the megatron-core backend, set up from outside the model.

megatron-core modules read their tensor/pipeline/expert groups from `parallel_state`, so the groups
must exist before a `GPTModel` is built — also on a CPU with one process, where conversion and the
tests build models (gloo, world size 1, every parallel size 1).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import torch
import torch.distributed as dist

from experts.megatron.config import ParallelConfig


def init_distributed() -> None:
    """Join the job's process group (torchrun / Ray Train / srun environment), or start a one-process one.

    On CUDA the group is `cpu:gloo,cuda:nccl`, so megatron's CPU-side collectives (checkpoint metadata)
    and its GPU collectives both have a backend. Ray Train has usually initialised the group already.
    """
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")


def init_model_parallel(parallel: ParallelConfig, *, seed: int = 0) -> None:
    """Carve the world into tensor / pipeline / expert / data-parallel groups and seed each rank."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    world = dist.get_world_size()
    model_parallel = parallel.tensor_parallel * parallel.pipeline_parallel
    if world % model_parallel:
        from flipmoe.errors import FlipmoeInputError

        raise FlipmoeInputError(f"world size {world} is not divisible by tensor_parallel x pipeline_parallel "
                                f"= {model_parallel}", hint="launch a multiple of tp*pp processes")
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_parallel,
        pipeline_model_parallel_size=parallel.pipeline_parallel,
        expert_model_parallel_size=parallel.expert_parallel,
    )
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        # Distinct streams for tensor-parallel shards, the same one for replicated weights.
        model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    """Tear down megatron's groups and the process group, so a later init starts clean."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """A one-process world with every parallel size 1, for building models on a CPU (conversion, tests).

    Reuses a group that is already up (a test fixture's, or a training job's rank 0 after it finished)
    and only tears down what it created.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    created_group = not dist.is_initialized()
    if created_group:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}",
                                rank=0, world_size=1)
    created_parallel = not parallel_state.model_parallel_is_initialized()
    if created_parallel:
        parallel_state.initialize_model_parallel(1, 1)
        if torch.cuda.is_available():
            model_parallel_cuda_manual_seed(0)  # attention draws its dropout from megatron's CUDA RNG tracker
    try:
        yield
    finally:
        if created_parallel:
            parallel_state.destroy_model_parallel()
        if created_group:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
