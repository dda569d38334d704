"""What a model's training images looked like, stored with the model, and whether a file looks like them.

At the end of training a bounded sample of the training split is read as its sources read it and
summarised in ``input_profile.json`` (plain JSON): per source, the DICOM modality and body part of its
images (:data:`radsight.data.sources.IMAGING`), and robust statistics of the images as read: size,
aspect, intensity mean, spread and percentiles, bit depth. At prediction, a file whose DICOM tags name
another modality or body part, or whose statistics lie well outside the training range, carries a
warning, so that a chest model does not score a mammogram without a word.

The bit depth is recorded, not checked: every depth is scaled to [0, 1] as it is read, and the intensity
statistics compare what the model is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from radsight.data.assemble import DataSplits
from radsight.data.image_io import DicomIdentity
from radsight.data.sample import Sample
from radsight.data.sources import IMAGING
from radsight.errors import ConfigError, DataError
from radsight.run_folder import read_optional_json

PROFILE_FORMAT = 1
MAX_IMAGES = 100
"""Training images read for the profile: a seeded sample of the training split."""
MAX_PIXELS = 1 << 16
"""Intensity statistics use a regular grid of at most about this many pixels of each image."""
QUANTILES = {"p01": 0.01, "p50": 0.5, "p99": 0.99}
"""What the profile keeps of each statistic over the training images."""


@dataclass(frozen=True)
class Statistic:
    """One per-image statistic and how far outside the training range a file may lie: the range from
    the 1st to the 99th percentile of the training images, widened on each side by half its width and by
    at least ``tolerance`` (on a log scale for sizes and ratios, so a factor there)."""

    name: str
    tolerance: float
    log: bool = False
    digits: int = 2
    unit: str = ""

    def admits(self, value: float, low: float, high: float) -> bool:
        scale = math.log if self.log else float
        low_s, high_s, value_s = scale(low), scale(high), scale(value)
        margin = max((high_s - low_s) / 2, self.tolerance)
        return low_s - margin <= value_s <= high_s + margin

    def format(self, value: float) -> str:
        return f"{value:.{self.digits}f}{self.unit}"

    def describe(self, value: float, low: float, high: float) -> str:
        """``value`` against the training range, e.g. "long side 2048 px (training 128 px)"."""
        low_text, high_text = self.format(low), self.format(high)
        training = low_text if low_text == high_text else f"{low_text} to {high_text}"
        return f"{self.name} {self.format(value)} (training {training})"


STATISTICS = {
    "long_side": Statistic("long side", math.log(4), log=True, digits=0, unit=" px"),
    "aspect": Statistic("height/width", math.log(1.3), log=True),
    "mean": Statistic("mean intensity", 0.1),
    "std": Statistic("intensity SD", 0.1),
    "p05": Statistic("5th intensity percentile", 0.1),
    "p50": Statistic("median intensity", 0.1),
    "p95": Statistic("95th intensity percentile", 0.1),
}


def image_statistics(image: Tensor) -> dict[str, float]:
    """The :data:`STATISTICS` of one image as read (1 x H x W in [0, 1])."""
    plane = image[0]
    height, width = plane.shape
    step = max(1, math.ceil(math.sqrt(height * width / MAX_PIXELS)))
    values = plane[::step, ::step].float().numpy().ravel()
    p05, p50, p95 = (float(v) for v in np.percentile(values, [5, 50, 95]))
    return {
        "long_side": float(max(height, width)),
        "aspect": height / width,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p05": p05,
        "p50": p50,
        "p95": p95,
    }


@dataclass(frozen=True)
class SourceImaging:
    """A training source and the DICOM values its images carry (None: unknown, e.g. a user's CSV)."""

    name: str
    modalities: tuple[str, ...] | None
    body_parts: tuple[str, ...] | None


@dataclass(frozen=True)
class InputProfile:
    """The training images of a model, summarised: see the module docstring."""

    sources: tuple[SourceImaging, ...]
    images: int
    bits_stored: tuple[int, ...]
    statistics: dict[str, dict[str, float]]  # statistic -> {"p01", "p50", "p99"} over the images

    @classmethod
    def of_samples(cls, samples: Sequence[Sample], source_names: Sequence[str]) -> InputProfile:
        """The profile of ``samples`` (images as read), from sources named as in the recipe."""
        if not samples:
            raise DataError(None, "no readable training image to profile")
        values = [image_statistics(sample.image) for sample in samples]
        statistics = {
            key: {name: float(np.quantile([v[key] for v in values], q)) for name, q in QUANTILES.items()}
            for key in STATISTICS
        }
        sources = []
        for name in dict.fromkeys(source_names):
            imaging = IMAGING.get(name)
            sources.append(
                SourceImaging(
                    name,
                    None if imaging is None else imaging.modalities,
                    None if imaging is None else imaging.body_parts,
                )
            )
        depths = sorted({int(s.meta.extra["bits_stored"]) for s in samples if "bits_stored" in s.meta.extra})
        return cls(tuple(sources), len(samples), tuple(depths), statistics)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "images": self.images,
            "sources": [
                {
                    "name": s.name,
                    "modalities": None if s.modalities is None else list(s.modalities),
                    "body_parts": None if s.body_parts is None else list(s.body_parts),
                }
                for s in self.sources
            ],
            "bits_stored": list(self.bits_stored),
            "statistics": self.statistics,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], path: Path) -> InputProfile:
        if payload.get("format") != PROFILE_FORMAT:
            raise ConfigError(f"{path}: unsupported input profile format {payload.get('format')!r}")
        try:
            sources = tuple(
                SourceImaging(
                    s["name"],
                    None if s["modalities"] is None else tuple(s["modalities"]),
                    None if s["body_parts"] is None else tuple(s["body_parts"]),
                )
                for s in payload["sources"]
            )
            statistics = {key: dict(payload["statistics"][key]) for key in STATISTICS}
            return cls(sources, int(payload["images"]), tuple(payload["bits_stored"]), statistics)
        except (KeyError, TypeError) as error:
            raise ConfigError(f"{path}: not a radsight input profile (missing or bad {error})") from None

    @classmethod
    def read(cls, path: Path) -> InputProfile | None:
        """The profile stored at ``path``; None where there is none (models exported before profiles)."""
        payload = read_optional_json(path)
        return None if payload is None else cls.from_json(payload, path)

    def check(self, image: Tensor, dicom: DicomIdentity | None) -> list[str]:
        """Why a file (its image as read and its DICOM identity) is unlike the training images: one
        sentence per reason, none when it is like them."""
        return [*self._tag_warnings(dicom), *self._statistics_warnings(image)]

    def _tag_warnings(self, dicom: DicomIdentity | None) -> list[str]:
        if dicom is None:
            return []
        warnings = []
        for keyword, value, known in (
            ("Modality", dicom.modality, [s.modalities for s in self.sources]),
            ("BodyPartExamined", dicom.body_part_examined, [s.body_parts for s in self.sources]),
        ):
            if value is None or any(values is None for values in known):
                continue  # the file does not say, or a source's images may be anything
            seen = sorted({v for values in known for v in values or ()})
            if value.upper() not in seen:
                warnings.append(f"DICOM {keyword} {value}, but the model was trained on {'/'.join(seen)}")
        return warnings

    def _statistics_warnings(self, image: Tensor) -> list[str]:
        values = image_statistics(image)
        outside = []
        for key, statistic in STATISTICS.items():
            low, high = self.statistics[key]["p01"], self.statistics[key]["p99"]
            if not statistic.admits(values[key], low, high):
                outside.append(statistic.describe(values[key], low, high))
        return [f"unlike the training images: {', '.join(outside)}"] if outside else []


def training_profile(splits: DataSplits, seed: int) -> InputProfile:
    """The profile of up to :data:`MAX_IMAGES` images of the training split (the images a label budget
    left out included), drawn with ``seed`` and taken as read, before any transform; unreadable ones
    are left out."""
    indices = np.asarray(splits.train_split)
    chosen = sorted(np.random.default_rng(seed).choice(indices, min(MAX_IMAGES, len(indices)), replace=False))
    as_read = splits.union.with_transform(None)
    samples = [as_read[int(index)] for index in chosen]
    return InputProfile.of_samples([s for s in samples if s is not None], splits.union.names)
