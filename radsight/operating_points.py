"""Operating points: the per-label thresholds at which a trained model calls a finding positive.

They are chosen once, after training, on the validation split's predictions by the recipe's rule
(``evaluation.operating_point``), and stored beside the model as ``operating_points.json``. The test
set, each of its bootstrap resamples, an evaluation on another dataset and ``radsight predict`` all
apply these same thresholds: choosing them on the images being scored would flatter the scores.

A run without validation images, or a model exported without the file, has nothing to choose them on:
it falls back to the fixed threshold 0.5 for every label (``fallback``), and says so wherever the
thresholds are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from radsight.checkpoints import write_json
from radsight.config import OperatingPointConfig, ThresholdRule
from radsight.errors import ConfigError
from radsight.metrics.classification import DEFAULT_THRESHOLD, choose_thresholds
from radsight.run_folder import OPERATING_POINTS_FILE, read_optional_json

if TYPE_CHECKING:
    from radsight.methods import Method

RULE_WORDS = {
    "youden": "Youden's index (the threshold maximising sensitivity + specificity - 1)",
    "sensitivity": "the highest threshold reaching sensitivity {value:g}",
    "fixed": "the fixed threshold {value:g} of the recipe",
}


@dataclass(frozen=True)
class OperatingPoints:
    """Per-label thresholds and where they came from.

    ``rule`` / ``value`` are the recipe's ``evaluation.operating_point``; ``chosen_on`` names the split whose
    predictions chose the thresholds (None: not chosen on data, a fixed value); ``n_images`` its images;
    ``thresholds`` one per label, None where the split held one class of the label (no threshold, so no
    thresholded metric or positive call for it); ``fallback`` says why the rule could not be followed.
    """

    rule: ThresholdRule
    value: float | None
    chosen_on: str | None
    n_images: int
    thresholds: dict[str, float | None]
    fallback: str | None = None

    def vector(self, label_names: Sequence[str]) -> np.ndarray:
        """The thresholds in ``label_names`` order, NaN where a label has none."""
        missing = [name for name in label_names if name not in self.thresholds]
        if missing:
            raise ConfigError(f"operating points hold no threshold for label(s) {missing}")
        return np.array([np.nan if (t := self.thresholds[n]) is None else t for n in label_names])

    def positive(self, probabilities: Mapping[str, float]) -> dict[str, bool | None]:
        """Per label, whether ``probability >= threshold`` (None where the label has no threshold)."""
        return {
            name: None if (t := self.thresholds.get(name)) is None else bool(p >= t)
            for name, p in probabilities.items()
        }

    def describe(self) -> str:
        """One sentence for reports: the rule, the split that chose the thresholds, and any fallback."""
        if self.fallback is not None:
            return f"{self.fallback}: every label uses {DEFAULT_THRESHOLD:g}, a threshold chosen on no data."
        how = RULE_WORDS[self.rule].format(value=self.value)
        if self.chosen_on is None:
            return f"Thresholds are {how}, the same for every label."
        none = [name for name, t in self.thresholds.items() if t is None]
        text = f"Thresholds were chosen on the {self.chosen_on} split ({self.n_images} images) by {how}"
        if none:
            text += f"; {', '.join(none)} lacked positive or negative images there: no threshold"
        return text + "."

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Any, origin: str) -> OperatingPoints:
        try:
            return cls(**payload)
        except TypeError as error:
            raise ConfigError(f"{origin}: not an operating points record ({error})") from None


def choose_operating_points(
    config: OperatingPointConfig,
    probs: ArrayLike,
    labels: ArrayLike,
    label_names: Sequence[str],
    *,
    multilabel: bool,
    split: str = "val",
) -> OperatingPoints:
    """Thresholds by ``config``'s rule on one split's predictions (``probs``, ``labels`` of its images)."""
    probs = np.asarray(probs, dtype=np.float64)
    if config.rule == "fixed":
        return OperatingPoints(config.rule, config.value, None, 0, dict.fromkeys(label_names, config.value))
    if probs.shape[0] == 0:
        return fallback(config, label_names, f"The run has no {split} images to choose thresholds on")
    chosen = choose_thresholds(probs, labels, rule=config.rule, value=config.value, multilabel=multilabel)
    thresholds = {n: None if np.isnan(t) else float(t) for n, t in zip(label_names, chosen, strict=True)}
    return OperatingPoints(config.rule, config.value, split, int(probs.shape[0]), thresholds)


def fallback(config: OperatingPointConfig, label_names: Sequence[str], reason: str) -> OperatingPoints:
    """The threshold 0.5 for every label, with the reason ``config``'s rule could not be followed (a fixed
    rule needs no data and is followed)."""
    if config.rule == "fixed":
        return OperatingPoints(config.rule, config.value, None, 0, dict.fromkeys(label_names, config.value))
    return OperatingPoints(
        config.rule, config.value, None, 0, dict.fromkeys(label_names, DEFAULT_THRESHOLD), reason
    )


def operating_points_of(method: Method, config: OperatingPointConfig) -> OperatingPoints:
    """The thresholds a trained method carries, or the stated fallback for one exported without them."""
    if method.operating_points is not None:
        return method.operating_points
    return fallback(config, method.label_names, "The model carries no operating points")


def write_operating_points(run_dir: str | Path, points: OperatingPoints) -> Path:
    path = Path(run_dir) / OPERATING_POINTS_FILE
    write_json(path, points.as_json())
    return path


def read_operating_points(model_dir: str | Path) -> OperatingPoints | None:
    """The stored operating points of a run folder, None when it has none (exported before them)."""
    path = Path(model_dir) / OPERATING_POINTS_FILE
    payload = read_optional_json(path)
    return None if payload is None else OperatingPoints.from_json(payload, str(path))
