"""Phantom mammograms: reproducible, small lesions of two shapes with exact masks, stored facing the way
a detector stores them, and the breast alignment that makes every view face right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from radsight.config import SourceSpec
from radsight.data.assemble import build_source
from radsight.data.sources.nyu_mammo import NYUMammo
from radsight.data.sources.phantoms_mammo import PhantomMammogram
from radsight.data.transforms import AlignBreast, Geometry
from radsight.errors import ConfigError

SIZE = (256, 192)
LESIONS = ("benign", "malignant")


@pytest.fixture(scope="module")
def phantoms() -> PhantomMammogram:
    return PhantomMammogram(24, size=SIZE, seed=4, prevalence=0.6)


def chest_wall_on_left(image: torch.Tensor) -> bool:
    half = image.shape[-1] // 2
    return bool(image[..., :half].sum() > image[..., -half:].sum())


def test_reproducible_and_labelled_by_patient(phantoms: PhantomMammogram) -> None:
    again = PhantomMammogram(30, size=SIZE, seed=4, prevalence=0.6)
    assert torch.equal(phantoms[5].image, again[5].image)
    assert np.array_equal(phantoms.label_matrix, again.label_matrix[:24])
    assert phantoms.label_names == list(LESIONS)
    assert phantoms.patient_ids[:4] == ["phantom-0000", "phantom-0000", "phantom-0001", "phantom-0001"]
    first, second = phantoms[0], phantoms[1]
    assert (first.meta.view, second.meta.view) == ("CC", "MLO")
    assert first.meta.extra["laterality"] == second.meta.extra["laterality"]  # one breast, two views
    with pytest.raises(ConfigError, match="nodule"):
        PhantomMammogram(2, size=SIZE, classes=("nodule",))


def test_default_size_is_high_resolution_with_small_lesions() -> None:
    sample = PhantomMammogram(1, seed=0, prevalence=1.0)[0]
    assert sample.image.shape == (1, 2048, 1280)
    for name in LESIONS:
        area = float(sample.masks[name].float().mean())
        assert 0 < area < 0.01


def test_annotations_agree_and_lesions_lie_in_the_breast(phantoms: PhantomMammogram) -> None:
    lateralities = set()
    for index in range(len(phantoms)):
        sample = phantoms[index]
        assert sample.image.shape == (1, *SIZE) and float(sample.image.min()) >= 0
        assert float(sample.image.max()) <= 1
        present = [n for n, flag in zip(LESIONS, sample.labels.tolist(), strict=True) if flag]
        assert sample.box_labels == present
        assert set(sample.masks) == {*LESIONS, "breast"}
        for name in LESIONS:
            mask = sample.masks[name]
            assert bool(mask.any()) == (name in present)
            assert not (mask & ~sample.masks["breast"]).any()
        for box, name in zip(sample.boxes, sample.box_labels, strict=True):
            rows, cols = torch.nonzero(sample.masks[name], as_tuple=True)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        laterality = sample.meta.extra["laterality"]
        lateralities.add(laterality)
        # stored as a detector sees it: a left breast faces right, a right breast faces left
        assert chest_wall_on_left(sample.image) == (laterality == "L")
    assert lateralities == {"L", "R"}


def test_the_classes_differ_in_margin_shape() -> None:
    dataset = PhantomMammogram(24, size=(768, 480), seed=7, prevalence=0.7)
    solidity: dict[str, list[float]] = {name: [] for name in LESIONS}
    for index in range(len(dataset)):
        sample = dataset[index]
        for name in sample.box_labels:
            points = torch.nonzero(sample.masks[name]).numpy().astype(float)
            solidity[name].append(len(points) / ConvexHull(points).volume)
    # an oval fills its convex hull; spicules leave most of theirs empty
    assert min(solidity["benign"]) > 0.85 > 0.6 > max(solidity["malignant"])


def test_alignment_makes_every_breast_face_right_with_its_annotations(phantoms: PhantomMammogram) -> None:
    align = AlignBreast()
    for index in range(8):
        raw = phantoms[index]
        aligned = align(raw)
        flipped = raw.meta.extra["laterality"] == "R"
        assert Geometry.of(aligned).mirrored == flipped
        assert chest_wall_on_left(aligned.image)
        expected = raw.image.flip(-1) if flipped else raw.image
        assert torch.equal(aligned.image, expected)
        for name in raw.masks:
            assert torch.equal(aligned.masks[name], raw.masks[name].flip(-1) if flipped else raw.masks[name])
        if flipped and len(raw.boxes):
            x0, y0, x1, y1 = raw.boxes[0].tolist()
            assert aligned.boxes[0].tolist() == [SIZE[1] - x1, y0, SIZE[1] - x0, y1]


def test_recipe_option_aligns_any_source() -> None:
    spec = SourceSpec(name="phantom_mammo", options={"n": 4, "size": list(SIZE), "align_breast": True})
    source = build_source(spec)
    assert isinstance(source, PhantomMammogram)
    assert all(chest_wall_on_left(source[i].image) for i in range(4))


def test_alignment_on_nyu_views(data_root: Path) -> None:
    """NYU's cropped views were already flipped by NYU, the original right views were not."""
    root = data_root / "mammo-nyu"
    align = AlignBreast()
    cropped = NYUMammo(root)
    for index in range(len(cropped)):
        sample = align(cropped[index])
        assert Geometry.of(sample).mirrored is False
    original = NYUMammo(root, cropped=False)
    for index in range(len(original)):
        sample = original[index]
        aligned = align(sample)
        assert Geometry.of(aligned).mirrored == (sample.meta.extra["laterality"] == "R")
        assert chest_wall_on_left(aligned.image)
