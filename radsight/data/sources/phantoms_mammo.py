"""Phantom mammograms: high-resolution breast images with small benign and malignant lesions whose masks
are known exactly, deterministic by seed. They are the data of GLAM's tests and CPU recipe.

A breast is a half ellipse against the chest wall; its fibroglandular tissue is a few octaves of smooth
noise, denser near the chest wall, under a bright skin line, with a pectoral muscle on MLO views. Lesions
are small (under half a percent of the image's area): a benign mass is a circumscribed oval, a malignant one
a spiculated mass (a smaller core with thin tapering spicules). Both add intensities from the same
amplitude range, so a model has to look at the lesion's shape and margin, as a reader does.

Views come as a detector stores them: left breasts face right (chest wall on the image's left), right
breasts face left, so the recipe's breast alignment has real work to do. The two views (CC, MLO) of one
breast make a patient and share its shape, density and side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from radsight.data.sample import Sample
from radsight.data.sources.phantoms import Lesion, PhantomDataset, Transform, mask_box, place_lesion

MAMMO_LESIONS = ("benign", "malignant")

RADIUS_RANGE = (0.025, 0.045)
"""Lesion radius as a fraction of the image's shorter side, the same for both classes."""

AMPLITUDE_RANGE = (0.16, 0.24)
"""Peak intensity a lesion adds, the same for both classes."""

SPICULES = (6, 11)
"""Range of the number of spicules of a malignant mass."""


class PhantomMammogram(PhantomDataset):
    """Cropped-mammogram-like views (default 2048 x 1280) with benign and malignant lesions.

    Masks are one per class (all false when absent) plus ``"breast"``; boxes and ``box_labels`` name each
    lesion. ``meta.view`` is "CC" or "MLO" and ``meta.extra["laterality"]`` "L" or "R".
    """

    kind = "phantom_mammo"
    lesion_names = MAMMO_LESIONS

    def __init__(
        self,
        n: int,
        *,
        size: tuple[int, int] = (2048, 1280),
        seed: int = 0,
        classes: Sequence[str] = MAMMO_LESIONS,
        prevalence: float = 0.4,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(
            n,
            size=size,
            seed=seed,
            classes=classes,
            prevalence=prevalence,
            images_per_patient=2,
            transform=transform,
        )

    def render(
        self, index: int, present: list[str], patient_rng: np.random.Generator, image_rng: np.random.Generator
    ) -> Sample:
        height, width = self.size
        view = ("CC", "MLO")[index % 2]
        laterality = "L" if patient_rng.random() < 0.5 else "R"
        depth, half_height, density = (
            patient_rng.uniform(0.75, 0.92),
            patient_rng.uniform(0.36, 0.45),
            patient_rng.uniform(0.2, 0.5),
        )
        centre = 0.5 + image_rng.uniform(-0.04, 0.04) + (0.04 if view == "MLO" else 0.0)
        x = (np.arange(width, dtype=np.float32) + 0.5)[None, :] / width
        y = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height
        radial = np.sqrt((x / depth) ** 2 + ((y - centre) / half_height) ** 2)  # 1 on the breast's edge
        breast = 0.5 - 0.5 * np.tanh((radial - 1.0) * 40.0)
        tissue = _smooth_noise(self.size, image_rng)
        glandular = np.clip(tissue + density - 0.3, 0.0, 1.0) * np.sqrt(np.clip(1.0 - radial, 0.0, 1.0))
        image = (
            0.2 + 0.32 * glandular + 0.12 * np.exp(-(((radial - 0.985) / 0.012) ** 2))
        )  # fat, glands, skin
        if view == "MLO":
            reach_x, reach_y = patient_rng.uniform(0.22, 0.32), patient_rng.uniform(0.35, 0.5)
            muscle = 0.5 - 0.5 * np.tanh((x / reach_x + y / reach_y - 1.0) * 30.0)
            image = image + 0.25 * muscle
        inside = radial < 0.75
        masks: dict[str, np.ndarray] = {}
        lesions: list[Lesion] = []
        short_side = min(height, width)
        for name in self.label_names:
            masks[name] = np.zeros(self.size, dtype=bool)
            if name not in present:
                continue
            radius = image_rng.uniform(*RADIUS_RANGE) * short_side
            lesion = place_lesion(
                name,
                radius,
                inside,
                lesions,
                image_rng,
                border=2 * radius,
                spacing=2.0,
                gap=0.0,
                whole_disk=False,
            )
            window, pattern = _lesion_pattern(lesion, self.size, image_rng)
            image[window] += image_rng.uniform(*AMPLITUDE_RANGE) * pattern
            masks[name][window] = pattern > 0
            lesions.append(lesion)
        image = image * breast + 0.01 * image_rng.standard_normal(self.size, dtype=np.float32)
        image = np.clip(image * image_rng.uniform(0.9, 1.1), 0.0, 1.0).astype(np.float32)
        masks["breast"] = breast > 0.5
        if laterality == "R":  # stored as the detector sees a right breast: facing left
            image = image[:, ::-1]
            masks = {name: mask[:, ::-1] for name, mask in masks.items()}
        boxes = [mask_box(masks[lesion.name]) for lesion in lesions]
        meta = self.meta(index, view=view)
        meta.extra["laterality"] = laterality
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(image))[None],
            meta=meta,
            labels=torch.from_numpy(self._labels[index].copy()),
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            box_labels=[lesion.name for lesion in lesions],
            masks={name: torch.from_numpy(np.ascontiguousarray(mask)) for name, mask in masks.items()},
        )


def _smooth_noise(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Three octaves of cubically upsampled Gaussian noise, roughly in [0, 1]: glandular texture.

    The octaves are summed on a grid 8 times coarser (still finer than the finest octave) and only
    the sum is brought to full size, bilinearly: rendering a 2048 x 1280 view stays cheap.
    """
    height, width = size
    grid = np.array([max(2, height // 8), max(2, width // 8)])
    total = np.zeros(grid, dtype=np.float32)
    for cells, weight in ((6, 0.55), (14, 0.3), (40, 0.15)):
        coarse = rng.standard_normal((cells, max(2, cells * width // height))).astype(np.float32)
        total += weight * ndimage.zoom(coarse, grid / coarse.shape, order=3, mode="nearest", grid_mode=True)
    full = F.interpolate(torch.from_numpy(total)[None, None], size=size, mode="bilinear", align_corners=False)
    return (0.5 + 0.25 * full[0, 0]).numpy()


def _lesion_pattern(
    lesion: Lesion, size: tuple[int, int], rng: np.random.Generator
) -> tuple[tuple[slice, slice], np.ndarray]:
    """The window around a lesion and its intensity profile there, in [0, 1] and 0 off the lesion.

    Benign: an oval dome ``1 - t`` (t the squared elliptical radius). Malignant: a dome of 0.65 the
    radius with spicules reaching 1.4-1.9 radii, tapering in width and intensity.
    """
    height, width = size
    reach = 2.0 * lesion.radius
    x0, x1 = max(0, int(lesion.x - reach)), min(width, int(lesion.x + reach) + 2)
    y0, y1 = max(0, int(lesion.y - reach)), min(height, int(lesion.y + reach) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - lesion.x
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - lesion.y
    if lesion.name == "benign":
        stretch, angle = rng.uniform(0.0, 0.25), rng.uniform(0, np.pi)
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        t = (along / (lesion.radius * (1 + stretch))) ** 2 + (across / (lesion.radius * (1 - stretch))) ** 2
        return (slice(y0, y1), slice(x0, x1)), np.clip(1.0 - t, 0.0, None)
    pattern = np.clip(1.0 - (dx**2 + dy**2) / (0.65 * lesion.radius) ** 2, 0.0, None)
    distance = np.hypot(dx, dy)
    half_width = max(0.5, 0.12 * lesion.radius)
    for angle in rng.uniform(0, 2 * np.pi, rng.integers(*SPICULES)):
        length = rng.uniform(1.4, 1.9) * lesion.radius
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = np.abs(-dx * np.sin(angle) + dy * np.cos(angle))
        taper = np.clip(1.0 - distance / length, 0.0, None)
        spicule = np.where((along > 0) & (across < half_width * taper + 0.5), 0.7 * taper, 0.0)
        pattern = np.maximum(pattern, spicule)
    return (slice(y0, y1), slice(x0, x1)), pattern
