"""The dual-encoder gaze UNet: its losses by hand, what each stage trains, learning, and stage chaining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from safetensors.torch import load_file

from radsight.config import StageConfig
from radsight.data.sample import Batch, collate
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.transforms import build_transforms
from radsight.errors import ConfigError
from radsight.methods.gaze_unet import STAGE_PARTS, GazeUNet, saliency_kl, uncertainty_weighted
from radsight.nn.contrastive import class_ids, supervised_contrastive_loss, triplet_loss

STAGES = ("contrastive", "classify", "saliency", "joint")
TINY = {"backbone": "tiny_cnn", "unet_width": 1 / 16, "fusion_features": 16, "projection_features": 16}


def make_method(**options) -> GazeUNet:
    torch.manual_seed(0)
    return GazeUNet(
        ["nodule", "opacity"], "multilabel", {**TINY, **options}, [StageConfig(name=name) for name in STAGES]
    )


def phantom_batch(n: int = 12, size: int = 64, seed: int = 0) -> Batch:
    data = PhantomChestXray(
        n,
        size=(size, size),
        seed=seed,
        lesion_scale=1.5,
        transform=build_transforms((size, size), train=False, augment=False, gaze_sigma_fraction=0.05),
    )
    return collate([data[i] for i in range(n)])


def test_kl_equals_a_hand_computed_value_and_skips_images_without_gaze():
    pred = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    gaze = torch.tensor([[0.0, 0.5], [0.25, 0.25]])
    expected = 0.5 * math.log(0.5 / 0.2) + 0.25 * math.log(0.25 / 0.3) + 0.25 * math.log(0.25 / 0.4)
    log_map = pred.log()[None, None].repeat(2, 1, 1, 1)
    gaze_maps = torch.stack([gaze, torch.full((2, 2), float("nan"))])
    loss = saliency_kl(log_map, gaze_maps, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(F.kl_div(pred.log(), gaze, reduction="sum").item(), rel=1e-6)
    assert saliency_kl(log_map, gaze_maps, torch.tensor([False, False])) is None
    assert saliency_kl(log_map, None, None) is None


def test_native_map_is_a_distribution_at_the_input_size():
    method = make_method().eval()
    maps = method.native_maps(torch.rand(2, 1, 64, 48))
    assert maps.shape == (2, 1, 64, 48)
    assert torch.allclose(maps.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    prediction = method.predict(phantom_batch(2))
    assert prediction.probs.shape == (2, 2) and prediction.maps["saliency"].shape == (2, 1, 64, 64)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_trains_its_parts_and_freezes_the_rest(stage):
    method = make_method()
    method.set_stage(stage)
    method.train()
    frozen = [name for name in STAGE_PARTS["joint"] + ("projection",) if name not in STAGE_PARTS[stage]]
    frozen_buffers = {
        name: {k: v.clone() for k, v in getattr(method, name).state_dict().items()}
        for name in frozen
        if name != "log_variances"
    }
    loss, _ = method.compute_loss(phantom_batch())
    loss.backward()
    for name in STAGE_PARTS[stage]:
        part = getattr(method, name)
        params = [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), f"{name} got no gradient"
    for name in frozen:
        part = getattr(method, name)
        params = [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
        assert all(p.grad is None for p in params), f"{name} is frozen in {stage} but got a gradient"
        if name in frozen_buffers:
            assert not part.training, f"{name} should stay in eval mode during {stage}"
            after = part.state_dict()
            assert all(torch.equal(after[k], v) for k, v in frozen_buffers[name].items()), name


def test_uncertainty_weights_are_learnable_and_follow_kendall():
    assert uncertainty_weighted(torch.tensor(2.0), torch.tensor(math.log(4.0))).item() == pytest.approx(
        2.0 / 4.0 + 0.5 * math.log(4.0)
    )
    method = make_method()
    method.set_stage("joint")
    method.train()
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=0.05)
    loss, parts = method.compute_loss(phantom_batch())
    expected = sum(
        uncertainty_weighted(parts[f"{task}_loss"], torch.tensor(0.0)) for task in ("classify", "saliency")
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # both weights start at log 1 = 0
    loss.backward()
    assert method.log_variances.grad is not None and (method.log_variances.grad != 0).all()
    optimizer.step()
    assert (method.log_variances.detach() != 0).all()


def test_single_task_joint_uses_only_that_loss():
    method = make_method(tasks=["saliency"])
    method.set_stage("joint")
    batch = phantom_batch(4)
    loss, parts = method.compute_loss(batch)
    assert set(parts) == {"saliency_loss"} and loss.item() == pytest.approx(parts["saliency_loss"].item())
    assert not method.log_variances.requires_grad  # nothing to balance with one task
    with pytest.raises(ConfigError, match="tasks"):
        make_method(tasks=[])


@pytest.mark.parametrize("stage", ["classify", "saliency", "joint", "contrastive"])
def test_the_loss_falls_on_phantoms(stage):
    method = make_method()
    method.set_stage(stage)
    method.train()
    batch = phantom_batch(16)
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss, _ = method.compute_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0] - 0.05, losses


def test_contrastive_losses_match_references():
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [float("nan"), 1.0]])
    assert class_ids(labels).tolist()[:4] == [2, 2, 1, 1] and class_ids(labels)[4] not in (1, 2)
    z = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    d = torch.cdist(z, z)
    # anchors 0-3 have one same-class partner; the NaN row has none and is skipped
    anchors, positives = [0, 1, 2, 3], [1, 0, 3, 2]
    negatives = [
        max((j for j in range(5) if j not in (a, p)), key=lambda j: -d[a, j])
        for a, p in zip(anchors, positives, strict=True)
    ]
    reference = F.triplet_margin_loss(z[anchors], z[positives], z[negatives], margin=0.5)
    assert triplet_loss(z, labels, margin=0.5).item() == pytest.approx(reference.item(), rel=1e-5)
    t = 0.1
    by_hand = 0.0
    for a, p in zip(anchors, positives, strict=True):
        others = [j for j in range(5) if j != a]
        by_hand -= (
            z[a] @ z[p] / t - torch.logsumexp(torch.stack([z[a] @ z[j] / t for j in others]), 0)
        ).item()
    assert supervised_contrastive_loss(z, labels, t).item() == pytest.approx(by_hand / 4, rel=1e-5)
    assert triplet_loss(z[:2], labels[:2]).item() == 0.0  # no other-class sample in the batch


def test_cli_trains_every_stage_chains_their_weights_and_evaluates(tmp_path: Path, recipes_dir: Path):
    run = tmp_path / "run"
    overrides = [
        "model.backbone=tiny_cnn",
        "model.unet_width=0.0625",
        "data.sources.0.options={n: 40, size: [64, 64], seed: 0, lesion_scale: 1.5}",
        "data.image_size=[64, 64]",
        "data.batch_size=10",
        "evaluation.n_boot=50",
        "trainer.progress_bar=false",
    ]
    args = [item for override in overrides for item in ("--set", override)]
    run_cli("train", recipes_dir / "gaze_unet_cpu.yaml", "--out", run, *args)
    weights = {stage: load_file(run / "stages" / stage / "stage.safetensors") for stage in STAGES}

    def part(stage: str, prefix: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in weights[stage].items() if k.startswith(prefix) and "num_batches" not in k}

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # each stage starts from the previous one's weights and leaves its frozen parts as they were
    assert not same(part("contrastive", "encoder_a."), part("classify", "encoder_a."))
    assert same(part("classify", "encoder_a."), part("saliency", "encoder_a."))
    assert same(part("contrastive", "encoder_b."), part("classify", "encoder_b."))
    assert not same(part("classify", "encoder_b."), part("saliency", "encoder_b."))
    assert same(part("saliency", "projection."), part("joint", "projection."))
    assert not same(part("saliency", "fusion_classifier."), part("joint", "fusion_classifier."))
    assert same(weights["joint"], load_file(run / "model.safetensors"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["saliency"]["n_images_with_gaze_map"] == metrics["classification"]["n_images"]
    assert -1.0 <= metrics["saliency"]["cc"] <= 1.0
    run_cli("evaluate", "--model", run, "--out", tmp_path / "eval", "--n-boot", "20")
    assert "saliency" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
