"""Data-parallel training under ``torchrun`` (torch.distributed + DistributedDataParallel).

Only outer parameters are synchronised (DDP all-reduces their gradients). In-context fast
weights are per-sequence *state* returned by the forward, never ``nn.Parameter``s, so they are
never all-reduced and every rank sees the same outer parameters at every step. Every rank
draws the global batch of a step (a pure function of seed and step) and keeps its own shard:
N processes see exactly the data of one process with the same global batch. Only rank 0
writes the run folder and publishes events.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by the "
                             f"{self.world_size} processes")

    def shard(self, batch):
        if not self.enabled:
            return batch
        per = batch.inputs.shape[0] // self.world_size
        lo = self.rank * per
        return batch.map(lambda t: t[lo:lo + per])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a per-rank number over all ranks (logged losses match one process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (stop together)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


_CONTEXT: DistContext | None = None


def context() -> DistContext:
    """The process's distributed context, initialised once from torchrun's environment."""
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = DistContext()
        return _CONTEXT
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _CONTEXT = DistContext(True, rank, world, local_rank, device)
    return _CONTEXT


def shutdown() -> None:
    global _CONTEXT
    if _CONTEXT is not None and _CONTEXT.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None
