"""Dual-encoder multi-task UNet: a classifier that also learns to predict where radiologists look.

Encoder A (a registry backbone, DenseNet-201 in the paper) sees the image for classification. Encoder B,
a five-level UNet encoder of residual squeeze-excitation blocks, keeps the spatial detail a gaze map
needs. The decoder starts from encoder A's deepest features and climbs back to full resolution through
encoder B's skips; a 1x1 head and a softmax over all pixels turn it into a probability map, trained with
KL divergence against the gaze map. The classifier fuses encoder A's pooled features with the pooled
last decoder features, so the attention branch informs the diagnosis. Learnable uncertainty weights
(Kendall et al. 2018) balance the two losses instead of a hand-tuned ratio.

Stages, in recipe order: ``contrastive`` (encoder A and a projection head, triplet or supervised
contrastive loss), ``classify`` (encoder A and the classifier), ``saliency`` (encoder B, decoder and head
with encoder A frozen) and ``joint`` (everything but the projection head, both losses). A frozen part is
also kept in eval mode, so its batch-norm statistics do not drift while other parts train.
``model.tasks`` drops a loss from the ``joint`` stage, which gives the single-task ablations the same
network and schedule.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from radsight.config import StageConfig, Strict
from radsight.data.sample import Batch
from radsight.methods.base import Method, Prediction
from radsight.nn.backbones import create_backbone
from radsight.nn.blocks import ResidualSEBlock, UpBlock
from radsight.nn.contrastive import supervised_contrastive_loss, triplet_loss
from radsight.nn.losses import classification_loss, probabilities

Task = Literal["classify", "saliency"]
TASK_ORDER: tuple[Task, ...] = ("classify", "saliency")  # order of GazeUNet.log_variances

# What each stage trains; everything else is frozen (no gradient, eval mode).
STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "contrastive": ("encoder_a", "projection"),
    "classify": ("encoder_a", "fusion_classifier"),
    "saliency": ("encoder_b", "decoder", "saliency_head"),
    "joint": ("encoder_a", "encoder_b", "decoder", "saliency_head", "fusion_classifier", "log_variances"),
}


class GazeUNetOptions(Strict):
    backbone: str = Field("densenet201", description="encoder A: any registry backbone name")
    pretrained: str | None = Field(None, description="encoder A weights: a local file or 'imagenet'")
    unet_filters: tuple[int, int, int, int, int] = (64, 128, 256, 512, 1024)
    unet_width: float = Field(1.0, gt=0, description="multiplier of encoder B's filters (CPU recipes)")
    se_reduction: int = Field(16, ge=1)
    fusion_features: int = Field(64, ge=1, description="hidden width of the fusion classifier")
    dropout: float = Field(0.25, ge=0, lt=1)
    contrastive_loss: Literal["triplet", "supcon"] = "triplet"
    margin: float = Field(0.5, gt=0, description="triplet margin on L2-normalised embeddings")
    temperature: float = Field(0.1, gt=0, description="supervised contrastive temperature")
    projection_features: int = Field(128, ge=1)
    tasks: tuple[Task, ...] = Field(("classify", "saliency"), description="losses of the joint stage")

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, value: tuple[Task, ...]) -> tuple[Task, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"tasks must list 'classify' and/or 'saliency' once each, got {list(value)}")
        return value


class UNetEncoder(nn.Module):
    """Residual-SE block per level with max-pooling between levels; returns every level, shallow first."""

    def __init__(self, filters: tuple[int, ...], reduction: int) -> None:
        super().__init__()
        channels = (1, *filters)
        self.levels = nn.ModuleList(ResidualSEBlock(a, b, reduction) for a, b in itertools.pairwise(channels))

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for index, level in enumerate(self.levels):
            x = level(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        return skips


class GazeUNet(Method):
    """Encoder A + residual-SE UNet encoder B + decoder + gaze head + fusion classifier."""

    stage_names = tuple(STAGE_PARTS)
    options_class = GazeUNetOptions

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ) -> None:
        super().__init__(label_names, task, model, stages)
        opts = self.options
        self.encoder_a = create_backbone(opts.backbone, in_chans=1, pretrained=opts.pretrained)
        filters = tuple(max(1, round(f * opts.unet_width)) for f in opts.unet_filters)
        self.encoder_b = UNetEncoder(filters, opts.se_reduction)
        widths = (self.encoder_a.num_features, *reversed(filters))
        self.decoder = nn.ModuleList(UpBlock(a, skip, skip) for a, skip in itertools.pairwise(widths))
        self.saliency_head = nn.Conv2d(filters[0], 1, 1)
        self.fusion_classifier = nn.Sequential(
            nn.Linear(self.encoder_a.num_features + filters[0], opts.fusion_features),
            nn.Dropout(opts.dropout),
            nn.ReLU(inplace=True),
            nn.Linear(opts.fusion_features, self.num_classes),
        )
        features = self.encoder_a.num_features
        self.projection = nn.Sequential(
            nn.Linear(features, features),
            nn.ReLU(inplace=True),
            nn.Linear(features, opts.projection_features),
        )
        # log sigma^2 of each task's loss, in TASK_ORDER
        self.log_variances = nn.Parameter(torch.zeros(2))

    # --- network ---------------------------------------------------------------------------------
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder A's deepest map and the last decoder map (full resolution)."""
        deep = self.encoder_a.forward_features(images)
        return deep, self.decode(deep, images)

    def decode(self, deep: Tensor, images: Tensor) -> Tensor:
        """Up from encoder A's deepest map through encoder B's skips, deepest first."""
        x = deep
        for block, skip in zip(self.decoder, reversed(self.encoder_b(images)), strict=True):
            x = block(x, skip)
        return x

    def heads(self, deep: Tensor, decoded: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits (B x C) and the gaze map's log-probabilities over pixels (B x 1 x H x W)."""
        fused = torch.cat([deep.mean(dim=(2, 3)), decoded.mean(dim=(2, 3))], dim=1)
        scores = self.saliency_head(decoded)
        log_map = F.log_softmax(scores.flatten(1), dim=1).view_as(scores)
        return self.fusion_classifier(fused), log_map

    def forward(self, images: Tensor) -> Tensor:
        """Class logits: what explanation methods (Grad-CAM, IG) differentiate."""
        return self.heads(*self.encode(images))[0]

    def native_maps(self, images: Tensor) -> Tensor:
        """The predicted gaze probability map, B x 1 x H x W, summing to 1 over each image."""
        return self.heads(*self.encode(images))[1].exp()

    def cam_target_layer(self) -> nn.Module:
        return self.encoder_a.cam_target_layer()

    # --- stages ------------------------------------------------------------------------------------
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        for name in STAGE_PARTS[stage]:
            if name == "log_variances" and len(self.options.tasks) == 1:
                continue  # nothing to balance: a parameter without gradient would upset DDP
            part = getattr(self, name)
            yield from [part] if isinstance(part, nn.Parameter) else part.parameters()

    def train(self, mode: bool = True) -> GazeUNet:
        """Train mode for the current stage's parts only: frozen batch norms keep their statistics."""
        super().train(mode)
        if mode:
            trained = STAGE_PARTS[self.stage]
            for name, child in self.named_children():
                if name not in trained:
                    child.eval()
        return self

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.train(self.training)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.stage == "contrastive":
            return self._contrastive_loss(batch), {}
        if self.stage == "saliency":
            with torch.no_grad():  # encoder A is frozen here: no graph needed through it
                deep = self.encoder_a.forward_features(batch.images)
            _, log_map = self.heads(deep, self.decode(deep, batch.images))
            loss = saliency_kl(log_map, batch.gaze_maps, batch.gaze_valid)
            return (loss if loss is not None else log_map.sum() * 0.0), {}
        logits, log_map = self.heads(*self.encode(batch.images))
        if self.stage == "classify":
            if batch.labels is None:
                raise ValueError("the classify stage needs labels, and this batch has none")
            return classification_loss(self.task, logits, batch.labels), {}
        return self._joint_loss(batch, logits, log_map)

    def _contrastive_loss(self, batch: Batch) -> Tensor:
        if batch.labels is None:
            raise ValueError("the contrastive stage needs labels, and this batch has none")
        embeddings = self.projection(self.encoder_a(batch.images))
        if self.options.contrastive_loss == "supcon":
            return supervised_contrastive_loss(embeddings, batch.labels, self.options.temperature)
        return triplet_loss(embeddings, batch.labels, self.options.margin)

    def _joint_loss(self, batch: Batch, logits: Tensor, log_map: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Uncertainty-weighted sum of the tasks' losses; a task with nothing to learn from is left out."""
        losses: dict[str, Tensor | None] = {
            "classify": classification_loss(self.task, logits, batch.labels)
            if "classify" in self.options.tasks and batch.labels is not None
            else None,
            "saliency": saliency_kl(log_map, batch.gaze_maps, batch.gaze_valid)
            if "saliency" in self.options.tasks
            else None,
        }
        present = {k: v for k, v in losses.items() if v is not None}
        if not present:
            return logits.sum() * 0.0, {}
        if len(self.options.tasks) == 1:
            (loss,) = present.values()
            return loss, {f"{k}_loss": v.detach() for k, v in present.items()}
        weighted = [
            uncertainty_weighted(value, self.log_variances[TASK_ORDER.index(name)])
            for name, value in present.items()
        ]
        parts = {f"{k}_loss": v.detach() for k, v in present.items()}
        parts |= {f"log_variance_{k}": self.log_variances[i].detach() for i, k in enumerate(TASK_ORDER)}
        return torch.stack(weighted).sum(), parts

    # --- inference ---------------------------------------------------------------------------------
    def predict(self, batch: Batch) -> Prediction:
        logits, log_map = self.heads(*self.encode(batch.images))
        return Prediction(probs=probabilities(self.task, logits), maps={"saliency": log_map.exp()})

    def classifier(self) -> nn.Module:
        return self


def uncertainty_weighted(loss: Tensor, log_variance: Tensor) -> Tensor:
    """Kendall et al.'s weighting for a softmax-likelihood loss: ``exp(-s) * L + s / 2``, s = log sigma^2.

    A task whose loss stays high learns a large sigma and is down-weighted, and the ``s / 2`` term stops
    sigma from growing without bound.
    """
    return torch.exp(-log_variance) * loss + 0.5 * log_variance


def saliency_kl(log_map: Tensor, gaze_maps: Tensor | None, gaze_valid: Tensor | None) -> Tensor | None:
    """Mean over images with gaze of KL(gaze || predicted map), in nats; None when no image has gaze.

    ``log_map`` is B x 1 x H x W log-probabilities over pixels; ``gaze_maps`` B x H x W probability maps
    (NaN rows for images without gaze, which are skipped, never scored against zeros). A gaze map of
    another size is resized by area and renormalised, which keeps it a distribution.
    """
    if gaze_maps is None or gaze_valid is None or not bool(gaze_valid.any()):
        return None
    valid = gaze_valid.to(log_map.device)
    target = gaze_maps[valid].to(log_map.dtype)
    log_pred = log_map[valid, 0]
    if target.shape[-2:] != log_pred.shape[-2:]:
        target = F.interpolate(target[:, None], size=log_pred.shape[-2:], mode="area")[:, 0]
        target = target / target.sum(dim=(1, 2), keepdim=True)
    per_image = (torch.special.xlogy(target, target) - target * log_pred).sum(dim=(1, 2))
    return per_image.mean()
