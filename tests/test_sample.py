"""Collate keeps absent annotations absent: NaN plus validity flags, never zeros."""

from __future__ import annotations

import pytest
import torch

from radsight.data.sample import Sample, SampleMeta, collate, make_loader
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


def with_tokens(ids: list[int] | None) -> Sample:
    return sample().replace(token_ids=None if ids is None else torch.tensor(ids, dtype=torch.int64))


def test_token_ids_are_padded_with_the_pad_id_and_masked():
    batch = collate([with_tokens([5, 6, 7]), with_tokens([8])], pad_id=-1)
    assert batch.token_ids.tolist() == [[5, 6, 7], [8, -1, -1]]
    assert batch.token_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.token_mask.sum(dim=1).tolist() == [3, 1]  # the lengths
    assert batch.token_valid.tolist() == [True, True]


def test_absent_token_ids_stay_absent():
    mixed = collate([with_tokens(None), with_tokens([3, 4])])
    assert mixed.token_ids.tolist() == [[0, 0], [3, 4]]  # default pad id 0
    assert mixed.token_mask.tolist() == [[False, False], [True, True]]
    assert mixed.token_valid.tolist() == [False, True]
    none = collate([with_tokens(None), with_tokens(None)])
    assert none.token_ids is None and none.token_mask is None and none.token_valid is None


def test_token_ids_must_be_one_dimensional_integers():
    with pytest.raises(ValueError, match="1-D int64"):
        collate([sample().replace(token_ids=torch.tensor([[1, 2]]))])
    with pytest.raises(ValueError, match="1-D int64"):
        collate([sample().replace(token_ids=torch.tensor([1.0, 2.0]))])


def test_loader_pads_with_its_pad_id():
    loader = make_loader([with_tokens([1, 2]), with_tokens([3])], batch_size=2, shuffle=False, pad_id=9)
    assert next(iter(loader)).token_ids.tolist() == [[1, 2], [3, 9]]


def test_batch_to_moves_every_tensor_and_keeps_per_sample_lists():
    gaze = torch.full((8, 8), 1 / 64)
    mask = torch.ones(8, 8, dtype=torch.bool)
    batch = collate(
        [
            sample(
                labels=torch.tensor([1.0, 0.0]), gaze=gaze, mask=mask, boxes=torch.tensor([[0, 0, 2, 2.0]])
            ),
            with_tokens([1, 2]),
        ]
    )
    moved = batch.to("meta")
    tensors = {
        "images": moved.images,
        "labels": moved.labels,
        "gaze_maps": moved.gaze_maps,
        "gaze_valid": moved.gaze_valid,
        "token_ids": moved.token_ids,
        "token_mask": moved.token_mask,
        "token_valid": moved.token_valid,
        "masks": moved.masks["lesion"],
        "mask_valid": moved.mask_valid["lesion"],
    }
    assert {name: t.device.type for name, t in tensors.items()} == dict.fromkeys(tensors, "meta")
    assert moved.token_ids.shape == (2, 2) and moved.token_ids.dtype == torch.int64
    assert moved.boxes[0].device.type == "cpu" and moved.meta is batch.meta
    assert batch.images.device.type == "cpu"  # the original batch is left where it was
