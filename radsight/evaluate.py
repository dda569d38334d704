"""Evaluate a trained method on a dataset: metrics.json sections, plots and the report.

One pass over the data collects, per image: probabilities, and where the data allows it the maps to
score. Sections follow one structure everywhere: ``classification``, ``localization`` (a map per
annotated lesion label: the method's native map, else the configured explanation; plus ``lungs_*``,
the share of each top-class map inside the lung mask where there is one) and ``saliency``
(the method's native "saliency" map against gaze), each a flat dict of named floats plus per-label
dicts, absent when the data has nothing to score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset

from radsight.checkpoints import write_json
from radsight.config import EvaluationConfig
from radsight.data.sample import Batch, make_loader
from radsight.explain.cam import explain
from radsight.explain.overlay import overlay, save_grid
from radsight.methods import Method, Prediction
from radsight.metrics.attention import attention_section
from radsight.metrics.classification import classification_curves, classification_section
from radsight.metrics.localization import Boxes, localization_section
from radsight.metrics.saliency import saliency_section
from radsight.report.plots import calibration_curve, confusion_heatmap, pr_curves, roc_curves
from radsight.report.scores import ImageScores
from radsight.report.writer import write_report

log = logging.getLogger(__name__)
GRID_CASES = 4  # rows of best, of worst and of random cases in the overlay grid
LUNG_MASK = "lungs"  # the anatomical mask name whose share of the evidence is reported


@dataclass
class Collected:
    """Everything one pass over the data yields (maps are float16 numpy in the model's input frame)."""

    probs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lesion_maps: list[np.ndarray] = field(default_factory=list)
    lesion_truth: list[Any] = field(default_factory=list)
    lesion_label: list[str] = field(default_factory=list)
    lesion_patient: list[str] = field(default_factory=list)
    gaze_pred: list[np.ndarray] = field(default_factory=list)
    gaze_true: list[np.ndarray | None] = field(default_factory=list)
    gaze_fixations: list[np.ndarray | None] = field(default_factory=list)
    gaze_patient: list[str] = field(default_factory=list)
    lung_maps: list[np.ndarray] = field(default_factory=list)
    lung_masks: list[np.ndarray] = field(default_factory=list)
    lung_patient: list[str] = field(default_factory=list)

    @property
    def prob_matrix(self) -> np.ndarray:
        return np.concatenate(self.probs)

    @property
    def label_matrix(self) -> np.ndarray:
        return np.concatenate(self.labels)


def lesion_targets(batch: Batch, label_names: list[str]) -> list[tuple[int, int, Any]]:
    """(image, label index, annotation) for every label an image has a lesion mask or boxes for."""
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


def class_maps(
    method: Method, prediction: Prediction, batch: Batch, pairs: list, how: str
) -> list[np.ndarray]:
    """The map scored for each (image, label) pair: native per-class maps when the method has them."""
    native = (prediction.maps or {}).get("saliency")
    if native is not None and native.shape[1] == method.num_classes:
        return [native[i, k].float().cpu().numpy() for i, k, _ in pairs]
    images = batch.images[[i for i, _, _ in pairs]]
    maps = explain(method.classifier(), images, method=how, targets=[k for _, k, _ in pairs])
    return [m.cpu().numpy() for m in maps]


def collect(method: Method, dataset: Dataset, how: str, batch_size: int, num_workers: int = 0) -> Collected:
    method.eval()
    device = next(method.parameters()).device
    out = Collected()
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers)
    for batch in track(loader, description="evaluating", transient=True):
        batch = batch.to(device)
        with torch.inference_mode():
            prediction = method.predict(batch)
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
        pairs = lesion_targets(batch, method.label_names)
        if pairs:
            out.lesion_maps += [
                m.astype(np.float16) for m in class_maps(method, prediction, batch, pairs, how)
            ]
            out.lesion_truth += [truth for _, _, truth in pairs]
            out.lesion_label += [method.label_names[k] for _, k, _ in pairs]
            out.lesion_patient += [patients[i] for i, _, _ in pairs]
        _collect_gaze(out, prediction, batch, patients)
        _collect_lung_attention(out, method, prediction, batch, patients, how)
    return out


def _collect_lung_attention(
    out: Collected, method: Method, prediction: Prediction, batch: Batch, patients: list[str], how: str
) -> None:
    """The map of each image's top class, for images with a lung mask (share of evidence in the lungs)."""
    lungs, valid = batch.masks.get(LUNG_MASK), batch.mask_valid.get(LUNG_MASK)
    if lungs is None:
        return
    index = [i for i in range(len(batch)) if bool(valid[i]) and bool((lungs[i] > 0).any())]
    if not index:
        return
    pairs = [(i, int(prediction.probs[i].argmax()), None) for i in index]
    out.lung_maps += [m.astype(np.float16) for m in class_maps(method, prediction, batch, pairs, how)]
    out.lung_masks += [(lungs[i] > 0).cpu().numpy() for i in index]
    out.lung_patient += [patients[i] for i in index]


def _collect_gaze(out: Collected, prediction: Prediction, batch: Batch, patients: list[str]) -> None:
    native = (prediction.maps or {}).get("saliency")
    if native is None or native.shape[1] != 1:
        return
    for i in range(len(batch)):
        has_map = batch.gaze_valid is not None and bool(batch.gaze_valid[i])
        fixations = batch.fixations[i]
        if not has_map and (fixations is None or len(fixations) == 0):
            continue
        out.gaze_pred.append(native[i, 0].float().cpu().numpy())
        out.gaze_true.append(batch.gaze_maps[i].cpu().numpy() if has_map else None)
        out.gaze_fixations.append(fixations.cpu().numpy() if fixations is not None else None)
        out.gaze_patient.append(patients[i])


def localization_metrics(found: Collected, n_boot: int, seed: int) -> dict[str, Any] | None:
    """Lesion localization of the maps, and the share of each top-class map inside the lungs."""
    lungs = {}
    if found.lung_maps:
        maps = [m.astype(np.float32) for m in found.lung_maps]
        section = attention_section(
            maps, found.lung_masks, patient_ids=found.lung_patient, n_boot=n_boot, seed=seed
        )
        lungs = {f"lungs_{key}": value for key, value in section.items()}
    if not found.lesion_maps:
        return lungs or None
    maps = [m.astype(np.float32) for m in found.lesion_maps]
    section = localization_section(
        maps, found.lesion_truth, patient_ids=found.lesion_patient, n_boot=n_boot, seed=seed
    )
    per_label = {}
    for name in dict.fromkeys(found.lesion_label):
        index = [j for j, label in enumerate(found.lesion_label) if label == name]
        per_label[name] = localization_section(
            [maps[j] for j in index],
            [found.lesion_truth[j] for j in index],
            patient_ids=[found.lesion_patient[j] for j in index],
            n_boot=n_boot,
            seed=seed,
        )
    return {**section, **lungs, "per_label": per_label}


def saliency_metrics(found: Collected, n_boot: int, seed: int) -> dict[str, Any] | None:
    if not found.gaze_pred:
        return None
    return saliency_section(
        found.gaze_pred,
        found.gaze_true,
        found.gaze_fixations,
        frame_sizes=[m.shape for m in found.gaze_pred],
        patient_ids=found.gaze_patient,
        n_boot=n_boot,
        seed=seed,
    )


def case_order(probs: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Best and worst images by mean absolute error over annotated labels, and random others."""
    error = np.nanmean(np.where(np.isnan(labels), np.nan, np.abs(probs - np.nan_to_num(labels))), axis=1)
    scored = np.flatnonzero(~np.isnan(error))
    ranked = scored[np.argsort(error[scored], kind="stable")]
    best, worst = ranked[:GRID_CASES].tolist(), ranked[::-1][:GRID_CASES].tolist()
    rest = [i for i in np.random.default_rng(seed).permutation(len(probs)) if i not in best + worst]
    return {"best": best, "worst": [i for i in worst if i not in best], "random": rest[:GRID_CASES]}


def overlay_grid(
    method: Method, dataset: Dataset, probs: np.ndarray, order: dict[str, list[int]], path: Path, how: str
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
            heat = explain(method.classifier(), images, method=how, targets=[target])[0].cpu().numpy()
            row = [
                overlay(
                    image,
                    boxes=sample.boxes,
                    box_labels=sample.box_labels,
                    masks=sample.masks,
                    fixations=sample.fixations,
                    gaze_map=sample.gaze_map,
                    title=f"{kind}: truth",
                ),
                overlay(image, heat, title=f"{how}: {name}"),
            ]
            if how != "native" and hasattr(method.classifier(), "native_maps"):
                native = explain(method.classifier(), images, method="native", targets=[target])[0]
                row.append(overlay(image, native.cpu().numpy(), title="native map"))
            rows.append(row)
    if not rows:
        return None
    return save_grid(rows, path)


def evaluate(
    method: Method,
    dataset: Dataset,
    out_dir: str | Path,
    config: EvaluationConfig,
    *,
    title: str,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Score ``method`` on ``dataset`` and write metrics.json, report.md/html and plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = collect(method, dataset, config.explain, batch_size)
    probs, labels = found.prob_matrix, found.label_matrix
    multilabel = method.task == "multilabel"
    common = {"multilabel": multilabel, "seed": seed}
    metrics: dict[str, Any] = {
        "classification": classification_section(
            probs,
            labels,
            method.label_names,
            found.patient_ids,
            n_boot=config.n_boot,
            threshold=config.threshold,
            **common,
        )
    }
    for name, section in (
        ("localization", localization_metrics(found, config.n_boot, seed)),
        ("saliency", saliency_metrics(found, config.n_boot, seed)),
    ):
        if section is not None:
            metrics[name] = section
    curves = classification_curves(
        probs, labels, method.label_names, found.patient_ids, n_boot=min(config.n_boot, 200), **common
    )
    figures = {
        "ROC curves": roc_curves(curves, out_dir / "roc.png"),
        "Precision-recall curves": pr_curves(curves, out_dir / "pr.png"),
        "Reliability diagram": calibration_curve(curves["reliability"], out_dir / "reliability.png"),
    }
    if "confusion_matrix" in curves:
        figures["Confusion matrix"] = confusion_heatmap(
            curves["confusion_matrix"], method.label_names, out_dir / "confusion.png"
        )
    grid = overlay_grid(
        method, dataset, probs, case_order(probs, labels, seed), out_dir / "overlays.png", config.explain
    )
    if grid is not None:
        figures["Best, worst and random cases"] = grid
    write_json(out_dir / "metrics.json", metrics)
    ImageScores(method.label_names, probs, labels, found.patient_ids, found.paths).write(out_dir)
    write_report(out_dir, title, metrics, figures, n_images=len(found.paths))
    return metrics
