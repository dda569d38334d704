"""Patient splits never share a patient; label budgets are exact, nested and seeded; the pools a stage
can train on (labelled, unlabelled, annotated) hold what they say."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from radsight.config import DataConfig, SourceSpec
from radsight.data.assemble import DataSplits, build_splits
from radsight.data.sample import make_loader
from radsight.data.splits import label_budget_subsets, named_split, patient_split
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


# ---------------------------------------------------------------- pools of training images


def _phantom_splits(budget: int | None = 4) -> DataSplits:
    data = DataConfig(
        sources=[SourceSpec(name="phantom", options={"n": 120, "size": [32, 32], "seed": 3})],
        labels=["nodule", "opacity"],
        image_size=(32, 32),
        budget=budget,
    )
    return build_splits(data, seed=0)


def _indices_seen(dataset) -> list[int]:
    """The phantom index of every image a loader yields (phantoms record it in their metadata)."""
    return [meta.extra["index"] for batch in make_loader(dataset, 16, shuffle=False) for meta in batch.meta]


def test_unlabelled_pool_is_the_whole_train_split_and_never_shows_a_label() -> None:
    splits = _phantom_splits()
    labelled, split_train = set(splits.indices["train"]), set(splits.train_split)
    left_out = split_train - labelled
    assert len(labelled) < 20 and len(left_out) > 50  # the budget left most training images out
    pool = splits.pool("unlabelled")
    assert sorted(_indices_seen(pool)) == sorted(split_train)
    assert left_out <= set(_indices_seen(pool))
    assert not set(_indices_seen(pool)) & (set(splits.indices["val"]) | set(splits.indices["test"]))
    for batch in make_loader(pool, 16, shuffle=False):
        assert batch.labels is None and batch.masks == {} and batch.gaze_maps is None
        assert batch.boxes == [None] * len(batch) and batch.box_labels == [None] * len(batch)
        assert batch.fixations == [None] * len(batch) and batch.reports == [None] * len(batch)
    assert splits.train[0].labels is not None  # the labelled pool keeps them


def test_labelled_pool_is_the_train_view_and_augment_can_be_switched_off() -> None:
    splits = _phantom_splits()
    assert splits.pool("labelled") is splits.train
    plain = splits.pool("labelled", augment=False)
    assert _indices_seen(plain) == _indices_seen(splits.train)
    assert torch.equal(plain[0].image, plain[0].image)  # no random affine or intensity
    assert not torch.equal(splits.train[0].image, splits.train[0].image)
    assert torch.equal(plain[0].labels, splits.train[0].labels)


def test_annotated_pool_is_the_labelled_images_with_boxes(data_root) -> None:
    data = DataConfig(
        sources=[SourceSpec(name="nih", root=str(data_root / "nih-cxr14"))],
        labels=["Pneumonia", "Infiltration"],
        image_size=(64, 64),
        split=(0.8, 0.0, 0.2),
    )
    splits = build_splits(data, seed=0)
    annotated = splits.pool("annotated", augment=False)
    paths = {s.meta.path for s in annotated}
    assert 0 < len(paths) < len(splits.train)
    assert all(s.boxes is not None and len(s.boxes) for s in annotated)
    others = [s for s in splits.pool("labelled", augment=False) if s.meta.path not in paths]
    assert len(others) == len(splits.train) - len(paths)
    assert all(s.boxes is None and s.masks is None and s.fixations is None for s in others)
    none = data.model_copy(
        update={"sources": [SourceSpec(name="nih", root=data.sources[0].root, options={"boxes": "none"})]}
    )
    with pytest.raises(DataError, match="pool 'annotated': no labelled training image carries boxes"):
        build_splits(none, seed=0).pool("annotated")


# ---------------------------------------------------------------- split seed, split column, no test split


def test_the_split_seed_fixes_the_test_set_whatever_the_recipe_seed() -> None:
    data = _phantom_splits().data.model_copy(update={"split_seed": 5})
    tests = [build_splits(data, seed=seed).indices for seed in (0, 1, 2)]
    assert tests[0]["test"] == tests[1]["test"] == tests[2]["test"]
    assert tests[0]["train"] != tests[1]["train"]  # the budget draw still follows the recipe seed
    unfixed = [build_splits(data.model_copy(update={"split_seed": None}), seed=s).indices for s in (0, 1)]
    assert unfixed[0]["test"] != unfixed[1]["test"]
    assert (
        unfixed[0]["test"] == build_splits(data.model_copy(update={"split_seed": 0}), seed=1).indices["test"]
    )


def test_named_split_keeps_each_patient_in_one_split() -> None:
    split = named_split(["test", "train", "train", "val", "test"], ["a", "b", "b", "c", "d"])
    assert {name: index.tolist() for name, index in split.items()} == {
        "train": [1, 2],
        "val": [3],
        "test": [0, 4],
    }
    with pytest.raises(
        DataError, match=r"1 patient\(s\) have images in several splits, e.g. 'b' in \['test', 'train'\]"
    ):
        named_split(["train", "test"], ["b", "b"])


def _manifest(folder: Path, splits: list[str], patients: list[str] | None = None) -> SourceSpec:
    """A manifest of 32 x 32 ramps (one per row, label ``nodule`` alternating) with a split column."""
    folder.mkdir(exist_ok=True)
    rows = []
    for i, split in enumerate(splits):
        Image.fromarray((np.add.outer(np.arange(32), np.arange(32)) + 10 * i).astype(np.uint8)).save(
            folder / f"{i}.png"
        )
        patient = patients[i] if patients else f"p{i}"
        rows.append({"path": f"{i}.png", "patient_id": patient, "split": split, "nodule": str(i % 2)})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return SourceSpec(
        name="manifest", options={"csv": str(folder / "manifest.csv"), "label_columns": ["nodule"]}
    )


def _data(*sources: SourceSpec, **fields) -> DataConfig:
    return DataConfig(sources=list(sources), labels=["nodule"], image_size=(32, 32), **fields)


def test_a_split_column_defines_the_split_and_says_so(tmp_path, caplog) -> None:
    spec = _manifest(tmp_path / "m", ["train", "train", "test", "val", "train", "test"])
    with caplog.at_level(logging.INFO, logger="radsight.data.assemble"):
        splits = build_splits(_data(spec, split=(0.0, 0.0, 1.0)), seed=0)
    assert splits.indices == {"train": [0, 1, 4], "val": [3], "test": [2, 5]}
    assert "splits from the data's split column, not drawn at random" in caplog.text
    assert [Path(sample.meta.path).name for sample in splits.test] == ["2.png", "5.png"]


def test_a_split_column_may_not_split_a_patient(tmp_path) -> None:
    spec = _manifest(tmp_path / "m", ["train", "test", "train"], patients=["p0", "p0", "p1"])
    with pytest.raises(DataError, match=r"'manifest:p0' in \['test', 'train'\]"):
        build_splits(_data(spec), seed=0)


def test_every_source_or_none_names_the_split(tmp_path) -> None:
    named = _manifest(tmp_path / "m", ["train", "test"])
    phantoms = SourceSpec(name="phantom", options={"n": 4, "size": [32, 32]})
    with pytest.raises(ConfigError, match=r"data source\(s\) \['phantom'\] name no split"):
        build_splits(_data(named, phantoms), seed=0)


def test_no_test_split_is_accepted_only_when_nothing_is_evaluated(tmp_path) -> None:
    spec = _manifest(tmp_path / "m", ["train", "train", "val", "train"])
    with pytest.raises(
        ConfigError, match=r"no test split to evaluate on \(the split column has no test rows\)"
    ):
        build_splits(_data(spec), seed=0)
    assert build_splits(_data(spec), seed=0, require_test=False).indices["test"] == []
    phantoms = _phantom_splits(budget=None).data.model_copy(update={"split": (0.8, 0.2, 0.0)})
    with pytest.raises(ConfigError, match=r"data\.split gives the test split no share.*--no-evaluate"):
        build_splits(phantoms, seed=0)
    splits = build_splits(phantoms, seed=0, require_test=False)
    assert splits.indices["test"] == [] and len(splits.indices["train"]) == 96
    # a test split asked for but left empty (too few patients) is refused even without evaluation
    too_few = _data(SourceSpec(name="phantom", options={"n": 2, "size": [32, 32]}), split=(0.9, 0.0, 0.1))
    with pytest.raises(DataError, match="the test split is empty: the dataset has 2 images"):
        build_splits(too_few, seed=0, require_test=False)
