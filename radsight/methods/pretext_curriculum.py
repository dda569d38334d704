"""Curricular self-supervised pre-training: one encoder trained by a sequence of pretext tasks on
unlabelled X-rays, in an order set by a measured rule, then fine-tuned on the labelled images.

After de Andrés Tamé, Sirotkin, Carballeira and Escudero-Viñolo, "Self-Supervised Curricular Deep
Learning for Chest X-Ray Image Classification" (2023), whose ordering idea comes from Sirotkin et al.
(2021, skin lesions). The stages are the pretext tasks of :mod:`radsight.nn.pretext` (``rotation``,
``jigsaw``, ``position``, ``inpainting``, ``contrastive``), each training the shared encoder and its own
head on the unlabelled pool by default, and ``finetune`` (encoder and a linear head on the labelled
pool, the only stage a label budget touches).

The order (``model.order``):

- ``auto``: every listed task is trained alone from the same start for ``probe_steps`` optimiser steps
  and scored by a fixed transfer probe, the linear-probe AUROC of the encoder's pooled features on the
  validation split (:mod:`radsight.metrics.linear_probe`); the tasks then run from the lowest-scoring to
  the highest-scoring, easy-to-transfer last, closest to fine-tuning;
- ``reverse``: the same probe, highest-scoring first (the ablation);
- a list of the recipe's task stages: that order, no probe.

The paper publishes neither its task list, its order rule nor its budgets in a form available here; the
tasks, the probe (budget, classifier, folds) and the lowest-to-highest rule are radsight's design. The
probe scores, the untrained start's score and the order are written to ``curriculum.json`` in the run
folder and to the report. The probe runs once, in the launching process (on its GPU where there is
one), before any stage; under DDP the other ranks start later and read its ``curriculum.json``, as a
resumed run does, so every rank trains the same order.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from radsight.checkpoints import write_json
from radsight.config import StageConfig, StageData, Strict
from radsight.data.sample import Batch, make_loader
from radsight.errors import ConfigError, DataError
from radsight.methods.base import Method, Prediction
from radsight.metrics.linear_probe import probe_auroc
from radsight.nn.backbones import create_backbone
from radsight.nn.losses import classification_loss, probabilities
from radsight.nn.pretext import (
    TASKS,
    ContrastiveOptions,
    InpaintingOptions,
    JigsawOptions,
    PositionOptions,
    RotationOptions,
    build_task,
)
from radsight.run_folder import is_launching_process

if TYPE_CHECKING:
    from radsight.data.assemble import DataSplits

log = logging.getLogger(__name__)

CURRICULUM_FILE = "curriculum.json"
FINETUNE = "finetune"


class PretextCurriculumOptions(Strict):
    backbone: str = Field("efficientnet_lite0", description="any registry backbone name")
    pretrained: str | None = Field(
        None, description="encoder start: a weights file, 'imagenet', or run:PATH (an earlier run's encoder)"
    )
    dropout: float = Field(0.0, ge=0, lt=1)
    cam_stride: int | None = Field(None, description="output stride of the block Grad-CAM explains")
    order: Literal["auto", "reverse"] | list[str] = Field(
        "auto", description="auto / reverse: by the probe; a list: the task stages in that order"
    )
    probe_steps: int = Field(20, ge=1, description="optimiser steps of each task alone before its probe")
    rotation: RotationOptions = Field(default_factory=RotationOptions)
    jigsaw: JigsawOptions = Field(default_factory=JigsawOptions)
    position: PositionOptions = Field(default_factory=PositionOptions)
    inpainting: InpaintingOptions = Field(default_factory=InpaintingOptions)
    contrastive: ContrastiveOptions = Field(default_factory=ContrastiveOptions)

    @field_validator("order")
    @classmethod
    def _tasks_known(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            unknown = [name for name in value if name not in TASKS]
            if unknown:
                raise ValueError(f"unknown pretext task(s) {unknown}; tasks: {list(TASKS)}")
        return value


def curriculum_order(scores: dict[str, float], rule: Literal["auto", "reverse"]) -> list[str]:
    """Task names from the lowest probe score to the highest (``reverse``: highest first); ties keep the
    recipe's order."""
    ranked = sorted(scores, key=lambda name: scores[name])
    return ranked[::-1] if rule == "reverse" else ranked


class PretextCurriculum(Method):
    """Encoder + one head per pretext stage + a linear classification head (stage ``finetune``)."""

    stage_names = (*TASKS, FINETUNE)
    options_class = PretextCurriculumOptions
    stage_data_defaults: ClassVar[dict[str, StageData]] = {
        name: StageData(pool="unlabelled") for name in TASKS
    }

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ) -> None:
        super().__init__(label_names, task, model, stages)
        opts = self.options
        pretext = [name for name in self.stages if name in TASKS]
        if isinstance(opts.order, list) and sorted(opts.order) != sorted(pretext):
            raise ConfigError(
                f"model.order: {opts.order} must list each pretext stage of the recipe once: {pretext}"
            )
        self.backbone = create_backbone(opts.backbone, in_chans=1, pretrained=opts.pretrained)
        if opts.cam_stride is not None:
            self.backbone.explain_at_stride(opts.cam_stride)
        self.tasks = nn.ModuleDict(
            {name: build_task(name, self.backbone, getattr(opts, name)) for name in pretext}
        )
        self.head = nn.Sequential(
            nn.Dropout(opts.dropout), nn.Linear(self.backbone.num_features, self.num_classes)
        )
        self.curriculum: dict[str, Any] | None = None
        """What ordered the stages of this run (probe scores and order), once planned."""

    # --- network ---------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def predict(self, batch: Batch) -> Prediction:
        return Prediction(probs=probabilities(self.task, self(batch.images)))

    def classifier(self) -> nn.Module:
        return self

    # --- stages ------------------------------------------------------------------------------------
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        if stage == FINETUNE:
            yield from self.head.parameters()
            return
        for name, parameter in self.tasks[stage].named_parameters():
            if not name.startswith("target_"):  # BYOL's momentum copy follows the encoder, untrained
                yield parameter

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.stage == FINETUNE:
            if batch.labels is None:
                raise ValueError("the finetune stage needs labels, and this batch has none")
            return classification_loss(self.task, self(batch.images), batch.labels), {}
        task = self.tasks[self.stage]
        inputs, targets = task.make_batch(batch.images)
        loss = task.loss(task(self.backbone, inputs), targets)
        return loss, {self.stage: loss.detach()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.stage in self.tasks:
            self.tasks[self.stage].after_step(self.backbone)

    def stage_plan(self, splits: DataSplits, out_dir: Path) -> list[StageConfig]:
        """The pretext stages in curriculum order (probing them first for ``auto``/``reverse``, or reading
        a resumed run's ``curriculum.json``), then the others in the recipe's order."""
        pretext = [name for name in self.stages if name in TASKS]
        order = self.options.order
        if isinstance(order, list):
            names = list(order)
        elif len(pretext) < 2:
            names = pretext
        else:
            self.curriculum = self._stored_curriculum(out_dir, pretext) or self._probe(splits, pretext, order)
            names = self.curriculum["order"]
            if is_launching_process():
                write_json(Path(out_dir) / CURRICULUM_FILE, self.curriculum)
        log.info("pretext curriculum: %s", " -> ".join(names) or "no pretext stage")
        return [self.stages[name] for name in names] + [
            s for s in self.stages.values() if s.name not in TASKS
        ]

    def _stored_curriculum(self, out_dir: Path, pretext: list[str]) -> dict[str, Any] | None:
        path = Path(out_dir) / CURRICULUM_FILE
        if not path.is_file():
            return None
        stored = json.loads(path.read_text())
        same = stored.get("rule") == self.options.order and sorted(stored.get("order", [])) == sorted(pretext)
        return stored if same else None

    def _probe(
        self, splits: DataSplits, pretext: list[str], rule: Literal["auto", "reverse"]
    ) -> dict[str, Any]:
        """Train each task alone from the same start and score the encoder by the linear probe."""
        rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")
        start, was_training = copy.deepcopy(self.state_dict()), self.training
        self.to(device)
        try:
            scores = {"start": self.probe_score(splits)}
            for name in pretext:
                self.load_state_dict(start)
                self.train_alone(name, splits, self.options.probe_steps)
                scores[name] = self.probe_score(splits)
                log.info(
                    "probe: %s alone for %d steps -> linear-probe AUROC %.4f",
                    name,
                    self.options.probe_steps,
                    scores[name],
                )
        finally:
            self.load_state_dict(start)
            self.cpu().train(was_training)
        tasks = {name: scores[name] for name in pretext}
        return {
            "rule": rule,
            "probe": {
                "metric": "linear-probe AUROC (val split, 5-fold by patient)",
                "steps": self.options.probe_steps,
            },
            "start_score": scores["start"],
            "scores": tasks,
            "order": curriculum_order(tasks, rule),
        }

    def train_alone(self, stage: str, splits: DataSplits, steps: int) -> None:
        """``steps`` optimiser steps of ``stage`` on its pool, its own optimiser, outside Lightning."""
        self.set_stage(stage)
        optimizer = self.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        chosen = self.stage_data(stage)
        loader = make_loader(splits.pool(chosen.pool, chosen.augment), splits.data.batch_size, shuffle=True)
        device = next(self.parameters()).device
        self.train()
        done = 0
        while done < steps:
            for batch in loader:
                loss, _ = self.compute_loss(batch.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.tasks[stage].after_step(self.backbone)
                done += 1
                if done == steps:
                    break

    @torch.no_grad()
    def probe_score(self, splits: DataSplits) -> float:
        """Linear-probe AUROC of the encoder's pooled features on the validation split."""
        if not len(splits.val):
            raise DataError(None, "model.order auto/reverse probes on the val split, and it is empty")
        self.eval()
        device = next(self.parameters()).device
        features, labels, patients = [], [], []
        for batch in make_loader(splits.val, splits.data.batch_size, shuffle=False):
            if batch.labels is None:
                raise DataError(None, "model.order auto/reverse: the val split carries no labels to probe")
            features.append(self.backbone(batch.images.to(device)).float().cpu().numpy())
            labels.append(batch.labels.cpu().numpy())
            patients += [m.patient_id for m in batch.meta]
        return probe_auroc(np.concatenate(features), np.concatenate(labels), patients)

    def report_notes(self) -> list[str]:
        if self.curriculum is None:
            return []
        scores = ", ".join(f"{name} {score:.3f}" for name, score in self.curriculum["scores"].items())
        return [
            f"Pretext curriculum ({self.curriculum['rule']}): {' -> '.join(self.curriculum['order'])}; "
            f"linear-probe AUROC after each task alone: {scores} (untrained start "
            f"{self.curriculum['start_score']:.3f})."
        ]
