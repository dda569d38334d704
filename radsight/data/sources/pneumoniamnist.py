"""PneumoniaMNIST (MedMNIST v2; Kermany et al. 2018 paediatric chest X-rays at 28 x 28), from its npz.

Layout: ``pneumoniamnist.npz`` with ``{train,val,test}_images`` (N x 28 x 28 uint8) and ``*_labels``
(N x 1, 1 = pneumonia). One label, ``Pneumonia``. The file names no patient, so each image is its own
patient here (the upstream Kermany set has several images of some children: a split of this file by
image may put one child on both sides). ``parts`` chooses which of the file's parts to read and ``limit``
keeps that many images of each, drawn at random by ``subset_seed`` (the file is sorted by label, so
its first images would all be of one class), for small experiments; the recipe's patient split then
splits them (the file's own split is not used, so the source joins others in one recipe). The recipe's
``image_size`` upscales the images like any other source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from radsight.data.sample import Sample, SampleMeta
from radsight.data.sources.base import BadFilePolicy, Transform
from radsight.errors import DataError

FILE = "pneumoniamnist.npz"
PARTS = ("train", "val", "test")


class PneumoniaMNIST(Dataset):
    """28 x 28 chest X-rays labelled pneumonia or not, held in memory."""

    name = "pneumoniamnist"
    label_names: ClassVar[list[str]] = ["Pneumonia"]

    def __init__(
        self,
        root: Path,
        *,
        parts: Sequence[str] = PARTS,
        limit: int | None = None,
        subset_seed: int = 0,
        transform: Transform | None = None,
        on_bad_file: BadFilePolicy = "raise",
    ) -> None:
        path = Path(root) / FILE
        unknown = [part for part in parts if part not in PARTS]
        if unknown:
            raise DataError(path, f"unknown part(s) {unknown}; the file has {list(PARTS)}")
        if not path.is_file():
            raise DataError(path, "file not found")
        try:
            with np.load(path) as archive:
                kept = [_subset(len(archive[f"{part}_labels"]), limit, subset_seed) for part in parts]
                images = [archive[f"{part}_images"][k] for part, k in zip(parts, kept, strict=True)]
                labels = [archive[f"{part}_labels"][k] for part, k in zip(parts, kept, strict=True)]
        except (KeyError, ValueError, OSError) as error:
            raise DataError(path, f"not a PneumoniaMNIST npz ({error})") from None
        self.path = path
        self.images = np.concatenate(images)
        self._labels = np.concatenate(labels).reshape(-1, 1).astype(np.float32)
        self._ids = [f"{part}/{i}" for part, index in zip(parts, kept, strict=True) for i in index]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def patient_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def label_matrix(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def annotated(self) -> np.ndarray:
        return np.zeros(len(self), dtype=bool)

    @property
    def reports(self) -> list[str | None]:
        return [None] * len(self)

    def __getitem__(self, index: int) -> Sample:
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)[None]
        sample = Sample(
            image=image,
            meta=SampleMeta(
                source=self.name,
                path=f"{self.path}#{self._ids[index]}",
                patient_id=self._ids[index],
                view="PA",
                original_size=tuple(image.shape[-2:]),
            ),
            labels=torch.from_numpy(self._labels[index].copy()),
        )
        return self.transform(sample) if self.transform is not None else sample


def _subset(size: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of ``limit`` of ``size`` images drawn at random (all when None), in file order."""
    if limit is None or limit >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))
