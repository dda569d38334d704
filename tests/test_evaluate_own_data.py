"""Evaluating a model on one's own films: a manifest without labels or root, lung regions made of
several masks, a set with one class, and numbers written before any figure can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.transforms import build_transforms
from radsight.evaluate import evaluate
from radsight.methods import load_method

SPLITS = ["train", "test", "test", "train", "test", "test"]


def _films(folder: Path, labels: dict[str, str] | None = None) -> tuple[Path, list[float]]:
    """Six 128 x 128 phantom films as PNG with left and right lung masks, a split column and no label
    (or the same ``labels`` on every row); returns the CSV and each test film's lung area share."""
    folder.mkdir(parents=True, exist_ok=True)
    phantoms = PhantomChestXray(len(SPLITS), size=(128, 128), seed=11, lesion_scale=1.5)
    rows, test_areas = [], []
    for i, split in enumerate(SPLITS):
        sample = phantoms[i]
        Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(folder / f"film{i}.png")
        lungs = sample.masks["lungs"].numpy()
        left, right = lungs.copy(), lungs.copy()
        left[:, 64:], right[:, :64] = False, False
        for side, mask in (("left", left), ("right", right)):
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"film{i}_{side}.png")
        rows.append(
            {
                "path": f"film{i}.png",
                "split": split,
                "mask_left_lung": f"film{i}_left.png",
                "mask_right_lung": f"film{i}_right.png",
                "mask_lungs": f"film{i}_left.png|film{i}_right.png",
                **(labels or {}),
            }
        )
        if split == "test":
            test_areas.append(float(lungs.mean()))
    csv = folder / "films.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv, test_areas


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_lung_attention_on_films_without_labels_and_without_a_root(trained_model, tmp_path):
    csv, areas = _films(tmp_path / "hospital")
    out = tmp_path / "eval"
    command = ["evaluate", "--model", trained_model, "--source", "manifest", "--option", f"csv={csv}"]
    run_cli(*command, "--region", "lungs=left_lung,right_lung", "--out", out, "--n-boot", "50")
    metrics = _metrics(out)
    assert "classification" not in metrics  # nothing to score it against
    lungs = metrics["localization"]
    assert lungs["lungs_n_images"] == SPLITS.count("test")  # the split column's test rows only
    assert lungs["lungs_mask_area_share"] == pytest.approx(np.mean(areas), abs=1e-6)  # both lungs
    assert 0.0 < lungs["lungs_attribution_share"] <= 1.0 and lungs["lungs_attention_ratio"] > 0
    scores = json.loads((out / "image_scores.json").read_text())
    assert [Path(r["path"]).name for r in scores["rows"]] == [
        "film1.png",
        "film2.png",
        "film4.png",
        "film5.png",
    ]
    assert "No image carries any of the labels ['nodule', 'opacity']" in (out / "report.md").read_text()
    assert not (out / "roc.png").exists() and (out / "overlays.png").stat().st_size > 0

    # the same region as one mask column listing both files, found under the default region name
    again = tmp_path / "again"
    run_cli(*command, "--out", again, "--n-boot", "50")
    assert _metrics(again)["localization"] == lungs


def test_a_set_with_one_class_writes_its_metrics_and_notes_the_missing_curves(trained_model, tmp_path):
    csv, _ = _films(tmp_path / "normals", labels={"nodule": "0", "opacity": "0"})
    out = tmp_path / "eval"
    run_cli(
        *("evaluate", "--model", trained_model, "--source", "manifest", "--option", f"csv={csv}"),
        *("--option", "label_columns=[nodule, opacity]", "--out", out, "--n-boot", "50"),
    )
    classification = _metrics(out)["classification"]
    assert classification["n_images"] == 4 and classification["auroc_macro"] is None
    assert classification["undefined_labels"] == ["nodule", "opacity"]
    assert classification["ece"] is not None  # defined with one class: the numbers that exist are kept
    report = (out / "report.md").read_text()
    assert "ROC curves not drawn: no label has both classes in the test set" in report
    assert "Precision-recall curves not drawn" in report
    assert not (out / "roc.png").exists() and (out / "reliability.png").stat().st_size > 0
    assert len(json.loads((out / "image_scores.json").read_text())["rows"]) == 4


def test_numbers_are_written_before_any_figure_is_drawn(trained_model, tmp_path, monkeypatch):
    import radsight.evaluate as evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("the plotting library broke")

    monkeypatch.setattr(evaluation, "roc_curves", broken)
    method, recipe = load_method(trained_model)
    transform = build_transforms((128, 128), train=False, augment=False, gaze_sigma_fraction=None)
    phantoms = PhantomChestXray(8, size=(128, 128), seed=4, lesion_scale=1.5, transform=transform)
    with pytest.raises(RuntimeError, match="plotting library broke"):
        evaluate(method, phantoms, tmp_path, recipe.evaluation.model_copy(update={"n_boot": 20}), title="t")
    assert _metrics(tmp_path)["classification"]["n_images"] == 8
    assert len(json.loads((tmp_path / "image_scores.json").read_text())["rows"]) == 8
