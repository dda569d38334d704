"""The one inference core: a file (a path, or its bytes) through the recipe's evaluation pipeline into the
model, and the prediction back in the file's own pixels.

It writes nothing. ``radsight predict`` and ``radsight explain`` write on top of it, and so will every
later product feature (a web service, a PACS client, DICOM output). Files are read and prepared by the
same :class:`~radsight.data.assemble.EvaluationPipeline` that builds the evaluated datasets, so a file
reaches the model exactly as the recipe's own images of that source did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radsight.config import Recipe
from radsight.data.assemble import EvaluationPipeline, SourceReading, evaluation_pipeline
from radsight.data.image_io import DicomIdentity, ImageInfo, read_image
from radsight.data.input_profile import InputProfile
from radsight.data.sample import Batch, Sample, SampleMeta, collate
from radsight.data.transforms import Geometry
from radsight.explain.cam import explain, normalise_maps
from radsight.explain.overlay import overlay
from radsight.methods import Method, load_method
from radsight.operating_points import OperatingPoints, operating_points_of
from radsight.run_folder import INPUT_PROFILE_FILE
from radsight.runtime import Runtime, TorchRuntime, images_only, load_runtime

# Overlays are drawn at the file's resolution up to this many pixels on the long side (a full mammogram
# at 2944 x 1920 keeps its resolution; larger detector images are shrunk to stay viewable).
MAX_OVERLAY_SIDE = 4096


@dataclass
class LoadedModel:
    """A trained model held for repeated inference: the method, its recipe, and how files are read.

    ``source`` names the recipe source whose files the inputs resemble; it is needed only when the
    recipe's sources read files differently (see :meth:`EvaluationPipeline.reading`). ``profile`` is
    what the training images looked like; None for models exported before profiles, whose inputs
    cannot be checked. ``runtime`` computes predictions (default: the method itself in PyTorch; see
    :mod:`radsight.runtime`); explanations that need gradients always run on ``method``.
    """

    method: Method
    recipe: Recipe
    pipeline: EvaluationPipeline
    reading: SourceReading
    profile: InputProfile | None = None
    runtime: Runtime | None = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            self.runtime = TorchRuntime(self.method)

    @classmethod
    def from_method(
        cls,
        method: Method,
        recipe: Recipe,
        source: str | None = None,
        profile: InputProfile | None = None,
        runtime: Runtime | None = None,
    ) -> LoadedModel:
        pipeline = evaluation_pipeline(recipe.data)
        return cls(method, recipe, pipeline, pipeline.reading(source), profile, runtime)

    @classmethod
    def load(cls, model_dir: str | Path, source: str | None = None, runtime: str = "torch") -> LoadedModel:
        """Load a run folder's export once (``model.safetensors`` + ``config.json``, and the
        ``input_profile.json`` of its training images where there is one); ``runtime="onnxruntime"``
        predicts with the folder's ``model.onnx`` (``radsight export``)."""
        method, recipe = load_method(model_dir)
        profile = InputProfile.read(Path(model_dir) / INPUT_PROFILE_FILE)
        return cls.from_method(method, recipe, source, profile, load_runtime(runtime, method, model_dir))

    @property
    def label_names(self) -> list[str]:
        return self.method.label_names

    @property
    def operating_points(self) -> OperatingPoints:
        """The thresholds chosen after training, or the stated 0.5 fallback for a model without them."""
        return operating_points_of(self.method, self.recipe.evaluation.operating_point)

    def prepare(self, file: str | Path | bytes, *, name: str | None = None) -> PreparedFile:
        """Read one file and build the model's input from it; a bad file is a DataError naming it, and
        a file unlike the training images carries warnings saying how."""
        label = name or ("<bytes>" if isinstance(file, bytes | bytearray | memoryview) else str(file))
        image, info = read_image(file, name=label, **self.reading.read_options)
        meta = SampleMeta(
            source="file",
            path=label,
            patient_id=Path(label).stem,
            original_size=info.original_size,
            pixel_spacing=info.pixel_spacing,
            extra={"bits_stored": info.bits_stored},
            dicom=info.dicom,
        )
        sample = self.pipeline.model_input(Sample(image=image, meta=meta), self.reading)
        warnings = [] if self.profile is None else self.profile.check(image, info.dicom)
        return PreparedFile(label, image, info, collate([sample]), Geometry.of(sample), warnings)


@dataclass
class PreparedFile:
    """One file as read, the model's input built from it (a batch of one), the way back, and how the
    file is unlike the model's training images (empty: like them, or the model has no profile)."""

    name: str
    image: Tensor  # 1 x H x W, the file as read
    info: ImageInfo
    batch: Batch
    geometry: Geometry
    warnings: list[str] = field(default_factory=list)

    def draw(self, heat: Tensor, title: str, regions: Tensor | None = None) -> np.ndarray:
        """The file with a map in its own pixels (and ``regions`` outlined), at most MAX_OVERLAY_SIDE."""
        shown = _fit(self.image[0])
        scale = shown.shape[-1] / self.image.shape[-1]
        return overlay(
            shown.numpy(),
            _fit(heat).numpy(),
            boxes=None if regions is None else (regions * scale).numpy(),
            box_labels=None if regions is None else ["region"] * len(regions),
            title=title,
        )


@dataclass
class FilePrediction:
    """What the model says about one file, in the file's own pixels.

    ``map`` explains the top label (``map_method``: "native" for the method's own map, else an
    explanation method); ``regions`` are the places the method chose to look at (e.g. GLAM's patches)
    as xyxy boxes; both are None when not asked for or not produced. ``thresholds`` are the model's
    operating points per label (None: the label has none). ``text`` is what the method wrote about the
    file (a draft report), None for methods that write none. ``runtime`` names what computed the
    probabilities and ``map_runtime`` what made the map: "torch" for every explanation that needs
    gradients, whatever the model's runtime.
    """

    file: PreparedFile
    label_names: list[str]
    probs: Tensor  # C probabilities
    map_method: str | None
    map: Tensor | None  # H x W
    regions: Tensor | None  # N x 4
    thresholds: dict[str, float | None]
    text: str | None = None
    runtime: str = "torch"
    map_runtime: str | None = None

    @property
    def top(self) -> int:
        return int(self.probs.argmax())

    @property
    def top_label(self) -> str:
        return self.label_names[self.top]

    @property
    def headline(self) -> str:
        """The top label, its probability and the map's method: an overlay's title."""
        return f"{self.top_label}: probability {float(self.probs[self.top]):.2f} ({self.map_method} map)"

    @property
    def probabilities(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.label_names, self.probs, strict=True)}

    @property
    def positive(self) -> dict[str, bool | None]:
        """Per label, whether the probability reaches its threshold (None where the label has none)."""
        return {
            name: None if (t := self.thresholds.get(name)) is None else p >= t
            for name, p in self.probabilities.items()
        }

    @property
    def original_size(self) -> tuple[int, int]:
        return self.file.geometry.original_size

    @property
    def mirrored(self) -> bool:
        """Whether the breast was mirrored for the model (``align_breast``)."""
        return self.file.geometry.mirrored

    @property
    def dicom(self) -> DicomIdentity | None:
        return self.file.info.dicom

    @property
    def warnings(self) -> list[str]:
        """How the file is unlike the model's training images (see :class:`InputProfile`)."""
        return self.file.warnings


def infer(
    model: LoadedModel,
    file: str | Path | bytes | PreparedFile,
    *,
    name: str | None = None,
    how: str | None = None,
    with_map: bool = True,
) -> FilePrediction:
    """Predict one file (a path, its bytes named by ``name``, or a file already prepared).

    ``how`` makes the map: "native" for the method's own map (from the model's runtime), else an
    explanation method of :func:`radsight.explain.cam.explain` (default: the recipe's
    ``evaluation.explain``), which runs on the PyTorch method; with ``with_map=False`` no map is made.
    """
    item = file if isinstance(file, PreparedFile) else model.prepare(file, name=name)
    return infer_batch(model, [item], how=how, with_map=with_map)[0]


def infer_batch(
    model: LoadedModel, items: Sequence[PreparedFile], *, how: str | None = None, with_map: bool = True
) -> list[FilePrediction]:
    """Predict prepared files as one batch: one call of the runtime and, for the maps, one explanation
    call (``how`` and ``with_map`` as in :func:`infer`); each prediction in its own file's pixels."""
    method, runtime = model.method, model.runtime
    assert runtime is not None
    images = torch.cat([item.batch.images for item in items])
    prediction = runtime.predict(images_only(images))
    probs = prediction.probs.float().cpu()
    tops = probs.argmax(dim=1)
    how = (how or model.recipe.evaluation.explain) if with_map else None
    heats: list[Tensor | None] = [None] * len(items)
    map_runtime = None
    if how is not None:
        saliency = (prediction.maps or {}).get("saliency")
        if how == "native" and saliency is not None:  # the method's own map, as explain's "native" picks it
            channels = tops if saliency.shape[1] > 1 else torch.zeros_like(tops)
            raw = saliency.float().cpu()[torch.arange(len(items)), channels]
            explained, map_runtime = normalise_maps(raw, images.shape[-2:]), runtime.name
        else:
            on_device = images.to(method.device)
            explained = explain(method.classifier(), on_device, method=how, targets=tops.tolist())
            map_runtime = "torch"
        heats = [item.geometry.map_to_original(heat) for item, heat in zip(items, explained, strict=True)]
    thresholds = dict(model.operating_points.thresholds)
    predictions = []
    for index, item in enumerate(items):
        boxes = None if prediction.regions is None else prediction.regions[index]
        regions = item.geometry.boxes_to_original(boxes.cpu()) if boxes is not None and len(boxes) else None
        predictions.append(
            FilePrediction(
                item,
                list(method.label_names),
                probs[index],
                how,
                heats[index],
                regions,
                thresholds,
                prediction.text[index] if prediction.text else None,
                runtime.name,
                map_runtime,
            )
        )
    return predictions


def _fit(plane: torch.Tensor) -> torch.Tensor:
    """Downscale a 2-D plane so its long side is at most MAX_OVERLAY_SIDE (overlays stay viewable)."""
    scale = MAX_OVERLAY_SIDE / max(plane.shape)
    if scale >= 1:
        return plane
    size = [max(1, round(s * scale)) for s in plane.shape]
    return torch.nn.functional.interpolate(plane[None, None].float(), size=size, mode="area")[0, 0]
