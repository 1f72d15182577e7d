"""Data-parallel training under ``torchrun``: the process group, the sharded sampler, rank 0.

:func:`compendium.learning.fit` calls :func:`setup` once per run. When the process was started
by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), it joins the process group (NCCL on a
GPU, gloo on the CPU), each rank binds to its own GPU (``LOCAL_RANK``), the model is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel` (gradients averaged over ranks) and each
rank trains on its share of every *global* batch (:class:`ShardedBatchSampler`). ``batch_size``
keeps its meaning: the global batch, split evenly over the ranks, so that ``N`` processes
compute exactly the updates of one process with the same batch (``tests/test_distributed.py``).
Only rank 0 prints, shows progress and writes checkpoints; every rank resumes from them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    """This process's place in the data-parallel group (``size`` 1: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, shows progress and writes checkpoints."""
        return self.rank == 0


def world_from_env() -> World:
    """The group ``torchrun`` describes in ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (else one process)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by ``torchrun`` (idempotent) and return the world
    and the device this rank trains on (``cuda:LOCAL_RANK`` for a CUDA device)."""
    import torch.distributed as dist

    w = world_from_env()
    if not w.distributed:
        return w, device
    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), w.local_rank), device


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over all ranks (the same list on every rank)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of indices for one rank: the global batches of a seeded shuffle (the permutation
    a single process's ``DataLoader(shuffle=True, generator=seed)`` draws), each cut into
    ``world`` equal contiguous parts, of which this rank takes part ``rank``.

    With ``world == 1`` it yields exactly the batches of ``DataLoader(shuffle=True)`` under the
    same seed. A last global batch that does not split evenly is cut to a multiple of
    ``world`` (at most ``world - 1`` samples an epoch are skipped), so that every rank takes
    the same number of steps and the averaged gradient is the global batch mean."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        if batch_size % world:
            raise ValueError(f"the global batch ({batch_size}) must be a multiple of the number of processes ({world})")
        self.n, self.batch, self.seed, self.rank, self.world, self.shuffle = n, batch_size, seed, rank, world, shuffle

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # what DataLoader draws first (its base seed)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for lo in range(0, self.n, self.batch):
            glob = order[lo: lo + self.batch]
            part = len(glob) // self.world
            if part == 0:
                return
            yield glob[self.rank * part: (self.rank + 1) * part]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch)
        return full + (1 if rest >= self.world else 0) if self.world > 1 else math.ceil(self.n / self.batch)
