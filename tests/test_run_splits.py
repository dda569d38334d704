"""A run's splits.json is read back: evaluating the model's own test split (seeded by its recipe) gives
exactly the training-time metrics, files that came or went since are one warning, and a stored image
that is gone is a one-line refusal, for evaluation and for --resume alike."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from radsight.data.sources.manifest import ManifestDataset
from radsight.data.sources.phantoms import PhantomChestXray

IMAGES = 40
SEED = 3


@dataclass
class Run:
    folder: Path
    data: Path
    recipe: Path
    overrides: list[str]

    @property
    def csv(self) -> Path:
        return self.data / "manifest.csv"

    def split(self, name: str) -> list[str]:
        """The stored image names (``manifest:<file>``) of one split."""
        stored = json.loads((self.folder / "splits.json").read_text())
        return [stored["images"][i] for i in stored[name]]

    def metrics(self) -> dict:
        return json.loads((self.folder / "metrics.json").read_text())


def write_dataset(folder: Path) -> Path:
    """40 phantom films as 8-bit PNGs, two per patient, in a manifest with two label columns."""
    folder.mkdir()
    phantoms = PhantomChestXray(IMAGES, size=(64, 64), seed=SEED, lesion_scale=1.5)
    rows = []
    for index in range(IMAGES):
        sample = phantoms[index]
        name = f"img{index:02d}.png"
        Image.fromarray((sample.image[0].numpy() * 255).astype(np.uint8)).save(folder / name)
        nodule, opacity = (int(v) for v in sample.labels.tolist())
        rows.append(
            {"path": name, "patient_id": sample.meta.patient_id, "nodule": nodule, "opacity": opacity}
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, recipes_dir: Path) -> Run:
    """A tiny supervised run with seed 3 on a manifest dataset of its own (tests edit and restore it)."""
    root = tmp_path_factory.mktemp("splits")
    data = write_dataset(root / "data")
    overrides = [
        f"data.sources=[{{name: manifest, root: {data}, options: {{label_columns: [nodule, opacity]}}}}]",
        "data.image_size=[64, 64]",
        "data.batch_size=8",
        "data.augment=false",
        "model.backbone=tiny_cnn",
        "stages.0.epochs=1",
        f"seed={SEED}",
        "evaluation.n_boot=50",
        "trainer.progress_bar=false",
    ]
    folder = root / "run"
    recipe = recipes_dir / "baseline_cpu.yaml"
    run_cli("train", recipe, "--out", folder, *[item for o in overrides for item in ("--set", o)])
    return Run(folder, data, recipe, overrides)


@pytest.fixture
def restored(run: Run) -> Iterator[Run]:
    """The run, with its dataset put back as it was after the test (its CSV and image files)."""
    csv = run.csv.read_text()
    images = {path.name for path in run.data.iterdir()}
    backup = run.data.parent / "backup"
    shutil.copytree(run.data, backup)
    yield run
    for path in run.data.iterdir():
        if path.name not in images:
            path.unlink()
    for name in images:
        shutil.copy2(backup / name, run.data / name)
    run.csv.write_text(csv)
    shutil.rmtree(backup)


def drop_rows(run: Run, images: list[str]) -> None:
    """Remove these images (``manifest:<file>``) from the dataset: the rows and the files."""
    files = [image.removeprefix("manifest:") for image in images]
    table = pd.read_csv(run.csv)
    table[~table["path"].isin(files)].to_csv(run.csv, index=False)
    for name in files:
        (run.data / name).unlink()


def split_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "splits.json" in r.getMessage()
    ]


def evaluate(run: Run, out: Path, expect: int = 0):
    return run_cli("evaluate", "--model", run.folder, "--out", out, expect=expect)


def test_evaluate_reproduces_the_training_metrics_exactly_with_the_recipe_seed(run, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    evaluate(run, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == run.metrics()
    assert split_warnings(caplog) == []


def test_the_bootstrap_seed_matters_so_the_test_above_can_fail(run, tmp_path):
    """Evaluating with seed 0, as ``radsight evaluate`` once did, moves the confidence intervals."""
    from radsight.data.assemble import build_splits
    from radsight.evaluate import evaluate as run_evaluation
    from radsight.methods import load_method

    method, recipe = load_method(run.folder)
    test = build_splits(recipe.data, recipe.seed, stored=run.folder / "splits.json", required=["test"]).test
    seeded_0 = run_evaluation(method, test, tmp_path, recipe.evaluation, title="seed 0", batch_size=8, seed=0)
    trained, again = run.metrics()["classification"], seeded_0["classification"]
    assert again["auroc_macro"] == trained["auroc_macro"]
    moved = [key for key in trained if key.endswith(("_ci_low", "_ci_high")) and again[key] != trained[key]]
    assert moved, "no confidence interval depends on the bootstrap seed"


def test_an_image_that_appeared_is_a_warning_and_the_stored_split_is_evaluated(restored, tmp_path, caplog):
    Image.open(restored.data / "img00.png").save(restored.data / "new.png")
    table = pd.read_csv(restored.csv)
    extra = pd.DataFrame([{"path": "new.png", "patient_id": "newcomer", "nodule": 1, "opacity": 0}])
    pd.concat([table, extra]).to_csv(restored.csv, index=False)
    caplog.set_level(logging.WARNING)
    evaluate(restored, tmp_path)
    (warning,) = split_warnings(caplog)
    assert "\n" not in warning
    assert "the split recomputed from the current files differs from the stored one" in warning
    assert "1 image(s) appeared (e.g. manifest:new.png)" in warning and warning.endswith(
        "using the stored split"
    )
    assert json.loads((tmp_path / "metrics.json").read_text()) == restored.metrics()


def test_a_training_image_that_vanished_is_a_warning_for_evaluation(restored, tmp_path, caplog):
    gone = restored.split("train")[:2]
    drop_rows(restored, gone)
    caplog.set_level(logging.WARNING)
    evaluate(restored, tmp_path)
    (warning,) = split_warnings(caplog)
    assert f"2 image(s) vanished (e.g. {gone[0]}, {gone[1]})" in warning
    assert json.loads((tmp_path / "metrics.json").read_text()) == restored.metrics()


def test_a_test_image_that_vanished_is_a_one_line_refusal(restored, tmp_path):
    gone = restored.split("test")[0]
    drop_rows(restored, [gone])
    result = evaluate(restored, tmp_path, expect=2)
    error = result.output.strip()
    assert error.startswith("error:") and "Traceback" not in error
    assert f"1 image(s) of the stored test split are no longer in the data (e.g. {gone})" in error
    assert "the run's split cannot be rebuilt" in error and str(restored.folder / "splits.json") in error
    assert not (tmp_path / "metrics.json").exists()


def test_resume_refuses_a_run_whose_training_images_vanished(restored):
    gone = restored.split("train")[0]
    drop_rows(restored, [gone])
    before = (restored.folder / "metrics.json").read_text()
    flags = [item for o in restored.overrides for item in ("--set", o)]
    result = run_cli("train", restored.recipe, "--out", restored.folder, *flags, "--resume", expect=2)
    assert f"1 image(s) of the stored train split are no longer in the data (e.g. {gone})" in result.output
    assert (restored.folder / "metrics.json").read_text() == before


def test_a_split_stored_without_image_names_is_recomputed_with_a_warning(run, tmp_path, caplog):
    """Runs written before splits.json named its images, or a model folder copied without it."""
    path = run.folder / "splits.json"
    stored = path.read_text()
    path.write_text(json.dumps({k: v for k, v in json.loads(stored).items() if k != "images"}))
    caplog.set_level(logging.WARNING)
    try:
        evaluate(run, tmp_path)
    finally:
        path.write_text(stored)
    assert split_warnings(caplog) == [f"{path}: no stored split with image names; the split is recomputed"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == run.metrics()


def test_image_names_are_unique_when_a_file_is_listed_twice(tmp_path):
    from radsight.data.assemble import LabelledUnion

    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "manifest.csv").write_text("path,patient_id,nodule\na.png,p1,1\na.png,p2,0\n")
    source = ManifestDataset(tmp_path, label_columns=["nodule"])
    union = LabelledUnion([source], ["mine"], ["nodule"])
    assert source.image_ids == ["a.png", "a.png"]
    assert union.image_ids == ["mine:a.png", "mine:a.png#2"]
