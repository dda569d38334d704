"""Localization: does a model's saliency or segmentation map find the annotated lesion?

Maps of any resolution are bilinearly resized to the annotation's frame. Thresholded metrics binarise the
min-max normalised map with ``value >= threshold``. Boxes are ``xyxy`` in pixels: a pixel belongs to a box
when its centre does, so an integer box (x1, y1, x2, y2) covers columns x1..x2-1 and rows y1..y2-1, and
the boxes extracted from a map (connected components, 8-connectivity) round-trip exactly. An empty
ground-truth annotation raises ValueError: no score is meaningful against no lesion.

Chance levels (``*_chance`` in the section) say what a score is worth on these annotations: the expected
score of the same map with its pixels shuffled uniformly at random, i.e. the same values with no spatial
information, computed exactly per image and averaged like the score. With ``s`` the lesion's share of
the image (of the lesion widened by the tolerance, for the pointing game), ``k`` the pixels the map marks
at a threshold and ``P`` the sum of the normalised map: pointing game and energy pointing game ``s``;
Dice ``2 k |lesion| / (N (k + |lesion|))`` at the same threshold (an expected overlap of ``k s``); soft
Dice ``2 P s / (P + |lesion|)``. IoU and the box metrics have no exact shuffled expectation and get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from radsight.metrics.attention import attribution_share
from radsight.metrics.bootstrap import json_float, mean_with_ci, ratio_with_ci
from radsight.metrics.maps import (
    BoolArray,
    FloatArray,
    MapLike,
    as_array,
    as_map,
    as_mask,
    minmax,
    resize_map,
)

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)  # the grid searched for the best threshold
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


class Boxes(NamedTuple):
    """Box annotations (N x 4, xyxy pixels) of a frame of ``size`` = (height, width)."""

    boxes: ArrayLike
    size: tuple[int, int]


Annotation = MapLike | Boxes


def boxes_to_mask(boxes: ArrayLike, size: tuple[int, int]) -> BoolArray:
    """The pixels of a ``size`` frame whose centres lie inside any of the boxes."""
    rows, cols = np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5
    mask = np.zeros((int(size[0]), int(size[1])), dtype=bool)
    for x1, y1, x2, y2 in as_array(boxes).reshape(-1, 4):
        mask |= ((rows >= y1) & (rows <= y2))[:, None] & ((cols >= x1) & (cols <= x2))[None, :]
    return mask


def component_boxes(mask: BoolArray) -> FloatArray:
    """One enclosing xyxy box per 8-connected component of a binary mask, (K, 4)."""
    labelled, _ = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    slices = ndimage.find_objects(labelled)
    return np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], dtype=np.float64
    ).reshape(-1, 4)


def _ground_truth(annotation: Annotation) -> tuple[BoolArray, FloatArray]:
    """The lesion mask and its boxes (given boxes, or the mask's components)."""
    if isinstance(annotation, Boxes):
        mask = as_mask(boxes_to_mask(annotation.boxes, annotation.size), "ground-truth boxes' mask")
        return mask, as_array(annotation.boxes).reshape(-1, 4)
    mask = as_mask(annotation)
    return mask, component_boxes(mask)


def dice(pred: MapLike, target: MapLike) -> float:
    """Dice = 2|P∩T| / (|P| + |T|) of two binary masks of one frame."""
    p, t = as_map(pred) != 0, as_mask(target)
    return float(2 * np.sum(p & t) / (p.sum() + t.sum()))


def iou(pred: MapLike, target: MapLike) -> float:
    """Intersection over union |P∩T| / |P∪T| of two binary masks of one frame."""
    p, t = as_map(pred) != 0, as_mask(target)
    return float(np.sum(p & t) / np.sum(p | t))


def _in_frame(saliency: MapLike, annotation: Annotation) -> tuple[FloatArray, BoolArray, FloatArray]:
    """The map resized to the annotation's frame, the lesion mask and the ground-truth boxes."""
    mask, truth = _ground_truth(annotation)
    return resize_map(saliency, mask.shape), mask, truth


def _overlap(
    values: FloatArray, mask: BoolArray, thresholds: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Dice, IoU and Dice's shuffled-map chance level at each threshold of the normalised map."""
    normalised = minmax(values)
    t = np.asarray(thresholds, dtype=np.float64)
    everywhere, inside = np.sort(normalised, axis=None), np.sort(normalised[mask])
    predicted = everywhere.size - np.searchsorted(everywhere, t, side="left")
    hit = inside.size - np.searchsorted(inside, t, side="left")
    union = predicted + inside.size
    chance = 2 * predicted * inside.size / (everywhere.size * union)
    return 2 * hit / union, hit / (union - hit), chance


def _soft_dice(values: FloatArray, mask: BoolArray) -> tuple[float, float]:
    """Soft Dice and its shuffled-map chance level."""
    p = minmax(values)
    total, lesion = p.sum(), mask.sum()
    return float(2 * p[mask].sum() / (total + lesion)), float(2 * total * mask.mean() / (total + lesion))


def _pointing(values: FloatArray, mask: BoolArray, tolerance: float) -> tuple[float, float]:
    """Pointing game and its chance level (the share of the image within ``tolerance`` of the lesion)."""
    if tolerance > 0:
        mask = ndimage.distance_transform_edt(~mask) <= tolerance
    peaks = values == values.max()
    return float(np.sum(peaks & mask) / np.sum(peaks)), float(mask.mean())


def _energy(values: FloatArray, mask: BoolArray) -> float:
    share = attribution_share(values, mask)
    return 0.0 if np.isnan(share) else share


def _box_matches(values: FloatArray, truth: FloatArray, threshold: float) -> FloatArray:
    predicted = component_boxes(minmax(values) >= threshold)
    if predicted.size == 0:
        return np.zeros(len(truth))
    return box_iou(truth, predicted).max(axis=1)


def overlap_at_thresholds(
    saliency: MapLike, annotation: Annotation, thresholds: ArrayLike = THRESHOLDS
) -> tuple[FloatArray, FloatArray]:
    """Dice and IoU of the normalised map binarised at each threshold, from one sort of the map."""
    values, mask, _ = _in_frame(saliency, annotation)
    return _overlap(values, mask, thresholds)[:2]


def dice_iou(saliency: MapLike, annotation: Annotation, threshold: float = 0.5) -> tuple[float, float]:
    """Dice and IoU of the min-max normalised map binarised at ``threshold``."""
    d, i = overlap_at_thresholds(saliency, annotation, [threshold])
    return float(d[0]), float(i[0])


def best_threshold_overlap(
    saliency: MapLike, annotation: Annotation, thresholds: ArrayLike = THRESHOLDS
) -> dict[str, float]:
    """Best Dice and IoU over a threshold grid, and the threshold (one: IoU = Dice / (2 - Dice))."""
    d, i = overlap_at_thresholds(saliency, annotation, thresholds)
    best = int(np.argmax(d))
    return {"dice": float(d[best]), "iou": float(i[best]), "threshold": float(np.asarray(thresholds)[best])}


def soft_dice(saliency: MapLike, annotation: Annotation) -> float:
    """2 Σ p·g / (Σ p + Σ g) with p the min-max normalised map: Dice without a threshold."""
    values, mask, _ = _in_frame(saliency, annotation)
    return _soft_dice(values, mask)[0]


def pointing_game(saliency: MapLike, annotation: Annotation, tolerance: float = 0.0) -> float:
    """1 when the map's maximum lies in the lesion (or within ``tolerance`` pixels of it), else 0.

    Tied maxima score the share of them that hit, i.e. the expected hit under random tie-breaking, so a
    constant map does not hit by accident.
    """
    values, mask, _ = _in_frame(saliency, annotation)
    return _pointing(values, mask, tolerance)[0]


def energy_pointing_game(saliency: MapLike, annotation: Annotation) -> float:
    """Share of the map's positive mass inside the lesion (Score-CAM's energy-based pointing game).

    A map with no positive mass points nowhere, so it scores 0 (a miss), like an empty Dice prediction.
    """
    values, mask, _ = _in_frame(saliency, annotation)
    return _energy(values, mask)


def boxes_from_map(
    saliency: MapLike, threshold: float = 0.5, size: tuple[int, int] | None = None
) -> FloatArray:
    """Boxes around the connected regions of the normalised map at ``threshold``, in ``size``'s frame."""
    values = as_map(saliency) if size is None else resize_map(saliency, size)
    return component_boxes(minmax(values) >= threshold)


def box_iou(boxes_a: ArrayLike, boxes_b: ArrayLike) -> FloatArray:
    """Pairwise IoU (N, M) of two sets of xyxy boxes."""
    a, b = as_array(boxes_a).reshape(-1, 4), as_array(boxes_b).reshape(-1, 4)
    width = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    height = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def box_matches(saliency: MapLike, annotation: Annotation, threshold: float = 0.5) -> FloatArray:
    """For each ground-truth box, the best IoU of a box extracted from the map (0 when none is)."""
    values, _, truth = _in_frame(saliency, annotation)
    return _box_matches(values, truth, threshold)


def box_hit_rate(
    saliency: MapLike, annotation: Annotation, threshold: float = 0.5, iou_threshold: float = 0.5
) -> float:
    """Share of ground-truth boxes matched by an extracted box with IoU >= ``iou_threshold``."""
    return float(np.mean(box_matches(saliency, annotation, threshold) >= iou_threshold))


def localization_section(
    maps: Sequence[MapLike],
    annotations: Sequence[Annotation],
    *,
    patient_ids: Sequence | ArrayLike | None = None,
    threshold: float = 0.5,
    thresholds: ArrayLike = THRESHOLDS,
    tolerance: float = 0.0,
    box_iou_threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The metrics.json "localization" section: means over images (box metrics pooled over ground-truth
    boxes), each with a patient-bootstrap 95% CI when patient ids are given.

    ``dice_best`` / ``iou_best`` use the one grid threshold that maximises the mean over the whole set
    (reported as ``*_best_threshold``, held fixed across resamples), not a per-image oracle. Pass only
    images that have a lesion annotation: an empty one raises ValueError rather than scoring 0 or 1.
    ``*_chance`` are the chance levels of the module docstring, on the same annotations.
    """
    if len(maps) != len(annotations):
        raise ValueError(f"{len(maps)} maps for {len(annotations)} annotations")
    if len(maps) == 0:
        raise ValueError("no maps to evaluate")
    grid = np.asarray(thresholds, dtype=np.float64)
    dices, ious, dice_chances, soft, pointing, energy, box_ious = [], [], [], [], [], [], []
    for saliency, annotation in zip(maps, annotations, strict=True):
        values, mask, truth = _in_frame(saliency, annotation)
        d, i, chance = _overlap(values, mask, np.r_[threshold, grid])
        dices.append(d)
        ious.append(i)
        dice_chances.append(chance)
        soft.append(_soft_dice(values, mask))
        pointing.append(_pointing(values, mask, tolerance))
        energy.append((_energy(values, mask), float(mask.mean())))
        box_ious.append(_box_matches(values, truth, threshold))
    dice_table, iou_table, chance_table = np.array(dices), np.array(ious), np.array(dice_chances)
    soft_table, pointing_table, energy_table = np.array(soft), np.array(pointing), np.array(energy)
    n_boxes = [m.size for m in box_ious]
    boot = {"patient_ids": patient_ids, "n_boot": n_boot, "seed": seed}
    section: dict = {
        "n_images": len(maps),
        "n_boxes": int(sum(n_boxes)),
        "threshold": float(threshold),
        **mean_with_ci("dice_at_threshold", dice_table[:, 0], **boot),
        "dice_at_threshold_chance": float(chance_table[:, 0].mean()),
        **mean_with_ci("iou_at_threshold", iou_table[:, 0], **boot),
    }
    best = 1 + int(np.argmax(dice_table[:, 1:].mean(axis=0)))
    section |= mean_with_ci("dice_best", dice_table[:, best], **boot)
    section["dice_best_threshold"] = float(grid[best - 1])
    section["dice_best_chance"] = float(chance_table[:, best].mean())
    best_iou = 1 + int(np.argmax(iou_table[:, 1:].mean(axis=0)))
    section |= mean_with_ci("iou_best", iou_table[:, best_iou], **boot)
    section["iou_best_threshold"] = float(grid[best_iou - 1])
    section |= mean_with_ci("soft_dice", soft_table[:, 0], **boot)
    section["soft_dice_chance"] = float(soft_table[:, 1].mean())
    section |= mean_with_ci("pointing_game", pointing_table[:, 0], **boot)
    section["pointing_game_chance"] = float(pointing_table[:, 1].mean())
    section["pointing_tolerance_px"] = float(tolerance)
    section |= mean_with_ci("energy_pointing_game", energy_table[:, 0], **boot)
    section["energy_pointing_game_chance"] = float(energy_table[:, 1].mean())
    section |= ratio_with_ci("box_iou", [m.sum() for m in box_ious], n_boxes, **boot)
    hits = [np.sum(m >= box_iou_threshold) for m in box_ious]
    section |= ratio_with_ci("box_hit_rate", hits, n_boxes, **boot)
    section["box_hit_iou_threshold"] = json_float(box_iou_threshold)
    return section
