"""Losses skip what nobody annotated: a NaN label contributes nothing, it is not a negative."""

from __future__ import annotations

import math

import torch

from radsight.nn.losses import masked_bce, masked_cross_entropy


def test_masked_bce_equals_the_mean_over_annotated_entries():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    expected = (math.log(2) + math.log(1 + math.e)) / 2  # -log(sigmoid(0)) and -log(1 - sigmoid(1))
    assert masked_bce(logits, labels).item() == torch.tensor(expected).item()


def test_nothing_annotated_gives_zero_loss_with_a_gradient_path():
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = masked_bce(logits, torch.full((2, 3), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 3))


def test_masked_cross_entropy_skips_unannotated_rows():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [float("nan")] * 3])
    expected = -torch.log_softmax(logits[0], 0)[0]
    assert torch.isclose(masked_cross_entropy(logits, labels), expected)
