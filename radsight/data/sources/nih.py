"""NIH ChestX-ray14 (Wang et al. 2017) with NIH lesion boxes and RSNA pneumonia boxes.

Layout: ``Data_Entry_2017_v2020.csv`` (one row per image: ``|``-separated findings, patient, view, original
size and pixel spacing), ``images/<Image Index>``, ``nih_bboxes_BBox_List_2017.csv`` (Image Index, Finding
Label, x, y, w, h) and ``rsna_pneumonia_boxes.csv`` (nih_image_index, patientId, x, y, width, height,
Target, match_mse: RSNA Pneumonia Challenge rows joined to NIH file names). Both box tables must be in the
frame of the image files (512 px in the shared extract; the original release pairs 1024 px images with a
1024 px box list). Rows whose image is absent are dropped, so a partial download works.

Labels: the 14 ChestX-ray14 findings; "No Finding" is all zeros. NIH's box label "Infiltrate" is renamed
"Infiltration" to match the label name; RSNA boxes (Target 1) are labelled "Pneumonia". When several RSNA
patientIds were matched to one NIH file, only the boxes of the closest match (lowest ``match_mse``) are
kept, so the same radiograph's boxes are never counted twice.

Pixel spacing is (row, column) in mm like DICOM's PixelSpacing, rescaled from the original acquisition
to the file's size when the image is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from radsight.data.sample import Sample
from radsight.data.sources.base import (
    Record,
    SourceDataset,
    boxes_by_image,
    cell_value,
    drop_missing_images,
    multi_hot,
    numeric_columns,
    read_csv,
)
from radsight.errors import ConfigError, DataError

BoxSource = Literal["nih", "rsna", "both", "none"]
BOX_SOURCES = get_args(BoxSource)
NO_FINDING = "No Finding"
NIH_BOX_LABELS = {"Infiltrate": "Infiltration"}
# pandas splits the header "OriginalImage[Width,Height]" at its comma, and likewise the spacing.
SIZE_COLUMNS = ("Height]", "OriginalImage[Width")
SPACING_COLUMNS = ("y]", "OriginalImagePixelSpacing[x")
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
NIH_BOX_NUMBERS = ["x", "y", "w", "h"]
RSNA_BOX_NUMBERS = ["x", "y", "width", "height", "Target", "match_mse"]


class NIHChestXray14(SourceDataset):
    """ChestX-ray14 images with their 14 labels and, by default, NIH and RSNA lesion boxes."""

    name = "nih"
    all_labels = (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural_Thickening",
        "Hernia",
    )

    def __init__(self, root: str | Path, *, boxes: BoxSource = "both", **options: Any) -> None:
        """``boxes``: which box tables to attach: "nih", "rsna", "both" or "none"."""
        if boxes not in BOX_SOURCES:
            raise ConfigError(f"nih: boxes must be one of {list(BOX_SOURCES)}, not {boxes!r}")
        self.box_source = boxes
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        entry_path = self.root / "Data_Entry_2017_v2020.csv"
        entries = read_csv(entry_path, required=[*ENTRY_COLUMNS, *SIZE_COLUMNS, *SPACING_COLUMNS])
        boxes = self._boxes()
        sizes = _positive_columns(entries, SIZE_COLUMNS, entry_path, "original size")
        spacings = _positive_columns(entries, SPACING_COLUMNS, entry_path, "original pixel spacing")
        records = []
        for number, row in enumerate(entries.to_dict("records"), start=1):
            image = str(row["Image Index"])
            findings = str(row["Finding Labels"])
            positives = [] if findings == NO_FINDING else findings.split("|")
            box, box_labels = boxes.get(image, (None, None))
            records.append(
                Record(
                    image_path=self.root / "images" / image,
                    patient_id=str(row["Patient ID"]),
                    labels=multi_hot(positives, self.all_labels, entry_path, f"row {number}"),
                    boxes=box,
                    box_labels=box_labels,
                    view=str(row["View Position"]),
                    extra={
                        "acquired_size": tuple(int(value) for value in sizes[number - 1]),
                        "acquired_spacing": tuple(float(value) for value in spacings[number - 1]),
                        "age": cell_value(row.get("Patient Age")),
                        "sex": cell_value(row.get("Patient Gender")),
                        "follow_up": cell_value(row.get("Follow-up #")),
                    },
                )
            )
        return drop_missing_images(records, self.name)

    def _boxes(self) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Boxes per image file name from the tables the ``boxes`` option selects."""
        tables = []
        if self.box_source in ("nih", "both"):
            path = self.root / "nih_bboxes_BBox_List_2017.csv"
            nih = read_csv(path, required=["Image Index", "Finding Label", *NIH_BOX_NUMBERS])
            numeric_columns(nih, NIH_BOX_NUMBERS, path)
            nih = nih.rename(columns={"Image Index": "image", "Finding Label": "label"})
            tables.append(nih.assign(label=nih["label"].replace(NIH_BOX_LABELS)))
        if self.box_source in ("rsna", "both"):
            path = self.root / "rsna_pneumonia_boxes.csv"
            rsna = read_csv(path, required=["nih_image_index", "patientId", *RSNA_BOX_NUMBERS])
            numeric_columns(rsna, RSNA_BOX_NUMBERS, path)
            closest = rsna.loc[rsna.groupby("nih_image_index")["match_mse"].idxmin(), "patientId"]
            rsna = rsna[rsna["patientId"].isin(closest) & (rsna["Target"] == 1)]
            rsna = rsna.rename(columns={"nih_image_index": "image", "width": "w", "height": "h"})
            tables.append(rsna.assign(label="Pneumonia"))
        if not tables:
            return {}
        columns = ["image", "label", "x", "y", "w", "h"]
        boxes = pd.concat([table[columns] for table in tables], ignore_index=True)
        return boxes_by_image(boxes, "image", ("x", "y", "w", "h"), "label")

    def load(self, record: Record) -> Sample:
        """Read as any source does, then rescale the acquisition's pixel spacing to the file's size."""
        sample = super().load(record)
        rows, columns = record.extra["acquired_size"]
        row_mm, column_mm = record.extra["acquired_spacing"]
        height, width = sample.size
        sample.meta.pixel_spacing = (row_mm * rows / height, column_mm * columns / width)
        return sample


def _positive_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> np.ndarray:
    """The original size or pixel spacing columns, which rescale the spacing and so must be positive."""
    values = numeric_columns(frame, columns, path)
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)).all(axis=1))
    if len(bad):
        row = int(bad[0])
        raise DataError(path, f"row {row + 1}: {what} {values[row].tolist()} is not two positive numbers")
    return values
