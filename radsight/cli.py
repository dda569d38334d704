"""The radsight command: demo, train, evaluate, predict, explain, compare, studies and data inspection.

Every user-facing failure is a RadsightError, printed as one line (file and problem) with exit code 2.
Commands check their arguments and files before importing torch, and import Lightning's training
machinery only where they train, so a mistyped path is answered at once.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup

from radsight import __version__
from radsight.data.sources import SOURCES
from radsight.errors import ConfigError, DataError, RadsightError
from radsight.explain.names import METHODS
from radsight.report.cells import number, section_cell
from radsight.run_folder import (
    check_evaluated_runs,
    check_out_dir,
    clear_run_folder,
    is_launching_process,
    read_export_config,
)

if TYPE_CHECKING:
    from radsight.config import Recipe

log = logging.getLogger(__name__)


class PlainHelp:
    """Help that names values plainly. Typer shows a type placeholder beside every value (<path>,
    <list[str]>, and <bool> beside flags and --help) and braces around arguments; here each value shows
    its metavar (its own, else see :func:`_metavar`) and flags show none."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.metavar is None:
                param.metavar = _metavar(param)
            if isinstance(param, TyperArgument):
                param.display_type_rich = _no_type  # the metavar in the name column says it
        return params


def _metavar(param: Any) -> str:
    """An argument's name in capitals (with ... when it takes several); an option's kind of value."""
    if isinstance(param, TyperArgument):
        return param.name.upper() + ("..." if param.nargs != 1 else "")
    if getattr(param, "is_flag", False):
        return ""
    kind = param.type_descriptor
    return "PATH" if kind.is_path else "N" if kind.annotation is int else param.name.upper()


def _no_type(ctx: Any) -> None:
    return None


class PlainCommand(PlainHelp, TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        arguments = [p.metavar for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return [self.options_metavar or "", *arguments]


class PlainGroup(PlainHelp, TyperGroup):
    pass


app = typer.Typer(cls=PlainGroup, no_args_is_help=True, add_completion=False)
data_app = typer.Typer(cls=PlainGroup, no_args_is_help=True, help="Look at a dataset before training on it.")
app.add_typer(data_app, name="data")
subcommand = functools.partial(app.command, cls=PlainCommand)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

SetOption = Annotated[
    list[str], typer.Option("--set", metavar="KEY=VALUE", help="override a recipe field: key.sub=value")
]
SourceOptions = Annotated[
    list[str],
    typer.Option(
        "--option",
        metavar="KEY=VALUE",
        help="a data source option: key=value, the value read as YAML (repeatable)",
    ),
]
ModelDir = Annotated[Path, typer.Option(help="model folder (model.safetensors + config.json)")]
ImageFiles = Annotated[list[Path], typer.Argument(metavar="FILE...", help="DICOM, PNG or JPEG files")]
Resume = Annotated[bool, typer.Option(help="continue an interrupted run in --out")]
Force = Annotated[
    bool,
    typer.Option(
        "--force", help="start the run in --out over: remove what radsight wrote there, keep the rest"
    ),
]
RuntimeName = Annotated[
    str,
    typer.Option(
        metavar="RUNTIME",
        help="what computes the predictions: torch, or onnxruntime (the model folder's model.onnx, "
        "from radsight export); maps that need gradients always come from PyTorch",
    ),
]
METHOD_NAMES = ", ".join(METHODS)
COMPARED_METHODS = ",".join(m for m in METHODS if m != "native")  # native maps: only some methods have them
SOURCE_NAMES = ", ".join(SOURCES)
MAX_LABEL_COLUMNS = 6
"""predict prints every label's probability up to this many labels, else the top label's only."""


def _print_version(value: bool) -> None:
    if value:
        Console().print(f"radsight {__version__}")
        raise typer.Exit()


@app.callback()
def common_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """Interpretable, label-efficient diagnosis from chest X-rays and mammograms."""


def explanation_methods(text: str) -> list[str]:
    """The comma-separated explanation methods of an option, refused with the valid names if unknown."""
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown or not chosen:
        raise ConfigError(f"unknown explanation method(s) {unknown}; choose from {list(METHODS)}")
    return chosen


def reports_errors(command: F) -> F:
    """Turn RadsightError into a one-line message and exit code 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(
            level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
        )
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # Expected here: --resume reuses a stage's checkpoint folder (radsight itself refuses a non-empty
        # run folder without it), and frozen parts of staged methods stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message="Found .* module\\(s\\) in eval mode")
        try:
            return command(*args, **kwargs)
        except RadsightError as error:
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def quiet_trainer_logs() -> None:
    """Import Lightning's trainer, for the commands that train, and keep its loggers to warnings (it sets
    them to INFO on import; radsight logs its own progress)."""
    import lightning.pytorch  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def existing_files(files: list[Path]) -> None:
    """Check that every file exists before anything heavy is imported."""
    for path in files:
        if not path.is_file():
            raise DataError(path, "file not found")


def builtin_recipe(name: str) -> Path:
    """Path of a recipe shipped inside the package (recipes/ in the repository points there)."""
    return Path(str(resources.files("radsight") / "recipes" / name))


def _train_and_evaluate(
    recipe_path: Path, out: Path, overrides: list[str], *, resume: bool, force: bool, evaluate: bool
) -> None:
    """Check the recipe and the run folder (clearing it with ``force``), then import training and run."""
    from radsight.config import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    if resume and force:
        raise ConfigError("--resume continues the run in --out and --force starts it over: pass one of them")
    if is_launching_process():  # DDP ranks re-run the command on the folder their launcher prepared
        if force and (removed := clear_run_folder(out)):
            log.info("--force: removed %s from %s", ", ".join(removed), out)
        check_out_dir(out, resume)
    quiet_trainer_logs()
    from radsight.train import train_and_evaluate

    _, metrics = train_and_evaluate(recipe, out, resume=resume, evaluate_test=evaluate)
    if metrics is not None:
        _print_headline(metrics, out)


def _print_headline(metrics: dict[str, Any], out: Path) -> None:
    table = Table(title="test metrics (95% CI over patients)")
    table.add_column("metric")
    table.add_column("value")
    for section in metrics.values():
        for key, value in section.items():
            if key.endswith(("_macro", "accuracy")) and isinstance(value, float):
                table.add_row(key, section_cell(section, key))
    Console().print(table)
    Console().print(f"report: {out / 'report.md'}")


@subcommand()
@reports_errors
def demo(
    out: Annotated[Path, typer.Option(help="folder for the model, metrics and report")] = Path("demo"),
    overrides: SetOption = [],  # noqa: B006 - typer reads the default, it is never mutated
    resume: Resume = False,
    force: Force = False,
) -> None:
    """Generate phantoms, train the baseline, evaluate it on held-out phantoms and write the report."""
    recipe = builtin_recipe("baseline_cpu.yaml")
    _train_and_evaluate(recipe, out, overrides, resume=resume, force=force, evaluate=True)


@subcommand()
@reports_errors
def train(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    out: Annotated[Path, typer.Option(help="run folder")],
    overrides: SetOption = [],  # noqa: B006
    resume: Resume = False,
    force: Force = False,
    evaluate: Annotated[bool, typer.Option(help="evaluate on the test split afterwards")] = True,
) -> None:
    """Train a recipe (all its stages), export the model and evaluate it on the test split."""
    _train_and_evaluate(recipe, out, overrides, resume=resume, force=force, evaluate=evaluate)


@subcommand()
@reports_errors
def evaluate(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="folder for metrics.json, report.md/html and plots")],
    source: Annotated[
        str | None, typer.Option(help=f"data source ({SOURCE_NAMES}); default: the model's own test split")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="the source's root folder (a manifest's default: its CSV's folder)")
    ] = None,
    options: SourceOptions = [],  # noqa: B006 - typer reads the default, it is never mutated
    overrides: Annotated[
        list[str],
        typer.Option("--set", help="override a field of the model's recipe: data.* or evaluation.*"),
    ] = [],  # noqa: B006
    region: Annotated[
        list[str],
        typer.Option(
            help="anatomical region for the attention share: a mask name, or NAME=MASK,MASK for the "
            "union of several masks (repeatable; default: lungs)"
        ),
    ] = [],  # noqa: B006
    n_boot: Annotated[int | None, typer.Option(help="bootstrap resamples for the CIs")] = None,
    runtime: RuntimeName = "torch",
) -> None:
    """Evaluate a trained model on a dataset source, or on its own test split (from its splits.json).

    On a source, images of patients the model trained or validated on are left out (with a warning);
    a source with a split column is evaluated on its test rows. Images without labels are scored for
    their maps and attention only. The bootstrap is seeded by the model's recipe, as at training time.
    """
    read_export_config(model)
    from radsight.config import SourceSpec
    from radsight.data.assemble import (
        SPLITS_FILE,
        LabelledUnion,
        build_source,
        build_splits,
        outside_evaluation_set,
    )
    from radsight.data.transforms import build_transforms
    from radsight.evaluate import evaluate as run_evaluation
    from radsight.methods import check_recipe, load_method
    from radsight.runtime import load_runtime
    from radsight.threads import set_torch_threads

    regions = _regions(region)
    method, recipe = load_method(model)
    chosen_runtime = load_runtime(runtime, method, model)
    if runtime != "torch":
        log.info("%s computes the predictions; maps that need gradients come from PyTorch", runtime)
    recipe = _recipe_for_evaluation(recipe, overrides)
    set_torch_threads(recipe.trainer.threads, workers=0)
    config = recipe.evaluation.model_copy(update={"n_boot": n_boot} if n_boot is not None else {})
    if source is None:
        check_recipe(recipe)
        dataset = build_splits(recipe.data, recipe.seed, stored=model / SPLITS_FILE, required=["test"]).test
        title = f"{recipe.name}: test split"
    else:
        spec = SourceSpec(
            name=source, root=None if root is None else str(root), options=_parse_options(options)
        )
        transform = build_transforms(
            recipe.data.image_size, train=False, augment=False, gaze_sigma_fraction=None
        )
        union = LabelledUnion([build_source(spec)], [source], method.label_names, transform, partial=True)
        dataset, left_out = outside_evaluation_set(union, model)
        title = f"{recipe.name} on {source}"
        if left_out:
            title += f" ({left_out} images of training patients left out)"
    metrics = run_evaluation(
        method,
        dataset,
        out,
        config,
        title=title,
        batch_size=recipe.data.batch_size,
        seed=recipe.seed,
        regions=regions,
        runtime=chosen_runtime,
    )
    _print_headline(metrics, out)


def _recipe_for_evaluation(recipe: Recipe, overrides: list[str]) -> Recipe:
    """The model's recipe with ``--set`` overrides of its data and evaluation sections (the rest is
    fixed by the trained weights)."""
    from radsight.config import apply_overrides, parse_recipe

    if not overrides:
        return recipe
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(("data.", "evaluation.")):
            raise ConfigError(
                f"--set {key}: evaluate overrides the model recipe's data.* or evaluation.* fields; "
                "pass a data source's options with --option key=value"
            )
    return parse_recipe(apply_overrides(recipe.model_dump(mode="json"), overrides), "the model's recipe")


def _regions(items: list[str]) -> dict[str, tuple[str, ...]]:
    """``--region`` values: ``NAME`` (the mask of that name) or ``NAME=MASK,MASK`` (their union)."""
    from radsight.evaluate import DEFAULT_REGIONS

    regions = {}
    for item in items:
        name, _, masks = (part.strip() for part in item.partition("="))
        chosen = tuple(mask.strip() for mask in masks.split(",") if mask.strip()) or (name,)
        if not name or ("=" in item and not masks):
            raise ConfigError(f"--region expects NAME or NAME=MASK,MASK, got {item!r}")
        regions[name] = chosen
    return regions or DEFAULT_REGIONS


@subcommand()
@reports_errors
def predict(
    model: ModelDir,
    files: ImageFiles,
    out: Annotated[Path, typer.Option(help="folder for predictions.json and overlays")],
    explain: Annotated[
        str, typer.Option(metavar="METHOD", help=f"map drawn on each file: {METHOD_NAMES}")
    ] = "",
    refuse_foreign: Annotated[
        bool,
        typer.Option(
            "--refuse-foreign",
            help="stop, naming the file, when a file is unlike the model's training images (another "
            "modality or body part, or image statistics far from theirs); without it such a file is "
            "predicted with a warning",
        ),
    ] = False,
    runtime: RuntimeName = "torch",
) -> None:
    """Predict each file; write predictions.json and one overlay PNG per file, in the file's own pixels."""
    read_export_config(model)
    existing_files(files)
    how = explanation_methods(explain)[0] if explain else None
    from radsight.predict import predict_files

    payload = predict_files(model, files, out, how, refuse_foreign=refuse_foreign, runtime=runtime)
    _print_predictions(payload)
    Console().print(f"wrote {out / 'predictions.json'}")


def _print_predictions(payload: dict[str, Any]) -> None:
    """One row per file (its top label and, for a few labels, every probability), then one line per
    file that is unlike the model's training images."""
    rows = payload["files"]
    labels = list(rows[0]["probabilities"]) if rows else []
    per_label = labels if len(labels) <= MAX_LABEL_COLUMNS else []
    table = Table("file", "top label", "probability", *per_label, title="predictions")
    for row in rows:
        probabilities = row["probabilities"]
        table.add_row(
            escape(Path(row["path"]).name),
            escape(row["top_label"]),
            f"{probabilities[row['top_label']]:.3f}",
            *(f"{probabilities[label]:.3f}" for label in per_label),
        )
    Console().print(table)
    for row in rows:
        if row["warnings"]:
            text = f"{row['path']}: {'; '.join(row['warnings'])}"
            console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


@subcommand()
@reports_errors
def export(
    model: ModelDir,
    out: Annotated[
        Path, typer.Option(help="folder for model.onnx (another one also gets the model's files)")
    ],
    format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="onnx")] = "onnx",
) -> None:
    """Export a trained model for another runtime: ONNX (images -> probabilities and native maps, any
    batch size, the preprocessing spec in its metadata), checked against PyTorch on a few images."""
    read_export_config(model)
    if format != "onnx":
        raise ConfigError(f"--format {format!r}: radsight exports onnx only")
    from radsight.onnx_export import export_onnx

    path, difference = export_onnx(model, out)
    console.print(f"wrote {path} (ONNX Runtime vs PyTorch on 3 images: largest difference {difference:.1e})")


@subcommand("explain")
@reports_errors
def explain_command(
    model: ModelDir,
    files: ImageFiles,
    out: Annotated[Path, typer.Option(help="folder for explain.json and one picture per file")],
    methods: Annotated[str, typer.Option(help=f"comma-separated: {METHOD_NAMES}")] = COMPARED_METHODS,
    steps: Annotated[int, typer.Option(help="points of the deletion and insertion curves")] = 20,
) -> None:
    """Explain each file's top class with several methods side by side, scored by deletion/insertion AUC."""
    read_export_config(model)
    existing_files(files)
    chosen = explanation_methods(methods)
    from radsight.explain_files import explain_files

    result = explain_files(model, files, out, chosen, steps)
    table = Table("method", "deletion AUC (lower is better)", "insertion AUC (higher is better)")
    for how, score in result["mean"].items():
        table.add_row(how, f"{score['deletion_auc']:.3f}", f"{score['insertion_auc']:.3f}")
    console.print(table)
    console.print(f"wrote {out / 'explain.json'}")


@subcommand()
@reports_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="evaluated run folders; the first is the reference")],
    out: Annotated[Path, typer.Option(help="folder for compare.json and compare.md")],
    metric: Annotated[list[str], typer.Option(help="metric(s) to test, e.g. auroc_macro")] = ["auroc_macro"],  # noqa: B006
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
) -> None:
    """One table of several runs on the same test images, with paired bootstrap tests vs the first."""
    check_evaluated_runs(runs)
    from radsight.report.compare import HEADLINE, compare_runs

    result = compare_runs(runs, out, metrics=metric, n_boot=n_boot)
    table = Table("run", *HEADLINE, title=f"comparison on {result['n_images']} shared test images (95% CI)")
    for row in result["runs"]:
        table.add_row(escape(row["run"]), *(section_cell(row, key) for key in HEADLINE))
    tests = Table(
        "run", "metric", "difference [95% CI]", "p", title="paired bootstrap tests against the first"
    )
    for test in result["paired_tests"]:
        tests.add_row(
            escape(test["run"]), test["metric"], section_cell(test, "difference"), number(test["p_value"], 4)
        )
    Console().print(table)
    Console().print(tests)
    Console().print(f"wrote {out / 'compare.md'}")


@subcommand()
@reports_errors
def curve(
    recipes: Annotated[list[Path], typer.Argument(help="one or more recipe YAML files")],
    out: Annotated[Path, typer.Option(help="folder for the runs, curve.json and curve.png")],
    budgets: Annotated[str, typer.Option(help="labelled images per class, comma-separated")] = "10,30,100",
    seeds: Annotated[int, typer.Option(help="label draws (and training seeds) per budget")] = 3,
    metric: Annotated[str, typer.Option(help="classification metric to plot")] = "auroc_macro",
    overrides: SetOption = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="reuse finished runs in --out")] = False,
) -> None:
    """Label-efficiency curve: test metric against the number of labels, one line per recipe."""
    existing_files(recipes)
    from radsight.studies.curve import run_curve

    try:
        values = [int(b) for b in budgets.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated integers, got {budgets!r}") from None
    quiet_trainer_logs()
    payload = run_curve(recipes, values, seeds, out, metric=metric, overrides=overrides, resume=resume)
    for name, points in payload["recipes"].items():
        Console().print(
            name,
            [(p["labels_per_class"], None if p["value"] is None else round(p["value"], 3)) for p in points],
        )
    Console().print(f"plot: {out / 'curve.png'}")


@subcommand()
@reports_errors
def ablate(
    ablation: Annotated[Path, typer.Argument(help="ablation YAML: a base recipe and its variants")],
    out: Annotated[Path, typer.Option(help="folder for the variants' runs, ablation.json and ablation.md")],
    overrides: SetOption = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="continue interrupted variants, reuse finished ones")] = False,
    n_boot: Annotated[int | None, typer.Option(help="bootstrap resamples for CIs and tests")] = None,
) -> None:
    """Train every variant under the same budget, evaluate each on the same test split, one table."""
    from radsight.studies.ablation import run_ablation

    quiet_trainer_logs()
    run_ablation(ablation, out, overrides, resume=resume, n_boot=n_boot)
    Console().print((out / "ablation.md").read_text())


@subcommand("glam-compare")
@reports_errors
def glam_compare(
    glam: Annotated[Path, typer.Option(help="run folder of glam (with its local stages)")],
    out: Annotated[Path, typer.Option(help="folder for comparison.json and comparison.md")],
    global_only: Annotated[
        Path | None, typer.Option(help="run folder of glam trained with the global stage only")
    ] = None,
    classifier: Annotated[Path | None, typer.Option(help="run folder of a supervised classifier")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Score GLAM's maps and its baselines' on GLAM's test split, with GLAM's relative Dice gain."""
    for run in (glam, global_only, classifier):
        if run is not None:
            read_export_config(run)
    from radsight.studies.glam_comparison import run_glam_comparison

    result = run_glam_comparison(
        glam, out, global_only=global_only, classifier=classifier, n_boot=n_boot, seed=seed
    )
    Console().print((out / "comparison.md").read_text())
    Console().print(json.dumps(result["relative_dice_gain"], indent=2))


@data_app.command("inspect", cls=PlainCommand)
@reports_errors
def inspect_data(
    source: Annotated[str, typer.Option(help=f"data source: {SOURCE_NAMES}")],
    out: Annotated[Path, typer.Option(help="folder for summary.json and contact_sheet.png")],
    root: Annotated[
        Path | None, typer.Option(help="the source's root folder (a manifest's default: its CSV's folder)")
    ] = None,
    options: SourceOptions = [],  # noqa: B006
    max_images: Annotated[int, typer.Option(help="images on the contact sheet")] = 16,
) -> None:
    """Count labels and annotation coverage, and draw a contact sheet with boxes, masks and gaze."""
    from radsight.config import SourceSpec
    from radsight.report.dataset_summary import inspect_source

    spec = SourceSpec(name=source, root=None if root is None else str(root), options=_parse_options(options))
    summary = inspect_source(spec, out, max_images=max_images)
    table = Table(title=f"{source}: {summary['images']} images, {summary['patients']} patients")
    for column in ("label", "positive", "negative", "not annotated"):
        table.add_column(column)
    for label, counts in summary["labels"].items():
        table.add_row(label, *(str(counts[k]) for k in ("positive", "negative", "not_annotated")))
    Console().print(table)
    Console().print(json.dumps(summary["coverage"]))


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``--option key=value`` items as a source's options (values read as YAML, dotted keys nest)."""
    from radsight.config import apply_overrides

    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--option expects key=value, got {item!r}")
    return apply_overrides({}, items)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
