"""Data-parallel meta-training over torch.distributed ranks (`torchrun ... -m mtl meta-train` or
`mtl meta-train --nproc G`).

"Same tasks" is exact here: every rank draws the SAME meta-batch indices from an identically seeded
sampler (index draws cost microseconds) and gathers the images of its own contiguous slice only —
rank r of W takes tasks [r·B/W, (r+1)·B/W). Before every optimiser step one all-reduce averages the
meta-gradients, so all ranks apply the same update to the same parameters and the run equals one
process that drew the whole meta-batch (up to float summation order). The sampler state, identical on
every rank, is what the checkpoint stores, so resume stays exact. Rank 0 alone validates, writes
metrics and checkpoints. NCCL on CUDA (one GPU per rank, `cuda:LOCAL_RANK`), gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mtl.pipeline.errors import CheckpointError, ConfigError, DataError, MtlError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank r of `world`, `local_rank` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> Ranks:
        """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); one process if unset."""
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def lead(self) -> bool:
        """Rank 0: the only process that validates, logs and writes checkpoints."""
        return self.rank == 0

    def tasks(self, meta_batch: int) -> slice | None:
        """This rank's contiguous slice of a meta-batch (None: the whole of it, one process)."""
        if self.world == 1:
            return None
        if meta_batch % self.world:
            raise ConfigError(f"--meta-batch {meta_batch} does not split evenly over {self.world} processes; "
                              f"choose a multiple of {self.world}")
        share = meta_batch // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank (cuda:LOCAL_RANK); CPU ranks share the CPU."""
        if device.type != "cuda" or self.world == 1:
            return device
        check_gpus(self.local_world)
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> bool:
        """Join the process group (NCCL on CUDA, gloo on CPU) unless it exists; True if this call made it.
        CPU ranks split the cores between them."""
        if self.world == 1 or dist.is_initialized():
            return False
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        return True

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def average_gradients(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Make every optimiser step first replace each `.grad` by its mean over the ranks (one all-reduce)."""
        if self.world == 1:
            return
        for opt in optimizers:
            opt.register_step_pre_hook(lambda opt, args, kwargs: self.all_reduce_mean(
                [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]))

    def all_reduce_mean(self, tensors: list[torch.Tensor]) -> None:
        """Average `tensors` over the ranks in place, packed into one flat buffer (one collective)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `tensor` in rank order: the whole meta-batch's values again."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)


def check_gpus(per_machine: int) -> None:
    """A clear error when fewer CUDA GPUs are visible than processes per machine need."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < per_machine:
        raise ConfigError(f"{per_machine} processes with one GPU each need {per_machine} CUDA GPUs, but this "
                          f"machine has {have}; use fewer processes or --device cpu")


class FollowerRunDir:
    """What a rank other than 0 sees of the run directory: where to read a checkpoint from, nothing to write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last = self.path / "last.safetensors"

    def create(self) -> None:
        pass

    def check_checkpoint(self, meta: dict[str, Any]) -> None:
        pass  # rank 0 checks the run directory and its checkpoint

    def write_splits(self, splits: dict[str, list[str]]) -> None:
        pass

    def log(self, record: dict[str, Any]) -> None:
        pass

    def truncate_metrics(self, last: int, key: str) -> None:
        pass


def launch(worker: Callable[..., Any], args: tuple, nproc: int) -> Any:
    """Run `worker(*args)` in `nproc` processes on this machine through torch.distributed's elastic launcher
    (what `torchrun --standalone` runs); return rank 0's result.

    A rank that fails with an `MtlError` fails the whole job with that error (its type and one-line message).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.multiprocessing"):  # failures are re-raised below
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        return elastic_launch(config, worker)(*args)[0]
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else str(failure.message)
        kind, _, text = message.partition(": ")
        errors = {cls.__name__: cls for cls in (ConfigError, DataError, CheckpointError, MtlError)}
        if kind in errors:
            raise errors[kind](text) from None
        raise MtlError(f"meta-training failed in process {rank} (exit code {failure.exitcode}): "
                       f"{message or 'see its output above'}") from None
