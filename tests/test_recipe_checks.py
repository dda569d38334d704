"""A recipe is checked whole before any data is read: each source's declared options, the method's
options and stage names, and the accelerator at training time; each problem is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_cli

from radsight.config import SourceSpec, load_recipe
from radsight.data.assemble import build_source, source_options
from radsight.data.sources import SOURCES, source_class
from radsight.data.sources.covid import CovidChestXray
from radsight.errors import ConfigError
from radsight.methods import check_recipe
from radsight.train import train

MISSING_ROOT = "/nonexistent/covid-chestxray"
"""A covid source here would fail on its root if it were built: an error about anything else proves
that the check ran before any source was."""


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def covid_first(recipes_dir: Path, *changes: str) -> list[str]:
    """Overrides putting a well-formed covid source at a missing root before the recipe's phantoms."""
    recipe = load_recipe(recipes_dir / "baseline_cpu.yaml")
    phantom = recipe.data.sources[0].options
    sources = f"[{{name: covid, root: {MISSING_ROOT}}}, {{name: phantom, options: {phantom}}}]"
    return [f"data.sources={sources}", *changes]


def test_a_misspelt_covid_option_is_one_line_before_the_root_is_looked_at(monkeypatch):
    scans = []
    monkeypatch.setattr(CovidChestXray, "_scan", lambda self: scans.append(self) or [])
    spec = SourceSpec(name="covid", root=MISSING_ROOT, options={"veiws": ["PA"]})
    with pytest.raises(ConfigError) as error:
        build_source(spec)
    assert one_line(error) == (
        "data source 'covid': unknown option(s) ['veiws']; "
        "allowed options: ['align_breast', 'allow_degenerate', 'bits_stored', 'labels', 'max_pixels', "
        "'views']"
    )
    assert scans == []


def test_a_misspelt_phantom_option_names_the_key_and_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        source_options(SourceSpec(name="phantom", options={"n": 10, "prevalance": 0.3}))
    message = one_line(error)
    assert "data source 'phantom': unknown option(s) ['prevalance']" in message
    assert "'prevalence'" in message and "'align_breast'" in message and "'n'" in message


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("phantom", {"n": "many"}, "n: Input should be a valid integer"),
        ("phantom", {"n": 10, "size": [64]}, "size.1: Field required"),
        ("phantom", {"size": [64, 64]}, "n: Field required"),
        ("covid", {"views": "PA"}, "views: 'str' instances are not allowed as a Sequence value"),
        ("nih", {"boxes": "all"}, "boxes: Input should be 'nih', 'rsna', 'both' or 'none'"),
        ("nyu_mammo", {"cropped": "maybe"}, "cropped: Input should be a valid boolean"),
        ("egd", {}, "images_root: Field required"),
        (
            "phantom_mammo",
            {"n": 4, "align_breast": "sideways"},
            "align_breast: Input should be a valid boolean",
        ),
    ],
)
def test_an_option_of_the_wrong_type_is_one_line(name, options, expected):
    with pytest.raises(ConfigError) as error:
        source_options(SourceSpec(name=name, root=MISSING_ROOT, options=options))
    message = one_line(error)
    assert message.startswith(f"data source {name!r}: invalid option(s) (") and expected in message, message


def test_every_source_declares_its_options_and_accepts_align_breast():
    for name in SOURCES:
        spec = SourceSpec(name=name, root=MISSING_ROOT, options={"align_breast": True})
        if name.startswith("phantom"):
            spec.options["n"] = 2
        elif name in ("egd", "reflacx"):
            spec.options["images_root"] = MISSING_ROOT
        assert source_options(spec)["align_breast"] is True, name
    assert source_options(SourceSpec(name="phantom", options={"n": 3, "size": [64, 48]})) == {
        "n": 3,
        "size": (64, 48),
    }
    with pytest.raises(TypeError, match="prevalance"):  # in Python, the constructor itself refuses
        source_class("phantom")(3, prevalance=0.3)


def test_a_file_source_without_a_root_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match=r"data source 'nih' needs a root folder"):
        source_options(SourceSpec(name="nih"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "data.sources.1.options.prevalance=0.3",
            "data source 'phantom': unknown option(s) ['prevalance']; allowed options: ['align_breast',",
        ),
        (
            "model.dropuot=0.2",
            "model (options of SupervisedClassifier): unknown option(s) ['dropuot']; "
            "allowed options: ['backbone', 'cam_stride', 'dropout', 'pretrained']",
        ),
        ("model.dropout=lots", "model (options of SupervisedClassifier): invalid option(s) (dropout: Input"),
        (
            "stages.0.name=clasify",
            "stages: SupervisedClassifier has no stage(s) ['clasify']; its stages are ['classify', 'linear']",
        ),
        ("method=supervized", "unknown method 'supervized'"),
        ("data.sources.0.name=covidd", "unknown data source 'covidd'"),
    ],
)
def test_train_refuses_a_bad_recipe_in_one_line_before_any_data_is_read(
    recipes_dir, tmp_path, change, expected
):
    overrides = covid_first(recipes_dir, change)
    with pytest.raises(ConfigError) as error:
        check_recipe(load_recipe(recipes_dir / "baseline_cpu.yaml", overrides))
    assert expected in one_line(error)
    out = tmp_path / "run"
    flags = [item for override in overrides for item in ("--set", override)]
    result = run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", out, *flags, expect=2)
    assert expected in result.output and "Traceback" not in result.output
    assert MISSING_ROOT not in result.output and not out.exists()


def test_the_same_recipe_with_its_sources_fixed_reaches_the_data(recipes_dir, tmp_path):
    """The control of the test above: without the bad value, training stops at the missing root."""
    overrides = covid_first(recipes_dir)
    check_recipe(load_recipe(recipes_dir / "baseline_cpu.yaml", overrides))
    flags = [item for override in overrides for item in ("--set", override)]
    result = run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", tmp_path / "run", *flags, expect=2)
    assert f"{MISSING_ROOT}: covid root folder not found" in result.output


def test_a_gpu_recipe_parses_but_training_it_without_a_gpu_is_one_line(recipes_dir, tmp_path, monkeypatch):
    recipe = load_recipe(
        recipes_dir / "baseline_cpu.yaml", covid_first(recipes_dir, "trainer.accelerator=gpu")
    )
    check_recipe(recipe)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as error:
        train(recipe, tmp_path / "run")
    assert one_line(error).startswith("trainer.accelerator: 'gpu' needs a GPU and torch finds none here")
    assert not (tmp_path / "run").exists()
