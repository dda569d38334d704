"""Localization metrics: hand-computed cases, torchmetrics / torchvision references, the section."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_f1_score, binary_jaccard_index
from torchmetrics.functional.segmentation import dice_score
from torchvision.ops import box_iou as torchvision_box_iou

from radsight.metrics.localization import (
    Boxes,
    best_threshold_overlap,
    box_hit_rate,
    box_iou,
    box_matches,
    boxes_from_map,
    boxes_to_mask,
    component_boxes,
    dice,
    dice_iou,
    energy_pointing_game,
    iou,
    localization_section,
    overlap_at_thresholds,
    pointing_game,
    soft_dice,
)


def square_mask(size: int = 8, rows: slice = slice(0, 4), cols: slice = slice(0, 4)) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, cols] = True
    return mask


def test_boxes_to_mask_covers_pixel_centres():
    mask = boxes_to_mask([[1, 2, 4, 5]], (6, 6))
    assert mask.sum() == 9 and mask[2:5, 1:4].all()
    assert boxes_to_mask(np.zeros((0, 4)), (4, 4)).sum() == 0


def test_component_boxes_round_trip():
    boxes = np.array([[1, 2, 4, 5], [6, 0, 9, 3]], dtype=float)
    found = component_boxes(boxes_to_mask(boxes, (10, 10)))
    np.testing.assert_array_equal(found[np.argsort(found[:, 0])], boxes)


def test_dice_and_iou_hand_computed():
    pred, target = (
        square_mask(rows=slice(0, 2), cols=slice(0, 4)),
        square_mask(rows=slice(1, 3), cols=slice(0, 4)),
    )
    # |P| = |T| = 8, overlap 4: Dice 8/16, IoU 4/12
    assert dice(pred, target) == pytest.approx(0.5)
    assert iou(pred, target) == pytest.approx(1 / 3)


def test_dice_and_iou_match_torchmetrics_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, target = rng.random((32, 32)) < 0.3, rng.random((32, 32)) < 0.4
        p, t = torch.from_numpy(pred).long(), torch.from_numpy(target).long()
        reference = dice_score(
            p[None], t[None], num_classes=2, include_background=False, input_format="index"
        )
        assert dice(pred, target) == pytest.approx(float(reference))
        assert dice(pred, target) == pytest.approx(float(binary_f1_score(p, t)))
        assert iou(pred, target) == pytest.approx(float(binary_jaccard_index(p, t)))


def test_thresholded_overlap_matches_brute_force():
    rng = np.random.default_rng(1)
    saliency, mask = rng.random((16, 16)), rng.random((16, 16)) < 0.3
    grid = [0.1, 0.5, 0.9]
    dices, ious = overlap_at_thresholds(saliency, mask, grid)
    normalised = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    for t, d, i in zip(grid, dices, ious, strict=True):
        assert d == pytest.approx(dice(normalised >= t, mask))
        assert i == pytest.approx(iou(normalised >= t, mask))
    best = best_threshold_overlap(saliency, mask, grid)
    assert best["dice"] == pytest.approx(max(dices)) and best["threshold"] == grid[int(np.argmax(dices))]
    assert best["iou"] == pytest.approx(best["dice"] / (2 - best["dice"]))


def test_low_resolution_map_is_upsampled_bilinearly_to_the_mask():
    # [[1, 0], [0, 0]] upsampled x4 (half-pixel centres): along each axis 1, 1, .875, .625, .375, .125, 0, 0.
    # Products >= 0.5 fill the 4 x 4 quadrant except its inner corner (0.625^2 < 0.5): 15 of 16 pixels.
    d, i = dice_iou(np.array([[1.0, 0.0], [0.0, 0.0]]), square_mask(), threshold=0.5)
    assert d == pytest.approx(2 * 15 / (15 + 16))
    assert i == pytest.approx(15 / 16)


def test_soft_dice_hand_computed():
    mask = np.array([[1, 1, 0, 0]])
    assert soft_dice(np.array([[2.0, 1.5, 1.0, 1.0]]), mask) == pytest.approx(2 * 1.5 / (1.5 + 2))
    assert soft_dice(mask.astype(float), mask) == pytest.approx(1.0)


def test_pointing_game_with_tolerance_and_ties():
    mask = square_mask(rows=slice(0, 2), cols=slice(0, 2))
    saliency = np.zeros((8, 8))
    saliency[1, 1] = 1.0
    assert pointing_game(saliency, mask) == 1.0
    saliency = np.zeros((8, 8))
    saliency[1, 4] = 1.0  # 3 pixels right of the lesion's last column
    assert pointing_game(saliency, mask) == 0.0
    assert pointing_game(saliency, mask, tolerance=3) == 1.0
    assert pointing_game(saliency, mask, tolerance=2) == 0.0
    assert pointing_game(np.ones((8, 8)), mask) == pytest.approx(4 / 64)  # ties: expected hit


def test_energy_pointing_game_hand_computed():
    mask = np.array([[1, 0], [0, 0]])
    assert energy_pointing_game(np.array([[3.0, 1.0], [0.0, -5.0]]), mask) == pytest.approx(0.75)
    assert energy_pointing_game(-np.ones((2, 2)), mask) == 0.0  # no positive mass: a miss


def test_empty_ground_truth_raises():
    saliency = np.random.default_rng(0).random((8, 8))
    for metric in (dice_iou, soft_dice, pointing_game, energy_pointing_game, box_matches):
        with pytest.raises(ValueError, match="empty"):
            metric(saliency, np.zeros((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="empty"):
        dice_iou(saliency, Boxes(np.zeros((0, 4)), (8, 8)))
    with pytest.raises(ValueError, match="empty"):
        dice(saliency > 0.5, np.zeros((8, 8)))


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(2)
    corners = rng.random((2, 6, 2)) * 50
    a = np.c_[corners[0], corners[0] + rng.random((6, 2)) * 30 + 1]
    b = np.c_[corners[1], corners[1] + rng.random((6, 2)) * 30 + 1]
    reference = torchvision_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), reference)
    assert box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0, 0] == pytest.approx(2 / 6)


def test_boxes_from_map_and_hit_rate():
    saliency = np.zeros((16, 16))
    saliency[2:6, 3:9] = 1.0
    saliency[10:12, 10:12] = 0.8
    found = boxes_from_map(saliency, 0.5)
    assert sorted(found.tolist()) == [[3, 2, 9, 6], [10, 10, 12, 12]]
    truth = Boxes([[3, 2, 9, 6], [0, 12, 4, 16]], (16, 16))
    np.testing.assert_allclose(box_matches(saliency, truth), [1.0, 0.0])
    assert box_hit_rate(saliency, truth) == 0.5
    # a 32 x 32 annotation frame: the map is upsampled and the boxes found in that frame
    assert boxes_from_map(saliency, 0.5, (32, 32)).max() <= 32


def test_localization_section():
    rng = np.random.default_rng(3)
    maps = [rng.random((8, 8)) for _ in range(6)]
    masks = [square_mask(16, slice(2, 8), slice(4, 12)) for _ in range(3)]
    annotations = [*masks, *[Boxes([[1, 1, 6, 6], [9, 9, 15, 14]], (16, 16))] * 3]
    patients = ["a", "a", "b", "c", "c", "d"]
    section = localization_section(maps, annotations, patient_ids=patients, n_boot=200)
    expected = np.mean([dice_iou(m, a)[0] for m, a in zip(maps, annotations, strict=True)])
    assert section["dice_at_threshold"] == pytest.approx(expected)
    assert (
        section["dice_at_threshold_ci_low"]
        <= section["dice_at_threshold"]
        <= section["dice_at_threshold_ci_high"]
    )
    assert section["n_boxes"] == 3 + 6
    assert section["dice_best"] >= section["dice_at_threshold"]
    assert section["dice_best_threshold"] in np.round(np.arange(0.05, 1.0, 0.05), 2)
    hits = sum(np.sum(box_matches(m, a) >= 0.5) for m, a in zip(maps, annotations, strict=True))
    assert section["box_hit_rate"] == pytest.approx(hits / 9)
    no_ids = localization_section(maps, annotations)
    assert (
        no_ids["dice_at_threshold_ci_low"] is None
        and no_ids["dice_at_threshold"] == section["dice_at_threshold"]
    )
    with pytest.raises(ValueError, match="6 maps for 5"):
        localization_section(maps, annotations[:5])


def test_chance_levels_hand_computed():
    # a 2 x 2 lesion in an 8 x 8 frame (share 4/64); the map marks a 4 x 4 block elsewhere (16 pixels)
    mask = square_mask(rows=slice(0, 2), cols=slice(0, 2))
    saliency = np.zeros((8, 8))
    saliency[4:, 4:] = 1.0
    section = localization_section([saliency], [mask], tolerance=1.0)
    # shuffled, 16 marked pixels overlap the lesion by 16 * 4/64 = 1 on average: Dice 2 * 1 / (16 + 4)
    assert section["dice_at_threshold_chance"] == pytest.approx(0.1)
    assert section["soft_dice_chance"] == pytest.approx(2 * 16 * (4 / 64) / (16 + 4))
    assert section["energy_pointing_game_chance"] == pytest.approx(4 / 64)
    # within 1 pixel of the lesion: its 4 pixels, 2 below and 2 to the right
    assert section["pointing_game_chance"] == pytest.approx(8 / 64)
    assert section["pointing_game"] == 0.0 and section["dice_at_threshold"] == 0.0


def test_chance_levels_are_the_mean_score_of_shuffled_maps():
    rng = np.random.default_rng(5)
    saliency, mask = rng.random((12, 12)) ** 3, square_mask(12, slice(2, 6), slice(3, 8))
    section = localization_section([saliency], [mask], thresholds=[0.3])
    shuffled = [rng.permutation(saliency.ravel()).reshape(12, 12) for _ in range(4000)]
    assert section["dice_at_threshold_chance"] == pytest.approx(
        np.mean([dice_iou(s, mask)[0] for s in shuffled]), abs=0.005
    )
    assert section["dice_best_chance"] == pytest.approx(
        np.mean([dice_iou(s, mask, threshold=0.3)[0] for s in shuffled]), abs=0.005
    )
    assert section["soft_dice_chance"] == pytest.approx(
        np.mean([soft_dice(s, mask) for s in shuffled]), abs=0.005
    )
    assert section["pointing_game_chance"] == pytest.approx(
        np.mean([pointing_game(s, mask) for s in shuffled]), abs=0.02
    )
    assert section["energy_pointing_game_chance"] == pytest.approx(
        np.mean([energy_pointing_game(s, mask) for s in shuffled]), abs=0.005
    )
