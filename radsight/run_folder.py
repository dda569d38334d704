"""What a run folder holds, readable without torch, so that commands check their folders before they
import anything heavy: the inference export's config, whether a folder is free for a new run, whether a
recipe may resume the run stored there, the entries radsight writes there (``--force`` removes those and
nothing else), and the names under it that a recipe or a user chooses (kept inside it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radsight.errors import ConfigError

if TYPE_CHECKING:
    from radsight.config import Recipe

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


RESUME_MAY_CHANGE = frozenset({"trainer.progress_bar", "trainer.threads", "data.num_workers"})
"""Recipe fields a resumed run may set differently: how it runs, never what it computes."""


def _flat(value: Any, where: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {where: value}
    return {place: v for key, item in items for place, v in _flat(item, f"{where}.{key}".lstrip(".")).items()}


def stored_recipe(out_dir: Path) -> Recipe:
    """The recipe a run folder's ``recipe.yaml`` stores, ``${VAR}`` read from the environment."""
    from radsight.config import parse_recipe, read_yaml

    path = out_dir / RECIPE_FILE
    raw = read_yaml(path.read_text(), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    return parse_recipe(raw, str(path))


def _method_options(recipe: Recipe) -> dict[str, Any] | None:
    """The recipe's ``model:`` section with its method's defaults filled in, None where today's method
    refuses it (the raw section is compared then)."""
    from radsight.methods.registry import method_class

    try:
        return method_class(recipe.method).parse_options(recipe.model).model_dump(mode="json")
    except ConfigError:
        return None


def recipe_changes(recipe: Recipe, out_dir: Path) -> list[tuple[str, Any, Any]]:
    """Where ``recipe`` differs from the one ``out_dir/recipe.yaml`` stores, as (field, stored, given).

    A field counts as the same when it is written the same (``${VAR}`` included) or has the same value;
    one the stored recipe lacks (written by an older radsight) counts as the default it has today, so
    the question is whether the stored recipe, read today, trains what ``recipe`` would."""
    from radsight.config import recipe_as_written

    stored = stored_recipe(out_dir)
    pairs = [(recipe_as_written(r), r.model_dump(mode="json")) for r in (stored, recipe)]
    (stored_written, stored_value), (given_written, given_value) = (tuple(map(_flat, p)) for p in pairs)
    changed = [
        key
        for key in sorted(set(stored_written) | set(given_written))
        if key not in RESUME_MAY_CHANGE
        and stored_written.get(key) != given_written.get(key)
        and stored_value.get(key) != given_value.get(key)
    ]
    if any(key.startswith("model.") for key in changed):
        # the model section is the method's to fill (importing it costs a second, so only when needed)
        options = [_method_options(r) for r in (stored, recipe)]
        if None not in options:
            stored_value |= _flat({"model": options[0]})
            given_value |= _flat({"model": options[1]})
            changed = [k for k in changed if stored_value.get(k) != given_value.get(k)]
    return [(key, stored_value.get(key), given_value.get(key)) for key in changed]


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    """``field (stored -> given)`` for the first four changes, and how many more."""
    shown = ", ".join(f"{key} ({stored!r} -> {given!r})" for key, stored, given in changes[:4])
    return shown + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def check_resumable(recipe: Recipe, out_dir: Path) -> None:
    """A run resumes with the recipe and flags it started with: refused in one line naming the fields
    that differ from its ``recipe.yaml`` (more data, other epochs, another seed would make the finished
    epochs and the stored split part of another experiment)."""
    if changes := recipe_changes(recipe, out_dir):
        raise ConfigError(
            f"{out_dir / RECIPE_FILE}: --resume continues the run as it started, but the recipe and "
            f"flags differ at {describe_changes(changes)}; resume with the run's own recipe and flags, "
            "or start over with --force or another --out"
        )


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
