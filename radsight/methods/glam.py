"""GLAM, Global-Local Activation Maps (Liu et al., MIDL 2021): lesion maps of whole mammograms, at full
resolution, learnt from image-level benign/malignant labels only.

- The global module, a narrow (memory-light) ResNet-style downsampler, sees the whole image. Each of its
  last three stages feeds a 1x1 convolution giving per-class sigmoid maps, resized to one map size
  (184 x 120 for a 2944 x 1920 input). Each scale predicts the mean of its top 3% activations; the
  saliency that picks patches weighs the scales 0.2, 0.6, 0.2.
- The most salient patch per class (512 x 512) is cropped (see :mod:`radsight.nn.patches`).
- The local module, a ResNet-34 layout kept at output stride 8, maps each patch to finer per-class
  sigmoid maps; a patch predicts the mean of its top 30% activations, an image the max over its patches.
- The fused map is the mean of the local maps pasted back at full resolution and the upsampled global
  map (outside the patches the local map is 0).

Patch size, patches per class, map size and both layouts are options, so smaller images get a scaled-down
model. Training is radsight's design, since only inference code was published: image-level BCE on the
global (every scale), local and fused predictions; the fused prediction is the fused map top-k pooled like
the global one (computed on the local maps' grid, input size / local stride), so the map that is shown is
the map that made the prediction. Stages: ``global`` trains the global module; ``local`` the local module
on the patches the frozen global module picks (its batch-norm statistics stay fixed too); ``joint``
everything. ``[global, local]`` is the published "sep" variant, ``[global, local, joint]`` the "joint" one,
and ``[global]`` alone gives the global module as a model of its own (its prediction and map).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from radsight.config import StageConfig, Strict
from radsight.data.sample import Batch
from radsight.errors import ConfigError
from radsight.methods.base import Method, Prediction
from radsight.nn.blocks import TopKPooling
from radsight.nn.losses import classification_loss
from radsight.nn.patches import crop_patches, paste_maps, select_patches
from radsight.nn.weights import load_into, read_state_dict

# Probabilities are clamped this far from 0 and 1 before taking logits (losses, classifier()).
PROB_EPS = 1e-6


class _Layout(Strict):
    """A ResNet stem width and, per stage, the width, number of basic blocks and stride."""

    stem: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    strides: tuple[int, ...]

    @model_validator(mode="after")
    def _stages_agree(self) -> _Layout:
        if not len(self.widths) == len(self.blocks) == len(self.strides) or not self.widths:
            raise ValueError("widths, blocks and strides must list the same (non-zero) number of stages")
        return self


class GlobalOptions(_Layout):
    """GMIC's ResNet-22 layout by default: 16 channels at stride 4, doubling per stage to stride 64."""

    stem: int = 16
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    blocks: tuple[int, ...] = (2, 2, 2, 2, 2)
    strides: tuple[int, ...] = (1, 2, 2, 2, 2)
    scale_weights: tuple[float, ...] = Field((0.2, 0.6, 0.2), description="the last stages, shallow first")
    map_size: tuple[int, int] = (184, 120)
    topk: float = Field(0.03, gt=0, le=1)

    @model_validator(mode="after")
    def _enough_stages(self) -> GlobalOptions:
        if not 0 < len(self.scale_weights) <= len(self.widths):
            raise ValueError(f"{len(self.scale_weights)} scale weights for {len(self.widths)} stages")
        return self


class LocalOptions(_Layout):
    """ResNet-34's layout, with the last two stages kept at stride 8 so the patch map is fine."""

    stem: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    strides: tuple[int, ...] = (1, 2, 1, 1)
    topk: float = Field(0.3, gt=0, le=1)


class PatchOptions(Strict):
    size: tuple[int, int] = (512, 512)
    per_class: int = Field(1, ge=1)


class GLAMOptions(Strict):
    global_module: GlobalOptions = Field(default_factory=GlobalOptions)
    local_module: LocalOptions = Field(default_factory=LocalOptions)
    patches: PatchOptions = Field(default_factory=PatchOptions)
    loss_weights: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="global, local, fused")
    pretrained: str | None = Field(None, description="torchvision-style ResNet weights for the local module")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = (
            None
            if stride == 1 and in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetStages(nn.Module):
    """A 1-channel ResNet stem (7x7 stride-2 convolution, 3x3 stride-2 max pool) and stages of basic
    blocks, returning every stage's output. Names follow torchvision's ResNet, so its ResNet-18/34
    weights load by name into the matching layout."""

    def __init__(self, layout: _Layout) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, layout.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(layout.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = layout.stem
        for index, (width, blocks, stride) in enumerate(
            zip(layout.widths, layout.blocks, layout.strides, strict=True), start=1
        ):
            stage = [BasicBlock(channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            channels = width
        self.num_stages = len(layout.widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for index in range(1, self.num_stages + 1):
            x = self.get_submodule(f"layer{index}")(x)
            outputs.append(x)
        return outputs


class GlobalModule(nn.Module):
    """Whole image -> per-scale class maps (B x S x K x h x w at ``map_size``) and predictions (B x S x K)."""

    def __init__(self, options: GlobalOptions, num_classes: int) -> None:
        super().__init__()
        self.body = ResNetStages(options)
        n_scales = len(options.scale_weights)
        self.heads = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for width in options.widths[-n_scales:])
        self.pool = TopKPooling(options.topk)
        self.map_size = tuple(options.map_size)
        self.register_buffer("scale_weights", torch.tensor(options.scale_weights), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(images)[-len(self.heads) :]
        maps = torch.stack(
            [
                F.interpolate(torch.sigmoid(head(f)), size=self.map_size, mode="bilinear")
                for head, f in zip(self.heads, features, strict=True)
            ],
            dim=1,
        )
        probs = self.pool(maps.flatten(1, 2)).view(maps.shape[:3])
        return maps, probs


class LocalModule(nn.Module):
    """Patches -> class maps ((B * N) x K x h x w) and top-k pooled patch predictions ((B * N) x K)."""

    def __init__(self, options: LocalOptions, num_classes: int) -> None:
        super().__init__()
        self.body = ResNetStages(options)
        self.head = nn.Conv2d(options.widths[-1], num_classes, 1)
        self.pool = TopKPooling(options.topk)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        maps = torch.sigmoid(self.head(self.body(patches)[-1]))
        return maps, self.pool(maps)


@dataclass
class GLAMOutput:
    """Everything one pass computes; the local and fused parts are None when only the global ran."""

    scale_probs: Tensor  # B x S x K, one prediction per global scale
    global_map: Tensor  # B x K x h x w, the scales weighted: the saliency that picks patches
    global_probs: Tensor  # B x K, the scales' predictions weighted alike
    boxes: Tensor | None = None  # B x N x 4 patch boxes, xyxy input pixels
    local_maps: Tensor | None = None  # (B * N) x K x h' x w'
    local_probs: Tensor | None = None  # B x K, max over each image's patches
    fused_probs: Tensor | None = None  # B x K, top-k pooled fused map

    @property
    def probs(self) -> Tensor:
        """The prediction: the fused one, or the global one when only the global module ran."""
        return self.global_probs if self.fused_probs is None else self.fused_probs


class GLAMNetwork(nn.Module):
    """The global and local modules and the patch logic between them; ``forward`` gives logits of the
    fused prediction and ``native_maps`` the fused map at input resolution (what explanations use).

    With ``use_local`` off (a model trained by the ``global`` stage alone) both come from the global
    module: its prediction, and its map upsampled.
    """

    def __init__(self, options: GLAMOptions, num_classes: int) -> None:
        super().__init__()
        self.global_module = GlobalModule(options.global_module, num_classes)
        self.local_module = LocalModule(options.local_module, num_classes)
        self.patch_size = tuple(options.patches.size)
        self.per_class = options.patches.per_class
        self.fused_pool = TopKPooling(options.global_module.topk)
        self.use_local = True

    def run(self, images: Tensor, *, local: bool | None = None, global_grad: bool = True) -> GLAMOutput:
        """One pass; ``local=False`` stops after the global module (default: ``use_local``), and
        ``global_grad=False`` runs it without a graph (it is frozen), which saves its activations' memory.
        """
        with torch.set_grad_enabled(global_grad and torch.is_grad_enabled()):
            scale_maps, scale_probs = self.global_module(images)
        weights = self.global_module.scale_weights
        global_map = torch.einsum("bskhw,s->bkhw", scale_maps, weights)
        output = GLAMOutput(scale_probs, global_map, torch.einsum("bsk,s->bk", scale_probs, weights))
        if not (self.use_local if local is None else local):
            return output
        size = (images.shape[-2], images.shape[-1])
        boxes = select_patches(global_map, size, self.patch_size, self.per_class)
        local_maps, patch_probs = self.local_module(crop_patches(images, boxes))
        grid = tuple(
            round(s * m / p) for s, m, p in zip(size, local_maps.shape[-2:], self.patch_size, strict=True)
        )
        fused = self.fuse(global_map, local_maps, boxes, size, grid)
        output.boxes = boxes
        output.local_maps = local_maps
        output.local_probs = patch_probs.view(len(images), -1, patch_probs.shape[-1]).amax(dim=1)
        output.fused_probs = self.fused_pool(fused)
        return output

    @staticmethod
    def fuse(
        global_map: Tensor,
        local_maps: Tensor,
        boxes: Tensor,
        image_size: tuple[int, int],
        out_size: tuple[int, int],
    ) -> Tensor:
        """Mean of the local maps pasted onto an ``out_size`` grid and the global map resized to it."""
        pasted = paste_maps(local_maps, boxes, image_size, out_size)
        return 0.5 * (pasted + F.interpolate(global_map, size=out_size, mode="bilinear"))

    def saliency(self, output: GLAMOutput, image_size: tuple[int, int]) -> Tensor:
        """The fused map of a finished pass at ``image_size`` (B x K x H x W); the global map alone
        when the pass had no local part."""
        if output.local_maps is None or output.boxes is None:
            return F.interpolate(output.global_map, size=image_size, mode="bilinear")
        return self.fuse(output.global_map, output.local_maps, output.boxes, image_size, image_size)

    def forward(self, images: Tensor) -> Tensor:
        return torch.logit(self.run(images).probs, eps=PROB_EPS)

    def native_maps(self, images: Tensor) -> Tensor:
        return self.saliency(self.run(images), (images.shape[-2], images.shape[-1]))


class GLAM(Method):
    """GLAM as a radsight method: stages ``global``, ``local``, ``joint``; multi-label sigmoid outputs."""

    stage_names = ("global", "local", "joint")
    options_class = GLAMOptions

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ) -> None:
        super().__init__(label_names, task, model, stages)
        if task != "multilabel":
            raise ConfigError("GLAM's maps are per-class sigmoids: use task: multilabel")
        self.network = GLAMNetwork(self.options, self.num_classes)
        self.network.use_local = "local" in self.stages or "joint" in self.stages
        if self.options.pretrained is not None:
            body = self.network.local_module.body
            source = self.options.pretrained
            load_into(body, read_state_dict(source), source, self.options.local_module.widths[-1])

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        if stage == "global":
            return self.network.global_module.parameters()
        if stage == "local":
            return self.network.local_module.parameters()
        return self.parameters()

    def train(self, mode: bool = True) -> GLAM:
        """Keep the frozen global module in eval mode during the local stage (batch-norm statistics)."""
        super().train(mode)
        if mode and self.stage == "local":
            self.network.global_module.eval()
        return self

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.labels is None:
            raise ValueError("GLAM trains on image-level labels, and this batch has none")
        labels = batch.labels
        output = self.network.run(
            batch.images, local=self.stage != "global", global_grad=self.stage != "local"
        )
        n_scales = output.scale_probs.shape[1]
        global_loss = sum(self._bce(output.scale_probs[:, s], labels) for s in range(n_scales)) / n_scales
        if self.stage == "global":
            return global_loss, {"global": global_loss}
        assert output.local_probs is not None and output.fused_probs is not None
        local_loss = self._bce(output.local_probs, labels)
        fused_loss = self._bce(output.fused_probs, labels)
        w_global, w_local, w_fused = self.options.loss_weights
        loss = w_local * local_loss + w_fused * fused_loss
        if self.stage == "joint":
            loss = loss + w_global * global_loss
        return loss, {"global": global_loss.detach(), "local": local_loss, "fused": fused_loss}

    def _bce(self, probs: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(self.task, torch.logit(probs, eps=PROB_EPS), labels)

    def predict(self, batch: Batch) -> Prediction:
        """Fused probabilities, the fused map at input resolution ("saliency") and the patch boxes; for
        a recipe without local stages, the global module's prediction and map, and no patches."""
        output = self.network.run(batch.images)
        saliency = self.network.saliency(output, (batch.images.shape[-2], batch.images.shape[-1]))
        regions = None if output.boxes is None else list(output.boxes)
        return Prediction(probs=output.probs, maps={"saliency": saliency}, regions=regions)

    def onnx_obstacle(self) -> str | None:
        if not self.network.use_local:
            return None
        return (
            "its local module crops the window each image's global map chose, at positions read back "
            "into Python per image, which a traced graph cannot hold (a global-only GLAM exports)"
        )

    def classifier(self) -> nn.Module:
        return self.network
