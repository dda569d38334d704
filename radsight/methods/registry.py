"""Method registry: recipe ``method:`` names to classes, the check of a recipe against the method and
source registries, and the two ways a method comes to life.

``build_method`` makes a fresh one from a recipe (training, or a teacher inside another method);
``load_method`` rebuilds a trained one from its export. Both live here, below training and inference,
so that neither has to import the other.
"""

from __future__ import annotations

import re
from importlib import import_module
from pathlib import Path
from typing import Any

from radsight.checkpoints import load_weights
from radsight.config import Recipe, parse_recipe, recipe_as_written
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
    "captioning": "radsight.methods.captioning:Captioning",
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
        "recipe": recipe_as_written(recipe),
    }


_FETCHED_NAME = re.compile(r"^(?!torchvision:)[A-Za-z][\w-]*:")
"""An option naming where to fetch a model from (timm's ``hf-hub:``, ``local-dir:``), not what to build."""


def _fetched_names(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [f"{where}: {value!r}"] if _FETCHED_NAME.match(value) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [found for key, item in items for found in _fetched_names(item, f"{where}.{key}")]


def load_method(model_dir: str | Path) -> tuple[Method, Recipe]:
    """Rebuild a trained method from its export (safetensors + JSON, no unpickling), with the operating
    points stored beside it (``method.operating_points``, None for an export without them).

    Nothing the export's config names is fetched or opened: initial-weights files are skipped (the
    trained weights replace them), a backbone named by where to fetch it (``hf-hub:``) is refused, and
    ``${VAR}`` strings stay as written (only evaluation of the run's own split reads its data paths)."""
    config = read_export_config(model_dir)
    config_path = Path(model_dir) / "config.json"
    if not isinstance(config.get("recipe"), dict) or not isinstance(config.get("label_names"), list):
        raise ConfigError(f"{config_path}: no recipe and label names (not a radsight export)")
    recipe = parse_recipe(config["recipe"], str(config_path), expand=False)
    built = {key: value for key, value in dict(recipe.model).items() if key != "pretrained"}  # skipped
    if fetched := _fetched_names(built, "recipe.model"):
        raise ConfigError(
            f"{config_path}: {fetched[0]} names a download or a folder to build the model from; a model "
            "folder's backbone must be a built-in architecture (radsight never fetches one for inference)"
        )
    method = build_method(recipe, config["label_names"], pretrained=False)
    load_weights(method, Path(model_dir) / "model.safetensors")
    method.operating_points = read_operating_points(model_dir)
    method.eval()
    return method, recipe
