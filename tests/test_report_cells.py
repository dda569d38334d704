"""One table-cell formatter: a value with its interval, and one spelling of undefined in every report."""

from __future__ import annotations

import numpy as np

from radsight.metrics.bootstrap import Replicates, with_ci
from radsight.report import compare, notes, writer
from radsight.report.cells import EXCLUDES_ESTIMATE, UNDEFINED, ci_cell, number, section_cell
from radsight.studies import ablation, glam_comparison


def test_cells_by_hand():
    assert ci_cell(0.81234, 0.7, 0.9) == "0.812 [0.700, 0.900]"
    assert ci_cell(0.81234, 0.7, 0.9, digits=2) == "0.81 [0.70, 0.90]"
    assert ci_cell(0.5, None, None) == ci_cell(0.5, 0.1, None) == "0.500"  # no interval: the value alone
    assert ci_cell(None, None, None) == "undefined" == UNDEFINED
    assert number(12) == "12" and number("gradcam") == "gradcam" and number(0.04567, 4) == "0.0457"
    section = {"auroc": 0.75, "auroc_ci_low": 0.6, "auroc_ci_high": 0.875, "ece": None}
    assert section_cell(section, "auroc") == "0.750 [0.600, 0.875]"
    assert section_cell(section, "ece") == section_cell(section, "missing") == "undefined"


def undefined_cells(text: str) -> int:
    for other in ("n/a", "nan", "None"):
        assert other not in text, text
    return text.count(UNDEFINED)


def test_every_report_spells_an_undefined_value_the_same():
    none_ci = {"_ci_low": None, "_ci_high": None}
    defined = {"auroc_macro": 0.8, "auroc_macro_ci_low": 0.7, "auroc_macro_ci_high": 0.9}
    undefined = {"auroc_macro": None, **{f"auroc_macro{k}": v for k, v in none_ci.items()}}

    assert [cell for _, cell in writer.summary_rows({**undefined, "n_images": 9})] == ["undefined", "9"]

    test = {"run": "b", "metric": "auroc_macro", "difference": None, "p_value": None}
    runs = [{"run": "a", **defined}, {"run": "b", **undefined}]
    text = compare.render_markdown({"n_images": 9, "runs": runs, "paired_tests": [test]})
    assert undefined_cells(text) == 4 + 1 + 2  # auprc and ece of both runs, AUROC of b, Δ and p of b

    row = {"stages": ["classify:1"], "map_source": "gradcam", "n_empty_maps": 0, "n_images_with_gaze": 9}
    variants = {
        "staged": {**row, **defined, "gaze_cc": 0.2, "gaze_cc_ci_low": 0.1, "gaze_cc_ci_high": 0.3},
        "other": {
            **row,
            **undefined,
            "gaze_cc": None,
            "vs_reference": {"auroc_macro": {"difference": None, "p_value": None}},
        },
    }
    table = {
        "reference": "staged",
        "budget_epochs": 1,
        "n_test_images": 9,
        "n_boot": 10,
        "variants": variants,
        "descriptions": {},
    }
    assert undefined_cells(ablation.markdown(table, "t")) == 4  # AUROC, its Δ and p, gaze CC

    section = {key: None for key in glam_comparison.METRICS} | {"n_images": 3, "dice_best_threshold": None}
    result = {"test_images": 9, "rows": {"row": {"all": section}}, "relative_dice_gain": {}}
    assert undefined_cells(glam_comparison.markdown(result)) == 7  # six metrics and the threshold


def test_an_interval_that_misses_its_estimate_is_marked_in_json_and_in_every_cell():
    assert ci_cell(0.525, 0.555, 0.927) == "0.525 [0.555, 0.927]" + EXCLUDES_ESTIMATE
    assert ci_cell(0.555, 0.555, 0.927) == "0.555 [0.555, 0.927]"  # a bound equal to the value contains it
    replicates = Replicates(np.linspace(0.6, 0.9, 50), np.linspace(0.5, 0.6, 10))  # all above 0.525
    entry = with_ci("sensitivity", 0.525, replicates)
    assert entry["sensitivity_ci_low"] > 0.525 and entry["sensitivity_ci_excludes_estimate"] is True
    assert section_cell(entry, "sensitivity").endswith(EXCLUDES_ESTIMATE)
    inside = with_ci("sensitivity", 0.75, replicates)
    assert "sensitivity_ci_excludes_estimate" not in inside and not section_cell(
        inside, "sensitivity"
    ).endswith(EXCLUDES_ESTIMATE)
    # the flag is no column of its own; a thin label is marked after its name
    per_label = {"a": {"thin": True, **entry}, "b": {"thin": False, **inside}}
    header, rows = writer.per_label_rows({"per_label": per_label})
    assert header == ["label", "sensitivity"]
    assert [row[0] for row in rows] == ["a (thin)", "b"] and rows[0][1].endswith(EXCLUDES_ESTIMATE)


def test_the_report_says_whether_maps_beat_chance_and_which_labels_are_thin():
    def section(low: float, high: float) -> dict:
        return {
            "n_images": 9,
            "pointing_game": (low + high) / 2,
            "pointing_game_ci_low": low,
            "pointing_game_ci_high": high,
            "pointing_game_chance": 0.1,
        }

    (below,) = notes.localization_notes(section(0.0, 0.05), "gradcam")
    assert below.startswith("The gradcam maps do not agree with the lesion annotations: pointing game")
    assert "against a chance level of 0.100 (below chance)" in below and "Do not read the overlays" in below
    (level,) = notes.localization_notes(section(0.05, 0.2), "gradcam")
    assert "do not agree" in level and "(no different from chance)" in level
    (above,) = notes.localization_notes(section(0.4, 0.6), "native")
    assert above.startswith("The native maps agree with the lesion annotations better than chance")
    assert notes.localization_notes(None, "gradcam") == []

    classification = {
        "undefined_labels": ["x"],
        "thin_labels": ["c"],
        "min_class_count": 10,
        "macro_includes_thin": False,
        "macro_labels": ["a"],
        "per_label": {"a": {}, "c": {"n_positive": 2, "n_negative": 40}, "x": {}},
    }
    undefined, thin = notes.classification_notes(classification)
    assert undefined.endswith("left out of every average: x.")
    assert "c (2 positive, 40 negative)" in thin and "left out of the macro averages" in thin
    (_, asked) = notes.classification_notes(classification | {"macro_includes_thin": True})
    assert "averaged into the macro metrics" in asked
