"""Overlays draw each annotation where it belongs, in its documented colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from radsight.explain.overlay import (
    BOX_COLOR,
    FIXATION_COLOR,
    GAZE_COLOR,
    LOW_ATTENTION,
    MASK_COLORS,
    NO_MAP_GRAY,
    overlay,
    save_grid,
)


def gray_image() -> np.ndarray:
    return np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))


def test_plain_image_is_gray_and_map_is_blended_where_attention_is_high() -> None:
    image = gray_image()
    plain = overlay(image)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain[5, 32], [round(image[5, 32] * 255)] * 3)
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[:16, :16], heat[:16, 40:] = 1.0, 0.6
    blended = overlay(torch.from_numpy(image)[None], torch.from_numpy(heat), alpha=0.5, map_scale=None)
    assert blended.shape == (64, 64, 3) and blended.dtype == np.uint8
    hot = np.array(colormaps["inferno"](1.0)[:3])  # the default map: perceptually uniform
    np.testing.assert_allclose(blended[8, 8], np.round((0.5 * image[8, 8] + 0.5 * hot) * 255), atol=1)
    # 0.6 is half-way from LOW_ATTENTION (0.2) to the top: half the peak opacity
    warm = np.array(colormaps["inferno"](0.6)[:3])
    np.testing.assert_allclose(blended[8, 50], np.round((0.75 * image[8, 50] + 0.25 * warm) * 255), atol=1)
    np.testing.assert_array_equal(blended[40:, :], plain[40:, :])  # no attention: the film as it is
    low = heat.copy()
    low[:16, :16] = LOW_ATTENTION
    np.testing.assert_array_equal(overlay(image, low, map_scale=None)[:16, :16], plain[:16, :16])


def test_a_coarse_map_is_upsampled_smoothly() -> None:
    image = np.full((256, 256), 0.5, dtype=np.float32)
    coarse = np.zeros((8, 8), dtype=np.float32)
    coarse[:, 4:] = 1.0  # a hard edge between two cells
    row = overlay(image, coarse, map_scale=None)[128].astype(int)
    steps = np.abs(np.diff(row, axis=0)).max(axis=1)
    # nearest upsampling jumps the whole way in one pixel; here the edge spreads over many pixels
    assert steps.max() < 0.3 * np.abs(row[-1] - row[0]).max()
    assert len({tuple(pixel) for pixel in row}) > 20


def test_labels_grow_with_the_picture() -> None:
    def text_rows(side: int) -> int:
        out = overlay(np.full((side, side), 0.5, dtype=np.float32), title="nodule 0.91 (gradcam)")
        return int((out[: side // 4, : side // 2].min(axis=-1) > 200).any(axis=1).sum())

    assert text_rows(128) >= 8  # Pillow's 12-pixel font at least
    assert text_rows(1024) >= 1024 // 40 * 0.6  # about a fortieth of the short side


def test_box_outline_has_the_box_colour_and_leaves_the_inside() -> None:
    image = gray_image()
    box = torch.tensor([[10.0, 20.0, 40.0, 50.0]])
    out = overlay(image, image, boxes=box, box_labels=["nodule"], map_scale=None)  # no legend over it
    np.testing.assert_array_equal(out[35, 10], BOX_COLOR)  # left edge
    np.testing.assert_array_equal(out[50, 25], BOX_COLOR)  # bottom edge
    inside = overlay(image, image, map_scale=None)[35, 25]
    np.testing.assert_array_equal(out[35, 25], inside)  # inside untouched
    tag = out[5:20, 10:40]  # the label: dark text on a box-coloured tag just above the box
    assert (tag == BOX_COLOR).all(axis=-1).mean() > 0.3 and (tag[..., 1] < 64).any()


def test_mask_contours_gaze_contours_fixations_and_title() -> None:
    image = np.full((64, 64), 0.5, dtype=np.float32)
    lung = np.zeros((64, 64), dtype=bool)
    lung[16:36, 16:36] = True
    gaze = np.zeros((64, 64), dtype=np.float32)
    gaze[40:60, 40:60] = 1.0
    out = overlay(
        image,
        masks={"lung": lung},
        gaze_map=gaze / gaze.sum(),
        fixations=np.array([[20.0, 50.0, 0.4]]),
        title="case 1",
    )
    np.testing.assert_array_equal(out[16, 25], MASK_COLORS[0])  # top edge of the mask
    np.testing.assert_array_equal(out[25, 25], [128, 128, 128])  # mask interior untouched
    np.testing.assert_array_equal(out[40, 50], GAZE_COLOR)
    np.testing.assert_array_equal(out[50, 20], FIXATION_COLOR)  # fixation at x=20, y=50
    title = out[:12, :30]  # light text on a black tag over a mid-gray image
    assert (title == 0).all(axis=-1).mean() > 0.3 and title.min(axis=-1).max() > 200


def test_a_small_image_is_drawn_enlarged_with_its_annotations_in_place() -> None:
    image = np.full((48, 48), 0.5, dtype=np.float32)
    lung = np.zeros((48, 48), dtype=bool)
    lung[10:30, 10:30] = True
    box = np.array([[30.0, 5.0, 44.0, 20.0]])
    kwargs = {"masks": {"lung": lung}, "boxes": box, "fixations": np.array([[8.0, 40.0, 0.2]])}
    out = overlay(image, min_side=256, **kwargs)
    assert out.shape == (288, 288, 3)  # the whole factor 6 that reaches 256
    np.testing.assert_array_equal(out[10 * 6, 20 * 6], MASK_COLORS[0])  # top edge of the mask
    np.testing.assert_array_equal(out[20 * 6, 20 * 6], [128, 128, 128])  # mask interior untouched
    np.testing.assert_array_equal(out[12 * 6, 44 * 6], BOX_COLOR)  # right edge of the box
    np.testing.assert_array_equal(out[40 * 6, 8 * 6], FIXATION_COLOR)
    assert overlay(image, min_side=32, **kwargs).shape == (48, 48, 3)  # large enough already


def test_save_grid_writes_a_png_of_all_cells(tmp_path) -> None:
    image = gray_image()
    cells = [overlay(image), overlay(image, image), image > 0.5]
    path = save_grid([cells, cells[:2]], tmp_path / "grid" / "cases.png", titles=["image", "map", "truth"])
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.mode == "RGB"
        width, height = grid.size
        pixels = np.asarray(grid)
    assert width == 3 * (64 + 4) + 4
    band = height - (2 * (64 + 4) + 4)
    assert band > 0  # title band
    np.testing.assert_array_equal(pixels[band + 4 + 10, 4 + 2 * 68 + 50], [255, 255, 255])  # truth cell
    np.testing.assert_array_equal(pixels[band + 4 + 68 + 10, 4 + 2 * 68 + 50], [0, 0, 0])  # ragged: empty


def test_save_grid_shrinks_large_cells_keeping_their_aspect(tmp_path) -> None:
    large = np.zeros((2048, 1024, 3), dtype=np.uint8)
    large[:1024] = 255  # top half white: still the top half after shrinking
    path = save_grid([[large]], tmp_path / "grid.png", gap=0, max_cell_side=256)
    with Image.open(path) as grid:
        pixels = np.asarray(grid)
    assert pixels.shape == (256, 128, 3)
    assert pixels[:120].min() == 255 and pixels[136:].max() == 0


def test_legend_shows_the_colormap_and_names_the_map_scale() -> None:
    image = np.full((128, 128), 0.5, dtype=np.float32)
    heat = np.zeros((128, 128), dtype=np.float32)
    corner = (slice(110, 128), slice(0, 64))
    bare = overlay(image, heat, map_scale=None)
    assert (bare[corner] == bare[64, 64]).all()  # no legend asked: the blend only
    assert (overlay(image)[corner] == 128).all()  # no map: no legend
    peak, minmax = overlay(image, heat), overlay(image, heat, map_scale="minmax")
    colours = {tuple(pixel) for pixel in peak[corner].reshape(-1, 3)}
    # the bar is gray where the map is not drawn, then runs to the colormap's high end
    assert NO_MAP_GRAY in colours
    assert tuple(round(c * 255) for c in colormaps["inferno"](1.0)[:3]) in colours
    label_0, label_min = peak[110:128, :8], minmax[110:128, :8]
    assert (label_0 > 200).all(axis=-1).any() and not np.array_equal(label_0, label_min)
    np.testing.assert_array_equal(peak[:100], bare[:100])  # the legend stays in its corner
    with pytest.raises(ValueError, match="unknown map scale 'z'"):
        overlay(image, heat, map_scale="z")  # type: ignore[arg-type]
