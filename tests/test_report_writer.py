"""The report names the conventions behind its map scores, in Markdown and HTML alike."""

from __future__ import annotations

from pathlib import Path

from radsight.report.writer import conventions, write_report


def test_report_names_the_map_scale_and_the_auc_judd_and_nss_conventions(tmp_path: Path) -> None:
    metrics = {
        "classification": {"auroc": 0.9},
        "saliency": {"auc_judd": 0.8, "auc_judd_mit": 0.82, "auc_judd_mit_draws": 10, "nss": 1.2},
    }
    md_path, html_path = write_report(tmp_path, "run", metrics, {}, n_images=3)
    line = conventions(metrics)
    assert line is not None and line in md_path.read_text()
    assert "each map divided by its maximum" in line and "averages 10 seeded draws" in line
    assert "below 1e-07" in line and "sample standard deviation" in line and "counts once" in line
    assert "auc_judd_mit" in html_path.read_text() and "averages 10 seeded draws" in html_path.read_text()
    assert "rescaled min-max" in conventions({"localization": {"dice": 0.5}}, "minmax")
    assert "auc_judd" not in conventions({"localization": {"dice": 0.5}})
    assert conventions({"classification": {"auroc": 0.9}}) is None  # no map scores, nothing to name
