"""Latent-variable distillation: what distil freezes, the Gaussian algebra, the image-only test path,
the annotated pool, and a falling loss on phantoms."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_gaze_unet import phantom_batch
from torch.distributions import Normal, kl_divergence

from radsight.config import StageConfig
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.errors import ConfigError
from radsight.methods.latent_kd import (
    LatentKD,
    annotation_maps,
    beta_at,
    box_coverage,
    frozen_modules,
    gaussian_kl,
    reparameterise,
)
from radsight.nn.backbones import create_backbone

TINY = {"backbone": "tiny_cnn", "latent": 8, "hidden": 16}
LABELS = ["nodule", "opacity"]


def make_method(stages: tuple[str, ...] = ("global", "distil"), **options) -> LatentKD:
    torch.manual_seed(0)
    return LatentKD(LABELS, "multilabel", {**TINY, **options}, [StageConfig(name=name) for name in stages])


def test_distil_gives_no_gradient_to_the_frozen_layers_and_keeps_their_statistics() -> None:
    method = make_method(cut=3)
    method.set_stage("distil")
    method.train()
    batch = phantom_batch(6)
    frozen_prefixes = ("backbone.model.0.", "backbone.model.1.", "backbone.model.2.")
    stats = {k: v.clone() for k, v in method.state_dict().items() if "running_mean" in k}
    loss, _ = method.compute_loss(batch)
    loss.backward()
    for name, parameter in method.named_parameters():
        if name.startswith(frozen_prefixes):
            assert parameter.grad is None and not parameter.requires_grad, name
        elif name.startswith(("backbone.model.3.", "backbone.model.4.", "prior.", "posterior.")):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        if name.startswith("global_head."):
            assert parameter.grad is None, name
    after = method.state_dict()
    for key, value in stats.items():
        moved = not torch.equal(after[key], value)
        assert moved == (not key.startswith(frozen_prefixes)), key


def test_distil_records_no_autograd_graph_below_the_cut() -> None:
    """The frozen stages cost their forward pass only: no graph, so no backward and no saved activations."""
    method = make_method(cut=3)
    method.set_stage("distil")
    method.train()
    outputs = {}
    for name in ("2", "3"):  # the last frozen stage, the first trained one
        method.backbone.model.get_submodule(name).register_forward_hook(
            lambda _m, _in, out, name=name: outputs.__setitem__(name, out)
        )
    method.compute_loss(phantom_batch(4))
    assert outputs["2"].grad_fn is None and not outputs["2"].requires_grad
    assert outputs["3"].grad_fn is not None


@pytest.mark.parametrize(
    ("name", "cut", "last_frozen"),
    [
        ("resnet18", 3, "layer2"),
        ("resnet18", 0.4, "layer1"),
        ("densenet121", 2, "features.denseblock1"),
        ("efficientnet_lite0", 4, "blocks.4"),
    ],
)
def test_the_cut_counts_feature_stages(name: str, cut: int | float, last_frozen: str) -> None:
    backbone = create_backbone(name)
    frozen = frozen_modules(backbone, cut)
    tops = [n for n in frozen if n.count(".") == last_frozen.count(".")]
    assert tops[-1] == last_frozen
    trained = [n for n, _ in backbone.model.named_modules() if n not in frozen]
    assert trained[0] != last_frozen and not trained[0].startswith(last_frozen + ".")


def test_a_cut_beyond_the_backbone_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.cut: 9 stages, but the backbone has 5"):
        make_method(cut=9)


def test_kl_is_zero_for_equal_gaussians_and_matches_torch_otherwise() -> None:
    torch.manual_seed(1)
    mu, log_var = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(gaussian_kl(mu, log_var, mu, log_var), torch.zeros(4), atol=1e-6)
    mu_p, log_var_p = torch.randn(4, 6), torch.randn(4, 6)
    ours = gaussian_kl(mu, log_var, mu_p, log_var_p)
    q, p = Normal(mu, torch.exp(0.5 * log_var)), Normal(mu_p, torch.exp(0.5 * log_var_p))
    assert (ours > 0).all()
    assert torch.allclose(ours, kl_divergence(q, p).sum(dim=-1), atol=1e-5)
    # the direction matters: KL(q || p) differs from KL(p || q)
    assert not torch.allclose(ours, kl_divergence(p, q).sum(dim=-1), atol=1e-3)


def test_kl_closed_form_by_hand() -> None:
    # q = N(1, 1), p = N(0, 4): log(2) + (1 + 1) / 8 - 1/2
    kl = gaussian_kl(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.tensor([[4.0]]).log()
    )
    assert kl.item() == pytest.approx(torch.log(torch.tensor(2.0)).item() + 2 / 8 - 0.5, abs=1e-6)


def test_the_sample_std_is_exp_of_half_the_log_variance() -> None:
    torch.manual_seed(2)
    mu = torch.full((200_000, 1), 3.0)
    log_var = torch.full((200_000, 1), torch.tensor(4.0).log().item())  # variance 4: std 2, not log 4
    draws = reparameterise(mu, log_var)
    assert draws.mean().item() == pytest.approx(3.0, abs=0.03)
    assert draws.std().item() == pytest.approx(2.0, abs=0.02)


def test_kl_term_is_zero_without_annotations_and_positive_with_them() -> None:
    batch = phantom_batch(6)
    for posterior, positive in (("none", False), ("annotation", True)):
        method = make_method(posterior=posterior)
        method.set_stage("distil")
        _, parts = method.compute_loss(batch)
        assert (parts["kl"].item() > 0) == positive, posterior
        if not positive:
            assert parts["kl"].item() == 0.0


def test_the_test_path_reads_no_annotation() -> None:
    batch = phantom_batch(6)
    bare = replace(
        batch,
        labels=None,
        boxes=[None] * len(batch),
        box_labels=[None] * len(batch),
        masks={},
        mask_valid={},
        gaze_maps=None,
        gaze_valid=None,
        fixations=[None] * len(batch),
    )
    for head in ("latent", "attention"):
        method = make_method(head=head).eval()
        method.set_stage("distil")
        method.eval()
        with torch.no_grad():
            full, alone = method.predict(batch), method.predict(bare)
        assert torch.equal(full.probs, alone.probs)
        assert torch.equal(full.maps["saliency"], alone.maps["saliency"])
        saliency = alone.maps["saliency"]
        assert saliency.shape == (6, 1, 2, 2)  # tiny_cnn: stride 32 on 64 pixels
        assert torch.allclose(saliency.sum(dim=(1, 2, 3)), torch.ones(6), atol=1e-5)


def test_lesion_localization_scores_the_attention_map_only_with_explain_native() -> None:
    """The attention map is one class-agnostic channel: lesion scoring takes it when the recipe's
    ``evaluation.explain`` is ``native``; with ``gradcam`` it scores Grad-CAM of the same classifier."""
    from radsight.data.transforms import build_transforms
    from radsight.evaluate import MapRequest, collect, explanation, lesion_pairs
    from radsight.explain.cam import explain

    transform = build_transforms((64, 64), train=False, augment=False, gaze_sigma_fraction=0.05)
    data = PhantomChestXray(5, size=(64, 64), seed=2, lesion_scale=1.5, transform=transform)
    method = make_method()
    method.set_stage("distil")
    method.eval()
    requests = {
        how: MapRequest(lesion_pairs, explanation(how), prefer_native="per_class")
        for how in ("gradcam", "native")
    }
    found = collect(method, data, 4, requests).maps
    assert found["native"].images and set(found["native"].kinds) == {"native"}
    assert set(found["gradcam"].kinds) == {"gradcam"}
    assert not torch.allclose(
        torch.from_numpy(found["native"].maps[0]), torch.from_numpy(found["gradcam"].maps[0])
    )
    for image, label, heat in zip(
        found["native"].images, found["native"].labels, found["native"].maps, strict=True
    ):
        alone = explain(method, data[image].image[None], "native", targets=[LABELS.index(label)])[0]
        torch.testing.assert_close(torch.from_numpy(heat.astype("float32")), alone, atol=2e-3, rtol=0)


def test_global_only_recipes_predict_with_the_global_head_and_no_native_map() -> None:
    method = make_method(stages=("global",)).eval()
    batch = phantom_batch(4)
    with torch.no_grad():
        prediction = method.predict(batch)
        expected = torch.sigmoid(method.global_head(method.backbone(batch.images)))
    assert prediction.maps is None and torch.equal(prediction.probs, expected)
    assert not hasattr(method.classifier(), "native_maps")


def test_box_coverage_is_the_share_of_each_cell() -> None:
    # 64 x 64 image on a 2 x 2 grid: box x 16..48, y 0..32 covers half of each top cell
    cover = box_coverage(torch.tensor([[16.0, 0.0, 48.0, 32.0]]), (64, 64), (2, 2))
    assert torch.allclose(cover, torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    assert torch.equal(box_coverage(torch.zeros(0, 4), (64, 64), (2, 2)), torch.zeros(2, 2))


def test_annotation_maps_flag_images_without_the_annotation() -> None:
    batch = phantom_batch(4)
    batch = replace(batch, boxes=[batch.boxes[0], None, *batch.boxes[2:]])
    maps, valid = annotation_maps(batch, "both", (4, 4))
    assert maps.shape == (4, 2, 4, 4) and valid.tolist() == [True, False, True, True]
    assert maps[1, 0].abs().sum() == 0 and maps[:, 1].amax(dim=(1, 2)).tolist() == pytest.approx([1.0] * 4)


def test_beta_schedules() -> None:
    assert beta_at(50, 2.0, "linear", 100) == pytest.approx(1.0)
    assert beta_at(500, 2.0, "linear", 100) == pytest.approx(2.0)
    assert beta_at(0, 2.0, "constant", 100) == 2.0
    assert [beta_at(s, 1.0, "cyclical", 100) for s in (0, 25, 50, 99, 100, 125)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    )


def test_distil_defaults_to_the_annotated_pool() -> None:
    method = make_method()
    assert method.stage_data("distil").pool == "annotated"
    assert method.stage_data("global").pool == "labelled"


def test_phantom_annotated_fraction_strips_annotations_from_the_rest() -> None:
    data = PhantomChestXray(60, size=(64, 64), seed=3, annotated_fraction=0.2)
    flags = data.annotated
    assert 0 < flags.sum() < 30
    for index in range(12):
        sample = data[index]
        carries = sample.boxes is not None and sample.masks is not None and sample.fixations is not None
        assert carries == bool(flags[index])
        assert sample.labels is not None
    full = PhantomChestXray(60, size=(64, 64), seed=3)
    assert full.annotated.all() and torch.equal(full[5].image, data[5].image)
    with pytest.raises(ConfigError, match="annotated_fraction must lie in"):
        PhantomChestXray(4, annotated_fraction=1.5)


def test_gaze_annotations_without_gaze_maps_are_one_config_error() -> None:
    method = make_method(annotations="gaze")
    method.set_stage("distil")
    method.train()
    with pytest.raises(ConfigError, match=r"set data\.gaze_sigma_fraction"):
        method.compute_loss(replace(phantom_batch(4), gaze_maps=None, gaze_valid=None))


def test_option_combinations_are_checked() -> None:
    with pytest.raises(ConfigError, match="posterior: none applies to head: latent"):
        make_method(head="attention", posterior="none")
    with pytest.raises(ConfigError, match="a fraction lies in"):
        make_method(cut=1.5)


@pytest.mark.parametrize("head", ["latent", "attention"])
def test_the_distil_loss_falls_on_phantoms(head: str) -> None:
    batch = phantom_batch(16)
    method = make_method(head=head, beta_schedule="constant", cut=2)
    method.set_stage("distil")
    method.train()
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    torch.manual_seed(0)
    for _ in range(40):
        optimizer.zero_grad()
        loss, _ = method.compute_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
