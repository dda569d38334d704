"""Label-efficiency curves: train and evaluate a recipe at several label budgets and seeds.

The patient split (and so the test set) stays fixed by ``data.split_seed``, set in every run to the
recipe's own (its ``data.split_seed``, else its ``seed``); each (budget, seed) only draws a nested label
subset of the training split (``data.budget`` / ``data.budget_seed``) and trains with that seed. The
curve's value is the mean test metric over seeds, its band the mean of the per-seed 95%
patient-bootstrap intervals, and every per-seed number is kept in ``curve.json``: the budget as
``labels_per_class`` and the labelled training images it amounts to (``labelled_images``: positives of
every class and as many normal images, an image positive for two classes counted once).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radsight.checkpoints import write_json
from radsight.config import Recipe, load_recipe
from radsight.errors import DataError
from radsight.report.plots import Undrawable, label_efficiency_curves
from radsight.run_folder import inside
from radsight.train import train_and_evaluate

log = logging.getLogger(__name__)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def arm_overrides(base: Recipe, budget: int, seed: int) -> list[str]:
    """The overrides of the run at ``budget`` labels per class and ``seed``: the budget, its draw and the
    training seed change; the patient split stays the base recipe's."""
    split_seed = base.seed if base.data.split_seed is None else base.data.split_seed
    return [
        f"data.budget={budget}",
        f"data.budget_seed={seed}",
        f"seed={seed}",
        f"data.split_seed={split_seed}",
    ]


def run_curve(
    recipes: Sequence[Path],
    budgets: Sequence[int],
    seeds: int,
    out_dir: Path,
    *,
    metric: str = "auroc_macro",
    overrides: Sequence[str] = (),
    resume: bool = False,
) -> dict[str, Any]:
    """Train every recipe x budget x seed into ``out_dir/<recipe>/b<budget>-s<seed>``; write JSON and plot.

    With ``resume``, runs that already have metrics.json are read instead of retrained.
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for recipe_path in recipes:
        base = load_recipe(recipe_path, list(overrides))
        points = []
        for budget in budgets:
            per_seed = []
            for seed in range(seeds):
                run_dir = inside(out_dir, base.name, "recipe name") / f"b{budget}-s{seed}"
                metrics_path = run_dir / "metrics.json"
                if resume and metrics_path.is_file():
                    section = json.loads(metrics_path.read_text()).get("classification", {})
                else:
                    recipe = load_recipe(recipe_path, [*overrides, *arm_overrides(base, budget, seed)])
                    try:
                        _, metrics = train_and_evaluate(
                            recipe,
                            run_dir,
                            resume=resume and (run_dir / "recipe.yaml").is_file(),
                            title=f"{recipe.name}: {budget} labels per class, seed {seed}",
                        )
                    except DataError as error:
                        log.warning("%s: budget %d skipped (%s)", base.name, budget, error.problem)
                        break
                    section = metrics.get("classification", {})
                splits = json.loads((run_dir / "splits.json").read_text())
                per_seed.append(
                    {
                        "seed": seed,
                        "labelled_images": len(splits["train"]),
                        "value": section.get(metric),
                        "ci_low": section.get(f"{metric}_ci_low"),
                        "ci_high": section.get(f"{metric}_ci_high"),
                    }
                )
            if not per_seed:
                continue
            points.append(
                {
                    "labels_per_class": budget,
                    "labelled_images_mean": _mean([s["labelled_images"] for s in per_seed]),
                    "value": _mean([s["value"] for s in per_seed]),
                    "ci_low": _mean([s["ci_low"] for s in per_seed]),
                    "ci_high": _mean([s["ci_high"] for s in per_seed]),
                    "seeds": per_seed,
                }
            )
        results[base.name] = points
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"metric": metric, "budgets": list(budgets), "seeds": seeds, "recipes": results}
    write_json(out_dir / "curve.json", payload)
    try:
        label_efficiency_curves(results, out_dir / "curve.png", metric=metric)
    except Undrawable as reason:
        log.warning("curve.png not drawn: %s", reason)
    return payload
