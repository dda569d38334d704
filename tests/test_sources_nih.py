"""NIH ChestX-ray14: labels, NIH and RSNA boxes in the 512 px frame, pixel spacing; bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radsight.data.sources.nih import NIHChestXray14
from radsight.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    return data_root / "nih-cxr14"


@pytest.fixture(scope="module")
def nih(root: Path) -> NIHChestXray14:
    return NIHChestXray14(root)


def _box_counts(dataset: NIHChestXray14) -> tuple[int, int]:
    boxed = [r for r in dataset.records if r.boxes is not None]
    return len(boxed), sum(len(r.boxes) for r in boxed)


def test_counts_and_labels(nih: NIHChestXray14) -> None:
    assert len(nih) == 199
    assert len(set(nih.patient_ids)) == 159
    counts = dict(zip(nih.label_names, nih.label_matrix.sum(0), strict=True))
    assert counts["Pneumonia"] == 163 and counts["Infiltration"] == 59 and counts["Hernia"] == 2
    assert int((nih.label_matrix.sum(1) == 0).sum()) == 36  # "No Finding"
    assert not np.isnan(nih.label_matrix).any()
    assert {r.view for r in nih.records} == {"AP", "PA"}


@pytest.mark.parametrize(
    ("boxes", "images", "count"), [("both", 107, 168), ("nih", 31, 36), ("rsna", 85, 132), ("none", 0, 0)]
)
def test_box_option(root: Path, boxes: str, images: int, count: int) -> None:
    assert _box_counts(NIHChestXray14(root, boxes=boxes)) == (images, count)


def test_boxes_inside_the_512_frame(nih: NIHChestXray14, root: Path) -> None:
    manifest = pd.read_csv(root / "manifest.csv")
    assert set(zip(manifest["width"], manifest["height"], strict=True)) == {(512, 512)}
    for record in nih.records:
        if record.boxes is not None:
            assert (record.boxes >= 0).all() and (record.boxes <= 512).all()
            assert (record.boxes[:, 2:] > record.boxes[:, :2]).all()
            assert set(record.box_labels) <= set(nih.label_names)  # "Infiltrate" renamed


def test_sample(nih: NIHChestXray14) -> None:
    index = next(i for i, r in enumerate(nih.records) if r.image_path.name == "00000193_019.png")
    sample = nih[index]
    assert sample is not None
    assert sample.image.shape == (1, 512, 512)
    assert 0.0 <= float(sample.image.min()) < float(sample.image.max()) <= 1.0
    assert sample.meta.patient_id == "193" and sample.meta.view == "AP"
    # One NIH box, then the two RSNA boxes of its matched patientId; x, y, w, h became xyxy.
    assert sample.box_labels == ["Pneumonia"] * 3
    assert sample.boxes is not None
    assert sample.boxes[0].tolist() == pytest.approx([351.858, 308.499, 461.085, 433.086])
    assert sample.boxes[1].tolist() == pytest.approx([354.5, 260.5, 483.0, 418.0])
    # 2500 x 2048 acquisition at 0.168 mm, stored at 512 x 512: (row, column) spacing.
    assert sample.meta.pixel_spacing == pytest.approx((0.168 * 2048 / 512, 0.168 * 2500 / 512))
    assert sample.meta.extra["acquired_size"] == (2048, 2500)


def test_second_rsna_match_adds_no_duplicate_boxes(root: Path, mirror) -> None:
    def duplicate(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[frame["nih_image_index"] == "00000193_019.png"].copy()
        rows["patientId"] = "second-match"
        rows["match_mse"] += 1.0
        return pd.concat([frame, rows], ignore_index=True)

    linked = mirror(root, {"rsna_pneumonia_boxes.csv": duplicate})
    dataset = NIHChestXray14(linked, boxes="rsna")
    assert _box_counts(dataset) == (85, 132)


def test_invalid_box_option(root: Path) -> None:
    with pytest.raises(ConfigError, match="boxes must be one of"):
        NIHChestXray14(root, boxes="all")


def test_unknown_label_name(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['Pleural Thickening'\].*'Pleural_Thickening'"):
        NIHChestXray14(root, labels=["Pleural Thickening"])


def test_data_entry_without_patient_column(root: Path, mirror) -> None:
    broken = mirror(root, {"Data_Entry_2017_v2020.csv": lambda frame: frame.drop(columns=["Patient ID"])})
    with pytest.raises(DataError, match=r"missing required column\(s\) \['Patient ID'\]") as error:
        NIHChestXray14(broken)
    assert str(broken / "Data_Entry_2017_v2020.csv") in str(error.value)


def test_unknown_finding_names_file_and_row(root: Path, mirror) -> None:
    def garble(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[1, "Finding Labels"] = "Atelectasis|nan"
        return frame

    broken = mirror(root, {"Data_Entry_2017_v2020.csv": garble})
    with pytest.raises(DataError, match="row 2: unknown label 'nan'") as error:
        NIHChestXray14(broken)
    assert str(broken / "Data_Entry_2017_v2020.csv") in str(error.value)
