"""IU X-ray: reports, projections, both file-naming conventions and report-derived labels; bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radsight.data.sources.iu_xray import IUXray, load_reports
from radsight.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    return data_root / "iu-xray-reports"


@pytest.fixture(scope="module")
def frontal(root: Path) -> IUXray:
    return IUXray(root)


def _labels(dataset: IUXray, uid: str) -> dict[str, float]:
    record = next(r for r in dataset.records if r.patient_id == uid)
    return dict(zip(dataset.label_names, record.labels.tolist(), strict=True))


def test_all_report_texts(root: Path) -> None:
    reports = load_reports(root)
    assert len(reports) == 3851
    assert sum(bool(text) for text in reports) == 3826  # 25 reports have neither findings nor impression
    assert reports[0].startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert reports[0].endswith("Normal chest x-XXXX.")


@pytest.mark.parametrize(("projection", "count"), [("Frontal", 9), ("Lateral", 4), (None, 13)])
def test_projection_counts(root: Path, projection: str | None, count: int) -> None:
    dataset = IUXray(root, projection=projection)
    assert len(dataset) == count
    assert {r.view for r in dataset.records} == ({projection} if projection else {"Frontal", "Lateral"})


def test_frontal_records(frontal: IUXray) -> None:
    assert set(frontal.patient_ids) == {"3", "7", "25", "54", "303", "1000", "1001", "1900"}
    assert all(r.report for r in frontal.records)
    assert not np.isnan(frontal.label_matrix).any()
    assert _labels(frontal, "3")["normal"] == 1.0 and sum(_labels(frontal, "3").values()) == 1.0
    positives = {name for name, value in _labels(frontal, "25").items() if value == 1.0}
    assert positives == {"Airspace Disease", "Pleural Effusion"}


def test_sample(frontal: IUXray) -> None:
    index = next(i for i, r in enumerate(frontal.records) if r.image_path.name == "CXR54_IM-2145-1001.png")
    sample = frontal[index]
    assert sample is not None
    assert sample.image.shape == (1, 362, 512)
    assert 0.0 <= float(sample.image.min()) < float(sample.image.max()) <= 1.0
    assert sample.meta.patient_id == "54" and sample.meta.view == "Frontal"
    assert sample.report is not None
    assert sample.report.startswith("The lungs are clear bilaterally.")
    assert sample.report.endswith("No acute cardiopulmonary abnormality.")


def test_kaggle_file_names_and_unindexed_reports(root: Path, tmp_path: Path) -> None:
    image = root / "sample-images" / "images" / "CXR3_IM-1384-1001.png"
    (tmp_path / "1_IM-0001-4001.dcm.png").symlink_to(image)  # report 1: "normal"
    (tmp_path / "39_IM-1978-1001.dcm.png").symlink_to(image)  # report 39: "No Indexing"
    dataset = IUXray(root, images_dir=tmp_path)
    assert sorted(dataset.patient_ids) == ["1", "39"]
    assert _labels(dataset, "1")["normal"] == 1.0
    assert all(np.isnan(value) for value in _labels(dataset, "39").values())
    assert dataset[0] is not None


def test_invalid_projection(root: Path) -> None:
    with pytest.raises(ConfigError, match="projection must be"):
        IUXray(root, projection="PA")


def test_missing_image_folder(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found") as error:
        IUXray(root, images_dir=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_unknown_label_name(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['Effusion'\].*'Pleural Effusion'"):
        IUXray(root, labels=["Effusion"])


def test_reports_without_problems_column(root: Path, mirror) -> None:
    broken = mirror(root, {"indiana_reports.csv": lambda frame: frame.drop(columns=["Problems"])})
    with pytest.raises(DataError, match=r"missing required column\(s\) \['Problems'\]") as error:
        IUXray(broken)
    assert str(broken / "indiana_reports.csv") in str(error.value)
