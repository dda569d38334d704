"""CheXpert (Irvin et al., 2019): Stanford chest radiographs with 14 findings labelled from the reports.

Layout of ``root`` (``CheXpert-v1.0`` or ``CheXpert-v1.0-small``): ``train.csv`` and ``valid.csv`` with
``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and the 14 findings (1 / 0 / -1 / blank; see
``chexpert_labels`` for how they become targets). ``Path`` begins with the dataset folder's own name
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), so it is resolved from root's
parent when its first folder is root's name, and from root otherwise (CSV files kept beside the image
folder). The patient id is the ``patientNNNNN`` folder. Rows whose image is missing are dropped, so a
partial download works.
"""

from __future__ import annotations

import math

from radsight.data.sources.base import (
    Record,
    cell_text,
    drop_missing_images,
    numeric_columns,
    read_csv,
)
from radsight.data.sources.chexpert_labels import (
    CHEXPERT_LABELS,
    VIEW_GROUPS,
    LabellerSource,
    chexpert_targets,
)
from radsight.errors import DataError

SPLITS = ("train", "valid")
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


class CheXpert(LabellerSource):
    """CheXpert images of one split with the 14 labeller findings (``uncertain`` policy for -1)."""

    name = "chexpert"
    splits = SPLITS

    def _scan(self) -> list[Record]:
        path = self.root / f"{self.split}.csv"
        text = {column: str for column in ("Path", "Sex", "Frontal/Lateral", "AP/PA")}
        frame = read_csv(path, required=[*COLUMNS, *CHEXPERT_LABELS], dtype=text)
        group = frame["Frontal/Lateral"].str.strip().str.lower()
        if frame["Path"].isna().any() or not group.isin(VIEW_GROUPS).all():
            raise DataError(path, "every row needs a Path and a Frontal/Lateral of Frontal or Lateral")
        frame = frame[group.isin(self.views)]
        targets = chexpert_targets(frame, self.uncertain, path)
        ages = numeric_columns(frame, ["Age"], path)[:, 0]
        patients = frame["Path"].str.extract(r"(?:^|/)(patient\d+)/", expand=False)
        if patients.isna().any():
            raise DataError(
                path, f"Path {frame['Path'][patients.isna()].iloc[0]!r} has no patientNNNNN folder"
            )
        # resolved, so that root "." or a symlink still shows the folder name that Path begins with
        root = self.root.resolve()
        in_parent = frame["Path"].str.startswith(root.name + "/")
        # the view is AP/PA where given (frontal images), else Frontal/Lateral
        ap_pa = frame["AP/PA"].str.strip()
        views = ap_pa.where(ap_pa.fillna("") != "", frame["Frontal/Lateral"].str.strip())
        records = [
            Record(
                image_path=(root.parent if parent else root) / relative,
                patient_id=patient,
                labels=target,
                view=view,
                extra={"sex": cell_text(sex), "age": None if math.isnan(age) else int(age)},
            )
            for relative, parent, patient, target, view, sex, age in zip(
                frame["Path"], in_parent, patients, targets, views, frame["Sex"], ages, strict=True
            )
        ]
        return drop_missing_images(records, self.name)
