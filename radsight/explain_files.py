"""Compare explanation methods on files: each map drawn on the file, and scored by how faithfully it
points at what the model uses (deletion and insertion AUC), so a user can pick a method with evidence.

Per file, every method explains the model's top class; the deletion curve removes the most salient
pixels first (a faithful map makes the score fall fast: lower AUC is better), the insertion curve
restores them onto a blurred image (a faithful map makes it rise fast: higher is better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.explain.cam import explain
from radsight.explain.faithfulness import Activation, deletion_curve, insertion_curve
from radsight.explain.overlay import save_grid
from radsight.infer import LoadedModel, PreparedFile, infer
from radsight.run_folder import output_stems


def score_activation(model: LoadedModel) -> Activation:
    """The score the curves record: each label's sigmoid for multi-label models, else the softmax."""
    return "sigmoid" if model.recipe.task == "multilabel" else "softmax"


def faithfulness(
    model: LoadedModel, item: PreparedFile, how: str, target: int, steps: int = 20
) -> tuple[torch.Tensor, dict[str, float]]:
    """The ``how`` map of class ``target`` in the file's pixels, and its deletion and insertion AUC."""
    classifier = model.method.classifier()
    images = item.batch.images.to(model.method.device)
    heat = explain(classifier, images, method=how, targets=[target])
    activation = score_activation(model)
    with torch.no_grad():
        deletion = deletion_curve(classifier, images, heat, [target], steps=steps, activation=activation)
        insertion = insertion_curve(classifier, images, heat, [target], steps=steps, activation=activation)
    scores = {"deletion_auc": float(deletion.auc[0]), "insertion_auc": float(insertion.auc[0])}
    return item.geometry.map_to_original(heat[0]), scores


def explain_files(
    model_dir: Path, files: list[Path], out_dir: Path, methods: list[str], steps: int = 20
) -> dict[str, Any]:
    """Write ``<stem>.explain.png`` (one column per method) per file and ``explain.json`` (the top class,
    its probability, and per method the deletion and insertion AUC, per file and averaged)."""
    model = LoadedModel.load(model_dir)
    inputs = [model.prepare(path) for path in files]  # a bad file stops the run before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    stems = output_stems([item.name for item in inputs])
    for item, stem in zip(track(inputs, description="explaining"), stems, strict=True):
        prediction = infer(model, item, with_map=False)
        probs, target = prediction.probs, prediction.top
        scores, pictures = {}, []
        for how in methods:
            heat, scores[how] = faithfulness(model, item, how, target, steps)
            title = (
                f"{how} ({prediction.top_label} {float(probs[target]):.2f}): "
                f"del {scores[how]['deletion_auc']:.2f} ins {scores[how]['insertion_auc']:.2f}"
            )
            pictures.append(item.draw(heat, title))
        picture = save_grid([pictures], out_dir / f"{stem}.explain.png")
        rows.append(
            {
                "path": item.name,
                "target": prediction.top_label,
                "probability": float(probs[target]),
                "picture": picture.name,
                "methods": scores,
            }
        )
    mean = {
        how: {
            key: float(np.mean([row["methods"][how][key] for row in rows])) for key in rows[0]["methods"][how]
        }
        for how in methods
    }
    activation = score_activation(model)
    result = {"model": str(model_dir), "steps": steps, "activation": activation, "mean": mean, "files": rows}
    write_json(out_dir / "explain.json", result)
    return result
