"""REFLACX: 3,032 readings of 2,616 MIMIC-CXR images by five radiologists, with gaze, ellipses and reports.

Layout of ``root``: ``main_data/metadata_phase_{1,2,3}.csv`` (one row per reading, CRLF line ends) and,
per reading id (``P102R123456``), ``main_data/<id>/`` holding ``fixations.csv``,
``anomaly_location_ellipses.csv``, ``chest_bounding_box.csv`` and ``transcription.txt``. The images are
read from the user's MIMIC-CXR or MIMIC-CXR-JPG copy (option ``images_root``); readings of images missing
there are dropped. Each reading is one sample, so an image read by several radiologists appears once per
reading, always with the same patient id (``subject_id``), which keeps its readings on one side of a
patient-level split. Readings whose eye-tracking data was discarded have no gaze or report: dropped.

Labels are the phase 2-3 findings. A radiologist gave each chosen finding a certainty: 1 unlikely (~10%),
2 less likely (~25%), 3 possibly (~50%), 4 suggestive of (~75%), 5 consistent with (>90%); 0 or blank
means not chosen (negative). A finding is positive when its certainty reaches ``certainty_threshold``,
3 by default: from "possibly" on the radiologist holds the finding at least as likely as not, while 1
and 2 say it is probably absent. Support devices is a plain yes/no. Phase 1 used another list (Airway
wall thickening, Emphysema, Fibrosis, Fracture, Mass, Nodule, Pleural effusion, Pleural thickening,
Quality issue, Wide mediastinum, ...): findings with the same name are taken (Atelectasis,
Consolidation, Enlarged cardiac silhouette, Groundglass opacity, Pneumothorax, Pulmonary edema, Support
devices) and the others are NaN, not annotated, because the phase-1 findings have another scope (a
negative "Pleural effusion" does not make "Pleural abnormality" negative; "Fracture" is not "Acute
fracture"). ``phases=(2, 3)`` leaves phase 1 out.

Boxes: each ellipse's bounding box, once per finding marked in it, when the ellipse's certainty reaches
the same threshold (so boxes agree with the labels), clipped to the image since a drawn ellipse may cross
its border; ``chest_box=True`` adds the box around lungs and heart, labelled "chest". Fixations are
``x_position``/``y_position`` in original image pixels (the viewer allowed zoom and pan, so fixations
off the image occur and are dropped) with duration end - start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radsight.data.sources.base import (
    Record,
    SourceDataset,
    cell_text,
    drop_missing_images,
    numeric_columns,
    read_csv,
)
from radsight.data.sources.gaze_common import images_folder, on_image, resolve_mimic_image
from radsight.errors import ConfigError, DataError

LABELS = (
    "Abnormal mediastinal contour",
    "Acute fracture",
    "Atelectasis",
    "Consolidation",
    "Enlarged cardiac silhouette",
    "Enlarged hilum",
    "Groundglass opacity",
    "Hiatal hernia",
    "High lung volume / emphysema",
    "Interstitial lung disease",
    "Lung nodule or mass",
    "Pleural abnormality",
    "Pneumothorax",
    "Pulmonary edema",
    "Support devices",
)
YES_NO_LABELS = ("Support devices",)
PHASES = (1, 2, 3)
METADATA_COLUMNS = (
    "id",
    "eye_tracking_data_discarded",
    "image",
    "subject_id",
    "image_size_x",
    "image_size_y",
)
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0", ""})


class REFLACX(SourceDataset):
    """REFLACX readings: certainty-thresholded findings, gaze, ellipse boxes and the dictated report."""

    name = "reflacx"
    all_labels = LABELS

    def __init__(
        self,
        root: str | Path,
        *,
        images_root: str | Path,
        certainty_threshold: int = 3,
        chest_box: bool = False,
        phases: Sequence[int] = PHASES,
        **options: Any,
    ) -> None:
        if certainty_threshold not in range(1, 6):
            raise ConfigError(
                f"certainty_threshold must be an integer from 1 to 5, not {certainty_threshold!r}"
            )
        if not phases or any(phase not in PHASES for phase in phases):
            raise ConfigError(f"phases must be a non-empty subset of {PHASES}, not {phases!r}")
        self.images_root = images_folder(images_root)
        self.certainty_threshold = certainty_threshold
        self.chest_box = chest_box
        self.phases = tuple(phases)
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        records = []
        for phase in self.phases:
            path = self.root / "main_data" / f"metadata_phase_{phase}.csv"
            # phase 1 has its own finding list: its missing phase 2-3 columns stay NaN (see module doc)
            required = [*METADATA_COLUMNS, *(LABELS if phase > 1 else ())]
            text_columns = {"id": str, "image": str, "subject_id": str, "dicom_id": str, "split": str}
            frame = read_csv(path, required=required, dtype=text_columns)
            frame = frame[~_flags(frame, "eye_tracking_data_discarded", path)]
            if frame[["id", "image", "subject_id"]].isna().any().any():
                raise DataError(path, "blank id, image or subject_id in a kept reading")
            labels = self._labels(frame, path)
            sizes = numeric_columns(frame, ["image_size_y", "image_size_x"], path)
            if not (sizes > 0).all():
                raise DataError(path, "image_size_x and image_size_y must be positive")
            for row, label_row, size in zip(frame.to_dict("records"), labels, sizes, strict=True):
                records.append(self._record(row, label_row, (int(size[0]), int(size[1])), phase))
        return drop_missing_images(records, self.name)

    def _labels(self, frame: pd.DataFrame, path: Path) -> np.ndarray:
        """N x len(LABELS) targets; NaN for findings this phase did not ask about."""
        labels = np.full((len(frame), len(LABELS)), np.nan, dtype=np.float32)
        for j, label in enumerate(LABELS):
            if label in frame.columns:
                labels[:, j] = (
                    _flags(frame, label, path)
                    if label in YES_NO_LABELS
                    else self._confident(frame, label, path)
                )
        return labels

    def _confident(self, frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
        """Whether certainties (1-5; 0 or blank = not chosen) reach the threshold."""
        certainty = np.nan_to_num(numeric_columns(frame, [column], path)[:, 0], nan=0.0)
        valid = np.isin(certainty, np.arange(6))
        if not valid.all():
            raise DataError(
                path, f"column {column!r}: certainty {certainty[~valid][0]:g} is not an integer from 0 to 5"
            )
        return certainty >= self.certainty_threshold

    def _record(self, row: dict[str, Any], labels: np.ndarray, size: tuple[int, int], phase: int) -> Record:
        reading = row["id"]
        folder = self.root / "main_data" / reading
        boxes, box_labels = self._ellipse_boxes(folder / "anomaly_location_ellipses.csv", size)
        if self.chest_box:
            chest = _read_boxes(folder / "chest_bounding_box.csv", size)[1][:1]
            boxes, box_labels = np.concatenate([boxes, chest]), box_labels + ["chest"] * len(chest)
        return Record(
            image_path=resolve_mimic_image(self.images_root, row["image"]),
            patient_id=row["subject_id"],
            labels=labels,
            boxes=boxes,
            box_labels=box_labels,
            fixations=_fixations(folder / "fixations.csv", size),
            report=_transcription(folder / "transcription.txt"),
            extra={
                "reading_id": reading,
                "dicom_id": cell_text(row.get("dicom_id")),
                "phase": phase,
                "split": cell_text(row.get("split")),
            },
        )

    def _ellipse_boxes(self, path: Path, size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
        """One clipped box per (confident ellipse, finding marked in it), in the file's ellipse order."""
        frame, boxes = _read_boxes(path, size, extra=["certainty"])
        names = [label for label in LABELS if label in frame.columns]
        marked = np.zeros((len(frame), len(names)), dtype=bool)
        for j, name in enumerate(names):
            marked[:, j] = _flags(frame, name, path)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows, columns = np.nonzero(marked & (self._confident(frame, "certainty", path) & nonempty)[:, None])
        return boxes[rows], [names[j] for j in columns]


def _read_boxes(
    path: Path, size: tuple[int, int], extra: Sequence[str] = ()
) -> tuple[pd.DataFrame, np.ndarray]:
    """A box file and its xmin, ymin, xmax, ymax clipped to the (height, width) image."""
    frame = read_csv(path, required=[*BOX_COLUMNS, *extra])
    boxes = numeric_columns(frame, BOX_COLUMNS, path)
    if np.isnan(boxes).any():
        raise DataError(path, "blank box coordinate")
    height, width = size
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return frame, boxes


def _fixations(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(x, y, duration) of the fixations that land on the image."""
    columns = ["x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation"]
    values = numeric_columns(read_csv(path, required=columns), columns, path)
    keep = on_image(values[:, :2], size)
    return np.column_stack([values[keep, :2], values[keep, 3] - values[keep, 2]]).astype(np.float32)


def _transcription(path: Path) -> str:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise DataError(path, f"not UTF-8 text ({error})") from None


def _flags(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A yes/no column (True/False or 1/0; blank is no) as a bool array."""
    text = frame[column].map(lambda value: "" if pd.isna(value) else str(value).strip().lower())
    unknown = ~text.isin(_TRUE | _FALSE)
    if unknown.any():
        raise DataError(path, f"column {column!r} holds {frame[column][unknown].iloc[0]!r}, not True/False")
    return text.isin(_TRUE).to_numpy()


def load_mention_spans(path: str | Path) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """Per reading id and finding, the [start, end] character spans of the finding's mentions in the report.

    Reads REFLACX's manually labelled reports (``manually_labeled_reports_3.csv``, phase-3 readings):
    columns ``IDs`` and ``<finding in lower case>_location``, each cell a list of [start, end] pairs.
    Cells are parsed as JSON, never evaluated; findings are keyed by their name in ``REFLACX.all_labels``
    (the file has no Support devices column), with an empty list where the report does not mention one.
    """
    path = Path(path)
    frame = read_csv(path, required=["IDs"], encoding="utf-8-sig", dtype=str, keep_default_na=False)
    by_lower = {label.lower(): label for label in LABELS}
    columns = {}
    for column in frame.columns.drop("IDs"):
        finding = column.removesuffix("_location").lower()
        if not column.endswith("_location") or finding not in by_lower:
            raise DataError(path, f"column {column!r} is not '<REFLACX finding>_location'")
        columns[column] = by_lower[finding]
    return {
        row["IDs"]: {label: _spans(row[column], path, row["IDs"]) for column, label in columns.items()}
        for row in frame.to_dict("records")
    }


def _spans(cell: str, path: Path, reading: str) -> list[tuple[int, int]]:
    try:
        pairs = json.loads(cell)
    except json.JSONDecodeError:
        pairs = None
    if not isinstance(pairs, list) or not all(_is_span(pair) for pair in pairs):
        raise DataError(path, f"{reading}: {cell!r} is not a list of [start, end] character spans")
    return [(start, end) for start, end in pairs]


def _is_span(pair: object) -> bool:
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and all(type(v) is int for v in pair)
        and 0 <= pair[0] <= pair[1]
    )
