"""One registry of backbones over timm, torchvision and radsight's own tiny CNN.

``create_backbone("resnet18")`` builds timm's model, ``create_backbone("torchvision:densenet121")``
torchvision's, ``create_backbone("tiny_cnn")`` a five-layer CNN for tests and the CPU demo, and
``create_backbone("vit_small_patch16_224")`` or ``"swin_tiny_patch4_window7_224"`` a timm vision
transformer seen as a CNN (its final tokens laid out on the patch grid). Every backbone takes 1-channel
input by default, starts from random weights, and exposes the same interface: pooled features, the last
feature map, a multi-scale pyramid for decoders, and the layer Grad-CAM should hook. ``pretrained``
loads a local weights file (or tries an ImageNet download that fails fast offline).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from radsight.errors import ConfigError
from radsight.nn.blocks import ConvBNReLU
from radsight.nn.weights import (
    RUN_PREFIX,
    LoadReport,
    imagenet_state_dict,
    load_into,
    read_state_dict,
    run_encoder_state,
)

TORCHVISION_PREFIX = "torchvision:"
# Names that the test-suite builds; any other timm CNN name works too.
TIMM_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "densenet201",
    "efficientnet_lite0",
    "efficientnet_b0",
)
# timm vision transformers (ViT, DeiT, Swin): any name of these timm modules works.
TRANSFORMER_NAMES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224")
TRANSFORMER_MODULES = ("vision_transformer", "deit", "swin_transformer")
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "densenet121", "densenet201", "efficientnet_b0")
TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "densenet", "efficientnet")
# Side of the zero image run once to discover shapes; large enough for stride 32.
_PROBE_SIZE = 64

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


class Backbone(nn.Module):
    """A feature extractor with a uniform interface (a CNN, or a transformer on its patch grid).

    ``model`` is the wrapped network: weight files are matched against its state dict. ``pyramid_channels``
    and ``pyramid_strides`` describe ``feature_pyramid``'s levels so decoders can be built without a
    forward pass; ``pyramid_blocks`` names the module of ``model`` whose output each level is.
    ``load_report`` says how pretrained weights were loaded (None for random weights).
    """

    model: nn.Module
    in_chans: int
    num_features: int
    pyramid_channels: tuple[int, ...]
    pyramid_strides: tuple[int, ...]
    pyramid_blocks: tuple[str, ...]

    def __init__(self, model: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.model = model
        self.in_chans = in_chans
        self.load_report: LoadReport | None = None
        self._cam_layer_name: str | None = None  # a name, not the module, to keep it out of state_dict

    def forward_features(self, x: Tensor) -> Tensor:
        """B x num_features x h x w: the last feature map, before pooling."""
        raise NotImplementedError

    def feature_pyramid(self, x: Tensor) -> list[Tensor]:
        """One map per level of ``pyramid_strides`` (2 to 32 where the network has them), shallow first."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """B x num_features pooled features (global average)."""
        return self.forward_features(x).mean(dim=(2, 3))

    def cam_target_layer(self) -> nn.Module:
        """The block whose output is the final feature map: the layer Grad-CAM should hook.

        Found once by running a small image: among the modules called, the last to finish that holds
        parameters and outputs the final map's shape; a plain ``nn.Sequential`` (a whole stage) is opened to
        its last such child, so the answer is a block such as resnet's ``layer4[-1]``, densenet's ``norm5``
        or efficientnet's ``bn2``.
        """
        if self._cam_layer_name is None:
            calls: list[tuple[str, torch.Size | None]] = []  # (module name, output shape) as they finish
            hooks = [
                module.register_forward_hook(
                    lambda _m, _in, out, name=name: calls.append(
                        (name, out.shape if isinstance(out, Tensor) else None)
                    )
                )
                for name, module in self.model.named_modules()
            ]
            try:
                final_shape = self._probe(self.forward_features).shape
            finally:
                for hook in hooks:
                    hook.remove()
            modules = dict(self.model.named_modules())
            candidates = [
                name
                for name, shape in calls
                if shape == final_shape and next(modules[name].parameters(), None) is not None
            ]
            name = candidates[-1]
            while type(modules[name]) is nn.Sequential and (
                inner := [c for c in candidates if c.rpartition(".")[0] == name]
            ):
                name = inner[-1]
            self._cam_layer_name = name
        return self.model.get_submodule(self._cam_layer_name)

    def explain_at_stride(self, stride: int) -> None:
        """Make the pyramid block of output stride ``stride`` the layer Grad-CAM hooks (see
        :meth:`cam_target_layer`), for a finer map than the final one: at 128 px resnet18's final map
        is 4 x 4 (stride 32) and its stride-8 block (``layer2``) 16 x 16, fine enough for a 12-pixel lesion.
        """
        if stride not in self.pyramid_strides:
            strides = list(self.pyramid_strides)
            raise ConfigError(f"backbone has no block of output stride {stride}; its strides: {strides}")
        self._cam_layer_name = self.pyramid_blocks[self.pyramid_strides.index(stride)]

    def _probe(self, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Run ``fn`` on a zero image in eval mode without gradients (BN statistics stay untouched)."""
        was_training = self.training
        self.eval()
        try:
            reference = next(self.model.parameters())
            image = torch.zeros(
                1, self.in_chans, _PROBE_SIZE, _PROBE_SIZE, dtype=reference.dtype, device=reference.device
            )
            with torch.no_grad():
                return fn(image)
        finally:
            self.train(was_training)


class TimmBackbone(Backbone):
    """A timm model without its classifier; the pyramid comes from timm's ``forward_intermediates``."""

    def __init__(self, model: nn.Module, in_chans: int) -> None:
        super().__init__(model, in_chans)
        self.num_features = model.num_features
        self.pyramid_channels = tuple(info["num_chs"] for info in model.feature_info)
        self.pyramid_strides = tuple(info["reduction"] for info in model.feature_info)
        self.pyramid_blocks = tuple(info["module"] for info in model.feature_info)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)

    def feature_pyramid(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, intermediates_only=True)


class StagedBackbone(Backbone):
    """A network run as a flat sequence of its submodules (given by name, so state-dict keys stay the
    library's own). Each pyramid level is the output of the last submodule at a given stride; the
    strides and channels are found by running a small image once."""

    def __init__(self, model: nn.Module, in_chans: int, blocks: list[str]) -> None:
        super().__init__(model, in_chans)
        self.block_names = blocks
        sizes = self._probe(self._run_blocks)
        levels: dict[int, int] = {}  # stride -> index of the last block at that stride
        for index, out in enumerate(sizes):
            levels[_PROBE_SIZE // out.shape[-1]] = index
        self._levels = sorted(levels.values())
        self.pyramid_strides = tuple(sorted(levels))
        self.pyramid_channels = tuple(sizes[i].shape[1] for i in self._levels)
        self.pyramid_blocks = tuple(blocks[i] for i in self._levels)
        self.num_features = sizes[-1].shape[1]

    def _run_blocks(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for name in self.block_names:
            x = self.model.get_submodule(name)(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        return self._run_blocks(x)[-1]

    def feature_pyramid(self, x: Tensor) -> list[Tensor]:
        outputs = self._run_blocks(x)
        return [outputs[i] for i in self._levels]


class TokenGrid(nn.Module):
    """Transformer tokens as a ``B x C x h x w`` map on the patch grid: the layer Grad-CAM hooks.

    ViT-style ``B x N x C`` tokens lose their first ``prefix_tokens`` (the class and register tokens,
    which sit nowhere in the image) and the patch tokens are laid out row by row, as the patch embedding
    flattened them; Swin-style ``B x h x w x C`` maps are only permuted.
    """

    def __init__(self, prefix_tokens: int) -> None:
        super().__init__()
        self.prefix_tokens = prefix_tokens

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        if tokens.ndim == 4:
            return tokens.permute(0, 3, 1, 2)
        patches = tokens[:, self.prefix_tokens :]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(
                f"{patches.shape[1]} patch tokens do not fill a {grid[0]} x {grid[1]} patch grid"
            )
        return patches.transpose(1, 2).reshape(len(tokens), -1, *grid)


class TokenBackbone(Backbone):
    """A timm vision transformer: its final (normalised) tokens on the patch grid are the feature map, so
    pooling averages the patch tokens and Grad-CAM weighs them as it weighs a CNN's last block. The pyramid
    holds the last block of each stride (one level at the patch size for a ViT, four for a Swin)."""

    def __init__(self, model: nn.Module, in_chans: int) -> None:
        super().__init__(model, in_chans)
        self.num_features = model.num_features
        self.grid = TokenGrid(getattr(model, "num_prefix_tokens", 0))
        last: dict[int, int] = {}  # stride -> index of its last block
        for index, info in enumerate(model.feature_info):
            last[info["reduction"]] = index
        self.pyramid_strides = tuple(sorted(last))
        self._levels = [last[stride] for stride in self.pyramid_strides]
        self.pyramid_channels = tuple(model.feature_info[i]["num_chs"] for i in self._levels)

    def forward_features(self, x: Tensor) -> Tensor:
        grid = self.model.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1]))
        return self.grid(self.model.forward_features(x), grid)

    def feature_pyramid(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, indices=self._levels, intermediates_only=True)

    def cam_target_layer(self) -> nn.Module:
        return self.grid


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a builder ``fn(in_chans=..., **kwargs) -> Backbone`` under ``name`` (timm-style)."""

    def decorate(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


@register_backbone("tiny_cnn")
def tiny_cnn(in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128, 128)) -> Backbone:
    """Five stride-2 conv-BN-ReLU layers (~0.25 M parameters): fast enough for tests and the CPU demo."""
    channels = (in_chans, *widths)
    model = nn.Sequential(*(ConvBNReLU(a, b, stride=2) for a, b in itertools.pairwise(channels)))
    return StagedBackbone(model, in_chans, [str(i) for i in range(len(widths))])


def list_backbones() -> list[str]:
    """Names known to work (and tested); other timm CNN, ViT, DeiT and Swin names work too."""
    torchvision = (TORCHVISION_PREFIX + name for name in TORCHVISION_NAMES)
    return [*_REGISTRY, *TIMM_NAMES, *TRANSFORMER_NAMES, *torchvision]


def create_backbone(
    name: str, *, in_chans: int = 1, pretrained: str | Path | None = None, **kwargs
) -> Backbone:
    """Build a backbone by name with random weights, or with ``pretrained`` weights.

    ``pretrained`` is a local .pth/.pt/.bin/.safetensors state dict (keys matched by name, else by order
    and shape; the classifier is ignored; a 3-channel first convolution is summed to 1 channel), or
    ``"imagenet"`` to use the library's download, which fails fast with a ConfigError when offline, or
    ``run:PATH``, the encoder of an earlier run (same architecture, refused in one line otherwise).
    ``kwargs`` go to the underlying builder (e.g. ``drop_rate`` for timm).
    """
    is_torchvision = name.startswith(TORCHVISION_PREFIX)
    arch = name.removeprefix(TORCHVISION_PREFIX)
    try:
        if name in _REGISTRY:
            backbone = _REGISTRY[name](in_chans=in_chans, **kwargs)
        elif is_torchvision:
            backbone = _torchvision_backbone(arch, in_chans, kwargs)
        else:
            backbone = _timm_backbone(arch, in_chans, kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone {name!r}: invalid option ({err})") from err
    if pretrained is None:
        return backbone
    if str(pretrained).startswith(RUN_PREFIX):
        state, source = run_encoder_state(str(pretrained), name), str(pretrained)
    elif str(pretrained) != "imagenet":
        state, source = read_state_dict(pretrained), str(pretrained)
    elif name in _REGISTRY:
        raise ConfigError(f"backbone {name!r} has no ImageNet weights; pass a local weights file")
    else:
        library = "torchvision" if is_torchvision else "timm"
        state, source = imagenet_state_dict(library, arch), f"{library} ImageNet weights for {arch!r}"
    backbone.load_report = load_into(backbone.model, state, source, backbone.num_features)
    return backbone


def _timm_backbone(name: str, in_chans: int, kwargs: dict) -> Backbone:
    import timm

    transformer = _timm_module(name) in TRANSFORMER_MODULES
    if transformer:
        kwargs = {"dynamic_img_size": True, **kwargs}  # any input size, as for CNNs
    try:
        model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
    except RuntimeError as err:  # timm's "Unknown model"
        raise ConfigError(
            f"unknown backbone {name!r} ({err}); known: {', '.join(list_backbones())}, or any timm CNN"
        ) from err
    if transformer:
        return TokenBackbone(model, in_chans)
    if hasattr(model, "num_prefix_tokens") or getattr(model, "output_fmt", "NCHW") != "NCHW":
        raise ConfigError(
            f"timm model {name!r} is a transformer of a family radsight does not lay out on a patch grid; "
            "use a ViT, DeiT or Swin name"
        )
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        raise ConfigError(f"timm model {name!r} has no feature pyramid (forward_intermediates); use a CNN")
    return TimmBackbone(model, in_chans)


def _timm_module(name: str) -> str | None:
    """The timm module that defines architecture ``name`` ("vision_transformer"); None if unknown."""
    import timm

    try:
        return timm.models.model_entrypoint(timm.models.get_arch_name(name)).__module__.rpartition(".")[2]
    except KeyError:
        return None  # create_model reports the unknown name


def _torchvision_backbone(arch: str, in_chans: int, kwargs: dict) -> Backbone:
    import torchvision

    if not arch.startswith(TORCHVISION_FAMILIES):
        raise ConfigError(
            f"unsupported torchvision backbone {arch!r}; families: {', '.join(TORCHVISION_FAMILIES)}"
        )
    try:
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    except ValueError as err:  # torchvision's "Unknown model"
        raise ConfigError(f"unknown torchvision backbone {arch!r} ({err})") from err
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        model.fc = nn.Identity()
        blocks = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    else:
        model.classifier = nn.Identity()
        if arch.startswith("densenet"):
            # torchvision applies this ReLU functionally after `features`; as a module Grad-CAM can hook it.
            model.features.add_module("relu5", nn.ReLU())
        blocks = [f"features.{child}" for child, _ in model.features.named_children()]
    _set_input_channels(model, in_chans)
    return StagedBackbone(model, in_chans, blocks)


def _set_input_channels(model: nn.Module, in_chans: int) -> None:
    """Replace the first convolution by a freshly initialised one taking ``in_chans`` channels."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return
    parent, _, attr = name.rpartition(".")
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    setattr(model.get_submodule(parent), attr, new)
