"""Generic CSV manifest: both label layouts, boxes, masks, paths; every malformed input named precisely."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radsight.data.sources.manifest import ManifestDataset
from radsight.errors import ConfigError, DataError


def _png(path: Path, height: int = 48, width: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, height * width).reshape(height, width).astype(np.uint8)
    Image.fromarray(ramp).save(path)
    return path


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two images, one in a subfolder, a lung mask and a CSV in the per-label-column layout."""
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.png")
    lungs = np.pad(np.full((20, 30), 255, np.uint8), ((10, 18), (10, 24)))  # 600 pixels inside, 64 x 48
    Image.fromarray(lungs).save(tmp_path / "a_lungs.png")
    _csv(
        tmp_path / "manifest.csv",
        [
            {
                "path": "a.png",
                "patient_id": "p1",
                "view": "PA",
                "report": "Small left effusion.",
                "Effusion": "1",
                "Nodule": "-1",
                "boxes": '[[5, 6, 30.5, 40, "Effusion"]]',
                "mask_lungs": "a_lungs.png",
            },
            {"path": "sub/b.png", "patient_id": "", "Effusion": "0", "Nodule": ""},
        ],
    )
    return tmp_path


def _rewrite(folder: Path, column: str, row: int, value: str) -> None:
    frame = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(folder / "manifest.csv", index=False)


def test_label_columns_layout(folder: Path) -> None:
    dataset = ManifestDataset(folder, label_columns=["Effusion", "Nodule"])
    assert len(dataset) == 2
    assert dataset.label_names == ["Effusion", "Nodule"]
    np.testing.assert_array_equal(dataset.label_matrix, [[1.0, math.nan], [0.0, math.nan]])
    assert dataset.patient_ids == ["p1", "sub/b.png"]
    sample = dataset[0]
    assert sample is not None
    assert sample.image.shape == (1, 48, 64)
    assert float(sample.image.max()) == pytest.approx(1.0)
    assert sample.boxes is not None and sample.boxes.tolist() == [[5.0, 6.0, 30.5, 40.0]]
    assert sample.box_labels == ["Effusion"]
    assert sample.masks is not None and sample.masks["lungs"].shape == (48, 64)
    assert int(sample.masks["lungs"].sum()) == 600
    assert sample.report == "Small left effusion." and sample.meta.view == "PA"
    other = dataset[1]
    assert other is not None and other.boxes is None and other.masks is None and other.report is None


def test_labels_column_layout(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _png(tmp_path / f"{name}.png")
    rows = [{"path": "a.png", "labels": "Effusion|Nodule"}, {"path": "b.png", "labels": "none"}]
    _csv(tmp_path / "manifest.csv", [*rows, {"path": "c.png"}])
    dataset = ManifestDataset(tmp_path, label_names=["Effusion", "Nodule", "Mass"], labels=["Nodule", "Mass"])
    np.testing.assert_array_equal(dataset.label_matrix, [[1.0, 0.0], [0.0, 0.0], [math.nan, math.nan]])


def test_csv_option_with_absolute_paths_to_real_images(data_root: Path, tmp_path: Path) -> None:
    images = sorted((data_root / "nih-cxr14" / "images").glob("*.png"))[:2]
    rows = [{"path": str(path), "patient_id": path.stem[:8]} for path in images]
    csv = _csv(tmp_path / "elsewhere.csv", rows)
    dataset = ManifestDataset(csv=csv)
    assert dataset.root == tmp_path and dataset.label_matrix.shape == (2, 0)
    sample = dataset[1]
    assert sample is not None and sample.image.shape == (1, 512, 512) and sample.labels is None
    assert sample.meta.path == str(images[1])


def test_missing_path_column(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "manifest.csv", [{"file": "a.png"}])
    with pytest.raises(DataError, match=r"missing required column\(s\) \['path'\]") as error:
        ManifestDataset(tmp_path)
    assert str(csv) in str(error.value)


def test_missing_label_column(folder: Path) -> None:
    with pytest.raises(DataError, match=r"missing required column\(s\) \['Mass'\]"):
        ManifestDataset(folder, label_columns=["Effusion", "Mass"])


@pytest.mark.parametrize("cell", ["nan", "NaN", "yes", "0.5", "2"])
def test_garbage_label_cell(folder: Path, cell: str) -> None:
    _rewrite(folder, "Nodule", 1, cell)
    problem = rf"row 2, column 'Nodule': label '{cell}' is not 1, 0, -1 or blank"
    with pytest.raises(DataError, match=problem) as error:
        ManifestDataset(folder, label_columns=["Effusion", "Nodule"])
    assert str(folder / "manifest.csv") in str(error.value)


def test_unknown_name_in_labels_column(tmp_path: Path) -> None:
    _csv(tmp_path / "manifest.csv", [{"path": "a.png", "labels": "Effusion|Nodle"}])
    with pytest.raises(DataError, match=r"row 1, column 'labels': unknown label 'Nodle'") as error:
        ManifestDataset(tmp_path, label_names=["Effusion", "Nodule"])
    assert str(tmp_path / "manifest.csv") in str(error.value)


def test_unknown_label_selection(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown label name\(s\) \['Mass'\].*\['Effusion', 'Nodule'\]"):
        ManifestDataset(folder, label_columns=["Effusion", "Nodule"], labels=["Mass"])


def test_box_outside_the_image(folder: Path) -> None:
    _rewrite(folder, "boxes", 0, '[[5, 6, 30, 40, "Effusion"], [40, 10, 90, 30, "Mass"]]')
    dataset = ManifestDataset(folder)
    with pytest.raises(DataError, match=r"box \[40.0, 10.0, 90.0, 30.0\] lies outside the 64x48") as error:
        dataset[0]
    assert str(folder / "a.png") in str(error.value)


@pytest.mark.parametrize("cell", ["[[1, 2, 3]]", '{"x": 1}', "[[1, 2, 3, 4, 5]]", "not json"])
def test_malformed_boxes_cell(folder: Path, cell: str) -> None:
    _rewrite(folder, "boxes", 0, cell)
    with pytest.raises(DataError, match=r"row 1, column 'boxes': expected a JSON list") as error:
        ManifestDataset(folder)
    assert str(folder / "manifest.csv") in str(error.value)


def test_mask_of_another_size(folder: Path) -> None:
    _png(folder / "a_lungs.png", height=32, width=32)
    dataset = ManifestDataset(folder)
    with pytest.raises(DataError, match="mask size 32x32 differs from its image 64x48") as error:
        dataset[0]
    assert str(folder / "a_lungs.png") in str(error.value)


def test_truncated_png(folder: Path) -> None:
    image = folder / "sub" / "b.png"
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(DataError, match="corrupt or truncated image") as error:
        ManifestDataset(folder)[1]
    assert str(image) in str(error.value)
    lenient = ManifestDataset(folder, on_bad_file="skip")
    assert lenient[0] is not None
    assert lenient[1] is None
    assert len(lenient.skipped) == 1 and str(image) in lenient.skipped[0]


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,patient_id\n")
    with pytest.raises(DataError, match="no samples left") as error:
        ManifestDataset(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_empty_path_cell(folder: Path) -> None:
    _rewrite(folder, "path", 1, " ")
    with pytest.raises(DataError, match="row 2: empty path"):
        ManifestDataset(folder)


def test_option_errors(folder: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        ManifestDataset(folder, label_columns=["Effusion"], label_names=["Effusion"])
    with pytest.raises(ConfigError, match="pass the CSV file"):
        ManifestDataset()


# --- split column, masks of several files, encodings, default root ---------------------------------


def test_split_column_names_each_images_split(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _png(tmp_path / f"{name}.png")
    rows = [
        {"path": "a.png", "split": "train"},
        {"path": "b.png", "split": " test"},
        {"path": "c.png", "split": "val"},
    ]
    _csv(tmp_path / "manifest.csv", rows)
    assert ManifestDataset(tmp_path).predefined_split == ["train", "test", "val"]
    _csv(tmp_path / "manifest.csv", [{"path": "a.png"}])
    assert ManifestDataset(tmp_path).predefined_split is None


@pytest.mark.parametrize("cell", ["training", "", "Test"])
def test_a_split_cell_that_is_not_train_val_or_test(tmp_path: Path, cell: str) -> None:
    _csv(tmp_path / "manifest.csv", [{"path": "a.png", "split": "train"}, {"path": "b.png", "split": cell}])
    with pytest.raises(DataError, match=rf"row 2, column 'split': '{cell}' is not one of train, val, test"):
        ManifestDataset(tmp_path)


def test_a_mask_cell_of_several_files_is_their_union(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    left, right = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)
    left[10:40, 5:25] = 255  # 600 pixels
    right[10:40, 20:50] = 255  # 900 pixels, 150 of them shared with the left one
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(right).save(tmp_path / "right.png")
    _csv(
        tmp_path / "manifest.csv",
        [{"path": "a.png", "mask_lungs": "left.png | right.png", "mask_heart": "left.png"}],
    )
    sample = ManifestDataset(tmp_path)[0]
    assert sample is not None and sample.masks is not None
    assert int(sample.masks["lungs"].sum()) == 600 + 900 - 150
    assert int(sample.masks["heart"].sum()) == 600


def _bytes_csv(folder: Path, text: str, encoding: str) -> Path:
    _png(folder / "a.png")
    path = folder / "manifest.csv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_common_encodings_are_detected(tmp_path: Path, encoding: str, caplog) -> None:
    csv = _bytes_csv(tmp_path, "path,report\na.png,Épanchement pleural – côté droit\n", encoding)
    with caplog.at_level(logging.WARNING, logger="radsight.data.sources.base"):
        sample = ManifestDataset(tmp_path)[0]
    assert sample is not None and sample.report == "Épanchement pleural – côté droit"
    guessed = [f"{csv} is not UTF-8: read as cp1252 (name its encoding if that is wrong)"]
    assert caplog.messages == (guessed if encoding == "cp1252" else [])


def test_an_undecodable_csv_names_the_encoding_option(tmp_path: Path) -> None:
    # 0x81 (byte 18: after "path,report\n" and "a.png,") is not UTF-8 here nor defined in cp1252;
    # latin-1 reads it as a control character
    csv = _bytes_csv(tmp_path, "path,report\na.png,x\n", "ascii")
    csv.write_bytes(csv.read_bytes().replace(b"x", b"\x81"))
    with pytest.raises(DataError, match=r"cannot decode it as utf-8-sig or cp1252.*encoding=NAME") as error:
        ManifestDataset(tmp_path)
    assert str(csv) in str(error.value)
    sample = ManifestDataset(tmp_path, encoding="latin-1")[0]
    assert sample is not None and sample.report == "\x81"
    with pytest.raises(DataError, match=r"not utf-8 text \(invalid start byte at byte 18\)"):
        ManifestDataset(tmp_path, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        ManifestDataset(tmp_path, encoding="klingon")


def test_the_root_defaults_to_the_csv_folder_through_a_recipe_entry(tmp_path: Path) -> None:
    from radsight.config import SourceSpec
    from radsight.data.assemble import build_source

    _png(tmp_path / "images" / "a.png")
    (tmp_path / "lists").mkdir()
    csv = _csv(tmp_path / "lists" / "elsewhere.csv", [{"path": "../images/a.png"}])
    dataset = build_source(SourceSpec(name="manifest", options={"csv": str(csv)}))
    assert dataset.root == tmp_path / "lists"
    assert dataset[0] is not None


def test_a_compressed_csv_is_decompressed_before_its_encoding_is_detected(tmp_path: Path) -> None:
    import gzip

    _png(tmp_path / "a.png")
    (tmp_path / "list.csv.gz").write_bytes(gzip.compress("path,report\na.png,Ödem\n".encode("cp1252")))
    sample = ManifestDataset(csv=tmp_path / "list.csv.gz")[0]
    assert sample is not None and sample.report == "Ödem"
