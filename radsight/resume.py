"""Whether a recipe may resume, or a curve reuse, the run a folder stores: the fields where the two
recipes differ, read as today's radsight reads both (a method's options with their defaults filled in),
so that finished epochs or a finished run never become part of another experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radsight.config import Recipe, parse_recipe, read_yaml, recipe_as_written
from radsight.errors import ConfigError
from radsight.run_folder import RECIPE_FILE

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
