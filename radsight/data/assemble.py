"""Turn a recipe's data section into train/val/test datasets: sources joined, labels mapped by name,
patient-level splits, an optional label budget, and the transform pipeline."""

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

from radsight.config import DataConfig, SourceSpec, Strict, validate_options
from radsight.data.sample import Sample
from radsight.data.sources import options_schema, source_class
from radsight.data.splits import SPLIT_NAMES, label_budget_subsets, patient_split
from radsight.data.transforms import AlignBreast, build_transforms
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)


ALIGN_BREAST = "align_breast"
"""Source option understood for every source: mirror mammograms so all breasts face the same way."""


SPLITS_FILE = "splits.json"
"""A run folder's record of its split (``DataSplits.to_json``), read back by ``build_splits``."""


class GenericSourceOptions(Strict):
    """Options every source accepts beside the ones its constructor declares."""

    align_breast: bool = False


def aligns_breasts(spec: SourceSpec) -> bool:
    """Whether a recipe's source entry asks for :class:`AlignBreast` (training and prediction agree)."""
    return bool(spec.options.get(ALIGN_BREAST, False))


def source_options(spec: SourceSpec) -> dict[str, Any]:
    """The options a recipe gives one source, checked against what the source declares (and a root
    folder where it reads files), as one ConfigError line; nothing is read from disk."""
    cls = source_class(spec.name)
    schema = options_schema(cls, GenericSourceOptions)
    checked = validate_options(schema, spec.options, f"data source {spec.name!r}")
    if spec.root is None and _reads_files(cls):
        raise ConfigError(f"data source {spec.name!r} needs a root folder (data.sources[].root)")
    return {key: getattr(checked, key) for key in checked.model_fields_set}


def _reads_files(cls: type) -> bool:
    """File sources take a root folder; the phantoms draw their images."""
    return "root" in inspect.signature(cls).parameters


def build_source(spec: SourceSpec, on_bad_file: str = "raise") -> Any:
    """Instantiate one source from its recipe entry (file sources need ``root``; phantoms do not).

    ``${VAR}`` in the root and options was already read from the environment when the recipe loaded.
    With ``align_breast: true`` the source's transform is :class:`AlignBreast`, run before any other.
    """
    cls = source_class(spec.name)
    options = source_options(spec)
    if options.pop(ALIGN_BREAST, False):
        options["transform"] = AlignBreast()
    if not _reads_files(cls):
        return cls(**options)
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
    def image_ids(self) -> list[str]:
        """``source:file`` of every image, ``#k`` added to the k-th repeat of one file (a dataset with
        several readings of an image): unique names that a run's ``splits.json`` stores."""
        seen: dict[str, int] = {}
        names = []
        for name, source in zip(self.names, self.sources, strict=True):
            for image in source.image_ids:
                key = f"{name}:{image}"
                seen[key] = seen.get(key, 0) + 1
                names.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
        return names

    @property
    def label_matrix(self) -> np.ndarray:
        return np.concatenate(
            [np.stack([self._remap(k, row) for row in s.label_matrix]) for k, s in enumerate(self.sources)]
        )

    def __getitem__(self, index: int) -> Sample | None:
        k, i = self._index[index]
        sample = self.sources[k][i]
        if sample is None:
            return None
        if sample.labels is not None:
            sample = sample.replace(labels=torch.from_numpy(self._remap(k, sample.labels.numpy())))
        sample.meta.patient_id = f"{self.names[k]}:{sample.meta.patient_id}"
        return self.transform(sample) if self.transform is not None else sample


@dataclass
class DataSplits:
    """Train/val/test views of one union, plus what defines them (saved with the run as splits.json).

    ``images`` names every image of the union (source name and file, see ``LabelledUnion.image_ids``),
    so that a later reading of ``splits.json`` finds the same images even if files came or went.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    label_names: list[str]
    indices: dict[str, list[int]]
    patients: dict[str, list[str]]
    images: list[str]

    def to_json(self) -> dict[str, Any]:
        """What ``splits.json`` holds: the indices of each split and the image each index names."""
        return {**self.indices, "images": self.images}


def build_splits(
    data: DataConfig, seed: int, stored: Path | None = None, required: Sequence[str] = SPLIT_NAMES
) -> DataSplits:
    """The recipe's splits by patient (and label budget), computed from the current files.

    With ``stored`` (a run's ``splits.json``) the run's own split is used instead, found again by image
    name: a split recomputed differently (files came, went or changed) is one warning naming what
    changed, and an image of a ``required`` split that is no longer there is a DataError (evaluation
    needs only the test split, resuming a run all three).
    """
    sources = [build_source(spec, data.on_bad_file) for spec in data.sources]
    union = LabelledUnion(sources, [spec.name for spec in data.sources], data.labels)
    indices = _split_indices(union, data, seed)
    images = union.image_ids
    if stored is not None:
        indices = read_back_split(stored, images, indices, required)
    for name, index in indices.items():
        if len(index) == 0 and (name != "val" or data.split[1] > 0):
            raise DataError(None, f"the {name} split is empty: the dataset has {len(union)} images")
    train_view = union.with_transform(
        build_transforms(
            data.image_size,
            train=True,
            augment=data.augment,
            gaze_sigma_fraction=data.gaze_sigma_fraction,
            pseudo_gaze=data.pseudo_gaze,
        )
    )
    eval_view = union.with_transform(
        build_transforms(
            data.image_size,
            train=False,
            augment=False,
            gaze_sigma_fraction=data.gaze_sigma_fraction,
            pseudo_gaze=data.pseudo_gaze,
        )
    )
    log.info(
        "splits by patient: train %d, val %d, test %d images",
        len(indices["train"]),
        len(indices["val"]),
        len(indices["test"]),
    )
    patient_ids = union.patient_ids
    return DataSplits(
        train=Subset(train_view, indices["train"]),
        val=Subset(eval_view, indices["val"]),
        test=Subset(eval_view, indices["test"]),
        label_names=list(data.labels),
        indices=indices,
        patients={name: sorted({patient_ids[i] for i in index}) for name, index in indices.items()},
        images=images,
    )


def _split_indices(union: LabelledUnion, data: DataConfig, seed: int) -> dict[str, list[int]]:
    """Image indices of each split: patients dealt by ``patient_split``, the training split then cut
    to the label budget."""
    split = patient_split(union.patient_ids, fractions=data.split, seed=seed)
    train_index = np.asarray(split["train"])
    if data.budget is not None:
        budget_seed = seed if data.budget_seed is None else data.budget_seed
        labels = union.label_matrix
        subset = label_budget_subsets(labels[train_index], [data.budget], seed=budget_seed)[data.budget]
        train_index = train_index[np.asarray(subset)]
    return {
        "train": train_index.tolist(),
        "val": list(map(int, split["val"])),
        "test": list(map(int, split["test"])),
    }


def read_back_split(
    path: Path, images: list[str], recomputed: dict[str, list[int]], required: Sequence[str] = SPLIT_NAMES
) -> dict[str, list[int]]:
    """The split stored in ``path``, as indices into the current ``images``.

    Returns ``recomputed`` when it names the same images in the same order, or when ``path`` is missing
    or holds no image names (a run from before they were stored; said in a warning). An image of a
    ``required`` split that is no longer among ``images`` is a DataError, since evaluating or resuming
    on other images than the run's would be a silently different experiment; the other splits keep
    the images still there.
    """
    path = Path(path)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if "images" not in saved:
        log.warning("%s: no stored split with image names; the split is recomputed", path)
        return recomputed
    stored = {name: [saved["images"][i] for i in saved[name]] for name in SPLIT_NAMES}
    current = {name: [images[i] for i in index] for name, index in recomputed.items()}
    if stored == current:
        return recomputed
    position = {image: i for i, image in enumerate(images)}
    for name in required:
        lost = [image for image in stored[name] if image not in position]
        if lost:
            raise DataError(
                path,
                f"{len(lost)} image(s) of the stored {name} split are no longer in the data "
                f"(e.g. {_examples(lost)}): the run's split cannot be rebuilt",
            )
    changes = _split_changes(saved["images"], images, stored, current)
    log.warning("%s: %s; using the stored split", path, changes)
    return {name: [position[image] for image in stored[name] if image in position] for name in SPLIT_NAMES}


def _split_changes(
    before: list[str], now: list[str], stored: dict[str, list[str]], current: dict[str, list[str]]
) -> str:
    """One clause saying how the split recomputed from the current files differs from the stored one."""
    known_before, known_now = set(before), set(now)
    gone = [image for image in before if image not in known_now]
    new = [image for image in now if image not in known_before]
    split_of = {image: name for name, split in stored.items() for image in split}
    moved = [image for name, split in current.items() for image in split if split_of.get(image, name) != name]
    changes = [
        f"{len(found)} image(s) {what} (e.g. {_examples(found)})"
        for found, what in ((gone, "vanished"), (new, "appeared"), (moved, "moved to another split"))
        if found
    ]
    what = ", ".join(changes) or "the images are in another order"
    return f"the split recomputed from the current files differs from the stored one: {what}"


def _examples(images: list[str], count: int = 3) -> str:
    return ", ".join(images[:count]) + (", ..." if len(images) > count else "")


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
