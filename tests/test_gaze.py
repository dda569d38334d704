"""Fixation maps: normalised, peaked where the reader looked, weighted by how long."""

from __future__ import annotations

import math

import pytest
import torch

from radsight.data.gaze import fixations_to_map
from radsight.errors import ConfigError, DataError


def test_hand_computed_small_case() -> None:
    # One fixation at the centre of pixel (row 1, col 2) of a 3 x 4 image, sigma 1 px: the density is
    # exp(-d^2 / 2) over pixel centres, normalised separably along x and y.
    out = fixations_to_map(torch.tensor([[2.5, 1.5, 0.3]]), (3, 4), sigma_px=1.0)
    gx = torch.tensor([math.exp(-2), math.exp(-0.5), 1.0, math.exp(-0.5)])
    gy = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    expected = torch.outer(gy / gy.sum(), gx / gx.sum())
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.dtype == torch.float32


def test_sums_to_one_and_peaks_at_a_single_fixation() -> None:
    out = fixations_to_map(torch.tensor([[40.5, 10.5, 0.5]]), (64, 96), sigma_px=4.0)
    assert out.shape == (64, 96)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-6)
    assert divmod(int(out.argmax()), 96) == (10, 40)


def test_mass_follows_duration() -> None:
    fixations = torch.tensor([[10.0, 10.0, 1.0], [50.0, 30.0, 3.0]])
    out = fixations_to_map(fixations, (40, 64), sigma_px=2.0)
    left, right = float(out[:, :30].sum()), float(out[:, 30:].sum())
    assert right / left == pytest.approx(3.0, rel=1e-3)
    equal = fixations_to_map(fixations, (40, 64), sigma_px=2.0, weight_by_duration=False)
    assert float(equal[:, 30:].sum()) / float(equal[:, :30].sum()) == pytest.approx(1.0, rel=1e-3)


def test_a_fixation_at_the_border_keeps_its_share() -> None:
    fixations = torch.tensor([[0.1, 20.0, 1.0], [32.0, 20.0, 1.0]])
    out = fixations_to_map(fixations, (40, 64), sigma_px=4.0)
    assert float(out[:, :16].sum()) == pytest.approx(0.5, abs=1e-3)


def test_fixations_outside_are_ignored_and_none_inside_is_an_error() -> None:
    inside = torch.tensor([[5.5, 5.5, 0.2]])
    mixed = torch.cat([inside, torch.tensor([[-3.0, 5.0, 0.9], [5.0, 99.0, 0.9]])])
    assert torch.equal(fixations_to_map(mixed, (16, 16), 2.0), fixations_to_map(inside, (16, 16), 2.0))
    with pytest.raises(DataError, match="none of the 2 fixations"):
        fixations_to_map(mixed[1:], (16, 16), 2.0)
    with pytest.raises(DataError, match="no fixations"):
        fixations_to_map(torch.zeros(0, 3), (16, 16), 2.0)
    with pytest.raises(DataError, match="durations are zero"):
        fixations_to_map(torch.tensor([[5.0, 5.0, 0.0]]), (16, 16), 2.0)
    with pytest.raises(ConfigError):
        fixations_to_map(inside, (16, 16), 0.0)


def test_tiny_sigma_does_not_underflow() -> None:
    out = fixations_to_map(torch.tensor([[3.0, 3.0, 1.0]]), (8, 8), sigma_px=1e-3)
    assert torch.isfinite(out).all() and float(out.sum()) == pytest.approx(1.0)
    assert float(out[2:4, 2:4].sum()) == pytest.approx(1.0)  # split among the four touching pixels


def test_hundreds_of_fixations_at_512_make_one_distribution() -> None:
    # its speed is measured by bench/components.py
    generator = torch.Generator().manual_seed(0)
    fixations = torch.rand(500, 3, generator=generator) * torch.tensor([512.0, 512.0, 1.0])
    out = fixations_to_map(fixations, (512, 512), sigma_px=15.0)
    assert out.shape == (512, 512) and float(out.sum()) == pytest.approx(1.0, abs=1e-5)
