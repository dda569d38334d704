"""What a run folder holds, readable without torch, so that commands check their folders before they
import anything heavy: the inference export's config, whether a folder is free for a new run, the
entries radsight writes there (``--force`` removes those and nothing else), and the names under it that
a recipe or a user chooses (kept inside it). Whether a recipe may resume a stored run is
:mod:`radsight.resume`'s.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from radsight.errors import ConfigError

EXPORT_FORMAT = 1
RECIPE_FILE = "recipe.yaml"
INPUT_PROFILE_FILE = "input_profile.json"
OPERATING_POINTS_FILE = "operating_points.json"
ONNX_FILE = "model.onnx"
SCORES_FILE = "image_scores.json"
SHORTCUT_AUDIT_FILE = "shortcut_audit.json"

RUN_ENTRIES = (
    RECIPE_FILE,
    "splits.json",
    "patients.json",
    "stages",
    "train_log.jsonl",
    "model.safetensors",
    "config.json",
    ONNX_FILE,
    INPUT_PROFILE_FILE,
    SHORTCUT_AUDIT_FILE,
    OPERATING_POINTS_FILE,
    "metrics.json",
    SCORES_FILE,
    "report.md",
    "report.html",
    "roc.png",
    "pr.png",
    "reliability.png",
    "confusion.png",
    "overlays.png",
)
"""Every file and folder that training and evaluation write at the top of a run folder."""


def read_json(path: Path) -> Any:
    """A JSON file of a run folder, or one ConfigError line naming it when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def read_optional_json(path: Path) -> Any | None:
    """Like :func:`read_json`, None where the file is absent (a run written before it existed)."""
    return read_json(path) if path.is_file() else None


def check_evaluated_runs(runs: list[Path]) -> None:
    """Runs to compare: at least two, each with the metrics.json and image_scores.json of an evaluation."""
    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs")
    for run in runs:
        if not (run / SCORES_FILE).is_file() or not (run / "metrics.json").is_file():
            raise ConfigError(f"{run}: no metrics.json and {SCORES_FILE} here (evaluate the run first)")


def read_export_config(model_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder, refused in one line when the folder is not an export."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not (model_dir / "model.safetensors").is_file() or not config_path.is_file():
        raise ConfigError(
            f"{model_dir}: not a radsight model folder (needs model.safetensors and config.json)"
        )
    config = read_json(config_path)
    if config.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{config_path}: unsupported export format {config.get('format')!r}")
    return config


def is_launching_process() -> bool:
    """True in the process a user started; False in the ranks that Lightning or a cluster launcher
    (torchrun, SLURM's srun) starts for DDP (they run the same command and must not re-check or
    rewrite the run folder)."""
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` where ``name`` (a recipe name, a variant's name) is one plain folder name, so
    that nothing a recipe says can put outputs outside the folder the user gave."""
    if name in ("", ".", "..") or Path(name).parts != (name,) or any(c in name for c in "/\\\0"):
        raise ConfigError(
            f"{what} {name!r} cannot name a folder under {folder}: use a plain name without "
            "'/', '\\', '..' or a leading '/'"
        )
    return folder / name


def output_stems(names: list[str]) -> list[str]:
    """One output name stem per input file, distinct: the file's stem, with ``-2``, ``-3``... where files
    of the same name come from different folders (so one's overlay never overwrites another's)."""
    used: set[str] = set()
    stems = []
    for name in names:
        stem = candidate = Path(name).stem or "file"
        count = 1
        while candidate in used:
            count += 1
            candidate = f"{stem}-{count}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def check_run_folder(out_dir: Path, *, resume: bool, force: bool) -> None:
    """What ``train`` may do with ``out_dir``: ``--force`` needs a run folder or none (a folder of other
    files is not cleared), ``--resume`` a run to continue, otherwise no run in the way."""
    if force:
        if out_dir.exists() and not (out_dir / RECIPE_FILE).is_file():
            raise ConfigError(
                f"{out_dir}: not a radsight run folder (no {RECIPE_FILE}); --force only starts a run over"
            )
        return
    check_out_dir(out_dir, resume)


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """A new run needs a folder without a run in it; ``resume`` needs one with a run."""
    if resume:
        if not (out_dir / RECIPE_FILE).is_file():
            raise ConfigError(f"{out_dir}: nothing to resume (no {RECIPE_FILE} from an earlier run)")
        return
    if (out_dir / RECIPE_FILE).exists():
        raise ConfigError(
            f"{out_dir} already holds a run: pass --resume to continue it, --force to start it over, "
            "or choose another --out"
        )


def clear_run_folder(out_dir: Path) -> list[str]:
    """Remove what radsight wrote in ``out_dir`` (:data:`RUN_ENTRIES`), keeping every other file; a
    folder without a ``recipe.yaml`` is not a run folder and is refused. Returns the removed names."""
    check_run_folder(out_dir, resume=False, force=True)
    if not out_dir.exists():
        return []
    removed = []
    for name in RUN_ENTRIES:
        entry = out_dir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
        else:
            continue
        removed.append(name)
    return removed
