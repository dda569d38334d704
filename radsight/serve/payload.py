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

from radsight.explain.names import NORMALISATIONS
from radsight.explain.overlay import COLORMAP, LEGEND_ENDS, LOW_ATTENTION, heat_rgba
from radsight.infer import FilePrediction, LoadedModel

DISPLAY_SIDE = 1024
"""The viewer's pictures are at most this many pixels on the long side (regions stay in file pixels)."""
SCALE_STOPS = 11


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
