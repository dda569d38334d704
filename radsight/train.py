"""Run a recipe: build data and method, train each stage in order with resumable checkpoints, export,
then evaluate on the test split the model never saw.

Layout of a run folder:
  recipe.yaml             the recipe as resolved (overrides applied)
  splits.json             train/val/test indices (by patient) and the image each index names; read back by
                          --resume and by evaluation of the run's own test split
  patients.json           the patient ids of each split (evaluation elsewhere leaves train/val ones out)
  stages/<stage>/last.ckpt    Lightning checkpoint after the latest finished epoch (for --resume)
  stages/<stage>/done.json    written when the stage has finished; its weights are in stage.safetensors
  train_log.jsonl         one line per finished epoch
  model.safetensors, config.json   the inference export
  input_profile.json      what the training images looked like (prediction warns about files unlike them)
  operating_points.json   per-label thresholds chosen on the val split's predictions after the last stage
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from radsight.channels_last import ChannelsLast
from radsight.checkpoints import AtomicCheckpointIO, export_model, load_weights, save_weights, write_json
from radsight.config import Recipe, TrainerConfig
from radsight.data.assemble import SPLITS_FILE, DataSplits, build_splits
from radsight.data.input_profile import training_profile
from radsight.data.sample import make_loader
from radsight.errors import ConfigError
from radsight.evaluate import collect, evaluate
from radsight.methods import Method, build_method, check_recipe
from radsight.methods.registry import export_config
from radsight.operating_points import OperatingPoints, choose_operating_points, write_operating_points
from radsight.run_folder import INPUT_PROFILE_FILE, RECIPE_FILE, check_out_dir, is_launching_process
from radsight.threads import set_torch_threads

log = logging.getLogger(__name__)


class EpochLog(Callback):
    """Append one JSON line per finished epoch (rank 0), so progress survives a kill."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = path
        self.stage = stage
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {
            k.removesuffix("_epoch"): float(v)
            for k, v in trainer.callback_metrics.items()
            if v.numel() == 1 and not k.endswith("_step")
        }
        line = {
            "stage": self.stage,
            "epoch": trainer.current_epoch,
            "pid": os.getpid(),
            "world_size": trainer.world_size,
            "seconds": round(time.perf_counter() - self.started, 2),
            **metrics,
        }
        with self.path.open("a") as stream:
            stream.write(json.dumps(line) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


@dataclass
class TrainResult:
    out_dir: Path
    method: Method
    splits: DataSplits
    is_global_zero: bool


def _check_accelerator(trainer: TrainerConfig) -> None:
    """A recipe for GPUs parses anywhere; training it on a machine without one is refused here."""
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator: {trainer.accelerator!r} needs a GPU and torch finds none here; "
            "use --set trainer.accelerator=cpu (or auto)"
        )


def _trainer(recipe: Recipe, stage_dir: Path, epochs: int, callbacks: list[Callback]) -> L.Trainer:
    cfg = recipe.trainer
    kwargs: dict[str, Any] = {}
    if cfg.limit_train_batches is not None:
        kwargs["limit_train_batches"] = cfg.limit_train_batches
    if cfg.channels_last:
        callbacks = [*callbacks, ChannelsLast()]
    return L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        gradient_clip_val=cfg.gradient_clip_val,
        default_root_dir=stage_dir,
        callbacks=[ModelCheckpoint(dirpath=stage_dir, save_last=True, every_n_epochs=1), *callbacks],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def stage_loaders(method: Method, splits: DataSplits, stage: str) -> tuple[DataLoader, DataLoader | None]:
    """The training loader of ``stage``'s pool (see ``StageData``) and the val loader (None when the
    recipe has no val split)."""
    data, chosen = splits.data, method.stage_data(stage)
    log.info("stage %s trains on the %s pool", stage, chosen.pool)
    train_set = splits.pool(chosen.pool, chosen.augment)
    train_loader = make_loader(train_set, data.batch_size, shuffle=True, num_workers=data.num_workers)
    if not len(splits.val):
        return train_loader, None
    return train_loader, make_loader(splits.val, data.batch_size, shuffle=False, num_workers=data.num_workers)


def operating_points_on_val(method: Method, splits: DataSplits, recipe: Recipe) -> OperatingPoints:
    """Predict the val split once with the final weights and choose each label's threshold on it."""
    config, names = recipe.evaluation.operating_point, method.label_names
    probs = labels = np.zeros((0, method.num_classes))
    if config.rule != "fixed" and len(splits.val):
        found = collect(method, splits.val, recipe.data.batch_size, {}, description="choosing thresholds")
        probs, labels = found.prob_matrix, found.label_matrix
    points = choose_operating_points(config, probs, labels, names, multilabel=method.task == "multilabel")
    log.info("operating points: %s %s", points.describe(), points.thresholds)
    return points


def train(
    recipe: Recipe, out_dir: str | Path, resume: bool = False, *, require_test: bool = True
) -> TrainResult:
    """Train every stage of ``recipe`` into ``out_dir``; with ``resume``, finished work is kept and the
    stored split is used. The recipe is checked whole before any data is read. ``require_test`` False
    accepts a recipe without a test split (nothing will be evaluated)."""
    out_dir = Path(out_dir)
    check_recipe(recipe)
    _check_accelerator(recipe.trainer)
    launching = is_launching_process()
    if launching:
        check_out_dir(out_dir, resume)
    devices = recipe.trainer.devices
    set_torch_threads(
        recipe.trainer.threads, recipe.data.num_workers, devices if isinstance(devices, int) else 1
    )
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = build_splits(
        recipe.data,
        recipe.seed,
        stored=out_dir / SPLITS_FILE if resume else None,
        require_test=require_test,
    )
    method = build_method(recipe, splits.label_names)
    if launching and not resume:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RECIPE_FILE).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        write_json(out_dir / SPLITS_FILE, splits.to_json())
        write_json(out_dir / "patients.json", splits.patients)
    is_global_zero = True
    for stage in recipe.stages:
        stage_dir = out_dir / "stages" / stage.name
        method.set_stage(stage.name)
        if (stage_dir / "done.json").is_file():
            log.info("stage %s already finished: loading its weights", stage.name)
            load_weights(method, stage_dir / "stage.safetensors")
            continue
        last = stage_dir / "last.ckpt"
        trainer = _trainer(
            recipe, stage_dir, stage.epochs, [EpochLog(out_dir / "train_log.jsonl", stage.name)]
        )
        train_loader, val_loader = stage_loaders(method, splits, stage.name)
        trainer.fit(
            method,
            train_loader,
            val_loader,
            ckpt_path=last if resume and last.is_file() else None,
            weights_only=True,
        )
        is_global_zero = trainer.is_global_zero
        if is_global_zero:
            save_weights(method, stage_dir / "stage.safetensors")
            write_json(stage_dir / "done.json", {"stage": stage.name, "epochs": stage.epochs})
        trainer.strategy.barrier()
    if is_global_zero:
        # The export comes last: a run killed before it has no model.safetensors, never a model whose
        # input profile or operating points are missing.
        write_json(out_dir / INPUT_PROFILE_FILE, training_profile(splits, recipe.seed).to_json())
        method.operating_points = operating_points_on_val(method, splits, recipe)
        write_operating_points(out_dir, method.operating_points)
        export_model(method, export_config(recipe, splits.label_names), out_dir)
    return TrainResult(out_dir=out_dir, method=method, splits=splits, is_global_zero=is_global_zero)


def train_and_evaluate(
    recipe: Recipe,
    out_dir: Path,
    *,
    resume: bool = False,
    evaluate_test: bool = True,
    title: str | None = None,
) -> tuple[TrainResult, dict[str, Any] | None]:
    """Train into ``out_dir`` and write the test evaluation beside the model (rank 0 only under DDP)."""
    result = train(recipe, out_dir, resume=resume, require_test=evaluate_test)
    if not (evaluate_test and result.is_global_zero):
        return result, None
    metrics = evaluate(
        result.method,
        result.splits.test,
        out_dir,
        recipe.evaluation,
        title=title or f"{recipe.name}: test split",
        batch_size=recipe.data.batch_size,
        seed=recipe.seed,
    )
    return result, metrics
