"""Phantom chest films: reproducible, consistent annotations, and classes only the lesion reveals."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.transforms import build_transforms
from radsight.errors import ConfigError

CLASSES = ("nodule", "opacity")


@pytest.fixture(scope="module")
def phantoms() -> PhantomChestXray:
    return PhantomChestXray(40, size=(128, 128), seed=5)


def _same(a, b) -> bool:
    return (
        torch.equal(a.image, b.image)
        and torch.equal(a.boxes, b.boxes)
        and torch.equal(a.fixations, b.fixations)
        and a.report == b.report
    )


def test_any_index_is_reproducible_alone() -> None:
    small = PhantomChestXray(10, size=(64, 80), seed=1)
    large = PhantomChestXray(500, size=(64, 80), seed=1)
    assert _same(small[7], large[7]) and _same(small[7], small[7])
    assert np.array_equal(small.label_matrix, large.label_matrix[:10])
    assert not torch.equal(small[7].image, PhantomChestXray(10, size=(64, 80), seed=2)[7].image)
    with pytest.raises(IndexError):
        small[10]


def test_labels_patients_and_prevalence() -> None:
    dataset = PhantomChestXray(2000, seed=0)
    assert dataset.label_names == list(CLASSES)
    assert dataset.patient_ids[:5] == [
        "phantom-0000",
        "phantom-0000",
        "phantom-0001",
        "phantom-0001",
        "phantom-0002",
    ]
    labels = dataset.label_matrix
    assert labels.shape == (2000, 2) and not np.isnan(labels).any()
    assert np.allclose(labels.mean(axis=0), 0.4, atol=0.04)
    count = labels.sum(axis=1)
    assert 0.3 < (count == 0).mean() < 0.42 and 0.12 < (count == 2).mean() < 0.2


def test_annotations_agree_with_each_other(phantoms: PhantomChestXray) -> None:
    for index in range(len(phantoms)):
        sample = phantoms[index]
        assert sample.image.shape == (1, 128, 128) and sample.image.dtype == torch.float32
        assert float(sample.image.min()) >= 0 and float(sample.image.max()) <= 1
        assert torch.equal(sample.labels, torch.from_numpy(phantoms.label_matrix[index]))
        present = [name for name, flag in zip(CLASSES, sample.labels.tolist(), strict=True) if flag]
        assert sample.box_labels == present and sample.boxes.shape == (len(present), 4)
        assert set(sample.masks) == {*CLASSES, "lungs"}
        lungs = sample.masks["lungs"]
        for name in CLASSES:
            mask = sample.masks[name]
            assert bool(mask.any()) == (name in present)
            assert not (mask & ~lungs).any()
        for box, name in zip(sample.boxes, sample.box_labels, strict=True):
            rows, cols = torch.nonzero(sample.masks[name], as_tuple=True)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert sample.meta.source == "phantom" and sample.meta.patient_id == phantoms.patient_ids[index]


def test_gaze_dwells_on_lesions_and_stays_in_the_lungs(phantoms: PhantomChestXray) -> None:
    on_lesion = total = 0
    for sample in (phantoms[i] for i in range(len(phantoms))):
        fixations = sample.fixations
        assert fixations.shape[1] == 3 and len(fixations) >= 8
        assert ((fixations[:, 2] >= 0.1) & (fixations[:, 2] <= 1.0)).all()
        x, y = fixations[:, 0].long(), fixations[:, 1].long()
        lesion = torch.zeros_like(sample.masks["lungs"])
        for name in CLASSES:
            lesion |= sample.masks[name]
        near = torch.nn.functional.max_pool2d(lesion[None, None].float(), 9, 1, 4)[0, 0].bool()
        if sample.box_labels:
            on_lesion += int(near[y, x].sum())
            total += len(fixations)
        else:
            assert sample.masks["lungs"][y, x].all()
    assert 0.55 < on_lesion / total < 0.9


def test_report_names_findings_and_their_side(phantoms: PhantomChestXray) -> None:
    for sample in (phantoms[i] for i in range(len(phantoms))):
        if not sample.box_labels:
            assert sample.report == "Normal chest."
            continue
        for box, name in zip(sample.boxes, sample.box_labels, strict=True):
            match = re.search(
                rf"(Small|Large) {name} in the (right|left) (upper|middle|lower) lung\.", sample.report
            )
            assert match, sample.report
            # On a PA film the patient's right lung is on the image's left.
            assert match.group(2) == ("right" if float(box[0] + box[2]) / 2 < 64 else "left")
        for name in set(CLASSES) - set(sample.box_labels):
            assert f"No {name}." in sample.report


def test_images_of_one_patient_share_anatomy() -> None:
    dataset = PhantomChestXray(40, size=(96, 96), seed=3)
    lungs = [dataset[i].masks["lungs"] for i in range(40)]

    def iou(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a & b).sum()) / float((a | b).sum())

    same = np.mean([iou(lungs[i], lungs[i + 1]) for i in range(0, 40, 2)])
    other = np.mean([iou(lungs[i], lungs[i + 2]) for i in range(0, 38, 2)])
    assert same > other + 0.05


def test_class_is_visible_in_the_lesion_but_not_in_global_statistics() -> None:
    dataset = PhantomChestXray(300, size=(96, 96), seed=11)
    single = np.flatnonzero(dataset.label_matrix.sum(axis=1) == 1)
    global_stats, lesion_stats, is_nodule = [], [], []
    for index in single:
        sample = dataset[int(index)]
        image = sample.image[0].numpy()
        global_stats.append(
            [image.mean(), image.std(), *np.percentile(image, [1, 5, 25, 50, 75, 95, 99]), image.max()]
        )
        name = sample.box_labels[0]
        rows, cols = np.nonzero(sample.masks[name].numpy())
        # Radial position in area units (t = d^2 / r^2) from the mask alone.
        t = ((cols - cols.mean()) ** 2 + (rows - rows.mean()) ** 2) / (len(rows) / np.pi)
        values = image[rows, cols]
        lesion_stats.append([values[t < 0.25].mean() - values[(t > 0.35) & (t < 0.65)].mean()])
        is_nodule.append(name == "nodule")
    assert 0.35 < np.mean(is_nodule) < 0.65
    model = make_pipeline(StandardScaler(), LogisticRegression())
    global_auc = cross_val_score(model, np.array(global_stats), is_nodule, cv=5, scoring="roc_auc").mean()
    lesion_auc = cross_val_score(model, np.array(lesion_stats), is_nodule, cv=5, scoring="roc_auc").mean()
    assert abs(global_auc - 0.5) < 0.15
    assert lesion_auc > 0.95


def test_transform_is_applied_and_unknown_classes_are_refused() -> None:
    dataset = PhantomChestXray(
        4,
        size=(96, 128),
        transform=build_transforms((64, 64), train=True, augment=True, gaze_sigma_fraction=0.05),
    )
    sample = dataset[1]
    assert sample.size == (64, 64) and sample.gaze_map.shape == (64, 64)
    assert float(sample.gaze_map.sum()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="mass"):
        PhantomChestXray(4, classes=("nodule", "mass"))
