"""PneumoniaMNIST from its npz: every part read, labels as the file gives them, a random balanced subset."""

from __future__ import annotations

import numpy as np
import pytest

from radsight.data.sources.pneumoniamnist import PneumoniaMNIST
from radsight.errors import DataError


def test_the_whole_file_is_read_with_its_labels(data_root) -> None:
    data = PneumoniaMNIST(data_root / "pneumoniamnist")
    assert len(data) == 2428 + 270 + 468
    with np.load(data_root / "pneumoniamnist" / "pneumoniamnist.npz") as archive:
        expected = np.concatenate([archive[f"{p}_labels"] for p in ("train", "val", "test")])[:, 0]
        first_test = archive["test_images"][0]
    np.testing.assert_array_equal(data.label_matrix[:, 0], expected)
    sample = data[2428 + 270]
    assert sample.image.shape == (1, 28, 28) and sample.image.min() >= 0 and sample.image.max() <= 1
    np.testing.assert_allclose(sample.image[0].numpy() * 255, first_test, atol=1e-4)
    assert sample.meta.patient_id == "test/0" and sample.labels.tolist() == [expected[2428 + 270]]


def test_a_limit_draws_both_classes_at_random(data_root) -> None:
    data = PneumoniaMNIST(data_root / "pneumoniamnist", parts=["train"], limit=100)
    assert len(data) == 100 and 30 < data.label_matrix.sum() < 70  # the file is sorted by label
    again = PneumoniaMNIST(data_root / "pneumoniamnist", parts=["train"], limit=100)
    assert data.image_ids == again.image_ids
    other = PneumoniaMNIST(data_root / "pneumoniamnist", parts=["train"], limit=100, subset_seed=1)
    assert data.image_ids != other.image_ids


def test_an_unknown_part_or_a_missing_file_is_one_line(data_root, tmp_path) -> None:
    with pytest.raises(DataError, match=r"unknown part\(s\) \['dev'\]"):
        PneumoniaMNIST(data_root / "pneumoniamnist", parts=["dev"])
    with pytest.raises(DataError, match="file not found"):
        PneumoniaMNIST(tmp_path)
