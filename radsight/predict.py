"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.data.io import read_image
from radsight.data.sample import Sample, SampleMeta, collate
from radsight.data.transforms import LETTERBOX_KEY, Letterbox
from radsight.explain.cam import explain
from radsight.explain.overlay import overlay
from radsight.train import load_method

# Overlays of very large images (mammograms) are drawn at most this many pixels on the long side.
MAX_OVERLAY_SIDE = 2048


def predict_files(model_dir: Path, files: list[Path], out_dir: Path, how: str | None = None) -> Path:
    """Write ``predictions.json`` (per-file probabilities) and ``<stem>.overlay.png`` per file.

    Every file is read before any prediction, so a bad file stops the run with its name up front.
    ``how`` picks the map (default: the recipe's evaluation setting).
    """
    method, recipe = load_method(model_dir)
    how = how or recipe.evaluation.explain
    letterbox = Letterbox(tuple(recipe.data.image_size))
    images = [read_image(path) for path in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, (image, info) in track(list(zip(files, images, strict=True)), description="predicting"):
        meta = SampleMeta(
            source="file", path=str(path), patient_id=path.stem, original_size=info.original_size
        )
        sample = letterbox(Sample(image=image, meta=meta))
        batch = collate([sample])
        with torch.inference_mode():
            prediction = method.predict(batch)
        probs = prediction.probs[0].float()
        target = int(probs.argmax())
        letterbox_info = sample.meta.extra[LETTERBOX_KEY]
        heat = explain(method.classifier(), batch.images, method=how, targets=[target])[0]
        heat = letterbox_info.to_original_map(heat[None])[0]
        regions = None
        if prediction.regions is not None and len(prediction.regions[0]):
            regions = letterbox_info.to_original_coords(prediction.regions[0].float().cpu())
        shown = _fit(image[0])
        scale = shown.shape[-1] / image.shape[-1]
        picture = overlay(
            shown.numpy(),
            _fit(heat).numpy(),
            boxes=None if regions is None else (regions * scale).numpy(),
            box_labels=None if regions is None else ["region"] * len(regions),
            title=f"{method.label_names[target]} {float(probs[target]):.2f} ({how})",
        )
        overlay_path = out_dir / f"{path.stem}.overlay.png"
        Image.fromarray(picture).save(overlay_path)
        rows.append(
            {
                "path": str(path),
                "probabilities": {name: float(p) for name, p in zip(method.label_names, probs, strict=True)},
                "top_label": method.label_names[target],
                "overlay": overlay_path.name,
                "original_size": list(info.original_size),
                "regions": None if regions is None else regions.round().int().tolist(),
            }
        )
    result = out_dir / "predictions.json"
    write_json(result, {"model": str(model_dir), "explanation": how, "files": rows})
    return result


def _fit(plane: torch.Tensor) -> torch.Tensor:
    """Downscale a 2-D plane so its long side is at most MAX_OVERLAY_SIDE (overlays stay viewable)."""
    scale = MAX_OVERLAY_SIDE / max(plane.shape)
    if scale >= 1:
        return plane
    size = [max(1, round(s * scale)) for s in plane.shape]
    return torch.nn.functional.interpolate(plane[None, None].float(), size=size, mode="area")[0, 0]
