"""Pretrained weights: read a local file safely, map its keys onto a network, fetch ImageNet weights.

Files are read without unpickling arbitrary objects (``torch.load(weights_only=True)`` or safetensors).
Keys are matched by name; a file from another implementation of the same architecture (e.g.
efficientnet_pytorch's ``_conv_stem.weight`` for timm's ``conv_stem.weight``) is matched by order and
shape instead, and refused when counts or shapes disagree. The file's classifier is ignored, and a
3-channel first convolution is summed over its input channels for 1-channel X-rays.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import threading
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from radsight.errors import ConfigError
from radsight.run_folder import read_export_config

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Keys added by wrappers: DistributedDataParallel ("module.") and Lightning modules / radsight's Backbone.
_WRAPPER_PREFIXES = ("module.", "model.")
_WRAPPER_KEYS = ("state_dict", "model")
# Seconds to wait for a TCP connection to the weights server before declaring the network unreachable.
PROBE_TIMEOUT_S = 3.0
_HOW_TO_PASS_A_FILE = (
    "Download the weights elsewhere and pass the local file instead: `pretrained: /path/to/weights.pth` "
    "in the recipe, or `--set model.pretrained=/path/to/weights.pth` on the command line"
)


@dataclass(frozen=True)
class LoadReport:
    """What loading did, so a caller can log it or a test can check it."""

    source: str
    matched_by: Literal["name", "order"]
    loaded: int
    adapted_first_conv: str | None
    ignored_head: tuple[str, ...]
    unexpected: tuple[str, ...]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from .pth/.pt/.bin or .safetensors, unwrapping {"state_dict": ...}-style files
    and "module."/"model." prefixes. Anything else is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            raw: object = safetensors.torch.load_file(path)
        except (SafetensorError, OSError) as err:
            raise ConfigError(f"{path}: not a valid safetensors file ({err})") from err
    elif suffix in TORCH_SUFFIXES:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ConfigError(
                f"{path}: torch.load(weights_only=True) refused it ({_unpickler_reason(err)}); radsight only "
                "reads plain tensors, never pickled objects, so save `model.state_dict()` instead"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise ConfigError(
                f"{path}: not a readable PyTorch weights file ({err or 'file is empty'})"
            ) from err
    else:
        raise ConfigError(
            f"{path}: unknown weights format {suffix!r}; use one of {', '.join(TORCH_SUFFIXES)}, .safetensors"
        )
    return _as_state_dict(raw, path)


RUN_PREFIX = "run:"
"""``pretrained: run:PATH`` starts a backbone from the encoder of the run (or model folder) at PATH."""
_ENCODER_PREFIX = "backbone.model."


def run_encoder_state(reference: str, backbone: str) -> dict[str, Tensor]:
    """The encoder of an earlier run (``run:PATH``): the ``backbone.`` tensors of its model.safetensors,
    refused in one line when that run's backbone is another architecture than ``backbone``."""
    folder = Path(reference.removeprefix(RUN_PREFIX))
    config = read_export_config(folder)
    trained = config.get("recipe", {}).get("model", {}).get("backbone")
    if trained is not None and trained != backbone:
        raise ConfigError(
            f"model.pretrained: {reference} holds a {trained!r} encoder and this recipe builds {backbone!r}; "
            "the architectures must match"
        )
    state = read_state_dict(folder / "model.safetensors")
    encoder = {k.removeprefix(_ENCODER_PREFIX): v for k, v in state.items() if k.startswith(_ENCODER_PREFIX)}
    if not encoder:
        raise ConfigError(f"model.pretrained: {reference} holds no encoder (no backbone.* tensors)")
    return encoder


def _unpickler_reason(err: Exception) -> str:
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n|$)", str(err))
    return match.group(1).strip() if match else str(err).splitlines()[0]


def _as_state_dict(raw: object, path: Path) -> dict[str, Tensor]:
    while isinstance(raw, dict):
        wrapped = next((raw[key] for key in _WRAPPER_KEYS if isinstance(raw.get(key), dict)), None)
        if wrapped is None:
            break
        raw = wrapped
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), found {type(raw).__name__}")
    for key, value in raw.items():
        if not isinstance(value, Tensor):
            raise ConfigError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a state dict "
                "(optionally under 'state_dict' or 'model')"
            )
    state: dict[str, Tensor] = raw
    while prefix := next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None):
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, Tensor], source: str, num_features: int) -> LoadReport:
    """Copy ``state`` into ``model`` (by name, else by order and shape) and report what happened.

    ``num_features`` is the width of the pooled features, used to recognise the file's classifier
    (a trailing ``[n, num_features]`` weight and ``[n]`` bias that the model lacks), which is ignored.
    Every parameter and buffer of the model must be covered; otherwise ConfigError names ``source`` and
    the first mismatch.
    """
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    head = _classifier_keys(given, target, num_features)
    body = {k: v for k, v in given.items() if k not in head}
    missing = [k for k in target if k not in body]
    if not missing:
        matched_by: Literal["name", "order"] = "name"
        pairs = [(k, k) for k in target]
    elif len(body) == len(target):
        matched_by = "order"
        pairs = list(zip(target, body, strict=True))
    else:
        raise ConfigError(
            f"{source}: does not fit this network: names differ (first missing: {missing[0]!r}) and it holds "
            f"{len(body)} tensors besides the classifier where the network has {len(target)}"
        )
    first_conv = _first_conv_weight(model)
    new_state = {}
    adapted = None
    for target_key, source_key in pairs:
        value, like = given[source_key], target[target_key]
        new_state[target_key] = _fit(value, like, source_key, target_key, target_key == first_conv, source)
        if value.shape != like.shape:
            adapted = target_key
    model.load_state_dict(new_state, strict=False)
    unexpected = tuple(k for k in body if k not in target) if matched_by == "name" else ()
    if unexpected:
        warnings.warn(
            f"{source}: ignored {len(unexpected)} unexpected tensors: {', '.join(unexpected[:5])}",
            stacklevel=2,
        )
    return LoadReport(source, matched_by, len(new_state), adapted, tuple(head), unexpected)


def _classifier_keys(given: dict[str, Tensor], target: dict[str, Tensor], num_features: int) -> list[str]:
    """The file's trailing linear classifier (weight [n, num_features], optional bias [n]) if the model
    has no tensors of those names."""
    tail: list[str] = []
    for key in reversed(list(given)[-2:]):
        if key in target:
            break
        tail.insert(0, key)
    if not tail:
        return []
    has_bias = len(tail) == 2 and given[tail[1]].dim() == 1
    weight = given[tail[0] if has_bias else tail[-1]]
    is_linear = weight.dim() in (2, 4) and weight.shape[1] == num_features and weight.shape[2:].numel() == 1
    if not is_linear or (has_bias and given[tail[1]].shape != weight.shape[:1]):
        return []
    return tail if has_bias else tail[-1:]


def _first_conv_weight(model: nn.Module) -> str:
    name = next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))
    return f"{name}.weight"


def _fit(
    value: Tensor, like: Tensor, source_key: str, target_key: str, first_conv: bool, source: str
) -> Tensor:
    """The file's tensor in the model's shape and dtype; the first convolution may be channel-summed."""
    if value.shape == like.shape:
        return value.to(like.dtype)
    same_but_channels = (
        value.dim() == 4 and value.shape[:1] + value.shape[2:] == like.shape[:1] + like.shape[2:]
    )
    if first_conv and same_but_channels and like.shape[1] == 1:
        return value.float().sum(dim=1, keepdim=True).to(like.dtype)
    hint = (
        f" (a {value.shape[1]}-channel first convolution adapts only to in_chans=1)"
        if first_conv and same_but_channels
        else ""
    )
    raise ConfigError(
        f"{source}: tensor {source_key!r} has shape {tuple(value.shape)} but the network's {target_key!r} "
        f"needs {tuple(like.shape)}{hint}"
    )


def imagenet_state_dict(library: Literal["timm", "torchvision"], arch: str) -> dict[str, Tensor]:
    """ImageNet weights through the library's own download and cache, failing within seconds offline.

    Offline (``HF_HUB_OFFLINE``) only the cache is used. Online, the server is first probed with a short
    TCP connection in a daemon thread, so a blackholed network (where DNS or connect would hang for
    minutes) gives a ConfigError after ``PROBE_TIMEOUT_S`` instead; a reachable server then downloads at
    its own pace.
    """
    if library == "timm":
        host, cached, build = _timm_source(arch)
    else:
        host, cached, build = _torchvision_source(arch)
    what = f"ImageNet weights for {library} {arch!r}"
    if not cached:
        if _offline():
            raise ConfigError(
                f"could not download {what}: HF_HUB_OFFLINE is set and they are not cached. "
                f"{_HOW_TO_PASS_A_FILE}"
            )
        if not _reachable(host):
            raise ConfigError(f"could not download {what}: {host} is unreachable. {_HOW_TO_PASS_A_FILE}")
    try:
        return build().state_dict()
    except Exception as err:  # any failure of a third-party download is the same problem to the user
        raise ConfigError(
            f"could not download {what} ({type(err).__name__}: {err}). {_HOW_TO_PASS_A_FILE}"
        ) from err


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


def _timm_source(arch: str) -> tuple[str, bool, Callable[[], nn.Module]]:
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm has no ImageNet weights for {arch!r}; pass a local weights file instead")
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        cached = any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, name), str) for name in names)
        host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    else:
        cached, host = _torch_hub_cached(cfg.url), urllib.parse.urlparse(cfg.url).hostname or ""
    return host, cached, lambda: timm.create_model(arch, pretrained=True)


def _torchvision_source(arch: str) -> tuple[str, bool, Callable[[], nn.Module]]:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as err:
        raise ConfigError(f"torchvision has no ImageNet weights for {arch!r}") from err
    host = urllib.parse.urlparse(weights.url).hostname or ""
    return host, _torch_hub_cached(weights.url), lambda: torchvision.models.get_model(arch, weights=weights)


def _torch_hub_cached(url: str) -> bool:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def _reachable(host: str) -> bool:
    """Whether a TCP connection to the host (or the HTTPS proxy) opens within PROBE_TIMEOUT_S."""
    proxy = urllib.request.getproxies().get("https")
    address = (host, 443)
    if proxy:
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        address = (parsed.hostname or host, parsed.port or 80)
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True, name="radsight-weights-probe")
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    return bool(opened)
