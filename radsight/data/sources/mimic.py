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

Reports come from MIMIC-CXR (the DICOM release's ``mimic-cxr-reports.zip``, not part of MIMIC-CXR-JPG),
one free-text file per study at ``files/p{first two digits}/p{subject_id}/s{study_id}.txt`` under
``reports_dir`` (default: ``root``, where unpacking the zip beside the images puts them). A report is
its FINDINGS and IMPRESSION sections, headed, in that order ("FINDINGS: ... IMPRESSION: ..."), so a
method can keep either; each section runs to the next header ("NOTIFICATION:", "RECOMMENDATION(S):"),
and "FINDINGS AND IMPRESSION:" counts as the impression. Indication, technique and comparison are
left out: they are the request and the history, not what the image shows. A study without a report
file, or whose report has neither section, has no report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radsight.data.sources.base import Record, cell_text, decode_text, drop_missing_images, read_csv
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
REPORT_SECTIONS = {
    "FINDINGS": "findings",
    "IMPRESSION": "impression",
    "FINDINGS AND IMPRESSION": "impression",
}
"""Report header -> the section it starts."""
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/&,-]*[A-Z)])[ \t]*:", re.MULTILINE)


class MIMICCXRJPG(LabellerSource):
    """MIMIC-CXR-JPG images of one official split with their study's 14 labeller findings."""

    name = "mimic_cxr_jpg"
    splits = SPLITS

    def __init__(self, root: str | Path, *, reports_dir: str | Path | None = None, **options: Any) -> None:
        """``reports_dir``: the folder holding MIMIC-CXR's report ``files/`` (default: ``root``)."""
        self.reports_dir = None if reports_dir is None else Path(reports_dir)
        if self.reports_dir is not None and not (self.reports_dir / "files").is_dir():
            raise DataError(self.reports_dir, "mimic_cxr_jpg reports folder has no files/ folder")
        super().__init__(root, **options)

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
        folder = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study
        reports = {path: read_report((self.reports_dir or self.root) / f"{path}.txt") for path in set(folder)}
        records = [
            Record(
                image_path=self.root / study_folder / f"{dicom_id}.jpg",
                patient_id=patient,
                labels=targets[row] if row >= 0 else unlabelled,
                report=reports[study_folder],
                view=cell_text(view),
                extra={"dicom_id": dicom_id, "study_id": study_id, "split": self.split},
            )
            for study_folder, patient, study_id, dicom_id, view, row in zip(
                folder, subject, study, dicom, images["ViewPosition"], rows, strict=True
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


def read_report(path: Path) -> str | None:
    """The FINDINGS and IMPRESSION sections of a MIMIC-CXR report file, headed, on one line; None when
    the file is missing or has neither section."""
    if not path.is_file():
        return None
    text = decode_text(path)
    headers = list(_HEADER.finditer(text))
    sections: dict[str, str] = {}
    ends = [header.start() for header in headers[1:]] + [len(text)] if headers else []
    for header, end in zip(headers, ends, strict=True):
        section = REPORT_SECTIONS.get(" ".join(header.group(1).split()))
        body = " ".join(text[header.end() : end].split())
        if section and body:
            sections[section] = f"{sections[section]} {body}" if section in sections else body
    parts = [f"{name.upper()}: {sections[name]}" for name in ("findings", "impression") if name in sections]
    return " ".join(parts) or None
