"""ONNX export of a trained model: ``model.onnx`` maps images to probabilities and, where the method has
them, its native maps and chosen regions, for any batch size.

The graph is the method's own :meth:`Method.predict` traced on images alone (no label or annotation is
read at prediction time). Its outputs are ``probs`` (B x C), ``map_<name>`` per native map
(B x K x h x w) and ``regions`` (B x N x 4, xyxy in input pixels) where the method chooses some. What a
file goes through before it (reading, rendering, breast alignment, letterbox) is not in the graph: the
model's metadata states it (``radsight.preprocessing``, JSON), so another program can prepare its
inputs, and radsight prepares them with the same pipeline as the PyTorch model's
(:mod:`radsight.infer`).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from radsight.config import Recipe
from radsight.data.assemble import SPLITS_FILE, SourceReading
from radsight.errors import ConfigError
from radsight.methods import Method, load_method
from radsight.run_folder import INPUT_PROFILE_FILE, ONNX_FILE, OPERATING_POINTS_FILE
from radsight.runtime import (
    MAP_OUTPUT_PREFIX,
    PROBS_OUTPUT,
    REGIONS_OUTPUT,
    OnnxRuntime,
    TorchRuntime,
    images_only,
)

FORMATS = ("onnx",)
OPSET = 18
COPIED = (
    "config.json",
    "model.safetensors",
    INPUT_PROFILE_FILE,
    OPERATING_POINTS_FILE,
    SPLITS_FILE,
    "patients.json",
)
"""The run folder's files copied beside ``model.onnx`` into another folder, so that it is a model folder
too (predict, and evaluate on the run's own test split or, leaving its patients out, on a source)."""
RENDERING = (
    "DICOM: modality LUT (rescale), then the VOI LUT or window mapped to [0, 1], MONOCHROME1 inverted; "
    "PNG / JPEG: pixel values divided by the largest value of their bit depth (read_options.bits_stored "
    "overrides a 16-bit file's); dark = air"
)
LETTERBOX = (
    "resize keeping the aspect ratio (bilinear, antialiased) to fit image_size (height, width), then pad "
    "evenly on both sides with fill"
)


class PredictionGraph(nn.Module):
    """``method.predict`` on images alone, as a tuple of tensors (the ONNX outputs, in order)."""

    def __init__(self, method: Method, map_names: list[str], regions: bool) -> None:
        super().__init__()
        self.method = method
        self.map_names = map_names
        self.regions = regions

    @classmethod
    def of(cls, method: Method, example: Tensor) -> PredictionGraph:
        """The graph of ``method``, its outputs named by what ``method`` predicts for ``example``."""
        with torch.no_grad():
            prediction = method.predict(images_only(example))
        return cls(method, sorted(prediction.maps or {}), prediction.regions is not None)

    @property
    def output_names(self) -> list[str]:
        return [
            PROBS_OUTPUT,
            *(f"{MAP_OUTPUT_PREFIX}{name}" for name in self.map_names),
            *([REGIONS_OUTPUT] if self.regions else []),
        ]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        prediction = self.method.predict(images_only(images))
        maps = prediction.maps or {}
        outputs = [prediction.probs, *(maps[name] for name in self.map_names)]
        if self.regions:
            assert prediction.regions is not None
            outputs.append(torch.stack(prediction.regions))
        return tuple(outputs)


def preprocessing_spec(recipe: Recipe) -> dict[str, Any]:
    """What a file goes through before the graph, per recipe source (see :mod:`radsight.infer`)."""
    return {
        "input": "images: float32, B x 1 x height x width, in [0, 1]",
        "image_size": list(recipe.data.image_size),
        "letterbox": {"how": LETTERBOX, "fill": 0.0},
        "rendering": RENDERING,
        "sources": [
            {"name": r.name, "read_options": r.read_options, "align_breast": r.align_breast}
            for r in (SourceReading.of(spec) for spec in recipe.data.sources)
        ],
        "alignment": "align_breast: the image is mirrored so that the breast faces the same way as in "
        "training; maps and regions are mirrored back",
    }


def export_onnx(model_dir: str | Path, out_dir: str | Path) -> tuple[Path, float]:
    """Write ``out_dir/model.onnx`` for the model in ``model_dir`` (and, for another folder, copy the
    model's export files beside it, so that ``out_dir`` is a model folder for either runtime); return
    its path and the largest difference from PyTorch on a batch of another size than the traced one.

    A method whose prediction cannot be traced is one ConfigError line saying so.
    """
    import onnx

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    method, recipe = load_method(model_dir)
    method = method.cpu().eval()
    obstacle = method.onnx_obstacle()
    if obstacle is not None:
        raise ConfigError(f"method {recipe.method!r} cannot be exported to ONNX: {obstacle}")
    height, width = recipe.data.image_size
    example = torch.rand(2, 1, height, width, generator=torch.Generator().manual_seed(0))
    graph = PredictionGraph.of(method, example).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ONNX_FILE
    try:
        # the exporter prints its progress; radsight reports the outcome in one line instead
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                graph,
                (example,),
                str(path),
                dynamo=True,
                input_names=["images"],
                output_names=graph.output_names,
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many kinds; the reason is in the message
        path.unlink(missing_ok=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"method {recipe.method!r} cannot be exported to ONNX: {reason}") from None
    model = onnx.load(str(path))
    metadata = {
        "radsight.method": recipe.method,
        "radsight.task": recipe.task,
        "radsight.labels": json.dumps(method.label_names),
        "radsight.preprocessing": json.dumps(preprocessing_spec(recipe)),
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    if out_dir.resolve() != model_dir.resolve():
        for name in COPIED:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, out_dir / name)
    check = torch.rand(3, 1, height, width, generator=torch.Generator().manual_seed(1))
    return path, largest_difference(method, path, check)


def largest_difference(method: Method, path: str | Path, images: Tensor) -> float:
    """The largest absolute difference between every output of ``path`` in ONNX Runtime and the same
    output of ``method`` in PyTorch, on ``images``."""
    batch = images_only(images)
    ours, theirs = TorchRuntime(method).predict(batch), OnnxRuntime(path).predict(batch)
    pairs = [(ours.probs, theirs.probs)]
    pairs += [(ours.maps[name], (theirs.maps or {})[name]) for name in ours.maps or {}]
    if ours.regions is not None:
        pairs += list(zip(ours.regions, theirs.regions or [], strict=True))
    return max(float((a.float().cpu() - b.float()).abs().max()) for a, b in pairs)
