"""NYU mammograms: breast-level labels, 12/16-bit images, lesion masks, and the safe exam-list reader."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from radsight.data.plain_pickle import load_plain_pickle
from radsight.data.sources.nyu_mammo import NYUMammo
from radsight.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    return data_root / "mammo-nyu"


@pytest.fixture(scope="module")
def cropped(root: Path) -> NYUMammo:
    return NYUMammo(root)


def _index(dataset: NYUMammo, laterality: str, view: str) -> int:
    return next(
        i for i, r in enumerate(dataset.records) if r.extra["laterality"] == laterality and r.view == view
    )


def test_records_and_labels(cropped: NYUMammo) -> None:
    # Four exams are listed; only exam 0 has images here. Right breast benign, left normal.
    assert len(cropped) == 4
    assert set(cropped.patient_ids) == {"0"}
    assert {(r.extra["laterality"], r.view) for r in cropped.records} == {
        ("L", "CC"),
        ("L", "MLO"),
        ("R", "CC"),
        ("R", "MLO"),
    }
    for record in cropped.records:
        expected = [1.0, 0.0] if record.extra["laterality"] == "R" else [0.0, 0.0]
        assert record.labels.tolist() == expected
        assert set(record.mask_paths) == ({"benign"} if record.extra["laterality"] == "R" else set())


def test_cropped_sample_with_mask(cropped: NYUMammo) -> None:
    sample = cropped[_index(cropped, "R", "CC")]
    assert sample is not None
    assert sample.image.shape == (1, 2944, 1920)
    assert float(sample.image.max()) == pytest.approx(1.0)
    assert sample.meta.extra["bits_stored"] == 16
    assert sample.meta.view == "CC" and sample.meta.extra["laterality"] == "R"
    assert sample.masks is not None and sample.masks["benign"].shape == (2944, 1920)
    assert int(sample.masks["benign"].sum()) > 1000


def test_original_12_bit_image_reads_to_full_range(root: Path) -> None:
    original = NYUMammo(root, cropped=False)
    assert all(not r.mask_paths for r in original.records)
    sample = original[_index(original, "L", "CC")]
    assert sample is not None and sample.masks is None
    assert sample.image.shape == (1, 2023, 801)
    # The brightest 12-bit value 4095 maps to 1, not to 4095 / 65535 = 0.06.
    assert float(sample.image.max()) == pytest.approx(1.0)
    assert sample.meta.extra["bits_stored"] == 12


def test_unknown_label_name(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['cancer'\].*\['benign', 'malignant'\]"):
        NYUMammo(root, labels=["cancer"])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_a_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exam_list.pkl"
    path.write_bytes(pickle.dumps([_RunsCode()]))
    with pytest.raises(DataError, match=r"refused pickle global (posix|nt|os)\.system") as error:
        load_plain_pickle(path)
    assert str(path) in str(error.value)


def test_pickle_of_numpy_objects_is_refused(root: Path) -> None:
    with pytest.raises(DataError, match="refused pickle global numpy"):
        load_plain_pickle(root / "data_after_cropping.pkl")


def test_plain_pickle_round_trip(tmp_path: Path) -> None:
    data = [{"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {3}}]
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data))
    assert load_plain_pickle(path) == data


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_plain_pickle_with_sets_and_bytes_in_old_and_new_protocols(tmp_path: Path, protocol: int) -> None:
    # protocols before 4 build sets, and protocol 2 empty bytes, by calling the builtin: still allowed
    data = {"views": {"L-CC", "R-CC"}, "frozen": frozenset({1}), "raw": b"", "nested": [[1, [2, (3,)]]]}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert load_plain_pickle(path) == data


def test_pickle_bounds_are_parameters(tmp_path: Path) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([[0] * 30, [[[1]]]]))
    # 2 entries in the outer list, 30 + 1 in the next level, then 1 and 1: 35 items, 4 levels
    assert load_plain_pickle(path, max_items=35, max_depth=4) == [[0] * 30, [[[1]]]]
    with pytest.raises(DataError, match=r"list\.pkl: pickle holds more than 34 items"):
        load_plain_pickle(path, max_items=34)
    with pytest.raises(DataError, match="deeper than 3 levels"):
        load_plain_pickle(path, max_depth=3)
    with pytest.raises(DataError, match=r"pickle of \d+ bytes exceeds the limit of 10"):
        load_plain_pickle(path, max_bytes=10)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps([{"a": 1}])[:-3])
    with pytest.raises(DataError, match="corrupt pickle") as error:
        load_plain_pickle(path)
    assert str(path) in str(error.value)


def test_exam_list_of_the_wrong_shape(root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mammo"
    folder.mkdir()
    (folder / "exam_list_before_cropping.pkl").write_bytes(pickle.dumps([{"L-CC": ["0_L-CC"]}]))
    with pytest.raises(DataError, match="exam 0 has no cancer_label"):
        NYUMammo(folder)
