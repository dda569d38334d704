"""The CLI as a user runs it: evaluate, predict, compare, curve, data inspect, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAINING, run_cli
from PIL import Image
from pydicom.data import get_testdata_file

from radsight.cli import explanation_methods
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.explain.names import METHODS


def assert_one_line_error(output: str, *fragments: str) -> None:
    assert "Traceback" not in output
    assert output.strip().startswith("error:") or "error:" in output
    for fragment in fragments:
        assert fragment in output, output


def test_evaluate_reproduces_the_training_metrics(trained_model, tmp_path):
    run_cli("evaluate", "--model", trained_model, "--out", tmp_path, "--n-boot", "200")
    again = json.loads((tmp_path / "metrics.json").read_text())["classification"]
    first = json.loads((trained_model / "metrics.json").read_text())["classification"]
    assert again["auroc_macro"] == pytest.approx(first["auroc_macro"])
    assert set(again["per_label"]) == {"nodule", "opacity"}
    for name in ("report.md", "report.html", "roc.png", "pr.png", "reliability.png", "overlays.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_evaluate_on_a_source_leaves_out_the_patients_the_model_trained_on(trained_model, tmp_path):
    # the phantoms the model was trained on, as an outside source: only its test patients remain
    options = ["n=240", "size=[128, 128]", "seed=1", "lesion_scale=1.5"]
    flags = [item for option in options for item in ("--set", option)]
    run_cli("evaluate", "--model", trained_model, "--source", "phantom", *flags, "--out", tmp_path)
    again = json.loads((tmp_path / "metrics.json").read_text())["classification"]
    first = json.loads((trained_model / "metrics.json").read_text())["classification"]
    patients = json.loads((trained_model / "patients.json").read_text())
    assert not set(patients["test"]) & set(patients["train"] + patients["val"])
    assert (
        again["n_images"]
        == first["n_images"]
        == len(json.loads((trained_model / "splits.json").read_text())["test"])
    )
    assert again["n_patients"] == len(patients["test"])
    assert again["auroc_macro"] == pytest.approx(first["auroc_macro"])
    assert "images of training patients left out" in (tmp_path / "report.md").read_text()
    # another source is scored at the thresholds chosen on the model's val split, not at its own
    stored = json.loads((trained_model / "operating_points.json").read_text())
    assert again["operating_point"] == stored and stored["chosen_on"] == "val"
    for name, entry in again["per_label"].items():
        assert entry["threshold"] == stored["thresholds"][name]
        assert entry["sensitivity_at_threshold"] == pytest.approx(
            first["per_label"][name]["sensitivity_at_threshold"]
        )


def test_predict_png_and_real_dicom(trained_model, tmp_path):
    png = tmp_path / "phantom.png"
    image = PhantomChestXray(1, size=(150, 120), seed=3)[0].image[0].numpy()
    Image.fromarray((image * 255).astype(np.uint8)).save(png)
    dicom = Path(get_testdata_file("RG1_UNCR.dcm"))
    out = tmp_path / "out"
    run_cli("predict", "--model", trained_model, png, dicom, "--out", out)
    result = json.loads((out / "predictions.json").read_text())
    assert [Path(f["path"]).name for f in result["files"]] == ["phantom.png", "RG1_UNCR.dcm"]
    thresholds = json.loads((trained_model / "operating_points.json").read_text())["thresholds"]
    assert result["operating_point"]["thresholds"] == thresholds
    for row in result["files"]:
        assert set(row["probabilities"]) == {"nodule", "opacity"}
        assert all(0.0 <= p <= 1.0 for p in row["probabilities"].values())
        assert row["positive"] == {k: p >= thresholds[k] for k, p in row["probabilities"].items()}
    # the overlay is drawn in the file's own frame (the 1955 x 1841 radiograph fits the 2048 limit)
    assert Image.open(out / "phantom.overlay.png").size == (120, 150)
    assert Image.open(out / "RG1_UNCR.overlay.png").size == (1841, 1955)


def test_explain_compares_methods_on_a_file_with_faithfulness_scores(trained_model, tmp_path):
    png = tmp_path / "phantom.png"
    sample = PhantomChestXray(1, size=(128, 128), seed=5, lesion_scale=1.5)[0]
    Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(png)
    out = tmp_path / "out"
    run_cli(
        "explain",
        "--model",
        trained_model,
        png,
        "--out",
        out,
        "--methods",
        "gradcam,hirescam",
        "--steps",
        "8",
    )
    result = json.loads((out / "explain.json").read_text())
    row = result["files"][0]
    assert row["target"] in {"nodule", "opacity"} and 0 <= row["probability"] <= 1
    for how in ("gradcam", "hirescam"):
        scores = row["methods"][how]
        assert 0 <= scores["deletion_auc"] <= 1 and 0 <= scores["insertion_auc"] <= 1
        assert result["mean"][how] == scores  # one file: the mean is that file's score
    with Image.open(out / "phantom.explain.png") as picture:
        assert picture.size[0] > 2 * 128  # two methods side by side
    refused = run_cli(
        "explain", "--model", trained_model, png, "--out", out, "--methods", "gradcam,lime", expect=2
    )
    assert_one_line_error(refused.output, "unknown explanation method(s) ['lime']")
    refused = run_cli("predict", "--model", trained_model, png, "--out", out, "--explain", "gradcm", expect=2)
    assert_one_line_error(refused.output, "unknown explanation method(s) ['gradcm']")


def test_compare_two_runs_on_the_same_test_set(trained_model, tmp_path):
    second = tmp_path / "second"
    run_cli("evaluate", "--model", trained_model, "--out", second, "--n-boot", "100")
    out = tmp_path / "cmp"
    run_cli("compare", trained_model, second, "--out", out, "--n-boot", "200")
    result = json.loads((out / "compare.json").read_text())
    test = result["paired_tests"][0]
    assert test["difference"] == pytest.approx(0.0) and test["p_value"] == pytest.approx(1.0)
    assert "Paired bootstrap tests" in (out / "compare.md").read_text()


@pytest.mark.slow
def test_label_efficiency_curve(recipes_dir, tmp_path):
    overrides = [item for o in [*TINY_TRAINING, "stages.0.epochs=2"] for item in ("--set", o)]
    run_cli(
        "curve",
        recipes_dir / "baseline_cpu.yaml",
        "--out",
        tmp_path,
        "--budgets",
        "5,15",
        "--seeds",
        "1",
        *overrides,
    )
    payload = json.loads((tmp_path / "curve.json").read_text())
    points = payload["recipes"]["baseline_cpu"]
    assert [p["n_labels"] for p in points] == [5, 15]
    assert all(p["value"] is not None for p in points)
    assert (tmp_path / "curve.png").stat().st_size > 0
    split = json.loads((tmp_path / "baseline_cpu" / "b5-s0" / "splits.json").read_text())
    bigger = json.loads((tmp_path / "baseline_cpu" / "b15-s0" / "splits.json").read_text())
    assert split["test"] == bigger["test"] and set(split["train"]) < set(bigger["train"])


def test_data_inspect_on_real_nih(data_root, tmp_path):
    run_cli("data", "inspect", "--source", "nih", "--root", data_root / "nih-cxr14", "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 199 and summary["labels"]["Pneumonia"]["positive"] == 163
    assert 0 < summary["coverage"]["boxes"] < 1
    assert Image.open(tmp_path / "contact_sheet.png").size[0] > 512


def test_data_inspect_on_phantoms_counts_gaze(tmp_path):
    run_cli("data", "inspect", "--source", "phantom", "--set", "n=12", "--out", tmp_path, "--max-images", "4")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["coverage"]["fixations"] == 1.0 and summary["coverage"]["report"] == 1.0


# --- bad input: one line naming the file and the problem, exit code 2 -------------------------------


def test_truncated_png_in_predict(trained_model, tmp_path):
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8) + 7).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    result = run_cli(
        "predict", "--model", trained_model, tmp_path / "cut.png", "--out", tmp_path / "o", expect=2
    )
    assert_one_line_error(result.output, "cut.png", "corrupt")


def test_dicom_without_pixels_in_predict(trained_model, tmp_path):
    import pydicom

    dataset = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    del dataset.PixelData
    dataset.save_as(tmp_path / "nopixels.dcm")
    result = run_cli(
        "predict", "--model", trained_model, tmp_path / "nopixels.dcm", "--out", tmp_path / "o", expect=2
    )
    assert_one_line_error(result.output, "nopixels.dcm", "no pixel data")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.labels=[nodule,Pneumothorax]", ("unknown label name(s) ['Pneumothorax']", "nodule")),
        ("data.batchsize=4", ("baseline_cpu.yaml", "data.batchsize")),  # a typo is refused, not ignored
    ],
)
def test_bad_recipe_values_are_refused(recipes_dir, tmp_path, override, expected):
    recipe = recipes_dir / "baseline_cpu.yaml"
    result = run_cli("train", recipe, "--out", tmp_path / "r", "--set", override, expect=2)
    assert_one_line_error(result.output, *expected)


def test_explanation_methods_are_named_from_one_list(recipes_dir, tmp_path):
    names = [f"'{name}'" for name in METHODS]
    listed = f"{', '.join(names[:-1])} or {names[-1]}"  # how the recipe check lists the choices
    recipe = recipes_dir / "baseline_cpu.yaml"
    result = run_cli("train", recipe, "--out", tmp_path, "--set", "evaluation.explain=lime", expect=2)
    assert_one_line_error(result.output, "evaluation.explain", listed)
    for command in ("explain", "predict"):
        help_text = " ".join(run_cli(command, "--help").output.replace("│", " ").split())
        assert ", ".join(METHODS) in help_text
    assert explanation_methods(",".join(METHODS)) == list(METHODS)


def _manifest(tmp_path: Path, rows: str, header: str = "path,patient_id,nodule") -> Path:
    Image.fromarray(np.full((40, 50), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "data.csv").write_text(f"{header}\n{rows}\n")
    return tmp_path


def _refused_on_manifest(root: Path, *command: object):
    """Run a command on the manifest at ``root`` (label column ``nodule``), expecting a clean refusal."""
    csv, out = f"csv={root / 'data.csv'}", root / "o"
    options = ["--source", "manifest", "--root", root, "--set", csv, "--set", "label_columns=[nodule]"]
    return run_cli(*command, *options, "--out", out, expect=2)


def test_manifest_missing_column(tmp_path):
    root = _manifest(tmp_path, "a.png,1", header="patient_id,nodule")
    result = _refused_on_manifest(root, "data", "inspect")
    assert_one_line_error(result.output, "data.csv", "missing required column", "path")


def test_box_outside_the_image_in_evaluate(trained_model, tmp_path):
    rows = 'a.png,p1,1,"[[10, 10, 80, 20, ""nodule""]]"'
    root = _manifest(tmp_path, rows, header="path,patient_id,nodule,boxes")
    result = _refused_on_manifest(root, "evaluate", "--model", trained_model)
    assert_one_line_error(result.output, "a.png", "outside the 50x40 image")


def test_mask_of_another_size_in_evaluate(trained_model, tmp_path):
    Image.fromarray(np.ones((10, 10), dtype=np.uint8) * 255).save(tmp_path / "m.png")
    root = _manifest(tmp_path, "a.png,p1,1,m.png", header="path,patient_id,nodule,mask_nodule")
    result = _refused_on_manifest(root, "evaluate", "--model", trained_model)
    assert_one_line_error(result.output, "m.png", "differs from its image")


def test_empty_dataset_after_filtering(data_root, tmp_path):
    result = run_cli(
        "data",
        "inspect",
        "--source",
        "covid",
        "--root",
        data_root / "covid-chestxray",
        "--set",
        "views=[Nonexistent]",
        "--out",
        tmp_path,
        expect=2,
    )
    assert_one_line_error(result.output, "covid", "no samples left after filtering")
