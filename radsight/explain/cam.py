"""Saliency maps for any classifier: Grad-CAM, Grad-CAM++, HiResCAM, integrated gradients, native maps.

Every map that :func:`explain` returns is ``B x H x W`` at the input size, non-negative and, by default,
divided by its own maximum (``normalise="max"``), so 1 marks the strongest evidence in each image and 0
marks none (an image with no positive evidence gets an all-zero map rather than amplified noise).
Negative evidence is clipped to 0. ``normalise="minmax"`` rescales from each map's minimum instead, as
pytorch-grad-cam does; the two differ only where a map is positive everywhere.

The model is explained in eval mode (dropout off, BatchNorm running statistics used and not updated)
and handed back exactly as it came: each module's train/eval flag is restored, ``requires_grad`` is
never changed, and gradients are taken with :func:`torch.autograd.grad`, so nothing accumulates into
parameters' ``.grad``. Hooks live only inside context managers and are removed on every exit path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radsight.errors import ConfigError
from radsight.explain.names import METHODS, NORMALISATIONS, Method, Normalisation

Targets = int | Sequence[int] | Tensor | None


@runtime_checkable
class NativeMaps(Protocol):
    """A model that produces its own saliency or segmentation maps (e.g. attention or gaze heads)."""

    def native_maps(self, images: Tensor) -> Tensor:
        """Return ``B x K x h x w`` maps, one channel per class (or a single class-agnostic channel)."""
        ...


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode, then restore each module's own flag, also after an error."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


@contextmanager
def forward_hooks(modules: Sequence[nn.Module], hook: Callable[..., object]) -> Iterator[None]:
    """Register ``hook`` on each module for the duration of the block; removed on every exit path."""
    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def registered_hooks(model: nn.Module) -> int:
    """Count module hooks of every kind on ``model``; explaining must leave this number unchanged."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """Class index per image as a long vector; ``None`` picks each image's highest logit.

    The highest logit is the predicted class for softmax heads and the most probable label for
    multi-label sigmoid heads; to explain several labels of one image, call once per label.
    """
    batch, classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    index = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if index.numel() == 1:
        index = index.expand(batch)
    if index.numel() != batch:
        raise ValueError(f"got {index.numel()} targets for a batch of {batch} images")
    if bool(((index < 0) | (index >= classes)).any()):
        raise ConfigError(f"target classes {index.tolist()} out of range for a model with {classes} outputs")
    return index


def model_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Run the model and insist on the ``B x C`` logits every explanation is defined on."""
    if images.ndim != 4:
        raise ValueError(f"images must be B x 1 x H x W, got shape {tuple(images.shape)}")
    logits = model(images)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return B x C logits for B={images.shape[0]} images, got {shape}")
    return logits


def find_target_layer(
    model: nn.Module, layer: str | nn.Module | None = None, *, example: Tensor | None = None
) -> nn.Module:
    """The layer whose activations a CAM weighs.

    ``layer`` overrides: a module of ``model`` or its dotted name (``"backbone.layer4"``). Otherwise the
    first ``cam_target_layer()`` found on the model or along its ``.backbone`` / ``.model`` attributes
    (the backbone knows its best layer), else the output of the last spatial block, found by one probe
    forward on ``example[:1]`` (see :func:`last_spatial_block`).
    """
    if isinstance(layer, nn.Module):
        if not any(layer is module for module in model.modules()):
            raise ValueError(f"target layer {type(layer).__name__} is not a submodule of the model")
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError as error:
            raise ConfigError(f"target layer {layer!r} not found in the model: {error}") from None
    provided = _cam_target_layer(model)
    if provided is not None:
        return provided
    if example is None:
        raise ConfigError("finding the target layer needs an example image; pass example or target_layer")
    return last_spatial_block(model, example)


def last_spatial_block(model: nn.Module, example: Tensor) -> nn.Module:
    """The block whose output is the model's last spatial feature map: the standard CAM layer.

    Among the modules that hold parameters, run once and output ``B x K x h x w`` with h and w > 1, the
    last to finish; then, while one of its children with parameters produced the very same values, that
    child (so a stage such as ``layer4`` resolves to its last block). This is resnet's ``layer4[-1]``,
    densenet's ``features.norm5``, timm efficientnet's ``bn2`` and torchvision efficientnet's
    ``features[-1]``, the layers pytorch-grad-cam and the CAM literature name for these models; the
    last ``nn.Conv2d`` would miss the residual sum, the normalisation and the activation after it.
    """
    finished: list[tuple[str, tuple[int, ...], tuple[float, float]]] = []  # name, shape, value fingerprint

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
                values = output.detach().double()
                finished.append(
                    (name, tuple(output.shape), (float(values.sum()), float(values.square().sum())))
                )

        return hook

    named = {module: name for name, module in model.named_modules()}
    holders = [
        module for module in named if module is not model and next(module.parameters(), None) is not None
    ]
    handles = [module.register_forward_hook(record(named[module])) for module in holders]
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    runs: dict[str, int] = {}
    for name, _, _ in finished:
        runs[name] = runs.get(name, 0) + 1
    once = [(name, shape, fingerprint) for name, shape, fingerprint in finished if runs[name] == 1]
    if not once:
        raise ConfigError("no layer of the model with parameters outputs a spatial map; pass target_layer")
    chosen = once[-1]
    while inner := [c for c in once if c[0].rpartition(".")[0] == chosen[0] and c[1:] == chosen[1:]]:
        chosen = inner[-1]
    return model.get_submodule(chosen[0])


def _cam_target_layer(model: nn.Module) -> nn.Module | None:
    """Breadth-first along ``.backbone`` / ``.model`` attributes for a ``cam_target_layer()`` provider."""
    queue, seen = [model], set()
    while queue:
        module = queue.pop(0)
        if id(module) in seen:
            continue
        seen.add(id(module))
        provider = getattr(module, "cam_target_layer", None)
        if callable(provider):
            return provider()
        queue += [getattr(module, name, None) for name in ("backbone", "model")]
        queue = [m for m in queue if isinstance(m, nn.Module)]
    return None


def explain(
    model: nn.Module,
    images: Tensor,
    method: Method = "gradcam",
    targets: Targets = None,
    target_layer: str | nn.Module | None = None,
    *,
    normalise: Normalisation = "max",
    n_steps: int = 32,
    internal_batch_size: int | None = None,
) -> Tensor:
    """Saliency maps ``B x H x W`` in [0, 1] for ``images`` (``B x 1 x H x W``, on the model's device).

    ``targets``: one class index, one per image, or ``None`` for each image's highest logit.
    ``target_layer`` applies to the CAM methods (see :func:`find_target_layer`); ``n_steps`` and
    ``internal_batch_size`` to ``"ig"``. ``"native"`` needs a model implementing :class:`NativeMaps`.
    ``normalise``: see :func:`normalise_maps`.
    """
    if method in ("gradcam", "gradcam++", "hirescam"):
        layer = find_target_layer(model, target_layer, example=images)
        raw = _cam(model, images, targets, layer, method)
    elif method == "ig":
        attributions = integrated_gradients(
            model, images, targets, n_steps=n_steps, internal_batch_size=internal_batch_size
        )
        raw = attributions.abs().sum(dim=1)
    elif method == "native":
        raw = _native(model, images, targets)
    else:
        raise ConfigError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    return normalise_maps(raw, images.shape[-2:], normalise)


def _cam(model: nn.Module, images: Tensor, targets: Targets, layer: nn.Module, method: str) -> Tensor:
    """Raw ``B x h x w`` CAM at the target layer's resolution."""
    leaves: list[Tensor] = []

    def capture(module: nn.Module, args: object, output: object) -> Tensor:
        # A leaf cut from the graph: gradients stop here (no parameter ever sees one) and the clone
        # handed downstream keeps in-place ops such as ReLU(inplace=True) off the recorded values.
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise ValueError(f"target layer {type(module).__name__} must output B x K x h x w activations")
        leaf = output.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()

    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model):
        with forward_hooks([layer], capture):
            logits = model_logits(model, images.clone())  # a clone is no inference tensor
        if len(leaves) != 1:
            raise ConfigError(
                f"target layer {type(layer).__name__} ran {len(leaves)} times in one forward; "
                "choose a layer that runs exactly once"
            )
        index = resolve_targets(targets, logits)
        score = logits.gather(1, index[:, None]).sum()
        activations = leaves[0]
        (grads,) = torch.autograd.grad(score, activations)
    activations = activations.detach()
    if method == "hirescam":
        return (grads * activations).sum(dim=1)
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    else:
        # Grad-CAM++ (Chattopadhay et al. 2018), closed form for an exponential of the score.
        grads2 = grads.pow(2)
        denominator = 2 * grads2 + activations.sum(dim=(2, 3), keepdim=True) * grads2 * grads
        alpha = grads2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: Targets = None,
    *,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
) -> Tensor:
    """Signed attributions ``B x 1 x H x W`` along the straight path from a black image (captum).

    They add up to ``f(x) - f(black)`` for the target logit (completeness), up to the path integral's
    discretisation error. The ``n_steps * B`` path images go through the model ``internal_batch_size``
    at a time (all at once when ``None``).
    """
    from captum.attr import IntegratedGradients  # imported on use: captum is slow to import

    with torch.inference_mode(False), eval_mode(model):
        images = images.clone()  # a clone is no inference tensor, so autograd may save it
        with torch.no_grad():
            index = resolve_targets(targets, model_logits(model, images))
        with torch.enable_grad():
            attributions = IntegratedGradients(model).attribute(
                images,
                baselines=torch.zeros_like(images),
                target=index,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
            )
    return attributions.detach()


def _native(model: nn.Module, images: Tensor, targets: Targets) -> Tensor:
    """The model's own map for each image's target class (or its single class-agnostic channel)."""
    if not isinstance(model, NativeMaps):
        raise ConfigError(
            f"{type(model).__name__} has no native maps (no native_maps(images) method); "
            "use method='gradcam', 'gradcam++', 'hirescam' or 'ig'"
        )
    with eval_mode(model), torch.no_grad():
        maps = model.native_maps(images)
        if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
            raise ValueError(f"native_maps must return B x K x h x w, got {tuple(maps.shape)}")
        if maps.shape[1] == 1:
            return maps[:, 0]
        index = resolve_targets(targets, model_logits(model, images))
    if bool((index >= maps.shape[1]).any()):
        raise ConfigError(f"native maps have {maps.shape[1]} channels; target {index.max().item()} has none")
    return maps[torch.arange(len(index), device=maps.device), index]


def normalise_maps(raw: Tensor, size: Sequence[int], normalise: Normalisation = "max") -> Tensor:
    """Raw ``B x h x w`` maps as every explanation returns them: negatives clipped, upsampled bilinearly
    to ``size``, then each divided by its maximum (``"max"``) or rescaled from its minimum to its maximum
    (``"minmax"``, pytorch-grad-cam's scaling). A map without positive evidence, or a constant one under
    ``"minmax"``, becomes all zeros."""
    if normalise not in NORMALISATIONS:
        raise ConfigError(
            f"unknown map normalisation {normalise!r}; choose one of {', '.join(NORMALISATIONS)}"
        )
    maps = F.interpolate(raw.detach().float().clamp(min=0)[:, None], size=tuple(size), mode="bilinear")[:, 0]
    if normalise == "minmax":
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
