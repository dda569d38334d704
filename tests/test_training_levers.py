"""Training levers: ``trainer.precision: bf16-mixed`` and ``trainer.channels_last`` train every stage of
every registered method on the CPU (the same code path as on a GPU): convolutions run in bfloat16 on
channels-last images, the weights learn in float32 and come back in the standard layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_onnx_export import METHOD_CASES, recipe_for
from torch import nn

from radsight.config import Recipe
from radsight.data.assemble import build_splits
from radsight.methods.registry import build_method
from radsight.train import _trainer, stage_loaders


def lever_recipe(method: str) -> Recipe:
    recipe = recipe_for(method)
    data = recipe.data.model_copy(update={"batch_size": 4, "gaze_sigma_fraction": 0.05})
    trainer = recipe.trainer.model_copy(
        update={
            "precision": "bf16-mixed",
            "channels_last": True,
            "accelerator": "cpu",
            "limit_train_batches": 2,
        }
    )
    stages = [stage.model_copy(update={"epochs": 1}) for stage in recipe.stages]
    return recipe.model_copy(update={"data": data, "trainer": trainer, "stages": stages})


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_every_stage_trains_in_bf16_and_channels_last(method: str, tmp_path: Path) -> None:
    recipe = lever_recipe(method)
    torch.manual_seed(0)
    splits = build_splits(recipe.data, recipe.seed)
    model = build_method(recipe, splits.label_names, pretrained=False)
    seen: list[tuple[torch.dtype, bool]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if module.training and inputs[0].ndim == 4 and inputs[0].shape[1] > 1:  # past the 1-channel input
            seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    for stage in recipe.stages:
        model.set_stage(stage.name)
        before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        seen.clear()
        train_loader, val_loader = stage_loaders(model, splits, stage.name)
        _trainer(recipe, tmp_path / stage.name, 1, []).fit(model, train_loader, val_loader)
        assert seen, f"{method} {stage.name}: no convolution ran"
        assert {dtype for dtype, _ in seen} == {torch.bfloat16}, (method, stage.name)
        assert all(layout for _, layout in seen), f"{method} {stage.name}: a convolution saw NCHW input"
        after = dict(model.named_parameters())
        assert any(not torch.equal(before[k], after[k].detach()) for k in before), "nothing learnt"
        for name, value in after.items():
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
            assert value.is_contiguous(), f"{name} left in channels-last after the stage"
    for hook in hooks:
        hook.remove()
