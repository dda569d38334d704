"""The shortcut audit flags labels that image size, file, source or padding predict, and a probe trained
with the lungs blanked; phantoms whose labels live in the lungs are not flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch.utils.data import Dataset

from radsight.config import ShortcutAuditConfig
from radsight.data.masked_probe import CENTRAL_BOX, blank_lungs
from radsight.data.sample import Sample, SampleMeta
from radsight.data.shortcut_audit import (
    audit_dataset,
    audit_table,
    predictor_entry,
    source_notes,
    stratified_notes,
    stratified_section,
)
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.errors import DataError
from radsight.metrics.classification import auroc_with_ci

FAST = ShortcutAuditConfig(n_boot=200)


class WidthShortcut(Dataset):
    """Phantom films whose one label, "wide", is 1 exactly when the film is 144 rather than 96 pixels
    wide: the lesions, the lungs and everything else are drawn alike for both."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.label_names = ["wide"]
        self.films = [PhantomChestXray(n, size=(96, 96), seed=1), PhantomChestXray(n, size=(96, 144), seed=2)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        wide = index % 2
        sample = self.films[wide][index]
        sample.meta.patient_id = f"{wide}:{sample.meta.patient_id}"
        return sample.replace(labels=torch.tensor([float(wide)]))


def test_a_label_that_only_the_image_width_predicts_is_flagged_and_the_masked_probe_learns_it() -> None:
    audit = audit_dataset(WidthShortcut(120), ["wide"], FAST)
    predictors = audit.per_label["wide"]["predictors"]
    assert predictors["width"]["auroc"] == 1.0 and predictors["width"]["direction"] == "higher"
    assert predictors["aspect"]["auroc"] == 1.0 and predictors["aspect"]["direction"] == "lower"
    assert predictors["padding"]["auroc"] == 1.0  # the letterbox bars of the wide films
    assert "height" not in predictors  # one value: undefined, never 0.5 reported as a finding
    assert predictors["masked_probe"]["auroc"] > 0.9
    assert audit.probe == {"input_size": [64, 64], "resize": "letterbox", "lung_masks": 120, "central_box": 0}
    (line,) = audit.warnings()
    assert line.startswith("wide: predictable without looking at the lungs (learnable with the lungs blanked")
    assert "width (AUROC 1.00 [1.00, 1.00], higher)" in line and "masked_probe" in line
    with pytest.raises(DataError, match=r"shortcut audit \(strict\): wide: .*width"):
        audit.check(strict=True)
    audit.check(strict=False)


def test_default_phantoms_flag_nothing() -> None:
    phantoms = PhantomChestXray(240, size=(64, 64))
    audit = audit_dataset(phantoms, phantoms.label_names, FAST)
    assert audit.warnings() == [] and audit.flagged() == {}
    for entry in audit.per_label.values():
        # every film has the same size, view and source: only the probe is defined, and it is near chance
        assert set(entry["predictors"]) == {"masked_probe"}
        assert entry["predictors"]["masked_probe"]["auroc"] < 0.65
    audit.check(strict=True)


def test_the_level_is_configurable() -> None:
    audit = audit_dataset(WidthShortcut(40), ["wide"], ShortcutAuditConfig(n_boot=50, level=1.0, probe=False))
    assert audit.warnings() == [] and "masked_probe" not in audit.per_label["wide"]["predictors"]


def test_auroc_of_any_score_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=80) * 100, (rng.random(80) < 0.4).astype(float)
    labels[:5] = np.nan
    entry = auroc_with_ci("auroc", scores, labels, [f"p{i // 2}" for i in range(80)], n_boot=300)
    known = ~np.isnan(labels)
    assert entry["auroc"] == pytest.approx(roc_auc_score(labels[known], scores[known]))
    assert entry["auroc_ci_low"] < entry["auroc"] < entry["auroc_ci_high"]


def test_numeric_predictors_are_oriented_and_categories_scored_by_their_share_of_positives() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0, 0], dtype=float)
    small_is_positive = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 2.5, 7.0, 8.0, 9.0]
    entry = predictor_entry(small_is_positive, "numeric", labels, [str(i) for i in range(10)], 0, 0)
    assert entry["auroc"] == 1.0 and entry["direction"] == "lower"
    # five "A" images (4 positive), five "B" (none): scores 0.8 and 0
    sites = ["A", "A", "A", "A", "B", "B", "A", "B", "B", "B"]
    entry = predictor_entry(sites, "categorical", labels, [str(i) for i in range(10)], 0, 0)
    assert entry["auroc"] == pytest.approx(roc_auc_score(labels, [0.8 if s == "A" else 0.0 for s in sites]))
    assert entry["direction"] == "A most often positive (80%)"
    # categories of fewer than 5 images are pooled, so a category of one image cannot fit its label
    rare = ["A", "A", "A", "A", "A", "B", "C", "D", "E", "F"]
    entry = predictor_entry(rare, "categorical", labels, [str(i) for i in range(10)], 0, 0)
    assert entry["direction"] == "A most often positive (60%)"
    assert predictor_entry(["A"] * 10, "categorical", labels, [str(i) for i in range(10)], 0, 0) is None


def test_labels_only_some_combined_sources_annotate_get_a_note() -> None:
    labels = np.array([[1, np.nan], [0, np.nan], [1, 0], [0, 1]], dtype=float)
    notes = source_notes(["covid", "covid", "nih", "nih"], labels, ["Pneumonia", "Effusion"])
    assert notes == [
        "Effusion is annotated only by nih (not by covid): the model learns it from nih images alone, so "
        "whatever marks those images (size, processing, markers) can stand for it against the other sources"
    ]
    assert source_notes(["nih"] * 4, labels, ["Pneumonia", "Effusion"]) == []


def test_thin_labels_are_reported_not_warned_about() -> None:
    table = {name: [None] * 12 for name in ("height", "aspect", "file_bytes", "bit_depth", "padding")}
    table |= {"width": [float(i) for i in range(12)], "source": ["a"] * 12, "view": ["PA"] * 12}
    table |= {"sex": [None] * 12, "age": [None] * 12}
    labels = np.array([[1.0]] * 3 + [[0.0]] * 9)
    audit = audit_table(table, labels, ["rare"], [str(i) for i in range(12)], FAST, min_count=5)
    assert audit.per_label["rare"]["thin"] and audit.per_label["rare"]["predictors"]["width"]["auroc"] == 1.0
    assert audit.warnings() == []


def test_blanking_uses_the_lung_mask_else_the_central_box() -> None:
    sample = PhantomChestXray(2, size=(64, 64))[0]
    blanked, masked = blank_lungs(sample)
    assert masked and blanked.image[0][sample.masks["lungs"]].abs().max() == 0
    assert blanked.image[0][~sample.masks["lungs"]].sum() == pytest.approx(
        sample.image[0][~sample.masks["lungs"]].sum()
    )
    boxed, masked = blank_lungs(sample.replace(masks=None))
    assert not masked
    x0, y0, x1, y1 = (round(f * 64) for f in CENTRAL_BOX)
    assert boxed.image[0, y0:y1, x0:x1].abs().max() == 0 and boxed.image[0, :y0].sum() > 0


def _meta(width: int) -> SampleMeta:
    """An evaluated image's record: a file 100 pixels high and ``width`` wide, as read (no padding)."""
    return SampleMeta(source="a", path="mem://x", patient_id=f"p{width}", original_size=(100, width))


def test_evaluation_reports_the_model_auroc_within_strata_of_the_strongest_predictor() -> None:
    # eight images: the wide ones are mostly positive (width predicts the label), and the model ranks
    # perfectly among the narrow films and backwards among the wide ones
    widths = [100, 101, 102, 103, 200, 201, 202, 203]
    labels = np.array([[0], [0], [0], [1], [1], [1], [1], [0]], dtype=float)
    probs = np.array([[0.1], [0.2], [0.3], [0.9], [0.4], [0.3], [0.2], [0.8]])
    metas = [_meta(w) for w in widths]
    ids = [m.patient_id for m in metas]
    section = stratified_section(metas, probs, labels, ["finding"], ids, FAST, min_count=1)
    row = section["per_label"]["finding"]
    assert row["strongest_predictor"] == "width"  # aspect ties with it; width comes first
    assert row["predictor_auroc"] == pytest.approx(roc_auc_score(labels[:, 0], widths))
    assert row["model_auroc_a"] == 1.0 and row["model_auroc_b"] == 0.0
    assert (row["n_positive_a"], row["n_negative_a"], row["n_positive_b"], row["n_negative_b"]) == (
        1,
        3,
        3,
        1,
    )
    assert section["flagged_labels"] == ["finding"]
    (note,) = stratified_notes(section)
    assert "the model's AUROC is 1.00 where" in note and "and 0.00 where" in note


def size_shortcut_manifest(folder: Path, n: int = 40) -> Path:
    """A manifest of noise images whose label "big" is 1 exactly when the image is 96 rather than 64
    pixels wide."""
    rng = np.random.default_rng(0)
    rows = ["path,patient_id,labels"]
    for i in range(n):
        width = 96 if i % 2 else 64
        pixels = (rng.random((64, width)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{i}.png,p{i},{'big' if i % 2 else 'none'}")
    (folder / "list.csv").write_text("\n".join(rows) + "\n")
    return folder / "list.csv"


def test_data_inspect_warns_about_a_size_shortcut_in_a_manifest_and_strict_stops(tmp_path) -> None:
    manifest = size_shortcut_manifest(tmp_path)
    args = ["data", "inspect", "--source", "manifest", "--option", f"csv={manifest}"]
    args += ["--option", "label_names=[big]", "--out", tmp_path / "out", "--no-probe"]
    result = run_cli(*args)
    assert "shortcut warning: big: predictable without looking at the lungs from" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    predictors = summary["shortcut_audit"]["per_label"]["big"]["predictors"]
    assert predictors["width"]["auroc"] == 1.0 and predictors["file_bytes"]["auroc"] == 1.0
    assert "| big (thin) |" not in (tmp_path / "out" / "report.md").read_text()
    strict = run_cli(*args, "--strict", expect=2)
    assert "error: shortcut audit (strict): big:" in strict.output and "Traceback" not in strict.output


def test_the_probe_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    audit_dataset(WidthShortcut(30), ["wide"], ShortcutAuditConfig(n_boot=20))
    assert torch.equal(torch.rand(3), expected)  # so a training run after the audit draws as before


def test_train_strict_stops_before_training_on_a_flagged_split(tmp_path, recipes_dir) -> None:
    manifest = size_shortcut_manifest(tmp_path, n=60)
    source = f"[{{name: manifest, options: {{csv: '{manifest}', label_names: [big]}}}}]"
    sets = [f"data.sources={source}", "data.labels=[big]", "data.shortcut_audit.probe=false"]
    flags = [item for value in sets for item in ("--set", value)]
    result = run_cli(
        "train", recipes_dir / "baseline_cpu.yaml", "--out", tmp_path / "run", *flags, "--strict", expect=2
    )
    assert "error: shortcut audit (strict): big: predictable without looking at the lungs" in result.output
    assert not (tmp_path / "run" / "stages").exists()


def test_training_keeps_its_audit_and_the_evaluation_its_strata(trained_model) -> None:
    audit = json.loads((trained_model / "shortcut_audit.json").read_text())
    assert audit["warnings"] == [] and set(audit["per_label"]) == {"nodule", "opacity"}
    assert audit["probe"]["lung_masks"] == audit["n_images"]  # the phantoms' lung masks were blanked
    shortcuts = json.loads((trained_model / "metrics.json").read_text())["shortcuts"]
    assert shortcuts["flagged_labels"] == [] and set(shortcuts["per_label"]) == {"nodule", "opacity"}
    # every phantom has the same size, view and source: no predictor to stratify by
    assert shortcuts["per_label"]["nodule"]["strongest_predictor"] is None


def test_data_inspect_of_a_recipe_audits_its_sources_combined(tmp_path, recipes_dir) -> None:
    sets = ["data.sources.0.options={n: 40, size: [64, 64]}", "data.image_size=[64, 96]"]
    flags = [item for value in sets for item in ("--set", value)]
    args = ["data", "inspect", "--recipe", recipes_dir / "baseline_cpu.yaml", *flags, "--out", tmp_path]
    result = run_cli(*args, "--no-probe", "--level", "0.8")
    assert "shortcut audit: no predictor above AUROC 0.80 for any label" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["source"] == "phantom" and summary["images"] == 40
    assert summary["shortcut_audit"]["level"] == 0.8 and summary["shortcut_audit"]["probe"] is None
    assert set(summary["shortcut_audit"]["per_label"]) == {"nodule", "opacity"}


def test_data_inspect_needs_one_of_source_and_recipe(tmp_path, recipes_dir) -> None:
    result = run_cli("data", "inspect", "--out", tmp_path, expect=2)
    assert "pass either --source (one dataset) or --recipe" in result.output
    result = run_cli("data", "inspect", "--source", "phantom", "--set", "seed=1", "--out", tmp_path, expect=2)
    assert "--set overrides a recipe's fields; pass --recipe with it" in result.output
    result = run_cli("data", "inspect", "--source", "phantom", "--level", "0.4", "--out", tmp_path, expect=2)
    assert "data inspect: invalid option(s) (level:" in result.output
