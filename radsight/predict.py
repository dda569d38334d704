"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.infer import LoadedModel, infer


def predict_files(model_dir: Path, files: list[Path], out_dir: Path, how: str | None = None) -> Path:
    """Write ``predictions.json`` (per-file probabilities, and per label whether it reaches the model's
    operating point) and ``<stem>.overlay.png`` per file.

    ``how`` picks the map (default: the recipe's evaluation setting). Every file is read first, so a
    bad one stops the run with its name before anything is written.
    """
    model = LoadedModel.load(model_dir)
    how = how or model.recipe.evaluation.explain
    inputs = [model.prepare(path) for path in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in track(inputs, description="predicting"):
        prediction = infer(model, item, how=how)
        assert prediction.map is not None
        title = f"{prediction.top_label} {float(prediction.probs[prediction.top]):.2f} ({how})"
        overlay_path = out_dir / f"{Path(item.name).stem}.overlay.png"
        Image.fromarray(item.draw(prediction.map, title, prediction.regions)).save(overlay_path)
        regions = prediction.regions
        rows.append(
            {
                "path": item.name,
                "probabilities": prediction.probabilities,
                "positive": prediction.positive,
                "top_label": prediction.top_label,
                "overlay": overlay_path.name,
                "original_size": list(prediction.original_size),
                "regions": None if regions is None else regions.round().int().tolist(),
                "mirrored_for_the_model": prediction.mirrored,
            }
        )
    result = out_dir / "predictions.json"
    points = model.operating_points.as_json()
    write_json(
        result, {"model": str(model_dir), "explanation": how, "operating_point": points, "files": rows}
    )
    return result
