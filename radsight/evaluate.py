"""Evaluate a trained method on a dataset: metrics.json sections, plots and the report.

One pass over the test set (:func:`collect`) yields, per image, the probabilities, and for each
requested set of (image, class) pairs the maps to score, of a pluggable :class:`MapKind`: the method's
native map, any explanation method, or a kind a study brings (GLAM's global map, CAM). Evaluation,
the ablation study and the GLAM comparison all score maps from this pass.

Sections follow one structure everywhere: ``classification``, ``localization`` (a map per annotated
lesion label: the method's native map, else the configured explanation; plus ``<region>_*``, the share
of each top-class map inside an anatomical region where the image has its masks: by default the mask
``lungs``) and ``saliency`` (the method's native class-agnostic "saliency" map against gaze), each a flat
dict of named floats plus per-label dicts, absent when the data has nothing to score (images without
labels have no ``classification``, but their maps are still scored). Labelled images also get
``shortcuts``: the non-anatomical predictors of the evaluated images and the model's AUROC within the
strata of each label's strongest one (:mod:`radsight.data.shortcut_audit`).

Thresholded classification metrics use the model's stored operating points (chosen on its validation
split after training, :mod:`radsight.operating_points`), whatever the evaluated dataset; the section
records them under ``operating_point``. Labels with fewer than ``evaluation.min_class_count`` positive or
negative images (lesions, for localization) are marked thin.

``metrics.json`` and ``image_scores.json`` are written before any figure is drawn, and a figure the data
cannot give (no label with both classes has no ROC curve) is left out with a note in the log and the
report, so a computed number is never lost to a plot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.progress import track
from torch import Tensor
from torch.utils.data import Dataset

from radsight.checkpoints import write_json
from radsight.config import EvaluationConfig, ShortcutAuditConfig
from radsight.data.sample import Batch, SampleMeta, make_loader
from radsight.data.shortcut_audit import stratified_notes, stratified_section
from radsight.errors import ConfigError
from radsight.explain.cam import explain
from radsight.explain.names import Normalisation
from radsight.explain.overlay import DISPLAY_MIN_SIDE, overlay, save_grid
from radsight.methods import Method, Prediction
from radsight.metrics.attention import attention_section
from radsight.metrics.classification import classification_curves, classification_section
from radsight.metrics.localization import Boxes, localization_section
from radsight.metrics.saliency import saliency_section
from radsight.operating_points import OperatingPoints, operating_points_of
from radsight.report.notes import classification_notes, localization_notes
from radsight.report.plots import Undrawable, calibration_curve, confusion_heatmap, pr_curves, roc_curves
from radsight.report.scores import ImageScores
from radsight.report.writer import write_report
from radsight.runtime import Runtime, TorchRuntime

log = logging.getLogger(__name__)
GRID_CASES = 4  # rows of best, of worst and of random cases in the overlay grid
DEFAULT_REGIONS: dict[str, tuple[str, ...]] = {"lungs": ("lungs",)}
"""Anatomical regions whose share of the evidence is reported: region name -> the masks whose union
it is (e.g. ``{"lungs": ("left_lung", "right_lung")}``)."""
REGION_REQUEST = "region:"  # prefix of the map requests of anatomical regions

Pair = tuple[int, int, Any]
"""(image index in the batch, class index, what the map is scored against)."""

PairFinder = Callable[[Batch, Prediction, Sequence[str]], list[Pair]]
"""The pairs of a batch (given the method's prediction and label names) that a set of maps is kept for."""


@dataclass(frozen=True)
class MapKind:
    """A named way to get maps: ``maps(method, prediction, batch, images, targets)`` returns ``N x H x W``
    maps in the model's input frame, one per (image index, class index) pair of the batch."""

    name: str
    maps: Callable[[Method, Prediction, Batch, list[int], list[int]], Tensor]


def _native_maps(
    method: Method, prediction: Prediction, batch: Batch, images: list[int], targets: list[int]
) -> Tensor:
    saliency = (prediction.maps or {}).get("saliency")
    if saliency is None:
        raise ConfigError(f"{type(method).__name__} predicts no native maps; choose an explanation method")
    channels = targets if saliency.shape[1] > 1 else [0] * len(images)
    return saliency[images, channels]


NATIVE = MapKind("native", _native_maps)
"""The method's own map (the "saliency" of its prediction): the target class's channel, or the only
channel of a class-agnostic map."""


def _explanation_maps(
    how: str,
    normalise: Normalisation,
    method: Method,
    prediction: Prediction,
    batch: Batch,
    images: list[int],
    targets: list[int],
) -> Tensor:
    return explain(
        method.classifier(), batch.images[images], method=how, targets=targets, normalise=normalise
    )


def explanation(how: str, normalise: Normalisation = "max") -> MapKind:
    """The maps of an explanation method of :mod:`radsight.explain.cam` (Grad-CAM, IG, ...)."""
    return MapKind(how, partial(_explanation_maps, how, normalise))


@dataclass(frozen=True)
class MapRequest:
    """A set of maps for :func:`collect` to keep: for the pairs ``pairs`` finds in each batch, the method's
    native map where its prediction has one of the shape ``prefer_native`` names (``"per_class"``: a
    channel per class, ``"single"``: one class-agnostic channel), else the maps of ``kind``; none for a
    batch without either. Maps are kept as ``dtype``: float16 bounds the memory of many full-size maps;
    gaze metrics (KL's epsilon, AUC ties) are scored at float32."""

    pairs: PairFinder
    kind: MapKind | None
    prefer_native: Literal["per_class", "single"] | None = None
    dtype: type = np.float16

    def kind_for(self, method: Method, prediction: Prediction) -> MapKind | None:
        """The kind that makes this batch's maps (None: the batch has none to keep)."""
        saliency = (prediction.maps or {}).get("saliency")
        if self.prefer_native is not None and saliency is not None:
            channels = method.num_classes if self.prefer_native == "per_class" else 1
            if saliency.shape[1] == channels:
                return NATIVE
        return self.kind


@dataclass
class MapSet:
    """The maps of one :class:`MapRequest`, in test-set order, with what each is scored against."""

    maps: list[np.ndarray] = field(default_factory=list)
    truth: list[Any] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    images: list[int] = field(default_factory=list)  # index of each map's image in the test set
    kinds: list[str] = field(default_factory=list)  # names of the kinds that made the maps


@dataclass
class Collected:
    """Everything one pass over the data yields: per image, probabilities and labels; per request, maps."""

    probs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    metas: list[SampleMeta] = field(default_factory=list)
    maps: dict[str, MapSet] = field(default_factory=dict)

    @property
    def prob_matrix(self) -> np.ndarray:
        return np.concatenate(self.probs)

    @property
    def label_matrix(self) -> np.ndarray:
        return np.concatenate(self.labels)


def lesion_pairs(batch: Batch, prediction: Prediction, label_names: Sequence[str]) -> list[Pair]:
    """(image, label, annotation) for every label an image has a lesion mask or boxes for."""
    pairs = []
    for i in range(len(batch)):
        for k, name in enumerate(label_names):
            mask = batch.masks.get(name)
            if mask is not None and bool(batch.mask_valid[name][i]) and bool((mask[i] > 0).any()):
                pairs.append((i, k, (mask[i] > 0).cpu().numpy()))
                continue
            boxes, names = batch.boxes[i], batch.box_labels[i] or []
            chosen = [b for b, n in zip(boxes if boxes is not None else [], names, strict=False) if n == name]
            if chosen:
                size = tuple(batch.images.shape[-2:])
                pairs.append((i, k, Boxes(torch.stack(chosen).cpu().numpy(), size)))
    return pairs


def _region_pairs(
    masks: Sequence[str], batch: Batch, prediction: Prediction, label_names: Sequence[str]
) -> list[Pair]:
    present = [batch.masks.get(name) for name in masks]
    if any(mask is None for mask in present):
        return []
    valid = torch.stack([batch.mask_valid[name] for name in masks]).all(dim=0)
    region = torch.stack([mask > 0 for mask in present]).any(dim=0)
    return [
        (i, int(prediction.probs[i].argmax()), region[i].cpu().numpy())
        for i in range(len(batch))
        if bool(valid[i]) and bool(region[i].any())
    ]


def region_pairs(masks: Sequence[str]) -> PairFinder:
    """(image, top class, region) for every image with all of ``masks``; the region is their union."""
    return partial(_region_pairs, tuple(masks))


def gaze_pairs(batch: Batch, prediction: Prediction, label_names: Sequence[str]) -> list[Pair]:
    """(image, top class, (gaze map or None, fixations or None)) for every image with gaze."""
    pairs = []
    for i in range(len(batch)):
        has_map = batch.gaze_valid is not None and bool(batch.gaze_valid[i])
        fixations = batch.fixations[i]
        if not has_map and (fixations is None or len(fixations) == 0):
            continue
        truth = (
            batch.gaze_maps[i].cpu().numpy() if has_map else None,
            fixations.cpu().numpy() if fixations is not None else None,
        )
        pairs.append((i, int(prediction.probs[i].argmax()), truth))
    return pairs


def collect(
    method: Method,
    dataset: Dataset,
    batch_size: int,
    requests: Mapping[str, MapRequest],
    description: str = "evaluating",
    runtime: Runtime | None = None,
) -> Collected:
    """One pass over ``dataset``: probabilities and labels of every image, and the maps of each request.
    ``runtime`` predicts (default: the method in PyTorch); maps that need gradients come from ``method``."""
    device = next(method.parameters()).device
    runtime = runtime or TorchRuntime(method)
    out = Collected(maps={name: MapSet() for name in requests})
    loader, offset = make_loader(dataset, batch_size, shuffle=False), 0
    for batch in track(loader, description=description, transient=True):
        batch = batch.to(device)
        prediction = runtime.predict(batch)
        n = len(batch)
        out.probs.append(prediction.probs.float().cpu().numpy())
        out.labels.append(
            batch.labels.cpu().numpy()
            if batch.labels is not None
            else np.full((n, method.num_classes), np.nan)
        )
        patients = [m.patient_id for m in batch.meta]
        out.patient_ids += patients
        out.paths += [m.path for m in batch.meta]
        out.metas += batch.meta
        for name, request in requests.items():
            _keep(out.maps[name], request, method, prediction, batch, patients, offset)
        offset += n
    return out


def _keep(
    found: MapSet,
    request: MapRequest,
    method: Method,
    prediction: Prediction,
    batch: Batch,
    patients: list[str],
    offset: int,
) -> None:
    """Add the maps ``request`` asks of one batch to ``found``."""
    pairs = request.pairs(batch, prediction, method.label_names)
    kind = request.kind_for(method, prediction)
    if not pairs or kind is None:
        return
    images, targets = [i for i, _, _ in pairs], [k for _, k, _ in pairs]
    maps = kind.maps(method, prediction, batch, images, targets)
    found.maps += [m.float().cpu().numpy().astype(request.dtype) for m in maps]
    found.truth += [truth for _, _, truth in pairs]
    found.labels += [method.label_names[k] for k in targets]
    found.patients += [patients[i] for i in images]
    found.images += [offset + i for i in images]
    if kind.name not in found.kinds:
        found.kinds.append(kind.name)


def evaluation_requests(
    how: str, regions: Mapping[str, Sequence[str]] = DEFAULT_REGIONS, normalise: Normalisation = "max"
) -> dict[str, MapRequest]:
    """What evaluation scores: per-class maps (native, else ``how``, scaled by ``normalise``) of lesions
    and of the top class in each region, and the native class-agnostic map against gaze."""
    fallback = explanation(how, normalise)
    return {
        "lesions": MapRequest(lesion_pairs, fallback, prefer_native="per_class"),
        **{
            f"{REGION_REQUEST}{name}": MapRequest(region_pairs(masks), fallback, prefer_native="per_class")
            for name, masks in regions.items()
        },
        "gaze": MapRequest(gaze_pairs, None, prefer_native="single", dtype=np.float32),
    }


def localization_metrics(
    lesions: MapSet, regions: Mapping[str, MapSet], n_boot: int, seed: int, min_count: int = 1
) -> dict[str, Any] | None:
    """Lesion localization of the maps, and the share of each top-class map inside each region; a label
    with fewer than ``min_count`` lesion maps is marked ``thin``."""
    boot = {"n_boot": n_boot, "seed": seed}
    in_regions = {}
    for region, found in regions.items():
        if found.maps:
            maps = [m.astype(np.float32) for m in found.maps]
            section = attention_section(maps, found.truth, patient_ids=found.patients, **boot)
            in_regions |= {f"{region}_{key}": value for key, value in section.items()}
    if not lesions.maps:
        return in_regions or None
    maps = [m.astype(np.float32) for m in lesions.maps]
    section = localization_section(maps, lesions.truth, patient_ids=lesions.patients, **boot)
    per_label = {}
    for name in dict.fromkeys(lesions.labels):
        index = [j for j, label in enumerate(lesions.labels) if label == name]
        per_label[name] = {
            "thin": len(index) < min_count,
            **localization_section(
                [maps[j] for j in index],
                [lesions.truth[j] for j in index],
                patient_ids=[lesions.patients[j] for j in index],
                **boot,
            ),
        }
    return {**section, **in_regions, "per_label": per_label}


def saliency_metrics(gaze: MapSet, n_boot: int, seed: int, judd_draws: int) -> dict[str, Any] | None:
    """The native class-agnostic maps against gaze maps and fixations."""
    if not gaze.maps:
        return None
    return saliency_section(
        gaze.maps,
        [gaze_map for gaze_map, _ in gaze.truth],
        [fixations for _, fixations in gaze.truth],
        frame_sizes=[m.shape for m in gaze.maps],
        patient_ids=gaze.patients,
        n_boot=n_boot,
        seed=seed,
        judd_draws=judd_draws,
    )


def case_order(probs: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Best and worst images by mean absolute error over annotated labels, and random others."""
    annotated = ~np.isnan(labels)
    counts = annotated.sum(axis=1)
    total = np.where(annotated, np.abs(probs - np.nan_to_num(labels)), 0.0).sum(axis=1)
    error = np.divide(total, counts, out=np.full(len(probs), np.nan), where=counts > 0)
    scored = np.flatnonzero(~np.isnan(error))
    ranked = scored[np.argsort(error[scored], kind="stable")]
    best, worst = ranked[:GRID_CASES].tolist(), ranked[::-1][:GRID_CASES].tolist()
    rest = [i for i in np.random.default_rng(seed).permutation(len(probs)) if i not in best + worst]
    return {"best": best, "worst": [i for i in worst if i not in best], "random": rest[:GRID_CASES]}


def overlay_grid(
    method: Method,
    dataset: Dataset,
    probs: np.ndarray,
    order: dict[str, list[int]],
    path: Path,
    how: str,
    normalise: Normalisation = "max",
) -> Path | None:
    """Rows of image + ground truth (boxes, masks, gaze) / explanation / native map, by case kind."""
    rows, device = [], next(method.parameters()).device
    for kind, indices in order.items():
        for index in indices:
            sample = dataset[index]
            if sample is None:
                continue
            target = int(np.nanargmax(probs[index]))
            image = sample.image[0].numpy()
            name = f"{method.label_names[target]} {probs[index, target]:.2f}"
            images = sample.image[None].to(device)
            heat = explain(method.classifier(), images, method=how, targets=[target], normalise=normalise)
            heat = heat[0].cpu().numpy()
            row = [
                overlay(
                    image,
                    boxes=sample.boxes,
                    box_labels=sample.box_labels,
                    masks=sample.masks,
                    fixations=sample.fixations,
                    gaze_map=sample.gaze_map,
                    title=f"{kind}: truth",
                    min_side=DISPLAY_MIN_SIDE,
                ),
                overlay(image, heat, title=f"{how}: {name}", map_scale=normalise, min_side=DISPLAY_MIN_SIDE),
            ]
            if how != "native" and hasattr(method.classifier(), "native_maps"):
                native = explain(method.classifier(), images, method="native", targets=[target])[0].cpu()
                row.append(overlay(image, native.numpy(), title="native map", min_side=DISPLAY_MIN_SIDE))
            rows.append(row)
    if not rows:
        return None
    return save_grid(rows, path)


def draw_figures(plans: Mapping[str, Callable[[], Path | None]]) -> tuple[dict[str, Path], list[str]]:
    """Draw each figure (caption -> drawing call); one the data cannot give is left out with a one-line
    note, logged and returned for the report. A drawing call may also return None: nothing to show."""
    figures, notes = {}, []
    for caption, make in plans.items():
        try:
            path = make()
        except Undrawable as reason:
            log.warning("%s not drawn: %s", caption, reason)
            notes.append(f"{caption} not drawn: {reason}.")
            continue
        if path is not None:
            figures[caption] = path
    return figures, notes


def evaluation_sections(
    found: Collected,
    label_names: Sequence[str],
    multilabel: bool,
    config: EvaluationConfig,
    points: OperatingPoints,
    seed: int = 0,
    regions: Iterable[str] = tuple(DEFAULT_REGIONS),
    audit: ShortcutAuditConfig | None = None,
) -> dict[str, Any]:
    """The metrics.json sections of one pass: classification at ``points``' thresholds (recorded under
    ``operating_point``) and the shortcut predictors of the images with the model's AUROC within strata
    of the strongest (``radsight.data.shortcut_audit``, by ``audit``) where the images carry labels, and
    localization (lesions, and the maps' share inside each of ``regions``) and saliency where the pass
    kept maps for them."""
    audit = audit or ShortcutAuditConfig()
    metrics: dict[str, Any] = {}
    if bool((~np.isnan(found.label_matrix)).any()):
        classification = classification_section(
            found.prob_matrix,
            found.label_matrix,
            label_names,
            found.patient_ids,
            thresholds=points.vector(label_names),
            multilabel=multilabel,
            n_boot=config.n_boot,
            seed=seed,
            min_count=config.min_class_count,
            macro_includes_thin=config.macro_includes_thin,
        )
        metrics["classification"] = classification | {"operating_point": points.as_json()}
    if metrics and len(found.metas) == len(found.patient_ids):  # a pass that kept each image's record
        shortcuts = stratified_section(
            found.metas,
            found.prob_matrix,
            found.label_matrix,
            label_names,
            found.patient_ids,
            audit,
            seed=seed,
            min_count=config.min_class_count,
        )
        if shortcuts is not None:
            metrics["shortcuts"] = shortcuts
    maps = found.maps
    in_regions = {name: maps[f"{REGION_REQUEST}{name}"] for name in regions}
    localization = localization_metrics(
        maps["lesions"], in_regions, config.n_boot, seed, config.min_class_count
    )
    for name, section in (
        ("localization", localization),
        ("saliency", saliency_metrics(maps["gaze"], config.n_boot, seed, config.auc_judd_draws)),
    ):
        if section is not None:
            metrics[name] = section
    return metrics


def evaluation_notes(metrics: dict[str, Any], points: OperatingPoints, map_kinds: str) -> list[str]:
    """The report's sentences: where the thresholds come from, thin and undefined labels, and whether the
    maps (of ``map_kinds``) agree with the annotations better than chance."""
    notes = []
    if "classification" in metrics:
        notes += [
            f"{points.describe()} The same thresholds are applied to the evaluated images and to every "
            "bootstrap resample.",
            *classification_notes(metrics["classification"]),
        ]
    if "shortcuts" in metrics:
        notes += stratified_notes(metrics["shortcuts"])
    return [*notes, *localization_notes(metrics.get("localization"), map_kinds)]


def captioning_notes(section: dict[str, Any] | None) -> list[str]:
    """The report's sentence on the written reports' scores (none where the method writes none)."""
    if section is None:
        return []

    def scores(strategy: str) -> str:
        prefix = f"{strategy}_"
        return ", ".join(
            f"{name.removeprefix(prefix)} {value:.3f}"
            for name, value in section.items()
            if name.startswith(prefix)
        )

    return [
        f"Machine-generated draft reports of the {section['reports']} images with a report, against the "
        f"cleaned reference: greedy {scores('greedy')}; beam of {section['beam_width']} {scores('beam')} "
        "(every report in generated_reports.json)."
    ]


def evaluate(
    method: Method,
    dataset: Dataset,
    out_dir: str | Path,
    config: EvaluationConfig,
    *,
    title: str,
    batch_size: int = 16,
    seed: int = 0,
    regions: Mapping[str, Sequence[str]] = DEFAULT_REGIONS,
    audit: ShortcutAuditConfig | None = None,
    notes: Sequence[str] = (),
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Score ``method`` on ``dataset`` and write metrics.json, image_scores.json, then plots and
    report.md/html into ``out_dir``; ``regions`` name the anatomical regions (see :data:`DEFAULT_REGIONS`),
    ``audit`` the shortcut audit's settings and ``notes`` go into the report first; ``runtime`` predicts
    (default: the method in PyTorch), explanations run on ``method``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = evaluation_requests(config.explain, regions, config.map_normalisation)
    found = collect(method, dataset, batch_size, requests, runtime=runtime)
    probs, labels = found.prob_matrix, found.label_matrix
    multilabel = method.task == "multilabel"
    points = operating_points_of(method, config.operating_point)
    metrics = evaluation_sections(found, method.label_names, multilabel, config, points, seed, regions, audit)
    written = method.text_evaluation(dataset, batch_size, out_dir)
    if written is not None:
        metrics["captioning"] = written
    write_json(out_dir / "metrics.json", metrics)
    ImageScores(method.label_names, probs, labels, found.patient_ids, found.paths).write(out_dir)
    labelled = "classification" in metrics
    notes = list(notes)
    if not labelled:
        notes.append(f"No image carries any of the labels {method.label_names}: no classification.")
    plans: dict[str, Callable[[], Path | None]] = {}
    if labelled:
        curves = classification_curves(
            probs,
            labels,
            method.label_names,
            found.patient_ids,
            n_boot=min(config.n_boot, 200),
            multilabel=multilabel,
            seed=seed,
        )
        plans["ROC curves"] = partial(roc_curves, curves, out_dir / "roc.png")
        plans["Precision-recall curves"] = partial(pr_curves, curves, out_dir / "pr.png")
        plans["Reliability diagram"] = partial(
            calibration_curve, curves["reliability"], out_dir / "reliability.png"
        )
        if "confusion_matrix" in curves:
            matrix = curves["confusion_matrix"]
            plans["Confusion matrix"] = partial(
                confusion_heatmap, matrix, method.label_names, out_dir / "confusion.png"
            )
    order = case_order(probs, labels, seed)
    plans["Best, worst and random cases"] = partial(
        overlay_grid,
        method,
        dataset,
        probs,
        order,
        out_dir / "overlays.png",
        config.explain,
        config.map_normalisation,
    )
    figures, skipped = draw_figures(plans)
    notes += method.report_notes()
    notes += captioning_notes(metrics.get("captioning"))
    notes += evaluation_notes(metrics, points, "/".join(found.maps["lesions"].kinds) or config.explain)
    notes += skipped
    write_report(
        out_dir,
        title,
        metrics,
        figures,
        n_images=len(found.paths),
        notes=notes,
        map_scale=config.map_normalisation,
    )
    return metrics
