"""A recipe from start to finish: train every stage, then evaluate on the test split it never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radsight.config import Recipe
from radsight.evaluate import evaluate
from radsight.train import TrainResult, train


def train_and_evaluate(
    recipe: Recipe,
    out_dir: Path,
    *,
    resume: bool = False,
    evaluate_test: bool = True,
    title: str | None = None,
) -> tuple[TrainResult, dict[str, Any] | None]:
    """Train into ``out_dir`` and write the test evaluation beside the model (rank 0 only under DDP)."""
    result = train(recipe, out_dir, resume=resume)
    if not (evaluate_test and result.is_global_zero):
        return result, None
    metrics = evaluate(
        result.method,
        result.splits.test,
        out_dir,
        recipe.evaluation,
        title=title or f"{recipe.name}: test split",
        batch_size=recipe.data.batch_size,
        seed=recipe.seed,
    )
    return result, metrics
