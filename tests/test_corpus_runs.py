"""Bad-input corpus for training: recipes (values, types, YAML, trainer settings, names) and resume
checkpoints, generated here, each case one parametrized test.

Every case must end with exit code 2 and one ``error:`` line naming the file or key and the problem:
an exit code of 1 (a traceback) or 0 (the bad input was taken silently) fails the case. Checkpoint
cases also prove that a malicious checkpoint never runs code.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_run_safety import TINY, flags

from radsight.config import BATCH_CASTING_PRECISIONS


def outcome(result) -> str:
    """How the command answered: ``clean`` (exit 2, one error line, no traceback), ``traceback`` or
    ``silent`` (exit 0)."""
    if result.exit_code == 0:
        return "silent"
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    if result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output:
        return "clean"
    return "traceback"


def check_clean(result, *fragments: str) -> str:
    kind = outcome(result)
    detail = repr(result.exception) if result.exit_code == 1 else result.output[-2000:]
    assert kind == "clean", f"{kind}: {detail}"
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    for fragment in fragments:
        assert fragment in result.output, result.output
    return line


@dataclass(frozen=True)
class RecipeCase:
    """Overrides of the tiny recipe, or a whole recipe file (``text``), and a fragment of the answer."""

    id: str
    expected: str
    overrides: tuple[str, ...] = ()
    text: str | bytes | None = None


def _bomb(levels: int) -> str:
    """The billion-laughs recipe: each level lists the previous one nine times by alias."""
    lines = ["name: bomb", 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _range_cases() -> list[RecipeCase]:
    """A value just outside the range of every bounded field the issue and the schema name."""
    fields = {
        "stages.0.epochs=-1": "stages.0.epochs: Input should be greater than or equal to 1",
        "stages.0.epochs=0": "stages.0.epochs: Input should be greater than or equal to 1",
        "data.batch_size=0": "data.batch_size: Input should be greater than or equal to 1",
        "data.batch_size=-8": "data.batch_size: Input should be greater than or equal to 1",
        "data.image_size=[0, 0]": "data.image_size.0: Input should be greater than or equal to 8",
        "data.image_size=[64, -64]": "data.image_size.1: Input should be greater than or equal to 8",
        "stages.0.lr=-0.001": "stages.0.lr: Input should be greater than 0",
        "stages.0.lr=.inf": "stages.0.lr: Input should be a finite number",
        "stages.0.lr=.nan": "stages.0.lr: Input should be a finite number",
        "stages.0.weight_decay=-1": "stages.0.weight_decay: Input should be greater than or equal to 0",
        "data.num_workers=-2": "data.num_workers: Input should be greater than or equal to 0",
        "data.split=[0.9, 0.2, -0.1]": "data.split: Value error, split fractions must be non-negative",
        "data.budget=0": "data.budget: Input should be greater than or equal to 1",
        "data.gaze_sigma_fraction=2": "data.gaze_sigma_fraction: Input should be less than or equal to 1",
        "seed=-1": "seed: Input should be greater than or equal to 0",
        "seed=99999999999": "seed: Input should be less than or equal to 4294967295",
        "evaluation.n_boot=0": "evaluation.n_boot: Input should be greater than or equal to 1",
        "evaluation.min_class_count=0": "evaluation.min_class_count: Input should be greater than",
        "trainer.devices=0": "trainer.devices: Value error, a count from 1, -1 (all)",
        "trainer.num_nodes=0": "trainer.num_nodes: Input should be greater than or equal to 1",
        "trainer.threads=0": "trainer.threads: Input should be greater than or equal to 1",
        "trainer.gradient_clip_val=-1": "trainer.gradient_clip_val: Input should be greater than 0",
        "trainer.gradient_clip_val=.inf": "trainer.gradient_clip_val: Input should be a finite number",
        "trainer.limit_train_batches=0": "trainer.limit_train_batches: Value error, a count from 1",
        "trainer.limit_train_batches=2.5": "trainer.limit_train_batches: Value error, a count from 1",
    }
    return [RecipeCase(f"range:{o}", place, (o,)) for o, place in fields.items()]


def _type_cases() -> list[RecipeCase]:
    values = {
        "stages.0.epochs=ten": "stages.0.epochs: Input should be a valid integer",
        "data.batch_size=1.5": "data.batch_size: Input should be a valid integer",
        "data.image_size=128": "data.image_size: Input should be a valid tuple",
        "data.image_size=[a, b]": "data.image_size.0: Input should be a valid integer",
        "data.labels=nodule": "data.labels: Input should be a valid list",
        "stages={classify: 1}": "stages: Input should be a valid list",
        "trainer=gpu": "trainer: Input should be a valid dictionary",
        "data.sources=[{root: /data}]": "data.sources.0.name: Field required",
        "trainer.gpus=2": "trainer.gpus: Extra inputs are not permitted",
        "task=regression": "task: Input should be 'multilabel' or 'multiclass'",
        "method=unknown": "unknown method 'unknown'",
        "stages.0.name=pretrain": "pretrain",
        "model.backbone=not_a_network": "not_a_network",
    }
    return [RecipeCase(f"type:{o}", place, (o,)) for o, place in values.items()]


def _trainer_cases() -> list[RecipeCase]:
    """Settings that parse but cannot run here, and one that fails only against the data."""
    settings = {
        "trainer.accelerator=gpu": "'gpu' needs a GPU and torch finds none here",
        "trainer.accelerator=cuda": "'cuda' needs a GPU and torch finds none here",
        "trainer.accelerator=mps": "trainer: Lightning refuses these settings on this machine",
        "trainer.accelerator=tpu": "trainer: Lightning refuses these settings on this machine",
        "trainer.precision=fp8": "trainer.precision: Input should be 'transformer-engine'",
        "trainer.precision=transformer-engine": "trainer: Lightning refuses these settings",
        "trainer.strategy=bogus": "You selected an invalid strategy name",
        "trainer.strategy=deepspeed": "trainer: Lightning refuses these settings",
        "trainer.devices=abc": "trainer: Lightning refuses these settings",
        f"trainer.devices={(os.cpu_count() or 1) + 1}": "training processes on a machine with",
        "trainer.limit_train_batches=0.0001": "Please increase the `limit_train_batches` argument",
        "stages.0.lr=1e30": "stage 'classify' diverged",
    }
    cases = [RecipeCase(f"trainer:{o}", place, (o,)) for o, place in settings.items()]
    if torch.cuda.is_available():  # the GPU cases hold on a machine without one only
        cases = [case for case in cases if "needs a GPU" not in case.expected]
    precisions = [f"trainer.precision='{p}'" for p in BATCH_CASTING_PRECISIONS]
    return cases + [RecipeCase(f"trainer:{o}", "makes Lightning cast each batch", (o,)) for o in precisions]


def _file_cases() -> list[RecipeCase]:
    """Whole recipe files: YAML that is hostile, broken or not a recipe."""
    return [
        RecipeCase("file:alias-bomb", "YAML aliases (*a0) are not accepted", text=_bomb(9)),
        RecipeCase("file:self-alias", "YAML aliases (*x) are not accepted", text="name: &x [*x]\n"),
        RecipeCase("file:alias-in-set", "YAML aliases (*a) are not accepted", ("name=[&a [1], *a]",)),
        RecipeCase("file:empty", "a recipe must be a mapping of sections", text=""),
        RecipeCase("file:list", "a recipe must be a mapping of sections", text="- name: x\n"),
        RecipeCase("file:scalar", "a recipe must be a mapping of sections", text="just words\n"),
        RecipeCase("file:tab-indent", "not valid YAML", text="name: x\ndata:\n\tsources: []\n"),
        RecipeCase("file:unclosed", "not valid YAML", text="name: [x\n"),
        RecipeCase("file:binary", "cannot read the recipe", text=bytes(range(256)) * 4),
        RecipeCase("file:latin-1", "cannot read the recipe", text="name: caf\xe9\n".encode("latin-1")),
        RecipeCase("file:no-data", "data: Field required", text="name: x\n"),
        RecipeCase(
            "file:unset-variable", "RADSIGHT_CORPUS_UNSET is not set", ("name=${RADSIGHT_CORPUS_UNSET}",)
        ),
        RecipeCase("file:set-without-value", "--set expects key=value", ("stages.0.lr",)),
        RecipeCase("file:set-into-a-value", "is not a section of the recipe", ("seed.x.y=1",)),
    ]


RECIPE_CASES = _range_cases() + _type_cases() + _trainer_cases() + _file_cases()


@pytest.mark.parametrize("case", RECIPE_CASES, ids=[case.id for case in RECIPE_CASES])
def test_a_bad_recipe_is_one_line_and_leaves_no_run(case, tmp_path, recipes_dir, monkeypatch):
    monkeypatch.delenv("RADSIGHT_CORPUS_UNSET", raising=False)
    recipe = recipes_dir / "baseline_cpu.yaml"
    if case.text is not None:
        recipe = tmp_path / "recipe.yaml"
        if isinstance(case.text, bytes):
            recipe.write_bytes(case.text)
        else:
            recipe.write_text(case.text)
    out = tmp_path / "run"
    overrides = [*TINY, *case.overrides] if case.text is None else list(case.overrides)
    result = run_cli("train", recipe, "--out", out, "--no-evaluate", *flags(overrides), expect=None)
    line = check_clean(result, case.expected)
    assert len(line) < 1200
    assert not (out / "model.safetensors").exists()


# --- checkpoints -----------------------------------------------------------------------------------


class Executes:
    """A pickle that would create a file when unpickled, if anything executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _state(good: bytes) -> dict:
    return torch.load(io.BytesIO(good), weights_only=True)


def _saved(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def _other_labels(good: bytes) -> bytes:
    checkpoint = _state(good)
    checkpoint["hyper_parameters"]["label_names"] = ["effusion", "mass"]
    return _saved(checkpoint)


def _other_head(good: bytes) -> bytes:
    checkpoint = _state(good)
    state = checkpoint["state_dict"]
    name = next(key for key in reversed(list(state)) if key.endswith("weight"))
    state[name] = torch.zeros(5, *state[name].shape[1:])
    checkpoint["hyper_parameters"].pop("label_names")
    return _saved(checkpoint)


def _other_backbone(good: bytes) -> bytes:
    checkpoint = _state(good)
    checkpoint["state_dict"] = {
        k.replace("backbone.", "encoder."): v for k, v in checkpoint["state_dict"].items()
    }
    return _saved(checkpoint)


def _zip_of_json(good: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", json.dumps({"state_dict": {}}))
    return buffer.getvalue()


CHECKPOINT_CASES = {
    "empty": (lambda good, marker: b"", "empty checkpoint"),
    "truncated-half": (lambda good, marker: good[: len(good) // 2], "not a readable tensors-only checkpoint"),
    "truncated-header": (lambda good, marker: good[:12], "not a readable tensors-only checkpoint"),
    "one-byte-flipped-header": (
        lambda good, marker: b"\x00" + good[1:],
        "not a readable tensors-only checkpoint",
    ),
    "random-bytes": (lambda good, marker: os.urandom(4096), "not a readable tensors-only checkpoint"),
    "executes-code": (
        lambda good, marker: _saved({"state_dict": {}, "epoch": 0, "payload": Executes(marker)}),
        "not a readable tensors-only checkpoint",
    ),
    "plain-pickle": (
        lambda good, marker: pickle.dumps({"state_dict": {}, "epoch": Executes(marker)}),
        "not a readable tensors-only checkpoint",
    ),
    "zip-of-json": (lambda good, marker: _zip_of_json(good), "not a readable tensors-only checkpoint"),
    "tensor-not-dict": (lambda good, marker: _saved(torch.zeros(3)), "not a Lightning checkpoint"),
    "dict-without-weights": (
        lambda good, marker: _saved({"hello": torch.zeros(3)}),
        "not a Lightning checkpoint",
    ),
    "other-labels": (lambda good, marker: _other_labels(good), "checkpoint of a model for other labels"),
    "other-head": (lambda good, marker: _other_head(good), "checkpoint of another model"),
    "other-backbone": (lambda good, marker: _other_backbone(good), "checkpoint of another model"),
}


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, recipes_dir) -> Path:
    """A tiny run whose only stage looks interrupted: its last.ckpt is there, its end is not."""
    out = tmp_path_factory.mktemp("corpus") / "run"
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", out, "--no-evaluate", *flags(TINY))
    stage = out / "stages" / "classify"
    for name in ("done.json", "stage.safetensors"):
        (stage / name).unlink()
    for name in ("model.safetensors", "config.json"):
        (out / name).unlink()
    return out


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_a_bad_resume_checkpoint_names_the_file_and_how_to_restart(
    name, interrupted_run, tmp_path, recipes_dir
):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    last = run / "stages" / "classify" / "last.ckpt"
    marker = tmp_path / "executed"
    make, expected = CHECKPOINT_CASES[name]
    last.write_bytes(make(last.read_bytes(), marker))
    result = run_cli(
        "train",
        recipes_dir / "baseline_cpu.yaml",
        "--out",
        run,
        "--no-evaluate",
        "--resume",
        *flags(TINY),
        expect=None,
    )
    check_clean(result, str(last), expected, "restart stage 'classify'")
    assert not marker.exists(), "unpickling ran code"
    assert not (run / "model.safetensors").exists()


def test_the_good_checkpoint_of_the_corpus_resumes(interrupted_run, tmp_path, recipes_dir):
    """The cases above fail on their defect: the same run with its own last.ckpt finishes."""
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    run_cli(
        "train", recipes_dir / "baseline_cpu.yaml", "--out", run, "--no-evaluate", "--resume", *flags(TINY)
    )
    assert (run / "model.safetensors").is_file()
