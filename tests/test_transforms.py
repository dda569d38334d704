"""Transforms move image, boxes, masks and fixations together, and the geometry record undoes
letterboxing and mirroring."""

from __future__ import annotations

import math

import pytest
import torch

from radsight.data.sample import Sample, SampleMeta
from radsight.data.transforms import (
    RESIZE_MODES,
    AlignBreast,
    CenterCrop,
    CropCenter,
    CropLungs,
    GazeMap,
    Geometry,
    HorizontalFlip,
    Letterbox,
    Pad,
    RandomAffine,
    RandomCrop,
    RandomIntensity,
    Resize,
    Stretch,
    build_transforms,
)
from radsight.errors import ConfigError, DataError


def _sample(height: int = 60, width: int = 80, channels: int = 1) -> Sample:
    """A dark image with one bright rectangle, its mask and box, and a fixation on a marked pixel.

    The marked pixel is in channel 0 too, or alone in channel 1 when ``channels=2`` (geometry is
    channel-agnostic), so that it does not disturb the rectangle's outline.
    """
    image = torch.zeros(channels, height, width)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[20:32, 30:50] = True
    image[0][mask] = 0.8
    image[-1, 45, 12] = 1.0  # the pixel the fixation marks, at its centre
    return Sample(
        image=image,
        meta=SampleMeta(source="test", path="mem://rect", patient_id="p0"),
        boxes=torch.tensor([[30.0, 20.0, 50.0, 32.0]]),
        box_labels=["nodule"],
        masks={"nodule": mask},
        fixations=torch.tensor([[12.5, 45.5, 0.4], [40.0, 26.0, 0.6]]),
    )


def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


GEOMETRY = {
    "resize-down": lambda: Resize((30, 50)),
    "resize-up": lambda: Resize((150, 170)),
    "letterbox": lambda: Letterbox((64, 64)),
    "pad": lambda: Pad((3, 5, 7, 2)),
    "center-crop": lambda: CenterCrop((40, 56)),
    "random-crop": lambda: RandomCrop((48, 64)),
    "affine": lambda: RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
    "flip": lambda: HorizontalFlip(p=1.0),
}


@pytest.mark.parametrize("name", sorted(GEOMETRY))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_box_image_and_fixation_stay_together(name: str, seed: int) -> None:
    torch.manual_seed(seed)
    out = GEOMETRY[name]()(_sample(channels=2))
    (box,) = out.boxes
    assert out.box_labels == ["nodule"]
    assert out.masks["nodule"].shape == out.image.shape[-2:]
    assert torch.allclose(_mask_box(out.masks["nodule"]), box, atol=1.0)
    assert torch.allclose(_mask_box(out.image[0] > 0.4), box, atol=1.0)
    # The marked pixel (the brightest) is under the first fixation.
    marked = torch.nonzero(out.image[1] == out.image[1].max())[0].float() + 0.5
    assert torch.allclose(out.fixations[0, [1, 0]], marked, atol=1.0)
    assert out.fixations[:, 2].tolist() == pytest.approx([0.4, 0.6])


def test_resize_up_then_down_returns_annotations() -> None:
    original = _sample()
    back = Resize((60, 80))(Resize((173, 241))(original))
    assert torch.allclose(back.boxes, original.boxes, atol=1.0)
    assert torch.allclose(back.fixations, original.fixations, atol=1.0)
    assert torch.equal(back.masks["nodule"], original.masks["nodule"])


def test_flip_twice_is_identity_and_flips_to_the_mirrored_pixel() -> None:
    original = _sample()
    once = HorizontalFlip(p=1.0)(original)
    assert torch.allclose(once.boxes, torch.tensor([[30.0, 20.0, 50.0, 32.0]]))  # symmetric in 80 px
    assert once.image[0, 45, 80 - 1 - 12] == 1.0
    assert once.fixations[0, :2].tolist() == [80 - 12.5, 45.5]
    twice = HorizontalFlip(p=1.0)(once)
    assert torch.equal(twice.image, original.image)
    assert torch.equal(twice.boxes, original.boxes)
    assert torch.equal(twice.fixations, original.fixations)
    assert torch.equal(twice.masks["nodule"], original.masks["nodule"])
    assert HorizontalFlip(p=0.0)(original) is original


def test_crop_clips_boxes_and_drops_what_leaves() -> None:
    sample = _sample().replace(
        boxes=torch.tensor([[30.0, 20.0, 50.0, 32.0], [0.0, 50.0, 10.0, 60.0]]),
        box_labels=["nodule", "opacity"],
    )
    out = CenterCrop((40, 30))(sample)  # keeps rows 10..50, columns 25..55
    assert out.boxes.tolist() == [[5.0, 10.0, 25.0, 22.0]]
    assert out.box_labels == ["nodule"]
    assert out.fixations.tolist() == [[15.0, 16.0, pytest.approx(0.6)]]  # the one at x=12.5 left


def test_box_clipped_to_a_sliver_is_dropped() -> None:
    sample = _sample().replace(boxes=torch.tensor([[0.0, 0.0, 25.5, 10.0]]), box_labels=["opacity"])
    out = CenterCrop((40, 30))(sample)  # starts at x=25: 0.5 px of the box is left
    assert out.boxes.shape == (0, 4)
    assert out.box_labels == []


def test_letterbox_keeps_aspect_and_maps_back() -> None:
    sample = _sample(60, 120).replace(
        boxes=torch.tensor([[30.0, 20.0, 50.0, 32.0]]), fixations=torch.tensor([[12.5, 45.5, 0.3]])
    )
    ramp = torch.linspace(0, 1, 120).expand(60, 120)
    sample = sample.replace(image=ramp[None].clone(), masks=None)
    out = Letterbox((96, 96))(sample)
    info = out.meta.geometry
    assert info == Geometry((60, 120), (96, 96), scale_x=0.8, scale_y=0.8, left=0, top=24)
    assert out.image[0, :24].abs().max() == 0 and out.image[0, -24:].abs().max() == 0  # the padding
    assert torch.allclose(info.boxes_to_original(out.boxes), sample.boxes, atol=1e-4)
    assert torch.allclose(info.points_to_original(out.fixations[:, :2]), sample.fixations[:, :2], atol=1e-4)
    back = info.map_to_original(out.image[0])
    assert back.shape == (60, 120)
    assert torch.allclose(back[:, 2:-2], ramp[:, 2:-2], atol=0.02)
    # Any later geometry the record cannot express invalidates it rather than leaving it stale.
    stale = Resize((50, 50))(out).meta.geometry
    assert not stale.invertible
    with pytest.raises(ConfigError, match="cannot be mapped back"):
        stale.boxes_to_original(out.boxes)


def test_geometry_record_of_alignment_and_letterbox_by_hand() -> None:
    # A 40 x 100 file whose bright half is on the right: alignment mirrors it, the letterbox to 64 x 64
    # scales by 0.64 (100 -> 64 columns, 40 -> 25.6 -> 26 rows) and pads 19 rows on top.
    image = torch.zeros(1, 40, 100)
    image[0, :, 60:] = 0.9
    box = torch.tensor([[70.0, 10.0, 90.0, 30.0]])  # in the file's pixels
    sample = Sample(
        image=image,
        meta=SampleMeta(source="test", path="mem://m", patient_id="p"),
        boxes=box,
        box_labels=["a"],
    )
    out = Letterbox((64, 64))(AlignBreast()(sample))
    geometry = out.meta.geometry
    assert geometry.mirrored and geometry.original_size == (40, 100) and geometry.size == (64, 64)
    assert (geometry.scale_x, geometry.scale_y, geometry.left, geometry.top) == (0.64, 0.65, 0, 19)
    # mirrored: x -> 100 - x, so the box spans 10..30, then x * 0.64 and y * 0.65 + 19
    assert torch.allclose(out.boxes, torch.tensor([[6.4, 25.5, 19.2, 38.5]]))
    assert torch.allclose(geometry.boxes_to_original(out.boxes), box, atol=1e-4)
    assert torch.allclose(
        geometry.points_to_original(torch.tensor([[6.4, 25.5]])), torch.tensor([[90.0, 10.0]])
    )
    # a map marking the box in the model's frame comes back on the box in the file's frame
    heat = torch.zeros(64, 64)
    heat[26:38, 7:19] = 1.0
    back = geometry.map_to_original(heat)
    assert back.shape == (40, 100)
    assert float(back[20, 80]) == 1.0 and float(back[20, 20]) == 0.0


def test_flip_after_letterbox_is_recorded_exactly() -> None:
    # Uneven padding (9 columns left, 10 right) still maps back when the mirror comes last.
    sample = _sample(87, 61).replace(masks=None, fixations=None)
    out = HorizontalFlip(p=1.0)(Letterbox((64, 64))(sample))
    geometry = out.meta.geometry
    assert geometry.mirrored and geometry.invertible and geometry.left == pytest.approx(10)
    assert torch.allclose(geometry.boxes_to_original(out.boxes), sample.boxes, atol=1e-4)
    ramp = torch.linspace(0, 1, 61).expand(87, 61)
    flipped = HorizontalFlip(p=1.0)(Letterbox((64, 64))(sample.replace(image=ramp[None].clone())))
    back = flipped.meta.geometry.map_to_original(flipped.image[0])
    assert torch.allclose(back[:, 3:-3], ramp[:, 3:-3], atol=0.03)


def test_intensity_changes_only_the_image() -> None:
    torch.manual_seed(0)
    original = _sample()
    out = RandomIntensity(brightness=0.3, contrast=0.3, gamma=0.3)(original)
    assert not torch.equal(out.image, original.image)
    assert float(out.image.min()) >= 0 and float(out.image.max()) <= 1
    assert out.boxes is original.boxes and out.masks is original.masks and out.fixations is original.fixations


def test_gaze_map_after_geometry() -> None:
    out = GazeMap(sigma_fraction=0.02)(Resize((120, 160))(_sample()))
    assert out.gaze_map.shape == (120, 160)
    assert float(out.gaze_map.sum()) == pytest.approx(1.0, abs=1e-5)
    assert GazeMap(0.02)(_sample().replace(fixations=None)).gaze_map is None
    outside = _sample().replace(fixations=torch.tensor([[500.0, 5.0, 0.2]]))
    with pytest.raises(DataError, match="mem://rect"):
        GazeMap(0.02)(outside)


def test_build_transforms_is_seeded_and_eval_is_letterbox_only() -> None:
    sample = _sample()
    train = build_transforms((64, 64), train=True, augment=True, gaze_sigma_fraction=0.05)
    torch.manual_seed(7)
    first = train(sample)
    torch.manual_seed(7)
    second = train(sample)
    torch.manual_seed(8)
    third = train(sample)
    assert torch.equal(first.image, second.image) and torch.equal(first.gaze_map, second.gaze_map)
    assert not torch.equal(first.image, third.image)
    assert first.size == (64, 64) and first.gaze_map.shape == (64, 64)

    evaluate = build_transforms((64, 64), train=False, augment=True, gaze_sigma_fraction=None)
    expected = Letterbox((64, 64))(sample)
    out = evaluate(sample)
    assert torch.equal(out.image, expected.image) and torch.equal(out.boxes, expected.boxes)
    assert out.gaze_map is None and out.meta.geometry == expected.meta.geometry


def _ramp_sample(height: int, width: int) -> Sample:
    """A horizontal ramp with one box and a lung mask around it, to map back by every resize mode."""
    lungs = torch.zeros(height, width, dtype=torch.bool)
    lungs[10:50, 20:100] = True
    ramp = torch.linspace(0, 1, width).expand(height, width)
    return Sample(
        image=ramp[None].clone(),
        meta=SampleMeta(source="test", path="mem://ramp", patient_id="p0"),
        boxes=torch.tensor([[30.0, 20.0, 50.0, 32.0]]),
        box_labels=["nodule"],
        masks={"lungs": lungs},
    )


@pytest.mark.parametrize("mode", sorted(RESIZE_MODES))
def test_every_resize_mode_maps_boxes_and_maps_back_onto_the_file(mode: str) -> None:
    sample = _ramp_sample(60, 120)
    out = RESIZE_MODES[mode]((64, 64))(sample)
    geometry = out.meta.geometry
    assert out.size == (64, 64) and geometry.invertible and geometry.original_size == (60, 120)
    assert torch.allclose(geometry.boxes_to_original(out.boxes), sample.boxes, atol=1e-3)
    back = geometry.map_to_original(out.image[0])
    assert back.shape == (60, 120)
    shown = geometry.points_to_original(torch.tensor([[0.0, 0.0], [64.0, 64.0]]))
    x0, x1 = max(0, int(shown[0, 0]) + 2), min(120, int(shown[1, 0]) - 2)
    assert torch.allclose(back[5:-5, x0:x1], sample.image[0, 5:-5, x0:x1], atol=0.03)


def test_padding_share_of_each_mode_by_hand() -> None:
    sample = _ramp_sample(60, 120)
    # letterbox of 60 x 120 into 64 x 64: the picture is 32 rows high, half of the input is padding
    assert Letterbox((64, 64))(sample).meta.geometry.padding_share() == pytest.approx(0.5)
    assert Stretch((64, 64))(sample).meta.geometry.padding_share() == 0.0
    stretched = [Stretch((64, 64))(_ramp_sample(60, w)).meta.geometry for w in range(90, 130)]
    assert {geometry.padding_share() for geometry in stretched} == {0.0}  # not float noise, which ranks
    assert CropCenter((64, 64))(sample).meta.geometry.padding_share() == 0.0
    assert CropLungs((64, 64))(sample).meta.geometry.padding_share() == 0.0
    assert not Resize((64, 64))(sample).meta.geometry.invertible
    assert math.isnan(Resize((64, 64))(sample).meta.geometry.padding_share())


def test_crop_center_cuts_the_long_sides_ends_and_maps_them_back_as_zero() -> None:
    sample = _ramp_sample(60, 120)
    out = CropCenter((64, 64))(sample)
    # scaled by 64/60 to 64 x 128, then columns 32..96 kept: the file's columns 30..90
    geometry = out.meta.geometry
    assert geometry.scale_y == pytest.approx(64 / 60) and geometry.left == -32 and geometry.top == 0
    back = geometry.map_to_original(out.image[0])
    assert back[:, :28].abs().max() == 0 and back[:, 92:].abs().max() == 0
    assert back[:, 32:88].min() > 0.2


def test_crop_lungs_keeps_the_lungs_and_falls_back_to_the_centre_without_them() -> None:
    sample = _ramp_sample(60, 120)
    out = CropLungs((64, 64), margin=0.0)(sample)
    # lungs x 20..100, y 10..50 (80 x 40): squared within the image to 80 x 60 around them
    corners = out.meta.geometry.points_to_original(torch.tensor([[0.0, 0.0], [64.0, 64.0]]))
    assert torch.allclose(corners, torch.tensor([[20.0, 0.0], [100.0, 60.0]]), atol=1e-3)
    assert out.masks["lungs"].float().mean() > 0.6
    bare = sample.replace(masks=None, boxes=None, box_labels=None)
    assert CropLungs((64, 64))(bare).meta.geometry == CropCenter((64, 64))(bare).meta.geometry
    # covid's lung boxes stand in for a mask
    boxed = sample.replace(masks=None, boxes=torch.tensor([[20.0, 10, 60, 50], [60, 10, 100, 50]]))
    boxed = boxed.replace(box_labels=["Right Lung", "Left Lung"])
    again = CropLungs((64, 64), margin=0.0)(boxed).meta.geometry.points_to_original(
        torch.tensor([[0.0, 0.0]])
    )
    assert torch.allclose(again, corners[:1], atol=1e-3)


def test_the_resize_mode_of_a_recipe_is_checked() -> None:
    from pydantic import ValidationError

    from radsight.config import DataConfig

    assert DataConfig(sources=[{"name": "phantom"}], labels=["nodule"]).resize == "letterbox"
    with pytest.raises(ValidationError, match="letterbox"):
        DataConfig(sources=[{"name": "phantom"}], labels=["nodule"], resize="squash")
    pipeline = build_transforms(
        (64, 64), train=False, augment=False, gaze_sigma_fraction=None, resize="stretch"
    )
    assert pipeline(_ramp_sample(60, 120)).meta.geometry.scale_y == pytest.approx(64 / 60)
