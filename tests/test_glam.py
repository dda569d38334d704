"""GLAM: patch selection on constructed maps, shapes and full-resolution reassembly, stage freezing,
a falling loss on phantom mammograms, and the CLI from training to a prediction with its patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from PIL import Image
from torchvision.models import resnet18

from radsight.config import StageConfig
from radsight.data.sample import collate
from radsight.data.sources.phantoms_mammo import PhantomMammogram
from radsight.errors import ConfigError
from radsight.explain.cam import explain
from radsight.methods.glam import GLAM
from radsight.nn.patches import crop_patches, paste_maps, select_patches, window_cells
from radsight.studies import glam_comparison

LABELS = ["benign", "malignant"]
TINY = {
    "global_module": {
        "stem": 4,
        "widths": [4, 8, 8, 8],
        "blocks": [1, 1, 1, 1],
        "strides": [1, 2, 2, 2],
        "map_size": [16, 12],
    },
    "local_module": {"stem": 4, "widths": [4, 8], "blocks": [1, 1], "strides": [1, 2]},
    "patches": {"size": [64, 64]},
}
"""A GLAM for 256 x 192 images: 16-pixel map cells, 64-pixel patches, local maps at stride 8."""
ALL_STAGES = [StageConfig(name="global"), StageConfig(name="local"), StageConfig(name="joint")]


def tiny_glam(stages: list[StageConfig] = ALL_STAGES, **changes) -> GLAM:
    torch.manual_seed(0)
    return GLAM(LABELS, "multilabel", {**TINY, **changes}, stages)


def brute_force_best_window(values: torch.Tensor, window: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the window with the largest sum, by trying every position."""
    h, w = window
    sums = {
        (i, j): float(values[i : i + h, j : j + w].sum())
        for i in range(values.shape[0] - h + 1)
        for j in range(values.shape[1] - w + 1)
    }
    return max(sums, key=sums.get)


def test_selection_picks_the_window_of_maximal_saliency() -> None:
    saliency = torch.zeros(1, 2, 16, 12)
    saliency[0, 0, 5:9, 3:7] = 0.5  # a salient 4 x 4 block: window sum 8
    saliency[0, 0, 0, 11] = 1.0  # the single brightest cell, in a window summing to only 1
    saliency[0, 1, 12:16, 8:12] = 0.4  # class 1: a block in the bottom-right corner
    image_size, patch = (256, 192), (64, 64)
    assert window_cells((16, 12), image_size, patch) == (4, 4)
    boxes = select_patches(saliency, image_size, patch)
    assert boxes.shape == (1, 2, 4)
    for k in range(2):
        top, left = brute_force_best_window(saliency[0, k], (4, 4))
        # the box is the window in pixels (16-pixel cells), centred on it and exactly 64 x 64
        assert boxes[0, k].tolist() == [left * 16, top * 16, left * 16 + 64, top * 16 + 64]
    assert boxes[0, 0].tolist() == [48, 80, 112, 144]
    assert boxes[0, 1].tolist() == [128, 192, 192, 256]  # touches the corner, stays inside


def test_selection_of_several_patches_suppresses_the_taken_window() -> None:
    saliency = torch.rand(2, 1, 16, 12, generator=torch.Generator().manual_seed(0)) * 0.1
    saliency[:, 0, 2:6, 2:6] += 1.0
    saliency[:, 0, 9:13, 5:9] += 0.8
    boxes = select_patches(saliency, (256, 192), (64, 64), per_class=2)
    assert boxes.shape == (2, 2, 4)
    for image_boxes in boxes:
        assert image_boxes[0].tolist() == [32, 32, 96, 96]
        assert image_boxes[1].tolist() == [80, 144, 144, 208]
    # a patch wider than the map's resolution still yields exact-size boxes inside the image
    big = select_patches(saliency, (256, 192), (200, 150))
    assert ((big[..., 2] - big[..., 0]) == 150).all() and ((big[..., 3] - big[..., 1]) == 200).all()
    assert (big[..., 2] <= 192).all() and (big[..., 3] <= 256).all() and (big >= 0).all()
    with pytest.raises(ValueError, match="does not fit"):
        select_patches(saliency, (256, 192), (300, 64))


def test_crop_and_paste_are_exact_inverses_on_their_boxes() -> None:
    images = torch.arange(2 * 256 * 192, dtype=torch.float32).reshape(2, 1, 256, 192)
    boxes = torch.tensor([[[0, 0, 64, 64], [128, 192, 192, 256]], [[16, 32, 80, 96], [16, 40, 80, 104]]])
    crops = crop_patches(images, boxes)
    assert crops.shape == (4, 1, 64, 64)
    assert torch.equal(crops[3], images[1, :, 40:104, 16:80])
    pasted = paste_maps(crops, boxes, (256, 192), (256, 192))
    covered = torch.zeros(2, 1, 256, 192, dtype=torch.bool)
    for b, image_boxes in enumerate(boxes.tolist()):
        for x0, y0, x1, y1 in image_boxes:
            covered[b, :, y0:y1, x0:x1] = True
    assert torch.equal(pasted[covered], images[covered])  # overlapping crops agree, so max = either
    assert (pasted[~covered] == 0).all()
    # on a grid 4 times coarser a box lands on exactly its scaled cells
    coarse = paste_maps(torch.ones(4, 1, 8, 8), boxes, (256, 192), (64, 48))
    assert (
        coarse[0, 0].sum() == 2 * 16 * 16
        and coarse[0, 0, :16, :16].all()
        and coarse[0, 0, 48:64, 32:48].all()
    )


def test_shapes_and_the_fused_map_is_the_mean_of_local_and_global() -> None:
    model = tiny_glam().eval()
    images = torch.rand(2, 1, 256, 192)
    with torch.no_grad():
        out = model.network.run(images)
        prediction = model.predict(collate_images(images))
    assert out.scale_probs.shape == (2, 3, 2) and out.global_map.shape == (2, 2, 16, 12)
    assert out.boxes is not None and out.boxes.shape == (2, 2, 4)
    assert out.local_maps is not None and out.local_maps.shape == (4, 2, 8, 8)  # stride 8 on 64 x 64
    assert prediction.probs.shape == (2, 2) and ((prediction.probs > 0) & (prediction.probs < 1)).all()
    assert torch.equal(prediction.probs, out.fused_probs)
    saliency = prediction.maps["saliency"]
    assert saliency.shape == (2, 2, 256, 192)  # the fused map at input resolution
    assert [tuple(r.shape) for r in prediction.regions] == [(2, 4), (2, 4)]
    # reassembly: inside a patch, half the upsampled local map plus half the global map; outside,
    # half the global map
    global_full = F.interpolate(out.global_map, size=(256, 192), mode="bilinear")
    x0, y0, x1, y1 = out.boxes[0, 0].long().tolist()
    local_full = F.interpolate(out.local_maps[:1], size=(64, 64), mode="bilinear")
    other = out.boxes[0, 1].long().tolist()
    overlap = torch.zeros(256, 192, dtype=torch.bool)
    overlap[other[1] : other[3], other[0] : other[2]] = True
    inside = ~overlap[y0:y1, x0:x1]
    expected = 0.5 * (local_full[0] + global_full[0, :, y0:y1, x0:x1])
    assert torch.allclose(saliency[0][:, y0:y1, x0:x1][:, inside], expected[:, inside], atol=1e-6)
    outside = torch.ones(256, 192, dtype=torch.bool)
    for bx0, by0, bx1, by1 in out.boxes[0].long().tolist():
        outside[by0:by1, bx0:bx1] = False
    assert torch.allclose(saliency[0][:, outside], 0.5 * global_full[0][:, outside], atol=1e-6)


def collate_images(images: torch.Tensor):
    """A batch holding only images, as predict gets them."""
    from radsight.data.sample import Sample, SampleMeta

    meta = SampleMeta(source="test", path="-", patient_id="-")
    return collate([Sample(image=image, meta=meta) for image in images])


def test_classifier_gives_logits_and_native_maps_for_explanations() -> None:
    model = tiny_glam().eval()
    images = torch.rand(2, 1, 256, 192)
    network = model.classifier()
    with torch.no_grad():
        logits = network(images)
        probs = model.predict(collate_images(images)).probs
    assert torch.allclose(torch.sigmoid(logits), probs, atol=1e-5)
    maps = explain(network, images, method="native", targets=[0, 1])
    assert maps.shape == (2, 256, 192) and float(maps.amax()) == pytest.approx(1.0)


def test_global_only_model_predicts_from_the_global_module() -> None:
    model = tiny_glam([StageConfig(name="global")]).eval()
    images = torch.rand(1, 1, 256, 192)
    with torch.no_grad():
        prediction = model.predict(collate_images(images))
        out = model.network.run(images)
    assert out.local_maps is None and prediction.regions is None
    assert torch.equal(prediction.probs, out.global_probs)
    expected = F.interpolate(out.global_map, size=(256, 192), mode="bilinear")
    assert torch.allclose(prediction.maps["saliency"], expected)


def test_frozen_parts_get_no_gradients_and_keep_their_statistics() -> None:
    model = tiny_glam()
    batch = collate(list(PhantomMammogram(2, size=(256, 192), seed=1, prevalence=0.8)))
    model.set_stage("local")
    model.train()
    running = {k: v.clone() for k, v in model.network.global_module.state_dict().items() if "running" in k}
    loss, parts = model.compute_loss(batch)
    loss.backward()
    assert set(parts) == {"global", "local", "fused"}
    assert all(p.grad is None for p in model.network.global_module.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.network.local_module.parameters())
    after = model.network.global_module.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in running.items())
    model.zero_grad(set_to_none=True)
    model.set_stage("global")
    model.train()
    loss, parts = model.compute_loss(batch)
    loss.backward()
    assert set(parts) == {"global"}
    assert all(p.grad is None for p in model.network.local_module.parameters())
    assert all(p.grad is not None for p in model.network.global_module.parameters())
    model.set_stage("joint")
    assert all(p.requires_grad for p in model.parameters())


def test_loss_falls_on_phantom_mammograms() -> None:
    """Each stage lowers its loss on a batch; joint training starts from trained parts, so less."""
    model = tiny_glam()
    batch = collate(list(PhantomMammogram(8, size=(256, 192), seed=2)))
    for stage, ratio in (("global", 0.85), ("local", 0.85), ("joint", 0.95)):
        model.set_stage(stage)
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
        losses = []
        for _ in range(15):
            loss, _ = model.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        assert np.mean(losses[-3:]) < ratio * np.mean(losses[:3]), (stage, losses)


def test_local_module_loads_torchvision_resnet_weights(tmp_path: Path) -> None:
    weights = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)
    layout = {"stem": 64, "widths": [64, 128, 256, 512], "blocks": [2, 2, 2, 2], "strides": [1, 2, 1, 1]}
    model = tiny_glam(local_module=layout, pretrained=str(path))
    body = model.network.local_module.body.state_dict()
    assert torch.equal(body["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    assert torch.equal(body["conv1.weight"], weights["conv1.weight"].sum(dim=1, keepdim=True))


def test_invalid_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"same .* number of stages"):
        tiny_glam(local_module={"stem": 4, "widths": [4, 8], "blocks": [1], "strides": [1, 2]})
    with pytest.raises(ConfigError, match="scale weights"):
        tiny_glam(global_module={**TINY["global_module"], "scale_weights": [1, 1, 1, 1, 1]})
    with pytest.raises(ConfigError, match="multilabel"):
        GLAM(LABELS, "multiclass", TINY, ALL_STAGES)


TINY_DATA = {
    "data.sources.0.options": "{n: 24, size: [256, 192], seed: 3, align_breast: true}",
    "data.image_size": "[256, 192]",
    "data.batch_size": "4",
    "evaluation.n_boot": "50",
    "trainer.progress_bar": "false",
}
"""Overrides shared by the tiny runs below, so they train and test on the same phantoms."""


def train_cli(recipe: Path, out: Path, overrides: dict[str, str]) -> Path:
    pairs = {**TINY_DATA, **overrides}
    run_cli("train", recipe, "--out", out, *(x for k, v in pairs.items() for x in ("--set", f"{k}={v}")))
    return out


@pytest.fixture(scope="module")
def tiny_runs(recipes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GLAM, the global module alone and a CAM classifier, trained through ``radsight train``."""
    root = tmp_path_factory.mktemp("glam_runs")
    model = {"model": json.dumps(TINY)}
    return {
        "glam": train_cli(
            recipes_dir / "glam_cpu.yaml",
            root / "glam",
            {**model, "stages": "[{name: global}, {name: local}, {name: joint}]"},
        ),
        "global": train_cli(
            recipes_dir / "glam_cpu.yaml", root / "global", {**model, "stages": "[{name: global}]"}
        ),
        "classifier": train_cli(
            recipes_dir / "glam_classifier_cpu.yaml", root / "classifier", {"stages.0.epochs": "1"}
        ),
    }


def test_cli_trains_evaluates_and_predicts_with_the_patch_outlined(tiny_runs: dict, tmp_path: Path) -> None:
    out = tiny_runs["glam"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["classification"]["per_label"]) == set(LABELS)
    assert set(metrics["localization"]["per_label"]) <= set(LABELS)  # scored on the fused native maps
    pixels = (PhantomMammogram(1, size=(256, 192), seed=9)[0].image[0].numpy() * 65535).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "view.png")
    Image.fromarray(pixels[:, ::-1].copy()).save(tmp_path / "mirrored.png")  # the same breast facing left
    files = [tmp_path / "view.png", tmp_path / "mirrored.png"]
    run_cli("predict", "--model", out, *files, "--out", tmp_path / "pred", "--explain", "native")
    view, mirrored = json.loads((tmp_path / "pred" / "predictions.json").read_text())["files"]
    assert set(view["probabilities"]) == set(LABELS)
    assert len(view["regions"]) == 2
    assert all(x1 - x0 == 64 and y1 - y0 == 64 for x0, y0, x1, y1 in view["regions"])
    assert Image.open(tmp_path / "pred" / "view.overlay.png").size == (192, 256)
    # the recipe aligns breasts: the mirrored file gets the same prediction, its patches mirrored back
    assert view["mirrored_for_the_model"] != mirrored["mirrored_for_the_model"]
    assert mirrored["probabilities"] == pytest.approx(view["probabilities"], abs=1e-5)
    assert mirrored["regions"] == [[192 - x1, y0, 192 - x0, y1] for x0, y0, x1, y1 in view["regions"]]


def test_baseline_comparison_scores_every_row_on_one_test_set(tiny_runs: dict, tmp_path: Path) -> None:
    run_cli(
        "glam-compare",
        "--glam",
        tiny_runs["glam"],
        "--global-only",
        tiny_runs["global"],
        "--classifier",
        tiny_runs["classifier"],
        "--out",
        tmp_path,
        "--n-boot",
        "50",
    )
    result = json.loads((tmp_path / "comparison.json").read_text())
    rows = result["rows"]
    assert list(rows) == [
        "GLAM (fused map)",
        "GLAM's global map (same weights)",
        "global module alone",
        "classifier CAM",
        "classifier Grad-CAM",
    ]
    counts = {name: sections["all"]["n_images"] for name, sections in rows.items()}
    assert len(set(counts.values())) == 1 and counts["GLAM (fused map)"] > 0  # the same lesions everywhere
    # CAM and Grad-CAM coincide for an average-pooled linear head
    cam, gradcam = rows["classifier CAM"]["all"], rows["classifier Grad-CAM"]["all"]
    for key in ("dice_best", "soft_dice", "pointing_game"):
        assert cam[key] == pytest.approx(gradcam[key], abs=1e-3)
    for gain in result["relative_dice_gain"].values():
        assert gain["best_baseline"] in rows and gain["published_gain"] in (0.396, 0.2)
    assert "## Closing note" in (tmp_path / "comparison.md").read_text()


def test_runs_on_other_data_cannot_be_compared(tiny_runs: dict, recipes_dir: Path, tmp_path: Path) -> None:
    other = train_cli(
        recipes_dir / "glam_classifier_cpu.yaml",
        tmp_path / "other",
        {"stages.0.epochs": "1", "data.sources.0.options": "{n: 24, size: [256, 192], seed: 4}"},
    )
    runs = {"GLAM": (tiny_runs["glam"], "native"), "other": (other, "cam")}
    with pytest.raises(ConfigError, match="other data"):
        glam_comparison.compare(runs, "GLAM", n_boot=10)


def test_verdict_says_whether_the_published_gain_holds_up() -> None:
    def gain(value: float, low: float, high: float) -> dict:
        return {"gain": value, "ci_low": low, "ci_high": high, "published_gain": 0.2, "best_baseline": "CAM"}

    assert "holds up: GLAM is better, and the published 20.0% lies inside" in glam_comparison.verdict(
        "malignant", gain(0.3, 0.1, 0.5)
    )
    assert "differs from the published" in glam_comparison.verdict("malignant", gain(1.0, 0.6, 1.4))
    assert "not shown here" in glam_comparison.verdict("malignant", gain(0.1, -0.1, 0.3))
    assert "does not hold up" in glam_comparison.verdict("malignant", gain(-0.3, -0.5, -0.1))
