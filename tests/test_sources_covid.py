"""COVID-19 image data collection: counts, labels, lung boxes and masks on the real extract; bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radsight.data.sources.covid import CovidChestXray
from radsight.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    return data_root / "covid-chestxray"


@pytest.fixture(scope="module")
def frontal(root: Path) -> CovidChestXray:
    return CovidChestXray(root)


def _column(dataset: CovidChestXray, label: str) -> np.ndarray:
    return dataset.label_matrix[:, dataset.label_names.index(label)]


def test_frontal_counts(frontal: CovidChestXray) -> None:
    # 570 X-ray images; 5 upstream rows repeat a file; 39 laterals; 14 files absent from the extract.
    assert len(frontal) == 527
    assert len(set(frontal.patient_ids)) == 309
    assert {r.view for r in frontal.records} == {"PA", "AP", "AP Supine"}
    assert _column(frontal, "COVID-19").sum() == 427
    assert _column(frontal, "Pneumonia").sum() == 504
    assert _column(frontal, "ARDS").sum() == 16
    assert int((frontal.label_matrix.sum(1) == 0).sum()) == 19  # "No Finding"
    assert not np.isnan(frontal.label_matrix).any()
    assert sum(r.report is not None for r in frontal.records) == 416


def test_every_view_keeps_each_image_once(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        every = CovidChestXray(root, views=None)
    assert len(every) == 570
    assert len({r.image_path for r in every.records}) == 570
    assert len(set(every.patient_ids)) == 311
    assert "dropped 14 of 584 rows whose image file is missing" in caplog.text
    assert "dropped 5 rows repeating the image file" in caplog.text
    assert caplog.text.count("lung boxes of ciaa199.pdf-001-") == 3


def test_multi_finding_sets_each_label_and_the_hierarchy(frontal: CovidChestXray) -> None:
    record = next(r for r in frontal.records if r.extra["finding"] == "COVID-19, ARDS")
    positives = {name for name, v in zip(frontal.label_names, record.labels, strict=True) if v == 1}
    assert positives == {"COVID-19", "ARDS", "Viral", "Pneumonia"}
    record = next(r for r in frontal.records if r.extra["finding"] == "Pneumocystis")
    positives = {name for name, v in zip(frontal.label_names, record.labels, strict=True) if v == 1}
    assert positives == {"Pneumocystis", "Fungal", "Pneumonia"}


def test_lung_boxes_fit_their_image(frontal: CovidChestXray, root: Path) -> None:
    sizes = pd.read_csv(root / "resize_manifest.csv").set_index("filename")
    boxed = [r for r in frontal.records if r.boxes is not None]
    # 310 boxes on 155 images; the 6 boxes of the 3 images annotated in another frame are dropped.
    assert len(boxed) == 152
    assert sum(len(r.boxes) for r in boxed) == 304
    for record in boxed:
        width, height = sizes.loc[record.image_path.name, ["width", "height"]]
        assert (record.boxes >= 0).all()
        assert (record.boxes[:, [0, 2]] <= width).all() and (record.boxes[:, [1, 3]] <= height).all()
        assert sorted(record.box_labels) == ["Left Lung", "Right Lung"]
    assert not any(r.image_path.name.startswith("ciaa199.pdf-001") and r.boxes is not None for r in boxed)


def test_sample_with_boxes_and_mask(frontal: CovidChestXray) -> None:
    index = next(i for i, r in enumerate(frontal.records) if r.boxes is not None and r.mask_paths)
    sample = frontal[index]
    assert sample is not None
    height, width = sample.size
    assert sample.image.shape == (1, height, width)
    assert 0.0 <= float(sample.image.min()) < float(sample.image.max()) <= 1.0
    assert sample.masks is not None and sample.masks["lungs"].shape == (height, width)
    assert 0 < float(sample.masks["lungs"].float().mean()) < 1
    assert sample.boxes is not None and (sample.boxes[:, 2] <= width).all()
    assert sample.meta.patient_id == frontal.records[index].patient_id
    assert set(sample.meta.extra) >= {"offset", "sex", "age", "license"}
    assert sum(bool(r.mask_paths) for r in frontal.records) == 192


def test_first_sample_report_and_metadata(frontal: CovidChestXray) -> None:
    sample = frontal[0]
    assert sample is not None
    assert sample.report is not None and "Ho Chi Minh City" in sample.report
    assert sample.meta.view == "PA"
    assert sample.meta.extra["sex"] == "M" and sample.meta.extra["age"] == 65
    assert sample.meta.extra["license"] is None


def test_no_view_matches(root: Path) -> None:
    with pytest.raises(DataError, match="no samples left after filtering") as error:
        CovidChestXray(root, views=["Nonexistent"])
    assert str(root) in str(error.value)


def test_unknown_label_name(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown label name\(s\) \['Covid'\].*'COVID-19'"):
        CovidChestXray(root, labels=["Covid"])


def test_metadata_without_finding_column(root: Path, mirror) -> None:
    broken = mirror(root, {"metadata.csv": lambda frame: frame.drop(columns=["finding"])})
    with pytest.raises(DataError, match=r"missing required column\(s\) \['finding'\]") as error:
        CovidChestXray(broken)
    assert str(broken / "metadata.csv") in str(error.value)


def test_unknown_finding_names_file_and_row(root: Path, mirror) -> None:
    def rename(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[3, "finding"] = "Martian flu"
        return frame

    broken = mirror(root, {"metadata.csv": rename})
    with pytest.raises(DataError, match="row 4: unknown finding 'Martian flu'") as error:
        CovidChestXray(broken)
    assert str(broken / "metadata.csv") in str(error.value)
