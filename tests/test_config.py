"""Recipes: overrides, environment variables and validation errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radsight.config import apply_overrides, load_recipe
from radsight.errors import ConfigError

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
