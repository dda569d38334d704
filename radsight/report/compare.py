"""Compare evaluated runs on the same test images: one table with CIs, and paired bootstrap tests.

Each run folder holds the ``metrics.json`` and ``image_scores.json`` that ``radsight evaluate`` (or
``train``) writes. The first run is the reference every other run is tested against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radsight.checkpoints import write_json
from radsight.errors import ConfigError
from radsight.metrics.classification import DEFAULT_THRESHOLD, MIN_CLASS_COUNT, paired_bootstrap_test
from radsight.report.cells import number, section_cell
from radsight.report.scores import ImageScores
from radsight.run_folder import check_evaluated_runs

HEADLINE = ("auroc_macro", "auprc_macro", "ece")


def _aligned(runs: Sequence[Path]) -> tuple[list[str], list[np.ndarray], np.ndarray, list[str]]:
    """Probabilities of every run over the images all runs share, in the reference run's order."""
    loaded = [ImageScores.read(run) for run in runs]
    reference = loaded[0]
    for run, other in zip(runs, loaded, strict=True):
        if other.label_names != reference.label_names:
            raise ConfigError(
                f"{run}: label names {other.label_names} differ from the reference's {reference.label_names}"
            )
    shared = set.intersection(*(set(scores.paths) for scores in loaded))
    if not shared:
        raise ConfigError("the runs share no test image: compare runs evaluated on the same data")
    keep = [j for j, p in enumerate(reference.paths) if p in shared]
    order = [reference.paths[j] for j in keep]
    probs = []
    for scores in loaded:
        where = {p: j for j, p in enumerate(scores.paths)}
        probs.append(scores.probs[[where[p] for p in order]])
    return reference.label_names, probs, reference.labels[keep], [reference.patient_ids[j] for j in keep]


def compare_runs(
    runs: Sequence[Path],
    out_dir: Path,
    *,
    metrics: Sequence[str] = ("auroc_macro",),
    n_boot: int = 1000,
    seed: int = 0,
    multilabel: bool | None = None,
) -> dict[str, Any]:
    """Write compare.json and compare.md: headline metrics per run, tests of each run vs the first."""
    runs = [Path(r) for r in runs]
    check_evaluated_runs(runs)
    names, probs, labels, patients = _aligned(runs)
    if multilabel is None:
        config = (
            json.loads((runs[0] / "config.json").read_text()) if (runs[0] / "config.json").is_file() else {}
        )
        multilabel = config.get("task", "multilabel") == "multilabel"
    table, sections = [], []
    for run in runs:
        section = json.loads((run / "metrics.json").read_text()).get("classification", {})
        sections.append(section)
        table.append({"run": str(run), **{k: section.get(k) for k in HEADLINE}, **_cis(section)})
    reference = sections[0]
    macro = {
        "min_count": reference.get("min_class_count", MIN_CLASS_COUNT),
        "macro_includes_thin": reference.get("macro_includes_thin", False),
    }
    tests = [
        {
            "run": str(run),
            "reference": str(runs[0]),
            **paired_bootstrap_test(
                probs[j],
                probs[0],
                labels,
                patients,
                metric=metric,
                multilabel=multilabel,
                n_boot=n_boot,
                seed=seed,
                thresholds=_thresholds(sections[j], names),
                thresholds_b=_thresholds(reference, names),
                **macro,
            ),
        }
        for j, run in enumerate(runs[1:], start=1)
        for metric in metrics
    ]
    result = {"label_names": names, "n_images": len(patients), "runs": table, "paired_tests": tests}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "compare.json", result)
    (out_dir / "compare.md").write_text(render_markdown(result))
    return result


def _thresholds(section: dict[str, Any], names: Sequence[str]) -> list[float | None]:
    """A run's per-label thresholds (its operating points) as its metrics.json reports them."""
    per_label = section.get("per_label", {})
    return [per_label.get(name, {}).get("threshold", DEFAULT_THRESHOLD) for name in names]


def _cis(section: dict[str, Any]) -> dict[str, Any]:
    return {f"{k}{s}": section.get(f"{k}{s}") for k in HEADLINE for s in ("_ci_low", "_ci_high")}


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Comparison on {result['n_images']} shared test images",
        "",
        "| run | " + " | ".join(HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
    ]
    lines += [
        "| " + " | ".join([row["run"], *(section_cell(row, k) for k in HEADLINE)]) + " |"
        for row in result["runs"]
    ]
    lines += [
        "",
        "## Paired bootstrap tests against the first run",
        "",
        "| run | metric | difference [95% CI] | p |",
    ]
    lines += ["|---|---|---|---|"]
    for test in result["paired_tests"]:
        difference, p = section_cell(test, "difference"), number(test["p_value"], 4)
        lines.append(f"| {test['run']} | {test['metric']} | {difference} | {p} |")
    return "\n".join(lines) + "\n"
