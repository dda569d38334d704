"""Bringing a model's map and an annotation into one frame, shared by the map metrics.

Maps come at the network's resolution; masks, boxes and fixations at the image's. Every map metric
compares at the annotation's resolution, so the map is resized (bilinear) to the annotation's frame,
never the annotation to the map's: a coarse mask would move lesion borders.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
MapLike = ArrayLike | Tensor


def as_array(values: MapLike) -> FloatArray:
    """A float64 numpy array from a tensor (any device) or an array-like."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def as_map(values: MapLike) -> FloatArray:
    """A 2-D float map; a leading singleton channel (1 x H x W) is dropped."""
    array = as_array(values)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D map (H x W), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("map holds NaN or infinite values")
    return array


def as_mask(values: MapLike, what: str = "ground-truth mask") -> BoolArray:
    """A 2-D bool mask that is not empty: an empty one has no lesion to score against."""
    array = as_map(values) != 0
    if not array.any():
        raise ValueError(f"{what} is empty (no positive pixel): the metric is undefined for it")
    return array


def resize_map(values: MapLike, size: tuple[int, int]) -> FloatArray:
    """The map bilinearly resized to ``size`` = (height, width); antialiased when it shrinks."""
    array = as_map(values)
    size = (int(size[0]), int(size[1]))
    if array.shape == size:
        return array
    tensor = torch.from_numpy(array)[None, None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0, 0].numpy()


def minmax(values: FloatArray) -> FloatArray:
    """Rescale to [0, 1]; a constant map carries no ranking, so it becomes all zeros."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)
