"""Ablations: train several variants of one recipe under the same budget and compare them in one table.

An ablation file names a base recipe, the variants as ``--set``-style overrides of it, the reference
variant and the budget::

    name: gaze_unet_ablation_cpu
    base: ../gaze_unet_cpu.yaml       # relative to this file
    reference: staged
    epochs: 6                         # every variant's stages must add up to this many epochs
    variants:
      - {name: staged, set: []}
      - {name: joint_only, set: ["stages=[{name: joint, epochs: 6}]"]}

"Same budget" means the same data, split, seed and trainer settings and the same number of passes over
the training images (the sum of the stages' epochs); a variant that changes any of these is refused.
Command-line ``--set`` overrides apply to every variant, after its own.

Every variant is trained and evaluated (its own report) in ``<out>/variants/<name>``, then scored on
the same test images: macro AUROC, and the Pearson correlation (CC) of its attention map with the held-out
gaze map, where the attention map is the method's native saliency map or, for a method without one,
Grad-CAM of its top class. Each variant is compared with the reference by paired patient-bootstrap
tests. ``ablation.json``, ``ablation.md`` and ``attention.png`` (true gaze beside every variant's map)
hold the comparison.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from radsight.checkpoints import write_json
from radsight.config import Recipe, Strict, apply_overrides, parse_recipe, read_yaml
from radsight.errors import ConfigError
from radsight.evaluate import MapRequest, collect, evaluate, explanation, gaze_pairs
from radsight.explain.overlay import overlay, save_grid
from radsight.methods import Method, check_recipe
from radsight.metrics.bootstrap import mean_with_ci, paired_mean_test
from radsight.metrics.classification import classification_section, paired_bootstrap_test
from radsight.metrics.saliency import cc
from radsight.report.cells import NOT_TESTED, number, section_cell
from radsight.run_folder import inside
from radsight.train import train

log = logging.getLogger(__name__)


class Variant(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    set: list[str] = Field(default_factory=list, description="overrides of the base recipe, key=value")
    description: str = ""


class AblationConfig(Strict):
    name: str
    base: str = Field(description="the base recipe, relative to the ablation file")
    reference: str
    epochs: int = Field(gt=0, description="budget: epochs over all stages of every variant")
    variants: list[Variant]


def load_ablation(path: str | Path) -> tuple[AblationConfig, Path]:
    """The ablation file, validated, and the path of its base recipe."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ablation file not found")
    try:
        config = AblationConfig.model_validate(read_yaml(path.read_text(), str(path)))
    except ConfigError:
        raise
    except Exception as error:  # YAML or validation: one readable line either way
        raise ConfigError(f"{path}: invalid ablation file ({error})") from None
    names = [v.name for v in config.variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: variant names repeat: {names}")
    if config.reference not in names:
        raise ConfigError(f"{path}: reference {config.reference!r} is not a variant ({names})")
    base = path.parent / config.base
    if not base.is_file():
        raise ConfigError(f"{path}: base recipe {base} not found")
    return config, base


def variant_recipes(config: AblationConfig, base: Path, overrides: list[str]) -> dict[str, Recipe]:
    """Each variant's full recipe, checked to share the reference's data, seed, trainer and budget."""
    recipes = {}
    for variant in config.variants:
        raw = apply_overrides(read_yaml(base.read_text(), str(base)), [*variant.set, *overrides])
        raw["name"] = f"{config.name}:{variant.name}"
        recipe = parse_recipe(raw, f"{base} + variant {variant.name}")
        total = sum(stage.epochs for stage in recipe.stages)
        if total != config.epochs:
            raise ConfigError(
                f"variant {variant.name!r} trains {total} epochs in all; the budget is {config.epochs}"
            )
        recipes[variant.name] = check_recipe(recipe)
    reference = recipes[config.reference]
    for name, recipe in recipes.items():
        for field in ("data", "seed", "trainer"):
            if getattr(recipe, field) != getattr(reference, field):
                raise ConfigError(f"variant {name!r} changes {field}: every variant must share it")
    return recipes


ATTENTION = MapRequest(gaze_pairs, explanation("gradcam"), prefer_native="single", dtype=np.float32)
"""A variant's attention map on each image with gaze: its native class-agnostic saliency map, else
Grad-CAM of the image's top class (the usual way to ask a plain classifier where it looked)."""


@dataclass
class Scores:
    """One variant on the test images: probabilities, per-image gaze CC (NaN without gaze), and how many
    of those images got an all-zero map (no positive evidence: CC 0, as for any flat map)."""

    probs: np.ndarray
    labels: np.ndarray
    patient_ids: list[str]
    gaze_cc: np.ndarray
    map_source: str
    n_empty_maps: int


def score(method: Method, dataset: Any, batch_size: int) -> Scores:
    found = collect(method, dataset, batch_size, {"attention": ATTENTION}, description="scoring")
    attention, probs = found.maps["attention"], found.prob_matrix
    gaze_cc, empty = np.full(len(probs), np.nan), 0
    for image, heat, (gaze_map, _) in zip(attention.images, attention.maps, attention.truth, strict=True):
        if gaze_map is not None:
            gaze_cc[image] = cc(heat, gaze_map)
            empty += int(heat.max() <= 0)
    return Scores(probs, found.label_matrix, found.patient_ids, gaze_cc, "/".join(attention.kinds), empty)


def compare(
    scores: dict[str, Scores], recipes: dict[str, Recipe], reference: str, n_boot: int, seed: int
) -> dict:
    """The comparison table: AUROC and gaze CC with CIs, and paired tests of each variant vs reference."""
    ref = scores[reference]
    multilabel = recipes[reference].task == "multilabel"
    evaluation = recipes[reference].evaluation
    thin = {"min_count": evaluation.min_class_count, "macro_includes_thin": evaluation.macro_includes_thin}
    rows = {}
    for name, s in scores.items():
        if s.patient_ids != ref.patient_ids:
            raise ValueError(f"variant {name!r} was scored on other test images than the reference")
        section = classification_section(
            s.probs,
            s.labels,
            recipes[name].data.labels,
            s.patient_ids,
            multilabel=multilabel,
            n_boot=n_boot,
            seed=seed,
            **thin,
        )
        row: dict[str, Any] = {
            "method": recipes[name].method,
            "stages": [f"{st.name}:{st.epochs}" for st in recipes[name].stages],
            **{k: section[k] for k in ("auroc_macro", "auroc_macro_ci_low", "auroc_macro_ci_high")},
            "map_source": s.map_source,
            **mean_with_ci("gaze_cc", s.gaze_cc, s.patient_ids, n_boot=n_boot, seed=seed),
            "n_images_with_gaze": int((~np.isnan(s.gaze_cc)).sum()),
            "n_empty_maps": s.n_empty_maps,
        }
        if name != reference:
            common = {"n_boot": n_boot, "seed": seed}
            row["vs_reference"] = {
                "auroc_macro": paired_bootstrap_test(
                    s.probs, ref.probs, ref.labels, ref.patient_ids, multilabel=multilabel, **common, **thin
                ),
            }
            if row["n_images_with_gaze"]:
                row["vs_reference"]["gaze_cc"] = paired_mean_test(
                    s.gaze_cc, ref.gaze_cc, ref.patient_ids, metric="gaze_cc", **common
                )
        rows[name] = row
    return {
        "reference": reference,
        "n_test_images": int(ref.probs.shape[0]),
        "n_boot": n_boot,
        "variants": rows,
    }


def markdown(table: dict, title: str) -> str:
    ref, budget = table["reference"], table["budget_epochs"]
    lines = [
        f"# {title}",
        "",
        f"{table['n_test_images']} test images, every variant trained for {budget} epochs in all on the same "
        f"split. 95% patient-bootstrap intervals ({table['n_boot']} resamples); Δ and p are paired tests "
        f"against `{ref}`. Gaze CC: Pearson correlation of the attention map with the held-out gaze map "
        "(native = the method's own map, gradcam = Grad-CAM of the top class; an empty map, with no "
        "positive evidence, scores 0).",
        "",
        "| variant | stages (epochs) | AUROC macro [95% CI] | Δ AUROC [95% CI] | p | gaze CC [95% CI] | map "
        "| Δ CC [95% CI] | p |",
        "|---|---|---|---|---:|---|---|---|---:|",
    ]
    for name, row in table["variants"].items():
        tests = row.get("vs_reference", {})
        cells = [f"`{name}`" + (" (ref)" if name == ref else ""), ", ".join(row["stages"])]
        for key, test in (("auroc_macro", tests.get("auroc_macro")), ("gaze_cc", tests.get("gaze_cc"))):
            cells.append(section_cell(row, key))
            if key == "gaze_cc":
                empty = (
                    f", {row['n_empty_maps']}/{row['n_images_with_gaze']} empty"
                    if row["n_empty_maps"]
                    else ""
                )
                cells.append(row["map_source"] + empty)
            if test is None:
                cells += [NOT_TESTED, NOT_TESTED]
            else:
                cells += [section_cell(test, "difference"), number(test["p_value"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- `{name}`: {text}" for name, text in table["descriptions"].items() if text)]
    return "\n".join(lines) + "\n"


def attention_grid(methods: dict[str, Method], dataset: Any, path: Path, n: int = 6) -> Path | None:
    """Rows of test images with gaze: the image with its true gaze, then every variant's attention map."""
    samples = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample is not None and sample.gaze_map is not None:
            samples.append(sample)
        if len(samples) == n:
            break
    if not samples:
        return None
    columns = {}
    for name, method in methods.items():
        found = collect(method, samples, len(samples), {"attention": ATTENTION}, description=name)
        attention = found.maps["attention"]
        columns[f"{name} ({'/'.join(attention.kinds)})"] = attention.maps
    rows = []
    for i, sample in enumerate(samples):
        image = sample.image[0].numpy()
        row = [overlay(image, gaze_map=sample.gaze_map, fixations=sample.fixations, title="true gaze")]
        row += [overlay(image, maps[i] / max(float(maps[i].max()), 1e-12)) for maps in columns.values()]
        rows.append(row)
    return save_grid(rows, path, titles=["image + gaze", *columns])


def run_ablation(
    path: str | Path,
    out_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    n_boot: int | None = None,
) -> dict:
    """Train, evaluate and score every variant, then write ablation.json, ablation.md and attention.png."""
    config, base = load_ablation(path)
    recipes = variant_recipes(config, base, overrides or [])
    out_dir = Path(out_dir)
    methods, scores, test = {}, {}, None
    run_dirs = {name: inside(out_dir / "variants", name, "variant name") for name in recipes}
    for name, recipe in recipes.items():
        run_dir = run_dirs[name]
        log.info("ablation %s: variant %s", config.name, name)
        result = train(recipe, run_dir, resume=resume and (run_dir / "recipe.yaml").is_file())
        evaluation = recipe.evaluation.model_copy(update={} if n_boot is None else {"n_boot": n_boot})
        evaluate(
            result.method,
            result.splits.test,
            run_dir,
            evaluation,
            title=f"{recipe.name}: test split",
            batch_size=recipe.data.batch_size,
            seed=recipe.seed,
        )
        methods[name], test = result.method, result.splits.test
        scores[name] = score(result.method, test, recipe.data.batch_size)
    reference = recipes[config.reference]
    boots = reference.evaluation.n_boot if n_boot is None else n_boot
    table = compare(scores, recipes, config.reference, boots, reference.seed)
    table |= {"name": config.name, "base": str(base), "budget_epochs": config.epochs}
    table["descriptions"] = {v.name: v.description for v in config.variants}
    write_json(out_dir / "ablation.json", table)
    text = markdown(table, f"Ablation {config.name}")
    if attention_grid(methods, test, out_dir / "attention.png") is not None:
        text += "\nTrue gaze beside every variant's attention map:\n\n![attention maps](attention.png)\n"
    (out_dir / "ablation.md").write_text(text)
    return table
