"""Supervised baseline: a registry backbone with a linear head, trained on image-level labels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import Field
from torch import Tensor, nn

from radsight.config import StageConfig, Strict
from radsight.data.sample import Batch
from radsight.methods.base import Method, Prediction
from radsight.nn.backbones import create_backbone
from radsight.nn.losses import classification_loss, probabilities


class SupervisedOptions(Strict):
    backbone: str = "resnet18"
    pretrained: str | None = None
    dropout: float = 0.0
    cam_stride: int | None = Field(
        None, description="output stride of the backbone block Grad-CAM explains (default: the final map's)"
    )


class SupervisedClassifier(Method):
    """Backbone + dropout + linear head. Stages: ``classify`` trains everything, ``linear`` only the head."""

    stage_names = ("classify", "linear")
    options_class = SupervisedOptions

    def __init__(
        self, label_names: list[str], task: str, model: dict[str, Any], stages: Sequence[StageConfig]
    ):
        super().__init__(label_names, task, model, stages)
        self.backbone = create_backbone(self.options.backbone, in_chans=1, pretrained=self.options.pretrained)
        if self.options.cam_stride is not None:
            self.backbone.explain_at_stride(self.options.cam_stride)
        self.head = nn.Sequential(
            nn.Dropout(self.options.dropout), nn.Linear(self.backbone.num_features, self.num_classes)
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        return self.head.parameters() if stage == "linear" else self.parameters()

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.labels is None:
            raise ValueError("the supervised baseline needs labels, and this batch has none")
        return classification_loss(self.task, self(batch.images), batch.labels), {}

    def predict(self, batch: Batch) -> Prediction:
        return Prediction(probs=probabilities(self.task, self(batch.images)))

    def classifier(self) -> nn.Module:
        return self
