"""Method registry: recipe ``method:`` names to LightningModule classes, imported on first use."""

from __future__ import annotations

from importlib import import_module

from radsight.errors import ConfigError
from radsight.methods.base import Method, Prediction

METHODS = {
    "supervised": "radsight.methods.supervised:SupervisedClassifier",
    "gaze_unet": "radsight.methods.gaze_unet:GazeUNet",
    "glam": "radsight.methods.glam:GLAM",
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    module, attribute = METHODS[name].split(":")
    return getattr(import_module(module), attribute)


__all__ = ["METHODS", "Method", "Prediction", "method_class"]
