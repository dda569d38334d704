"""Pseudo-gaze: the documented box rule, its place in the pipeline, and the real-data recipe that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from radsight.config import load_recipe
from radsight.data.assemble import build_splits
from radsight.data.pseudo_gaze import META_KEY, PseudoGaze, box_fixations
from radsight.data.sample import Sample, SampleMeta
from radsight.data.transforms import build_transforms
from radsight.errors import ConfigError


def sample_with(boxes: list[list[float]] | None, fixations: torch.Tensor | None = None) -> Sample:
    return Sample(
        image=torch.zeros(1, 100, 200),
        meta=SampleMeta(source="test", path="x.png", patient_id="p"),
        boxes=None if boxes is None else torch.tensor(boxes),
        box_labels=None if boxes is None else ["a"] * len(boxes),
        fixations=fixations,
    )


def test_each_box_gets_a_lattice_with_the_same_total_dwell():
    points = box_fixations(torch.tensor([[10.0, 20.0, 40.0, 50.0], [100.0, 0.0, 190.0, 90.0]]))
    assert points.shape == (18, 3)
    first = points[:9]
    assert sorted(set(first[:, 0].tolist())) == [15.0, 25.0, 35.0]
    assert sorted(set(first[:, 1].tolist())) == [25.0, 35.0, 45.0]
    assert len({(x, y) for x, y, _ in first.tolist()}) == 9
    assert points[:9, 2].sum().item() == pytest.approx(1.0) and points[9:, 2].sum().item() == pytest.approx(
        1.0
    )


def test_only_samples_with_boxes_and_without_gaze_get_pseudo_gaze():
    real = torch.tensor([[5.0, 5.0, 0.3]])
    assert PseudoGaze()(sample_with([[0, 0, 10, 10]], real)).fixations is real
    assert PseudoGaze()(sample_with(None)).fixations is None
    made = PseudoGaze()(sample_with([[0, 0, 10, 10]]))
    assert made.meta.extra[META_KEY] is True
    assert torch.equal(made.fixations, PseudoGaze()(sample_with([[0, 0, 10, 10]])).fixations)


def test_pipeline_turns_boxes_into_a_gaze_map_over_the_box():
    transform = build_transforms(
        (64, 64), train=False, augment=False, gaze_sigma_fraction=0.03, pseudo_gaze=True
    )
    out = transform(sample_with([[120.0, 20.0, 180.0, 80.0]]))
    x0, y0, x1, y1 = out.boxes[0].round().int().tolist()  # the box after the letterbox
    gaze = out.gaze_map
    assert gaze.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert gaze[y0:y1, x0:x1].sum().item() > 0.8
    without = build_transforms((64, 64), train=False, augment=False, gaze_sigma_fraction=0.03)
    assert without(sample_with([[120.0, 20.0, 180.0, 80.0]])).gaze_map is None


def test_pseudo_gaze_needs_a_gaze_sigma(recipes_dir: Path):
    with pytest.raises(ConfigError, match="gaze_sigma_fraction"):
        load_recipe(
            recipes_dir / "gaze_unet_cpu.yaml", ["data.pseudo_gaze=true", "data.gaze_sigma_fraction=null"]
        )


def test_real_recipe_gives_gaze_exactly_to_images_with_boxes(data_root: Path, recipes_dir: Path):
    recipe = load_recipe(recipes_dir / "gaze_unet_real.yaml")
    test = build_splits(recipe.data, recipe.seed).test
    wanted = {("nih", True), ("nih", False), ("covid", True)}
    for position in range(len(test)):
        sample = test[position]
        has_boxes = sample.boxes is not None and len(sample.boxes) > 0
        assert (sample.gaze_map is not None) == has_boxes
        assert sample.meta.extra.get(META_KEY, False) == has_boxes
        wanted.discard((sample.meta.source, has_boxes))
        if not wanted:
            break
    assert not wanted, f"no test image of kind {wanted}"
