"""COVID-19 image data collection (Cohen et al., ieee8023/covid-chestxray-dataset), X-ray rows.

Layout: ``metadata.csv`` (one row per image), ``images/``, ``resize_manifest.csv`` (size of every file as
stored), ``annotations/lungVAE-masks/<stem>_mask.png`` (model-made lung masks, mask name ``"lungs"``) and
``annotations/lung_bounding_boxes_rescaled.csv`` (x, y, w, h per lung, in the stored frame).

Labels come from ``finding``, which may hold several findings ("COVID-19, ARDS"). Each finding sets its
own label, its pathogen class (Viral, Bacterial, Fungal) and the umbrella "Pneumonia", so a model can be
trained at any level of the hierarchy; "No Finding" is all zeros. Lipoid pneumonia is not infectious but
sets "Pneumonia" too, as upstream later filed it under "Pneumonia/Lipoid"; ARDS alone does not. Every
finding of ``metadata.csv`` has a label, even Chlamydophila, whose 2 images are absent from the extract.

Lung boxes: a box overhanging its image by at most ``BOX_OVERHANG`` (1%) of that side is rounding from the
rescale and is clipped; a larger overhang means the image was annotated in another frame (3 images whose
annotation JSON gives a different size), so every box of that image is dropped with a warning.

Rows listing the same image file twice (upstream patients 285/339 and 287/340) keep the first row only,
so one radiograph never counts as two patients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radsight.data.sources.base import (
    Record,
    SourceDataset,
    boxes_by_image,
    cell_text,
    cell_value,
    drop_missing_images,
    multi_hot,
    read_csv,
)
from radsight.errors import DataError

log = logging.getLogger(__name__)

FRONTAL_VIEWS = ("PA", "AP", "AP Supine")
# Largest overhang, as a fraction of the image side, that is clipped rather than dropped.
BOX_OVERHANG = 0.01

_VIRAL = ("Viral", "Pneumonia")
_BACTERIAL = ("Bacterial", "Pneumonia")
FINDING_LABELS: dict[str, tuple[str, ...]] = {
    "No Finding": (),
    "Pneumonia": ("Pneumonia",),
    "COVID-19": ("COVID-19", *_VIRAL),
    "SARS": ("SARS", *_VIRAL),
    "Influenza": ("Influenza", *_VIRAL),
    "Varicella": ("Varicella", *_VIRAL),
    "Bacterial": _BACTERIAL,
    "Streptococcus": ("Streptococcus", *_BACTERIAL),
    "Klebsiella": ("Klebsiella", *_BACTERIAL),
    "Mycoplasma Bacterial Pneumonia": ("Mycoplasma", *_BACTERIAL),
    "Legionella": ("Legionella", *_BACTERIAL),
    "E.Coli": ("E.Coli", *_BACTERIAL),
    "Chlamydophila": ("Chlamydophila", *_BACTERIAL),
    "Pneumocystis": ("Pneumocystis", "Fungal", "Pneumonia"),
    "Lipoid": ("Lipoid", "Pneumonia"),
    "ARDS": ("ARDS",),
}


class CovidChestXray(SourceDataset):
    """Frontal (by default) chest X-rays with findings, clinical notes, lung masks and lung boxes."""

    name = "covid"
    all_labels = (
        "Pneumonia",
        "Viral",
        "Bacterial",
        "Fungal",
        "COVID-19",
        "SARS",
        "Influenza",
        "Varicella",
        "Streptococcus",
        "Klebsiella",
        "Mycoplasma",
        "Legionella",
        "E.Coli",
        "Chlamydophila",
        "Pneumocystis",
        "Lipoid",
        "ARDS",
    )

    def __init__(
        self, root: str | Path, *, views: Sequence[str] | None = FRONTAL_VIEWS, **options: Any
    ) -> None:
        """``views``: values of the ``view`` column to keep (e.g. ``["L"]`` for laterals); None keeps all."""
        self.views = None if views is None else tuple(views)
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        metadata_path = self.root / "metadata.csv"
        metadata = read_csv(metadata_path, required=["patientid", "finding", "view", "modality", "filename"])
        xrays = metadata[metadata["modality"] == "X-ray"]
        rows = xrays.drop_duplicates("filename")
        if len(rows) < len(xrays):
            repeated = len(xrays) - len(rows)
            log.warning("covid: dropped %d rows repeating the image file of an earlier row", repeated)
        if self.views is not None:
            rows = rows[rows["view"].isin(self.views)]
        masks = self.root / "annotations" / "lungVAE-masks"
        boxes = self._lung_boxes()
        records = []
        for index, row in zip(rows.index, rows.to_dict("records"), strict=True):
            filename = str(row["filename"])
            mask = masks / f"{Path(filename).stem}_mask.png"
            box, box_labels = boxes.get(filename, (None, None))
            records.append(
                Record(
                    image_path=self.root / "images" / filename,
                    patient_id=str(row["patientid"]),
                    labels=self._labels(str(row["finding"]), metadata_path, f"row {int(index) + 1}"),
                    boxes=box,
                    box_labels=box_labels,
                    mask_paths={"lungs": mask} if mask.is_file() else {},
                    report=cell_text(row.get("clinical_notes")),
                    view=str(row["view"]),
                    extra={
                        "finding": str(row["finding"]),
                        **{key: cell_value(row.get(key)) for key in ("offset", "sex", "age", "license")},
                    },
                )
            )
        return drop_missing_images(records, self.name)

    def _labels(self, finding: str, path: Path, where: str) -> np.ndarray:
        """Multi-hot vector of every label the comma-separated findings imply."""
        implied: list[str] = []
        for part in finding.split(","):
            part = part.strip()
            if part not in FINDING_LABELS:
                raise DataError(path, f"{where}: unknown finding {part!r}; known: {sorted(FINDING_LABELS)}")
            implied.extend(FINDING_LABELS[part])
        return multi_hot(implied, self.all_labels, path, where)

    def _lung_boxes(self) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Lung boxes per image file, fitted to the stored image size (see the module docstring)."""
        table = read_csv(
            self.root / "annotations" / "lung_bounding_boxes_rescaled.csv",
            required=["filename", "label", "x", "y", "w", "h"],
        )
        sizes = read_csv(self.root / "resize_manifest.csv", required=["filename", "width", "height"])
        size_of = dict(zip(sizes["filename"], zip(sizes["width"], sizes["height"], strict=True), strict=True))
        fitted = {}
        grouped = boxes_by_image(table, "filename", ("x", "y", "w", "h"), "label")
        for filename, (boxes, labels) in grouped.items():
            if filename not in size_of:
                continue  # box of an image this extract does not hold
            width, height = size_of[filename]
            side = np.array([width, height, width, height], dtype=np.float32)
            overhang = np.maximum(-boxes[:, :2], boxes[:, 2:] - side[2:])
            if (overhang > BOX_OVERHANG * side[2:]).any():
                log.warning(
                    "covid: dropped the %d lung boxes of %s: they overhang its %dx%d frame by up to %.0f px",
                    len(boxes),
                    filename,
                    width,
                    height,
                    overhang.max(),
                )
                continue
            fitted[filename] = (np.clip(boxes, 0, side), labels)
        return fitted
