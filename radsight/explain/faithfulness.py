"""Deletion and insertion curves: does a saliency map rank pixels by what the model actually uses?

Following Petsiuk et al. (RISE, 2018), pixels are switched in order of decreasing saliency, in ``steps``
equal fractions of the image, and the model's score for the target class is recorded after each step:

- deletion starts from the image and replaces the most salient pixels with a baseline; a faithful map
  makes the score fall fast, so a lower area under the curve is better. The default baseline is black
  (0): removing the evidence the map points at.
- insertion starts from the baseline and restores the most salient pixels; a faithful map makes the
  score rise fast, so a higher area is better. The default baseline is a Gaussian blur of the image,
  since a black image is far from anything the model was trained on and would score arbitrarily.

Ties in the map keep pixel order (stable sort). The target class of each image is the one given, or
the model's prediction on the unperturbed image; the area is the trapezoid rule over fractions 0..1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from radsight.explain.cam import Targets, eval_mode, model_logits, resolve_targets

Baseline = Literal["black", "blur"]
Activation = Literal["sigmoid", "softmax", "none"]


@dataclass(frozen=True)
class Curve:
    """Scores ``B x (steps + 1)`` of the target class after switching each fraction of pixels."""

    fractions: Tensor
    scores: Tensor

    @property
    def auc(self) -> Tensor:
        """Area under each image's curve (trapezoid rule over fractions 0..1), shape ``B``."""
        return torch.trapezoid(self.scores, self.fractions, dim=-1)


def deletion_curve(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: Baseline = "black",
    activation: Activation = "sigmoid",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> Curve:
    """Score as the most salient pixels of ``images`` (B x 1 x H x W) become baseline (lower AUC = better).

    ``maps`` are ``B x H x W`` saliency maps; ``activation`` turns logits into the recorded score
    (``"sigmoid"`` for multi-label heads, ``"softmax"`` for single-label ones, ``"none"`` for raw
    logits); ``batch_size`` bounds how many perturbed images go through the model at once.
    """
    base = baseline_images(images, baseline, blur_sigma)
    return _curve(model, images, images, base, maps, targets, steps, activation, batch_size)


def insertion_curve(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    activation: Activation = "sigmoid",
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> Curve:
    """Score as the most salient pixels are restored onto the baseline (higher AUC = better).

    Arguments as in :func:`deletion_curve`.
    """
    base = baseline_images(images, baseline, blur_sigma)
    return _curve(model, images, base, images, maps, targets, steps, activation, batch_size)


def baseline_images(images: Tensor, baseline: Baseline, blur_sigma: float = 5.0) -> Tensor:
    """Black images, or a Gaussian blur whose kernel covers 3 sigma (capped by the image size)."""
    if baseline == "black":
        return torch.zeros_like(images)
    if baseline == "blur":
        kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * min(images.shape[-2:]) - 1)
        return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[blur_sigma, blur_sigma])
    raise ValueError(f"unknown baseline {baseline!r}; choose 'black' or 'blur'")


def _curve(
    model: nn.Module,
    images: Tensor,
    start: Tensor,
    end: Tensor,
    maps: Tensor,
    targets: Targets,
    steps: int,
    activation: Activation,
    batch_size: int,
) -> Curve:
    """Switch pixels from ``start`` to ``end`` in order of decreasing saliency, scoring each step."""
    batch, _, height, width = images.shape
    if maps.shape != (batch, height, width):
        raise ValueError(f"maps must be {batch} x {height} x {width}, got {tuple(maps.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    fractions = torch.linspace(0, 1, steps + 1, device=images.device)
    counts = (fractions * height * width).round().long()
    pixels = torch.arange(height * width, device=images.device)
    scores = []
    with eval_mode(model), torch.no_grad():
        index = resolve_targets(targets, model_logits(model, images))
        for b in range(batch):
            order = maps[b].flatten().argsort(descending=True, stable=True)
            rank = torch.empty_like(order)
            rank[order] = pixels
            switched = (rank[None] < counts[:, None]).view(steps + 1, 1, height, width)
            perturbed = torch.where(switched, end[b], start[b])
            logits = torch.cat([model_logits(model, chunk) for chunk in perturbed.split(batch_size)])
            scores.append(_activate(logits, activation)[:, index[b]])
    return Curve(fractions=fractions, scores=torch.stack(scores))


def _activate(logits: Tensor, activation: Activation) -> Tensor:
    if activation == "sigmoid":
        return logits.sigmoid()
    if activation == "softmax":
        return logits.softmax(dim=1)
    if activation == "none":
        return logits
    raise ValueError(f"unknown activation {activation!r}; choose 'sigmoid', 'softmax' or 'none'")
