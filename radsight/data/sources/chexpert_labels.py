"""The 14 CheXpert-labeller findings and the options shared by the two sources labelled with it.

CheXpert and MIMIC-CXR-JPG take their labels from the same rule-based report labeller, which writes
1 (positive), 0 (negative), -1 (uncertain: "possible", "cannot exclude"...) or leaves the cell blank
(the report does not mention the finding). ``chexpert_targets`` turns them into training targets:

- blank -> 0. Radiologists do not list every absent finding, so an unmentioned finding is taken as
  absent; keeping blanks as NaN would throw away most negatives (and all of "No Finding"'s).
- -1 -> the ``uncertain`` policy: "ignore" (default) makes it NaN, so the loss masks it out; "zeros"
  and "ones" are the CheXpert paper's U-Zeros and U-Ones. The paper's best choice differed by finding
  (U-Ones for atelectasis and edema, other approaches for cardiomegaly, consolidation and effusion), so
  no single mapping suits every finding; ignoring is the one that adds no label noise, at the cost of
  fewer labelled examples.

Both sources select images by view group, "frontal" or "lateral", each from its own view column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from radsight.data.sources.base import SourceDataset, numeric_columns
from radsight.errors import ConfigError, DataError

CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
UncertainPolicy = Literal["ignore", "zeros", "ones"]
UNCERTAIN_TARGET = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
VIEW_GROUPS = ("frontal", "lateral")


def check_choice(source: str, option: str, value: object, allowed: Iterable[object]) -> None:
    """Reject an option value outside ``allowed`` when the source is built."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{source}: {option} must be one of {allowed}, not {value!r}")


def check_views(source: str, views: Sequence[str]) -> tuple[str, ...]:
    """The view groups to keep ("frontal", "lateral"); at least one."""
    if isinstance(views, str) or not views:
        raise ConfigError(f"{source}: views must be a non-empty list of {list(VIEW_GROUPS)}, not {views!r}")
    for view in views:
        check_choice(source, "views", view, VIEW_GROUPS)
    return tuple(views)


def chexpert_targets(frame: pd.DataFrame, uncertain: UncertainPolicy, path: Path) -> np.ndarray:
    """N x 14 float32 targets from labeller values (1, 0, -1, blank); see the module doc for the policy."""
    values = numeric_columns(frame, CHEXPERT_LABELS, path)
    known = np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0))
    if not known.all():
        row, column = np.argwhere(~known)[0]
        found = f"{values[row, column]:g}"
        raise DataError(path, f"column {CHEXPERT_LABELS[column]!r} holds {found}; expected 1, 0, -1 or blank")
    targets = np.nan_to_num(values, nan=0.0)
    targets[values == -1.0] = UNCERTAIN_TARGET[uncertain]
    return targets.astype(np.float32)


class LabellerSource(SourceDataset):
    """A source labelled by the CheXpert labeller: one of its official ``splits``, a view group, and the
    ``uncertain`` policy for -1 labels."""

    all_labels = CHEXPERT_LABELS
    splits: ClassVar[Iterable[str]] = ()

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        views: Sequence[str] = ("frontal",),
        uncertain: UncertainPolicy = "ignore",
        **options: Any,
    ) -> None:
        check_choice(self.name, "split", split, self.splits)
        check_choice(self.name, "uncertain", uncertain, UNCERTAIN_TARGET)
        self.split = split
        self.views = check_views(self.name, views)
        self.uncertain = uncertain
        super().__init__(root, **options)
