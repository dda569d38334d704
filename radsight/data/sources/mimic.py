"""MIMIC-CXR-JPG (Johnson et al., 2019): Beth Israel Deaconess chest radiographs with per-study labels.

Layout of ``root``: ``mimic-cxr-2.0.0-chexpert.csv`` (subject_id, study_id, the 14 findings),
``mimic-cxr-2.0.0-metadata.csv`` (dicom_id, subject_id, study_id, ViewPosition, ...) and
``mimic-cxr-2.0.0-split.csv`` (dicom_id, study_id, subject_id, split: train / validate / test), each
also accepted gzipped (``.csv.gz``, as distributed), and the images at
``files/p{first two digits of subject_id}/p{subject_id}/s{study_id}/{dicom_id}.jpg``.

The labeller read one report per study, so every image of a study gets the study's labels (1 / 0 / -1 /
blank; see ``chexpert_labels``); images of studies it did not label get NaN, not annotated. Views:
ViewPosition PA or AP is frontal, LATERAL or LL lateral; other positions (decubitus, oblique, swimmer's,
blank) are in neither group and left out. Rows whose image is missing are dropped, so a partial
download works.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radsight.data.sources.base import Record, cell_text, drop_missing_images, read_csv
from radsight.data.sources.chexpert_labels import (
    CHEXPERT_LABELS,
    LabellerSource,
    chexpert_targets,
)
from radsight.errors import DataError

# option value -> value of the split file's ``split`` column
SPLITS = {"train": "train", "valid": "validate", "test": "test"}
VIEW_GROUP = {"PA": "frontal", "AP": "frontal", "LATERAL": "lateral", "LL": "lateral"}
ID_COLUMNS = ("dicom_id", "subject_id", "study_id")


class MIMICCXRJPG(LabellerSource):
    """MIMIC-CXR-JPG images of one official split with their study's 14 labeller findings."""

    name = "mimic_cxr_jpg"
    splits = SPLITS

    def _scan(self) -> list[Record]:
        _, meta = self._table("metadata", [*ID_COLUMNS, "ViewPosition"])
        _, split = self._table("split", [*ID_COLUMNS, "split"])
        labels_path, labels = self._table("chexpert", ["subject_id", "study_id", *CHEXPERT_LABELS])
        in_split = meta["dicom_id"].isin(split.loc[split["split"] == SPLITS[self.split], "dicom_id"])
        group = meta["ViewPosition"].str.strip().str.upper().map(VIEW_GROUP)
        images = meta[in_split & group.isin(self.views)]
        studies = pd.Index(labels["subject_id"] + "/" + labels["study_id"])
        if studies.has_duplicates:
            raise DataError(
                labels_path, f"study {studies[studies.duplicated()][0]} (subject/study) is listed twice"
            )
        targets = chexpert_targets(labels, self.uncertain, labels_path)
        unlabelled = np.full(len(CHEXPERT_LABELS), np.nan, dtype=np.float32)
        rows = studies.get_indexer(images["subject_id"] + "/" + images["study_id"])
        subject, study, dicom = (images[column] for column in ("subject_id", "study_id", "dicom_id"))
        relative = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + dicom + ".jpg"
        records = [
            Record(
                image_path=self.root / path,
                patient_id=patient,
                labels=targets[row] if row >= 0 else unlabelled,
                view=cell_text(view),
                extra={"dicom_id": dicom_id, "study_id": study_id, "split": self.split},
            )
            for path, patient, study_id, dicom_id, view, row in zip(
                relative, subject, study, dicom, images["ViewPosition"], rows, strict=True
            )
        ]
        return drop_missing_images(records, self.name)

    def _table(self, kind: str, required: Sequence[str]) -> tuple[Path, pd.DataFrame]:
        """Read ``mimic-cxr-2.0.0-<kind>.csv``, or its ``.csv.gz`` when only that exists."""
        path = self.root / f"mimic-cxr-2.0.0-{kind}.csv"
        gzipped = path.with_name(path.name + ".gz")
        if not path.is_file() and gzipped.is_file():
            path = gzipped
        frame = read_csv(path, required=required, dtype={column: str for column in ID_COLUMNS})
        ids = [column for column in ID_COLUMNS if column in required]
        if frame[ids].isna().any().any():
            raise DataError(path, f"blank {' or '.join(ids)}")
        return path, frame
