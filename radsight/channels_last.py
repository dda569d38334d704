"""The ``trainer.channels_last`` switch: weights and images in channels-last memory layout (NHWC) while
a stage trains. Convolutions in oneDNN (CPU) and cuDNN (GPU, above all under bf16 / fp16) run fastest in
it; every value stays the same, only the order in memory changes. Weights return to the standard layout
when the stage ends, so checkpoints and the export are as without the switch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from radsight.data.sample import Batch


class ChannelsLast(Callback):
    """Convert the module when a fit starts and every batch's images as it arrives; undo at the end."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.contiguous_format)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, index: int
    ) -> None:
        _images_channels_last(batch)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        index: int,
        dataloader_idx: int = 0,
    ) -> None:
        _images_channels_last(batch)


def _images_channels_last(batch: Batch) -> None:
    if batch.images.ndim == 4:
        batch.images = batch.images.contiguous(memory_format=torch.channels_last)
