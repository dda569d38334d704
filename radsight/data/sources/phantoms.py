"""Synthetic chest-X-ray-like images whose lesions, masks, gaze and report are known exactly.

They are the data for tests and the built-in demo. Everything is drawn from ``(seed, index)``: any
item can be regenerated alone, and labels are known without rendering an image.

The lesion classes differ only in the lesion's shape. Both have the same radius and amplitude
distributions and, by construction, the same distribution of added pixel values: a "nodule" is a
compact blob ``1 - t`` and an "opacity" a ring ``1 - |1 - 2t|``, where ``t = d^2 / r^2`` is uniform over
the disk's area, so both add values uniform on ``[0, 2 * amplitude]``. Global image statistics
therefore cannot tell the classes apart; a model has to look at the lesion.

Two images per patient share the anatomy (body and lung shape), so a split that ignores patients
leaks. A mammogram phantom would subclass ``PhantomDataset`` with its own ``render`` and reuse the
lesion, gaze and report helpers here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from radsight.data.sample import Sample, SampleMeta
from radsight.errors import ConfigError

Transform = Callable[[Sample], Sample]

# Independent random streams of one seed: labels and annotated flags (all items at once), anatomy (per
# patient), image.
_LABEL_STREAM, _ANATOMY_STREAM, _IMAGE_STREAM, _ANNOTATED_STREAM = 0, 1, 2, 3

LESION_PATTERNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "nodule": lambda t: 1.0 - t,
    "opacity": lambda t: 1.0 - np.abs(1.0 - 2.0 * t),
}
"""Lesion profile of ``t = d^2 / r^2`` (uniform over the disk's area); each maps uniform t to uniform
[0, 1], so every class adds the same distribution of values."""

RADIUS_RANGE = (0.035, 0.06)
"""Lesion radius as a fraction of the image's shorter side, the same for every class."""

AMPLITUDE_RANGE = (0.12, 0.2)
"""Mean intensity a lesion adds over its disk, the same for every class."""


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion, in pixels of the image."""

    name: str
    x: float
    y: float
    radius: float


class PhantomDataset(Dataset):
    """A ``Dataset`` of ``Sample`` rendered on demand from ``(seed, index)``; subclasses ``render``.

    Labels are independent Bernoulli(``prevalence``) per class, drawn for all items from one stream, so
    row ``i`` of ``label_matrix`` does not depend on ``n``. ``annotated_fraction`` keeps the boxes, masks
    and fixations on that share of the images (drawn from their own stream, also independent of ``n``),
    as in real sets where few images carry more than their labels; the others keep image, labels and
    report.
    """

    kind = "phantom"
    lesion_names: tuple[str, ...] = tuple(LESION_PATTERNS)
    """The lesion classes a subclass can draw; ``classes`` must be among them."""

    def __init__(
        self,
        n: int,
        *,
        size: tuple[int, int] = (224, 224),
        seed: int = 0,
        classes: Sequence[str] = ("nodule", "opacity"),
        prevalence: float = 0.4,
        images_per_patient: int = 2,
        annotated_fraction: float = 1.0,
        transform: Transform | None = None,
    ) -> None:
        unknown = [name for name in classes if name not in self.lesion_names]
        if unknown:
            raise ConfigError(
                f"unknown phantom lesion class(es) {unknown}; known: {sorted(self.lesion_names)}"
            )
        if min(size) < 32:
            raise ConfigError(f"phantom images must be at least 32 x 32 pixels, got {size}")
        if n < 1 or images_per_patient < 1:
            raise ConfigError("phantom n and images_per_patient must be positive")
        if not 0 <= annotated_fraction <= 1:
            raise ConfigError(f"phantom annotated_fraction must lie in [0, 1], got {annotated_fraction}")
        self.n = n
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.label_names = list(classes)
        self.images_per_patient = images_per_patient
        self.transform = transform
        draws = np.random.default_rng([seed, _LABEL_STREAM]).random((n, len(classes)))
        self._labels = (draws < prevalence).astype(np.float32)
        self._annotated = np.random.default_rng([seed, _ANNOTATED_STREAM]).random(n) < annotated_fraction

    def __len__(self) -> int:
        return self.n

    @property
    def patient_ids(self) -> list[str]:
        return [self.patient_id(i) for i in range(self.n)]

    @property
    def label_matrix(self) -> np.ndarray:
        """N x C labels (never NaN: the phantom knows every label), computed without rendering."""
        return self._labels.copy()

    @property
    def annotated(self) -> np.ndarray:
        """Which phantoms carry masks (per class, and the anatomy's), boxes and fixations."""
        return self._annotated.copy()

    @cached_property
    def reports(self) -> list[str | None]:
        """Each phantom's report; drawn by rendering it (a report says where its lesions fell), once."""
        return [self[i].report for i in range(self.n)]

    def patient_id(self, index: int) -> str:
        return f"phantom-{index // self.images_per_patient:04d}"

    def image_path(self, index: int) -> str:
        """The phantom's stand-in for a file path: which generator, seed and item drew the image."""
        return f"phantom://{type(self).__name__}/{self.seed}/{index}"

    @property
    def image_ids(self) -> list[str]:
        return [self.image_path(i) for i in range(self.n)]

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"phantom index {index} out of range for {self.n} items")
        present = [name for name, flag in zip(self.label_names, self._labels[index], strict=True) if flag]
        patient_rng = np.random.default_rng([self.seed, index // self.images_per_patient, _ANATOMY_STREAM])
        image_rng = np.random.default_rng([self.seed, index, _IMAGE_STREAM])
        sample = self.render(index, present, patient_rng, image_rng)
        if not self._annotated[index]:
            sample = sample.replace(boxes=None, box_labels=None, masks=None, fixations=None, gaze_map=None)
        return self.transform(sample) if self.transform is not None else sample

    def render(
        self, index: int, present: list[str], patient_rng: np.random.Generator, image_rng: np.random.Generator
    ) -> Sample:
        """Draw item ``index`` with the lesion classes in ``present``."""
        raise NotImplementedError

    def meta(self, index: int, view: str) -> SampleMeta:
        return SampleMeta(
            source=self.kind,
            path=self.image_path(index),
            patient_id=self.patient_id(index),
            view=view,
            original_size=self.size,
            extra={"seed": self.seed, "index": index},
        )


@dataclass(frozen=True)
class _Lung:
    """A lung field as an ellipse in normalised coordinates (u, v in [-1, 1] across the image)."""

    cx: float
    cy: float
    rx: float
    ry: float


class PhantomChestXray(PhantomDataset):
    """PA chest films: body, two dark lungs, ribs, mediastinum and heart, noise, random exposure.

    The patient's right lung is on the image's left, as on a PA film, and reports say so. Masks are
    one per class (all false when absent) plus ``"lungs"``; boxes and ``box_labels`` name each lesion.
    ``lesion_scale`` multiplies every lesion's radius: above 1 the task gets easier, for quick checks.
    """

    def __init__(self, n: int, *, lesion_scale: float = 1.0, **options: Any) -> None:
        if not 0.25 <= lesion_scale <= 4.0:
            raise ConfigError(f"phantom lesion_scale must lie in [0.25, 4], got {lesion_scale}")
        super().__init__(n, **options)
        self.lesion_scale = lesion_scale

    def render(
        self, index: int, present: list[str], patient_rng: np.random.Generator, image_rng: np.random.Generator
    ) -> Sample:
        height, width = self.size
        shift = image_rng.uniform(-0.02, 0.02, 2)
        image, lungs, lung_fields = _chest_anatomy(self.size, shift, patient_rng, image_rng)
        lesions: list[Lesion] = []
        masks: dict[str, np.ndarray] = {}
        short_side = min(height, width)
        for name in self.label_names:
            masks[name] = np.zeros(self.size, dtype=bool)
            if name not in present:
                continue
            radius = image_rng.uniform(*RADIUS_RANGE) * short_side * self.lesion_scale
            lesion = place_lesion(name, radius, lungs, lesions, image_rng)
            window, t = _disk(lesion, self.size)
            inside = t < 1.0
            pattern = LESION_PATTERNS[name](np.minimum(t, 1.0))
            image[window] += np.where(inside, 2.0 * image_rng.uniform(*AMPLITUDE_RANGE) * pattern, 0.0)
            masks[name][window] = inside
            lesions.append(lesion)
        image += 0.012 * image_rng.standard_normal(self.size, dtype=np.float32)
        contrast, brightness = image_rng.uniform(0.85, 1.15), image_rng.uniform(-0.08, 0.08)
        image = np.clip((image - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
        masks["lungs"] = lungs
        boxes = [mask_box(masks[lesion.name]) for lesion in lesions]
        return Sample(
            image=torch.from_numpy(image.astype(np.float32))[None],
            meta=self.meta(index, view="PA"),
            labels=torch.from_numpy(self._labels[index].copy()),
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            box_labels=[lesion.name for lesion in lesions],
            masks={name: torch.from_numpy(mask) for name, mask in masks.items()},
            fixations=torch.from_numpy(simulate_fixations(lesions, lungs, image_rng)),
            report=chest_report(lesions, self.label_names, lung_fields, self.size),
        )


def _normalised_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates scaled to [-1, 1] across the image: u along x (1 x W), v along y (H x 1)."""
    height, width = size
    u = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    v = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    return u[None, :], v[:, None]


def _soft_ellipse(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float, sharpness: float = 14.0
) -> np.ndarray:
    """~1 inside the ellipse, ~0 outside, with a smooth edge as tissue boundaries have on film."""
    q = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
    return 0.5 - 0.5 * np.tanh((q - 1.0) * (sharpness / 2))


def _rib_bands(u: np.ndarray, v: np.ndarray, period: float, phase: float) -> np.ndarray:
    """Bright bands along ``v = 0.3 u^2 + phase + k * period``: ribs curving down towards the sides.

    cos(a(v) - b(u)) is expanded into outer products, which is much cheaper than a cosine per pixel.
    """
    a = 2 * np.pi * (v - phase) / period
    b = 2 * np.pi * 0.3 * u**2 / period
    wave = np.maximum(0.0, np.cos(a) * np.cos(b) + np.sin(a) * np.sin(b))
    squared = wave * wave
    return squared * squared * squared


def _chest_anatomy(
    size: tuple[int, int], shift: np.ndarray, patient_rng: np.random.Generator, image_rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[_Lung]]:
    """Image without lesions (bright = dense), the lungs mask, and the two lung ellipses (right first).

    The patient's anatomy is placed ``shift`` (normalised units) off centre, as positioning varies.
    """
    u, v = _normalised_grid(size)
    u, v = u - shift[0], v - shift[1]
    body_width = patient_rng.uniform(0.8, 0.92)
    lung_x, lung_y = patient_rng.uniform(0.36, 0.42), patient_rng.uniform(-0.1, 0.0)
    lung_rx, lung_ry = patient_rng.uniform(0.2, 0.25), patient_rng.uniform(0.5, 0.6)
    heart_r = patient_rng.uniform(0.24, 0.3)
    rib_period, rib_phase = patient_rng.uniform(0.12, 0.15), image_rng.uniform(0, 1)

    body = _soft_ellipse(u, v, 0.0, 0.1, body_width, 1.3)
    mediastinum = _soft_ellipse(u, v, 0.0, -0.35, 0.14, 0.7)
    heart = _soft_ellipse(u, v, 0.12, lung_y + 0.3, heart_r, 0.24)
    fields = [_Lung(-lung_x, lung_y, lung_rx, lung_ry), _Lung(lung_x, lung_y, lung_rx, lung_ry)]
    lung_soft = sum(_soft_ellipse(u, v, f.cx, f.cy, f.rx, f.ry) for f in fields)
    lung_soft = lung_soft * (1 - heart) * (1 - mediastinum)
    thorax = _soft_ellipse(u, v, 0.0, lung_y, body_width * 0.95, 0.75)
    ribs = _rib_bands(u, v, rib_period, rib_phase) * thorax

    image = 0.04 + 0.5 * body + 0.15 * np.maximum(mediastinum, heart) - 0.33 * lung_soft + 0.09 * ribs
    in_image = [_Lung(f.cx + shift[0], f.cy + shift[1], f.rx, f.ry) for f in fields]
    return image.astype(np.float32), lung_soft > 0.5, in_image


def _disk(lesion: Lesion, size: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """The window of the image around a lesion, and ``t = d^2 / r^2`` at its pixel centres."""
    height, width = size
    x0, x1 = max(0, int(lesion.x - lesion.radius)), min(width, int(lesion.x + lesion.radius) + 2)
    y0, y1 = max(0, int(lesion.y - lesion.radius)), min(height, int(lesion.y + lesion.radius) + 2)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - lesion.x
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - lesion.y
    return (slice(y0, y1), slice(x0, x1)), (dx**2 + dy**2) / lesion.radius**2


def place_lesion(
    name: str,
    radius: float,
    region: np.ndarray,
    taken: list[Lesion],
    rng: np.random.Generator,
    *,
    border: float | None = None,
    spacing: float = 1.0,
    gap: float = 2.0,
    whole_disk: bool = True,
    tries: int = 200,
) -> Lesion:
    """A lesion centred at a random point of ``region``: ``border`` pixels (default: its radius) inside the
    image, ``spacing`` times the sum of radii plus ``gap`` pixels from every ``taken`` lesion, and, with
    ``whole_disk``, its whole disk inside ``region``."""
    ys, xs = np.nonzero(region)
    height, width = region.shape
    border = radius if border is None else border
    for _ in range(tries):
        k = rng.integers(len(xs))
        lesion = Lesion(name, float(xs[k] + rng.random()), float(ys[k] + rng.random()), float(radius))
        if any(np.hypot(lesion.x - o.x, lesion.y - o.y) < spacing * (radius + o.radius) + gap for o in taken):
            continue
        if not (border <= lesion.x <= width - border and border <= lesion.y <= height - border):
            continue
        if not whole_disk:
            return lesion
        window, t = _disk(lesion, region.shape)
        if region[window][t < 1.0].all():
            return lesion
    raise RuntimeError(f"could not place a {radius:.1f}-pixel lesion in the region after {tries} tries")


def mask_box(mask: np.ndarray) -> list[float]:
    """xyxy box of a mask's pixels, so the box and the mask agree exactly."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def simulate_fixations(
    lesions: list[Lesion], region: np.ndarray, rng: np.random.Generator, on_lesion: float = 0.7
) -> np.ndarray:
    """N x 3 (x, y, duration_s) of a reader: ``on_lesion`` of fixations dwell on lesions, the rest scan
    ``region``. Durations are log-normal, clipped to 0.1-1 s, longer on lesions."""
    count = int(rng.integers(8, 17))
    height, width = region.shape
    ys, xs = np.nonzero(region)
    k = rng.integers(len(xs), size=count)
    points = np.stack([xs[k], ys[k]], axis=1) + rng.random((count, 2))
    durations = rng.lognormal(np.log(0.22), 0.4, count)
    if lesions:
        discs = np.array([(lesion.x, lesion.y, lesion.radius) for lesion in lesions])[
            rng.integers(len(lesions), size=count)
        ]
        on = rng.random(count) < on_lesion
        looks = discs[:, :2] + rng.normal(size=(count, 2)) * 0.5 * discs[:, 2:]
        points = np.where(on[:, None], looks, points)
        durations = np.where(on, rng.lognormal(np.log(0.45), 0.4, count), durations)
    points = np.clip(points, 0, [width - 1e-3, height - 1e-3])
    return np.concatenate([points, np.clip(durations, 0.1, 1.0)[:, None]], axis=1).astype(np.float32)


def chest_report(
    lesions: list[Lesion], classes: Sequence[str], fields: list[_Lung], size: tuple[int, int]
) -> str:
    """One sentence per finding with size, side and zone from the lesion's position, then the negatives.

    ``fields`` are the right and left lung ellipses in the image's normalised coordinates.
    """
    if not lesions:
        return "Normal chest."
    height, width = size
    mid_radius = np.mean(RADIUS_RANGE) * min(height, width)
    sentences = []
    for lesion in lesions:
        u, v = (lesion.x / width) * 2 - 1, (lesion.y / height) * 2 - 1
        nearest = min(range(len(fields)), key=lambda i: abs(u - fields[i].cx))
        side = ("right", "left")[nearest]  # PA film: the patient's right is on the image's left
        field = fields[nearest]
        depth = (v - (field.cy - field.ry)) / (2 * field.ry)
        zone = "upper" if depth < 1 / 3 else "middle" if depth < 2 / 3 else "lower"
        size_word = "Small" if lesion.radius < mid_radius else "Large"
        sentences.append(f"{size_word} {lesion.name} in the {side} {zone} lung.")
    found = {lesion.name for lesion in lesions}
    sentences += [f"No {name}." for name in classes if name not in found]
    return " ".join(sentences)
