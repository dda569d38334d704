"""The masked-image probe: can the labels be learnt from images whose lung fields are blanked out?

Each image is fitted to a small input by the recipe's ``data.resize`` (so a letterbox's bars stay what
the model would see) after its lungs are set to 0: the union of its lung masks where it has them
(:func:`radsight.data.transforms.lung_mask`), else the fixed central box :data:`CENTRAL_BOX`. A tiny
CNN learns every label from these images, the patients dealt to :data:`FOLDS` folds, and each image is
scored by the model that never saw its patient. A high out-of-fold AUROC says that the labels can be
learnt from outside the lungs: borders, markers, padding, exposure, the body around the chest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from radsight.data.sample import Sample
from radsight.data.transforms import lung_mask

PROBE_SIDE = 64
"""Long side of the probe's input, in pixels."""
CENTRAL_BOX = (0.1, 0.1, 0.9, 0.9)
"""Blanked where an image has no lung mask: x0, y0, x1, y1 as fractions of its width and height."""
FOLDS = 3
EPOCHS = 15
BATCH = 32
LEARNING_RATE = 3e-3


def probe_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """The probe's input size: ``image_size`` scaled to a long side of :data:`PROBE_SIDE`."""
    scale = PROBE_SIDE / max(image_size)
    return max(8, round(image_size[0] * scale)), max(8, round(image_size[1] * scale))


def blank_lungs(sample: Sample) -> tuple[Sample, bool]:
    """The sample with its lungs set to 0, and whether a lung mask (rather than the central box) said
    where they are."""
    mask = lung_mask(sample)
    if mask is None:
        height, width = sample.size
        x0, y0, x1, y1 = CENTRAL_BOX
        mask = torch.zeros(sample.size, dtype=torch.bool)
        mask[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = True
        return sample.replace(image=sample.image.masked_fill(mask, 0.0)), False
    return sample.replace(image=sample.image.masked_fill(mask, 0.0)), True


def probe_input(sample: Sample, fit: Callable[[Sample], Sample]) -> tuple[Sample, bool]:
    """The probe's view of a sample (lungs blanked, then fitted by ``fit``) and whether a mask was used."""
    blanked, masked = blank_lungs(sample)
    return fit(blanked), masked


class TinyProbe(nn.Module):
    """Three strided convolutions and a linear layer on a 4 x 4 grid of their features: enough to see
    borders, bars and markers, too small to learn much anatomy from 64-pixel images."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for channels_in, channels_out in ((1, 16), (16, 32), (32, 32)):
            layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(32 * 16, num_labels)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def _fit(images: Tensor, labels: Tensor, seed: int) -> TinyProbe:
    torch.manual_seed(seed)
    model = TinyProbe(labels.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    known = ~torch.isnan(labels)
    targets = torch.nan_to_num(labels)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(images), generator=generator).split(BATCH):
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(images[batch]), targets[batch], weight=known[batch].float(), reduction="sum"
            ) / known[batch].sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def probe_scores(images: Tensor, labels: ArrayLike, patient_ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (images x labels) of the tiny probe trained on ``images`` (N x 1 x h x w,
    lungs already blanked) and ``labels`` (N x L, NaN not annotated), folds dealt by patient."""
    label_matrix = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    patients = np.unique(np.asarray(patient_ids), return_inverse=True)[1].ravel()
    order = np.random.default_rng(seed).permutation(int(patients.max()) + 1)
    fold_of = order[patients] % FOLDS
    scores = np.full(tuple(label_matrix.shape), np.nan)
    with torch.random.fork_rng(devices=[]):  # the caller's random state (a training run's) stays as it was
        for fold in range(FOLDS):
            held_out = torch.as_tensor(fold_of == fold)
            if not held_out.any() or held_out.all():
                continue
            model = _fit(images[~held_out], label_matrix[~held_out], seed + fold)
            with torch.inference_mode():
                scores[held_out.numpy()] = torch.sigmoid(model(images[held_out])).numpy()
    return scores
