"""Predict files (DICOM, PNG, JPEG) with a trained model and draw its evidence on each original image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image
from rich.progress import track

from radsight.atomic import atomic_write, remove_stale_temporaries, write_json, write_text
from radsight.errors import ConfigError, DataError
from radsight.folder_lock import locked_folder
from radsight.infer import LoadedModel, PreparedFile, infer_batch
from radsight.methods.base import DRAFT_NOTICE
from radsight.run_folder import output_stems

log = logging.getLogger(__name__)


def predict_files(
    model_dir: Path,
    files: list[Path],
    out_dir: Path,
    how: str | None = None,
    *,
    refuse_foreign: bool = False,
    dicom: bool = False,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Write ``predictions.json`` (per-file probabilities, per label whether it reaches the model's
    operating point, and warnings) and ``<stem>.overlay.png`` per file (``<stem>-2`` for a second file of
    the same name), and for a model that writes reports (captioning) ``<stem>.report.txt``, the draft
    headed by :data:`DRAFT_NOTICE`; return what predictions.json holds. ``out_dir`` is locked while it
    is written. With ``dicom``, every file must be DICOM, and its SR, overlay and map are written as
    ``<stem>.<sr|overlay|map>.dcm`` too (see :mod:`radsight.dicom.out`).

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
    headers = [_dicom_header(item.name, item.info.dicom is not None) for item in inputs] if dicom else []
    identity = _model_identity(model_dir, model) if dicom else None
    foreign = [item for item in inputs if item.warnings]
    if refuse_foreign and foreign:
        others = f" (and {len(foreign) - 1} more of the {len(inputs)} files)" if len(foreign) > 1 else ""
        raise DataError(foreign[0].name, f"refused, {'; '.join(foreign[0].warnings)}{others}")
    with locked_folder(out_dir):
        remove_stale_temporaries(out_dir)
        return _write_predictions(model, model_dir, inputs, out_dir, how, runtime, headers, identity)


def _write_predictions(
    model: LoadedModel,
    model_dir: Path,
    inputs: list[PreparedFile],
    out_dir: Path,
    how: str,
    runtime: str,
    headers: list[Any],
    identity: Any,
) -> dict[str, Any]:
    rows, map_runtime = [], None
    stems = output_stems([item.name for item in inputs])
    size = model.recipe.data.batch_size
    for start in track(range(0, len(inputs), size), description="predicting"):
        chunk = inputs[start : start + size]
        for index, (item, prediction) in enumerate(
            zip(chunk, infer_batch(model, chunk, how=how), strict=True)
        ):
            stem = stems[start + index]
            map_runtime = prediction.map_runtime
            assert prediction.map is not None
            overlay_path = out_dir / f"{stem}.overlay.png"
            picture = Image.fromarray(item.draw(prediction.map, prediction.headline, prediction.regions))
            atomic_write(overlay_path, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
            written = []
            if identity is not None:
                from radsight.dicom.out import KINDS, results

                header = headers[start + index]
                for kind, dataset in zip(KINDS, results(prediction, header, identity), strict=True):
                    written.append(f"{stem}.{kind}.dcm")
                    atomic_write(
                        out_dir / written[-1],
                        lambda tmp, dataset=dataset: dataset.save_as(tmp, enforce_file_format=True),
                    )
            draft = None
            if prediction.text is not None:
                draft = {"text": prediction.text, "notice": DRAFT_NOTICE, "file": f"{stem}.report.txt"}
                report = f"{DRAFT_NOTICE}\n\n{prediction.text}\n"
                write_text(out_dir / draft["file"], report)
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
                    **({"draft_report": draft} if draft is not None else {}),
                    **({"dicom": written} if identity is not None else {}),
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


def _model_identity(model_dir: Path, model: LoadedModel) -> Any:
    from radsight.dicom.out import ModelIdentity

    return ModelIdentity.of(model_dir, model)


def _dicom_header(name: str, is_dicom: bool) -> Any:
    """The header DICOM results are filed with, checked before anything is written."""
    if not is_dicom:
        raise DataError(name, "DICOM results need a DICOM input (this file is PNG or JPEG)")
    from radsight.dicom.out import source_header

    return source_header(Path(name), name)
