"""Turn a recipe's data section into train/val/test datasets: sources joined, labels mapped by name,
patient-level splits, an optional label budget, the pools of training images a stage can choose
(labelled, unlabelled, annotated), the transform pipeline; and the evaluation pipeline that evaluation
and inference share, so a loose file is prepared exactly as the evaluated images."""

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
from radsight.data.sources.base import SourceDataset, Transform
from radsight.data.splits import SPLIT_NAMES, label_budget_subsets, named_split, patient_split
from radsight.data.transforms import AlignBreast, build_transforms
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)


ALIGN_BREAST = "align_breast"
"""Source option understood for every source: mirror mammograms so all breasts face the same way."""


@dataclass(frozen=True)
class SourceReading:
    """How one recipe source turns a file into a sample, before the transforms all sources share:
    ``read_image``'s options (the source's own defaults included, e.g. NYU's bit depths) and whether
    breasts are aligned (``align_breast``). Known from the recipe entry alone, without the data."""

    name: str
    read_options: dict[str, Any]
    align_breast: bool

    @classmethod
    def of(cls, spec: SourceSpec) -> SourceReading:
        source = source_class(spec.name)
        read_options = source.read_options_for(spec.options) if issubclass(source, SourceDataset) else {}
        return cls(spec.name, read_options, bool(spec.options.get(ALIGN_BREAST, False)))

    def reads_like(self, other: SourceReading) -> bool:
        """Whether a file comes out the same read by this source or by ``other``."""
        return (self.read_options, self.align_breast) == (other.read_options, other.align_breast)

    def alignment(self) -> Transform | None:
        """The transform run on every sample as it is read: :class:`AlignBreast`, or nothing."""
        return AlignBreast() if self.align_breast else None


@dataclass(frozen=True)
class EvaluationPipeline:
    """Everything between a file and the model's input at evaluation: per recipe source, how its files
    are read and aligned, and for all sources the evaluation transform. ``build_splits`` builds its
    evaluation view from it and ``radsight.infer`` prepares files with it."""

    readings: tuple[SourceReading, ...]
    transform: Transform

    def reading(self, source: str | None = None) -> SourceReading:
        """How a file from outside the datasets is read: as the recipe source named ``source`` reads its
        files or, without a name, as every source of the recipe does; when the sources read differently
        (other read options or alignment), the file's source must be named."""
        chosen = [r for r in self.readings if source is None or r.name == source]
        if not chosen:
            names = [r.name for r in self.readings]
            raise ConfigError(f"the recipe has no data source {source!r}; its sources are {names}")
        if not all(r.reads_like(chosen[0]) for r in chosen):
            described = "; ".join(
                f"{r.name}: read options {r.read_options}, align_breast {r.align_breast}" for r in chosen
            )
            raise ConfigError(
                f"the recipe's data sources read files differently ({described}): name the source "
                "the files come from"
            )
        return chosen[0]

    def model_input(self, sample: Sample, reading: SourceReading) -> Sample:
        """A sample as ``reading``'s source read it, aligned and through the evaluation transform."""
        align = reading.alignment()
        return self.transform(align(sample) if align is not None else sample)


def evaluation_pipeline(data: DataConfig) -> EvaluationPipeline:
    """The recipe's evaluation pipeline (its transform is ``build_transforms(..., train=False)``)."""
    transform = build_transforms(
        data.image_size,
        train=False,
        augment=False,
        gaze_sigma_fraction=data.gaze_sigma_fraction,
        pseudo_gaze=data.pseudo_gaze,
    )
    return EvaluationPipeline(tuple(SourceReading.of(spec) for spec in data.sources), transform)


def build_source(spec: SourceSpec, on_bad_file: str = "raise", reading: SourceReading | None = None) -> Any:
    """Instantiate one source from its recipe entry (file sources need ``root`` unless they default it,
    as the manifest does to its CSV's folder; phantoms have none).

    ``${VAR}`` in the root and options was already read from the environment when the recipe loaded.
    The source reads its files with ``reading`` (default: the entry's own), whose alignment, when
    ``align_breast: true``, is the source's transform, run before any other.
    """
    cls = source_class(spec.name)
    reading = reading or SourceReading.of(spec)
    options = {key: value for key, value in spec.options.items() if key != ALIGN_BREAST}
    if reading.align_breast:
        options["transform"] = reading.alignment()
    root_parameter = inspect.signature(cls).parameters.get("root")
    if root_parameter is None:
        return cls(**options)
    if spec.root is None and root_parameter.default is inspect.Parameter.empty:
        raise ConfigError(f"data source {spec.name!r} needs a root folder (data.sources[].root)")
    root = None if spec.root is None else Path(spec.root)
    return cls(root, on_bad_file=on_bad_file, **{**options, "read_options": reading.read_options})


class LabelledUnion(Dataset):
    """Several sources seen as one, with each source's labels mapped by name onto ``label_names``.

    A recipe label that a source does not annotate is NaN for that source's images (torchxrayvision's
    harmonisation), so losses and metrics skip it rather than counting it negative. ``partial`` accepts
    labels no source knows (evaluating a model on another dataset, even one without labels, whose maps
    and attention are still scored).
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
        if unknown and not partial:
            raise ConfigError(f"unknown label name(s) {unknown} in recipe; the sources know {sorted(known)}")
        if unknown:
            log.warning("the data does not annotate %s: those labels are not scored", unknown)
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

    @property
    def predefined_split(self) -> list[str] | None:
        """Each image's split as its source names it (a manifest's ``split`` column); None when no source
        names one. Either every source names its images' splits or none does."""
        named = [getattr(source, "predefined_split", None) for source in self.sources]
        if all(split is None for split in named):
            return None
        unnamed = [name for name, split in zip(self.names, named, strict=True) if split is None]
        if unnamed:
            raise ConfigError(
                f"data source(s) {unnamed} name no split while the others have a split column: "
                "give every source a split column, or none"
            )
        return [name for split in named for name in split]

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


def build_union(data: DataConfig, pipeline: EvaluationPipeline) -> LabelledUnion:
    """The recipe's sources as one dataset, each reading its files as ``pipeline`` says, untransformed."""
    sources = [
        build_source(spec, data.on_bad_file, reading)
        for spec, reading in zip(data.sources, pipeline.readings, strict=True)
    ]
    return LabelledUnion(sources, [spec.name for spec in data.sources], data.labels)


def build_splits(data: DataConfig, seed: int, *, require_test: bool = True) -> DataSplits:
    """The recipe's train/val/test views: the sources' own split where they name one (a manifest's
    ``split`` column), else a patient split seeded by ``data.split_seed`` (default: ``seed``).

    An empty test split is refused unless ``require_test`` is False (training without evaluating), and
    then only where the recipe asks for none (a test fraction of 0, or a split column without test rows).
    """
    pipeline = evaluation_pipeline(data)
    union = build_union(data, pipeline)
    labels = union.label_matrix
    patient_ids = union.patient_ids
    named = union.predefined_split
    if named is None:
        split_seed = seed if data.split_seed is None else data.split_seed
        split = patient_split(patient_ids, fractions=data.split, seed=split_seed)
        asked = dict(zip(SPLIT_NAMES, (share > 0 for share in data.split), strict=True))
        no_test = "data.split gives the test split no share"
    else:
        split = named_split(named, patient_ids)
        log.info("splits from the data's split column, not drawn at random (data.split is not used)")
        asked = {"train": True, "val": False, "test": False}
        no_test = "the split column has no test rows"
    train_index = np.asarray(split["train"])
    if data.budget is not None and len(train_index):
        budget_seed = seed if data.budget_seed is None else data.budget_seed
        subset = label_budget_subsets(labels[train_index], [data.budget], seed=budget_seed)[data.budget]
        train_index = train_index[np.asarray(subset)]
    indices = {
        "train": train_index.tolist(),
        "val": list(map(int, split["val"])),
        "test": list(map(int, split["test"])),
    }
    for name in SPLIT_NAMES:
        if indices[name]:
            continue
        if asked[name] or name == "train":
            raise DataError(None, f"the {name} split is empty: the dataset has {len(union)} images")
        if name == "test" and require_test:
            raise ConfigError(f"no test split to evaluate on ({no_test}): train with --no-evaluate")
    train_view = union.with_transform(_train_transform(data, data.augment))
    eval_view = union.with_transform(pipeline.transform)
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


def outside_evaluation_set(dataset: LabelledUnion, run_dir: Path) -> tuple[Dataset, int]:
    """The images of ``dataset`` to evaluate a run's model on, and how many were left out for belonging
    to patients the run trained or validated on (its ``patients.json``), so that evaluating a model on
    a source it partly learnt from scores only unseen patients. A split column limits them to its
    ``test`` rows."""
    rows = list(range(len(dataset)))
    named = dataset.predefined_split
    if named is not None:
        rows = [i for i in rows if named[i] == "test"]
        if not rows:
            raise DataError(None, "the split column has no test rows to evaluate")
        log.info("evaluating the %d test rows of the split column (of %d images)", len(rows), len(dataset))
    path = Path(run_dir) / "patients.json"
    if not path.is_file():
        log.warning("%s has no patients.json: cannot exclude the patients it trained on", run_dir)
        seen: set[str] = set()
    else:
        seen = {pid for split in ("train", "val") for pid in json.loads(path.read_text()).get(split, [])}
    patient_ids = dataset.patient_ids
    keep = [i for i in rows if patient_ids[i] not in seen]
    if not keep:
        raise DataError(None, "every image belongs to a patient the model trained or validated on")
    if len(keep) < len(rows):
        log.warning(
            "left out %d of %d images: their patients were in the model's training or validation split",
            len(rows) - len(keep),
            len(rows),
        )
    return (dataset if len(keep) == len(dataset) else Subset(dataset, keep)), len(rows) - len(keep)
