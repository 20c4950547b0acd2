"""Processes: one, or the ranks of a ``torchrun`` job (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """This process's place in a ``torchrun`` job (rank 0 of 1 outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def device(self, kind: str) -> str:
        """The device this rank trains on: ``cpu``, or its own GPU (``cuda:<local rank>``)."""
        return f"cuda:{self.local_rank}" if kind == "cuda" else kind


def world_from_env(env=os.environ) -> World:
    """Rank, world size and local rank from torchrun's environment variables.

    >>> world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    World(rank=1, size=2, local_rank=1)
    """
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


@contextlib.contextmanager
def threads(count: int):
    """Run the block with ``count`` CPU threads (``torch.set_num_threads``), then restore the
    previous count. The arithmetic of a run depends on it: runs compared bit for bit across
    processes must use the same count (1 is also the fastest for these small models)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def process_group(world: World, device: str):
    """Join the job's process group (gloo on CPU, nccl on CUDA) for the block; nothing when alone."""
    if world.size == 1:
        yield world
        return
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    try:
        yield world
        # NB: without this barrier a rank that finished sending (gather_object) could tear its
        # connections down while rank 0 still receives, and gloo aborts the job (seen here).
        dist.barrier()
    finally:
        dist.destroy_process_group()
