"""What every method shares: stages, optimisers, logging and the ``predict`` contract.

A method is a LightningModule. Its recipe lists named stages; ``set_stage`` decides what trains in each
(everything else is frozen), and ``configure_optimizers`` uses that stage's settings. Subclasses provide
the network, ``stage_parameters`` and ``compute_loss``, and ``predict``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from radsight.config import StageConfig, StageData, validate_options
from radsight.data.sample import Batch
from radsight.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from torch.utils.data import Dataset

    from radsight.data.assemble import DataSplits
    from radsight.operating_points import OperatingPoints


DRAFT_NOTICE = "Machine-generated draft report, not reviewed by a radiologist: not for diagnosis."
"""What stands beside every report a method writes, wherever it is shown or stored."""


@dataclass
class Prediction:
    """What a method says about a batch.

    - ``probs``: B x C class probabilities.
    - ``maps``: maps the method produces natively, name -> B x K x h x w (e.g. "saliency", "gaze").
    - ``regions``: per image, N x 4 xyxy boxes in input pixels that the method chose to look at
      (e.g. GLAM's patches), drawn on overlays; None when the method has no such regions.
    - ``text``: per image, the text the method wrote (e.g. a report); None when it writes none.
    """

    probs: Tensor
    maps: dict[str, Tensor] | None = None
    regions: list[Tensor] | None = None
    text: list[str] | None = None


class Method(L.LightningModule):
    """Base LightningModule for radsight methods."""

    stage_names: ClassVar[tuple[str, ...]] = ()
    options_class: ClassVar[type[BaseModel]]
    stage_data_defaults: ClassVar[dict[str, StageData]] = {}
    """The data a stage trains on when its recipe entry has no ``data`` section (e.g. a pretext stage on
    the unlabelled pool); a stage not listed trains on the labelled pool."""

    def __init__(
        self,
        label_names: list[str],
        task: str,
        model: Mapping[str, Any],
        stages: Sequence[StageConfig],
    ) -> None:
        super().__init__()
        # Plain values only: Lightning checkpoints store these and resuming loads them with weights_only.
        self.save_hyperparameters(
            {
                "label_names": list(label_names),
                "task": task,
                "model": dict(model),
                "stages": [stage.model_dump() for stage in stages],
            }
        )
        self.label_names = list(label_names)
        self.task = task
        self.options = self.parse_options(model)
        self.check_stages(stages)
        self.stages = {stage.name: stage for stage in stages}
        self.stage = next(iter(self.stages))
        self.operating_points: OperatingPoints | None = None
        """The per-label thresholds chosen after training (:mod:`radsight.operating_points`); None until
        then, and for a model exported without them."""

    @classmethod
    def parse_options(cls, model: Mapping[str, Any]) -> BaseModel:
        """A recipe's ``model:`` section as this method's options, or one ConfigError line."""
        return validate_options(cls.options_class, model, f"model (options of {cls.__name__})")

    @classmethod
    def check_stages(cls, stages: Sequence[StageConfig]) -> None:
        """Refuse stage names this method does not define, naming the ones it does."""
        if not stages:
            raise ConfigError(f"stages: {cls.__name__} needs at least one of {list(cls.stage_names)}")
        unknown = [stage.name for stage in stages if stage.name not in cls.stage_names]
        if unknown:
            raise ConfigError(
                f"stages: {cls.__name__} has no stage(s) {unknown}; its stages are {list(cls.stage_names)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    # --- what subclasses provide -------------------------------------------------------------
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        """Parameters trained in ``stage``; all others are frozen during it."""
        raise NotImplementedError

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of the current stage and named parts of it for logging."""
        raise NotImplementedError

    def predict(self, batch: Batch) -> Prediction:
        raise NotImplementedError

    def classifier(self) -> nn.Module:
        """A module mapping images to logits, for explanation methods (Grad-CAM, IG...)."""
        raise NotImplementedError

    def onnx_obstacle(self) -> str | None:
        """Why ``predict`` cannot be traced into an ONNX graph (one line), or None: it can."""
        return None

    # --- shared machinery ---------------------------------------------------------------------
    @classmethod
    def data_of(cls, stage: StageConfig) -> StageData:
        """What ``stage`` trains on: the recipe's ``data`` section, else the method's default (known from
        the recipe alone, before any data is read)."""
        return stage.data if stage.data is not None else cls.stage_data_defaults.get(stage.name, StageData())

    def stage_data(self, stage: str) -> StageData:
        """What this recipe's ``stage`` trains on (see :meth:`data_of`)."""
        return self.data_of(self.stages[stage])

    def stage_plan(self, splits: DataSplits, out_dir: Path) -> list[StageConfig]:
        """The stages to train, in order: the recipe's; a method may reorder them from the data (the
        pretext curriculum probes its tasks first)."""
        return list(self.stages.values())

    def report_notes(self) -> list[str]:
        """Sentences about how this model was trained, for the evaluation report; none by default."""
        return []

    def text_evaluation(self, dataset: Dataset, batch_size: int, out_dir: Path) -> dict[str, Any] | None:
        """The scores of the text the method writes about ``dataset`` against the images' reports (the
        ``captioning`` section of metrics.json), writing what it wrote into ``out_dir``; None for a
        method that writes no text, as by default."""
        return None

    def set_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ConfigError(f"stage {stage!r} is not in this recipe's stages {list(self.stages)}")
        self.stage = stage
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for parameter in self.stage_parameters(stage):
            parameter.requires_grad_(True)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, parts = self.compute_loss(batch)
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=len(batch),
            sync_dist=True,
        )
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=len(batch), sync_dist=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, parts = self.compute_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)
        for name, value in parts.items():
            self.log(f"val/{name}", value, batch_size=len(batch), sync_dist=True)

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

    def configure_optimizers(self) -> Any:
        stage = self.stages[self.stage]
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"stage {self.stage!r} trains no parameters")
        if stage.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=stage.lr, momentum=0.9, weight_decay=stage.weight_decay
            )
        elif stage.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        if stage.scheduler == "cosine":
            scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(stage.epochs, 1))
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        if stage.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
        return optimizer
