"""Attention inside an anatomical mask: hand-computed shares and ratios."""

from __future__ import annotations

import numpy as np
import pytest

from radsight.metrics.attention import attention_ratio, attention_section, attribution_share

MASK = np.array([[1, 0], [0, 0]], dtype=bool)


def test_share_and_ratio_hand_computed():
    attribution = np.array([[3.0, 1.0], [0.0, -2.0]])  # positive mass 4, 3 of it inside; negatives ignored
    assert attribution_share(attribution, MASK) == pytest.approx(0.75)
    assert attention_ratio(attribution, MASK) == pytest.approx(0.75 / 0.25)


def test_uniform_attribution_has_no_preference():
    mask = np.zeros((16, 16), dtype=bool)
    mask[3:11, 2:7] = True
    assert attention_ratio(np.ones((4, 4)), mask) == pytest.approx(1.0)  # resized to the mask's frame


def test_map_is_resized_to_the_mask_frame():
    # [[1, 0], [0, 0]] upsampled x2 (half-pixel centres): rows/cols weigh (1, .75, .25, 0);
    # the top-left 2 x 2 quadrant holds (1 + .75)^2 of the total (1 + .75 + .25)^2.
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    assert attribution_share(np.array([[1.0, 0.0], [0.0, 0.0]]), mask) == pytest.approx(1.75**2 / 2.0**2)


def test_no_attribution_is_undefined_and_empty_mask_raises():
    assert np.isnan(attribution_share(np.zeros((2, 2)), MASK))
    with pytest.raises(ValueError, match="empty"):
        attribution_share(np.ones((2, 2)), np.zeros((2, 2)))


def test_attention_section():
    maps = [np.array([[3.0, 1.0], [0.0, 0.0]]), np.ones((2, 2)), np.zeros((2, 2))]
    section = attention_section(maps, [MASK] * 3, patient_ids=["a", "b", "b"], n_boot=100)
    assert section["n_without_attribution"] == 1
    assert section["attribution_share"] == pytest.approx((0.75 + 0.25) / 2)
    assert section["attention_ratio"] == pytest.approx((3.0 + 1.0) / 2)
    assert (
        section["attention_ratio_ci_low"] <= section["attention_ratio"] <= section["attention_ratio_ci_high"]
    )
