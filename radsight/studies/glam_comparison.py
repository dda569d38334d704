"""Does GLAM localize lesions better than what it is published against? One test set, several maps.

Rows (each a trained run, the same recipe data and training budget):
- GLAM's fused map (a ``glam`` run with its local stages);
- the global module alone, twice: trained alone under the same budget (a ``glam`` run whose only stage is
  ``global``), and the trained GLAM's own global map with the local module skipped (an ablation with the
  same weights);
- CAM and Grad-CAM of a global classifier with no local module (a ``supervised`` run), the published
  comparison. For a classifier that average-pools its last feature map into a linear head both weigh the
  same feature maps by the same class weights (Grad-CAM's pooled gradient is the weight divided by the
  map's area), so after normalisation they agree up to numerical error; both are reported to show it.

Each map is scored against the lesion mask of every (image, class) pair that has one: Dice and IoU at
the fixed threshold 0.5 and at each row's best single threshold over the set, soft Dice, and the
pointing game, with patient-bootstrap 95% CIs. The closing note gives GLAM's relative Dice gain over the
best baseline per class, with a paired patient-bootstrap CI, next to the published gains (39.6% benign,
20.0% malignant over the best weakly-supervised baseline, NYU screening data).

    radsight glam-compare --glam RUN --global-only RUN --classifier RUN --out DIR
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from radsight.checkpoints import write_json
from radsight.data.assemble import SPLITS_FILE, build_splits
from radsight.data.sample import Batch
from radsight.errors import ConfigError
from radsight.evaluate import NATIVE, MapKind, MapRequest, MapSet, collect, explanation, lesion_pairs
from radsight.explain.cam import eval_mode, normalise_maps
from radsight.methods import Method, Prediction, load_method
from radsight.metrics.bootstrap import json_float, patient_groups, percentile_ci, weight_blocks
from radsight.metrics.localization import localization_section, overlap_at_thresholds
from radsight.report.cells import number, section_cell

PUBLISHED_GAIN = {"benign": 0.396, "malignant": 0.200}
"""GLAM's published relative Dice gains over the best weakly-supervised baseline (Liu et al., 2021)."""

METRICS = ("dice_best", "iou_best", "dice_at_threshold", "iou_at_threshold", "soft_dice", "pointing_game")
HEADLINE = "dice_best"


def _glam_global_maps(
    method: Method, prediction: Prediction, batch: Batch, images: list[int], targets: list[int]
) -> Tensor:
    network = method.classifier()
    with torch.no_grad():
        output = network.run(batch.images, local=False)
    return network.saliency(output, batch.images.shape[-2:])[images, targets]


def _cam_maps(
    method: Method, prediction: Prediction, batch: Batch, images: list[int], targets: list[int]
) -> Tensor:
    backbone = getattr(method, "backbone", None)
    linear = [m for m in getattr(method, "head", nn.Identity()).modules() if isinstance(m, nn.Linear)]
    if backbone is None or len(linear) != 1:
        raise ConfigError(f"CAM needs a backbone and one linear head; {type(method).__name__} has not")
    with eval_mode(method), torch.no_grad():
        features = backbone.forward_features(batch.images[images])
    weights = linear[0].weight[targets]  # N x C
    return normalise_maps(torch.einsum("nchw,nc->nhw", features, weights), batch.images.shape[-2:])


GLAM_GLOBAL = MapKind("glam_global", _glam_global_maps)
"""A trained GLAM's global map alone (its local module skipped): what the local module adds."""

CAM = MapKind("cam", _cam_maps)
"""CAM (Zhou et al., 2016): the last feature map weighed by the linear head's class weights."""

MAP_KINDS = {kind.name: kind for kind in (NATIVE, GLAM_GLOBAL, explanation("gradcam"), CAM)}


def lesion_maps(method: Method, dataset: Dataset, kinds: Sequence[str], batch_size: int) -> dict[str, MapSet]:
    """One pass of ``method`` over ``dataset``: its map of each kind for every annotated lesion class."""
    requests = {kind: MapRequest(lesion_pairs, MAP_KINDS[kind]) for kind in kinds}
    return collect(method, dataset, batch_size, requests, description=", ".join(kinds)).maps


def row_metrics(scored: MapSet, labels: Sequence[str], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Localization metrics with CIs, for all lesions and per class."""
    out = {}
    for label in ["all", *labels]:
        index = [j for j, name in enumerate(scored.labels) if label in ("all", name)]
        if not index:
            continue
        section = localization_section(
            [scored.maps[j].astype(np.float32) for j in index],
            [scored.truth[j] for j in index],
            patient_ids=[scored.patients[j] for j in index],
            n_boot=n_boot,
            seed=seed,
        )
        keys = [k for k in section if k.startswith(METRICS) or k in ("n_images", "dice_best_threshold")]
        out[label] = {k: section[k] for k in keys}
    return out


def per_lesion_dice(scored: MapSet, index: list[int], threshold: float) -> np.ndarray:
    return np.array(
        [
            overlap_at_thresholds(scored.maps[j].astype(np.float32), scored.truth[j], [threshold])[0][0]
            for j in index
        ]
    )


def relative_gain(
    glam: MapSet, baseline: MapSet, label: str, thresholds: tuple[float, float], n_boot: int, seed: int
) -> dict[str, float | None]:
    """GLAM's mean Dice over the baseline's, minus 1, with a paired patient-bootstrap 95% CI."""
    index = [j for j, name in enumerate(glam.labels) if name == label]
    ours, theirs = (
        per_lesion_dice(glam, index, thresholds[0]),
        per_lesion_dice(baseline, index, thresholds[1]),
    )
    gain = ours.mean() / theirs.mean() - 1 if theirs.mean() > 0 else float("nan")
    groups = patient_groups([glam.patients[j] for j in index], len(index))
    samples = []
    for weights in weight_blocks(groups, n_boot, seed):
        with np.errstate(invalid="ignore", divide="ignore"):
            samples.append((weights @ ours) / (weights @ theirs) - 1)
    low, high = percentile_ci(np.concatenate(samples))
    return {"gain": json_float(gain), "ci_low": json_float(low), "ci_high": json_float(high)}


def compare(
    runs: dict[str, tuple[Path, str]], glam_row: str, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Score every row (name -> (run folder, map kind)) on the test split of the GLAM run's recipe; the
    rows of one run come from one pass over the test set."""
    loaded = {path: load_method(path) for path, _ in runs.values()}
    _, recipe = loaded[runs[glam_row][0]]
    for name, (path, _) in runs.items():
        other = loaded[path][1]
        if other.data != recipe.data or other.seed != recipe.seed:
            raise ConfigError(f"run {name!r} was trained on other data than the GLAM run: no common test set")
    stored = runs[glam_row][0] / SPLITS_FILE
    test = build_splits(recipe.data, recipe.seed, stored=stored, required=["test"]).test
    labels = list(recipe.data.labels)
    maps = {
        path: lesion_maps(method, test, [k for p, k in runs.values() if p == path], recipe.data.batch_size)
        for path, (method, _) in loaded.items()
    }
    scored = {name: maps[path][kind] for name, (path, kind) in runs.items()}
    rows = {name: row_metrics(s, labels, n_boot, seed) for name, s in scored.items()}
    gains: dict[str, Any] = {}
    for label in labels:
        baselines = {n: rows[n][label][HEADLINE] for n in rows if n != glam_row and label in rows[n]}
        if label not in rows[glam_row] or not baselines:
            continue
        best = max(baselines, key=lambda n: baselines[n] or 0.0)
        thresholds = (rows[glam_row][label]["dice_best_threshold"], rows[best][label]["dice_best_threshold"])
        gains[label] = {
            "best_baseline": best,
            **relative_gain(scored[glam_row], scored[best], label, thresholds, n_boot, seed),
            "published_gain": PUBLISHED_GAIN.get(label),
        }
    return {
        "glam_row": glam_row,
        "runs": {name: {"run": str(path), "map": kind} for name, (path, kind) in runs.items()},
        "headline_metric": HEADLINE,
        "rows": rows,
        "relative_dice_gain": gains,
        "test_images": len(test),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# GLAM against its baselines: lesion localization on the test split",
        "",
        "Means over (image, class) pairs with a lesion mask; 95% patient-bootstrap CIs; "
        f"{result['test_images']} test images. `best`: each row's best single threshold over the set "
        "(`thr`); `@0.5`: the min-max normalised map cut at 0.5.",
        "",
        "| row | class | n | Dice (best) | thr | IoU (best) | Dice @0.5 | IoU @0.5 | soft Dice | pointing |",
        "|---|---|---:|---|---:|---|---|---|---|---|",
    ]
    for name, sections in result["rows"].items():
        for label, s in sections.items():
            cells = [
                section_cell(s, key)
                for key in ("dice_best", "iou_best", "dice_at_threshold", "iou_at_threshold")
            ]
            cells.insert(1, number(s["dice_best_threshold"], 2))
            cells += [section_cell(s, "soft_dice"), section_cell(s, "pointing_game")]
            lines.append(f"| {name} | {label} | {s['n_images']} | " + " | ".join(cells) + " |")
    lines += ["", "## Closing note", ""]
    for label, gain in result["relative_dice_gain"].items():
        lines.append(f"- {label}: {verdict(label, gain)}")
    return "\n".join(lines) + "\n"


def verdict(label: str, gain: dict[str, Any]) -> str:
    """One sentence: GLAM's relative Dice gain, its CI, the published gain, and whether it holds up."""
    value, low, high, published = gain["gain"], gain["ci_low"], gain["ci_high"], gain["published_gain"]
    if value is None or low is None or high is None:
        return f"the gain over {gain['best_baseline']} is undefined (the baseline's Dice is 0)."
    text = (
        f"GLAM's Dice is {value:+.1%} relative to the best baseline ({gain['best_baseline']}), 95% CI "
        f"[{low:+.1%}, {high:+.1%}]"
    )
    if published is None:
        return text + "."
    if low > 0:
        held = "holds up: GLAM is better, " + (
            f"and the published {published:.1%} lies inside the CI."
            if low <= published <= high
            else f"though the gain differs from the published {published:.1%}."
        )
    elif high < 0:
        held = f"does not hold up: GLAM is worse here, against a published gain of {published:.1%}."
    else:
        held = f"not shown here: the CI includes no gain, against a published gain of {published:.1%}."
    return f"{text}; the published gain {held}"


def run_glam_comparison(
    glam: Path,
    out_dir: Path,
    *,
    global_only: Path | None = None,
    classifier: Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score every given run's maps on GLAM's test split; write comparison.json and comparison.md."""
    runs = {
        "GLAM (fused map)": (glam, "native"),
        "GLAM's global map (same weights)": (glam, "glam_global"),
    }
    if global_only is not None:
        runs["global module alone"] = (global_only, "native")
    if classifier is not None:
        runs["classifier CAM"] = (classifier, "cam")
        runs["classifier Grad-CAM"] = (classifier, "gradcam")
    result = compare(runs, "GLAM (fused map)", n_boot, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "comparison.json", result)
    (out_dir / "comparison.md").write_text(markdown(result))
    return result
