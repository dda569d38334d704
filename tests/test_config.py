"""Recipes: overrides, environment variables and validation errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml

from radsight.config import ACCELERATORS, PRECISIONS, apply_overrides, load_recipe
from radsight.errors import ConfigError
from radsight.methods import check_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_overrides_reach_nested_fields_and_list_items():
    raw = {"data": {"sources": [{"name": "phantom", "options": {"n": 10}}]}, "stages": [{"name": "classify"}]}
    apply_overrides(raw, ["data.sources.0.options.n=50", "stages.0.lr=0.01", "data.image_size=[64, 64]"])
    assert raw["data"]["sources"][0]["options"]["n"] == 50
    assert raw["stages"][0]["lr"] == 0.01 and raw["data"]["image_size"] == [64, 64]
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(raw, ["stages.0.lr"])


def test_environment_variables_are_expanded_and_missing_ones_named(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "x", "data": {"sources": [{"name": "nih", "root": "${SOME_ROOT}/nih"}], "labels": ["a"]}}
        )
    )
    monkeypatch.delenv("SOME_ROOT", raising=False)
    with pytest.raises(ConfigError, match="SOME_ROOT is not set"):
        load_recipe(path)
    monkeypatch.setenv("SOME_ROOT", "/data")
    assert load_recipe(path).data.sources[0].root == "/data/nih"


def test_invalid_split_and_unknown_field_are_reported_with_their_place(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump({"name": "x", "data": {"sources": [{"name": "phantom"}], "labels": ["a"]}})
    )
    with pytest.raises(ConfigError, match=r"data\.split: .*sum to 1"):
        load_recipe(path, ["data.split=[0.5, 0.5, 0.5]"])
    with pytest.raises(ConfigError, match=r"trainer\.gpus"):
        load_recipe(path, ["trainer.gpus=2"])


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(path, monkeypatch):
    for name in (
        "RADSIGHT_DATA",
        "IMAGENET_WEIGHTS",
        "EGD_ROOT",
        "REFLACX_ROOT",
        "MIMIC_CXR_JPG",
        "CBIS_DDSM",
    ):
        monkeypatch.setenv(name, "/placeholder")
    text = path.read_text()
    for variable in {part.split("}")[0] for part in text.split("${")[1:]}:
        monkeypatch.setenv(variable, "/placeholder")
    recipe = load_recipe(path)
    assert recipe.stages and recipe.data.labels
    check_recipe(recipe)  # its method options, stage names and source options too


@pytest.mark.parametrize(
    ("override", "place"),
    [
        ("stages.0.epochs=0", "stages.0.epochs: Input should be greater than or equal to 1"),
        ("stages.0.lr=0", "stages.0.lr: Input should be greater than 0"),
        ("stages.0.weight_decay=-0.1", "stages.0.weight_decay: Input should be greater than or equal to 0"),
        ("stages=[{name: classify}, {name: classify}]", "stage(s) ['classify'] listed more than once"),
        ("stages=[]", "stages: List should have at least 1 item"),
        ("data.batch_size=0", "data.batch_size: Input should be greater than or equal to 1"),
        ("data.num_workers=-1", "data.num_workers: Input should be greater than or equal to 0"),
        ("data.image_size=[4, 128]", "data.image_size.0: Input should be greater than or equal to 8"),
        ("data.budget=0", "data.budget: Input should be greater than or equal to 1"),
        ("data.budget_seed=-2", "data.budget_seed: Input should be greater than or equal to 0"),
        ("data.gaze_sigma_fraction=0", "data.gaze_sigma_fraction: Input should be greater than 0"),
        ("data.labels=[]", "data.labels: List should have at least 1 item"),
        ("data.labels=[nodule, nodule]", "label(s) ['nodule'] listed more than once"),
        ("data.sources=[]", "data.sources: List should have at least 1 item"),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("evaluation.n_boot=0", "evaluation.n_boot: Input should be greater than or equal to 1"),
        ("trainer.precision=16-bits", "trainer.precision: Input should be 'transformer-engine'"),
        ("trainer.accelerator=gpus", "trainer.accelerator: Input should be 'auto', 'cpu', 'cuda', 'gpu'"),
        ("trainer.devices=0", "trainer.devices: Value error, a count from 1, -1 (all)"),
        ("trainer.num_nodes=0", "trainer.num_nodes: Input should be greater than or equal to 1"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches: Value error, a count from 1"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches: Value error, a count from 1"),
        ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val: Input should be greater than 0"),
    ],
)
def test_each_out_of_range_value_is_one_line_naming_its_place(recipes_dir, override, place):
    recipe = recipes_dir / "baseline_cpu.yaml"
    with pytest.raises(ConfigError) as error:
        load_recipe(recipe, [override])
    message = str(error.value)
    assert message.startswith(f"{recipe}: invalid recipe (") and place in message, message
    assert "\n" not in message


def test_values_at_the_edge_of_their_ranges_are_accepted(recipes_dir):
    edges = ["stages.0.epochs=1", "data.batch_size=1", "data.image_size=[8, 8]", "data.num_workers=0"]
    edges += ["trainer.devices=-1", "trainer.limit_train_batches=1.0", "trainer.limit_train_batches=1"]
    edges += ["evaluation.n_boot=1", "data.split=[0.5, 0.0, 0.5]", "seed=0"]
    edges += ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "stages.0.weight_decay=0"]
    recipe = load_recipe(recipes_dir / "baseline_cpu.yaml", edges)  # a GPU recipe parses on any machine
    assert recipe.trainer.accelerator == "gpu" and recipe.trainer.limit_train_batches == 1


def test_precision_and_accelerator_names_are_the_ones_lightning_accepts():
    from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from lightning.pytorch.accelerators import AcceleratorRegistry

    lightning_precisions = set(get_args(_PRECISION_INPUT_STR)) | set(get_args(_PRECISION_INPUT_STR_ALIAS))
    assert set(get_args(PRECISIONS)) == lightning_precisions
    assert set(get_args(ACCELERATORS)) == set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"}


def test_operating_point_rules_and_the_threshold_of_older_exports():
    from radsight.config import EvaluationConfig

    assert EvaluationConfig().operating_point.rule == "youden"
    target = EvaluationConfig.model_validate({"operating_point": {"rule": "sensitivity", "value": 0.9}})
    assert target.operating_point.value == 0.9
    for bad, message in (
        ({"rule": "youden", "value": 0.3}, "takes no value"),
        ({"rule": "sensitivity", "value": 1.5}, "needs a target value in \\(0, 1\\]"),
        ({"rule": "fixed"}, "needs a threshold value"),
    ):
        with pytest.raises(ValueError, match=message):
            EvaluationConfig.model_validate({"operating_point": bad})
    # config.json written before operating points held `threshold`: None was Youden, a value fixed
    assert EvaluationConfig.model_validate({"threshold": None}).operating_point.rule == "youden"
    fixed = EvaluationConfig.model_validate({"threshold": 0.3}).operating_point
    assert (fixed.rule, fixed.value) == ("fixed", 0.3)
