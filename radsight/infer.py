"""The one path from a file to the model's frame and back to the file's own pixels.

Prediction, explanation and every later product feature (ONNX, DICOM out, PACS, the web viewer) read
files through here, so that a file is prepared exactly as the recipe prepared its training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radsight.config import Recipe
from radsight.data.assemble import aligns_breasts
from radsight.data.image_io import read_image
from radsight.data.sample import Batch, Sample, SampleMeta, collate
from radsight.data.transforms import BREAST_FLIPPED_KEY, LETTERBOX_KEY, AlignBreast, Letterbox, LetterboxInfo
from radsight.explain.overlay import overlay

# Overlays are drawn at the file's resolution up to this many pixels on the long side (a full mammogram
# at 2944 x 1920 keeps its resolution; larger detector images are shrunk to stay viewable).
MAX_OVERLAY_SIDE = 4096


@dataclass
class FileInput:
    """One file as the model sees it (a batch of one), and the way back to the file's own pixels.

    The recipe's geometry is replayed: its letterbox, and, when the recipe aligned breasts
    (``align_breast``), the same alignment, so maps and boxes are mirrored back onto the file as stored.
    """

    path: Path
    image: Tensor  # 1 x H x W, the file as read
    batch: Batch
    letterbox: LetterboxInfo
    mirrored: bool

    @classmethod
    def read_all(cls, files: Sequence[Path], recipe: Recipe) -> list[FileInput]:
        """Read every file first, so a bad one stops the run with its name before any work is done."""
        read = [(path, *read_image(path)) for path in files]
        letterbox = Letterbox(tuple(recipe.data.image_size))
        align = any(aligns_breasts(spec) for spec in recipe.data.sources)
        inputs = []
        for path, image, info in read:
            meta = SampleMeta(
                source="file", path=str(path), patient_id=path.stem, original_size=info.original_size
            )
            sample = Sample(image=image, meta=meta)
            if align:
                sample = AlignBreast()(sample)
            mirrored = bool(sample.meta.extra.get(BREAST_FLIPPED_KEY, False))
            sample = letterbox(sample)
            inputs.append(cls(path, image, collate([sample]), sample.meta.extra[LETTERBOX_KEY], mirrored))
        return inputs

    def map_to_file(self, heat: Tensor) -> Tensor:
        """An ``H x W`` map in the model's frame, on the file's pixel grid."""
        heat = self.letterbox.to_original_map(heat[None].float().cpu())[0]
        return heat.flip(-1) if self.mirrored else heat

    def boxes_to_file(self, boxes: Tensor) -> Tensor:
        """``N x 4`` xyxy boxes in the model's frame, in the file's pixels."""
        boxes = self.letterbox.to_original_coords(boxes.float().cpu())
        if not self.mirrored:
            return boxes
        width = self.image.shape[-1]
        return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)

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


def _fit(plane: torch.Tensor) -> torch.Tensor:
    """Downscale a 2-D plane so its long side is at most MAX_OVERLAY_SIDE (overlays stay viewable)."""
    scale = MAX_OVERLAY_SIDE / max(plane.shape)
    if scale >= 1:
        return plane
    size = [max(1, round(s * scale)) for s in plane.shape]
    return torch.nn.functional.interpolate(plane[None, None].float(), size=size, mode="area")[0, 0]
