"""CheXpert and MIMIC-CXR-JPG sources on small files written in the datasets' exact layouts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radsight.data.sources.chexpert import CheXpert
from radsight.data.sources.chexpert_labels import CHEXPERT_LABELS, chexpert_targets
from radsight.data.sources.mimic import MIMICCXRJPG
from radsight.errors import ConfigError, DataError

NAN = float("nan")
# One labeller row per study: blank for the findings not listed.
FIRST = {"Cardiomegaly": 1.0, "Edema": -1.0, "Pleural Effusion": 0.0, "Support Devices": 1.0}
SECOND = {"No Finding": 1.0}


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(80, dtype=np.uint8).reshape(8, 10) * 3).save(path)


def label_cells(values: dict[str, float]) -> list[float]:
    return [values.get(label, NAN) for label in CHEXPERT_LABELS]


def targets(values: dict[str, float], uncertain: float) -> list[float]:
    """What the labeller cells become: blank 0, -1 the policy's value."""
    return [uncertain if values.get(label) == -1 else values.get(label, 0.0) for label in CHEXPERT_LABELS]


def same(actual: object, expected: object) -> bool:
    return np.allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), equal_nan=True)


def test_chexpert_targets_policies() -> None:
    frame = pd.DataFrame([label_cells(FIRST)], columns=list(CHEXPERT_LABELS))
    for policy, value in (("ignore", NAN), ("zeros", 0.0), ("ones", 1.0)):
        assert same(chexpert_targets(frame, policy, Path("x.csv")), [targets(FIRST, value)])
    frame.loc[0, "Edema"] = 2.0
    with pytest.raises(DataError, match=r"x\.csv.*'Edema' holds 2"):
        chexpert_targets(frame, "ignore", Path("x.csv"))


# ---------------------------------------------------------------- CheXpert

CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]


def write_chexpert(folder: Path, images: Path) -> None:
    """train.csv / valid.csv in ``folder``; the images under ``images`` (the CheXpert-v1.0-small folder)."""
    rows = [
        ("train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP", FIRST),
        ("train/patient00001/study1/view2_lateral.jpg", "Female", 68, "Lateral", "", FIRST),
        ("train/patient00002/study1/view1_frontal.jpg", "Male", 41, "Frontal", "PA", SECOND),
    ]
    table = [
        [f"CheXpert-v1.0-small/{path}", sex, age, fl, appa, *label_cells(v)]
        for path, sex, age, fl, appa, v in rows
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table, columns=CHEXPERT_COLUMNS).to_csv(folder / "train.csv", index=False)
    valid = [["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
              *targets(FIRST, 1.0)]]  # fmt: skip
    pd.DataFrame(valid, columns=CHEXPERT_COLUMNS).to_csv(folder / "valid.csv", index=False)
    for path, *_ in rows:
        write_image(images / path)
    write_image(images / "valid/patient64541/study1/view1_frontal.jpg")


@pytest.fixture
def chexpert(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    write_chexpert(root, root)
    return root


def test_chexpert_frontal_train(chexpert: Path) -> None:
    dataset = CheXpert(chexpert)
    assert len(dataset) == 2
    assert dataset.patient_ids == ["patient00001", "patient00002"]
    assert same(dataset.label_matrix, [targets(FIRST, NAN), targets(SECOND, NAN)])
    # Path names the dataset folder itself: resolved from root's parent
    assert dataset.records[0].image_path == chexpert.resolve() / "train/patient00001/study1/view1_frontal.jpg"
    sample = dataset[0]
    assert sample.size == (8, 10)
    assert sample.meta.view == "AP" and sample.meta.extra == {"bits_stored": 8, "sex": "Female", "age": 68}


def test_chexpert_views_split_and_policies(chexpert: Path) -> None:
    both = CheXpert(chexpert, views=["frontal", "lateral"], uncertain="ones")
    assert len(both) == 3 and both.records[1].view == "Lateral"
    assert same(both.label_matrix[0], targets(FIRST, 1.0))
    assert same(CheXpert(chexpert, uncertain="zeros").label_matrix[0], targets(FIRST, 0.0))
    assert len(CheXpert(chexpert, views=["lateral"])) == 1
    valid = CheXpert(chexpert, split="valid", labels=["Edema", "No Finding"])
    assert valid.patient_ids == ["patient64541"]
    assert same(valid.label_matrix, [[1.0, 0.0]])


def test_chexpert_csv_beside_the_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_chexpert(root, root / "CheXpert-v1.0-small")
    dataset = CheXpert(root)
    expected = root.resolve() / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert dataset.records[0].image_path == expected
    assert dataset[1].size == (8, 10)


def test_chexpert_bad_options_and_columns(chexpert: Path) -> None:
    for options in ({"split": "test"}, {"uncertain": "U-Ones"}, {"views": ["AP"]}, {"views": "frontal"}):
        with pytest.raises(ConfigError):
            CheXpert(chexpert, **options)
    with pytest.raises(ConfigError, match="Cardiomegally"):
        CheXpert(chexpert, labels=["Cardiomegally"])
    train = chexpert / "train.csv"
    train.write_text(train.read_text().replace("Pleural Effusion", "Effusion"))
    with pytest.raises(DataError, match=r"train\.csv.*Pleural Effusion"):
        CheXpert(chexpert)


# ---------------------------------------------------------------- MIMIC-CXR-JPG

# dicom_id, subject_id, study_id, ViewPosition, split
IMAGES = [
    ("d1", "10000001", "50000001", "PA", "train"),
    ("d2", "10000001", "50000001", "LATERAL", "train"),
    ("d3", "10000002", "50000002", "AP", "train"),
    ("d4", "11000003", "50000003", "AP", "train"),  # its study has no labeller row
    ("d5", "10000002", "50000004", "PA", "test"),
    ("d6", "10000002", "50000005", "AP LLD", "validate"),  # decubitus: neither frontal nor lateral
    ("d7", "10000002", "50000006", "PA", "validate"),
]
STUDIES = {("10000001", "50000001"): FIRST, ("10000002", "50000002"): SECOND, ("10000002", "50000004"): FIRST,
           ("10000002", "50000006"): SECOND}  # fmt: skip


@pytest.fixture
def mimic(tmp_path: Path) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    meta = pd.DataFrame(
        [(d, s, t, v, 3056, 2544) for d, s, t, v, _ in IMAGES],
        columns=["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"],
    )
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    split = pd.DataFrame(
        [(d, t, s, sp) for d, s, t, _, sp in IMAGES], columns=["dicom_id", "study_id", "subject_id", "split"]
    )
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)  # as distributed: gzipped
    labels = pd.DataFrame(
        [[s, t, *label_cells(v)] for (s, t), v in STUDIES.items()],
        columns=["subject_id", "study_id", *CHEXPERT_LABELS],
    )
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    for dicom, subject, study, *_ in IMAGES:
        write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    return root


def test_mimic_train_frontal(mimic: Path) -> None:
    with gzip.open(mimic / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as handle:
        assert handle.readline().startswith("subject_id,study_id")
    dataset = MIMICCXRJPG(mimic)
    assert [r.extra["dicom_id"] for r in dataset.records] == ["d1", "d3", "d4"]
    assert dataset.patient_ids == ["10000001", "10000002", "11000003"]
    nan_row = [NAN] * len(CHEXPERT_LABELS)  # a study the labeller did not label is not annotated
    assert same(dataset.label_matrix, [targets(FIRST, NAN), targets(SECOND, NAN), nan_row])
    assert dataset.records[2].image_path == mimic / "files/p11/p11000003/s50000003/d4.jpg"
    sample = dataset[0]
    assert sample.size == (8, 10) and sample.meta.view == "PA" and sample.meta.extra["study_id"] == "50000001"


def test_mimic_splits_views_and_policy(mimic: Path) -> None:
    assert [r.extra["dicom_id"] for r in MIMICCXRJPG(mimic, split="test").records] == ["d5"]
    assert [r.extra["dicom_id"] for r in MIMICCXRJPG(mimic, split="valid").records] == ["d7"]
    lateral = MIMICCXRJPG(mimic, views=["lateral"], uncertain="ones")
    assert [r.extra["dicom_id"] for r in lateral.records] == ["d2"]
    assert same(lateral.label_matrix, [targets(FIRST, 1.0)])
    # all images of a study share its labels
    both = MIMICCXRJPG(
        mimic, views=("frontal", "lateral"), uncertain="zeros", labels=["Edema", "Cardiomegaly"]
    )
    assert same(both.label_matrix[:2], [[0.0, 1.0], [0.0, 1.0]])


def test_mimic_errors(mimic: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        MIMICCXRJPG(mimic, split="validate")
    with pytest.raises(ConfigError, match="Effusion"):
        MIMICCXRJPG(mimic, labels=["Effusion"])
    meta = mimic / "mimic-cxr-2.0.0-metadata.csv"
    meta.write_text(meta.read_text().replace("ViewPosition", "View"))
    with pytest.raises(DataError, match=r"metadata\.csv.*ViewPosition"):
        MIMICCXRJPG(mimic)
    meta.unlink()
    with pytest.raises(DataError, match=r"metadata\.csv: file not found"):
        MIMICCXRJPG(mimic)


def test_mimic_rejects_unknown_label_value(mimic: Path) -> None:
    path = mimic / "mimic-cxr-2.0.0-chexpert.csv.gz"
    labels = pd.read_csv(path)
    labels.loc[0, "Edema"] = 3.0
    labels.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"chexpert\.csv\.gz.*'Edema' holds 3"):
        MIMICCXRJPG(mimic)


# MIMIC-CXR's report layout: headed sections, padded lines, the "___" of de-identification
FULL_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough, ? pneumonia

 COMPARISON:  ___

 FINDINGS:

 PA and lateral views of the chest provided.  There is no focal consolidation,
 effusion, or pneumothorax.  Mild cardiomegaly.

 IMPRESSION:

 No acute intrathoracic process.  Mild cardiomegaly.

 NOTIFICATION:  Dr. ___ was told by telephone.
"""
IMPRESSION_ONLY = (
    "                                 FINAL REPORT\n FINDINGS AND IMPRESSION:  Small left effusion.\n"
)
UNSECTIONED = "                                 FINAL REPORT\n Portable chest, no change.\n"


def write_reports(folder: Path) -> None:
    for (subject, study), text in {
        ("10000001", "50000001"): FULL_REPORT,
        ("10000002", "50000002"): IMPRESSION_ONLY,
        ("11000003", "50000003"): UNSECTIONED,
    }.items():
        path = folder / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_mimic_reports_beside_the_images(mimic: Path) -> None:
    write_reports(mimic)
    dataset = MIMICCXRJPG(mimic, views=["frontal", "lateral"])
    reports = {r.extra["dicom_id"]: r.report for r in dataset.records}
    first = (
        "FINDINGS: PA and lateral views of the chest provided. There is no focal consolidation, effusion, "
        "or pneumothorax. Mild cardiomegaly. IMPRESSION: No acute intrathoracic process. Mild cardiomegaly."
    )
    # both images of a study share its report; the notification, indication and comparison are left out
    assert reports == {"d1": first, "d2": first, "d3": "IMPRESSION: Small left effusion.", "d4": None}
    assert dataset[0].report == first


def test_mimic_reports_from_their_own_folder(mimic: Path, tmp_path: Path) -> None:
    assert all(r.report is None for r in MIMICCXRJPG(mimic).records)  # no report files: no reports
    write_reports(tmp_path / "reports")
    dataset = MIMICCXRJPG(mimic, reports_dir=tmp_path / "reports")
    assert [r.report is not None for r in dataset.records] == [True, True, False]
    with pytest.raises(DataError, match=r"missing: mimic_cxr_jpg reports folder has no files/ folder"):
        MIMICCXRJPG(mimic, reports_dir=tmp_path / "missing")
