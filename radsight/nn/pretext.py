"""Self-supervised pretext tasks for chest X-rays: each makes its own inputs and targets from unlabelled
images, owns a small head on the shared encoder, and has a loss.

One interface (:class:`PretextTask`): ``make_batch(images) -> inputs, targets``; ``forward(encoder,
inputs)`` runs the encoder and the task's head; ``loss(outputs, targets)``. The tasks:

- :class:`Rotation`: which of 0/90/180/270 degrees an image was turned by (Gidaris et al. 2018).
- :class:`Jigsaw`: which permutation of a fixed set shuffled the 3x3 tiles (Noroozi & Favaro 2016); the
  set is chosen greedily for maximal minimum Hamming distance over all 9! permutations.
- :class:`RelativePosition`: where, of its 8 neighbours, a patch lies relative to the centre patch
  (Doersch et al. 2015).
- :class:`Inpainting`: the pixels of masked cells from the rest of the image (Pathak et al. 2016), the
  reconstruction loss counted on the masked pixels only.
- :class:`Contrastive`: SimCLR's NT-Xent between two X-ray views of each image (Chen et al. 2020), or
  BYOL's prediction of a momentum encoder's projection (Grill et al. 2020).

Views (:class:`XrayViews`) suit radiographs: no colour jitter; gamma, contrast, a clip-limited histogram
equalisation, small rotations and crops, and no horizontal flip unless asked (it moves the heart).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from radsight.config import Strict
from radsight.errors import ConfigError
from radsight.nn.backbones import Backbone

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
"""(row, column) offsets of the 8 neighbours of the centre cell, in the order of RelativePosition's labels."""


class ViewOptions(Strict):
    """How :class:`XrayViews` draws a view (each draw independent per image)."""

    crop_scale: tuple[float, float] = Field((0.6, 1.0), description="area share of the random crop")
    rotation_degrees: float = Field(10.0, ge=0, le=45)
    gamma: tuple[float, float] = Field((0.7, 1.4), description="range of the gamma exponent")
    contrast: float = Field(0.3, ge=0, le=1, description="contrast scaled by 1 +- this")
    equalise_p: float = Field(0.3, ge=0, le=1, description="chance of histogram equalisation")
    equalise_clip: float = Field(0.5, gt=0, le=1, description="blend of the equalised image (a clip limit)")
    hflip: bool = Field(False, description="random horizontal flips (off: they move the heart)")


class XrayViews(nn.Module):
    """Random views of a batch of 1-channel X-rays in [0, 1], the same size as the input."""

    def __init__(self, options: ViewOptions | None = None) -> None:
        super().__init__()
        self.options = options or ViewOptions()

    def forward(self, images: Tensor) -> Tensor:
        opts, n = self.options, len(images)
        device = images.device
        height, width = images.shape[-2:]
        # One affine grid per image: a crop (scale, position), a small rotation and an optional flip.
        area = torch.empty(n, device=device).uniform_(*opts.crop_scale)
        side = area.sqrt()
        shift = (1 - side)[:, None] * (torch.rand(n, 2, device=device) * 2 - 1)
        angle = torch.empty(n, device=device).uniform_(-1, 1) * math.radians(opts.rotation_degrees)
        flip = (
            (torch.rand(n, device=device) < 0.5).float() * 2 - 1
            if opts.hflip
            else torch.ones(n, device=device)
        )
        cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)],
            1,
        )
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        views = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
        gamma = torch.empty(n, 1, 1, 1, device=device).uniform_(*opts.gamma)
        views = views.clamp(0, 1).pow(gamma)
        contrast = 1 + torch.empty(n, 1, 1, 1, device=device).uniform_(-opts.contrast, opts.contrast)
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        views = ((views - mean) * contrast + mean).clamp(0, 1)
        equalise = torch.rand(n, device=device) < opts.equalise_p
        if bool(equalise.any()):
            blended = (1 - opts.equalise_clip) * views[equalise] + opts.equalise_clip * equalised(
                views[equalise]
            )
            views = views.clone()
            views[equalise] = blended
        return views


def equalised(images: Tensor) -> Tensor:
    """Global histogram equalisation of each image: every pixel replaced by its rank share in [0, 1]."""
    flat = images.flatten(1)
    ranks = flat.argsort(dim=1).argsort(dim=1).float()
    return (ranks / max(flat.shape[1] - 1, 1)).view_as(images)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs)
    )


def square(images: Tensor, task: str) -> None:
    if images.shape[-1] != images.shape[-2]:
        raise ConfigError(f"pretext task {task}: needs square images, got {tuple(images.shape[-2:])}")


class PretextTask(nn.Module):
    """A self-supervised task: inputs and targets made from images, a head on the encoder, a loss."""

    name: ClassVar[str]

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def after_step(self, encoder: Backbone) -> None:
        """Called after each optimiser step (BYOL's momentum update); nothing for most tasks."""


class RotationOptions(Strict):
    pass


class Rotation(PretextTask):
    """Each image turned by k x 90 degrees (k drawn per image); the head names k."""

    name = "rotation"

    def __init__(self, features: int, options: RotationOptions | None = None) -> None:
        super().__init__()
        self.head = nn.Linear(features, 4)

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        square(images, self.name)
        turns = torch.randint(0, 4, (len(images),), device=images.device)
        rotated = torch.stack(
            [torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, turns, strict=True)]
        )
        return rotated, turns

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        return self.head(encoder(inputs))


class JigsawOptions(Strict):
    permutations: int = Field(64, ge=2, le=1000, description="size of the fixed permutation set")
    gap: float = Field(0.1, ge=0, lt=0.5, description="share of each cell's side trimmed on every edge")


@functools.cache
def hamming_permutations(count: int) -> np.ndarray:
    """``count`` permutations of 9 tiles chosen greedily for maximal minimum Hamming distance (Noroozi &
    Favaro's algorithm over all 9! permutations, started from the identity, ties to the first)."""
    candidates = np.array(list(itertools.permutations(range(9))), dtype=np.int8)
    chosen = [0]
    nearest = (candidates != candidates[0]).sum(axis=1)
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = np.minimum(nearest, (candidates != candidates[pick]).sum(axis=1))
    return candidates[chosen].astype(np.int64)


def grid_cells(images: Tensor, grid: int = 3) -> Tensor:
    """B x grid^2 x 1 x t x t: the cells of the central grid*t square (t = side // grid), row-major."""
    side = images.shape[-1] // grid
    top = (images.shape[-2] - grid * side) // 2
    left = (images.shape[-1] - grid * side) // 2
    crop = images[..., top : top + grid * side, left : left + grid * side]
    cells = crop.unfold(-2, side, side).unfold(-2, side, side)  # B x 1 x g x g x t x t
    return cells.permute(0, 2, 3, 1, 4, 5).reshape(len(images), grid * grid, images.shape[1], side, side)


def trim(cells: Tensor, gap: float) -> Tensor:
    """The central part of each cell, ``gap`` of its side cut on every edge (no shared edges to match)."""
    cut = int(cells.shape[-1] * gap)
    return cells[..., cut : cells.shape[-1] - cut, cut : cells.shape[-1] - cut] if cut else cells


class Jigsaw(PretextTask):
    """The 9 tiles of an image shuffled by one permutation of the fixed set; the head names it."""

    name = "jigsaw"

    def __init__(self, features: int, options: JigsawOptions | None = None) -> None:
        super().__init__()
        self.options = options or JigsawOptions()
        self.register_buffer(
            "permutations", torch.from_numpy(hamming_permutations(self.options.permutations))
        )
        self.head = mlp(9 * features, 512, self.options.permutations)

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        labels = torch.randint(0, len(self.permutations), (len(images),), device=images.device)
        tiles = trim(grid_cells(images), self.options.gap)
        order = self.permutations[labels]  # B x 9: position j shows tile order[j]
        shuffled = torch.gather(tiles, 1, order[:, :, None, None, None].expand_as(tiles))
        return shuffled, labels

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        features = encoder(inputs.flatten(0, 1)).view(len(inputs), -1)
        return self.head(features)


class PositionOptions(Strict):
    gap: float = Field(0.1, ge=0, lt=0.5, description="share of each cell's side trimmed on every edge")


class RelativePosition(PretextTask):
    """The centre cell of a 3x3 grid and one of its 8 neighbours; the head names which neighbour."""

    name = "position"

    def __init__(self, features: int, options: PositionOptions | None = None) -> None:
        super().__init__()
        self.options = options or PositionOptions()
        self.head = mlp(2 * features, 512, len(NEIGHBOURS))

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        cells = trim(grid_cells(images), self.options.gap)
        labels = torch.randint(0, len(NEIGHBOURS), (len(images),), device=images.device)
        index = torch.tensor([3 * (1 + r) + (1 + c) for r, c in NEIGHBOURS], device=images.device)[labels]
        rows = torch.arange(len(images), device=images.device)
        return torch.stack([cells[:, 4], cells[rows, index]], dim=1), labels

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        features = encoder(inputs.flatten(0, 1)).view(len(inputs), -1)
        return self.head(features)


class InpaintingOptions(Strict):
    cells: int = Field(4, ge=2, description="the image is cut into cells x cells squares")
    ratio: float = Field(0.25, gt=0, lt=1, description="share of the cells masked in each image")


class Inpainting(PretextTask):
    """Masked cells filled with the image's mean; a linear decoder on the feature map (one value per
    pixel of each feature cell, pixel-shuffled) reconstructs the image, scored on masked pixels only."""

    name = "inpainting"

    def __init__(self, features: int, options: InpaintingOptions | None = None, stride: int = 32) -> None:
        super().__init__()
        self.options = options or InpaintingOptions()
        self.stride = stride
        self.head = nn.Conv2d(features, stride * stride, 1)

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        cells, n = self.options.cells, len(images)
        count = max(1, round(self.options.ratio * cells * cells))
        chosen = torch.rand(n, cells * cells, device=images.device).argsort(dim=1)[:, :count]
        grid = (
            torch.zeros(n, cells * cells, device=images.device)
            .scatter_(1, chosen, 1.0)
            .view(n, 1, cells, cells)
        )
        mask = F.interpolate(grid, size=images.shape[-2:], mode="nearest")
        fill = images.mean(dim=(1, 2, 3), keepdim=True)
        masked = images * (1 - mask) + fill * mask
        return torch.cat([masked, mask], dim=1), torch.cat([images, mask], dim=1)

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        features = encoder.forward_features(inputs[:, :1])
        decoded = F.pixel_shuffle(self.head(features), self.stride)
        return F.interpolate(decoded, size=inputs.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return masked_mse(outputs, targets[:, :1], targets[:, 1:])


def masked_mse(outputs: Tensor, images: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the pixels where ``mask`` is 1; pixels outside it add nothing."""
    return ((outputs - images).square() * mask).sum() / mask.sum().clamp(min=1)


class ContrastiveOptions(Strict):
    kind: Literal["simclr", "byol"] = "simclr"
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature (SimCLR)")
    projection: int = Field(128, ge=8, description="projection size")
    hidden: int = Field(512, ge=8, description="hidden width of the projection and prediction heads")
    momentum: float = Field(0.99, ge=0, lt=1, description="BYOL: momentum of the target encoder")
    views: ViewOptions = Field(default_factory=ViewOptions)


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent on 2N embeddings where rows i and i + N are the two views of one image."""
    z = F.normalize(z, dim=1)
    n = len(z) // 2
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


class Contrastive(PretextTask):
    """Two views per image; SimCLR pulls their projections together against the batch (NT-Xent), BYOL
    predicts the other view's projection by a momentum copy of the encoder (no negatives)."""

    name = "contrastive"

    def __init__(
        self, features: int, options: ContrastiveOptions | None = None, encoder: Backbone | None = None
    ) -> None:
        super().__init__()
        self.options = opts = options or ContrastiveOptions()
        self.views = XrayViews(opts.views)
        self.projector = mlp(features, opts.hidden, opts.projection)
        if opts.kind == "byol":
            if encoder is None:
                raise ValueError("BYOL needs the encoder to copy as its momentum target")
            self.predictor = mlp(opts.projection, opts.hidden, opts.projection)
            self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def make_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pair = torch.stack([self.views(images), self.views(images)], dim=1)
        return pair, torch.zeros(len(images), dtype=torch.long, device=images.device)

    def forward(self, encoder: Backbone, inputs: Tensor) -> Tensor:
        both = torch.cat([inputs[:, 0], inputs[:, 1]])
        projected = self.projector(encoder(both))
        if self.options.kind == "simclr":
            return projected
        with torch.no_grad():
            target = self.target_projector(self.target_encoder(both))
        n = len(inputs)
        swapped = torch.cat([target[n:], target[:n]])  # each view predicts the other's target
        return torch.stack([self.predictor(projected), swapped], dim=0)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.options.kind == "simclr":
            return nt_xent(outputs, self.options.temperature)
        prediction, target = outputs
        return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=1)).mean()

    @torch.no_grad()
    def after_step(self, encoder: Backbone) -> None:
        if self.options.kind != "byol":
            return
        m = self.options.momentum
        for online, target in ((encoder, self.target_encoder), (self.projector, self.target_projector)):
            for p, t in zip(online.parameters(), target.parameters(), strict=True):
                t.mul_(m).add_(p.detach(), alpha=1 - m)


TASKS: dict[str, type[PretextTask]] = {
    task.name: task for task in (Rotation, Jigsaw, RelativePosition, Inpainting, Contrastive)
}
"""Pretext tasks by the stage name that trains them."""


def build_task(name: str, encoder: Backbone, options: Strict | None) -> PretextTask:
    """The task trained by stage ``name`` with its head sized for ``encoder``."""
    features = encoder.num_features
    if name == Inpainting.name:
        return Inpainting(features, options, stride=encoder.pyramid_strides[-1])
    if name == Contrastive.name:
        return Contrastive(features, options, encoder=encoder)
    return TASKS[name](features, options)
