"""Method registry: recipe ``method:`` names to classes, the check of a recipe against the method and
source registries, and the two ways a method comes to life.

``build_method`` makes a fresh one from a recipe (training, or a teacher inside another method);
``load_method`` rebuilds a trained one from its export. Both live here, below training and inference,
so that neither has to import the other.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from radsight.checkpoints import load_weights
from radsight.config import Recipe
from radsight.data.assemble import source_options
from radsight.errors import ConfigError
from radsight.methods.base import Method
from radsight.operating_points import read_operating_points
from radsight.run_folder import read_export_config

METHODS = {
    "supervised": "radsight.methods.supervised:SupervisedClassifier",
    "gaze_unet": "radsight.methods.gaze_unet:GazeUNet",
    "glam": "radsight.methods.glam:GLAM",
    "latent_kd": "radsight.methods.latent_kd:LatentKD",
    "pretext_curriculum": "radsight.methods.pretext_curriculum:PretextCurriculum",
}


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``, imported on first use."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    module, attribute = METHODS[name].split(":")
    return getattr(import_module(module), attribute)


def check_recipe(recipe: Recipe) -> Recipe:
    """What a recipe names beyond its own schema, checked before any data is read: the method, its
    options and stage names, and each data source with its options. Raises one ConfigError line."""
    cls = method_class(recipe.method)
    cls.parse_options(recipe.model)
    cls.check_stages(recipe.stages)
    for spec in recipe.data.sources:
        source_options(spec)
    return recipe


def build_method(recipe: Recipe, label_names: list[str], pretrained: bool = True) -> Method:
    """Instantiate the recipe's method; ``pretrained=False`` skips loading initial weights files."""
    model = dict(recipe.model)
    if not pretrained:
        model["pretrained"] = None
    return method_class(recipe.method)(
        label_names=label_names, task=recipe.task, model=model, stages=recipe.stages
    )


def export_config(recipe: Recipe, label_names: list[str]) -> dict[str, Any]:
    """What ``config.json`` holds beside ``model.safetensors``: enough to rebuild the method."""
    return {
        "method": recipe.method,
        "task": recipe.task,
        "label_names": label_names,
        "image_size": list(recipe.data.image_size),
        "recipe": recipe.model_dump(mode="json"),
    }


def load_method(model_dir: str | Path) -> tuple[Method, Recipe]:
    """Rebuild a trained method from its export (safetensors + JSON, no unpickling), with the operating
    points stored beside it (``method.operating_points``, None for an export without them)."""
    config = read_export_config(model_dir)
    recipe = Recipe.model_validate(config["recipe"])
    method = build_method(recipe, config["label_names"], pretrained=False)
    load_weights(method, Path(model_dir) / "model.safetensors")
    method.operating_points = read_operating_points(model_dir)
    method.eval()
    return method, recipe
