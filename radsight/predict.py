"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image
from rich.progress import track

from radsight.checkpoints import write_json
from radsight.errors import ConfigError, DataError
from radsight.infer import LoadedModel, infer_batch

log = logging.getLogger(__name__)


def predict_files(
    model_dir: Path,
    files: list[Path],
    out_dir: Path,
    how: str | None = None,
    *,
    refuse_foreign: bool = False,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Write ``predictions.json`` (per-file probabilities, per label whether it reaches the model's
    operating point, and warnings) and ``<stem>.overlay.png`` per file; return what predictions.json
    holds.

    ``how`` picks the map (default: the recipe's evaluation setting). Every file is read first, so a
    bad one stops the run with its name before anything is written; so does, with ``refuse_foreign``,
    a file unlike the model's training images (otherwise it is predicted with its warnings).
    ``runtime`` computes the probabilities (and native maps): "torch" or "onnxruntime" (the folder's
    ``model.onnx``); explanation maps that need gradients come from PyTorch, and the log says so.
    """
    model = LoadedModel.load(model_dir, runtime=runtime)
    if model.profile is None:
        if refuse_foreign:
            raise ConfigError(
                f"{model_dir}: no input profile (exported before inputs were checked), so foreign "
                "files cannot be refused; retrain the model or predict without refusing"
            )
        log.warning(
            "%s has no input profile (exported before inputs were checked): the files cannot be checked "
            "against the training images",
            model_dir,
        )
    how = how or model.recipe.evaluation.explain
    if runtime != "torch" and how != "native":
        log.info("%s computes the probabilities; %s maps need gradients, so PyTorch draws them", runtime, how)
    inputs = [model.prepare(path) for path in files]
    foreign = [item for item in inputs if item.warnings]
    if refuse_foreign and foreign:
        others = f" (and {len(foreign) - 1} more of the {len(inputs)} files)" if len(foreign) > 1 else ""
        raise DataError(foreign[0].name, f"refused, {'; '.join(foreign[0].warnings)}{others}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, map_runtime = [], None
    size = model.recipe.data.batch_size
    batches = [inputs[start : start + size] for start in range(0, len(inputs), size)]
    for chunk in track(batches, description="predicting"):
        for item, prediction in zip(chunk, infer_batch(model, chunk, how=how), strict=True):
            map_runtime = prediction.map_runtime
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
                    "warnings": prediction.warnings,
                }
            )
    payload = {
        "model": str(model_dir),
        "explanation": how,
        "runtime": runtime,
        "map_runtime": map_runtime,
        "operating_point": model.operating_points.as_json(),
        "inputs_checked": model.profile is not None,
        "files": rows,
    }
    write_json(out_dir / "predictions.json", payload)
    return payload
