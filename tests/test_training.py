"""Training end to end through the CLI: learning, export, resume after a kill, DDP, stage freezing, and
the data each stage trains on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import TINY_TRAINING, run_cli
from torch.utils.data import SequentialSampler

from radsight.config import DataConfig, SourceSpec, StageConfig, StageData, parse_recipe
from radsight.data.assemble import build_splits
from radsight.data.epoch_order import EpochOrder
from radsight.data.sample import collate
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.errors import ConfigError
from radsight.evaluate import collect
from radsight.methods import load_method
from radsight.methods.supervised import SupervisedClassifier
from radsight.metrics.classification import choose_thresholds
from radsight.train import operating_points_on_val, stage_loaders


def epochs_logged(run: Path) -> list[dict]:
    path = run / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_baseline_learns_the_phantom_task_and_exports(trained_model):
    log = epochs_logged(trained_model)
    assert [line["epoch"] for line in log] == list(range(8))
    assert log[-1]["train/loss"] < log[0]["train/loss"] - 0.05
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["classification"]["auroc_macro"] > 0.65
    assert metrics["classification"]["auroc_macro_ci_low"] < metrics["classification"]["auroc_macro"]
    assert metrics["localization"]["n_images"] > 0  # phantom lesions carry masks
    assert 0 < metrics["localization"]["lungs_attribution_share"] <= 1
    for name in ("model.safetensors", "config.json", "report.md", "report.html", "roc.png", "overlays.png"):
        assert (trained_model / name).is_file(), name
    assert "data:image/png;base64," in (trained_model / "report.html").read_text()


def test_thresholds_are_chosen_on_the_val_split_stored_and_applied_to_the_test_split(trained_model):
    stored = json.loads((trained_model / "operating_points.json").read_text())
    method, recipe = load_method(trained_model)
    assert method.operating_points.as_json() == stored
    val = build_splits(recipe.data, recipe.seed).val
    found = collect(method, val, 16, {})
    youden = choose_thresholds(found.prob_matrix, found.label_matrix, rule="youden")
    assert stored["rule"] == "youden" and stored["chosen_on"] == "val" and stored["n_images"] == len(val)
    assert [stored["thresholds"][name] for name in method.label_names] == pytest.approx(youden.tolist())
    section = json.loads((trained_model / "metrics.json").read_text())["classification"]
    assert section["operating_point"] == stored
    for name, entry in section["per_label"].items():
        assert entry["threshold"] == stored["thresholds"][name]
    report = (trained_model / "report.md").read_text()
    assert f"Thresholds were chosen on the val split ({len(val)} images) by Youden's index" in report
    assert "applied to the evaluated images and to every bootstrap resample" in report
    assert "chance level" in report  # the maps are set against their chance level in words


def test_exported_model_reloads_without_pickle_and_predicts_the_same(trained_model):
    method, recipe = load_method(trained_model)
    data = PhantomChestXray(4, size=(128, 128), seed=9, lesion_scale=1.5)
    batch = collate([data[i] for i in range(4)])
    again, _ = load_method(trained_model)
    with torch.inference_mode():
        assert torch.equal(method.predict(batch).probs, again.predict(batch).probs)
    assert recipe.data.image_size == (128, 128)


def test_linear_stage_trains_only_the_head():
    method = SupervisedClassifier(
        ["a", "b"], "multilabel", {"backbone": "tiny_cnn"}, [StageConfig(name="linear")]
    )
    method.set_stage("linear")
    batch = collate([PhantomChestXray(2, size=(64, 64), seed=0)[i] for i in range(2)])
    loss, _ = method.compute_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in method.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.head.parameters())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "radsight.cli", *args]


def _overrides(extra: list[str]) -> list[str]:
    return [item for override in [*TINY_TRAINING, *extra] for item in ("--set", override)]


def _last_checkpoint_epoch(run: Path) -> int | None:
    path = run / "stages" / "classify" / "last.ckpt"
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["epoch"])
    except Exception:  # being replaced right now; the next poll reads the new one
        return None


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_without_losing_finished_epochs(tmp_path, recipes_dir):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = _cli("train", str(recipes_dir / "baseline_cpu.yaml"), "--out", str(run), "--no-evaluate")
    args += _overrides(["stages.0.epochs=6", "data.sources.0.options.n=400"])
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (_last_checkpoint_epoch(run) is None or _last_checkpoint_epoch(run) < 1):
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = _last_checkpoint_epoch(run)
    assert saved is not None and saved < 5, "the run must be killed before its last epoch"
    killed = epochs_logged(run)
    subprocess.run(
        [*args, "--resume"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    resumed = [line for line in epochs_logged(run) if line["pid"] != killed[0]["pid"]]
    assert resumed[0]["epoch"] == saved + 1  # continues after the last saved epoch, not from scratch
    assert [line["epoch"] for line in resumed] == list(range(saved + 1, 6))
    assert (run / "stages" / "classify" / "done.json").is_file() and (run / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path, recipes_dir):
    run = tmp_path / "ddp"
    args = _cli("train", str(recipes_dir / "baseline_cpu.yaml"), "--out", str(run), "--no-evaluate")
    args += _overrides(
        ["stages.0.epochs=1", "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    )
    done = subprocess.run(
        args, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = epochs_logged(run)
    assert len(log) == 1 and log[0]["world_size"] == 2
    method, _ = load_method(run)
    assert method.num_classes == 2


def test_resume_without_an_earlier_run_is_a_clear_error(tmp_path, recipes_dir):
    result = run_cli(
        "train", recipes_dir / "baseline_cpu.yaml", "--out", tmp_path / "none", "--resume", expect=2
    )
    assert "nothing to resume" in result.output


def test_reusing_a_run_folder_needs_resume(trained_model, recipes_dir):
    result = run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", trained_model, expect=2)
    assert "already holds a run" in result.output


def _splits_and_method(stages: list[dict], method_class=SupervisedClassifier):
    data = DataConfig(
        sources=[SourceSpec(name="phantom", options={"n": 60, "size": [32, 32], "seed": 2})],
        labels=["nodule", "opacity"],
        image_size=(32, 32),
        batch_size=8,
        budget=2,
    )
    stage_configs = [StageConfig.model_validate(stage) for stage in stages]
    method = method_class(["nodule", "opacity"], "multilabel", {"backbone": "tiny_cnn"}, stage_configs)
    return build_splits(data, seed=0), method


def test_without_val_images_the_thresholds_fall_back_to_one_half_and_say_so():
    splits, method = _splits_and_method([{"name": "classify"}])
    recipe = parse_recipe(
        {"name": "x", "data": splits.data.model_dump(mode="json") | {"split": [0.8, 0.0, 0.2]}}
    )
    no_val = build_splits(recipe.data, seed=0)
    assert len(no_val.val) == 0
    points = operating_points_on_val(method, no_val, recipe)
    assert points.thresholds == {"nodule": 0.5, "opacity": 0.5} and points.chosen_on is None
    assert points.describe().startswith("The run has no val images to choose thresholds on")
    target = parse_recipe(
        {
            "name": "x",
            "data": splits.data.model_dump(mode="json"),
            "evaluation": {"operating_point": {"rule": "sensitivity", "value": 0.9}},
        }
    )
    chosen = operating_points_on_val(method, splits, target)
    found = collect(method, splits.val, 8, {})
    expected = choose_thresholds(found.prob_matrix, found.label_matrix, rule="sensitivity", value=0.9)
    assert chosen.chosen_on == "val" and list(chosen.thresholds.values()) == pytest.approx(expected.tolist())
    with pytest.raises(ConfigError, match="needs a target value"):
        parse_recipe(
            {
                "name": "x",
                "data": splits.data.model_dump(mode="json"),
                "evaluation": {"operating_point": {"rule": "sensitivity"}},
            }
        )


def test_a_stage_without_a_data_section_keeps_the_labelled_loaders():
    splits, method = _splits_and_method([{"name": "classify"}])
    train_loader, val_loader = stage_loaders(method, splits, "classify")
    assert train_loader.dataset.dataset is splits.train and val_loader.dataset is splits.val
    assert isinstance(train_loader.sampler, EpochOrder)
    assert isinstance(val_loader.sampler, SequentialSampler)
    assert train_loader.batch_size == val_loader.batch_size == 8


def test_a_stage_on_the_unlabelled_pool_sees_the_pools_images():
    splits, method = _splits_and_method(
        [{"name": "classify"}, {"name": "linear", "data": {"pool": "unlabelled"}}]
    )
    train_loader, val_loader = stage_loaders(method, splits, "linear")
    batches = list(train_loader)
    seen = sorted(meta.extra["index"] for batch in batches for meta in batch.meta)
    assert seen == splits.train_split and len(seen) > len(splits.indices["train"])
    assert all(batch.labels is None for batch in batches)
    assert val_loader.dataset is splits.val
    with pytest.raises(ValueError, match="needs labels"):
        method.compute_loss(batches[0])  # the supervised baseline cannot learn from that pool


class PretextFirst(SupervisedClassifier):
    """A method whose ``linear`` stage trains on the unlabelled pool unless its recipe says otherwise."""

    stage_data_defaults: ClassVar[dict[str, StageData]] = {
        "linear": StageData(pool="unlabelled", augment=False)
    }


def test_a_method_declares_a_default_pool_per_stage_and_a_recipe_overrides_it():
    splits, method = _splits_and_method([{"name": "linear"}, {"name": "classify"}], PretextFirst)
    assert method.stage_data("linear") == StageData(pool="unlabelled", augment=False)
    assert stage_loaders(method, splits, "classify")[0].dataset.dataset is splits.train
    assert len(stage_loaders(method, splits, "linear")[0].dataset) == len(splits.train_split)
    _, chosen = _splits_and_method([{"name": "linear", "data": {"pool": "labelled"}}], PretextFirst)
    assert chosen.stage_data("linear") == StageData(pool="labelled")
    assert stage_loaders(chosen, splits, "linear")[0].dataset.dataset is splits.train


def test_an_unknown_pool_names_the_stage_key():
    with pytest.raises(ConfigError, match=r"stages\.0\.data\.pool"):
        parse_recipe(
            {
                "name": "x",
                "data": {"sources": [{"name": "phantom"}], "labels": ["nodule"]},
                "stages": [{"name": "classify", "data": {"pool": "everything"}}],
            }
        )
