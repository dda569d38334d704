"""Latent-variable distillation of object-level annotations into an image-only classifier.

After van Sonsbeek, Zhen, Mahapatra and Worring, "Probabilistic Integration of Object Level Annotations
in Chest X-ray Classification" (WACV 2023). Two stages, coarse to fine:

- ``global``: backbone and a linear head learn the image-level labels on every labelled image.
- ``distil``: the backbone's lower feature stages (``cut``) are frozen and kept in eval mode; the stages
  above it feed a latent-variable model trained by default on the annotated pool (the labelled images
  with boxes, masks or gaze). Attention pooling (a 1x1 convolution and a softmax over the feature map)
  pools the features; the prior p(z|x) maps them to a diagonal Gaussian. The posterior q(z|x,a) also
  sees the annotation ``a`` rendered on the feature grid (box coverage and/or the gaze map): the
  features pooled under each annotation channel and the channel's mass join the attention-pooled ones.
  A classifier reads z (or z beside the pooled features). The loss is the BCE of a posterior sample,
  the BCE of a prior sample and beta x KL(q || p), in closed form, beta annealed linearly or cyclically.

At test time only the prior path runs, from its mean: no annotation is read, so predictions are the
same with or without them, and the attention weights are the native map. Where the paper leaves the
design open, radsight chose: the attention pooling, the annotation-pooled posterior inputs, the
prediction from the prior mean, and that an image lacking the posterior's annotation uses the prior
(KL zero). The public code of the ancestor (variational knowledge distillation, IPMI 2021) passed the
log-variance as the standard deviation and took KL(p || q); here std = exp(0.5 log-variance) and the
KL is KL(q || p).

Baselines on the same network and schedule: a recipe with the ``global`` stage alone; ``posterior:
none`` (the same freezing and fine-tuning on the annotated pool, posterior = prior: what the
annotations add); ``head: attention`` (no latent: the attention-pooled classifier with its pooling
weights supervised by the annotation map, an auxiliary loss).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from radsight.config import StageConfig, StageData, Strict
from radsight.data.sample import Batch
from radsight.errors import ConfigError
from radsight.methods.base import Method, Prediction
from radsight.nn.backbones import Backbone, StagedBackbone, create_backbone
from radsight.nn.losses import classification_loss, probabilities

Annotations = Literal["boxes", "gaze", "both"]

CYCLE_RAMP = 0.5
"""Share of each cyclical period over which beta climbs from 0 (then it holds; Fu et al., NAACL 2019)."""


class LatentKDOptions(Strict):
    backbone: str = Field("resnet18", description="any registry backbone name")
    pretrained: str | None = Field(None, description="backbone weights: a local file or 'imagenet'")
    cut: int | float = Field(
        3,
        ge=0,
        description="feature stages frozen in distil: a count (0 to the backbone's stages) or a fraction",
    )
    head: Literal["latent", "attention"] = Field(
        "latent", description="latent: the latent-variable model; attention: the auxiliary-loss baseline"
    )
    posterior: Literal["annotation", "none"] = Field(
        "annotation", description="none: the posterior is the prior (the no-annotation baseline)"
    )
    annotations: Annotations = Field("both", description="what the annotation map holds")
    latent: int = Field(64, ge=1, description="size of z")
    hidden: int = Field(256, ge=1, description="hidden width of the prior and posterior networks")
    classify_on: Literal["z", "z_and_features"] = "z"
    beta: float = Field(1.0, ge=0, description="weight of KL(q || p) once annealed")
    beta_schedule: Literal["constant", "linear", "cyclical"] = "linear"
    anneal_steps: int = Field(100, ge=1, description="linear: steps to reach beta; cyclical: the period")
    samples: int = Field(1, ge=1, description="z samples per path and image in the loss")
    aux_weight: float = Field(1.0, ge=0, description="weight of the attention loss of head: attention")

    @model_validator(mode="after")
    def _posterior_is_latent(self) -> LatentKDOptions:
        if isinstance(self.cut, float) and self.cut > 1:
            raise ValueError(f"cut: a fraction lies in [0, 1], got {self.cut}")
        if self.head == "attention" and self.posterior == "none":
            raise ValueError("posterior: none applies to head: latent; head: attention has no posterior")
        return self


def reparameterise(mu: Tensor, log_variance: Tensor) -> Tensor:
    """One draw of N(mu, exp(log_variance)) that gradients pass through: mu + exp(0.5 logvar) * eps."""
    return mu + torch.exp(0.5 * log_variance) * torch.randn_like(mu)


def gaussian_kl(mu_q: Tensor, log_var_q: Tensor, mu_p: Tensor, log_var_p: Tensor) -> Tensor:
    """KL(q || p) of diagonal Gaussians per row, summed over the last dimension, in nats."""
    ratio = torch.exp(log_var_q - log_var_p)
    mahalanobis = (mu_q - mu_p).square() * torch.exp(-log_var_p)
    return 0.5 * (ratio + mahalanobis - 1.0 - (log_var_q - log_var_p)).sum(dim=-1)


def beta_at(step: int, beta: float, schedule: str, anneal_steps: int) -> float:
    """The KL weight at optimiser ``step`` of the distil stage."""
    if schedule == "constant":
        return beta
    if schedule == "linear":
        return beta * min(1.0, step / anneal_steps)
    phase = (step % anneal_steps) / anneal_steps
    return beta * min(1.0, phase / CYCLE_RAMP)


def box_coverage(boxes: Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """h x w: the share of each grid cell the xyxy ``boxes`` (image pixels) cover, the largest over
    boxes; zeros for no box."""
    (height, width), (rows, cols) = image_size, grid
    out = torch.zeros(grid, device=boxes.device)
    if not len(boxes):
        return out
    edges_x = torch.arange(cols + 1, device=boxes.device, dtype=torch.float32) * (width / cols)
    edges_y = torch.arange(rows + 1, device=boxes.device, dtype=torch.float32) * (height / rows)

    def overlap(lo: Tensor, hi: Tensor, edges: Tensor) -> Tensor:  # N x cells, as a share of a cell
        inter = torch.minimum(hi[:, None], edges[None, 1:]) - torch.maximum(lo[:, None], edges[None, :-1])
        return inter.clamp(min=0) / (edges[1] - edges[0])

    boxes = boxes.float()
    cover = (
        overlap(boxes[:, 1], boxes[:, 3], edges_y)[:, :, None]
        * overlap(boxes[:, 0], boxes[:, 2], edges_x)[:, None, :]
    )
    return cover.amax(dim=0)


def annotation_maps(batch: Batch, kinds: Annotations, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """B x K x h x w annotation channels in [0, 1] on the feature grid (box coverage, then the gaze map
    scaled to its peak) and the B flags of images that carry every channel; absent ones are zeros."""
    images = batch.images
    size = (int(images.shape[-2]), int(images.shape[-1]))
    channels, valid = [], torch.ones(len(batch), dtype=torch.bool, device=images.device)
    if kinds in ("boxes", "both"):
        has = torch.tensor([b is not None for b in batch.boxes], dtype=torch.bool, device=images.device)
        empty = torch.zeros(0, 4, device=images.device)
        rendered = [
            box_coverage((b if b is not None else empty).to(images.device), size, grid) for b in batch.boxes
        ]
        channels.append(torch.stack(rendered))
        valid &= has
    if kinds in ("gaze", "both"):
        if batch.gaze_maps is None or batch.gaze_valid is None:
            has = torch.zeros(len(batch), dtype=torch.bool, device=images.device)
            gaze = torch.zeros(len(batch), *grid, device=images.device)
        else:
            has = batch.gaze_valid.to(images.device)
            pooled = F.adaptive_avg_pool2d(torch.nan_to_num(batch.gaze_maps.float())[:, None], grid)[:, 0]
            peak = pooled.flatten(1).amax(dim=1).clamp(min=1e-12)
            gaze = torch.where(has[:, None, None], pooled / peak[:, None, None], 0.0)
        channels.append(gaze)
        valid &= has
    return torch.stack(channels, dim=1), valid


def stage_modules(backbone: Backbone) -> list[str]:
    """Names (in ``backbone.model``) of the modules that end each feature stage, shallow first: timm's
    ``feature_info`` modules, or the last block at each stride of a staged network."""
    if isinstance(backbone, StagedBackbone):
        return [backbone.block_names[i] for i in backbone._levels]
    return [info["module"] for info in backbone.model.feature_info]


def frozen_modules(backbone: Backbone, cut: int | float) -> list[str]:
    """The modules of ``backbone.model`` up to the end of the ``cut``-th feature stage, in registration
    (forward) order: what the distil stage freezes."""
    stages = stage_modules(backbone)
    count = round(cut * len(stages)) if isinstance(cut, float) else cut
    if count > len(stages):
        raise ConfigError(f"model.cut: {cut} stages, but the backbone has {len(stages)} ({stages})")
    if count == 0:
        return []
    names = [name for name, _ in backbone.model.named_modules()]
    last = stages[count - 1]
    end = max(i for i, name in enumerate(names) if name == last or name.startswith(last + "."))
    return names[: end + 1]


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs))


class GlobalClassifier(nn.Module):
    """Backbone and global head: what the global-only baseline predicts with and Grad-CAM explains."""

    def __init__(self, backbone: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


class LatentKD(Method):
    """Backbone + global head (stage ``global``); attention pooling, prior, posterior and latent
    classifier above a frozen cut (stage ``distil``)."""

    stage_names = ("global", "distil")
    options_class = LatentKDOptions
    stage_data_defaults: ClassVar[dict[str, StageData]] = {"distil": StageData(pool="annotated")}

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ) -> None:
        super().__init__(label_names, task, model, stages)
        opts = self.options
        self.backbone = create_backbone(opts.backbone, in_chans=1, pretrained=opts.pretrained)
        features = self.backbone.num_features
        self.global_head = nn.Linear(features, self.num_classes)
        self.attention = nn.Conv2d(features, 1, 1)
        self.frozen = frozen_modules(self.backbone, opts.cut)
        if opts.head == "attention":
            self.attention_head = nn.Linear(features, self.num_classes)
        else:
            self.prior = mlp(features, opts.hidden, 2 * opts.latent)
            if opts.posterior == "annotation":
                kinds = 2 if opts.annotations == "both" else 1
                self.posterior = mlp(features * (1 + kinds) + kinds, opts.hidden, 2 * opts.latent)
            extra = features if opts.classify_on == "z_and_features" else 0
            self.latent_head = nn.Linear(opts.latent + extra, self.num_classes)

    @property
    def distils(self) -> bool:
        """Whether the recipe fine-tunes the distil path, which then predicts; else the global head does."""
        return "distil" in self.stages

    # --- network ---------------------------------------------------------------------------------
    def attend(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The feature map, its attention log-weights (B x 1 x h x w, log-softmax over the map) and the
        attention-pooled features (B x C)."""
        feats = self.backbone.forward_features(images)
        scores = self.attention(feats)
        log_weights = F.log_softmax(scores.flatten(1), dim=1).view_as(scores)
        return feats, log_weights, (feats * log_weights.exp()).sum(dim=(2, 3))

    def prior_gaussian(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_variance = self.prior(pooled).chunk(2, dim=1)
        return mu, log_variance

    def latent_logits(self, z: Tensor, pooled: Tensor) -> Tensor:
        inputs = torch.cat([z, pooled], dim=1) if self.options.classify_on == "z_and_features" else z
        return self.latent_head(inputs)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of the predicting path (prior mean, attention head, or global head)."""
        if not self.distils:
            return self.global_head(self.backbone(images))
        _, _, pooled = self.attend(images)
        if self.options.head == "attention":
            return self.attention_head(pooled)
        mu, _ = self.prior_gaussian(pooled)
        return self.latent_logits(mu, pooled)

    def native_maps(self, images: Tensor) -> Tensor:
        """The attention weights of the distil path, B x 1 x h x w, summing to 1 over each image."""
        return self.attend(images)[1].exp()

    def cam_target_layer(self) -> nn.Module:
        return self.backbone.cam_target_layer()

    # --- stages ------------------------------------------------------------------------------------
    def _distil_parts(self) -> list[nn.Module]:
        names = ("attention", "attention_head", "prior", "posterior", "latent_head")
        return [getattr(self, name) for name in names if hasattr(self, name)]

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        if stage == "global":
            yield from self.backbone.parameters()
            yield from self.global_head.parameters()
            return
        frozen = set(self.frozen)
        for name, module in self.backbone.model.named_modules():
            if name not in frozen:
                yield from module.parameters(recurse=False)
        for part in self._distil_parts():
            yield from part.parameters()

    def train(self, mode: bool = True) -> LatentKD:
        """In distil the frozen lower layers stay in eval mode: their batch-norm statistics stay fixed."""
        super().train(mode)
        if mode and getattr(self, "stage", None) == "distil":
            for name in self.frozen:
                module = self.backbone.model.get_submodule(name)
                if next(module.children(), None) is None:  # a leaf: its container may hold trained ones
                    module.eval()
        return self

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.train(self.training)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.labels is None:
            raise ValueError(f"the {self.stage} stage needs labels, and this batch has none")
        if self.stage == "global":
            return classification_loss(
                self.task, self.global_head(self.backbone(batch.images)), batch.labels
            ), {}
        feats, log_weights, pooled = self.attend(batch.images)
        if self.options.head == "attention":
            return self._attention_loss(batch, feats, log_weights, pooled)
        return self._latent_loss(batch, feats, log_weights, pooled)

    def _annotations(self, batch: Batch, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        kinds = self.options.annotations
        if self.training and kinds != "boxes" and batch.gaze_maps is None:
            raise ConfigError(
                f"model.annotations {kinds!r} reads gaze maps and the batch has none: "
                "set data.gaze_sigma_fraction (or annotations: boxes)"
            )
        return annotation_maps(batch, kinds, grid)

    def _latent_loss(
        self, batch: Batch, feats: Tensor, log_weights: Tensor, pooled: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        mu_p, log_var_p = self.prior_gaussian(pooled)
        mu_q, log_var_q = mu_p, log_var_p
        if self.options.posterior == "annotation":
            maps, valid = self._annotations(batch, (int(feats.shape[-2]), int(feats.shape[-1])))
            mass = maps.sum(dim=(2, 3))
            under = torch.einsum("bkhw,bchw->bkc", maps, feats) / mass.clamp(min=1e-6)[..., None]
            inputs = torch.cat([pooled, under.flatten(1), maps.mean(dim=(2, 3))], dim=1)
            mu_a, log_var_a = self.posterior(inputs).chunk(2, dim=1)
            mu_q = torch.where(valid[:, None], mu_a, mu_p)  # no annotation: the posterior is the prior
            log_var_q = torch.where(valid[:, None], log_var_a, log_var_p)
        samples = self.options.samples

        def sampled_bce(mu: Tensor, log_variance: Tensor) -> Tensor:
            losses = [
                classification_loss(
                    self.task, self.latent_logits(reparameterise(mu, log_variance), pooled), batch.labels
                )
                for _ in range(samples)
            ]
            return torch.stack(losses).mean()

        bce_posterior, bce_prior = sampled_bce(mu_q, log_var_q), sampled_bce(mu_p, log_var_p)
        kl = gaussian_kl(mu_q, log_var_q, mu_p, log_var_p).mean()
        opts = self.options
        beta = beta_at(self.global_step, opts.beta, opts.beta_schedule, opts.anneal_steps)
        parts = {
            "bce_posterior": bce_posterior.detach(),
            "bce_prior": bce_prior.detach(),
            "kl": kl.detach(),
            "beta": torch.tensor(beta),
        }
        return bce_posterior + bce_prior + beta * kl, parts

    def _attention_loss(
        self, batch: Batch, feats: Tensor, log_weights: Tensor, pooled: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """BCE of the attention-pooled classifier plus the cross-entropy of the pooling weights against
        the annotation map made a distribution (images without annotation, or with an empty one, skip)."""
        bce = classification_loss(self.task, self.attention_head(pooled), batch.labels)
        maps, valid = self._annotations(batch, (int(feats.shape[-2]), int(feats.shape[-1])))
        mass = maps.sum(dim=(2, 3), keepdim=True)
        shares = torch.where(mass > 0, maps / mass.clamp(min=1e-12), 0.0)
        counted = (mass > 0).sum(dim=1)  # B x 1 x 1: channels with any mass
        target = shares.sum(dim=1) / counted.clamp(min=1)
        keep = valid & (counted.flatten() > 0)
        if not bool(keep.any()):
            return bce, {"bce": bce.detach()}
        attention = -(target[keep] * log_weights[keep, 0]).sum(dim=(1, 2)).mean()
        parts = {"bce": bce.detach(), "attention": attention.detach()}
        return bce + self.options.aux_weight * attention, parts

    # --- inference ---------------------------------------------------------------------------------
    def predict(self, batch: Batch) -> Prediction:
        """From the image alone: the prior mean's (or the global head's) probabilities and, after
        distil, the attention weights as the native saliency map."""
        if not self.distils:
            return Prediction(probs=probabilities(self.task, self(batch.images)))
        _, log_weights, pooled = self.attend(batch.images)
        if self.options.head == "attention":
            logits = self.attention_head(pooled)
        else:
            logits = self.latent_logits(self.prior_gaussian(pooled)[0], pooled)
        return Prediction(probs=probabilities(self.task, logits), maps={"saliency": log_weights.exp()})

    def classifier(self) -> nn.Module:
        return self if self.distils else GlobalClassifier(self.backbone, self.global_head)
