"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.explain.cam import explain
from radsight.infer import FileInput
from radsight.methods import load_method


def predict_files(model_dir: Path, files: list[Path], out_dir: Path, how: str | None = None) -> Path:
    """Write ``predictions.json`` (per-file probabilities) and ``<stem>.overlay.png`` per file.

    ``how`` picks the map (default: the recipe's evaluation setting).
    """
    method, recipe = load_method(model_dir)
    how = how or recipe.evaluation.explain
    inputs = FileInput.read_all(files, recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in track(inputs, description="predicting"):
        with torch.inference_mode():
            prediction = method.predict(item.batch)
        probs = prediction.probs[0].float()
        target = int(probs.argmax())
        heat = item.map_to_file(
            explain(method.classifier(), item.batch.images, method=how, targets=[target])[0]
        )
        regions = None
        if prediction.regions is not None and len(prediction.regions[0]):
            regions = item.boxes_to_file(prediction.regions[0])
        title = f"{method.label_names[target]} {float(probs[target]):.2f} ({how})"
        overlay_path = out_dir / f"{item.path.stem}.overlay.png"
        Image.fromarray(item.draw(heat, title, regions)).save(overlay_path)
        rows.append(
            {
                "path": str(item.path),
                "probabilities": {name: float(p) for name, p in zip(method.label_names, probs, strict=True)},
                "top_label": method.label_names[target],
                "overlay": overlay_path.name,
                "original_size": list(item.image.shape[-2:]),
                "regions": None if regions is None else regions.round().int().tolist(),
                "mirrored_for_the_model": item.mirrored,
            }
        )
    result = out_dir / "predictions.json"
    write_json(result, {"model": str(model_dir), "explanation": how, "files": rows})
    return result
