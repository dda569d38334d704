"""The CLI as a user runs it: evaluate, predict, compare, curve, data inspect, and one-line errors."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from conftest import TINY_TRAINING, run_cli
from PIL import Image
from pydicom.data import get_testdata_file

import radsight
from radsight.cli import app, explanation_methods
from radsight.data.sources import SOURCES
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.explain.names import METHODS
from radsight.folder_lock import LOCK_FILE
from radsight.report.cells import section_cell
from radsight.run_folder import RUN_ENTRIES, clear_run_folder


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
    flags = [item for option in options for item in ("--option", option)]
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


def test_set_on_evaluate_overrides_the_models_recipe_and_options_go_to_the_source(trained_model, tmp_path):
    out = tmp_path / "fixed"
    overrides = ["--set", "evaluation.min_class_count=100000", "--set", "evaluation.n_boot=20"]
    run_cli("evaluate", "--model", trained_model, "--out", out, *overrides)
    classification = json.loads((out / "metrics.json").read_text())["classification"]
    assert classification["n_boot"] == 20 and "sensitivity_at_threshold_macro" in classification
    assert all(entry["thin"] for entry in classification["per_label"].values())
    source = ["evaluate", "--model", trained_model, "--source", "phantom", "--out", out]
    refused = run_cli(*source, "--set", "n=12", expect=2)
    assert_one_line_error(refused.output, "--set n:", "data.* or evaluation.*", "--option key=value")
    refused = run_cli(*source, "--set", "model.backbone=resnet18", expect=2)
    assert_one_line_error(refused.output, "--set model.backbone:")
    refused = run_cli(*source, "--option", "n", expect=2)
    assert_one_line_error(refused.output, "--option expects key=value, got 'n'")
    refused = run_cli(*source, "--option", "n=8", "--region", "lungs=", expect=2)
    assert_one_line_error(refused.output, "--region expects NAME or NAME=MASK,MASK, got 'lungs='")


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


def test_compare_two_runs_on_the_same_test_set(trained_model, tmp_path, monkeypatch):
    second = tmp_path / "second"
    run_cli("evaluate", "--model", trained_model, "--out", second, "--n-boot", "100")
    out = tmp_path / "cmp"
    monkeypatch.setenv("COLUMNS", "250")
    printed = run_cli("compare", trained_model, second, "--out", out, "--n-boot", "200").output
    result = json.loads((out / "compare.json").read_text())
    test = result["paired_tests"][0]
    assert test["difference"] == pytest.approx(0.0) and test["p_value"] == pytest.approx(1.0)
    assert "Paired bootstrap tests" in (out / "compare.md").read_text()
    # the terminal gets tables, not the Markdown source
    assert "|---|" not in printed and "paired bootstrap tests against the first" in printed
    lines = printed.splitlines()
    for row in result["runs"]:
        cells = [row["run"], section_cell(row, "auroc_macro"), section_cell(row, "ece")]
        assert any(all(cell in line for cell in cells) for line in lines), row["run"]
    assert any(str(second) in line and "1.0000" in line for line in lines)  # the test's p value


@pytest.mark.slow
def test_label_efficiency_curve_scores_every_run_on_the_same_test_images(recipes_dir, tmp_path):
    overrides = [item for o in [*TINY_TRAINING, "stages.0.epochs=2"] for item in ("--set", o)]
    run_cli(
        "curve",
        recipes_dir / "baseline_cpu.yaml",
        "--out",
        tmp_path,
        "--budgets",
        "5,15",
        "--seeds",
        "2",
        *overrides,
    )
    payload = json.loads((tmp_path / "curve.json").read_text())
    points = payload["arms"]["baseline_cpu"]
    assert [p["labels_per_class"] for p in points] == [5, 15]
    assert all(p["value"] is not None for p in points)
    assert (tmp_path / "curve.png").stat().st_size > 0
    runs = {(b, s): tmp_path / "baseline_cpu" / f"b{b}-s{s}" for b in (5, 15) for s in (0, 1)}
    tested = {arm: _scored_paths(run) for arm, run in runs.items()}
    assert len(set(tested.values())) == 1 and len(tested[5, 0]) == 48  # one test set: 20% of 240
    splits = {arm: json.loads((run / "splits.json").read_text()) for arm, run in runs.items()}
    for seed in (0, 1):
        assert set(splits[5, seed]["train"]) < set(splits[15, seed]["train"])  # nested budgets
    assert splits[5, 0]["train"] != splits[5, 1]["train"]  # another draw of the labels per seed
    for point in points:
        counts = [len(splits[point["labels_per_class"], s["seed"]]["train"]) for s in point["seeds"]]
        assert [s["labelled_images"] for s in point["seeds"]] == counts
        assert point["labelled_images_mean"] == pytest.approx(np.mean(counts))
    recorded = {
        yaml.safe_load((run / "recipe.yaml").read_text())["data"]["split_seed"] for run in runs.values()
    }
    assert recorded == {0}  # the recipe's seed, written into every run folder


def _scored_paths(run: Path) -> frozenset[str]:
    return frozenset(row["path"] for row in json.loads((run / "image_scores.json").read_text())["rows"])


def test_curve_arms_keep_the_recipes_split_and_vary_the_draw_and_training_seed(recipes_dir):
    from radsight.config import load_recipe
    from radsight.data.assemble import build_splits
    from radsight.studies.curve import arm_overrides

    recipe = recipes_dir / "baseline_cpu.yaml"
    small = ["data.sources.0.options={n: 120, size: [32, 32], seed: 1}", "data.image_size=[32, 32]"]
    base = load_recipe(recipe, [*small, "seed=7"])
    arms = [load_recipe(recipe, [*small, "seed=7", *arm_overrides(base, 5, seed)]) for seed in (0, 1)]
    assert [arm.seed for arm in arms] == [0, 1] and {arm.data.split_seed for arm in arms} == {7}
    assert [arm.data.budget_seed for arm in arms] == [0, 1] and {arm.data.budget for arm in arms} == {5}
    splits = [build_splits(arm.data, arm.seed).indices for arm in arms]
    assert splits[0]["test"] == splits[1]["test"] == build_splits(base.data, 7).indices["test"]
    assert splits[0]["train"] != splits[1]["train"]


def test_data_inspect_on_real_nih(data_root, tmp_path):
    run_cli("data", "inspect", "--source", "nih", "--root", data_root / "nih-cxr14", "--out", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 199 and summary["labels"]["Pneumonia"]["positive"] == 163
    assert 0 < summary["coverage"]["boxes"] < 1
    assert Image.open(tmp_path / "contact_sheet.png").size[0] > 512


def test_data_inspect_on_phantoms_counts_gaze(tmp_path):
    run_cli(
        "data", "inspect", "--source", "phantom", "--option", "n=12", "--out", tmp_path, "--max-images", "4"
    )
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


def test_train_without_a_test_split_only_when_nothing_is_evaluated(recipes_dir, tmp_path, caplog):
    tiny = [
        "model.backbone=tiny_cnn",
        "data.sources.0.options={n: 30, size: [32, 32]}",
        "data.image_size=[32, 32]",
        "stages.0.epochs=1",
        "trainer.progress_bar=false",
        "trainer.threads=1",
        "data.split=[0.8, 0.2, 0.0]",
    ]
    flags = [item for override in tiny for item in ("--set", override)]
    recipe = recipes_dir / "baseline_cpu.yaml"
    refused = run_cli("train", recipe, "--out", tmp_path / "refused", *flags, expect=2)
    assert_one_line_error(refused.output, "no test split to evaluate on", "train with --no-evaluate")
    assert not (tmp_path / "refused").exists()
    with caplog.at_level(logging.INFO, logger="radsight.threads"):
        run_cli("train", recipe, "--out", tmp_path / "run", *flags, "--no-evaluate")
    assert "torch threads: 1 (trainer.threads)" in caplog.messages
    assert json.loads((tmp_path / "run" / "splits.json").read_text())["test"] == []
    assert (tmp_path / "run" / "model.safetensors").is_file() and not (
        tmp_path / "run" / "metrics.json"
    ).exists()


def _manifest(tmp_path: Path, rows: str, header: str = "path,patient_id,nodule") -> Path:
    Image.fromarray(np.add.outer(np.arange(40), np.arange(50)).astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "data.csv").write_text(f"{header}\n{rows}\n")
    return tmp_path


def _refused_on_manifest(root: Path, *command: object):
    """Run a command on the manifest at ``root`` (label column ``nodule``), expecting a clean refusal."""
    csv, out = f"csv={root / 'data.csv'}", root / "o"
    options = ["--source", "manifest", "--root", root, "--option", csv, "--option", "label_columns=[nodule]"]
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
        "--option",
        "views=[Nonexistent]",
        "--out",
        tmp_path,
        expect=2,
    )
    assert_one_line_error(result.output, "covid", "no samples left after filtering")


# --- start-up, help, version, run folders ------------------------------------------------------------

PROBE = """
import json, sys
from typer.testing import CliRunner
from radsight.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(name for name in ("torch", "torchvision", "lightning", "timm") if name in sys.modules)
print(json.dumps({"exit": result.exit_code, "output": result.output, "heavy": heavy}))
"""
"""Run the CLI in a fresh interpreter and report its exit code, its output and the heavy packages that
were imported by then."""


def probe(cwd: Path, *args: object) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", PROBE, *map(str, args)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_wrong_paths_and_arguments_are_answered_before_torch_is_imported(tmp_path):
    fake = tmp_path / "model"  # passes the folder check; its weights would never load
    fake.mkdir()
    (fake / "config.json").write_text('{"format": 1}')
    (fake / "model.safetensors").touch()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    missing_model = tmp_path / "MISSING"
    not_a_model = (
        f"error: {missing_model}: not a radsight model folder (needs model.safetensors and config.json)\n"
    )
    cases = [
        (("predict", "--model", missing_model, "x.png", "--out", "o"), not_a_model),
        (("predict", "--model", fake, "x.png", "--out", "o"), "error: x.png: file not found\n"),
        (("explain", "--model", fake, "x.png", "--out", "o"), "error: x.png: file not found\n"),
        (
            ("listen", "--model", fake, "--port", "11112", "--forward", "PACS:104"),
            "error: --forward expects AE@HOST:PORT (e.g. PACS@10.0.0.5:104), got 'PACS:104'\n",
        ),
        (("evaluate", "--model", missing_model, "--out", "o"), not_a_model),
        (
            ("compare", fake, missing_model, "--out", "o"),
            f"error: {fake}: no metrics.json and image_scores.json here (evaluate the run first)\n",
        ),
        (("curve", "missing.yaml", "--out", "o"), "error: missing.yaml: file not found\n"),
        (("glam-compare", "--glam", missing_model, "--out", "o"), not_a_model),
        (
            ("demo", "--out", tmp_path / "mine", "--force"),
            f"error: {tmp_path / 'mine'}: not a radsight run folder (no recipe.yaml); "
            "--force only starts a run over\n",
        ),
    ]
    for args, expected in cases:
        answer = probe(tmp_path, *args)
        assert (answer["exit"], answer["output"], answer["heavy"]) == (2, expected, []), args
    for args in [("--help",), ("predict", "--help"), ("--version",)]:
        answer = probe(tmp_path, *args)
        assert (answer["exit"], answer["heavy"]) == (0, []), args
    answer = probe(tmp_path, "predict", "--model", fake)  # a usage error: neither files nor a PACS study
    assert answer["exit"] == 2 and answer["heavy"] == []
    assert answer["output"] == "error: predict needs files and --out (or --pacs URL --study UID)\n"


def _command_paths() -> list[list[str]]:
    group = typer.main.get_command(app)
    paths = [[]]
    for name, command in group.commands.items():
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


def test_help_texts_name_values_plainly():
    paths = _command_paths()
    assert ["data", "inspect"] in paths and ["predict"] in paths
    for path in paths:
        text = run_cli(*path, "--help").output
        assert "``" not in text, path  # reST markup
        assert not re.search(r"<[a-zA-Z][\w\[\], ]*>", text), (path, text)  # typer's <path>, <list[str]>
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage
    predict = run_cli("predict", "--help").output
    assert "FILE..." in predict and "--refuse-foreign" in predict
    for command in (["evaluate"], ["data", "inspect"]):
        help_text = " ".join(run_cli(*command, "--help").output.replace("│", " ").split())
        assert ", ".join(SOURCES) in help_text, command


def test_version():
    assert run_cli("--version").output == f"radsight {radsight.__version__}\n"


def test_demo_resume_and_force_are_checked_before_training(tmp_path):
    refused = run_cli("demo", "--out", tmp_path / "empty", "--resume", expect=2)
    assert_one_line_error(refused.output, "nothing to resume (no recipe.yaml from an earlier run)")
    refused = run_cli("demo", "--out", tmp_path / "x", "--resume", "--force", expect=2)
    assert_one_line_error(refused.output, "--resume continues the run", "pass one of them")
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: earlier\n")
    refused = run_cli("demo", "--out", run, expect=2)
    assert_one_line_error(
        refused.output, "already holds a run: pass --resume to continue it, --force to start"
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused = run_cli("demo", "--out", mine, "--force", expect=2)
    assert_one_line_error(refused.output, "not a radsight run folder")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_clearing_a_run_folder_keeps_what_radsight_did_not_write(tmp_path):
    for name in ("recipe.yaml", "metrics.json", "report.md", "notes.txt", "stages/classify/last.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "my_scans").mkdir()
    (tmp_path / "my_scans" / "a.png").write_text("x")
    assert clear_run_folder(tmp_path) == ["recipe.yaml", "stages", "metrics.json", "report.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_scans", "notes.txt"]


def test_the_run_entries_cover_everything_a_run_writes(trained_model):
    """All but the folder's lock file, which --force keeps (another process may be waiting on it)."""
    written = {p.name for p in trained_model.iterdir()} - {LOCK_FILE}
    assert "input_profile.json" in written and written <= set(RUN_ENTRIES), written - set(RUN_ENTRIES)


@pytest.mark.slow
def test_force_starts_a_run_over_and_keeps_the_users_files(trained_model, recipes_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_model, run)
    (run / "notes.txt").write_text("mine")
    overrides = [item for o in [*TINY_TRAINING, "stages.0.epochs=1"] for item in ("--set", o)]
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", run, "--force", "--no-evaluate", *overrides)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in log] == [0]  # trained afresh: one epoch, not the earlier eight + 1
    assert json.loads((run / "stages" / "classify" / "done.json").read_text())["epochs"] == 1
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "metrics.json").exists()  # the earlier run's evaluation went with it
