"""Geometry that moves an image together with its boxes, masks and fixations, on torchvision v2.

Every transform here maps ``Sample -> Sample``. The image, the boxes (``BoundingBoxes``, XYXY), the
masks (one stacked ``Mask``) and the fixations (``KeyPoints``) go through one v2 call, so they share the
same random parameters. Coordinates are continuous pixels: column ``j`` covers ``[j, j + 1)``.

After each geometric step, boxes are clipped to the image and dropped with their labels when narrower
or shorter than one pixel; fixations outside the image are dropped. Randomness comes from torch's
global generator, so ``torch.manual_seed`` (and DataLoader worker seeding) makes it reproducible.
``GazeMap`` turns the fixations into ``sample.gaze_map``; put it after the geometry.

``sample.meta.geometry`` (a :class:`Geometry`) records how the image maps back to the file as stored,
so maps and boxes predicted in the model's frame can be drawn on the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from radsight.config import ResizeMode
from radsight.data.gaze import fixations_to_map
from radsight.data.pseudo_gaze import PseudoGaze
from radsight.data.sample import Sample
from radsight.errors import ConfigError, DataError

MIN_BOX_SIZE = 1.0
"""Boxes narrower or shorter than this many pixels after clipping are degenerate and dropped."""
PADDING_DIGITS = 6
"""Decimals of :meth:`Geometry.padding_share`."""


@dataclass(frozen=True)
class Geometry:
    """How the current image relates to the file as stored, for the axis-aligned steps of evaluation.

    A point ``(x, y)`` of the file lands at ``(m(x) * scale_x + left, y * scale_y + top)``, where
    ``m(x) = width - x`` when ``mirrored`` (``width`` of the file) and ``x`` otherwise. Breast alignment
    and the fitting steps of ``data.resize`` (letterbox, stretch, crop_center, crop_lungs: negative
    offsets are a crop) update it; a step it cannot express (a plain resize, pad, crop, affine) leaves
    it with ``invertible=False``, so a stale record can never map anything back.
    """

    original_size: tuple[int, int]
    size: tuple[int, int]
    scale_x: float = 1.0
    scale_y: float = 1.0
    left: float = 0.0
    top: float = 0.0
    mirrored: bool = False
    invertible: bool = True

    @classmethod
    def of(cls, sample: Sample) -> Geometry:
        """The sample's record; a sample without one is the file as stored."""
        return sample.meta.geometry or cls(original_size=sample.size, size=sample.size)

    def flipped(self) -> Geometry:
        """The record after mirroring the current image left-right (``x -> size_w - x``)."""
        left = self.size[1] - self.scale_x * self.original_size[1] - self.left
        return replace(self, mirrored=not self.mirrored, left=left)

    def scaled(
        self, scale_x: float, scale_y: float, left: float, top: float, size: tuple[int, int]
    ) -> Geometry:
        """The record after ``x -> x * scale_x + left`` (y likewise) onto an image of ``size``."""
        return replace(
            self,
            size=size,
            scale_x=self.scale_x * scale_x,
            scale_y=self.scale_y * scale_y,
            left=self.left * scale_x + left,
            top=self.top * scale_y + top,
        )

    def points_to_original(self, points: Tensor) -> Tensor:
        """``(..., 2)`` points (x, y) of the current image in the file's pixels."""
        self._check()
        points = torch.as_tensor(points, dtype=torch.float32).cpu()
        x = (points[..., 0] - self.left) / self.scale_x
        y = (points[..., 1] - self.top) / self.scale_y
        return torch.stack([self.original_size[1] - x if self.mirrored else x, y], dim=-1)

    def boxes_to_original(self, boxes: Tensor) -> Tensor:
        """``N x 4`` xyxy boxes of the current image in the file's pixels (still x0 <= x1)."""
        corners = self.points_to_original(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 2, 2))
        low, high = corners.min(dim=1).values, corners.max(dim=1).values
        return torch.cat([low, high], dim=1)

    def map_to_original(self, values: Tensor) -> Tensor:
        """A ``(..., H, W)`` map (saliency, mask probability) of the current image on the file's grid.

        The padding is cut off, the rest resized bilinearly and mirrored back; parts of the file a crop
        cut away get 0. The sum is not preserved.
        """
        self._check()
        height, width = self.original_size
        inner_h, inner_w = round(height * self.scale_y), round(width * self.scale_x)
        top, left = round(self.top), round(self.left)
        lead, (current_h, current_w) = values.shape[:-2], values.shape[-2:]
        flat = values.reshape(-1, 1, current_h, current_w).float().cpu()
        before_y, before_x = max(0, -top), max(0, -left)
        after_y, after_x = max(0, top + inner_h - current_h), max(0, left + inner_w - current_w)
        flat = nnf.pad(flat, (before_x, after_x, before_y, after_y))
        top, left = top + before_y, left + before_x
        inner = flat[..., top : top + inner_h, left : left + inner_w]
        resized = nnf.interpolate(inner, size=(height, width), mode="bilinear", align_corners=False)
        resized = resized.reshape(*lead, height, width)
        return resized.flip(-1) if self.mirrored else resized

    def padding_share(self) -> float:
        """The share of the current image that shows no pixel of the file (a letterbox's bars); NaN when
        the record cannot say."""
        if not self.invertible:
            return float("nan")
        height, width = self.size
        x0, y0 = max(0.0, self.left), max(0.0, self.top)
        x1 = min(float(width), self.left + self.original_size[1] * self.scale_x)
        y1 = min(float(height), self.top + self.original_size[0] * self.scale_y)
        shown = max(0.0, x1 - x0) * max(0.0, y1 - y0) / (height * width)
        return round(1.0 - shown, PADDING_DIGITS)  # a fit without padding is 0 exactly, not float noise

    def _check(self) -> None:
        if not self.invertible:
            raise ConfigError(
                "the image went through a resize, pad, crop or affine step after it was read: "
                "its maps and boxes cannot be mapped back onto the file"
            )


def _pack(sample: Sample) -> dict[str, Any]:
    """The sample's spatial parts as tv_tensors, ready for one v2 call."""
    canvas = sample.size
    data: dict[str, Any] = {"image": tv_tensors.Image(sample.image)}
    if sample.boxes is not None:
        data["boxes"] = tv_tensors.BoundingBoxes(
            sample.boxes.reshape(-1, 4), format="XYXY", canvas_size=canvas, clamping_mode=None
        )
    if sample.masks:
        data["masks"] = tv_tensors.Mask(torch.stack([m.to(torch.uint8) for m in sample.masks.values()]))
    if sample.fixations is not None:
        data["points"] = tv_tensors.KeyPoints(sample.fixations[:, :2].reshape(-1, 2), canvas_size=canvas)
    return data


def _unpack(sample: Sample, data: dict[str, Any], geometry: Geometry | None = None) -> Sample:
    """Write transformed parts back, clipping/dropping boxes and dropping fixations outside the image.

    ``geometry`` is the record after the step; without one the step is taken as one the record cannot
    express, and the way back to the file is marked lost.
    """
    image = data["image"].as_subclass(Tensor)
    height, width = int(image.shape[-2]), int(image.shape[-1])
    changes: dict[str, Any] = {"image": image}
    if "boxes" in data:
        boxes = data["boxes"].as_subclass(Tensor).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)
        changes["boxes"] = boxes[keep]
        if sample.box_labels is not None:
            changes["box_labels"] = [
                name for name, kept in zip(sample.box_labels, keep.tolist(), strict=True) if kept
            ]
    if "masks" in data:
        stacked = data["masks"].as_subclass(Tensor).bool()
        changes["masks"] = dict(zip(sample.masks or {}, stacked, strict=True))
    if "points" in data:
        assert sample.fixations is not None
        fixations = torch.cat([data["points"].as_subclass(Tensor), sample.fixations[:, 2:]], dim=1)
        x, y = fixations[:, 0], fixations[:, 1]
        changes["fixations"] = fixations[(x >= 0) & (x < width) & (y >= 0) & (y < height)]
    if geometry is None:
        geometry = replace(Geometry.of(sample), size=(height, width), invertible=False)
    changes["meta"] = replace(sample.meta, geometry=geometry)
    return sample.replace(**changes)


class JointTransform:
    """Apply a torchvision v2 transform to a sample's image, boxes, masks and fixations in one call."""

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.transform = transform

    def __call__(self, sample: Sample) -> Sample:
        return _unpack(sample, self.transform(_pack(sample)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


class _Resize(v2.Resize):
    """``v2.Resize`` whose masks sample pixel centres (nearest-exact) instead of top-left corners.

    Plain nearest shifts a downscaled mask by up to half an output pixel against its box and image.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return self._call_kernel(F.resize, inpt, self.size, interpolation=InterpolationMode.NEAREST_EXACT)
        return super().transform(inpt, params)


class Resize(JointTransform):
    """Resize to exactly (height, width), changing the aspect ratio if it differs."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(_Resize(list(size), antialias=True))


class Pad(JointTransform):
    """Pad by ``padding`` pixels: an int, (left/right, top/bottom) or (left, top, right, bottom)."""

    def __init__(self, padding: int | Sequence[int], fill: float = 0.0) -> None:
        super().__init__(v2.Pad(padding, fill=fill))


class CenterCrop(JointTransform):
    """Crop the central (height, width) region, zero-padding where the image is smaller."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(v2.CenterCrop(list(size)))


class RandomCrop(JointTransform):
    """Crop a random (height, width) region, zero-padding first where the image is smaller."""

    def __init__(self, size: tuple[int, int], fill: float = 0.0) -> None:
        super().__init__(v2.RandomCrop(list(size), pad_if_needed=True, fill=fill))


class RandomAffine(JointTransform):
    """Small rotation (degrees), translation (fraction of size) and scaling about the image centre."""

    def __init__(
        self,
        degrees: float = 5.0,
        translate: tuple[float, float] = (0.05, 0.05),
        scale: tuple[float, float] = (0.95, 1.05),
        fill: float = 0.0,
    ) -> None:
        super().__init__(
            v2.RandomAffine(
                degrees=degrees,
                translate=translate,
                scale=scale,
                interpolation=InterpolationMode.BILINEAR,
                fill=fill,
            )
        )


class HorizontalFlip(JointTransform):
    """Mirror left-right with probability ``p``.

    Not in the default recipe: on chest films left and right are anatomy (the heart's side) and reports
    name them. Fixations are flipped here as ``x -> W - x``, the continuous frame of boxes, because
    torchvision flips ``KeyPoints`` as pixel indices (``x -> W - 1 - x``).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(v2.RandomHorizontalFlip(p=1.0))
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand(())) >= self.p:
            return sample
        data = _pack(sample)
        points = data.pop("points", None)
        flipped = self.transform(data)
        if points is not None:
            xy = points.as_subclass(Tensor)
            flipped["points"] = torch.stack([sample.size[1] - xy[:, 0], xy[:, 1]], dim=1)
        return _unpack(sample, flipped, Geometry.of(sample).flipped())


class AlignBreast:
    """Mirror a mammogram whose breast faces left, so every breast faces right (chest wall on the left).

    GLAM and GMIC see right breasts flipped to face like left ones. The side is read from the image (the
    half holding more intensity is the chest wall's) rather than from the view's laterality, because
    distributions differ: raw detector images of right breasts face left, while NYU's cropped images
    were already flipped. Boxes, masks and fixations move with the image; the sample's
    :class:`Geometry` records the mirroring, so maps can be mirrored back onto the stored image.
    """

    def __call__(self, sample: Sample) -> Sample:
        half = sample.size[1] // 2
        flip = bool(sample.image[..., -half:].sum() > sample.image[..., :half].sum())
        return HorizontalFlip(p=1.0)(sample) if flip else sample

    def __repr__(self) -> str:
        return "AlignBreast()"


class Letterbox:
    """Resize keeping the aspect ratio so the image fits (height, width), then pad evenly with ``fill``.

    The sample's :class:`Geometry` records the scale and the padding offsets.
    """

    def __init__(self, size: tuple[int, int], fill: float = 0.0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.fill = fill

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.size
        target_h, target_w = self.size
        scale = min(target_h / height, target_w / width)
        inner_h = min(target_h, max(1, round(height * scale)))
        inner_w = min(target_w, max(1, round(width * scale)))
        left, top = (target_w - inner_w) // 2, (target_h - inner_h) // 2
        steps = v2.Compose(
            [
                _Resize([inner_h, inner_w], antialias=True),
                v2.Pad([left, top, target_w - inner_w - left, target_h - inner_h - top], fill=self.fill),
            ]
        )
        geometry = Geometry.of(sample).scaled(inner_w / width, inner_h / height, left, top, self.size)
        return _unpack(sample, steps(_pack(sample)), geometry)

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size}, fill={self.fill})"


class Stretch:
    """Resize to exactly (height, width), changing the aspect ratio: no padding shows the file's shape.

    The sample's :class:`Geometry` records the two scales.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.size
        target_h, target_w = self.size
        geometry = Geometry.of(sample).scaled(target_w / width, target_h / height, 0, 0, self.size)
        return _unpack(sample, _Resize(list(self.size), antialias=True)(_pack(sample)), geometry)

    def __repr__(self) -> str:
        return f"Stretch(size={self.size})"


class Shrink:
    """Resize keeping the aspect ratio so the longer side is at most ``longest`` pixels (smaller images
    are left as they are): a stored copy small enough to stream, its :class:`Geometry` the way back."""

    def __init__(self, longest: int) -> None:
        self.longest = int(longest)

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.size
        scale = self.longest / max(height, width)
        if scale >= 1:
            return sample
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        geometry = Geometry.of(sample).scaled(size[1] / width, size[0] / height, 0, 0, size)
        return _unpack(sample, _Resize(list(size), antialias=True)(_pack(sample)), geometry)

    def __repr__(self) -> str:
        return f"Shrink(longest={self.longest})"


class CropCenter:
    """Resize keeping the aspect ratio so the image covers (height, width), then keep the centre: no
    padding, the borders of the longer side are cut off (boxes clipped, fixations there dropped)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample.size
        target_h, target_w = self.size
        scale = max(target_h / height, target_w / width)
        inner_h, inner_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
        top, left = round((inner_h - target_h) / 2.0), round((inner_w - target_w) / 2.0)  # as v2.CenterCrop
        steps = v2.Compose([_Resize([inner_h, inner_w], antialias=True), _Crop(top, left, self.size)])
        geometry = Geometry.of(sample).scaled(inner_w / width, inner_h / height, -left, -top, self.size)
        return _unpack(sample, steps(_pack(sample)), geometry)

    def __repr__(self) -> str:
        return f"CropCenter(size={self.size})"


LUNG_MASKS = ("lungs", "left_lung", "right_lung")
"""Mask names that are lung fields (their union is the lungs)."""


def lung_mask(sample: Sample) -> Tensor | None:
    """The union of the sample's lung masks (:data:`LUNG_MASKS`), None where it has no non-empty one."""
    found = [mask for name, mask in (sample.masks or {}).items() if name in LUNG_MASKS]
    union = torch.stack(found).any(dim=0) if found else None
    return union if union is not None and bool(union.any()) else None


def lung_box(sample: Sample) -> tuple[float, float, float, float] | None:
    """The xyxy box around the lungs: of the lung masks, else of the boxes whose label names a lung
    (covid's "Left Lung" / "Right Lung"); None where the sample has neither."""
    mask = lung_mask(sample)
    if mask is not None:
        rows, cols = torch.nonzero(mask.any(dim=1)).ravel(), torch.nonzero(mask.any(dim=0)).ravel()
        return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)
    boxes, names = sample.boxes if sample.boxes is not None else [], sample.box_labels or []
    chosen = [box for box, name in zip(boxes, names, strict=False) if "lung" in name.lower()]
    if not chosen:
        return None
    boxes = torch.stack(chosen)
    return (*boxes[:, :2].min(dim=0).values.tolist(), *boxes[:, 2:].max(dim=0).values.tolist())


class CropLungs:
    """Crop to the lungs (:func:`lung_box`) widened by ``margin`` of their size on each side and towards
    the target's aspect ratio (within the image: no padding; what does not fit is stretched), then
    resize to (height, width). An image without lung masks or boxes (a loose file at prediction) is
    fitted by :class:`CropCenter` instead."""

    def __init__(self, size: tuple[int, int], margin: float = 0.05) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.margin = margin

    def __call__(self, sample: Sample) -> Sample:
        box = lung_box(sample)
        if box is None:
            return CropCenter(self.size)(sample)
        x0, y0, x1, y1 = box
        box_w, box_h = (x1 - x0) * (1 + 2 * self.margin), (y1 - y0) * (1 + 2 * self.margin)
        aspect = self.size[1] / self.size[0]
        box_w, box_h = max(box_w, box_h * aspect), max(box_h, box_w / aspect)
        height, width = sample.size
        crop_w, crop_h = min(width, max(1, round(box_w))), min(height, max(1, round(box_h)))
        left = min(max(0, round((x0 + x1 - crop_w) / 2)), width - crop_w)
        top = min(max(0, round((y0 + y1 - crop_h) / 2)), height - crop_h)
        steps = v2.Compose([_Crop(top, left, (crop_h, crop_w)), _Resize(list(self.size), antialias=True)])
        geometry = (
            Geometry.of(sample)
            .scaled(1.0, 1.0, -left, -top, (crop_h, crop_w))
            .scaled(self.size[1] / crop_w, self.size[0] / crop_h, 0, 0, self.size)
        )
        return _unpack(sample, steps(_pack(sample)), geometry)

    def __repr__(self) -> str:
        return f"CropLungs(size={self.size}, margin={self.margin})"


class _Crop(v2.Transform):
    """Keep rows ``top ..`` and columns ``left ..`` of (height, width) pixels; zeros where that lies
    outside the image."""

    def __init__(self, top: int, left: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.top, self.left, self.crop_size = top, left, size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = self.crop_size
        return self._call_kernel(F.crop, inpt, top=self.top, left=self.left, height=height, width=width)


RESIZE_MODES: dict[ResizeMode, Callable[[tuple[int, int]], Callable[[Sample], Sample]]] = {
    "letterbox": Letterbox,
    "stretch": Stretch,
    "crop_center": CropCenter,
    "crop_lungs": CropLungs,
}
"""How ``data.resize`` fits a file to the model's input size (every mode keeps the way back)."""


class RandomIntensity:
    """Random gamma, contrast and brightness of the image only; factors drawn in ``[1 - x, 1 + x]``.

    Stands in for differences between scanners and exposure; the result is clipped to [0, 1].
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, gamma: float = 0.1) -> None:
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma

    def __call__(self, sample: Sample) -> Sample:
        b, c, g = (
            1 + (2 * torch.rand(3) - 1) * torch.tensor([self.brightness, self.contrast, self.gamma])
        ).tolist()
        image = F.adjust_gamma(sample.image, g)
        image = F.adjust_contrast(image, c)
        image = F.adjust_brightness(image, b)
        return sample.replace(image=image.clamp(0, 1))

    def __repr__(self) -> str:
        return f"RandomIntensity(brightness={self.brightness}, contrast={self.contrast}, gamma={self.gamma})"


class GazeMap:
    """Turn fixations into ``sample.gaze_map`` (sums to 1); sigma is a fraction of the longer side.

    Samples without fixations pass through with ``gaze_map`` left ``None``. A sample whose fixations
    all lie outside the image raises ``DataError`` naming its file (a source may skip it).
    """

    def __init__(self, sigma_fraction: float, weight_by_duration: bool = True) -> None:
        self.sigma_fraction = sigma_fraction
        self.weight_by_duration = weight_by_duration

    def __call__(self, sample: Sample) -> Sample:
        if sample.fixations is None:
            return sample
        try:
            gaze = fixations_to_map(
                sample.fixations, sample.size, self.sigma_fraction * max(sample.size), self.weight_by_duration
            )
        except DataError as error:
            raise DataError(sample.meta.path, error.problem) from None
        return sample.replace(gaze_map=gaze)

    def __repr__(self) -> str:
        return f"GazeMap(sigma_fraction={self.sigma_fraction})"


def build_transforms(
    image_size: tuple[int, int],
    train: bool,
    augment: bool,
    gaze_sigma_fraction: float | None,
    pseudo_gaze: bool = False,
    resize: ResizeMode = "letterbox",
) -> Callable[[Sample], Sample]:
    """The pipeline every recipe uses: box-derived stand-in fixations first when ``pseudo_gaze``
    (see ``radsight.data.pseudo_gaze``), the fit to ``image_size`` that ``resize`` names (see
    :data:`RESIZE_MODES`), mild affine + intensity when training with ``augment``, then the gaze map
    when ``gaze_sigma_fraction`` is given.

    No flip (left/right is anatomy) and no random crop (it could cut away the lesion a label refers to).
    """
    steps: list[Callable[[Sample], Sample]] = [PseudoGaze()] if pseudo_gaze else []
    steps.append(RESIZE_MODES[resize](image_size))
    if train and augment:
        steps += [RandomAffine(), RandomIntensity()]
    if gaze_sigma_fraction is not None:
        steps.append(GazeMap(gaze_sigma_fraction))
    return v2.Compose(steps)
