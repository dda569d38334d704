"""Label-efficiency curves of arms: a curve file through the CLI, pre-training shared across budgets,
seed-mean intervals and paired tests, and one-line errors for a bad curve file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli

from radsight.metrics.classification import classification_section, runs_mean_test, runs_mean_with_ci

RECIPE = {
    "name": "tiny_curriculum",
    "method": "pretext_curriculum",
    "seed": 0,
    "data": {
        "sources": [
            {
                "name": "phantom",
                "options": {
                    "n": 96,
                    "size": [48, 48],
                    "seed": 1,
                    "classes": ["opacity"],
                    "lesion_scale": 1.5,
                },
            }
        ],
        "labels": ["opacity"],
        "image_size": [48, 48],
        "split": [0.5, 0.2, 0.3],
        "batch_size": 16,
    },
    "model": {"backbone": "tiny_cnn", "probe_steps": 2},
    "stages": [{"name": "rotation", "epochs": 1}, {"name": "finetune", "epochs": 2, "lr": 0.003}],
    "trainer": {"accelerator": "cpu", "progress_bar": False},
    "evaluation": {"n_boot": 50, "min_class_count": 2},
}


ARMS = [
    {"name": "scratch", "recipe": "recipe.yaml", "stages": ["finetune"]},
    {"name": "rotation", "recipe": "recipe.yaml"},
]


def write_curve(folder: Path, **changes) -> Path:
    (folder / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    curve = {
        "budgets": [4, "all"],
        "seeds": 1,
        "n_boot": 50,
        "arms": ARMS,
        **changes,
    }
    path = folder / "curve.yaml"
    path.write_text(yaml.safe_dump(curve))
    return path


@pytest.mark.slow
def test_a_curve_file_with_two_arms_and_two_budgets_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    printed = run_cli("curve", write_curve(tmp_path), "--out", out).output
    payload = json.loads((out / "curve.json").read_text())
    assert set(payload["arms"]) == {"scratch", "rotation"} and payload["baseline"] == "scratch"
    for points in payload["arms"].values():
        assert [p["labels_per_class"] for p in points] == [4, None]
        assert all(p["ci_low"] <= p["value"] <= p["ci_high"] for p in points)
    assert [(t["arm"], t["budget"]) for t in payload["tests"]] == [("rotation", 4), ("rotation", "all")]
    # the pretext stage trained once, and each budget fine-tuned from its encoder
    pretrain = (out / "rotation" / "pretrain").resolve()
    assert json.loads((pretrain / "train_log.jsonl").read_text().splitlines()[0])["stage"] == "rotation"
    for run in ("b4-s0", "ball-s0"):
        recipe = yaml.safe_load((out / "rotation" / run / "recipe.yaml").read_text())
        assert recipe["model"]["pretrained"] == f"run:{pretrain}"
        assert [s["name"] for s in recipe["stages"]] == ["finetune"]
    scratch = yaml.safe_load((out / "scratch" / "b4-s0" / "recipe.yaml").read_text())
    assert scratch["model"].get("pretrained") is None and not (out / "scratch" / "pretrain").exists()
    # one test set for every run; the larger budget's labelled images include the smaller one's
    splits = {
        run: json.loads((out / "rotation" / run / "splits.json").read_text()) for run in ("b4-s0", "ball-s0")
    }
    assert splits["b4-s0"]["test"] == splits["ball-s0"]["test"]
    assert set(splits["b4-s0"]["train"]) < set(splits["ball-s0"]["train"])
    table = (out / "curve.md").read_text()
    assert "| rotation |" in table and "p=" in table and "Attention inside the lung masks" in table
    assert (out / "curve.png").stat().st_size > 0 and (out / "attention.png").stat().st_size > 0
    assert payload["attention_maps"] == {"scratch": "gradcam", "rotation": "gradcam"}
    assert "| scratch | gradcam |" in table
    # the masked-image probe of the shortcut audit ran once, for the whole curve, not in every run
    assert json.loads((out / "shortcut_audit.json").read_text())["probe"] is not None
    assert json.loads((out / "scratch" / "b4-s0" / "shortcut_audit.json").read_text())["probe"] is None
    assert "## Shortcut audit of the training split" in table
    assert "rotation" in printed and "curve.md" in printed
    # finished runs keep their model, not their checkpoints; the pre-training run keeps its own
    assert (out / "rotation" / "b4-s0" / "model.safetensors").is_file()
    assert not list(out.glob("*/b*-s*/stages/*/*.ckpt"))
    assert (pretrain / "stages" / "rotation" / "last.ckpt").is_file()
    # --resume reads the finished runs of the same recipes, and refuses any trained otherwise
    trained = {path: path.stat().st_mtime_ns for path in out.glob("*/*/model.safetensors")}
    run_cli("curve", write_curve(tmp_path), "--out", out, "--resume")
    assert {path: path.stat().st_mtime_ns for path in out.glob("*/*/model.safetensors")} == trained
    finished = (out / "curve.json").read_bytes()
    changed_stage = {1: ("scratch/b4-s0", "stages.0.epochs (2 -> 3)"), 0: ("rotation/pretrain", "(1 -> 2)")}
    for stage, (run, shown) in changed_stage.items():
        stages = [dict(s) for s in RECIPE["stages"]]
        stages[stage]["epochs"] += 1
        (tmp_path / "other.yaml").write_text(yaml.safe_dump({**RECIPE, "stages": stages}))
        curve = write_curve(tmp_path, arms=[{**arm, "recipe": "other.yaml"} for arm in ARMS])
        line = run_cli("curve", curve, "--out", out, "--resume", expect=2).output
        assert line.startswith(f"error: {out / run / 'recipe.yaml'}: --resume reuses finished runs only")
        assert shown in line and line.count("\n") == 1
    assert (out / "curve.json").read_bytes() == finished
    # a moved curve folder resumes: its runs follow their encoder to its new place
    moved = tmp_path / "moved"
    out.rename(moved)
    (moved / "rotation" / "b4-s0" / "metrics.json").unlink()  # one run left to finish there
    run_cli("curve", write_curve(tmp_path), "--out", moved, "--resume")
    for run in ("b4-s0", "ball-s0"):
        recipe = yaml.safe_load((moved / "rotation" / run / "recipe.yaml").read_text())
        assert recipe["model"]["pretrained"] == f"run:{(moved / 'rotation' / 'pretrain').resolve()}"
    assert (moved / "curve.json").read_bytes() == finished


def test_a_bad_curve_file_is_one_line(tmp_path: Path) -> None:
    path = write_curve(tmp_path, baseline="imagenet")
    result = run_cli("curve", path, "--out", tmp_path / "out", expect=2)
    assert (
        result.output == f"error: {path}: baseline 'imagenet' is not an arm; arms: ['scratch', 'rotation']\n"
    )
    path = write_curve(tmp_path, budgets=[4, "most"])
    assert "invalid curve file (budgets.1" in run_cli("curve", path, "--out", tmp_path / "o", expect=2).output
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump({**RECIPE, "name": "my recipe (v2)"}))
    result = run_cli("curve", odd, "--out", tmp_path / "o2", expect=2)
    assert result.output.startswith("error: recipe names ['my recipe (v2)'] must be letters, digits")


def test_the_seed_mean_interval_and_test_of_identical_runs() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(60, 1)).astype(float)
    runs = [np.clip(labels * 0.4 + rng.random((60, 1)) * 0.6, 0, 1) for _ in range(2)]
    patients = [f"p{i // 2}" for i in range(60)]
    one = runs_mean_with_ci(runs[:1], labels, patients, n_boot=200, min_count=1)
    section = classification_section(runs[0], labels, ["x"], patients, n_boot=200, min_count=1)
    assert one["value"] == pytest.approx(section["auroc_macro"])
    both = runs_mean_with_ci(runs, labels, patients, n_boot=200, min_count=1)
    separate = [classification_section(r, labels, ["x"], patients, n_boot=10, min_count=1) for r in runs]
    assert both["value"] == pytest.approx(np.mean([s["auroc_macro"] for s in separate]))
    assert both["value_ci_low"] < both["value"] < both["value_ci_high"]
    same = runs_mean_test(runs, runs, labels, patients, n_boot=200, min_count=1)
    assert same["difference"] == 0.0 and same["p_value"] == pytest.approx(1.0)
    worse = runs_mean_test(runs, [rng.random((60, 1))] * 2, labels, patients, n_boot=200, min_count=1)
    assert worse["difference"] > 0 and worse["p_value"] < 0.05


CURVES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "curves").glob("*.yaml"))
# per curve-file family: its baseline, arms it must have, and the one backbone of every arm
SHIPPED = {
    "curriculum": ("scratch", {"imagenet", "curriculum", "reverse"}, "efficientnet_lite0"),
    "curriculum_nih": ("scratch", {"imagenet", "curriculum", "reverse"}, "efficientnet_lite0"),
    "captioning": (
        "scratch",
        {"imagenet", "in_domain", "captioning", "captioning_imagenet"},
        "efficientnet_lite0",
    ),
    "latent_kd_arms": ("global", {"global", "latent", "none", "attention"}, "resnet18"),
    "latent_kd_share": ("global", {"global", "latent_5", "none_5", "latent_50", "none_50"}, "resnet18"),
}


@pytest.mark.parametrize("path", CURVES, ids=[p.name for p in CURVES])
def test_every_shipped_curve_file_names_recipes_that_check(path: Path, monkeypatch) -> None:
    from radsight.config import load_recipe
    from radsight.methods.registry import check_recipe
    from radsight.studies.curve import _with, load_curve_file

    monkeypatch.setenv("RADSIGHT_DATA", "/placeholder")
    monkeypatch.setenv("IMAGENET_WEIGHTS", "/placeholder.pth")
    spec = load_curve_file(path)
    baseline, arms, backbone = SHIPPED[path.stem.rpartition("_")[0]]
    assert spec.baseline == baseline and arms <= {a.name for a in spec.arms}
    backbones = set()
    for arm in spec.arms:
        recipe = check_recipe(_with(load_recipe(arm.recipe, arm.overrides), arm.stages))
        backbones.add(recipe.model["backbone"])
        if arm.pretrain_recipe is not None:
            backbones.add(check_recipe(load_recipe(arm.pretrain_recipe)).model["backbone"])
    assert backbones == {backbone}  # every arm the same network: a fair comparison


LATENT_RECIPE = {
    **RECIPE,
    "name": "tiny_latent_kd",
    "method": "latent_kd",
    "data": {
        **RECIPE["data"],
        "sources": [
            {
                "name": "phantom",
                "options": {**RECIPE["data"]["sources"][0]["options"], "annotated_fraction": 0.5},
            }
        ],
        "gaze_sigma_fraction": 0.05,
    },
    "model": {"backbone": "tiny_cnn", "cut": 3, "latent": 4, "hidden": 8},
    "stages": [{"name": "global", "epochs": 1, "lr": 0.003}, {"name": "distil", "epochs": 1, "lr": 0.003}],
}


def write_start_from_curve(folder: Path, start_from: str = "global") -> Path:
    (folder / "latent.yaml").write_text(yaml.safe_dump(LATENT_RECIPE))
    curve = {
        "budgets": ["all"],
        "seeds": 1,
        "n_boot": 50,
        "arms": [
            {"name": "global", "recipe": "latent.yaml", "stages": ["global"]},
            {"name": "latent", "recipe": "latent.yaml", "stages": ["distil"], "start_from": start_from},
        ],
    }
    path = folder / "curve.yaml"
    path.write_text(yaml.safe_dump(curve))
    return path


@pytest.mark.slow
def test_an_arm_starts_from_an_earlier_arms_run_at_the_same_budget_and_seed(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "out"
    run_cli("curve", write_start_from_curve(tmp_path), "--out", out)
    start = (out / "global" / "ball-s0").resolve()
    recipe = yaml.safe_load((out / "latent" / "ball-s0" / "recipe.yaml").read_text())
    assert recipe["model"]["pretrained"] == f"run:{start}"
    assert [s["name"] for s in recipe["stages"]] == ["distil"]
    # the frozen stages (below the cut) kept the global run's weights: distil began from its encoder
    started, distilled = (
        load_file(start / "model.safetensors"),
        load_file(out / "latent" / "ball-s0" / "model.safetensors"),
    )
    for stage in ("0", "1", "2"):
        for key in (f"backbone.model.{stage}.0.weight", f"backbone.model.{stage}.1.running_mean"):
            assert torch.equal(started[key], distilled[key]), key
    assert not torch.equal(started["backbone.model.4.0.weight"], distilled["backbone.model.4.0.weight"])
    payload = json.loads((out / "curve.json").read_text())
    assert [(t["arm"], t["baseline"]) for t in payload["tests"]] == [("latent", "global")]


def test_start_from_names_an_earlier_arm(tmp_path: Path) -> None:
    path = write_start_from_curve(tmp_path, start_from="later")
    result = run_cli("curve", path, "--out", tmp_path / "out", expect=2)
    assert result.output == (
        f"error: {path}: arm 'latent': start_from 'later' is not an arm listed before it; "
        "earlier arms: ['global']\n"
    )
    both = yaml.safe_load(path.read_text())
    both["arms"][1] |= {"start_from": "global", "pretrain_recipe": "latent.yaml"}
    path.write_text(yaml.safe_dump(both))
    result = run_cli("curve", path, "--out", tmp_path / "out", expect=2)
    assert result.output == (
        f"error: {path}: arm 'latent': start_from and pretrain_recipe both choose its start; keep one\n"
    )
