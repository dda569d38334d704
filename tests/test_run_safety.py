"""Run folders under stress: resume repeats an uninterrupted run and refuses another recipe, one
process per folder, no half-written or temporary files after a kill or a full disk, files that honour
the umask, outputs that stay under --out, and exports that neither keep secrets nor make a model
folder fetch or open anything."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli
from PIL import Image
from safetensors.torch import load_file
from test_run_splits import write_dataset

from radsight.atomic import atomic_write, remove_stale_temporaries, write_json
from radsight.config import Recipe, load_recipe, parse_recipe, recipe_as_written
from radsight.errors import ConfigError, OutputError
from radsight.folder_lock import LOCK_FILE, locked_folder
from radsight.resume import recipe_changes
from radsight.run_folder import inside, output_stems
from radsight.train import EpochLog, RepeatableEpochs, train

TINY = [
    "model.backbone=tiny_cnn",
    "data.sources.0.options={n: 40, size: [32, 32], seed: 1}",
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "stages.0.epochs=1",
    "trainer.progress_bar=false",
    "evaluation.n_boot=10",
]


def flags(overrides: list[str]) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def error_line(result) -> str:
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, recipes_dir) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", out, *flags(TINY))
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# --- resume ------------------------------------------------------------------------------------------


class Killed(Exception):
    """Stands in for a kill: raised at the start of an epoch, after the previous epoch's checkpoint."""


def _three_epochs(recipes_dir: Path, scheduler: str = "cosine"):
    changes = ["stages.0.epochs=3", "data.augment=true", f"stages.0.scheduler={scheduler}"]
    return load_recipe(recipes_dir / "baseline_cpu.yaml", [*TINY, *changes])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _killed_at_epoch(monkeypatch, epoch: int, repeat_epochs: bool = True) -> None:
    start = RepeatableEpochs.on_train_epoch_start

    def killing(self, trainer, module):
        if trainer.current_epoch == epoch:
            raise Killed
        if repeat_epochs:
            start(self, trainer, module)

    monkeypatch.setattr(RepeatableEpochs, "on_train_epoch_start", killing)


@pytest.mark.parametrize("kill_at", [1, 2])
def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(
    kill_at, tmp_path, recipes_dir, monkeypatch
):
    recipe = _three_epochs(recipes_dir)
    train(recipe, tmp_path / "whole", require_test=False)
    with monkeypatch.context() as patch:
        _killed_at_epoch(patch, kill_at)
        with pytest.raises(Killed):
            train(recipe, tmp_path / "resumed", require_test=False)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    train(recipe, tmp_path / "resumed", resume=True, require_test=False)
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    logs = [(tmp_path / run / "train_log.jsonl").read_text().splitlines() for run in ("whole", "resumed")]
    losses = [[json.loads(line)["train/loss"] for line in lines] for lines in logs]
    assert losses[0] == losses[1] and len(losses[0]) == 3


def test_a_run_killed_mid_epoch_resumes_at_its_batch_bit_for_bit(tmp_path, recipes_dir, monkeypatch):
    """With ``trainer.checkpoint_every_n_steps`` the checkpoint holds the loader's place in the epoch and
    the generators' states: the resumed run trains on the rest of that epoch only, as the whole run did."""
    changes = [
        "stages.0.epochs=3",
        "data.augment=true",
        "model.dropout=0.3",
        "trainer.checkpoint_every_n_steps=2",
    ]
    recipe = load_recipe(recipes_dir / "baseline_cpu.yaml", [*TINY, *changes])
    train(recipe, tmp_path / "whole", require_test=False)
    end = RepeatableEpochs.on_train_batch_end

    def killing(self, trainer, module, outputs, batch, batch_idx):
        end(self, trainer, module, outputs, batch, batch_idx)
        if (trainer.current_epoch, batch_idx) == (1, 2):
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(RepeatableEpochs, "on_train_batch_end", killing)
        with pytest.raises(Killed):
            train(recipe, tmp_path / "resumed", require_test=False)
    checkpoint = torch.load(tmp_path / "resumed" / "stages" / "classify" / "last.ckpt", weights_only=True)
    (place,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert place["epoch"] == 1 and place["batches"] in (1, 2)  # cut mid-epoch
    train(recipe, tmp_path / "resumed", resume=True, require_test=False)
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    for run in ("whole", "resumed"):  # the step and the epoch checkpoints replace one file
        stage = tmp_path / run / "stages" / "classify"
        assert [path.name for path in stage.glob("*.ckpt")] == ["last.ckpt"]


def test_without_per_epoch_seeds_and_schedule_catch_up_the_resumed_run_differs(
    tmp_path, recipes_dir, monkeypatch
):
    """What the test above guards against: Lightning's resume alone does not repeat the run."""
    recipe = _three_epochs(recipes_dir)
    monkeypatch.setattr(RepeatableEpochs, "on_train_epoch_start", lambda self, trainer, module: None)
    train(recipe, tmp_path / "whole", require_test=False)
    _killed_at_epoch(monkeypatch, 1, repeat_epochs=False)
    with pytest.raises(Killed):
        train(recipe, tmp_path / "resumed", require_test=False)
    monkeypatch.setattr(RepeatableEpochs, "on_train_epoch_start", lambda self, trainer, module: None)
    train(recipe, tmp_path / "resumed", resume=True, require_test=False)
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert not all(torch.equal(whole[name], resumed[name]) for name in whole)


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ("stages.0.epochs=3", "stages.0.epochs (1 -> 3)"),
        ("data.sources.0.options.n=60", "data.sources.0.options.n (40 -> 60)"),
        ("seed=7", "seed (0 -> 7)"),
        ("data.augment=false", "data.augment (True -> False)"),
        ("evaluation.n_boot=99", "evaluation.n_boot (10 -> 99)"),
    ],
)
def test_resume_refuses_another_recipe_in_one_line_and_changes_nothing(
    change, shown, tiny_run, tmp_path, recipes_dir
):
    run = copy_run(tiny_run, tmp_path)
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    result = run_cli(
        "train",
        recipes_dir / "baseline_cpu.yaml",
        "--out",
        run,
        "--resume",
        *flags([*TINY, change]),
        expect=2,
    )
    line = error_line(result)
    assert f"{run / 'recipe.yaml'}: --resume continues the run as it started" in line and shown in line
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_resume_accepts_how_the_run_runs_and_a_moved_variable(tiny_run, tmp_path, recipes_dir):
    run = copy_run(tiny_run, tmp_path)
    same = [*TINY, "trainer.threads=1", "data.num_workers=0", "trainer.progress_bar=true"]
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", run, "--resume", *flags(same))


def test_a_field_an_older_run_lacks_counts_as_its_default_today(tmp_path):
    """A run written before a method option existed resumes (and a curve reuses it) when the option is
    left at today's default, and not when it is set otherwise."""
    raw = {
        "name": "older",
        "method": "captioning",
        "data": {"sources": [{"name": "phantom", "options": {"n": 40}}], "labels": ["opacity"]},
        "model": {"backbone": "tiny_cnn", "writing": {"strategy": "beam"}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    assert recipe_as_written(parse_recipe(raw))["model"] == raw["model"]  # the method fills its defaults

    def writing(length_penalty: float) -> Recipe:
        chosen = {"strategy": "beam", "length_penalty": length_penalty}
        return parse_recipe({**raw, "model": {**raw["model"], "writing": chosen}})

    assert recipe_changes(writing(1.0), tmp_path) == []
    assert recipe_changes(writing(0.5), tmp_path) == [("model.writing.length_penalty", 1.0, 0.5)]


def test_a_redone_epoch_replaces_its_log_line(tmp_path):
    path = tmp_path / "train_log.jsonl"
    earlier = [("linear", 0), ("classify", 0), ("classify", 1), ("classify", 2)]
    path.write_text("".join(json.dumps({"stage": s, "epoch": e, "old": True}) + "\n" for s, e in earlier))
    trainer = types.SimpleNamespace(is_global_zero=True, callback_metrics={}, current_epoch=1, world_size=1)
    EpochLog(path, "classify").on_train_epoch_end(trainer, None)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["stage"], e["epoch"], "old" in e) for e in entries] == [
        ("linear", 0, True),
        ("classify", 0, True),
        ("classify", 1, False),
    ]


# --- one process per folder ---------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from radsight.folder_lock import locked_folder
with locked_folder(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'held'``."""
    folder = tmp_path / "held"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert process.stdout.readline().strip() == "holding"
    yield folder, process
    process.kill()
    process.wait()


def test_a_second_train_on_a_folder_in_use_is_refused_with_the_holders_pid(holder, recipes_dir):
    folder, process = holder
    result = run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", folder, *flags(TINY), expect=2)
    assert f"is in use by another radsight process (pid {process.pid}" in error_line(result)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]


def test_a_second_predict_on_a_folder_in_use_is_refused(holder, tiny_run, tmp_path):
    folder, process = holder
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    result = run_cli("predict", "--model", tiny_run, image, "--out", folder, expect=2)
    assert f"(pid {process.pid}" in error_line(result)
    assert not (folder / "predictions.json").exists()


def test_the_lock_of_a_dead_process_is_taken_over(holder):
    folder, process = holder
    process.kill()
    process.wait()
    assert (folder / LOCK_FILE).read_text().strip() == str(process.pid)  # left behind by the dead holder
    with locked_folder(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        with locked_folder(folder):  # the holder may take its own folder again
            pass


def test_a_folder_created_for_a_failed_command_is_removed(tmp_path):
    with pytest.raises(ConfigError), locked_folder(tmp_path / "new"):
        raise ConfigError("failed before writing")
    assert not (tmp_path / "new").exists()


# --- no half-written or temporary files ----------------------------------------------------------------


def test_temporary_files_of_a_killed_run_are_removed_at_the_next_start(tiny_run, tmp_path, recipes_dir):
    run = copy_run(tiny_run, tmp_path)
    stage = run / "stages" / "classify"
    stale = [stage / ".last.ckpt.k3j_a9x2.tmp", run / ".config.json.0a1b2c3d.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    mine = run / ".notes.tmp"
    mine.write_text("not radsight's")
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", run, "--resume", *flags(TINY))
    assert not any(path.exists() for path in stale) and mine.read_text() == "not radsight's"


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_file(
    tmp_path, recipes_dir, monkeypatch
):
    def partial_save(checkpoint, path):
        """As torch.save fails on a full disk: a RuntimeError about a file position, raised while
        handling the OSError."""
        path.write_bytes(b"PK\x03\x04 part of a checkpoint")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904 - as torch raises it

    monkeypatch.setattr("radsight.checkpoints._save_torch", partial_save)
    out = tmp_path / "run"
    result = run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", out, *flags(TINY), expect=2)
    line = error_line(result)
    assert f"{out / 'stages' / 'classify'}" in line
    assert ".ckpt: cannot write (no space left on device); nothing was left half-written" in line
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.ckpt"))
    assert not (out / "model.safetensors").exists()


def test_a_full_disk_during_predict_is_one_line_and_leaves_no_partial_file(tiny_run, tmp_path, monkeypatch):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    save = Image.Image.save

    def partial_save(self, fp, format=None, **params):
        save(self, fp, format=format, **params)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", partial_save)
    out = tmp_path / "predicted"
    result = run_cli("predict", "--model", tiny_run, image, "--out", out, expect=2)
    assert "scan.overlay.png: cannot write (no space left on device)" in error_line(result)
    assert not out.exists()  # the folder this predict made goes again: nothing in it was finished


def test_a_write_error_reported_by_a_library_in_rust_names_the_file(tmp_path):
    def safetensors_like(path):
        path.write_bytes(b"x")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(OutputError, match=r"model.safetensors: cannot write \(no space left on device\)"):
        atomic_write(tmp_path / "model.safetensors", safetensors_like)
    assert list(tmp_path.iterdir()) == []

    def not_the_disk(path):
        raise ValueError("not a write problem")

    with pytest.raises(ValueError, match="not a write problem"):
        atomic_write(tmp_path / "x.json", not_the_disk)
    assert list(tmp_path.iterdir()) == []


def test_only_radsights_own_temporary_names_are_removed(tmp_path):
    for name in (".a.json.abcd1234.tmp", ".x.tmp", "a.json.abcd1234.tmp", ".b.png.short.tmp"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".a.json.abcd1234.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.png.short.tmp", ".x.tmp", "a.json.abcd1234.tmp"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode


def test_a_trained_run_honours_the_umask(tiny_run):
    mask = os.umask(0)
    os.umask(mask)
    expected = 0o666 & ~mask
    for name in ("model.safetensors", "config.json", "recipe.yaml", "metrics.json", "report.md", "roc.png"):
        assert (tiny_run / name).stat().st_mode & 0o777 == expected, name


# --- outputs stay under --out ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../escape", "..", ".", "a/b", "a\\b", "", "x\0y"])
def test_a_name_that_is_not_one_plain_folder_name_is_refused(name, tmp_path):
    with pytest.raises(ConfigError, match="cannot name a folder under"):
        inside(tmp_path, name, "recipe name")


def test_plain_names_stay_inside(tmp_path):
    assert inside(tmp_path, "baseline_cpu", "recipe name") == tmp_path / "baseline_cpu"
    assert inside(tmp_path, "ablation:variant..2", "recipe name") == tmp_path / "ablation:variant..2"


@pytest.mark.parametrize("name", ["../escape", "/absolute-curve-target"])
def test_curve_refuses_a_hostile_recipe_name_before_writing_anywhere(name, tmp_path, recipes_dir):
    base = yaml.safe_load((recipes_dir / "baseline_cpu.yaml").read_text())
    base["name"] = name if not name.startswith("/") else str(tmp_path / "outside")
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(yaml.safe_dump(base))
    out = tmp_path / "curve"
    result = run_cli("curve", recipe, "--out", out, "--budgets", "2", "--seeds", "1", *flags(TINY), expect=2)
    assert "recipe name" in error_line(result) and "cannot name a folder under" in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.yaml"]


def test_predict_names_the_overlays_of_two_files_of_one_name_apart(tiny_run, tmp_path):
    files = []
    for folder, seed in (("a", 0), ("b", 1)):
        (tmp_path / folder).mkdir()
        pixels = np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "scan.png")
        files.append(tmp_path / folder / "scan.png")
    out = tmp_path / "predicted"
    run_cli("predict", "--model", tiny_run, *files, "--out", out)
    rows = json.loads((out / "predictions.json").read_text())["files"]
    assert [row["overlay"] for row in rows] == ["scan.overlay.png", "scan-2.overlay.png"]
    assert all((out / row["overlay"]).is_file() for row in rows)
    assert output_stems(["x/a.png", "y/a.png", "a-2.png", "z/a.dcm"]) == ["a", "a-2", "a-2-2", "a-3"]


# --- exports keep no secrets and name nothing to fetch or open -----------------------------------------


def test_variables_are_stored_as_written_and_read_again_where_data_is_needed(
    tmp_path, recipes_dir, monkeypatch
):
    data = write_dataset(tmp_path / "secret-data-folder")
    monkeypatch.setenv("RADSIGHT_SAFETY_ROOT", str(data))
    source = "{name: manifest, root: '${RADSIGHT_SAFETY_ROOT}', options: {label_columns: [nodule, opacity]}}"
    changes = [f"data.sources=[{source}]", "data.image_size=[64, 64]", "data.augment=false"]
    run = tmp_path / "run"
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", run, *flags([*TINY, *changes]))
    for name in ("recipe.yaml", "config.json", "report.md", "report.html", "metrics.json", "splits.json"):
        assert "secret-data-folder" not in (run / name).read_text(), name
    assert "${RADSIGHT_SAFETY_ROOT}" in (run / "recipe.yaml").read_text()
    assert json.loads((run / "config.json").read_text())["recipe"]["data"]["sources"][0]["root"] == (
        "${RADSIGHT_SAFETY_ROOT}"
    )
    evaluated = tmp_path / "evaluated"
    run_cli("evaluate", "--model", run, "--out", evaluated)  # the run's own split: the variable is read here
    assert json.loads((evaluated / "metrics.json").read_text()) == json.loads(
        (run / "metrics.json").read_text()
    )
    monkeypatch.delenv("RADSIGHT_SAFETY_ROOT")
    run_cli("predict", "--model", run, data / "img00.png", "--out", tmp_path / "predicted")  # needs no data


def _edit_config(run: Path, tmp_path: Path, edit) -> Path:
    model = copy_run(run, tmp_path)
    config = json.loads((model / "config.json").read_text())
    edit(config["recipe"])
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("backbone", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:/etc", "hf_hub:x/y"])
def test_a_model_folder_naming_a_hub_backbone_is_refused_without_reaching_out(
    backbone, tiny_run, tmp_path, monkeypatch
):
    import huggingface_hub

    reached = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: reached.append(a))
    model = _edit_config(tiny_run, tmp_path, lambda recipe: recipe["model"].update(backbone=backbone))
    image = tmp_path / "scan.png"
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8) + np.arange(40, dtype=np.uint8)).save(image)
    result = run_cli("predict", "--model", model, image, "--out", tmp_path / "out", expect=2)
    line = error_line(result)
    assert f"{model / 'config.json'}: recipe.model.backbone: {backbone!r} names a download" in line
    assert reached == []


def test_evaluating_on_a_source_opens_no_path_a_model_folder_names(tiny_run, tmp_path, monkeypatch):
    opened = []
    real_open = Path.open

    def watched(self, *args, **kwargs):
        opened.append(str(self))
        return real_open(self, *args, **kwargs)

    def plant(recipe):
        recipe["model"]["pretrained"] = str(tmp_path / "planted-weights.pth")
        recipe["data"]["sources"][0]["root"] = str(tmp_path / "planted-data")

    model = _edit_config(tiny_run, tmp_path, plant)
    monkeypatch.setattr(Path, "open", watched)
    options = ["--option", "n=20", "--option", "size=[32, 32]", "--option", "seed=5"]
    run_cli(
        "evaluate",
        "--model",
        model,
        "--source",
        "phantom",
        *options,
        "--out",
        tmp_path / "ev",
        "--n-boot",
        "5",
    )
    assert not [path for path in opened if "planted" in path]
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["name: bomb", 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]  # 9**11 strings
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml: line 3: YAML aliases \(\*a0\) are not accepted"):
        load_recipe(recipe)


def test_an_epochs_order_and_item_seeds_depend_on_seed_stage_and_epoch_only():
    from radsight.data.epoch_order import EpochOrder, SeededItems

    dealt = list(EpochOrder(10, seed=3, stage=1, epoch=4))
    assert sorted(index for _, index in dealt) == list(range(10))
    assert dealt == list(EpochOrder(10, seed=3, stage=1, epoch=4))
    later = EpochOrder(10, seed=3, stage=1)
    later.set_epoch(5)
    assert list(later) != dealt and list(EpochOrder(10, seed=3, stage=2, epoch=4)) != dealt
    draws = SeededItems(_RandomItems())
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    first = [draws[key] for key in dealt]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global state is left as it was
    assert first == [draws[key] for key in reversed(dealt)][::-1]  # each item's draw is its own


class _RandomItems:
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> float:
        return float(torch.rand(()))
