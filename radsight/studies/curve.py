"""Label-efficiency curves: train and evaluate arms (a recipe plus overrides) at several label budgets and
seeds, and test each arm against a baseline arm at every budget.

The patient split (and so the test set) stays fixed by ``data.split_seed``, set in every run to the
recipe's own (its ``data.split_seed``, else its ``seed``); each (budget, seed) only draws a nested label
subset of the training split (``data.budget`` / ``data.budget_seed``, ``all``: no budget) and trains with
that seed.

Pre-training is shared across budgets: an arm's label-free stages (those training on the ``unlabelled``
or ``reports`` pool, which a label budget does not touch) are trained once into ``<arm>/pretrain``, and
every (budget, seed) run trains the arm's other stages from that encoder (``model.pretrained:
run:<arm>/pretrain``). An arm with ``start_from: <earlier arm>`` instead starts every (budget, seed) run
from the encoder of that arm's run at the same budget and seed (its ``stages`` then continue it, e.g. a
distil stage after a global-only arm): stages that two arms share are trained once, and every arm sees
the same start.

A curve file (YAML) lists the arms::

    budgets: [10, 30, all]
    seeds: 3
    baseline: scratch            # default: the first arm
    arms:
      - {name: scratch, recipe: curriculum_cpu.yaml, stages: [finetune]}
      - {name: curriculum, recipe: curriculum_cpu.yaml, overrides: [model.order=auto]}

``recipe`` is relative to the curve file; ``stages`` keeps those of the recipe's stages (default all);
``start_from`` names an arm listed before this one. An arm with ``pretrain_recipe`` (relative to the
curve file too) trains that recipe once, on its own data and labels, into ``<arm>/pretrain``, and every
run of the arm starts from its encoder: supervised pre-training on another dataset, compared like any
label-free pre-training.

Each point is the mean test metric over seeds with its patient-bootstrap 95% interval (every seed's run
scored on the same resampled patients), and the paired test of the seed-mean against the baseline's
(:func:`radsight.metrics.classification.runs_mean_test`); every per-seed number is kept in
``curve.json``: the budget as ``labels_per_class`` (None for all) and the labelled training images it
amounts to. Where the test images carry lung masks, the share and ratio of attention inside them
(:mod:`radsight.metrics.attention`; the evaluation's maps, native or the recipe's explanation method) is
tabulated per arm, and ``attention.png`` shows the maps of each arm's model at the largest budget on the
same images. The shortcut audit's masked-image probe runs once for the curve (:func:`audit_once`).

A finished (budget, seed) run keeps its model, metrics and report but not its Lightning checkpoints
(weights plus optimiser state, only needed to resume that run): a curve of 150 runs would otherwise hold
some 12 GB at 48 px.

``--resume`` reads finished runs and pre-trainings back instead of training them, each first checked to
be what the curve would train now (:func:`check_finished_runs`): a curve resumed with other recipes
would otherwise mix runs of two experiments in one table. A curve folder that was moved resumes too: its
runs name their start by absolute path, and :func:`follow_a_moved_curve` points them to its new place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError

from radsight.atomic import write_json, write_text
from radsight.config import LABEL_FREE_POOLS, Recipe, Strict, load_recipe, read_yaml, validation_problems
from radsight.data.assemble import build_splits
from radsight.errors import ConfigError, DataError
from radsight.metrics.classification import runs_mean_test, runs_mean_with_ci
from radsight.nn.weights import RUN_PREFIX
from radsight.report.cells import ci_cell, number
from radsight.report.plots import Undrawable, label_efficiency_curves
from radsight.report.scores import ImageScores
from radsight.resume import describe_changes, recipe_changes
from radsight.run_folder import RECIPE_FILE, SHORTCUT_AUDIT_FILE, inside
from radsight.train import audit_training_split, train, train_and_evaluate

log = logging.getLogger(__name__)

Budget = int | Literal["all"]
ATTENTION_KEYS = ("lungs_attribution_share", "lungs_attention_ratio")
ATTENTION_IMAGES = 4  # columns of attention.png
PROBE_OFF = "data.shortcut_audit.probe=false"


class ArmSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    recipe: Path
    overrides: list[str] = Field(default_factory=list)
    stages: list[str] | None = Field(None, description="the recipe's stages this arm trains (default all)")
    pretrain_recipe: Path | None = Field(
        None,
        description="a recipe trained once, on its own data and labels, whose encoder every run of the arm "
        "starts from (in-domain supervised pre-training); of the curve's overrides only trainer.* reach it",
    )
    start_from: str | None = Field(
        None, description="an earlier arm whose run at the same budget and seed gives this arm's encoder"
    )


class CurveSpec(Strict):
    arms: list[ArmSpec] = Field(min_length=1)
    budgets: list[Budget] = Field(min_length=1)
    seeds: int = Field(3, ge=1)
    metric: str = "auroc_macro"
    baseline: str | None = Field(None, description="the arm every other is tested against (default: first)")
    n_boot: int = Field(1000, ge=1)


def load_curve_file(path: Path) -> CurveSpec:
    """A curve file, its recipe paths made relative to its folder; one ConfigError line if invalid."""
    try:
        raw = yaml.safe_load(path.read_text())
        spec = CurveSpec.model_validate(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    except ValidationError as error:
        raise ConfigError(f"{path}: invalid curve file ({validation_problems(error)})") from None
    names = [arm.name for arm in spec.arms]
    if len(set(names)) < len(names):
        raise ConfigError(f"{path}: arm names must differ, got {names}")
    if spec.baseline is not None and spec.baseline not in names:
        raise ConfigError(f"{path}: baseline {spec.baseline!r} is not an arm; arms: {names}")
    for index, arm in enumerate(spec.arms):
        if arm.start_from is not None and arm.start_from not in names[:index]:
            raise ConfigError(
                f"{path}: arm {arm.name!r}: start_from {arm.start_from!r} is not an arm listed before it; "
                f"earlier arms: {names[:index]}"
            )
        if arm.start_from is not None and arm.pretrain_recipe is not None:
            raise ConfigError(
                f"{path}: arm {arm.name!r}: start_from and pretrain_recipe both choose its start; keep one"
            )
    for arm in spec.arms:
        arm.recipe = arm.recipe if arm.recipe.is_absolute() else path.parent / arm.recipe
        if not arm.recipe.is_file():
            raise ConfigError(f"{path}: arm {arm.name!r}: recipe {arm.recipe} not found")
        if arm.pretrain_recipe is not None:
            if not arm.pretrain_recipe.is_absolute():
                arm.pretrain_recipe = path.parent / arm.pretrain_recipe
            if not arm.pretrain_recipe.is_file():
                raise ConfigError(
                    f"{path}: arm {arm.name!r}: pretrain_recipe {arm.pretrain_recipe} not found"
                )
    return spec


def is_curve_file(path: Path) -> bool:
    """Whether ``path`` is a curve file (a mapping with ``arms``) rather than a recipe."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and "arms" in raw


def arm_overrides(base: Recipe, budget: Budget | None, seed: int) -> list[str]:
    """The overrides of the run at ``budget`` labels per class (``all``: every label) and ``seed``: the
    budget, its draw and the training seed change; the patient split stays the base recipe's."""
    split_seed = base.seed if base.data.split_seed is None else base.data.split_seed
    return [
        f"data.budget={'null' if budget in (None, 'all') else budget}",
        f"data.budget_seed={seed}",
        f"seed={seed}",
        f"data.split_seed={split_seed}",
    ]


def _with(recipe: Recipe, stages: Sequence[str] | None = None, pretrained: str | None = None) -> Recipe:
    """``recipe`` keeping only ``stages`` (by name, in the recipe's order), starting from ``pretrained``."""
    raw = recipe.model_dump(mode="json")
    if stages is not None:
        unknown = [name for name in stages if name not in [s["name"] for s in raw["stages"]]]
        if unknown:
            raise ConfigError(f"{recipe.name}: arm stages {unknown} are not stages of the recipe")
        raw["stages"] = [s for s in raw["stages"] if s["name"] in stages]
    if pretrained is not None:
        raw["model"] = {**raw["model"], "pretrained": pretrained}
    return Recipe.model_validate(raw)


def label_free_stages(recipe: Recipe) -> list[str]:
    """The stages that train on a pool a label budget does not change (unlabelled images, reports)."""
    from radsight.methods.registry import method_class

    cls = method_class(recipe.method)
    return [stage.name for stage in recipe.stages if cls.data_of(stage).pool in LABEL_FREE_POOLS]


@dataclass
class Arm:
    """One arm as the curve trains it: its recipe at a (budget, seed) and where its pre-training went."""

    spec: ArmSpec
    overrides: list[str]
    base: Recipe
    pretrained: str | None = None
    stages: list[str] | None = None
    pretraining: Recipe | None = None
    """What the arm trains once into ``<arm>/pretrain`` (None: nothing), set by :func:`plan_pretraining`."""

    def recipe(self, budget: Budget, seed: int, out_dir: Path) -> Recipe:
        overrides = [*self.overrides, *self.spec.overrides, *arm_overrides(self.base, budget, seed)]
        pretrained = self.pretrained
        if self.spec.start_from is not None:
            pretrained = f"{RUN_PREFIX}{start_run(out_dir, self.spec.start_from, budget, seed).resolve()}"
        return _with(load_recipe(self.spec.recipe, overrides), self.stages, pretrained)


def run_folder(out_dir: Path, arm: str, budget: Budget, seed: int) -> Path:
    return out_dir / arm / f"b{budget}-s{seed}"


def pretrain_folder(out_dir: Path, arm: str) -> Path:
    """Where ``arm`` trains its pre-training once, for every budget and seed."""
    return out_dir / arm / "pretrain"


def start_run(out_dir: Path, arm: str, budget: Budget, seed: int) -> Path:
    """The run of ``arm`` at ``budget`` and ``seed`` another arm starts from, refused in one line when it
    did not finish."""
    folder = run_folder(out_dir, arm, budget, seed)
    if not (folder / "model.safetensors").is_file():
        raise DataError(folder, f"arm {arm!r} has no finished run at budget {budget}, seed {seed}")
    return folder


def drop_checkpoints(run_dir: Path) -> None:
    """Delete a finished run's Lightning checkpoints; its ``metrics.json`` is what ``--resume`` reads."""
    for checkpoint in (run_dir / "stages").glob("*/*.ckpt"):
        checkpoint.unlink()


def plan_pretraining(arm: Arm, out_dir: Path) -> None:
    """Choose the stages and the start of the arm's runs, and what it pre-trains once into
    ``out_dir/<arm>/pretrain`` (its ``pretrain_recipe`` whole, or its label-free stages, or nothing);
    every run of the arm then starts from that encoder."""
    folder = pretrain_folder(out_dir, arm.spec.name).resolve()
    if arm.spec.pretrain_recipe is not None:
        arm.stages, arm.pretrained = arm.spec.stages, f"{RUN_PREFIX}{folder}"
        trainer = [override for override in arm.overrides if override.startswith("trainer.")]
        arm.pretraining = load_recipe(arm.spec.pretrain_recipe, trainer)
        return
    free = label_free_stages(arm.base)
    rest = [stage.name for stage in arm.base.stages if stage.name not in free]
    if not free or not rest or arm.spec.start_from is not None:
        arm.stages = None if arm.spec.stages is None else list(arm.spec.stages)
        return
    arm.stages, arm.pretrained, arm.pretraining = rest, f"{RUN_PREFIX}{folder}", _with(arm.base, free)


def pretrain(arm: Arm, out_dir: Path, resume: bool) -> None:
    """Train the arm's pre-training into ``out_dir/<arm>/pretrain``, unless it has none or ``resume``
    finds it finished there."""
    folder = pretrain_folder(out_dir, arm.spec.name)
    if arm.pretraining is None or (resume and (folder / "model.safetensors").is_file()):
        return
    stages = [stage.name for stage in arm.pretraining.stages]
    log.info("%s: pre-training %s once for every budget", arm.spec.name, stages)
    train(arm.pretraining, folder, resume=resume and (folder / "recipe.yaml").is_file(), require_test=False)


def check_reused(recipe: Recipe, run_dir: Path) -> None:
    """A finished run that ``--resume`` reads instead of training must be the run the curve would train
    (the same recipe, budget, seed and start): one line naming its folder and the first fields that
    differ, since a run of other data or epochs would enter the table unnoticed."""
    if changes := recipe_changes(recipe, run_dir):
        raise ConfigError(
            f"{run_dir / RECIPE_FILE}: --resume reuses finished runs only of the same recipe, and this one "
            f"differs at {describe_changes(changes)}; rerun the curve into another --out, or remove "
            f"{run_dir} to train it again"
        )


def follow_a_moved_curve(arms: Sequence[Arm], budgets: Sequence[Budget], seeds: int, out_dir: Path) -> None:
    """A curve folder that was moved or copied: each run's ``recipe.yaml`` names the encoder it started
    from by the folder's old absolute path. Where that path ends at the ``<arm>/<folder>`` the curve names
    now, the run started from that same place in the curve, and its recipe is rewritten to the new path;
    ``--resume`` then checks, reads and continues the run like any other. Other differences stay for
    :func:`check_finished_runs` and ``train --resume`` to refuse."""
    for arm in arms:
        for budget in budgets:
            for seed in range(seeds):
                path = run_folder(out_dir, arm.spec.name, budget, seed) / RECIPE_FILE
                if not path.is_file():
                    continue
                try:
                    now = arm.recipe(budget, seed, out_dir).model.get("pretrained")
                except DataError:  # the arm it starts from has no run there: nothing to follow
                    continue
                stored = read_yaml(path.read_text(), str(path))
                model = stored.get("model") if isinstance(stored, dict) else None
                before = model.get("pretrained") if isinstance(model, dict) else None
                if _same_place_in_a_curve(before, now) and before != now:
                    model["pretrained"] = now
                    write_text(path, yaml.safe_dump(stored, sort_keys=False))
                    log.info("%s: the curve folder moved; this run now names its start %s", path.parent, now)


def _same_place_in_a_curve(before: Any, now: Any) -> bool:
    """Both are ``run:`` paths ending at the same ``<arm>/<folder>`` (every start a curve names is one)."""
    if not all(isinstance(value, str) and value.startswith(RUN_PREFIX) for value in (before, now)):
        return False
    return Path(before.removeprefix(RUN_PREFIX)).parts[-2:] == Path(now.removeprefix(RUN_PREFIX)).parts[-2:]


def check_finished_runs(arms: Sequence[Arm], budgets: Sequence[Budget], seeds: int, out_dir: Path) -> None:
    """Check, before anything trains, every finished pre-training and (budget, seed) run that ``--resume``
    would read (:func:`check_reused`)."""
    for arm in arms:
        folder = pretrain_folder(out_dir, arm.spec.name)
        if arm.pretraining is not None and (folder / "model.safetensors").is_file():
            check_reused(arm.pretraining, folder)
        for budget in budgets:
            for seed in range(seeds):
                run_dir = run_folder(out_dir, arm.spec.name, budget, seed)
                if (run_dir / "metrics.json").is_file():
                    check_reused(arm.recipe(budget, seed, out_dir), run_dir)


def audit_once(recipe: Recipe, out_dir: Path, resume: bool) -> None:
    """The shortcut audit's masked-image probe trains a model, and every run of a curve shares the patient
    split: the curve audits the whole training split once, with the probe, into
    ``out_dir/shortcut_audit.json``, and its runs audit without it (``PROBE_OFF``)."""
    if resume and (out_dir / SHORTCUT_AUDIT_FILE).is_file():
        return
    split_seed = recipe.seed if recipe.data.split_seed is None else recipe.data.split_seed
    whole = recipe.model_copy(update={"data": recipe.data.model_copy(update={"budget": None})})
    audit_training_split(build_splits(whole.data, split_seed), whole, out_dir)


def _read_run(run_dir: Path, metric: str) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    section, localization = metrics.get("classification", {}), metrics.get("localization", {})
    splits = json.loads((run_dir / "splits.json").read_text())
    return {
        "labelled_images": len(splits["train"]),
        "value": section.get(metric),
        "ci_low": section.get(f"{metric}_ci_low"),
        "ci_high": section.get(f"{metric}_ci_high"),
        **{key: localization.get(key) for key in ATTENTION_KEYS},
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def run_arms(
    arms: Sequence[ArmSpec],
    budgets: Sequence[Budget],
    seeds: int,
    out_dir: Path,
    *,
    metric: str = "auroc_macro",
    overrides: Sequence[str] = (),
    resume: bool = False,
    baseline: str | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train every arm x budget x seed into ``out_dir/<arm>/b<budget>-s<seed>`` and write curve.json,
    curve.md, curve.png (and attention.png where the test images have lung masks).

    With ``resume``, runs that already have metrics.json are read instead of retrained, once every one of
    them is checked to be the run this curve would train.
    """
    for spec in arms:  # every name is checked before anything trains
        inside(out_dir, spec.name, "arm name")
    first = load_recipe(arms[0].recipe, [*overrides, *arms[0].overrides])
    probe_once = first.data.shortcut_audit.probe
    run_overrides = [*overrides, PROBE_OFF] if probe_once else list(overrides)
    prepared = [
        Arm(
            spec,
            list(run_overrides),
            _with(load_recipe(spec.recipe, [*run_overrides, *spec.overrides]), spec.stages),
        )
        for spec in arms
    ]
    for arm in prepared:
        plan_pretraining(arm, out_dir)
    if resume:
        follow_a_moved_curve(prepared, budgets, seeds, out_dir)
        check_finished_runs(prepared, budgets, seeds, out_dir)
    if probe_once:
        audit_once(first, out_dir, resume)
    results: dict[str, list[dict[str, Any]]] = {}
    runs: dict[tuple[str, Budget], list[Path]] = {}
    for arm in prepared:
        pretrain(arm, out_dir, resume)
        points = []
        for budget in budgets:
            per_seed = []
            for seed in range(seeds):
                run_dir = run_folder(out_dir, arm.spec.name, budget, seed)
                if not (resume and (run_dir / "metrics.json").is_file()):
                    try:
                        recipe = arm.recipe(budget, seed, out_dir)
                        train_and_evaluate(
                            recipe,
                            run_dir,
                            resume=resume and (run_dir / "recipe.yaml").is_file(),
                            title=f"{arm.spec.name}: {budget} labels per class, seed {seed}",
                        )
                        drop_checkpoints(run_dir)
                    except DataError as error:
                        log.warning("%s: budget %s skipped (%s)", arm.spec.name, budget, error.problem)
                        break
                per_seed.append({"seed": seed, **_read_run(run_dir, metric)})
                runs.setdefault((arm.spec.name, budget), []).append(run_dir)
            if not per_seed:
                continue
            points.append(
                {
                    "labels_per_class": None if budget == "all" else budget,
                    "labelled_images_mean": _mean([s["labelled_images"] for s in per_seed]),
                    "value": _mean([s["value"] for s in per_seed]),
                    **{key: _mean([s[key] for s in per_seed]) for key in ATTENTION_KEYS},
                    "seeds": per_seed,
                }
            )
        results[arm.spec.name] = points
    reference = baseline or arms[0].name
    base = prepared[0].base
    tested = _bootstrap(results, runs, budgets, reference, metric, base, n_boot)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "metric": metric,
        "budgets": list(budgets),
        "seeds": seeds,
        "baseline": reference,
        "arms": results,
        "curriculum": _curricula(out_dir, [arm.spec.name for arm in prepared]),
    }
    payload["tests"] = tested
    audit_file = out_dir / SHORTCUT_AUDIT_FILE
    if audit_file.is_file():
        payload["shortcut_warnings"] = json.loads(audit_file.read_text())["warnings"]
    payload["attention_maps"] = _attention_grid(prepared, runs, budgets, out_dir)
    write_json(out_dir / "curve.json", payload)
    (out_dir / "curve.md").write_text(render_markdown(payload))
    drawn = {
        name: [{**p, "labels_per_class": p["labelled_images_mean"]} for p in points]
        for name, points in results.items()
    }
    try:
        label_efficiency_curves(
            drawn, out_dir / "curve.png", metric=metric, xlabel="labelled training images"
        )
    except Undrawable as reason:
        log.warning("curve.png not drawn: %s", reason)
    return payload


def _bootstrap(
    results: dict[str, list[dict[str, Any]]],
    runs: dict[tuple[str, Budget], list[Path]],
    budgets: Sequence[Budget],
    reference: str,
    metric: str,
    base: Recipe,
    n_boot: int,
) -> list[dict[str, Any]]:
    """Fill each point's seed-mean CI and return the paired tests of every arm against ``reference``."""
    options = {
        "metric": metric,
        "multilabel": base.task == "multilabel",
        "n_boot": n_boot,
        "min_count": base.evaluation.min_class_count,
        "macro_includes_thin": base.evaluation.macro_includes_thin,
    }
    tests = []
    for budget in budgets:
        scored = {
            arm: [ImageScores.read(r) for r in found] for (arm, b), found in runs.items() if b == budget
        }
        if reference not in scored:
            continue
        first = scored[reference][0]
        labels, patients = first.labels, first.patient_ids

        def aligned(scores: list[ImageScores], paths: list[str] = first.paths) -> list[np.ndarray]:
            for s in scores:
                if s.paths != paths:
                    raise ConfigError("curve runs were scored on different test images; use one split_seed")
            return [s.probs for s in scores]

        for arm, scores in scored.items():
            point = next(
                p for p in results[arm] if p["labels_per_class"] == (None if budget == "all" else budget)
            )
            ci = runs_mean_with_ci(aligned(scores), labels, patients, **options)
            point.update(value=ci["value"], ci_low=ci["value_ci_low"], ci_high=ci["value_ci_high"])
            if arm != reference:
                test = runs_mean_test(
                    aligned(scores), aligned(scored[reference]), labels, patients, **options
                )
                tests.append({"arm": arm, "baseline": reference, "budget": budget, **test})
    return tests


def _curricula(out_dir: Path, names: list[str]) -> dict[str, Any]:
    """The probe scores and order of every arm whose pre-training chose a curriculum."""
    found = {}
    for name in names:
        path = pretrain_folder(out_dir, name) / "curriculum.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def _budget_name(budget: Budget) -> str:
    return str(budget)


def run_curve(
    recipes: Sequence[Path],
    budgets: Sequence[Budget],
    seeds: int,
    out_dir: Path,
    **options: Any,
) -> dict[str, Any]:
    """:func:`run_arms` with one arm per recipe file, named by its recipe."""
    overrides = list(options.get("overrides", ()))
    names = [inside(out_dir, load_recipe(path, overrides).name, "recipe name").name for path in recipes]
    try:
        arms = [ArmSpec(name=name, recipe=path) for name, path in zip(names, recipes, strict=True)]
    except ValidationError:
        raise ConfigError(
            f"recipe names {names} must be letters, digits, '_', '.' or '-' to name the curve's arms"
        ) from None
    return run_arms(arms, budgets, seeds, out_dir, **options)


def render_markdown(payload: dict[str, Any]) -> str:
    """curve.md: the label-efficiency table with CIs and tests, the probe scores, the lung-attention table,
    the shortcut audit's warnings."""
    metric, reference = payload["metric"], payload["baseline"]
    budgets = [_budget_name(b) for b in payload["budgets"]]
    tests = {(t["arm"], _budget_name(t["budget"])): t for t in payload["tests"]}
    lines = [
        f"# Label efficiency: test {metric}, mean of {payload['seeds']} seed(s) [patient-bootstrap 95% CI]",
        "",
        f"Each cell: the seed-mean, its interval, and the paired bootstrap test against {reference} "
        "(difference, p).",
        "",
        "| arm | " + " | ".join(f"budget {b}" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for arm, points in payload["arms"].items():
        cells = []
        by_budget = {_budget_name(p["labels_per_class"] or "all"): p for p in points}
        for budget in budgets:
            point = by_budget.get(budget)
            if point is None:
                cells.append("-")
                continue
            cell = ci_cell(point["value"], point.get("ci_low"), point.get("ci_high"))
            test = tests.get((arm, budget))
            if test is not None:
                cell += f"; Δ {number(test['difference'])} p={number(test['p_value'])}"
            cells.append(cell)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for arm, record in payload.get("curriculum", {}).items():
        scores = ", ".join(f"{name} {number(score)}" for name, score in record["scores"].items())
        lines += [
            "",
            f"**{arm}** ({record['rule']}): order {' -> '.join(record['order'])}; "
            f"{record['probe']['metric']} after {record['probe']['steps']} steps of each task alone: "
            f"{scores} (start {number(record['start_score'])}).",
        ]
    if any(p.get(ATTENTION_KEYS[0]) is not None for points in payload["arms"].values() for p in points):
        lines += [
            "",
            "## Attention inside the lung masks (seed-mean; ratio 1 = no preference)",
            "",
            "Maps: each method's own per-class map where it has one, else its recipe's explanation "
            "method; `attention.png` shows them.",
            "",
            "| arm | maps | " + " | ".join(f"budget {b}: share / ratio" for b in budgets) + " |",
            "|---|---|" + "---|" * len(budgets),
        ]
        maps = payload.get("attention_maps", {})
        for arm, points in payload["arms"].items():
            by_budget = {_budget_name(p["labels_per_class"] or "all"): p for p in points}
            cells = [
                " / ".join(number(by_budget[b].get(key)) for key in ATTENTION_KEYS) if b in by_budget else "-"
                for b in budgets
            ]
            lines.append(f"| {arm} | {maps.get(arm, '-')} | " + " | ".join(cells) + " |")
    if "shortcut_warnings" in payload:
        warnings = payload["shortcut_warnings"] or ["none"]
        lines += ["", "## Shortcut audit of the training split (once for the curve)", ""]
        lines += [f"- {line}" for line in warnings]
    return "\n".join(lines) + "\n"


def _attention_grid(
    arms: Sequence[Arm], runs: dict[tuple[str, Budget], list[Path]], budgets: Sequence[Budget], out_dir: Path
) -> dict[str, str]:
    """attention.png: one row per arm (its seed-0 model at the largest budget) on the same test images that
    carry lung masks, the mask outlined, each map of the kind its evaluation scored inside the lungs (the
    method's own per-class map where it has one, else its recipe's ``evaluation.explain``). Returns that
    kind's name per arm."""
    import torch

    from radsight.data.assemble import build_splits
    from radsight.data.sample import collate
    from radsight.evaluate import REGION_REQUEST, evaluation_requests
    from radsight.explain.overlay import DISPLAY_MIN_SIDE, overlay, save_grid
    from radsight.methods.registry import load_method

    largest = budgets[-1]
    first = runs.get((arms[0].spec.name, largest))
    if not first:
        return {}
    recipe = Recipe.model_validate(yaml.safe_load((first[0] / "recipe.yaml").read_text()))
    test = build_splits(recipe.data, recipe.seed, stored=first[0] / "splits.json", required=("test",)).test
    chosen = []
    for index in range(len(test)):
        sample = test[index]
        if sample is not None and "lungs" in (sample.masks or {}) and bool(sample.masks["lungs"].any()):
            chosen.append(sample)
        if len(chosen) == ATTENTION_IMAGES:
            break
    if not chosen:
        return {}
    batch = collate(chosen)
    rows, kinds = [], {}
    for arm in arms:
        found = runs.get((arm.spec.name, largest))
        if not found:
            continue
        method, run_recipe = load_method(found[0])
        scored = run_recipe.evaluation
        lungs = evaluation_requests(scored.explain, normalise=scored.map_normalisation)[
            f"{REGION_REQUEST}lungs"
        ]
        with torch.no_grad():
            prediction = method.predict(batch)
        kind = lungs.kind_for(method, prediction)
        if kind is None:
            continue
        targets = prediction.probs.argmax(dim=1).tolist()
        heat = kind.maps(method, prediction, batch, list(range(len(chosen))), targets).detach().float()
        kinds[arm.spec.name] = kind.name
        rows.append(
            [
                overlay(
                    s.image[0].numpy(),
                    h.numpy(),
                    masks={"lungs": s.masks["lungs"]},
                    title=f"{arm.spec.name} ({kind.name})",
                    min_side=DISPLAY_MIN_SIDE,
                )
                for s, h in zip(chosen, heat, strict=True)
            ]
        )
    if rows:
        save_grid(rows, out_dir / "attention.png")
    return kinds
