"""Evaluate a trained method on a dataset: predictions, metrics.json sections, plots and the report.

Sections follow one structure everywhere: ``classification``, ``localization`` and ``saliency``, each a
flat dict of named floats plus per-label dicts, absent when the data has nothing to score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import Dataset

from radsight.checkpoints import write_json
from radsight.config import EvaluationConfig
from radsight.data.sample import Sample, collate
from radsight.explain.cam import explain
from radsight.explain.overlay import overlay, save_grid
from radsight.methods import Method
from radsight.metrics.classification import classification_curves, classification_section
from radsight.report.plots import roc_curves
from radsight.report.writer import write_report
from radsight.train import make_loader

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Probabilities and labels of every evaluated image, with who and what each row is."""

    probs: np.ndarray
    labels: np.ndarray
    patient_ids: list[str]
    paths: list[str]


def predict_dataset(
    method: Method, dataset: Dataset, batch_size: int = 16, num_workers: int = 0
) -> Predictions:
    method.eval()
    device = next(method.parameters()).device
    probs, labels, patients, paths = [], [], [], []
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers)
    with torch.inference_mode():
        for batch in track(loader, description="predicting", transient=True):
            prediction = method.predict(batch.to(device))
            probs.append(prediction.probs.float().cpu().numpy())
            n = len(batch)
            labels.append(
                batch.labels.cpu().numpy()
                if batch.labels is not None
                else np.full((n, method.num_classes), np.nan)
            )
            patients += [m.patient_id for m in batch.meta]
            paths += [m.path for m in batch.meta]
    return Predictions(np.concatenate(probs), np.concatenate(labels), patients, paths)


def explanation_maps(
    method: Method, samples: Sequence[Sample], targets: Sequence[int], how: str
) -> torch.Tensor:
    """One map per sample for its target class, at the model's input size (B x H x W in [0, 1])."""
    batch = collate(list(samples))
    device = next(method.parameters()).device
    return explain(method.classifier(), batch.images.to(device), method=how, targets=list(targets)).cpu()


def overlay_grid(
    method: Method, dataset: Dataset, predictions: Predictions, path: Path, how: str, n: int = 8
) -> Path | None:
    """Grid of image+annotations / map for the most confident positives and a few random cases."""
    order = np.argsort(-np.nanmax(predictions.probs, axis=1))
    rng = np.random.default_rng(0)
    chosen = list(dict.fromkeys([*order[: n // 2].tolist(), *rng.permutation(len(order))[:n].tolist()]))[:n]
    samples = [dataset[int(i)] for i in chosen]
    pairs = [(int(i), s) for i, s in zip(chosen, samples, strict=True) if s is not None]
    if not pairs:
        return None
    targets = [int(np.nanargmax(predictions.probs[i])) for i, _ in pairs]
    maps = explanation_maps(method, [s for _, s in pairs], targets, how)
    rows = []
    for (index, sample), target, heat in zip(pairs, targets, maps, strict=True):
        image = sample.image[0].numpy()
        truth = overlay(
            image,
            boxes=sample.boxes,
            box_labels=sample.box_labels,
            masks=sample.masks,
            fixations=sample.fixations,
            title="ground truth",
        )
        name = method.label_names[target]
        cam = overlay(image, heat.numpy(), title=f"{how}: {name} {predictions.probs[index, target]:.2f}")
        rows.append([truth, cam])
    return save_grid(rows, path, titles=["image + annotations", "explanation"])


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
    """Score ``method`` on ``dataset`` and write metrics.json, report.md and plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict_dataset(method, dataset, batch_size)
    multilabel = method.task == "multilabel"
    metrics: dict[str, Any] = {
        "classification": classification_section(
            predictions.probs,
            predictions.labels,
            method.label_names,
            predictions.patient_ids,
            multilabel=multilabel,
            n_boot=config.n_boot,
            seed=seed,
            threshold=config.threshold,
        )
    }
    curves = classification_curves(
        predictions.probs,
        predictions.labels,
        method.label_names,
        predictions.patient_ids,
        multilabel=multilabel,
        n_boot=min(config.n_boot, 200),
        seed=seed,
    )
    figures = {"ROC curves": roc_curves(curves, out_dir / "roc.png")}
    grid = overlay_grid(method, dataset, predictions, out_dir / "overlays.png", config.explain)
    if grid is not None:
        figures["Explanations on test images"] = grid
    write_json(out_dir / "metrics.json", metrics)
    write_json(
        out_dir / "predictions.json",
        {
            "label_names": method.label_names,
            "rows": [
                {"path": p, "patient_id": pid, "probs": probs.tolist()}
                for p, pid, probs in zip(
                    predictions.paths, predictions.patient_ids, predictions.probs, strict=True
                )
            ],
        },
    )
    write_report(out_dir, title, metrics, figures, n_images=len(predictions.paths))
    return metrics
