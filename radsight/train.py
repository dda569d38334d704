"""Run a recipe: build data and method, train each stage in order with resumable checkpoints, export,
then evaluate on the test split the model never saw.

Every epoch draws its randomness (shuffling, augmentation, dropout) from a seed of its own, derived from
the recipe seed, the stage and the epoch, so a run killed and resumed trains exactly as one that was
never interrupted.

Layout of a run folder:
  recipe.yaml             the recipe with overrides applied, ``${VAR}`` as written; --resume continues
                          only with the same recipe and flags
  splits.json             train/val/test indices (by patient) and the image each index names; read back by
                          --resume and by evaluation of the run's own test split
  patients.json           the patient ids of each split (evaluation elsewhere leaves train/val ones out)
  stages/<stage>/last.ckpt    Lightning checkpoint after the latest finished epoch (for --resume)
  stages/<stage>/done.json    written when the stage has finished; its weights are in stage.safetensors
  train_log.jsonl         one line per finished epoch (an epoch redone after a kill replaces its line)
  model.safetensors, config.json   the inference export
  input_profile.json      what the training images looked like (prediction warns about files unlike them)
  shortcut_audit.json     which labels the training images let a model predict from outside the lungs
  operating_points.json   per-label thresholds chosen on the val split's predictions after the last stage
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from radsight.atomic import remove_stale_temporaries, write_text
from radsight.channels_last import ChannelsLast
from radsight.checkpoints import (
    AtomicCheckpointIO,
    check_resume_checkpoint,
    export_model,
    load_weights,
    save_weights,
    write_json,
)
from radsight.config import Recipe, TrainerConfig, recipe_as_written
from radsight.data.assemble import SPLITS_FILE, DataSplits, build_splits
from radsight.data.epoch_order import EpochLoader, EpochOrder, SeededItems
from radsight.data.input_profile import training_profile
from radsight.data.sample import make_loader
from radsight.data.shortcut_audit import audit_dataset
from radsight.errors import ConfigError
from radsight.evaluate import collect, evaluate
from radsight.folder_lock import locked_folder
from radsight.methods import Method, build_method, check_recipe
from radsight.methods.registry import export_config
from radsight.operating_points import OperatingPoints, choose_operating_points, write_operating_points
from radsight.resume import check_resumable
from radsight.run_folder import (
    INPUT_PROFILE_FILE,
    RECIPE_FILE,
    SHORTCUT_AUDIT_FILE,
    check_out_dir,
    is_launching_process,
)
from radsight.threads import set_torch_threads

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last"
"""A stage's one Lightning checkpoint, ``last.ckpt``, replaced after every epoch (and every
``trainer.checkpoint_every_n_steps``)."""


class EpochLog(Callback):
    """Write one JSON line per finished epoch (rank 0), so progress survives a kill. The line is written
    before the epoch's checkpoint: an epoch redone after a kill between the two replaces its line."""

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
        earlier = self.path.read_text().splitlines() if self.path.is_file() else []
        kept = [text for text in earlier if not self._redone(text, line["epoch"])]
        write_text(self.path, "".join(text + "\n" for text in [*kept, json.dumps(line)]))

    def _redone(self, text: str, epoch: int) -> bool:
        """Whether a logged line is this stage's at ``epoch`` or later (an epoch being done again)."""
        entry = json.loads(text)
        return entry.get("stage") == self.stage and entry.get("epoch", -1) >= epoch


class RepeatableEpochs(Callback):
    """Start every epoch, and continue one cut short, in the same state whether the run was resumed or
    not, so that a resumed run repeats the uninterrupted one bit for bit. Lightning restores weights,
    optimiser and schedule, but neither the random generators nor, from a checkpoint written at an
    epoch's end, that epoch's step of the learning-rate schedule.

    The epoch's order and augmentations come from the loader's :class:`EpochOrder`, which keeps count
    of the batches trained (``on_train_batch_end``) for a mid-epoch checkpoint. At each epoch's start
    the epoch-wise schedules (cosine) catch up on steps they missed, and every random generator is
    seeded from (recipe seed, stage, epoch) for what the training steps draw (dropout); an epoch resumed
    from a mid-epoch checkpoint gets back the generators' states saved with it instead. A plateau
    schedule cannot catch up (the metric it steps on is not in the checkpoint): it may lag by one step
    after a resume.
    """

    def __init__(self, seed: int, stage_index: int, loader: EpochLoader) -> None:
        self.seed = seed
        self.stage_index = stage_index
        self.loader = loader
        self.saved_random: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loader.order.set_epoch(trainer.current_epoch)
        for config in trainer.lr_scheduler_configs:
            if config.interval == "epoch" and not config.reduce_on_plateau:
                while config.scheduler.last_epoch < trainer.current_epoch // config.frequency:
                    with warnings.catch_warnings():  # "step before optimizer.step": it did step, before
                        warnings.simplefilter("ignore", UserWarning)
                        config.scheduler.step()
        entropy = [self.seed, self.stage_index, trainer.current_epoch, 1]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        L.seed_everything(seed, workers=True, verbose=False)
        self.loader.batches_done = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """An epoch cut short (the loader restored past its first batch) resumes without its start
        hook: the generators continue from their states saved with the checkpoint."""
        saved, self.saved_random = self.saved_random, None
        if self.loader.batches_done and saved is not None:
            set_random_state(saved)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.loader.batches_done = batch_idx + 1

    def state_dict(self) -> dict[str, Any]:
        return {"random": random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved_random = state_dict.get("random")


def random_state() -> dict[str, Any]:
    """The generators training steps draw from, as tensors and plain values (a tensors-only checkpoint
    holds them)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainResult:
    out_dir: Path
    method: Method
    splits: DataSplits
    is_global_zero: bool


def _check_accelerator(trainer: TrainerConfig) -> None:
    """A recipe for GPUs parses anywhere; training it on a machine without one is refused here, and so
    are more CPU training processes than the machine has CPUs (each is a full copy of the run)."""
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator: {trainer.accelerator!r} needs a GPU and torch finds none here; "
            "use --set trainer.accelerator=cpu (or auto)"
        )
    on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available())
    cpus = os.cpu_count() or 1
    if on_cpu and isinstance(trainer.devices, int) and trainer.devices > cpus:
        raise ConfigError(
            f"trainer.devices: {trainer.devices} training processes on a machine with {cpus} CPUs; "
            f"use at most {cpus}"
        )


def _last_checkpoint(stage_dir: Path, **when: Any) -> ModelCheckpoint:
    """Lightning's checkpoint written over ``stage_dir/last.ckpt`` (atomically, by the trainer's
    checkpoint IO) ``when`` asked: the one file a resume reads, without an ``epoch=N`` copy beside it."""
    return ModelCheckpoint(dirpath=stage_dir, filename=LAST_CHECKPOINT, enable_version_counter=False, **when)


def _trainer(recipe: Recipe, stage_dir: Path, epochs: int, callbacks: list[Callback]) -> L.Trainer:
    """Lightning's Trainer for one stage; settings it refuses (a strategy it does not know, a precision
    this machine cannot run, more devices than there are) are one ConfigError line."""
    cfg = recipe.trainer
    kwargs: dict[str, Any] = {}
    if cfg.limit_train_batches is not None:
        kwargs["limit_train_batches"] = cfg.limit_train_batches
    if cfg.channels_last:
        callbacks = [*callbacks, ChannelsLast()]
    checkpoint = _last_checkpoint(stage_dir, every_n_epochs=1, save_on_train_epoch_end=True)
    if cfg.checkpoint_every_n_steps is not None:  # mid-epoch: a kill costs at most these steps
        steps = _last_checkpoint(stage_dir, every_n_train_steps=cfg.checkpoint_every_n_steps)
        callbacks = [steps, *callbacks]
    try:
        return L.Trainer(
            max_epochs=epochs,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
            precision=cfg.precision,
            gradient_clip_val=cfg.gradient_clip_val,
            default_root_dir=stage_dir,
            callbacks=[checkpoint, *callbacks],
            plugins=[AtomicCheckpointIO()],
            logger=False,
            enable_progress_bar=cfg.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            **kwargs,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as error:
        problem = " ".join(str(error).split())[:300]
        raise ConfigError(f"trainer: Lightning refuses these settings on this machine ({problem})") from None


def _check_finite(method: Method, stage: str, index: int) -> None:
    """A stage whose weights became NaN or infinite (a learning rate far too high) is refused before
    anything is written from it."""
    broken = [name for name, value in method.state_dict().items() if not torch.isfinite(value).all()]
    if broken:
        raise ConfigError(
            f"stage {stage!r} diverged: {len(broken)} weight tensor(s) hold NaN or infinite values "
            f"(e.g. {broken[0]}); lower stages.{index}.lr and start the run over with --force"
        )


def stage_loaders(
    method: Method, splits: DataSplits, stage: str, order: tuple[int, int, int] = (0, 0, 0)
) -> tuple[DataLoader, DataLoader | None]:
    """The training loader of ``stage``'s pool (see ``StageData``), dealt by :class:`EpochOrder` from
    ``order`` (recipe seed, stage index, first epoch), and the val loader (None when the recipe has no
    val split)."""
    data, chosen = splits.data, method.stage_data(stage)
    log.info("stage %s trains on the %s pool", stage, chosen.pool)
    train_set = splits.pool(chosen.pool, chosen.augment)
    sampler = EpochOrder(len(train_set), *order)
    train_loader = make_loader(
        SeededItems(train_set),
        data.batch_size,
        shuffle=False,
        num_workers=data.num_workers,
        sampler=sampler,
        loader=EpochLoader,
    )
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


def audit_training_split(splits: DataSplits, recipe: Recipe, out_dir: Path) -> None:
    """Audit the training split for shortcuts before anything trains: warn (or, with
    ``data.shortcut_audit.strict``, stop) and keep the audit in the run folder."""
    data = recipe.data
    audit = audit_dataset(
        splits.union.with_transform(None),
        splits.label_names,
        data.shortcut_audit,
        image_size=data.image_size,
        resize=data.resize,
        indices=splits.train_split,
        seed=recipe.seed,
        min_count=recipe.evaluation.min_class_count,
    )
    audit.log()
    audit.check(data.shortcut_audit.strict)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SHORTCUT_AUDIT_FILE, audit.to_json())


def train(
    recipe: Recipe, out_dir: str | Path, resume: bool = False, *, require_test: bool = True
) -> TrainResult:
    """Train every stage of ``recipe`` into ``out_dir``; with ``resume``, finished work is kept and the
    stored split is used, and the recipe must be the one the run started with. The recipe is checked
    whole before any data is read. ``require_test`` False accepts a recipe without a test split (nothing
    will be evaluated). The folder is locked for this process while it trains."""
    out_dir = Path(out_dir)
    check_recipe(recipe)
    _check_accelerator(recipe.trainer)
    launching = is_launching_process()
    if launching:
        check_out_dir(out_dir, resume)
        if resume:
            check_resumable(recipe, out_dir)
    with locked_folder(out_dir) if launching else nullcontext():
        folders = [out_dir, *(out_dir / "stages" / stage.name for stage in recipe.stages)]
        if launching and (stale := remove_stale_temporaries(*folders)):
            log.info("removed %d unfinished temporary file(s) of an interrupted run", len(stale))
        return _train_stages(recipe, out_dir, resume, require_test, launching)


def _train_stages(
    recipe: Recipe, out_dir: Path, resume: bool, require_test: bool, launching: bool
) -> TrainResult:
    devices = recipe.trainer.devices
    set_torch_threads(
        recipe.trainer.threads, recipe.data.num_workers, devices if isinstance(devices, int) else 1
    )
    _trainer(recipe, out_dir / "stages", 1, [])  # Lightning's own checks, before any data is read
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    splits = build_splits(
        recipe.data,
        recipe.seed,
        stored=out_dir / SPLITS_FILE if resume else None,
        require_test=require_test,
    )
    if launching and not resume:
        audit_training_split(splits, recipe, out_dir)
    method = build_method(recipe, splits.label_names)
    if launching and not resume:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / RECIPE_FILE, yaml.safe_dump(recipe_as_written(recipe), sort_keys=False))
        write_json(out_dir / SPLITS_FILE, splits.to_json())
        write_json(out_dir / "patients.json", splits.patients)
    is_global_zero = True
    for index, stage in enumerate(method.stage_plan(splits, out_dir)):
        stage_dir = out_dir / "stages" / stage.name
        method.set_stage(stage.name)
        if (stage_dir / "done.json").is_file():
            log.info("stage %s already finished: loading its weights", stage.name)
            load_weights(method, stage_dir / "stage.safetensors")
            continue
        last = stage_dir / f"{LAST_CHECKPOINT}.ckpt"
        resume_from = last if resume and last.is_file() else None
        first_epoch = (
            0 if resume_from is None else check_resume_checkpoint(resume_from, method, stage.name) + 1
        )
        train_loader, val_loader = stage_loaders(
            method, splits, stage.name, (recipe.seed, index, first_epoch)
        )
        callbacks = [
            RepeatableEpochs(recipe.seed, index, train_loader),
            EpochLog(out_dir / "train_log.jsonl", stage.name),
        ]
        trainer = _trainer(recipe, stage_dir, stage.epochs, callbacks)
        try:
            trainer.fit(method, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
        except MisconfigurationException as error:  # a setting that fails only against the data
            raise ConfigError(f"trainer: {' '.join(str(error).split())}") from None
        _check_finite(method, stage.name, index)
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
        audit=recipe.data.shortcut_audit,
        notes=training_audit_notes(out_dir),
    )
    return result, metrics


def training_audit_notes(out_dir: Path) -> list[str]:
    """The training audit's warnings, for the report (none where the run has no audit)."""
    path = out_dir / SHORTCUT_AUDIT_FILE
    warnings = json.loads(path.read_text())["warnings"] if path.is_file() else []
    return [f"Shortcut audit of the training split: {line}." for line in warnings]
