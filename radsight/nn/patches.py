"""Saliency-guided patches: pick the most salient windows of a coarse map, crop them, paste maps back.

A high-resolution model cannot afford a fine look everywhere, so it looks closely only where its coarse
map points (GLAM, GMIC). Windows are chosen greedily per class: the window whose cells sum to the most
saliency is taken, its cells are suppressed, and the next one is taken. Each window becomes a box of
exactly the patch size in input pixels, centred on the window and shifted to lie inside the image.

Boxes are ``xyxy`` in input pixels with integer values, so crops are exact slices and a box scales onto
any coarser grid by the grid's ratio to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def window_cells(
    map_size: tuple[int, int], image_size: tuple[int, int], patch_size: tuple[int, int]
) -> tuple[int, int]:
    """How many map cells (rows, columns) a patch covers: the window that is summed on the map."""
    return tuple(  # type: ignore[return-value]
        min(m, max(1, round(p * m / i))) for m, i, p in zip(map_size, image_size, patch_size, strict=True)
    )


def select_patches(
    saliency: Tensor, image_size: tuple[int, int], patch_size: tuple[int, int], per_class: int = 1
) -> Tensor:
    """Boxes ``B x (K * per_class) x 4`` of the most salient patches, class by class.

    ``saliency`` is ``B x K x h x w`` (non-negative, e.g. sigmoid maps) covering an image of
    ``image_size`` = (H, W). The boxes of class ``k`` are rows ``k * per_class ...`` of the result.
    """
    height, width = image_size
    patch_h, patch_w = patch_size
    if patch_h > height or patch_w > width:
        raise ValueError(f"patch {patch_size} does not fit in an image of {image_size}")
    batch, classes, map_h, map_w = saliency.shape
    win_h, win_w = window_cells((map_h, map_w), image_size, patch_size)
    cell_h, cell_w = height / map_h, width / map_w
    work = saliency.detach().float().clone()
    floor = work.amin(dim=(2, 3), keepdim=True)
    boxes = torch.empty(batch, classes, per_class, 4, device=saliency.device)
    for step in range(per_class):
        sums = F.avg_pool2d(work, (win_h, win_w), stride=1)  # mean over each window position
        flat = sums.flatten(2).argmax(dim=2)  # B x K
        top, left = flat // sums.shape[-1], flat % sums.shape[-1]
        centre_y = (top.float() + win_h / 2) * cell_h
        centre_x = (left.float() + win_w / 2) * cell_w
        y0 = (centre_y - patch_h / 2).round().clamp(0, height - patch_h)
        x0 = (centre_x - patch_w / 2).round().clamp(0, width - patch_w)
        boxes[:, :, step] = torch.stack([x0, y0, x0 + patch_w, y0 + patch_h], dim=-1)
        rows = torch.arange(map_h, device=work.device)
        cols = torch.arange(map_w, device=work.device)
        inside_rows = (rows >= top[..., None]) & (rows < top[..., None] + win_h)  # B x K x h
        inside_cols = (cols >= left[..., None]) & (cols < left[..., None] + win_w)  # B x K x w
        taken = inside_rows[..., :, None] & inside_cols[..., None, :]
        work = torch.where(taken, floor, work)
    return boxes.reshape(batch, classes * per_class, 4)


def crop_patches(images: Tensor, boxes: Tensor) -> Tensor:
    """``(B * N) x C x ph x pw`` crops of ``images`` (B x C x H x W) at integer ``boxes`` (B x N x 4)."""
    crops = []
    for image, image_boxes in zip(images, boxes.long().tolist(), strict=True):
        crops += [image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in image_boxes]
    return torch.stack(crops)


def paste_maps(
    patch_maps: Tensor, boxes: Tensor, image_size: tuple[int, int], out_size: tuple[int, int]
) -> Tensor:
    """Reassemble patch maps into one ``B x K x out_h x out_w`` map of the whole image.

    ``patch_maps`` is ``(B * N) x K x h x w``, one per box of ``boxes`` (B x N x 4, input pixels of an
    ``image_size`` image). Each map is resized bilinearly onto its box scaled to ``out_size``; where
    patches overlap the larger value wins, and outside every patch the map is 0 (not looked at).
    Differentiable with respect to ``patch_maps``.
    """
    batch, count = boxes.shape[:2]
    scale_y, scale_x = out_size[0] / image_size[0], out_size[1] / image_size[1]
    canvas = patch_maps.new_zeros(batch, patch_maps.shape[1], *out_size)
    scale = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y], dtype=torch.float64)
    grid_boxes = (boxes.detach().double() * scale).round().long()
    for index, (x0, y0, x1, y1) in enumerate(grid_boxes.reshape(-1, 4).tolist()):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        resized = F.interpolate(patch_maps[index : index + 1], size=(y1 - y0, x1 - x0), mode="bilinear")
        b = index // count
        region = canvas[b : b + 1, :, y0:y1, x0:x1]
        canvas[b : b + 1, :, y0:y1, x0:x1] = torch.maximum(region.clone(), resized)
    return canvas
