"""Report figures: valid PNGs of the expected size, and undefined labels handled explicitly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radsight.metrics.classification import classification_curves, confusion_matrix, reliability_diagram
from radsight.report import plots

PIXELS = (int(plots.SIZE[0] * plots.DPI), int(plots.SIZE[1] * plots.DPI))


@pytest.fixture(scope="module")
def curves() -> dict:
    rng = np.random.default_rng(0)
    labels = (rng.random((80, 3)) < 0.3).astype(float)
    labels[:, 2] = 0.0  # one class only: undefined
    probs = np.clip(0.4 * labels + 0.6 * rng.random((80, 3)), 0, 1)
    return classification_curves(
        probs, labels, ["Pneumonia", "Effusion", "Hernia"], np.arange(80) // 2, n_boot=50
    )


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == PIXELS
        image.verify()


def test_roc_pr_and_calibration_figures(curves, tmp_path):
    assert_png(plots.roc_curves(curves, tmp_path / "roc.png"))
    assert_png(plots.pr_curves(curves, tmp_path / "pr.png"))
    assert_png(plots.calibration_curve(curves["reliability"], tmp_path / "nested" / "calibration.png"))


def test_undefined_label_is_skipped_with_a_legend_note(curves, tmp_path, monkeypatch):
    drawn = {}

    def capture(figure, path):
        drawn["legend"] = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
        drawn["lines"] = len(figure.axes[0].lines)
        return Path(path)

    monkeypatch.setattr(plots, "_save", capture)
    plots.roc_curves(curves, tmp_path / "roc.png")
    assert f"Hernia: {plots.UNDEFINED}" in drawn["legend"]
    assert any(t.startswith("Pneumonia (AUROC") for t in drawn["legend"])
    assert drawn["lines"] == 2 + 1 + 1  # two curves, the empty legend handle, the chance diagonal


def test_a_figure_the_data_cannot_give_is_undrawable_and_nothing_is_written(curves, tmp_path):
    undefined = {"roc": {"Hernia": {"defined": False}}, "pr": {"Hernia": {"defined": False}}}
    with pytest.raises(plots.Undrawable, match="no label has both classes"):
        plots.roc_curves(undefined, tmp_path / "roc.png")
    with pytest.raises(plots.Undrawable, match="no label has both classes"):
        plots.pr_curves(undefined, tmp_path / "pr.png")
    unlabelled = reliability_diagram(np.full((4, 2), 0.5), np.full((4, 2), np.nan))
    with pytest.raises(plots.Undrawable, match="no image has an annotated label"):
        plots.calibration_curve(unlabelled, tmp_path / "reliability.png")
    with pytest.raises(plots.Undrawable, match="no recipe has a finished label budget"):
        plots.label_efficiency_curves({"baseline": []}, tmp_path / "curve.png")
    assert list(tmp_path.iterdir()) == []


def test_confusion_heatmap(tmp_path):
    rng = np.random.default_rng(1)
    matrix = confusion_matrix(rng.dirichlet(np.ones(3), 60), rng.integers(0, 3, 60))
    assert_png(plots.confusion_heatmap(matrix, ["normal", "benign", "malignant"], tmp_path / "cm.png"))
    with pytest.raises(ValueError, match="class names"):
        plots.confusion_heatmap(matrix, ["a", "b"], tmp_path / "bad.png")


def test_label_efficiency_curves(tmp_path):
    results = {
        "supervised": [
            {
                "labels_per_class": n,
                "value": 0.6 + 0.04 * i,
                "ci_low": 0.55 + 0.04 * i,
                "ci_high": 0.65 + 0.04 * i,
            }
            for i, n in enumerate([10, 30, 100, 300])
        ],
        "gaze_unet": [
            {"labels_per_class": n, "value": 0.65 + 0.03 * i} for i, n in enumerate([10, 30, 100, 300])
        ],
    }
    assert_png(plots.label_efficiency_curves(results, tmp_path / "efficiency.png"))
    with pytest.raises(ValueError, match="positive"):
        plots.label_efficiency_curves({"x": [{"labels_per_class": 0, "value": 0.5}]}, tmp_path / "bad.png")


def test_a_log_budget_axis_labels_plain_numbers_at_one_two_and_five():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    ax.plot([20, 60, 200, 600], [0.5, 0.6, 0.7, 0.8])
    plots.plain_log_x(ax)
    assert ax.xaxis.get_major_formatter()(100, 0) == "100"
    minor = ax.xaxis.get_minor_formatter()
    assert [minor(value, 0) for value in (20, 30, 50, 300, 500)] == ["20", "", "50", "", "500"]
