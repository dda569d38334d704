"""Small building blocks that several methods share (encoders, UNet decoders, GLAM pooling)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """3x3 (or k x k) convolution, batch norm, ReLU: the unit every block below is made of."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SqueezeExcite(nn.Module):
    """Channel gating from global context (Hu et al. 2018): rescales each channel by a gate in (0, 1)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def gate(self, x: Tensor) -> Tensor:
        """B x C x 1 x 1 gates in (0, 1), one per channel."""
        context = x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.expand(F.relu(self.reduce(context))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class ResidualSEBlock(nn.Module):
    """Two 3x3 convolutions with squeeze-excitation on the residual branch (the SE-ResNet arrangement).

    A 1x1 convolution projects the shortcut when the channel count changes, so the block can widen.
    """

    def __init__(self, in_ch: int, out_ch: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_ch, out_ch)
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch)
        )
        self.se = SqueezeExcite(out_ch, reduction)
        self.shortcut = (
            nn.Identity()
            if in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.se(self.conv2(self.conv1(x))) + self.shortcut(x))


class UpBlock(nn.Module):
    """UNet decoder step: upsample, concatenate the encoder skip, then two conv-BN-ReLU.

    The input is resized to the skip's exact size (so odd encoder sizes line up); without a skip
    (``skip_ch=0``, e.g. the last step up to full resolution) it is upsampled by 2.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.skip_ch = skip_ch
        self.convs = nn.Sequential(ConvBNReLU(in_ch + skip_ch, out_ch), ConvBNReLU(out_ch, out_ch))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if (skip is None) != (self.skip_ch == 0):
            raise ValueError(
                f"UpBlock built with skip_ch={self.skip_ch} was called with skip={skip is not None}"
            )
        if skip is None:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class TopKPooling(nn.Module):
    """Mean of each channel's top ``fraction`` of activations: B x C x H x W -> B x C.

    GLAM pools its saliency this way so that a small lesion is not averaged away; ``fraction=1`` is
    global average pooling. At least one position is always kept.
    """

    def __init__(self, fraction: float) -> None:
        super().__init__()
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"TopKPooling fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        k = max(1, math.ceil(self.fraction * flat.shape[-1]))
        return flat.topk(k, dim=-1).values.mean(dim=-1)


class AttentionPooling(nn.Module):
    """Weighted average over positions with a learned spatial attention map that sums to 1.

    The map itself is an interpretable output (where the classifier looked), hence ``attention()``.
    The scoring convolution starts at zero, so training starts from global average pooling.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def attention(self, x: Tensor) -> Tensor:
        """B x 1 x H x W weights, softmax over positions."""
        scores = self.score(x)
        return scores.flatten(1).softmax(dim=1).view_as(scores)

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.attention(x)).sum(dim=(2, 3))
