"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.data.io import read_image
from radsight.data.sample import Sample, SampleMeta, collate
from radsight.data.transforms import BREAST_FLIPPED_KEY, LETTERBOX_KEY, AlignBreast, Letterbox
from radsight.explain.cam import explain
from radsight.explain.overlay import overlay
from radsight.train import load_method

# Overlays are drawn at the file's resolution up to this many pixels on the long side (a full mammogram
# at 2944 x 1920 keeps its resolution; larger detector images are shrunk to stay viewable).
MAX_OVERLAY_SIDE = 4096


def predict_files(model_dir: Path, files: list[Path], out_dir: Path, how: str | None = None) -> Path:
    """Write ``predictions.json`` (per-file probabilities) and ``<stem>.overlay.png`` per file.

    Every file is read before any prediction, so a bad file stops the run with its name up front.
    ``how`` picks the map (default: the recipe's evaluation setting). When the recipe aligned breasts
    (``align_breast``), each file is aligned the same way and its map and regions mirrored back, so the
    overlay is drawn on the file as stored.
    """
    method, recipe = load_method(model_dir)
    how = how or recipe.evaluation.explain
    letterbox = Letterbox(tuple(recipe.data.image_size))
    align = any(spec.options.get("align_breast") for spec in recipe.data.sources)
    images = [read_image(path) for path in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, (image, info) in track(list(zip(files, images, strict=True)), description="predicting"):
        meta = SampleMeta(
            source="file", path=str(path), patient_id=path.stem, original_size=info.original_size
        )
        sample = Sample(image=image, meta=meta)
        if align:
            sample = AlignBreast()(sample)
        flipped = bool(sample.meta.extra.get(BREAST_FLIPPED_KEY, False))
        sample = letterbox(sample)
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
        if flipped:
            heat = heat.flip(-1)
            if regions is not None:
                regions = torch.stack(
                    [
                        image.shape[-1] - regions[:, 2],
                        regions[:, 1],
                        image.shape[-1] - regions[:, 0],
                        regions[:, 3],
                    ],
                    dim=1,
                )
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
                "mirrored_for_the_model": flipped,
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
