"""EGD-CXR ("Eye Gaze Data for Chest X-rays"): one radiologist's gaze and dictation on 1,083 MIMIC-CXR images.

Layout of ``root``: ``master_sheet.csv`` (one row per image: the one-hot classes Normal / CHF /
pneumonia and the screen padding), ``fixations.csv``, ``bounding_boxes.csv`` (anatomy boxes) and
``audio_segmentation_transcripts/<dicom_id>/`` (``transcript.json`` and anatomy masks such as
``left_lung.png``). The images are not part of EGD-CXR: they are read from the user's MIMIC-CXR or
MIMIC-CXR-JPG copy (option ``images_root``), where a listed ``.dcm`` may be met by the ``.jpg``;
images missing there are dropped, so a copy of just the images EGD-CXR uses works.

Screen to image. Each image, W x H pixels, was shown resized with its aspect kept and zero-padded to a
1920 x 1080 screen. The sheet gives the padding in screen pixels (``image_top_pad``, ``image_bottom_pad``,
``image_left_pad``, ``image_right_pad``), so the image filled the screen rectangle
[left, 1920 - right] x [top, 1080 - bottom]. The tracker's FPOGX and FPOGY are fractions of the screen
from its top-left corner; with sx = FPOGX * 1920 and sy = FPOGY * 1080, a linear map of that rectangle
onto the image gives::

    x = (sx - left) * W / (1920 - left - right)
    y = (sy - top) * H / (1080 - top - bottom)

so the rectangle's centre lands on (W/2, H/2) and its corners on (0, 0) and (W, H). The dataset computed
X_ORIGINAL/Y_ORIGINAL with this map (truncated to integers, -1 off the image); those are used where they
are >= 0, the other rows are mapped here with the size from the image file's header, and fixations that
land off the image are dropped. Only valid fixations (FPOGV = 1) count, with FPOGD as the duration; rows
for images that the master sheet does not list are the calibration screens and are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radsight.data.image_io import read_image_size
from radsight.data.sources.base import (
    Record,
    SourceDataset,
    cell_text,
    drop_missing_images,
    numeric_columns,
    read_csv,
)
from radsight.data.sources.gaze_common import images_folder, on_image, resolve_mimic_image
from radsight.errors import DataError

SCREEN_WIDTH, SCREEN_HEIGHT = 1920, 1080
PAD_COLUMNS = ("image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad")
LUNG_MASKS = ("left_lung", "right_lung")
# fixations.csv columns kept per image, in this order
_GAZE_COLUMNS = ("FPOGX", "FPOGY", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL")


def screen_to_image(gaze: np.ndarray, pads: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """Map N x 2 screen fractions (FPOGX, FPOGY) to (x, y) pixels of a (height, width) image.

    ``pads`` are the screen pixels of padding (top, bottom, left, right) around the shown image.
    """
    top, bottom, left, right = pads
    height, width = size
    x = (gaze[:, 0] * SCREEN_WIDTH - left) * width / (SCREEN_WIDTH - left - right)
    y = (gaze[:, 1] * SCREEN_HEIGHT - top) * height / (SCREEN_HEIGHT - top - bottom)
    return np.stack([x, y], axis=1)


class EGDCXR(SourceDataset):
    """EGD-CXR: single-label Normal / CHF / pneumonia, gaze, anatomy boxes, lung masks and the dictation."""

    name = "egd"
    all_labels = ("Normal", "CHF", "pneumonia")

    def __init__(self, root: str | Path, *, images_root: str | Path, **options: Any) -> None:
        self.images_root = images_folder(images_root)
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        path = self.root / "master_sheet.csv"
        sheet = read_csv(
            path,
            required=["dicom_id", "path", "patient_id", *self.all_labels, *PAD_COLUMNS],
            dtype={"dicom_id": str, "path": str, "patient_id": str, "study_id": str},
        )
        labels = numeric_columns(sheet, self.all_labels, path)
        one_hot = ((labels == 0) | (labels == 1)).all(axis=1) & (labels.sum(axis=1) == 1)
        pads = numeric_columns(sheet, PAD_COLUMNS, path)
        top, bottom, left, right = pads.T
        fits = (pads >= 0).all(axis=1) & (left + right < SCREEN_WIDTH) & (top + bottom < SCREEN_HEIGHT)
        present = sheet[["dicom_id", "path", "patient_id"]].notna().all(axis=1).to_numpy()
        checks = (
            ("blank dicom_id, path or patient_id", present),
            ("classes Normal/CHF/pneumonia are not one-hot", one_hot),
            ("image pads are negative or fill the screen", fits),
        )
        for problem, ok in checks:
            if not ok.all():
                raise DataError(path, f"line {int(np.argmin(ok)) + 2}: {problem}")
        gaze = self._gaze_by_image()
        boxes = self._boxes_by_image()
        records = []
        for row, label_row, pad_row in zip(sheet.to_dict("records"), labels, pads, strict=True):
            dicom_id = row["dicom_id"]
            image_path = resolve_mimic_image(self.images_root, row["path"])
            folder = self.root / "audio_segmentation_transcripts" / dicom_id
            image_boxes, box_labels = boxes.get(dicom_id, (None, None))
            records.append(
                Record(
                    image_path=image_path,
                    patient_id=row["patient_id"],
                    labels=label_row.astype(np.float32),
                    boxes=image_boxes,
                    box_labels=box_labels,
                    mask_paths={
                        m: folder / f"{m}.png" for m in LUNG_MASKS if (folder / f"{m}.png").is_file()
                    },
                    fixations=_image_fixations(gaze.get(dicom_id), pad_row, image_path),
                    report=_transcript(folder / "transcript.json"),
                    view=cell_text(row.get("ViewPosition")),
                    extra={"dicom_id": dicom_id, "study_id": cell_text(row.get("study_id"))},
                )
            )
        return drop_missing_images(records, self.name)

    def _gaze_by_image(self) -> dict[str, np.ndarray]:
        """Valid fixations by DICOM_ID: N x 5 (FPOGX, FPOGY, FPOGD, X_ORIGINAL, Y_ORIGINAL; NaN: absent)."""
        path = self.root / "fixations.csv"
        frame = read_csv(
            path, required=["DICOM_ID", "FPOGX", "FPOGY", "FPOGD", "FPOGV"], dtype={"DICOM_ID": str}
        )
        for column in _GAZE_COLUMNS[3:]:
            if column not in frame.columns:  # older exports lack the dataset's own mapping: map every row
                frame[column] = np.nan
        valid = numeric_columns(frame, ["FPOGV"], path)[:, 0] == 1
        frame = frame[valid]
        table = numeric_columns(frame, _GAZE_COLUMNS, path)
        return {key: table[rows] for key, rows in frame.groupby("DICOM_ID", sort=False).indices.items()}

    def _boxes_by_image(self) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Anatomy boxes per dicom_id as xyxy (the file's columns are x1, x2, y1, y2) with their names."""
        path = self.root / "bounding_boxes.csv"
        if not path.is_file():
            return {}
        frame = read_csv(
            path,
            required=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"],
            dtype={"dicom_id": str, "bbox_name": str},
        )
        coords = numeric_columns(frame, ["x1", "y1", "x2", "y2"], path)
        names = frame["bbox_name"].to_numpy()
        return {
            key: (coords[rows], names[rows].tolist())
            for key, rows in frame.groupby("dicom_id", sort=False).indices.items()
        }


def _image_fixations(table: np.ndarray | None, pads: np.ndarray, image_path: Path) -> np.ndarray | None:
    """(x, y, duration) on the image from one image's valid fixations, mapping rows without X_ORIGINAL."""
    if table is None:
        return None
    points = table[:, 3:5].copy()
    keep = (points >= 0).all(axis=1)
    if not keep.all():
        try:
            size = read_image_size(image_path)
        except DataError:
            # The image itself is unusable; loading the sample reports that, so keep the known points only.
            size = None
        if size is not None:
            points[~keep] = screen_to_image(table[~keep, :2], pads, size)
            keep |= on_image(points, size)
    return np.column_stack([points[keep], table[keep, 2]]).astype(np.float32)


def _transcript(path: Path) -> str | None:
    """The dictated report: the transcript's phrases in order, joined by spaces; None without a transcript."""
    if not path.is_file():
        return None
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["time_stamped_text"]
        phrases = [str(item["phrase"]).strip() for item in items]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise DataError(
            path, f"no readable time_stamped_text phrases ({type(error).__name__}: {error})"
        ) from None
    return " ".join(phrase for phrase in phrases if phrase)
