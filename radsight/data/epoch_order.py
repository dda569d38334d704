"""The order and the randomness of a training epoch, as functions of (recipe seed, stage, epoch) alone.

Drawn from the global random state, an epoch's shuffle and augmentations depend on everything that
drew from it before, in this process: a run resumed from a checkpoint then trains on another order and
other augmentations than the run that was never interrupted (Lightning even creates a resumed fit's
first iterator before any epoch hook runs). Here the sampler deals, per epoch, a permutation and a seed
for each image; the dataset wrapper reads each image under its own seed. Both travel through the data
loader's indices, so data-loader workers, persistent or not, see them too.

Under DDP the permutation is one for all ranks and each rank deals its own slice of it, so every image
is read by one rank once per epoch; the loader's position within the epoch is part of Lightning's
checkpoint, so a run killed mid-epoch resumes at the batch where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochOrder(DistributedSampler):
    """Yields ``(seed, index)`` for every image of a pool of ``size``, in an order and with seeds drawn
    from (``seed``, ``stage``, epoch). ``epoch`` is the one the first iteration deals (a resumed stage's
    next epoch); Lightning calls :meth:`set_epoch` before every later one.

    Under DDP, rank r of R deals positions r, r + R, ... of the epoch's one permutation; the last
    ``size % R`` positions sit the epoch out (others each epoch), so no image is seen twice in an epoch
    and every rank takes as many steps. The rank is read when an epoch is dealt, since the processes
    exist only once Lightning has started them (hence no ``DistributedSampler.__init__``; being one
    keeps Lightning from wrapping the order in a sampler of its own). ``skip`` items of this rank's
    share are passed over by the next iteration only (a mid-epoch resume).
    """

    def __init__(self, size: int, seed: int, stage: int, epoch: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.stage = stage
        self.epoch = epoch
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        _, world = _world()
        return self.size // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = _world()
        order_seed, items_seed = np.random.SeedSequence([self.seed, self.stage, self.epoch]).generate_state(2)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(int(order_seed)))
        seeds = np.random.default_rng(items_seed).integers(0, 2**63 - 1, self.size)
        share = order[: self.size - self.size % world][rank::world].tolist()
        skip, self.skip = self.skip, 0
        return iter([(int(seeds[index]), index) for index in share[skip:]])


class EpochLoader(DataLoader):
    """The training loader dealt by an :class:`EpochOrder`, resumable mid-epoch: Lightning saves its
    :meth:`state_dict` (the epoch and the batches trained of it, kept by ``batches_done``) in every
    checkpoint and loads it back before the resumed fit's first iteration."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = 0

    @property
    def order(self) -> EpochOrder:
        assert isinstance(self.sampler, EpochOrder)
        return self.sampler

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.epoch, "batches": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        skip = state["batches"] * (self.batch_size or 1)
        finished = skip >= len(self.order)
        self.order.set_epoch(state["epoch"] + 1 if finished else state["epoch"])
        self.order.skip = 0 if finished else skip
        self.batches_done = 0 if finished else state["batches"]


class SeededItems(Dataset):
    """``dataset`` read at ``(seed, index)`` keys, each item under its own seed (its augmentations),
    leaving the global random state as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
