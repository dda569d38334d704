"""The report opens with a sentence of its main numbers, names its metrics for a reader with their
meaning, keeps its tables narrow enough for the page, and names the conventions behind its map scores."""

from __future__ import annotations

from pathlib import Path

from radsight.report.glossary import describe, headline
from radsight.report.writer import MAX_LABEL_COLUMNS, conventions, label_tables, write_report


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


def classification_metrics() -> dict:
    per_label = {
        "nodule": {"defined": True, "n_positive": 45, "n_negative": 75, "auroc": 0.75},
        "opacity": {"defined": True, "n_positive": 51, "n_negative": 69, "auroc": 0.9},
    }
    return {
        "classification": {
            "n_images": 120,
            "n_patients": 60,
            "n_labels_defined": 2,
            "undefined_labels": [],
            "auroc_macro": 0.825,
            "auroc_macro_ci_low": 0.78,
            "auroc_macro_ci_high": 0.9,
            "sensitivity_at_youden_macro": 0.9,
            "sensitivity_at_youden_macro_ci_low": 0.7,
            "sensitivity_at_youden_macro_ci_high": 1.0,
            "ece": 0.1,
            "per_label": per_label,
        }
    }


def test_report_opens_with_a_headline_sentence_of_the_main_numbers(tmp_path: Path) -> None:
    metrics = classification_metrics()
    expected = (
        "120 images of 60 patients evaluated for 2 labels (nodule, opacity). AUROC (mean over labels) 0.825 "
        "(95% CI 0.780 to 0.900); sensitivity at the Youden threshold (mean over labels) 0.900 "
        "(95% CI 0.700 to 1.000)."
    )
    assert headline(metrics, 120) == expected
    md_path, html_path = write_report(tmp_path, "baseline: test split", metrics, {}, n_images=120)
    assert md_path.read_text().splitlines()[2] == f"**{expected}**"
    assert f"<p class='headline'>{expected}</p>" in html_path.read_text()
    pointing = {"pointing_game": 0.5, "pointing_game_ci_low": 0.25, "pointing_game_ci_high": 0.75}
    maps_only = {"localization": pointing}
    assert headline(maps_only, 8) == "8 images evaluated. Pointing game 0.500 (95% CI 0.250 to 0.750)."


def test_metrics_have_human_names_and_a_meaning(tmp_path: Path) -> None:
    md = write_report(tmp_path, "run", classification_metrics(), {}, n_images=120)[0].read_text()
    assert "| labels with one class only | none | left out of every average |" in md
    assert "| AUROC (mean over labels) | 0.825 [0.780, 0.900] | chance a positive image scores above" in md
    assert "| calibration error (ECE) | 0.100 | gap between probability and observed frequency" in md
    for raw in ("n_labels_defined", "undefined_labels", "auroc_macro", "n_positive", "True"):
        assert raw not in md, raw
    assert describe("lungs_attention_ratio", ("lungs",)) == (
        "attention ratio, lungs",
        "evidence share over area share (1 = no preference)",
    )
    assert describe("dice_at_threshold", section="localization")[0] == "Dice at the map threshold"
    assert describe("f1_at_threshold_macro", section="classification")[0] == (
        "F1 at the operating point (mean over labels)"
    )
    assert describe("threshold", section="classification")[0] == "threshold"
    assert describe("threshold", section="localization")[0] == "map threshold"
    assert describe("pointing_game_chance")[0] == "pointing game, chance level"
    assert describe("some_new_score") == ("some new score", "")


def test_wide_per_label_tables_are_cut_into_tables_that_fit(tmp_path: Path) -> None:
    columns = [f"score_{i}" for i in range(12)]
    section = {"per_label": {"a": dict.fromkeys(columns, 0.5), "b": dict.fromkeys(columns, 0.25)}}
    tables = label_tables(section)
    assert [len(header) for header, _ in tables] == [1 + MAX_LABEL_COLUMNS, 1 + MAX_LABEL_COLUMNS, 1 + 2]
    assert [header[1] for header, _ in tables] == ["score 0", "score 5", "score 10"]
    assert all(rows[1][0] == "b" and rows[1][1] == "0.250" for _, rows in tables)
