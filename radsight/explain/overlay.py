"""Pictures a radiologist can check: saliency over the gray image with boxes, mask contours and gaze.

Drawing is done in numpy and PIL (no figure machinery), so thousands of overlays stay cheap.
Colours: the saliency map through a perceptually uniform colormap (``inferno`` by default: brightness
grows with the value, so the picture reads the same in gray), its opacity growing from nothing at
:data:`LOW_ATTENTION` of the map's scale to ``alpha`` at its peak, so the film shows through wherever
the model pays little attention; boxes in ``box_color`` with their label on a filled tag; each named mask
as a contour in its own colour (``MASK_COLORS`` in name order); the gaze map as contours at 25/50/75 % of
its peak in ``GAZE_COLOR``; fixations as ``FIXATION_COLOR`` dots growing with duration. A colour bar in
the bottom-left corner says what the map's colours mean: "0 ... max" for maps divided by their maximum
(what explanations return by default), "min ... max" for min-max rescaled ones; its first part is gray,
as the film shows where the map is transparent. Text is sized to the picture (:func:`label_font`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from radsight.atomic import atomic_write
from radsight.explain.names import NORMALISATIONS, Normalisation

ArrayLike = np.ndarray | torch.Tensor
Color = tuple[int, int, int]

BOX_COLOR: Color = (0, 255, 0)
GAZE_COLOR: Color = (0, 255, 255)
FIXATION_COLOR: Color = (255, 255, 0)
MASK_COLORS: tuple[Color, ...] = ((255, 0, 255), (255, 128, 0), (0, 128, 255), (255, 255, 255))
GAZE_LEVELS = (0.25, 0.5, 0.75)
LEGEND_ENDS: dict[str, tuple[str, str]] = {"max": ("0", "max"), "minmax": ("min", "max")}
COLORMAP = "inferno"
LOW_ATTENTION = 0.2
"""Map values up to this share of the scale are not drawn; above it the opacity rises linearly."""
DISPLAY_MIN_SIDE = 256
"""The short side small images are enlarged to in the overlays of reports and curves (``min_side``)."""
NO_MAP_GRAY: Color = (128, 128, 128)
"""The colour bar's colour for the transparent part of the scale."""


def overlay(
    image: ArrayLike,
    map: ArrayLike | None = None,
    *,
    boxes: ArrayLike | None = None,
    box_labels: Sequence[str] | None = None,
    masks: Mapping[str, ArrayLike] | None = None,
    fixations: ArrayLike | None = None,
    gaze_map: ArrayLike | None = None,
    title: str | None = None,
    cmap: str = COLORMAP,
    alpha: float = 0.6,
    box_color: Color = BOX_COLOR,
    map_scale: Normalisation | None = "max",
    min_side: int = 0,
) -> np.ndarray:
    """Render ``H x W x 3`` uint8: the gray ``image`` (H x W or 1 x H x W, in [0, 1]) and its annotations.

    ``map`` is a saliency map in [0, 1] (as :func:`radsight.explain.cam.explain` returns), resized to
    the image if needed (bicubically); ``alpha`` is its opacity at its peak (see :func:`heat_rgba`);
    ``boxes`` are N x 4 xyxy pixels; ``masks`` H x W bool; ``fixations`` N x 3
    (x, y, duration in seconds); ``gaze_map`` any non-negative density. ``map_scale`` names how ``map``
    was normalised (see :data:`radsight.explain.names.NORMALISATIONS`) for the colour-bar legend drawn
    with it; None draws no legend. An image whose short side is under ``min_side`` is drawn enlarged to
    it (a whole factor, boxes and fixations scaled alike), so that a 48-pixel training image's title,
    legend and contours can be read.
    """
    if map_scale is not None and map_scale not in NORMALISATIONS:
        raise ValueError(f"unknown map scale {map_scale!r}; choose one of {', '.join(NORMALISATIONS)}")
    gray = np.clip(_plane(image), 0.0, 1.0)
    factor = -(-min_side // min(gray.shape)) if min(gray.shape) < min_side else 1
    if factor > 1:
        gray = _plane(gray, (gray.shape[0] * factor, gray.shape[1] * factor))
    size = gray.shape
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if map is not None:
        heat = heat_rgba(_plane(map, size), cmap)
        opacity = alpha * heat[..., 3:]
        rgb = (1 - opacity) * rgb + opacity * heat[..., :3]
    canvas = np.round(rgb * 255).astype(np.uint8)
    width = max(1, round(min(size) / 256))
    for (_, mask), color in zip(sorted((masks or {}).items()), cycle(MASK_COLORS), strict=False):
        canvas[_contour(_plane(mask, size, nearest=True) > 0.5, width)] = color
    if gaze_map is not None:
        density = _plane(gaze_map, size)
        peak = float(density.max())
        for level in GAZE_LEVELS if peak > 0 else ():
            canvas[_contour(density >= level * peak, width)] = GAZE_COLOR
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = label_font(size)
    for i, box in enumerate(_rows(boxes, 4)):
        x0, y0, x1, y1 = (round(float(v) * factor) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=box_color, width=width)
        if box_labels is not None and i < len(box_labels):
            _tag(draw, (x0, y0), box_labels[i], font, fill=box_color, text=(0, 0, 0), above=True)
    radius = max(2, round(min(size) / 128))
    for x, y, duration in _rows(fixations, 3):
        x, y, r = x * factor, y * factor, radius * (1 + min(float(duration), 1.0))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=FIXATION_COLOR, outline=(0, 0, 0))
    if title:
        _tag(draw, (0, 0), title, font, fill=(0, 0, 0), text=(255, 255, 255), above=False)
    if map is not None and map_scale is not None:
        _legend(draw, size, LEGEND_ENDS[map_scale], font, cmap)
    return np.asarray(picture)


def heat_rgba(heat: np.ndarray, cmap: str = COLORMAP) -> np.ndarray:
    """``H x W x 4`` floats in [0, 1]: the map's colours and its opacity (0 up to :data:`LOW_ATTENTION`,
    rising linearly to 1 at the map's top), the one colouring of overlays and of the web viewer."""
    values = np.clip(heat, 0.0, 1.0)
    rgba = colormaps[cmap](values)
    rgba[..., 3] = np.clip((values - LOW_ATTENTION) / (1 - LOW_ATTENTION), 0.0, 1.0)
    return rgba


def label_font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own scalable font at about a fortieth of the picture's short side (at least 12 px), so
    labels stay legible on a 128-pixel phantom and on a 3000-pixel film alike."""
    return ImageFont.load_default(size=max(12, round(min(size) / 40)))


def save_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    titles: Sequence[str] | None = None,
    *,
    gap: int = 4,
    max_cell_side: int = 512,
) -> Path:
    """Write a PNG grid, one row per case (e.g. image / map / ground truth), ``titles`` over the columns.

    Cells are ``H x W x 3`` uint8 or gray ``H x W`` in [0, 1]; rows may be ragged and cells of unequal
    size are placed top-left in cells as large as the largest. Cells larger than ``max_cell_side`` are
    shrunk to it (a grid of full-resolution mammograms would weigh tens of megabytes).
    """
    tiles = [[_shrink(_rgb(cell), max_cell_side) for cell in row] for row in rows]
    if not any(tiles):
        raise ValueError("save_grid needs at least one picture")
    cell_h = max(t.shape[0] for row in tiles for t in row)
    cell_w = max(t.shape[1] for row in tiles for t in row)
    columns = max(max(len(row) for row in tiles), len(titles or ()))
    font = label_font((cell_h, cell_w))
    band = font.getbbox("Ag")[3] + 2 * gap if titles else 0
    grid = Image.new(
        "RGB", (columns * (cell_w + gap) + gap, band + len(tiles) * (cell_h + gap) + gap), (0, 0, 0)
    )
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(titles or ()):
        draw.text((gap + c * (cell_w + gap), gap), name, fill=(255, 255, 255), font=font)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            grid.paste(Image.fromarray(tile), (gap + c * (cell_w + gap), band + gap + r * (cell_h + gap)))
    path = Path(path)
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))
    return path


def _shrink(tile: np.ndarray, max_side: int) -> np.ndarray:
    """``tile`` scaled down so its long side is at most ``max_side`` (unchanged if already small)."""
    scale = max_side / max(tile.shape[:2])
    if scale >= 1:
        return tile
    size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
    return np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.LANCZOS))


def _plane(values: ArrayLike, size: tuple[int, int] | None = None, *, nearest: bool = False) -> np.ndarray:
    """A float32 H x W array (leading singleton axes dropped), resized to ``size`` if it differs."""
    tensor = torch.as_tensor(np.asarray(values.detach().cpu() if torch.is_tensor(values) else values))
    tensor = tensor.float()
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 2:
        raise ValueError(f"expected an H x W plane, got shape {tuple(tensor.shape)}")
    if size is not None and tuple(tensor.shape) != tuple(size):
        if nearest:
            tensor = F.interpolate(tensor[None, None], size=size, mode="nearest")[0, 0]
        else:  # bicubic overshoots a little: kept within the plane's own range
            smooth = F.interpolate(tensor[None, None], size=size, mode="bicubic", align_corners=False)[0, 0]
            tensor = smooth.clamp(float(tensor.min()), float(tensor.max()))
    return tensor.numpy()


def _rows(values: ArrayLike | None, columns: int) -> np.ndarray:
    """N x columns float rows of boxes or fixations; none when absent."""
    if values is None:
        return np.zeros((0, columns))
    array = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
    return array.reshape(-1, columns)


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` of its edge (the image border counts as an edge)."""
    inner = mask
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _tag(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    label: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    *,
    fill: Color,
    text: Color,
    above: bool,
) -> None:
    """Label on a filled background, above ``at`` when there is room (not over the box edge it names)."""
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    w, h = right - left + 2, bottom - top + 2
    x, y = at
    if above and y - h >= 0:
        y -= h
    draw.rectangle((x, y, x + w, y + h), fill=fill)
    draw.text((x + 1 - left, y + 1 - top), label, fill=text, font=font)


def _legend(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    ends: tuple[str, str],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    cmap: str,
) -> None:
    """``low [colour bar] high`` on a black tag in the bottom-left corner; the bar is gray over the
    transparent part of the scale (up to :data:`LOW_ATTENTION`)."""
    boxes = [draw.textbbox((0, 0), label, font=font) for label in ends]
    height = max(bottom for _, _, _, bottom in boxes) + 4
    bar = max(32, size[1] // 5)
    widths = [right - left for left, _, right, _ in boxes]
    pad = max(2, height // 6)
    top = size[0] - height
    draw.rectangle((0, top, widths[0] + bar + widths[1] + 4 * pad, size[0] - 1), fill=(0, 0, 0))
    draw.text((pad - boxes[0][0], top + 2), ends[0], fill=(255, 255, 255), font=font)
    start = widths[0] + 2 * pad
    values = np.linspace(0.0, 1.0, bar)
    for i, (value, rgba) in enumerate(zip(values, colormaps[cmap](values), strict=True)):
        color = NO_MAP_GRAY if value <= LOW_ATTENTION else tuple(round(c * 255) for c in rgba[:3])
        draw.line((start + i, top + pad, start + i, size[0] - 1 - pad), fill=color)
    draw.text((start + bar + pad - boxes[1][0], top + 2), ends[1], fill=(255, 255, 255), font=font)


def _rgb(cell: np.ndarray) -> np.ndarray:
    """A grid cell as H x W x 3 uint8: colour pictures pass through, gray planes in [0, 1] are scaled."""
    array = np.asarray(cell)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return array
    gray = np.round(np.clip(_plane(array.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)
