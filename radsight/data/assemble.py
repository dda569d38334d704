"""Turn a recipe's data section into train/val/test datasets: sources joined, labels mapped by name,
patient-level splits, an optional label budget, the pools of training images a stage can choose
(labelled, unlabelled, annotated), and the transform pipeline."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from radsight.config import DataConfig, Pool, SourceSpec
from radsight.data.sample import Sample
from radsight.data.sources import source_class
from radsight.data.splits import label_budget_subsets, patient_split
from radsight.data.transforms import AlignBreast, build_transforms
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)


ALIGN_BREAST = "align_breast"
"""Source option understood for every source: mirror mammograms so all breasts face the same way."""


def aligns_breasts(spec: SourceSpec) -> bool:
    """Whether a recipe's source entry asks for :class:`AlignBreast` (training and prediction agree)."""
    return bool(spec.options.get(ALIGN_BREAST, False))


def build_source(spec: SourceSpec, on_bad_file: str = "raise") -> Any:
    """Instantiate one source from its recipe entry (file sources need ``root``; phantoms do not).

    ``${VAR}`` in the root and options was already read from the environment when the recipe loaded.
    With ``align_breast: true`` the source's transform is :class:`AlignBreast`, run before any other.
    """
    cls = source_class(spec.name)
    options = {key: value for key, value in spec.options.items() if key != ALIGN_BREAST}
    if aligns_breasts(spec):
        options["transform"] = AlignBreast()
    if "root" not in inspect.signature(cls).parameters:
        return cls(**options)
    if spec.root is None:
        raise ConfigError(f"data source {spec.name!r} needs a root folder (data.sources[].root)")
    return cls(Path(spec.root), on_bad_file=on_bad_file, **options)


class LabelledUnion(Dataset):
    """Several sources seen as one, with each source's labels mapped by name onto ``label_names``.

    A recipe label that a source does not annotate is NaN for that source's images (torchxrayvision's
    harmonisation), so losses and metrics skip it rather than counting it negative. ``partial`` accepts
    labels no source knows as long as one label is shared (evaluating a model on another dataset).
    """

    def __init__(
        self,
        sources: Sequence[Any],
        names: Sequence[str],
        label_names: Sequence[str],
        transform: Callable[[Sample], Sample] | None = None,
        *,
        partial: bool = False,
    ) -> None:
        known = {label for source in sources for label in source.label_names}
        unknown = [label for label in label_names if label not in known]
        if unknown and not (partial and len(unknown) < len(label_names)):
            raise ConfigError(f"unknown label name(s) {unknown} in recipe; the sources know {sorted(known)}")
        self.sources = list(sources)
        self.names = list(names)
        self.label_names = list(label_names)
        self.transform = transform
        self._maps = [
            np.array([list(s.label_names).index(n) if n in s.label_names else -1 for n in label_names])
            for s in self.sources
        ]
        self._index = [(k, i) for k, source in enumerate(self.sources) for i in range(len(source))]

    def with_transform(self, transform: Callable[[Sample], Sample] | None) -> LabelledUnion:
        """The same samples under another pipeline (train and eval views share their sources)."""
        view = object.__new__(LabelledUnion)
        view.__dict__.update(self.__dict__)
        view.transform = transform
        return view

    def __len__(self) -> int:
        return len(self._index)

    def _remap(self, k: int, labels: np.ndarray) -> np.ndarray:
        mapping = self._maps[k]
        out = np.full(len(mapping), np.nan, dtype=np.float32)
        present = mapping >= 0
        out[present] = labels[mapping[present]]
        return out

    @property
    def patient_ids(self) -> list[str]:
        return [
            f"{name}:{pid}" for name, s in zip(self.names, self.sources, strict=True) for pid in s.patient_ids
        ]

    @property
    def label_matrix(self) -> np.ndarray:
        return np.concatenate(
            [np.stack([self._remap(k, row) for row in s.label_matrix]) for k, s in enumerate(self.sources)]
        )

    @property
    def annotated(self) -> np.ndarray:
        """Per image, whether it carries boxes, masks or gaze (each source says, without reading images)."""
        return np.concatenate([np.asarray(s.annotated, dtype=bool) for s in self.sources])

    def __getitem__(self, index: int) -> Sample | None:
        k, i = self._index[index]
        sample = self.sources[k][i]
        if sample is None:
            return None
        if sample.labels is not None:
            sample = sample.replace(labels=torch.from_numpy(self._remap(k, sample.labels.numpy())))
        sample.meta.patient_id = f"{self.names[k]}:{sample.meta.patient_id}"
        return self.transform(sample) if self.transform is not None else sample


def without_annotations(sample: Sample) -> Sample:
    """The image alone: labels go, and so do the boxes, masks, gaze, report and token ids that name or
    imply them (a phantom's per-class masks, a report the labels were mined from)."""
    return Sample(image=sample.image, meta=sample.meta)


def _train_transform(data: DataConfig, augment: bool) -> Callable[[Sample], Sample]:
    return build_transforms(
        data.image_size,
        train=True,
        augment=augment,
        gaze_sigma_fraction=data.gaze_sigma_fraction,
        pseudo_gaze=data.pseudo_gaze,
    )


@dataclass
class DataSplits:
    """Train/val/test views of one union, plus the indices that define them (saved with the run).

    ``train`` is the labelled pool; :meth:`pool` gives the others. ``train_split`` is every image of
    the training split, the ones a label budget left out included (the unlabelled pool).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    label_names: list[str]
    indices: dict[str, list[int]]
    patients: dict[str, list[str]]
    union: LabelledUnion
    train_split: list[int]
    data: DataConfig

    def pool(self, name: Pool, augment: bool | None = None) -> Dataset:
        """The training images of one pool under the training pipeline (``augment`` None: the recipe's).

        The unlabelled pool never shows a label or any other annotation; the annotated pool is the
        labelled images that carry boxes, masks or gaze, so it spends no label beyond the budget.
        """
        augment = self.data.augment if augment is None else augment
        if name == "labelled" and augment == self.data.augment:
            return self.train
        transform = _train_transform(self.data, augment)
        if name == "labelled":
            return Subset(self.union.with_transform(transform), self.indices["train"])
        if name == "unlabelled":
            stripped = self.union.with_transform(v2.Compose([without_annotations, transform]))
            return Subset(stripped, self.train_split)
        annotated = self.union.annotated
        index = [i for i in self.indices["train"] if annotated[i]]
        if not index:
            raise DataError(None, "pool 'annotated': no labelled training image carries boxes, masks or gaze")
        return Subset(self.union.with_transform(transform), index)


def build_splits(data: DataConfig, seed: int) -> DataSplits:
    sources = [build_source(spec, data.on_bad_file) for spec in data.sources]
    union = LabelledUnion(sources, [spec.name for spec in data.sources], data.labels)
    labels = union.label_matrix
    patient_ids = union.patient_ids
    split = patient_split(patient_ids, fractions=data.split, seed=seed)
    train_index = np.asarray(split["train"])
    if data.budget is not None:
        budget_seed = seed if data.budget_seed is None else data.budget_seed
        subset = label_budget_subsets(labels[train_index], [data.budget], seed=budget_seed)[data.budget]
        train_index = train_index[np.asarray(subset)]
    for name, index in (("train", train_index), ("val", split["val"]), ("test", split["test"])):
        if len(index) == 0 and (name != "val" or data.split[1] > 0):
            raise DataError(None, f"the {name} split is empty: the dataset has {len(union)} images")
    train_view = union.with_transform(_train_transform(data, data.augment))
    eval_view = union.with_transform(
        build_transforms(
            data.image_size,
            train=False,
            augment=False,
            gaze_sigma_fraction=data.gaze_sigma_fraction,
            pseudo_gaze=data.pseudo_gaze,
        )
    )
    indices = {
        "train": train_index.tolist(),
        "val": list(map(int, split["val"])),
        "test": list(map(int, split["test"])),
    }
    log.info(
        "splits by patient: train %d, val %d, test %d images",
        len(indices["train"]),
        len(indices["val"]),
        len(indices["test"]),
    )
    return DataSplits(
        train=Subset(train_view, indices["train"]),
        val=Subset(eval_view, indices["val"]),
        test=Subset(eval_view, indices["test"]),
        label_names=list(data.labels),
        indices=indices,
        patients={name: sorted({patient_ids[i] for i in index}) for name, index in indices.items()},
        union=union,
        train_split=list(map(int, split["train"])),
        data=data,
    )


def without_patients_of_run(dataset: LabelledUnion, run_dir: Path) -> Dataset:
    """``dataset`` less the images of patients a run trained or validated on (its ``patients.json``),
    so that evaluating a model on a source it partly learnt from scores only unseen patients."""
    path = Path(run_dir) / "patients.json"
    if not path.is_file():
        log.warning("%s has no patients.json: cannot exclude the patients it trained on", run_dir)
        return dataset
    seen = {pid for split in ("train", "val") for pid in json.loads(path.read_text()).get(split, [])}
    keep = [i for i, pid in enumerate(dataset.patient_ids) if pid not in seen]
    if not keep:
        raise DataError(None, "every image belongs to a patient the model trained or validated on")
    if len(keep) == len(dataset):
        return dataset
    log.warning(
        "left out %d of %d images: their patients were in the model's training or validation split",
        len(dataset) - len(keep),
        len(dataset),
    )
    return Subset(dataset, keep)
