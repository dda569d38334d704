"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM, TCIA): scanned-film mammograms with benign and
malignant masses and calcifications, each outlined by an ROI mask.

Layout: the four case-description CSVs (``{mass,calc}_case_description_{train,test}_set.csv``, in the
root or ``csv/``) and the DICOM series, either under the paths the CSVs give or as TCIA's downloader
writes them: ``[CBIS-DDSM/]<series folder>/<date-study>/<number-description>/1-1.dcm``, where only the
series folder (the path's first part, e.g. ``Mass-Training_P_00001_LEFT_CC``) matches the CSV. Files
converted to PNG under the same names are found too.

Each CSV row is one abnormality. Rows of the same breast view (patient, side, view) are one image, so a
mass and a calcification of one view share it: the image is "benign" when any of its abnormalities is
BENIGN or BENIGN_WITHOUT_CALLBACK, "malignant" when any is MALIGNANT, and each class mask is the union of
that class's ROI masks. A mask series may also hold the cropped lesion image, and the CSVs swap the two
for some rows, so the mask is the candidate file whose size is the mammogram's. CBIS-DDSM has no normal
views, and a class absent from a view has no mask (rather than an empty one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radsight.data.image_io import read_image_size, read_mask
from radsight.data.sample import Sample
from radsight.data.sources.base import Record, SourceDataset, cell_text, read_csv
from radsight.errors import ConfigError, DataError

KINDS = ("mass", "calc")
SUBSETS = ("train", "test")
PATHOLOGY = {"BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign", "MALIGNANT": "malignant"}
IMAGE_SUFFIXES = (".dcm", ".png")
COLUMNS = ("patient_id", "left or right breast", "image view", "pathology", "image file path")
ROI_COLUMN = "ROI mask file path"


class CBISDDSM(SourceDataset):
    """Full mammogram views with view-level benign/malignant labels and per-class lesion masks."""

    name = "cbis_ddsm"
    all_labels = ("benign", "malignant")

    def __init__(
        self,
        root: str | Path,
        *,
        abnormalities: Sequence[str] = KINDS,
        subsets: Sequence[str] = SUBSETS,
        **options: Any,
    ) -> None:
        """``abnormalities``: which CSVs to read ("mass", "calc"); ``subsets``: CBIS-DDSM's official
        "train" and/or "test" split (radsight's own patient split applies within what is kept)."""
        for given, allowed, what in ((abnormalities, KINDS, "abnormalities"), (subsets, SUBSETS, "subsets")):
            unknown = [value for value in given if value not in allowed]
            if unknown or not given:
                raise ConfigError(f"cbis_ddsm {what} must be among {list(allowed)}, got {list(given)}")
        self.abnormalities = tuple(abnormalities)
        self.subsets = tuple(subsets)
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        series = self._series_folders()
        views: dict[tuple[str, str, str], Record] = {}
        for kind in self.abnormalities:
            for subset in self.subsets:
                path = self._csv(f"{kind}_case_description_{subset}_set.csv")
                frame = read_csv(path, [*COLUMNS, ROI_COLUMN], dtype=str)
                for row_number, row in enumerate(frame.to_dict("records"), start=2):
                    where = f"row {row_number}"
                    pathology = cell_text(row["pathology"]) or ""
                    if pathology.upper() not in PATHOLOGY:
                        raise DataError(
                            path, f"{where}: unknown pathology {pathology!r}; expected {list(PATHOLOGY)}"
                        )
                    label = PATHOLOGY[pathology.upper()]
                    side = (cell_text(row["left or right breast"]) or "").upper()
                    view = (cell_text(row["image view"]) or "").upper()
                    patient = cell_text(row["patient_id"]) or ""
                    if side not in ("LEFT", "RIGHT") or not view or not patient:
                        raise DataError(path, f"{where}: needs patient_id, LEFT/RIGHT and an image view")
                    key = (patient, side, view)
                    if key not in views:
                        image = self._locate(cell_text(row["image file path"]), series, path, where)
                        views[key] = Record(
                            image_path=image,
                            patient_id=patient,
                            labels=np.zeros(len(self.all_labels), dtype=np.float32),
                            view=view,
                            extra={"laterality": side[0], "subset": subset, "rois": []},
                        )
                    record = views[key]
                    assert record.labels is not None
                    record.labels[self.all_labels.index(label)] = 1.0
                    roi = self._candidates(cell_text(row[ROI_COLUMN]), series, path, where)
                    record.extra["rois"].append((label, roi))
        return list(views.values())

    def _csv(self, name: str) -> Path:
        for folder in (self.root, self.root / "csv"):
            if (folder / name).is_file():
                return folder / name
        raise DataError(
            self.root / name, "CBIS-DDSM case description CSV not found (looked in the root and csv/)"
        )

    def _series_folders(self) -> dict[str, Path]:
        """Series folder name -> folder, from the root and a CBIS-DDSM/ subfolder."""
        folders: dict[str, Path] = {}
        for parent in (self.root, self.root / "CBIS-DDSM"):
            if parent.is_dir():
                folders.update({entry.name: entry for entry in parent.iterdir() if entry.is_dir()})
        return folders

    def _candidates(self, given: str | None, series: dict[str, Path], csv: Path, where: str) -> list[Path]:
        """Files a CSV path may refer to: the path itself (or its PNG), else every image of its series."""
        if not given:
            raise DataError(csv, f"{where}: empty file path")
        relative = Path(given.strip().replace("\\", "/"))
        for candidate in (self.root / relative, (self.root / relative).with_suffix(".png")):
            if candidate.is_file():  # the file first, then its siblings (the CSVs swap mask and crop)
                return [candidate, *(p for p in _images(candidate.parent) if p != candidate)]
        folder = series.get(relative.parts[0])
        if folder is None:
            raise DataError(csv, f"{where}: no file {relative} and no series folder {relative.parts[0]!r}")
        found = _images(folder)
        if not found:
            raise DataError(folder, f"{where}: series folder holds no .dcm or .png file")
        return found

    def _locate(self, given: str | None, series: dict[str, Path], csv: Path, where: str) -> Path:
        """The full mammogram: the CSV's file when it exists, else the only image of its series."""
        found = self._candidates(given, series, csv, where)
        if len(found) > 1 and not (self.root / str(given).strip()).is_file():
            raise DataError(found[0].parent, f"{where}: {len(found)} images where one full mammogram belongs")
        return found[0]

    def has_annotation(self, record: Record) -> bool:
        return bool(record.extra["rois"]) or super().has_annotation(record)

    def load(self, record: Record) -> Sample:
        """The view, with each class mask the union of its ROI masks (chosen by the view's size)."""
        sample = super().load(record)
        size = sample.size
        masks: dict[str, torch.Tensor] = {}
        for label, candidates in record.extra["rois"]:
            mask = _roi_mask(candidates, size)
            masks[label] = masks[label] | mask if label in masks else mask
        extra = {k: v for k, v in sample.meta.extra.items() if k != "rois"}
        return sample.replace(masks=masks or None, meta=replace(sample.meta, extra=extra))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _roi_mask(candidates: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """The candidate file of the mammogram's size, read as a binary mask."""
    sizes = {path: read_image_size(path) for path in candidates}
    fitting = [path for path, found in sizes.items() if found == size]
    if not fitting:
        listed = ", ".join(f"{p.name} {w}x{h}" for p, (h, w) in sizes.items())
        raise DataError(candidates[0], f"no ROI mask of the mammogram's size {size[1]}x{size[0]} ({listed})")
    return read_mask(fitting[0], size)
