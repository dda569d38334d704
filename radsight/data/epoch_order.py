"""The order and the randomness of a training epoch, as functions of (recipe seed, stage, epoch) alone.

Drawn from the global random state, an epoch's shuffle and augmentations depend on everything that
drew from it before, in this process: a run resumed from a checkpoint then trains on another order and
other augmentations than the run that was never interrupted (Lightning even creates a resumed fit's
first iterator before any epoch hook runs). Here the sampler deals, per epoch, a permutation and a seed
for each image; the dataset wrapper reads each image under its own seed. Both travel through the data
loader's indices, so data-loader workers, persistent or not, see them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochOrder(Sampler[tuple[int, int]]):
    """Yields ``(seed, index)`` for every image of a pool of ``size``, in an order and with seeds drawn
    from (``seed``, ``stage``, epoch). ``epoch`` is the one the first iteration deals (a resumed stage's
    next epoch); Lightning calls :meth:`set_epoch` before every later one."""

    def __init__(self, size: int, seed: int, stage: int, epoch: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.stage = stage
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order_seed, items_seed = np.random.SeedSequence([self.seed, self.stage, self.epoch]).generate_state(2)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(int(order_seed)))
        seeds = np.random.default_rng(items_seed).integers(0, 2**63 - 1, self.size)
        return iter([(int(seeds[index]), index) for index in order.tolist()])


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
