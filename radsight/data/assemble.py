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

from radsight.config import DataConfig, Pool, SourceSpec, Strict, validate_options
from radsight.data.sample import Sample
from radsight.data.sources import options_schema, source_class
from radsight.data.sources.base import SourceDataset, Transform
from radsight.data.splits import SPLIT_NAMES, label_budget_subsets, named_split, patient_split
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
        resize=data.resize,
    )
    return EvaluationPipeline(tuple(SourceReading.of(spec) for spec in data.sources), transform)


def source_options(spec: SourceSpec) -> dict[str, Any]:
    """The options a recipe gives one source, checked against what the source declares (and a root
    folder where it reads files and has no default root), as one ConfigError line; nothing is read."""
    cls = source_class(spec.name)
    schema = options_schema(cls, GenericSourceOptions)
    checked = validate_options(schema, spec.options, f"data source {spec.name!r}")
    root = inspect.signature(cls).parameters.get("root")
    if spec.root is None and root is not None and root.default is inspect.Parameter.empty:
        raise ConfigError(f"data source {spec.name!r} needs a root folder (data.sources[].root)")
    return {key: getattr(checked, key) for key in checked.model_fields_set}


def build_source(spec: SourceSpec, on_bad_file: str = "raise", reading: SourceReading | None = None) -> Any:
    """Instantiate one source from its recipe entry (file sources need ``root`` unless they default it,
    as the manifest does to its CSV's folder; phantoms have none).

    ``${VAR}`` in the root and options was already read from the environment when the recipe loaded.
    The source reads its files with ``reading`` (default: the entry's own), whose alignment, when
    ``align_breast: true``, is the source's transform, run before any other.
    """
    cls = source_class(spec.name)
    reading = reading or SourceReading.of(spec)
    options = source_options(spec)
    options.pop(ALIGN_BREAST, None)
    if reading.align_breast:
        options["transform"] = reading.alignment()
    if "root" not in inspect.signature(cls).parameters:
        return cls(**options)
    root = None if spec.root is None else spec.root if "://" in spec.root else Path(spec.root)
    return cls(root, on_bad_file=on_bad_file, **options)


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

    @property
    def annotated(self) -> np.ndarray:
        """Per image, whether it carries boxes, masks or gaze (each source says, without reading images)."""
        return np.concatenate([np.asarray(s.annotated, dtype=bool) for s in self.sources])

    @property
    def reports(self) -> list[str | None]:
        """Per image, its report (None: it has none), as each source says without reading images."""
        return [report for source in self.sources for report in source.reports]

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


def report_only(sample: Sample) -> Sample:
    """The image and its report: labels, boxes, masks and gaze go."""
    return Sample(image=sample.image, meta=sample.meta, report=sample.report)


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
        resize=data.resize,
    )


@dataclass
class DataSplits:
    """Train/val/test views of one union, plus what defines them (saved with the run as splits.json).

    ``train`` is the labelled pool; :meth:`pool` gives the others. ``train_split`` is every image of
    the training split, the ones a label budget left out included (the unlabelled pool). ``images``
    names every image of the union (source name and file, see ``LabelledUnion.image_ids``), so that a
    later reading of ``splits.json`` finds the same images even if files came or went.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    label_names: list[str]
    indices: dict[str, list[int]]
    patients: dict[str, list[str]]
    images: list[str]
    union: LabelledUnion
    train_split: list[int]
    data: DataConfig

    def pool(self, name: Pool, augment: bool | None = None) -> Dataset:
        """The training images of one pool under the training pipeline (``augment`` None: the recipe's).

        The unlabelled pool never shows a label or any other annotation; the annotated pool is the
        labelled images that carry boxes, masks or gaze, so it spends no label beyond the budget; the
        reports pool is the training split's images that have a report, showing only the report.
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
        if name == "reports":
            reports = self.union.reports
            index = [i for i in self.train_split if reports[i] is not None]
            if not index:
                raise DataError(None, "pool 'reports': no image of the training split has a report")
            return Subset(self.union.with_transform(v2.Compose([report_only, transform])), index)
        annotated = self.union.annotated
        index = [i for i in self.indices["train"] if annotated[i]]
        if not index:
            raise DataError(None, "pool 'annotated': no labelled training image carries boxes, masks or gaze")
        return Subset(self.union.with_transform(transform), index)

    def to_json(self) -> dict[str, Any]:
        """What ``splits.json`` holds: the indices of each split and the image each index names."""
        return {**self.indices, "images": self.images}


def build_union(data: DataConfig, pipeline: EvaluationPipeline) -> LabelledUnion:
    """The recipe's sources as one dataset, each reading its files as ``pipeline`` says, untransformed.
    Each is named by its recipe name, or shards by the source they hold (their patients and images are
    then named as that source names them: the same split from the shards as from the files)."""
    sources = [
        build_source(spec, data.on_bad_file, reading)
        for spec, reading in zip(data.sources, pipeline.readings, strict=True)
    ]
    named = zip(data.sources, sources, strict=True)
    names = [getattr(source, "source_name", spec.name) for spec, source in named]
    return LabelledUnion(sources, names, data.labels)


def build_splits(
    data: DataConfig,
    seed: int,
    stored: Path | None = None,
    required: Sequence[str] = SPLIT_NAMES,
    *,
    require_test: bool = True,
) -> DataSplits:
    """The recipe's train/val/test views: the sources' own split where they name one (a manifest's
    ``split`` column), else a patient split seeded by ``data.split_seed`` (default: ``seed``), the
    training split then cut to the label budget.

    With ``stored`` (a run's ``splits.json``) the run's own split is used instead, found again by image
    name: a split recomputed differently (files came, went or changed) is one warning naming what
    changed, and an image of a ``required`` split that is no longer there is a DataError (evaluation
    needs only the test split, resuming a run all three). An empty test split is refused unless
    ``require_test`` is False (training without evaluating), and then only where the recipe asks for
    none (a test fraction of 0, or a split column without test rows).
    """
    pipeline = evaluation_pipeline(data)
    union = build_union(data, pipeline)
    indices, asked, no_test = _split_indices(union, data, seed)
    images = union.image_ids
    if stored is not None:
        indices = read_back_split(stored, images, indices, required)
    for name in SPLIT_NAMES:
        if indices[name]:
            continue
        if asked[name] or name == "train":
            raise DataError(None, f"the {name} split is empty: the dataset has {len(union)} images")
        if name == "test" and require_test:
            raise ConfigError(f"no test split to evaluate on ({no_test}): train with --no-evaluate")
    held_out = set(indices["val"]) | set(indices["test"])
    train_split = [i for i in range(len(union)) if i not in held_out]
    train_view = union.with_transform(_train_transform(data, data.augment))
    eval_view = union.with_transform(pipeline.transform)
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
        union=union,
        train_split=train_split,
        data=data,
        images=images,
    )


def _split_indices(
    union: LabelledUnion, data: DataConfig, seed: int
) -> tuple[dict[str, list[int]], dict[str, bool], str]:
    """Image indices of each split (patients dealt by ``patient_split``, or the data's split column),
    the training split then cut to the label budget; which splits the recipe asks to be non-empty; and
    why the test split may be empty."""
    named = union.predefined_split
    if named is None:
        split_seed = seed if data.split_seed is None else data.split_seed
        split = patient_split(union.patient_ids, fractions=data.split, seed=split_seed)
        asked = dict(zip(SPLIT_NAMES, (share > 0 for share in data.split), strict=True))
        no_test = "data.split gives the test split no share"
    else:
        split = named_split(named, union.patient_ids)
        log.info("splits from the data's split column, not drawn at random (data.split is not used)")
        asked = {"train": True, "val": False, "test": False}
        no_test = "the split column has no test rows"
    train_index = np.asarray(split["train"])
    if data.budget is not None and len(train_index):
        budget_seed = seed if data.budget_seed is None else data.budget_seed
        labels = union.label_matrix
        subset = label_budget_subsets(labels[train_index], [data.budget], seed=budget_seed)[data.budget]
        train_index = train_index[np.asarray(subset)]
    indices = {
        "train": train_index.tolist(),
        "val": list(map(int, split["val"])),
        "test": list(map(int, split["test"])),
    }
    return indices, asked, no_test


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
