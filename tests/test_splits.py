"""Patient splits never share a patient; label budgets are exact, nested and seeded."""

from __future__ import annotations

import numpy as np
import pytest

from radsight.data.splits import label_budget_subsets, patient_split
from radsight.errors import ConfigError, DataError


def _patients(n_patients: int, seed: int = 0) -> list[str]:
    """1 to 4 images per patient, in a shuffled order."""
    rng = np.random.default_rng(seed)
    ids = [f"p{p:03d}" for p in range(n_patients) for _ in range(rng.integers(1, 5))]
    return [ids[i] for i in rng.permutation(len(ids))]


@pytest.mark.parametrize("n_patients", [3, 10, 97, 250])
def test_split_is_disjoint_by_patient_and_covers_everything(n_patients: int) -> None:
    ids = _patients(n_patients)
    split = patient_split(ids, fractions=(0.7, 0.1, 0.2), seed=3)
    patients = {name: {ids[i] for i in index} for name, index in split.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(ids)))
    for name, fraction in zip(("train", "val", "test"), (0.7, 0.1, 0.2), strict=True):
        assert abs(len(patients[name]) - fraction * n_patients) < 1
        assert np.all(np.diff(split[name]) > 0)


def test_split_is_deterministic_by_seed() -> None:
    ids = _patients(80)
    first, again, other = (patient_split(ids, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["test"], other["test"])


def test_split_stratifies_by_label() -> None:
    ids = [f"p{p:03d}" for p in range(200)]
    labels = np.zeros((200, 2), dtype=np.float32)
    labels[:20, 0] = 1  # a rare class: 10% of patients
    labels[50:60, 1] = np.nan
    split = patient_split(ids, fractions=(0.5, 0.25, 0.25), seed=0, labels=labels)
    assert [int(labels[split[k], 0].sum()) for k in ("train", "val", "test")] == [10, 5, 5]


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ConfigError, match="summing to 1"):
        patient_split(["a", "b"], fractions=(0.7, 0.2, 0.2))


def _labels(seed: int = 0) -> np.ndarray:
    """300 images, 3 classes, 25% positive each (some co-occurring), a few NaN."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((300, 3)) < 0.25).astype(np.float32)
    labels[rng.random((300, 3)) < 0.05] = np.nan
    return labels


def test_budgets_are_exact_and_nested() -> None:
    labels = _labels()
    subsets = label_budget_subsets(labels, [30, 5, 15], seed=0)
    assert sorted(subsets) == [5, 15, 30]
    normal = ~(labels == 1).any(axis=1) & ~np.isnan(labels).all(axis=1)
    for budget, index in subsets.items():
        assert (labels[index] == 1).sum(axis=0).tolist() == [budget] * 3
        assert int(normal[index].sum()) == budget
        assert len(index) == len(set(index.tolist()))
    assert set(subsets[5]) <= set(subsets[15]) <= set(subsets[30])


def test_budgets_are_seeded() -> None:
    labels = _labels()
    first, again, other = (label_budget_subsets(labels, [10], seed=s)[10] for s in (4, 4, 5))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_nan_never_counts_and_all_nan_is_not_normal() -> None:
    labels = np.array([[1, np.nan], [np.nan, 1], [0, 0], [np.nan, np.nan], [0, np.nan]], dtype=np.float32)
    assert label_budget_subsets(labels, [1], seed=0)[1].tolist() in ([0, 1, 2], [0, 1, 4])


def test_a_budget_too_large_says_which_class_fell_short() -> None:
    labels = _labels()
    labels[20:, 1] = 0  # effusion is rare: positive only among the first 20 images
    available = int((labels[:, 1] == 1).sum())
    with pytest.raises(DataError, match=r"only \d+ positives of effusion"):
        label_budget_subsets(labels, [available + 1], seed=0, label_names=["nodule", "effusion", "mass"])
    with pytest.raises(DataError, match="normal images"):
        label_budget_subsets(np.ones((10, 1), dtype=np.float32), [2], seed=0)
