"""Shared building blocks: shapes, gates, and pooling values checked by hand."""

from __future__ import annotations

import pytest
import torch

from radsight.nn.blocks import AttentionPooling, ResidualSEBlock, SqueezeExcite, TopKPooling, UpBlock


def test_squeeze_excite_gates_each_channel_strictly_between_zero_and_one() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=8)
    x = torch.randn(2, 32, 5, 7) * 10
    gate = se.gate(x)
    assert gate.shape == (2, 32, 1, 1)
    assert bool(((gate > 0) & (gate < 1)).all())
    assert torch.allclose(se(x), x * gate)


def test_residual_se_block_projects_the_shortcut_only_when_widening() -> None:
    torch.manual_seed(0)
    widen, keep = ResidualSEBlock(8, 16), ResidualSEBlock(16, 16)
    assert isinstance(keep.shortcut, torch.nn.Identity)
    assert isinstance(widen.shortcut[0], torch.nn.Conv2d) and widen.shortcut[0].kernel_size == (1, 1)
    out = keep(widen(torch.randn(2, 8, 9, 11)))
    assert out.shape == (2, 16, 9, 11)
    assert bool((out >= 0).all())


def test_residual_se_block_with_zero_branch_is_relu_of_its_input() -> None:
    block = ResidualSEBlock(4, 4).eval()
    torch.nn.init.zeros_(block.conv2[1].weight)  # BN scale 0: the residual branch contributes nothing
    x = torch.randn(1, 4, 6, 6)
    assert torch.allclose(block(x), x.relu())


def test_up_block_matches_odd_skip_sizes_and_doubles_without_skip() -> None:
    up = UpBlock(in_ch=32, skip_ch=16, out_ch=8)
    assert up(torch.randn(2, 32, 6, 7), torch.randn(2, 16, 11, 13)).shape == (2, 8, 11, 13)
    final = UpBlock(in_ch=8, skip_ch=0, out_ch=4)
    assert final(torch.randn(2, 8, 11, 13)).shape == (2, 4, 22, 26)
    with pytest.raises(ValueError, match="skip_ch=16"):
        up(torch.randn(2, 32, 6, 7))


def test_top_k_pooling_averages_the_largest_activations_per_channel() -> None:
    values = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    x = torch.cat([values, -values], dim=1)  # channel 2's largest are -1, -2, ...
    assert TopKPooling(0.25)(x).tolist() == [[14.5, -2.5]]  # (16+15+14+13)/4, (-1-2-3-4)/4
    assert TopKPooling(0.1)(x).tolist() == [[15.5, -1.5]]  # ceil(1.6) = 2 positions
    assert TopKPooling(0.01)(x).tolist() == [[16.0, -1.0]]  # never fewer than one
    assert torch.allclose(TopKPooling(1.0)(x), x.mean(dim=(2, 3)))
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            TopKPooling(fraction)


def test_attention_pooling_starts_as_average_and_can_focus_on_one_position() -> None:
    pool = AttentionPooling(3)
    x = torch.randn(2, 3, 4, 5)
    attention = pool.attention(x)
    assert attention.shape == (2, 1, 4, 5)
    assert torch.allclose(attention.sum(dim=(2, 3)), torch.ones(2, 1))
    assert torch.allclose(pool(x), x.mean(dim=(2, 3)), atol=1e-6)

    marker = torch.zeros(1, 3, 4, 5)
    marker[0, 0, 2, 3] = 1.0  # channel 0 flags one position; the score reads it with a large weight
    with torch.no_grad():
        pool.score.weight[0, 0] = 50.0
    features = marker + torch.randn(1, 3, 4, 5) * 0.1
    features[0, 0] = marker[0, 0]
    assert torch.allclose(pool(features), features[0, :, 2, 3][None], atol=1e-6)
