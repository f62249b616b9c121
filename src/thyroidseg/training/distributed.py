"""Training under ``torchrun``: the process group, this process's rank, and reductions.

`thyroidseg.training.Trainer.fit` runs inside `join_process_group`, which joins the
``torchrun`` process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on the CPU) and yields
a `DistContext`: the rank and world size, and the few collective operations the trainer
needs (sums of the loss, the first failing validation item, BatchNorm statistics from rank 0,
a barrier). Outside ``torchrun`` it yields rank 0 of 1, and every operation is the identity.
`synced_batchnorm` lends a model ``SyncBatchNorm`` layers for a distributed fit.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "join_process_group", "launched_as_main", "synced_batchnorm"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files."""
        return self.rank == 0

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Sum ``values`` over processes (identity when not distributed)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()

    def smallest(self, value: int | None, device: torch.device) -> int | None:
        """The smallest ``value`` over processes; ``None`` when no process has one."""
        if self.world_size == 1:
            return value
        found = torch.tensor([math.inf if value is None else value], dtype=torch.float64)
        found = found.to(device)
        dist.all_reduce(found, op=dist.ReduceOp.MIN)
        return int(found.item()) if math.isfinite(found.item()) else None

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's buffers (e.g. BatchNorm statistics) of ``module``."""
        if self.world_size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        """Wait until every process gets here (nothing when not distributed)."""
        if self.world_size > 1:
            dist.barrier()


@contextlib.contextmanager
def synced_batchnorm(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """``module`` with its BatchNorm layers as ``torch.nn.SyncBatchNorm`` inside the block.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` replaces each layer by one that shares its
    parameters and running statistics (so an optimizer over ``module`` still trains them);
    on leaving the block the original layers are put back, holding the trained values. The
    statistics of a training step are then those of the whole batch, over every process,
    instead of each process's share. With ``enabled=False``, ``module`` as it is.
    """
    if not enabled:
        yield module
        return
    originals = {
        name: child
        for name, child in module.named_modules()
        if name and isinstance(child, nn.modules.batchnorm._BatchNorm)
    }
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    try:
        yield converted
    finally:
        for name, child in originals.items():
            module.set_submodule(name, child)


def launched_as_main() -> bool:
    """Whether this process writes the run's files: rank 0 under ``torchrun`` (its ``RANK``),
    or the only process; known before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def join_process_group(device: torch.device) -> Iterator[DistContext]:
    """Join the ``torchrun`` process group for the ``with`` block (if ``WORLD_SIZE > 1``).

    Uses NCCL for CUDA devices and gloo otherwise; a group that already exists is reused
    and left alone, one created here is destroyed on exit.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        yield DistContext()
        return
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size())
    except BaseException:
        if created:  # no barrier: the other processes may never reach one
            dist.destroy_process_group()
        raise
    if created:
        dist.barrier()  # every process done: gloo aborts a process whose peer left early
        dist.destroy_process_group()
