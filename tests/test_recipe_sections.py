"""Every shipped recipe's evaluation, on small synthetic predictions: each shown interval contains its
estimate or is marked, thin labels are marked and left out of the macro, and the report says where the
thresholds come from. The recipes' own data is not needed: only their labels, task and evaluation
settings are read."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from radsight.config import EvaluationConfig
from radsight.data.sample import SampleMeta
from radsight.evaluate import REGION_REQUEST, Collected, MapSet, evaluation_notes, evaluation_sections
from radsight.metrics.bootstrap import EXCLUDES_ESTIMATE
from radsight.operating_points import choose_operating_points
from radsight.report.cells import EXCLUDES_ESTIMATE as MARK
from radsight.report.cells import section_cell
from radsight.report.writer import write_report

RECIPES = sorted((Path(__file__).resolve().parents[1] / "radsight" / "recipes").glob("*.yaml"))
N_IMAGES, SIZE = 48, 32


def intervals(node: Any) -> Iterator[tuple[Mapping[str, Any], str]]:
    """(dict, key) for every value with an interval, in every section and per-label entry."""
    if isinstance(node, Mapping):
        for key in node:
            if f"{key}_ci_low" in node:
                yield node, key
        for value in node.values():
            yield from intervals(value)


def synthetic_predictions(labels: list[str], multilabel: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that carry some signal, and labels in which the last label is thin (3 positives)."""
    rng = np.random.default_rng(seed)
    if multilabel:
        truth = (rng.random((N_IMAGES, len(labels))) < 0.4).astype(float)
        truth[:, -1] = 0.0
        truth[:3, -1] = 1.0
        probs = np.clip(0.3 * truth + 0.7 * rng.random(truth.shape), 0, 1)
        return probs, truth
    classes = np.r_[rng.integers(0, len(labels) - 1, N_IMAGES - 3), np.full(3, len(labels) - 1)]
    truth = np.eye(len(labels))[classes]
    logits = rng.normal(size=truth.shape) + 1.5 * truth
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), truth


def disk(rng: np.random.Generator, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    y, x = rng.uniform(radius, SIZE - radius, 2)
    return (rows - y) ** 2 + (cols - x) ** 2 <= radius**2


def synthetic_pass(labels: list[str], multilabel: bool, seed: int = 0) -> Collected:
    """One evaluation pass: probabilities, 2 images per patient, lesion / lung / gaze maps."""
    rng = np.random.default_rng(seed)
    probs, truth = synthetic_predictions(labels, multilabel, seed)
    patients = [f"p{i // 2}" for i in range(N_IMAGES)]
    found = Collected(
        probs=[probs],
        labels=[truth],
        patient_ids=patients,
        paths=[f"{i}.png" for i in range(N_IMAGES)],
        metas=[
            SampleMeta("s", f"{i}.png", patients[i], view="PA", original_size=(SIZE, SIZE + i % 3))
            for i in range(N_IMAGES)
        ],
        maps={"lesions": MapSet(), f"{REGION_REQUEST}lungs": MapSet(), "gaze": MapSet()},
    )
    for i in range(N_IMAGES):
        heat = rng.random((8, 8))
        for k in np.flatnonzero(truth[i] == 1):
            lesion = disk(rng, 4)
            found.maps["lesions"].maps.append(heat)
            found.maps["lesions"].truth.append(lesion)
            found.maps["lesions"].labels.append(labels[k])
            found.maps["lesions"].patients.append(patients[i])
            found.maps["lesions"].images.append(i)
        found.maps[f"{REGION_REQUEST}lungs"].maps.append(heat)
        found.maps[f"{REGION_REQUEST}lungs"].truth.append(disk(rng, 10))
        found.maps[f"{REGION_REQUEST}lungs"].patients.append(patients[i])
        found.maps["gaze"].maps.append(heat)
        found.maps["gaze"].truth.append((rng.random((SIZE, SIZE)), rng.uniform(0, SIZE, (5, 3))))
        found.maps["gaze"].patients.append(patients[i])
    return found


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_every_interval_of_a_recipes_evaluation_contains_its_estimate_or_is_marked(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    labels, multilabel = raw["data"]["labels"], raw.get("task", "multilabel") == "multilabel"
    config = EvaluationConfig.model_validate(raw.get("evaluation", {})).model_copy(update={"n_boot": 200})
    val = synthetic_pass(labels, multilabel, seed=1)
    points = choose_operating_points(
        config.operating_point, val.prob_matrix, val.label_matrix, labels, multilabel=multilabel
    )
    metrics = evaluation_sections(synthetic_pass(labels, multilabel), labels, multilabel, config, points)
    assert {"classification", "shortcuts", "localization", "saliency"} <= metrics.keys()
    assert set(metrics["shortcuts"]["per_label"]) == set(labels)

    shown = list(intervals(metrics))
    assert len(shown) > 30
    for entry, key in shown:
        value, low, high = entry[key], entry[f"{key}_ci_low"], entry[f"{key}_ci_high"]
        if value is None or low is None or high is None:
            continue
        excluded = not low <= value <= high
        assert entry.get(f"{key}{EXCLUDES_ESTIMATE}", False) == excluded, key
        assert section_cell(entry, key).endswith(MARK) == excluded, key

    classification = metrics["classification"]
    assert classification["thin_labels"] == [labels[-1]]
    assert labels[-1] not in classification["macro_labels"]
    assert classification["per_label"][labels[-1]]["thin"] is True
    assert classification["operating_point"]["chosen_on"] == (
        None if config.operating_point.rule == "fixed" else "val"
    )
    notes = evaluation_notes(metrics, points, config.explain)
    write_report(tmp_path, recipe.stem, metrics, {}, n_images=N_IMAGES, notes=notes)
    report = (tmp_path / "report.md").read_text()
    assert f"| {labels[-1]} (thin) |" in report
    assert points.describe() in report and "every bootstrap resample" in report
    assert "chance level" in report


def test_the_evaluation_names_the_auc_judd_draws_and_the_map_scaling_it_was_given(tmp_path):
    labels = ["nodule", "opacity"]
    config = EvaluationConfig(n_boot=20, auc_judd_draws=3, map_normalisation="minmax")
    val = synthetic_pass(labels, True, seed=1)
    points = choose_operating_points(
        config.operating_point, val.prob_matrix, val.label_matrix, labels, multilabel=True
    )
    metrics = evaluation_sections(synthetic_pass(labels, True), labels, True, config, points)
    assert metrics["saliency"]["auc_judd_mit_draws"] == 3
    write_report(tmp_path, "x", metrics, {}, n_images=N_IMAGES, map_scale=config.map_normalisation)
    assert "rescaled min-max" in (tmp_path / "report.md").read_text()
