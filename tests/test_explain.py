"""Grad-CAM family, integrated gradients and native maps on small constructed models."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from radsight.errors import ConfigError
from radsight.explain.cam import (
    explain,
    find_target_layer,
    integrated_gradients,
    normalise_maps,
    registered_hooks,
)
from radsight.nn.backbones import create_backbone

CAMS = ("gradcam", "gradcam++", "hirescam")
SIZE = 64


def bright_squares(*corners: tuple[int, int], side: int = 16, seed: int = 0) -> Tensor:
    """One 1 x 64 x 64 image per corner: dim noise with a bright ``side`` square at (row, col)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(corners), 1, SIZE, SIZE, generator=generator) * 0.3
    for i, (row, col) in enumerate(corners):
        images[i, :, row : row + side, col : col + side] = 0.9
    return images


def square_mask(row: int, col: int, side: int = 16, size: int = SIZE) -> Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[row : row + side, col : col + side] = True
    return mask


class BrightnessNet(nn.Module):
    """Class 1 is evidence of bright pixels, class 0 counter-evidence; weights set by hand.

    ``head_region`` (at the 32 x 32 feature resolution) makes the head look only there, so bright
    pixels elsewhere are present in the features but unused by the model.
    """

    def __init__(self, head_region: Tensor | None = None) -> None:
        super().__init__()
        self.detect = nn.Conv2d(1, 4, 3, padding=1)
        self.features = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 2)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.detect.weight.copy_(
                torch.full((4, 1, 3, 3), 1 / 9) * torch.linspace(1, 1.3, 4)[:, None, None, None]
            )
            self.detect.bias.fill_(-0.5)  # fires only where the local mean exceeds about 0.5
            self.features.weight.copy_(torch.rand(8, 4, 3, 3, generator=generator) / 36)
            self.features.bias.zero_()
            self.head.weight.copy_(torch.stack([-torch.ones(8), torch.linspace(0.5, 1.5, 8)]))
            self.head.bias.zero_()
        self.register_buffer("region", torch.ones(32, 32) if head_region is None else head_region.float())

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.features(F.relu(self.detect(x))))
        return self.head((a * self.region).mean(dim=(2, 3)))


def gap_net(relu_after_target: bool, seed: int = 0) -> nn.Sequential:
    """conv -> ReLU -> conv (target, index 2) [-> ReLU] -> global average pool -> linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
    ]
    if relu_after_target:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


@pytest.mark.parametrize("method", CAMS)
def test_cam_highlights_the_region_holding_the_evidence(method: str) -> None:
    corners = [(8, 36), (40, 4)]
    images = bright_squares(*corners)
    maps = explain(BrightnessNet(), images, method=method)
    assert maps.shape == (2, SIZE, SIZE)
    assert float(maps.min()) >= 0 and torch.allclose(maps.amax(dim=(1, 2)), torch.ones(2))
    for cam, (row, col) in zip(maps, corners, strict=True):
        inside = square_mask(row, col)
        peak = int(cam.flatten().argmax())
        assert inside.flatten()[peak], f"{method} peaks outside the bright square"
        assert float(cam[inside].sum() / cam.sum()) > 0.6


def test_hirescam_follows_the_model_where_gradcam_follows_the_features() -> None:
    # Both squares light up the features, but the head only reads the first one (feature rows 4..12,
    # cols 18..26 = image square at (8, 36)); HiResCAM keeps the gradient's location, Grad-CAM averages
    # it away and so also highlights the unused square.
    used, unused = square_mask(8, 36), square_mask(40, 4)
    model = BrightnessNet(head_region=square_mask(4, 18, side=8, size=32))
    images = bright_squares((8, 36), (40, 4))[:1].clone()
    images[0, :, 40:56, 4:20] = 0.9
    hires = explain(model, images, method="hirescam")[0]
    grad = explain(model, images, method="gradcam")[0]
    assert float(hires[used].sum() / hires.sum()) > 0.8
    assert float(hires[unused].max()) == 0.0
    assert float(grad[unused].mean()) > 0.5 * float(grad[used].mean())


def test_hirescam_equals_gradcam_when_global_average_pooling_follows_the_target_layer() -> None:
    # y = w · mean_ij(A) + b, so dy/dA_kij = w_k / (h w) at every position: HiResCAM's sum_k g_kij A_kij
    # and Grad-CAM's sum_k mean(g_k) A_kij are the same map (both the CAM of Zhou et al. over h w).
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    model = gap_net(relu_after_target=False)
    for target in range(3):
        grad = explain(model, images, "gradcam", targets=target, target_layer="2")
        hires = explain(model, images, "hirescam", targets=target, target_layer="2")
        torch.testing.assert_close(hires, grad, atol=1e-5, rtol=1e-4)
        assert float(grad.amax()) == pytest.approx(1.0)
    # A ReLU between the layer and the pooling makes the gradient position-dependent: no longer equal.
    model = gap_net(relu_after_target=True)
    grad = explain(model, images, "gradcam", targets=0, target_layer="2")
    hires = explain(model, images, "hirescam", targets=0, target_layer="2")
    assert float((hires - grad).abs().max()) > 0.05


class Exploding(nn.Module):
    """Runs its convolution, then fails, as a model with a bug in its head would."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        self.conv(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("method", [*CAMS, "ig"])
def test_no_hooks_or_gradients_left_and_modes_restored(method: str) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    model.train()
    model[0].weight.requires_grad_(False)
    model[7].weight.grad = torch.ones_like(model[7].weight)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    running = model[1].running_mean.clone()
    user_hook = model[3].register_forward_hook(lambda *args: None)
    images = torch.rand(2, 1, 16, 16)

    first = explain(model, images, method=method, n_steps=8)
    second = explain(model, images, method=method, n_steps=8)

    torch.testing.assert_close(first, second)  # eval mode inside: dropout off
    assert registered_hooks(model) == 1
    user_hook.remove()
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    torch.testing.assert_close(model[1].running_mean, running)  # BatchNorm statistics not updated
    torch.testing.assert_close(model[7].weight.grad, torch.ones_like(model[7].weight))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "7.weight")


@pytest.mark.parametrize("target_layer", [None, "conv"])
def test_hooks_removed_and_mode_restored_after_an_exception(target_layer: str | None) -> None:
    model = Exploding().train()
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, torch.rand(1, 1, 8, 8), target_layer=target_layer)
    assert registered_hooks(model) == 0
    assert model.training and model.conv.training


def test_inplace_relu_after_the_target_layer_does_not_change_the_map() -> None:
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    model = gap_net(relu_after_target=True)
    reference = explain(model, images, "gradcam", targets=1, target_layer="2")
    model[3] = nn.ReLU(inplace=True)
    torch.testing.assert_close(explain(model, images, "gradcam", targets=1, target_layer="2"), reference)


def test_works_under_inference_mode_and_default_targets_are_the_predictions() -> None:
    model = gap_net(relu_after_target=False)
    with torch.inference_mode():
        images = torch.rand(3, 1, 32, 32)
        predicted = model(images).argmax(dim=1)
        maps = explain(model, images)
    torch.testing.assert_close(maps, explain(model, images, targets=predicted.tolist()))
    with pytest.raises(ConfigError, match="out of range"):
        explain(model, images, targets=3)


def test_integrated_gradients_are_complete() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.Softplus(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    images = torch.rand(2, 1, 16, 16)
    targets = torch.tensor([0, 1])
    attributions = integrated_gradients(model, images, targets, n_steps=64, internal_batch_size=32)
    assert attributions.shape == images.shape
    with torch.no_grad():
        rise = (model(images) - model(torch.zeros_like(images)))[torch.arange(2), targets]
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), rise, atol=1e-4, rtol=1e-3)
    assert float(rise.abs().min()) > 1e-3  # the check is not vacuous
    maps = explain(model, images, "ig", targets=targets, n_steps=16)
    expected = attributions.abs()[:, 0] / attributions.abs().amax(dim=(1, 2, 3))[:, None, None]
    torch.testing.assert_close(maps, expected, atol=0.05, rtol=0)  # 16 vs 64 steps


class ConvHeadNet(nn.Module):
    """Two spatial convolutions, then a 1 x 1 "classifier" convolution after pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.classifier = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1)).flatten(1)


class Backboned(nn.Module):
    """A method wrapping a backbone that names its own CAM layer, one ``.model`` level down."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.backbone = ConvHeadNet()
        self.model.backbone.cam_target_layer = lambda: self.model.backbone.stem

    def forward(self, x: Tensor) -> Tensor:
        return self.model.backbone(x)


def test_target_layer_is_found_and_can_be_overridden() -> None:
    model = ConvHeadNet()
    example = torch.rand(1, 1, 16, 16)
    assert find_target_layer(model, example=example) is model.body  # classifier output is 1 x 1
    with pytest.raises(ConfigError, match="example"):
        find_target_layer(model)  # the automatic choice runs the model once
    assert find_target_layer(model, "stem") is model.stem
    assert find_target_layer(model, model.stem) is model.stem
    with pytest.raises(ConfigError, match="nope"):
        find_target_layer(model, "nope")
    with pytest.raises(ValueError, match="not a submodule"):
        find_target_layer(model, nn.Conv2d(1, 1, 1))
    wrapped = Backboned()
    assert find_target_layer(wrapped, example=example) is wrapped.model.backbone.stem
    assert explain(wrapped, example).shape == (1, 16, 16)


class NativeNet(nn.Module):
    """A model with its own per-class maps at one eighth of the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.maps = nn.Conv2d(1, 2, 8, stride=8)

    def native_maps(self, images: Tensor) -> Tensor:
        return self.maps(images).sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.native_maps(x).mean(dim=(2, 3))


def test_native_maps_are_used_when_the_model_has_them() -> None:
    torch.manual_seed(0)
    model = NativeNet()
    images = torch.rand(2, 1, 32, 32)
    maps = explain(model, images, "native", targets=1)
    with torch.no_grad():
        raw = F.interpolate(model.native_maps(images)[:, 1:], size=(32, 32), mode="bilinear")[:, 0]
    torch.testing.assert_close(maps, raw / raw.amax(dim=(1, 2), keepdim=True))
    with pytest.raises(ConfigError, match="no native maps"):
        explain(gap_net(relu_after_target=False), images, "native")
    with pytest.raises(ConfigError, match="unknown explanation method"):
        explain(model, images, "lime")  # type: ignore[arg-type]


# --- target layer on models radsight did not build, against the layer their users name --------------

STANDARD_LAYERS = [
    # (model, the layer pytorch-grad-cam's documentation and the CAM literature name for it)
    (lambda: torchvision.models.resnet18(num_classes=3), "layer4.1"),  # layer4[-1]
    (lambda: timm.create_model("resnet18", num_classes=3), "layer4.1"),
    (lambda: torchvision.models.densenet121(num_classes=3), "features.norm5"),  # features[-1]
    (lambda: timm.create_model("densenet121", num_classes=3), "features.norm5"),
    (lambda: timm.create_model("efficientnet_b0", num_classes=3), "bn2"),  # conv_head + BN + SiLU
    (lambda: torchvision.models.efficientnet_b0(num_classes=3), "features.8"),  # features[-1]
]


def grad_cam_library_scaling(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's steps for one target layer: ReLU; per image min-max with a 1e-7 guard, resize
    (bilinear, pixel centres aligned); then ReLU and min-max again over the resized maps."""

    def scale(maps: np.ndarray, to: tuple[int, int] | None) -> np.ndarray:
        out = []
        for m in maps:
            m = m - m.min()
            m = m / (1e-7 + m.max())
            if to is not None:
                m = F.interpolate(torch.from_numpy(m)[None, None], size=to, mode="bilinear")[0, 0].numpy()
            out.append(m)
        return np.stack(out)

    return scale(np.maximum(scale(np.maximum(cam, 0), size), 0), None)


def calibrated(model: nn.Module) -> nn.Module:
    """Random weights with the BatchNorm statistics of random images, in eval mode: with the default
    statistics (mean 0, variance 1) activations of some of these networks vanish to 1e-16 with depth."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(9)))
    return model.eval()


def reference_grad_cam(model: nn.Module, images: Tensor, layer: str, target: int) -> np.ndarray:
    """Grad-CAM written out: activations A and gradients dy/dA at ``layer`` by hooks, weights the spatial
    mean of the gradients, map ReLU(sum_k w_k A_k), scaled as pytorch-grad-cam scales it."""
    activations: list[Tensor] = []
    grads: list[Tensor] = []

    def keep(module: nn.Module, args: object, output: Tensor) -> None:
        # a copy of the values: an in-place op later in the forward (densenet's ReLU) would change them
        activations.append(output.detach().clone())
        output.register_hook(grads.append)

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        model(images)[:, target].sum().backward()
    finally:
        handle.remove()
    (grad,), (activation,) = grads, activations
    cam = (grad.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)
    return grad_cam_library_scaling(cam.numpy().astype(np.float64), tuple(images.shape[-2:]))


@pytest.mark.parametrize(("build", "standard"), STANDARD_LAYERS)
def test_automatic_target_layer_is_the_last_spatial_block(
    build: Callable[[], nn.Module], standard: str
) -> None:
    torch.manual_seed(0)
    model = calibrated(build())
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    assert find_target_layer(model, example=images) is model.get_submodule(standard)
    for method in CAMS:
        automatic = explain(model, images, method, targets=1)
        named = explain(model, images, method, targets=1, target_layer=standard)
        torch.testing.assert_close(automatic, named)
        assert torch.equal(named.amax(dim=(1, 2)), torch.ones(2))  # a real map, not an all-zero one
    minmax = explain(model, images, "gradcam", targets=1, normalise="minmax").numpy()
    np.testing.assert_allclose(minmax, reference_grad_cam(model, images, standard, 1), atol=1e-4)


def test_the_last_convolution_would_miss_the_residual_sum() -> None:
    # resnet18's last Conv2d (layer4[-1].conv2) runs before the block's BatchNorm, skip connection and
    # ReLU: its Grad-CAM is another map than the one at the block's output.
    torch.manual_seed(0)
    model = calibrated(torchvision.models.resnet18(num_classes=3))
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    last_conv = explain(model, images, "gradcam", targets=1, target_layer="layer4.1.conv2")
    assert float((last_conv - explain(model, images, "gradcam", targets=1)).abs().max()) > 0.1


# --- map normalisation, against pytorch-grad-cam's scaling ------------------------------------------


def test_minmax_normalisation_is_pytorch_grad_cams_and_max_differs_only_off_zero() -> None:
    generator = torch.Generator().manual_seed(2)
    raw = torch.randn(3, 6, 5, generator=generator, dtype=torch.float64)
    raw[2] = raw[2].abs() + 0.5  # positive everywhere: no zero after the ReLU
    expected = grad_cam_library_scaling(raw.numpy(), (24, 20))
    minmax = normalise_maps(raw, (24, 20), "minmax")
    np.testing.assert_allclose(minmax.numpy(), expected, atol=1e-5)
    peaked = normalise_maps(raw, (24, 20))
    torch.testing.assert_close(peaked[:2], minmax[:2])  # maps with zeros: max and min-max agree
    assert float(peaked[2].min()) > 0.1 and float(minmax[2].min()) == 0.0
    torch.testing.assert_close(peaked[2] / peaked[2].max(), peaked[2])
    with pytest.raises(ConfigError, match="unknown map normalisation 'z'"):
        normalise_maps(raw, (24, 20), "z")  # type: ignore[arg-type]


def test_explain_passes_the_normalisation_on() -> None:
    model = gap_net(relu_after_target=False)
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    minmax = explain(model, images, "gradcam", targets=0, normalise="minmax")
    assert torch.equal(minmax.amin(dim=(1, 2)), torch.zeros(2))
    assert torch.equal(minmax.amax(dim=(1, 2)), torch.ones(2))


# --- vision transformers from the registry -------------------------------------------------------------


def planted_patches(cells: list[tuple[int, int]], seed: int) -> Tensor:
    """One dim 32 x 32 image per grid cell (row, col) with that 8 x 8 patch of the 4 x 4 grid bright."""
    images = torch.rand(len(cells), 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 0.3
    for i, (row, col) in enumerate(cells):
        images[i, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 0.6
    return images


class ProbedViT(nn.Module):
    """A random tiny ViT (class token and two register tokens) with a linear probe for "bright patch":
    the mean feature of planted patches minus the mean feature, measured on other images."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "reg_tokens": 2}
        self.backbone = create_backbone("vit_tiny_patch16_224", **kwargs).eval()
        self.head = nn.Linear(32, 2)
        cells = torch.randint(0, 4, (32, 2), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            grid = self.backbone.forward_features(planted_patches(cells.tolist(), seed=2))
            at_patch = grid[torch.arange(32), :, cells[:, 0], cells[:, 1]].mean(dim=0)
            self.head.weight.copy_(torch.stack([torch.zeros(32), at_patch - grid.mean(dim=(0, 2, 3))]))
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def test_vit_grad_cam_is_on_the_patch_grid_and_lands_on_the_planted_patch() -> None:
    model = ProbedViT()
    cells = [(row, col) for row in range(4) for col in range(4)]
    images = planted_patches(cells, seed=5)
    assert find_target_layer(model, example=images) is model.backbone.grid
    with torch.no_grad():
        tokens = model.backbone.forward_features(images)
    assert tokens.shape == (16, 32, 4, 4)  # the 4 x 4 patch grid, class and register tokens dropped
    # Mean-pooled tokens and a linear head: Grad-CAM's weights are head / 16, its map the head's score
    # of each token on the grid.
    by_hand = torch.einsum("bchw,c->bhw", tokens, model.head.weight[1]) / 16
    maps = explain(model, images, "gradcam", targets=1)
    torch.testing.assert_close(maps, normalise_maps(by_hand, (32, 32)))
    for method in ("gradcam", "hirescam"):
        maps = explain(model, images, method, targets=1)
        peaks = maps.flatten(1).argmax(dim=1)
        assert (peaks // 32 // 8).tolist() == [row for row, _ in cells]
        assert (peaks % 32 // 8).tolist() == [col for _, col in cells]
