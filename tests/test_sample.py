"""Collate keeps absent annotations absent: NaN plus validity flags, never zeros."""

from __future__ import annotations

import pytest
import torch

from radsight.data.sample import Sample, SampleMeta, collate
from radsight.errors import DataError


def sample(labels=None, gaze=None, mask=None, boxes=None, size=(8, 8)) -> Sample:
    return Sample(
        image=torch.rand(1, *size),
        meta=SampleMeta(source="test", path="x.png", patient_id="p"),
        labels=labels,
        gaze_map=gaze,
        masks=None if mask is None else {"lesion": mask},
        boxes=boxes,
        box_labels=None if boxes is None else ["a"] * len(boxes),
    )


def test_absent_labels_gaze_and_masks_become_nan_with_flags():
    gaze = torch.full((8, 8), 1 / 64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    batch = collate(
        [
            sample(
                labels=torch.tensor([1.0, float("nan")]),
                gaze=gaze,
                mask=mask,
                boxes=torch.tensor([[0, 0, 2, 2.0]]),
            ),
            sample(),
        ]
    )
    assert batch.images.shape == (2, 1, 8, 8)
    assert batch.labels[0, 0] == 1 and torch.isnan(batch.labels[0, 1]) and torch.isnan(batch.labels[1]).all()
    assert batch.gaze_valid.tolist() == [True, False]
    assert torch.isnan(batch.gaze_maps[1]).all() and torch.allclose(
        batch.gaze_maps[0].sum(), torch.tensor(1.0)
    )
    assert batch.mask_valid["lesion"].tolist() == [True, False]
    assert batch.masks["lesion"][0].sum() == 4 and torch.isnan(batch.masks["lesion"][1]).all()
    assert batch.boxes[1] is None and batch.box_labels[1] is None


def test_batch_without_any_annotation_keeps_none():
    batch = collate([sample(), sample()])
    assert batch.labels is None and batch.gaze_maps is None and batch.masks == {}


def test_skipped_files_are_dropped_and_an_all_bad_batch_is_an_error():
    assert len(collate([sample(), None, sample()])) == 2
    with pytest.raises(DataError, match="all 2 samples of a batch were bad files"):
        collate([None, None])


def test_different_image_sizes_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        collate([sample(size=(8, 8)), sample(size=(8, 9))])
