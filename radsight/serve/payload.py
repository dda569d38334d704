"""What the web service answers about a file: the prediction as JSON (the same fields as a
``predictions.json`` row of ``radsight predict``) and, for the viewer, the film and its map as PNGs.

The map picture carries the overlay's own colouring and opacity (:func:`radsight.explain.overlay.heat_rgba`),
so the viewer shows what ``radsight predict`` draws; the page only scales its opacity.
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from io import BytesIO
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from pydantic import BaseModel, Field

from radsight.explain.names import NORMALISATIONS
from radsight.explain.overlay import COLORMAP, LEGEND_ENDS, LOW_ATTENTION, heat_rgba
from radsight.infer import FilePrediction, LoadedModel

DISPLAY_SIDE = 1024
"""The viewer's pictures are at most this many pixels on the long side (regions stay in file pixels)."""
SCALE_STOPS = 11


class PredictionAnswer(BaseModel):
    """``POST /predict``: one file's prediction, as a row of radsight predict's predictions.json."""

    file: str = Field(description="the uploaded file's name")
    probabilities: dict[str, float] = Field(description="per label, the model's probability")
    positive: dict[str, bool | None] = Field(description="per label, whether it reaches its threshold")
    thresholds: dict[str, float | None] = Field(description="per label, the model's operating point")
    top_label: str = Field(description="the most probable label")
    original_size: list[int] = Field(description="the file's height and width in pixels")
    regions: list[list[int]] | None = Field(description="xyxy boxes the method looked at, in file pixels")
    mirrored_for_the_model: bool = Field(description="whether the breast was mirrored for the model")
    text: str | None = Field(description="the method's draft report: machine-generated, not for diagnosis")
    warnings: list[str] = Field(description="how the file is unlike the model's training images")
    dicom: dict[str, str | None] | None = Field(description="a DICOM file's study, series and instance")


class Faithfulness(BaseModel):
    deletion_auc: float = Field(description="lower is better: the score falls fast as salient pixels go")
    insertion_auc: float = Field(description="higher is better: it rises fast as they are restored")
    steps: int = Field(description="points of each curve")


class ViewAnswer(PredictionAnswer):
    """``POST /view``: the prediction, and what the viewer draws."""

    explanation: str = Field(description="the explanation method of the map")
    faithfulness: Faithfulness
    film: str = Field(description="the file as read, a gray PNG data URL")
    map: str = Field(description="the top label's map, an RGBA PNG data URL (transparent where low)")


class Problem(BaseModel):
    detail: str = Field(description="what is wrong with the request, in one line")


def prediction_json(prediction: FilePrediction) -> dict[str, Any]:
    """The answer of ``POST /predict``: probabilities and decisions as ``radsight predict`` writes them."""
    regions = prediction.regions
    dicom = prediction.dicom
    return {
        "file": prediction.file.name,
        "probabilities": prediction.probabilities,
        "positive": prediction.positive,
        "thresholds": prediction.thresholds,
        "top_label": prediction.top_label,
        "original_size": list(prediction.original_size),
        "regions": None if regions is None else regions.round().int().tolist(),
        "mirrored_for_the_model": prediction.mirrored,
        "text": prediction.text,
        "warnings": prediction.warnings,
        "dicom": None if dicom is None else asdict(dicom),
    }


def model_json(model: LoadedModel, explanations: list[str]) -> dict[str, Any]:
    """What the page needs before any upload: labels, thresholds, explanation methods and the colour scale."""
    normalise = model.recipe.evaluation.map_normalisation
    default = model.recipe.evaluation.explain
    return {
        "name": model.recipe.name,
        "labels": model.label_names,
        "thresholds": dict(model.operating_points.thresholds),
        "explanations": explanations,
        "default_explanation": default if default in explanations else explanations[0],
        "scale": {
            "colours": [_hex(rgba) for rgba in colormaps[COLORMAP](np.linspace(0, 1, SCALE_STOPS))],
            "transparent_below": LOW_ATTENTION,
            "ends": list(LEGEND_ENDS[normalise]),
            "meaning": NORMALISATIONS[normalise],
        },
    }


def film_png(prediction: FilePrediction) -> str:
    """The file as read (gray, unmirrored), as a PNG data URL at most DISPLAY_SIDE on its long side."""
    gray = _display(prediction.file.image[0])
    return _data_url(Image.fromarray(np.round(gray.clamp(0, 1).numpy() * 255).astype(np.uint8), mode="L"))


def map_png(heat: torch.Tensor) -> str:
    """A map in the file's pixels as an RGBA PNG data URL: its colours, transparent where attention is low."""
    rgba = np.round(heat_rgba(_display(heat).numpy()) * 255).astype(np.uint8)
    return _data_url(Image.fromarray(rgba, mode="RGBA"))


def _display(plane: torch.Tensor) -> torch.Tensor:
    scale = DISPLAY_SIDE / max(plane.shape)
    if scale >= 1:
        return plane.float()
    size = [max(1, round(s * scale)) for s in plane.shape]
    return torch.nn.functional.interpolate(plane[None, None].float(), size=size, mode="area")[0, 0]


def _data_url(picture: Image.Image) -> str:
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _hex(rgba: np.ndarray) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgba[:3])
