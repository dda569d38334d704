"""CBIS-DDSM layout: CSV paths and TCIA's downloaded folder names, rows merged into views, ROI masks chosen
by size among the files of their series, and clear errors naming the file."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_dicom
from PIL import Image

from radsight.data.sources import source_class
from radsight.data.sources.cbis_ddsm import CBISDDSM
from radsight.errors import ConfigError, DataError

SIZE = (64, 48)
MASS_COLUMNS = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]


write_mammogram = partial(write_dicom, modality="MG", bits_stored=16)
"""CBIS-DDSM stores full views, crops and ROI masks as 16-bit mammography DICOMs."""


def square(y: int, x: int, side: int = 8) -> np.ndarray:
    mask = np.zeros(SIZE, dtype=np.uint16)
    mask[y : y + side, x : x + side] = 255
    return mask


def row(patient: str, side: str, view: str, pathology: str, image: str, roi: str, crop: str) -> dict:
    values = [patient, 2, side, view, 1, "mass", "OVAL", "CIRCUMSCRIBED", 3, pathology, 4, image, crop, roi]
    return dict(zip(MASS_COLUMNS, values, strict=True))


@pytest.fixture
def cbis(tmp_path: Path) -> Path:
    """Two views in TCIA's downloaded layout, one in the CSVs' own layout (as PNG), four CSVs."""
    root = tmp_path / "cbis"
    series = root / "CBIS-DDSM"
    rng = np.random.default_rng(0)
    full, roi = (
        "07-20-2016-DDSM-1/1.000-full mammogram images-1/1-1.dcm",
        "07-21-2016-DDSM-1/1.000-ROI mask images-1",
    )
    # P_00001 LEFT CC: a benign mass and a malignant mass; each ROI series also holds the cropped lesion
    write_mammogram(series / "Mass-Training_P_00001_LEFT_CC" / full, rng.integers(0, 4000, SIZE))
    for number, (y, x) in ((1, (4, 4)), (2, (40, 30))):
        folder = series / f"Mass-Training_P_00001_LEFT_CC_{number}" / roi
        write_mammogram(folder / "1-1.dcm", rng.integers(0, 4000, (12, 10)))  # the crop, listed first
        write_mammogram(folder / "1-2.dcm", square(y, x))
    # P_00002 RIGHT MLO: a malignant calcification, also listed as a mass of the same view
    write_mammogram(series / "Calc-Test_P_00002_RIGHT_MLO" / full, rng.integers(0, 4000, SIZE))
    write_mammogram(series / "Calc-Test_P_00002_RIGHT_MLO_1" / roi / "1-1.dcm", square(20, 20))
    # P_00003 LEFT MLO: files exactly where the CSV says, converted to PNG; the CSV swaps crop and mask
    uid = "1.3.6.1.4.1.9590.100.1.2.1/1.3.6.1.4.1.9590.100.1.2.2"
    exact, exact_roi = f"Mass-Training_P_00003_LEFT_MLO/{uid}", f"Mass-Training_P_00003_LEFT_MLO_1/{uid}"
    (root / exact).mkdir(parents=True)
    (root / exact_roi).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, SIZE).astype(np.uint8)).save(root / exact / "000000.png")
    Image.fromarray(square(10, 10).astype(np.uint8)).save(root / exact_roi / "000001.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / exact_roi / "000000.png")
    tcia = "1.3.6.1.4.1.9590.100.1.2.9/1.3.6.1.4.1.9590.100.1.2.8/000000.dcm"
    view1, view2 = "Mass-Training_P_00001_LEFT_CC", "Calc-Test_P_00002_RIGHT_MLO"
    mass_train = [
        row("P_00001", "LEFT", "CC", "BENIGN", f"{view1}/{tcia}", f"{view1}_1/{tcia}", f"{view1}_1/{tcia}"),
        row(
            "P_00001",
            "LEFT",
            "CC",
            "MALIGNANT",
            f"{view1}/{tcia}",
            f"{view1}_2/{tcia}\n",
            f"{view1}_2/{tcia}",
        ),
        row(
            "P_00003",
            "LEFT",
            "MLO",
            "BENIGN_WITHOUT_CALLBACK",
            f"{exact}/000000.dcm",
            f"{exact_roi}/000000.dcm",
            f"{exact_roi}/000001.dcm",
        ),
    ]
    calc_test = [row("P_00002", "RIGHT", "MLO", "MALIGNANT", f"{view2}/{tcia}", f"{view2}_1/{tcia}", "")]
    (root / "csv").mkdir()
    pd.DataFrame(mass_train).to_csv(root / "csv" / "mass_case_description_train_set.csv", index=False)
    pd.DataFrame(calc_test).to_csv(root / "csv" / "calc_case_description_test_set.csv", index=False)
    pd.DataFrame(calc_test).to_csv(root / "csv" / "mass_case_description_test_set.csv", index=False)
    pd.DataFrame(columns=MASS_COLUMNS).to_csv(
        root / "csv" / "calc_case_description_train_set.csv", index=False
    )
    return root


def by_patient(dataset: CBISDDSM, patient: str) -> int:
    return dataset.patient_ids.index(patient)


def test_views_labels_and_masks(cbis: Path) -> None:
    dataset = source_class("cbis_ddsm")(cbis)
    assert sorted(dataset.patient_ids) == ["P_00001", "P_00002", "P_00003"]  # the calc/mass view merged
    both = dataset[by_patient(dataset, "P_00001")]
    assert both.labels.tolist() == [1.0, 1.0]
    assert both.image.shape == (1, *SIZE)
    assert both.meta.view == "CC" and both.meta.extra["laterality"] == "L"
    assert "rois" not in both.meta.extra
    assert torch_equal_mask(both.masks["benign"], square(4, 4))
    assert torch_equal_mask(both.masks["malignant"], square(40, 30))
    calc = dataset[by_patient(dataset, "P_00002")]
    assert calc.labels.tolist() == [0.0, 1.0] and set(calc.masks) == {"malignant"}
    assert calc.meta.extra["laterality"] == "R" and calc.meta.extra["subset"] == "test"
    png = dataset[by_patient(dataset, "P_00003")]
    assert png.labels.tolist() == [1.0, 0.0]
    assert torch_equal_mask(png.masks["benign"], square(10, 10))


def torch_equal_mask(mask, expected: np.ndarray) -> bool:
    return bool((mask.numpy() == (expected > 0)).all())


def test_filters_by_abnormality_and_official_subset(cbis: Path) -> None:
    masses = CBISDDSM(cbis, abnormalities=["mass"], subsets=["train"])
    assert sorted(masses.patient_ids) == ["P_00001", "P_00003"]
    malignant = CBISDDSM(cbis, labels=["malignant"], subsets=["test"])
    assert malignant.label_matrix.tolist() == [[1.0]]
    with pytest.raises(ConfigError, match="abnormalities"):
        CBISDDSM(cbis, abnormalities=["masses"])


def test_unknown_pathology_names_the_csv_and_row(cbis: Path) -> None:
    path = cbis / "csv" / "mass_case_description_train_set.csv"
    frame = pd.read_csv(path)
    frame.loc[1, "pathology"] = "UNSURE"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"mass_case_description_train_set.csv.*row 3.*UNSURE"):
        CBISDDSM(cbis)


def test_missing_series_and_mask_of_another_size(cbis: Path) -> None:
    series = cbis / "CBIS-DDSM" / "Calc-Test_P_00002_RIGHT_MLO_1"
    mask = next(series.rglob("*.dcm"))
    write_mammogram(mask, np.zeros((32, 32), dtype=np.uint16))
    dataset = CBISDDSM(cbis, subsets=["test"])
    with pytest.raises(DataError, match=r"no ROI mask of the mammogram's size 48x64 \(1-1.dcm 32x32\)"):
        dataset[0]
    skipping = CBISDDSM(cbis, subsets=["test"], on_bad_file="skip")
    assert skipping[0] is None and len(skipping.skipped) == 1
    for path in sorted(series.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    series.rmdir()
    with pytest.raises(DataError, match="no series folder 'Calc-Test_P_00002_RIGHT_MLO_1'"):
        CBISDDSM(cbis, subsets=["test"])
