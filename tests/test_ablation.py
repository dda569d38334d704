"""Ablations: shipped files keep one budget, the paired mean test by hand, and a tiny run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from radsight.errors import ConfigError
from radsight.metrics.bootstrap import paired_mean_test
from radsight.studies.ablation import load_ablation, variant_recipes

SHIPPED = ("ablations/gaze_unet_cpu.yaml", "ablations/gaze_unet_real.yaml", "ablations/gaze_unet_paper.yaml")
REQUIRED_VARIANTS = {"staged", "no_contrastive", "joint_only", "saliency_only", "classification_only"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_ablations_share_data_and_budget(recipes_dir: Path, name: str, monkeypatch):
    for variable in ("RADSIGHT_DATA", "EGD_CXR_ROOT", "MIMIC_CXR_ROOT"):  # only parsed, never read
        monkeypatch.setenv(variable, "/nonexistent")
    config, base = load_ablation(recipes_dir / name)
    recipes = variant_recipes(config, base, [])
    assert set(recipes) == REQUIRED_VARIANTS and config.reference == "staged"
    assert {sum(s.epochs for s in r.stages) for r in recipes.values()} == {config.epochs}
    assert recipes["classification_only"].method == "supervised"
    assert recipes["saliency_only"].model["tasks"] == ["saliency"]
    assert [s.name for s in recipes["no_contrastive"].stages] == ["classify", "saliency", "joint"]


def write_ablation(folder: Path, base: Path, variants: list[dict], epochs: int) -> Path:
    path = folder / "ablation.yaml"
    payload = {
        "name": "tiny",
        "base": str(base),
        "reference": "staged",
        "epochs": epochs,
        "variants": variants,
    }
    path.write_text(yaml.safe_dump(payload))
    return path


def test_a_variant_off_budget_or_on_other_data_is_refused(tmp_path: Path, recipes_dir: Path):
    base = recipes_dir / "gaze_unet_cpu.yaml"
    longer = write_ablation(
        tmp_path, base, [{"name": "staged"}, {"name": "more", "set": ["stages.0.epochs=5"]}], 6
    )
    with pytest.raises(ConfigError, match="'more' trains 10 epochs"):
        variant_recipes(*load_ablation(longer), [])
    other = write_ablation(tmp_path, base, [{"name": "staged"}, {"name": "x", "set": ["data.budget=5"]}], 6)
    with pytest.raises(ConfigError, match="'x' changes data"):
        variant_recipes(*load_ablation(other), [])


def test_a_variant_with_a_misspelt_model_option_is_refused_before_any_variant_trains(tmp_path, recipes_dir):
    base = recipes_dir / "gaze_unet_cpu.yaml"
    variants = [{"name": "staged"}, {"name": "narrow", "set": ["model.unet_widht=0.5"]}]
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) \['unet_widht'\]; allowed options: \[.*'unet_width'"
    ):
        variant_recipes(*load_ablation(write_ablation(tmp_path, base, variants, 6)), [])


def test_paired_mean_test_by_hand():
    rng = np.random.default_rng(0)
    b = rng.normal(size=40)
    patients = np.repeat(np.arange(20), 2)
    shifted = paired_mean_test(b + 0.25, b, patients, n_boot=200)
    assert shifted["difference"] == pytest.approx(0.25)
    assert shifted["difference_ci_low"] == pytest.approx(0.25) == pytest.approx(shifted["difference_ci_high"])
    same = paired_mean_test(b, b, patients, n_boot=200)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    noisy = paired_mean_test(b + rng.normal(scale=0.01, size=40), b, patients, n_boot=500)
    assert noisy["p_value"] > 0.05 and noisy["difference_ci_low"] < 0 < noisy["difference_ci_high"]
    with_nan = paired_mean_test(np.r_[b[:-1], np.nan], b, patients, n_boot=50)
    assert with_nan["n_images"] == 39


def test_cli_ablation_writes_one_table_with_paired_tests(tmp_path: Path, recipes_dir: Path):
    tiny_stages = "[{name: classify, epochs: 1}, {name: saliency, epochs: 1}, {name: joint, epochs: 1}]"
    ablation = write_ablation(
        tmp_path,
        recipes_dir / "gaze_unet_cpu.yaml",
        [
            {"name": "staged", "set": [f"stages={tiny_stages}"]},
            {
                "name": "classification_only",
                "set": [
                    "method=supervised",
                    "model={backbone: tiny_cnn}",
                    "stages=[{name: classify, epochs: 3}]",
                ],
            },
        ],
        epochs=3,
    )
    overrides = [
        "model.backbone=tiny_cnn",
        "data.sources.0.options={n: 40, size: [64, 64], seed: 0, lesion_scale: 1.5}",
        "data.image_size=[64, 64]",
        "data.batch_size=10",
        "trainer.progress_bar=false",
        "evaluation.min_class_count=1",  # a test split of a few images: no label is thin
    ]
    args = [item for override in overrides for item in ("--set", override)]
    out = tmp_path / "out"
    result = run_cli("ablate", ablation, "--out", out, "--n-boot", "50", *args)
    assert "classification_only" in result.output
    table = json.loads((out / "ablation.json").read_text())
    rows = table["variants"]
    assert table["reference"] == "staged" and table["budget_epochs"] == 3
    assert rows["staged"]["map_source"] == "native" and rows["classification_only"]["map_source"] == "gradcam"
    for row in rows.values():
        assert row["n_images_with_gaze"] == table["n_test_images"]
        assert 0 <= row["n_empty_maps"] <= row["n_images_with_gaze"]
        assert -1 <= row["gaze_cc"] <= 1 and row["gaze_cc_ci_low"] <= row["gaze_cc"] <= row["gaze_cc_ci_high"]
    tests = rows["classification_only"]["vs_reference"]
    assert tests["auroc_macro"]["difference"] == pytest.approx(
        rows["classification_only"]["auroc_macro"] - rows["staged"]["auroc_macro"]
    )
    assert tests["gaze_cc"]["difference"] == pytest.approx(
        rows["classification_only"]["gaze_cc"] - rows["staged"]["gaze_cc"]
    )
    assert "vs_reference" not in rows["staged"]
    assert "| `staged` (ref)" in (out / "ablation.md").read_text()
    assert (out / "attention.png").is_file() and (out / "variants" / "staged" / "report.md").is_file()
    # a finished ablation is reused on --resume instead of trained again
    run_cli("ablate", ablation, "--out", out, "--n-boot", "50", "--resume", *args)
    log = (out / "variants" / "staged" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 3
