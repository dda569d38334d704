"""The radsight command: demo, train, evaluate, predict, explain, serve, compare, studies, data inspection and
report text.

Every user-facing failure is a RadsightError, printed as one line (file and problem) with exit code 2.
Commands check their arguments and files before importing torch, and import Lightning's training
machinery only where they train, so a mistyped path is answered at once.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup

from radsight import __version__
from radsight.data.sources import SOURCES
from radsight.errors import ConfigError, DataError, RadsightError
from radsight.explain.names import METHODS
from radsight.folder_lock import locked_folder
from radsight.report.cells import number, section_cell
from radsight.resume import check_resumable
from radsight.run_folder import (
    check_evaluated_runs,
    check_out_dir,
    check_run_folder,
    clear_run_folder,
    is_launching_process,
    read_export_config,
)
from radsight.serve import DEFAULT_MAX_UPLOAD_MB

if TYPE_CHECKING:
    from radsight.config import Recipe
    from radsight.data.shortcut_audit import ShortcutAudit

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
data_app = typer.Typer(
    cls=PlainGroup,
    no_args_is_help=True,
    help="Look at a dataset, or pack it into shards, before training on it.",
)
app.add_typer(data_app, name="data")
text_app = typer.Typer(cls=PlainGroup, no_args_is_help=True, help="Findings in radiology report text.")
app.add_typer(text_app, name="text")
subcommand = functools.partial(app.command, cls=PlainCommand)
# Neither console reads markup: what they print holds file names, recipe names and labels, which are the
# user's text and are shown literally ("[bold]scan.png" stays that).
console = Console(stderr=True, markup=False)
stdout = Console(markup=False)


def print_flagged(flag: str, style: str, text: str) -> None:
    """One line on stderr: a coloured ``flag``, then ``text`` exactly as given."""
    console.print(Text.assemble((flag, style), f" {text}"), highlight=False, soft_wrap=True)


def print_error(text: str) -> None:
    print_flagged("error:", "bold red", text)


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
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
"""Write failures reported in one line wherever they happen (radsight's own writes say so already)."""
"""predict prints every label's probability up to this many labels, else the top label's only."""


def _print_version(value: bool) -> None:
    if value:
        stdout.print(f"radsight {__version__}")
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
            message = str(error)
        except OSError as error:
            if error.errno not in FULL_DISK:
                raise
            message = f"{error.filename or 'an output file'}: cannot write ({error.strerror.lower()})"
        print_error(message)
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
    launching = is_launching_process()  # DDP ranks re-run the command on the folder their launcher prepared
    if launching:
        check_run_folder(out, resume=resume, force=force)
        if resume:
            check_resumable(recipe, out)
    with locked_folder(out) if launching else nullcontext():
        if launching:
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
    stdout.print(table)
    stdout.print(f"report: {out / 'report.md'}")


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
    strict: Annotated[
        bool, typer.Option("--strict", help="stop when the shortcut audit of the training split warns")
    ] = False,
) -> None:
    """Train a recipe (all its stages), export the model and evaluate it on the test split. The training
    split is audited for shortcuts first (data.shortcut_audit)."""
    overrides = [*overrides, "data.shortcut_audit.strict=true"] if strict else overrides
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
    from radsight.config import SourceSpec, parse_recipe, recipe_as_written
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
    if source is None:  # the run's own test split: the data its recipe names, ${VAR} read from here
        recipe = check_recipe(parse_recipe(recipe_as_written(recipe), str(model / "config.json")))
        dataset = build_splits(recipe.data, recipe.seed, stored=model / SPLITS_FILE, required=["test"]).test
        title = f"{recipe.name}: test split"
    else:
        spec = SourceSpec(
            name=source, root=None if root is None else str(root), options=_parse_options(options)
        )
        transform = build_transforms(
            recipe.data.image_size,
            train=False,
            augment=False,
            gaze_sigma_fraction=None,
            resize=recipe.data.resize,
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
        audit=recipe.data.shortcut_audit,
        runtime=chosen_runtime,
    )
    _print_headline(metrics, out)


def _recipe_for_evaluation(recipe: Recipe, overrides: list[str]) -> Recipe:
    """The model's recipe with ``--set`` overrides of its data and evaluation sections (the rest is
    fixed by the trained weights), ``${VAR}`` still as written."""
    from radsight.config import apply_overrides, parse_recipe, recipe_as_written

    if not overrides:
        return recipe
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(("data.", "evaluation.")):
            raise ConfigError(
                f"--set {key}: evaluate overrides the model recipe's data.* or evaluation.* fields; "
                "pass a data source's options with --option key=value"
            )
    raw = apply_overrides(recipe_as_written(recipe), overrides)
    return parse_recipe(raw, "the model's recipe", expand=False)


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
    files: Annotated[
        list[Path] | None, typer.Argument(metavar="FILE...", help="DICOM, PNG or JPEG files")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder for predictions.json and overlays")] = None,
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
    dicom: Annotated[
        bool, typer.Option("--dicom", help="also write each DICOM file's SR, overlay and map as DICOM")
    ] = False,
    pacs: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="a PACS's DICOMweb root: predict --study there and store the results back (credentials: "
            "RADSIGHT_PACS_USER and RADSIGHT_PACS_PASSWORD, or a file named by RADSIGHT_PACS_CREDENTIALS)",
        ),
    ] = "",
    study: Annotated[str, typer.Option(metavar="UID", help="the Study Instance UID to predict")] = "",
    runtime: RuntimeName = "torch",
) -> None:
    """Predict each file; write predictions.json and one overlay PNG per file, in the file's own pixels.
    With --pacs and --study, predict a study's frontal images and store their results in the PACS."""
    read_export_config(model)
    how = explanation_methods(explain)[0] if explain else None
    if pacs or study:
        if not (pacs and study) or files:
            raise ConfigError("--pacs and --study go together, without files")
        _predict_study(model, pacs, study, how)
        return
    if not files or out is None:
        raise ConfigError("predict needs files and --out (or --pacs URL --study UID)")
    existing_files(files)
    from radsight.predict import predict_files

    payload = predict_files(
        model, files, out, how, refuse_foreign=refuse_foreign, dicom=dicom, runtime=runtime
    )
    _print_predictions(payload)
    stdout.print(f"wrote {out / 'predictions.json'}")


def _predict_study(model: Path, url: str, study: str, how: str | None) -> None:
    """Predict a PACS study and say per image what happened; exit 2 when an image failed."""
    _quiet_dicom_logs()
    from radsight.dicom.pacs import PacsClient
    from radsight.dicom.study import DicomPredictor, predict_study

    outcome = predict_study(DicomPredictor.load(model, how), PacsClient.from_environment(url), study)
    for line in outcome.skipped:
        console.print(f"skipped: {line}", highlight=False, soft_wrap=True)
    for line in outcome.failed:
        print_error(line)
    stdout.print(
        f"study {study}: stored {len(outcome.stored)} result object(s), "
        f"{len(outcome.already_held)} already in the PACS",
        soft_wrap=True,
    )
    if outcome.failed:
        raise typer.Exit(2)


def _quiet_dicom_logs() -> None:
    """highdicom and dicomweb-client log every copied module and request at INFO."""
    for name in ("highdicom", "dicomweb_client", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)


@subcommand()
@reports_errors
def listen(
    model: ModelDir,
    port: Annotated[int, typer.Option(help="TCP port to receive images on (DICOM C-STORE)")],
    forward: Annotated[
        str, typer.Option(metavar="AE@HOST:PORT", help="where the results are sent (C-STORE)")
    ],
    ae_title: Annotated[str, typer.Option(help="this node's AE title")] = "RADSIGHT",
    explain: Annotated[str, typer.Option(metavar="METHOD", help=f"map of each image: {METHOD_NAMES}")] = "",
) -> None:
    """Run a DICOM node: predict each image received and send its SR, overlay and map on."""
    read_export_config(model)
    how = explanation_methods(explain)[0] if explain else None
    _quiet_dicom_logs()
    from radsight.dicom.node import Destination, serve

    destination = Destination.parse(forward)
    from radsight.dicom.study import DicomPredictor

    predictor = DicomPredictor.load(model, how)
    console.print(f"listening as {ae_title} on port {port}, forwarding to {forward}")
    serve(predictor, port, destination, ae_title=ae_title)


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
            Path(row["path"]).name,
            row["top_label"],
            f"{probabilities[row['top_label']]:.3f}",
            *(f"{probabilities[label]:.3f}" for label in per_label),
        )
    stdout.print(table)
    for row in rows:
        if draft := row.get("draft_report"):
            name = Path(row["path"]).name
            print_flagged("draft report:", "bold magenta", f"{name} ({draft['notice']}) {draft['text']}")
    for row in rows:
        if row["warnings"]:
            text = f"{row['path']}: {'; '.join(row['warnings'])}"
            print_flagged("warning:", "yellow", text)


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
def serve(
    model: ModelDir,
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    host: Annotated[
        str, typer.Option(help="address to listen on (the default, loopback, serves this machine only)")
    ] = "127.0.0.1",
    max_upload_mb: Annotated[
        float, typer.Option(help="largest upload accepted, in megabytes")
    ] = DEFAULT_MAX_UPLOAD_MB,
    pacs: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="a PACS's DICOMweb root whose studies the page can pick (credentials as for predict --pacs)",
        ),
    ] = "",
) -> None:
    """Serve a web viewer (upload a file or pick a PACS study, see its probabilities and maps) and a JSON
    API (/docs)."""
    read_export_config(model)
    import uvicorn

    from radsight.infer import LoadedModel
    from radsight.serve.app import create_app
    from radsight.threads import set_torch_threads

    loaded = LoadedModel.load(model)
    set_torch_threads(loaded.recipe.trainer.threads, workers=0)
    client = None
    if pacs:
        from radsight.dicom.pacs import PacsClient

        _quiet_dicom_logs()
        client = PacsClient.from_environment(pacs)
    app = create_app(loaded, max_upload_bytes=round(max_upload_mb * 2**20), pacs=client)
    console.print(f"radsight serve: http://{host}:{port}/ (API: http://{host}:{port}/docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
        table.add_row(row["run"], *(section_cell(row, key) for key in HEADLINE))
    tests = Table(
        "run", "metric", "difference [95% CI]", "p", title="paired bootstrap tests against the first"
    )
    for test in result["paired_tests"]:
        tests.add_row(
            test["run"], test["metric"], section_cell(test, "difference"), number(test["p_value"], 4)
        )
    stdout.print(table)
    stdout.print(tests)
    stdout.print(f"wrote {out / 'compare.md'}")


@subcommand()
@reports_errors
def curve(
    recipes: Annotated[
        list[Path], typer.Argument(help="one or more recipe YAML files, or one curve file listing arms")
    ],
    out: Annotated[Path, typer.Option(help="folder for the runs, curve.json, curve.md and curve.png")],
    budgets: Annotated[
        str | None,
        typer.Option(
            help="labelled images per class, comma-separated, 'all' for every label (default 10,30,100)"
        ),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="label draws (and training seeds) per budget (default 3)")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="classification metric (default auroc_macro)")] = None,
    overrides: SetOption = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="reuse finished runs in --out")] = False,
) -> None:
    """Label-efficiency curve: test metric against the number of labels, one line per recipe or arm, with
    patient-bootstrap CIs and paired tests against the first (or the curve file's baseline) arm."""
    existing_files(recipes)
    chosen = None if budgets is None else [_budget(b.strip()) for b in budgets.split(",") if b.strip()]
    from radsight.studies.curve import is_curve_file, load_curve_file, run_arms, run_curve

    quiet_trainer_logs()
    with locked_folder(out):
        if len(recipes) == 1 and is_curve_file(recipes[0]):
            spec = load_curve_file(recipes[0])
            payload = run_arms(
                spec.arms,
                chosen or spec.budgets,
                seeds or spec.seeds,
                out,
                metric=metric or spec.metric,
                overrides=overrides,
                resume=resume,
                baseline=spec.baseline,
                n_boot=spec.n_boot,
            )
        else:
            payload = run_curve(
                recipes,
                chosen or [10, 30, 100],
                seeds or 3,
                out,
                metric=metric or "auroc_macro",
                overrides=overrides,
                resume=resume,
            )
    for name, points in payload["arms"].items():
        stdout.print(
            name,
            [
                (p["labels_per_class"] or "all", None if p["value"] is None else round(p["value"], 3))
                for p in points
            ],
        )
    stdout.print(f"table: {out / 'curve.md'}; plot: {out / 'curve.png'}")


def _budget(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--budgets must be comma-separated integers or 'all', got {text!r}") from None


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
    with locked_folder(out):
        run_ablation(ablation, out, overrides, resume=resume, n_boot=n_boot)
    stdout.print((out / "ablation.md").read_text())


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
    stdout.print((out / "comparison.md").read_text())
    stdout.print(json.dumps(result["relative_dice_gain"], indent=2))


@data_app.command("inspect", cls=PlainCommand)
@reports_errors
def inspect_data(
    out: Annotated[Path, typer.Option(help="folder for summary.json, report.md and contact_sheet.png")],
    source: Annotated[str | None, typer.Option(help=f"data source: {SOURCE_NAMES}")] = None,
    root: Annotated[
        Path | None, typer.Option(help="the source's root folder (a manifest's default: its CSV's folder)")
    ] = None,
    options: SourceOptions = [],  # noqa: B006
    recipe: Annotated[
        Path | None,
        typer.Option(help="inspect a recipe's sources combined, as training sees them (instead of --source)"),
    ] = None,
    overrides: SetOption = [],  # noqa: B006
    level: Annotated[
        float | None, typer.Option(help="AUROC above which a shortcut predictor is warned about (0.70)")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="a shortcut warning is an error")] = False,
    probe: Annotated[bool, typer.Option(help="train the masked-image probe (lungs blanked)")] = True,
    max_images: Annotated[int, typer.Option(help="images on the contact sheet")] = 16,
) -> None:
    """Count labels and annotation coverage, draw a contact sheet with boxes, masks and gaze, and audit
    every label for shortcuts: image size, aspect, file size, bit depth, source, view, sex, age, padding
    and a probe trained with the lungs blanked out."""
    from radsight.config import ShortcutAuditConfig, SourceSpec, load_recipe, validate_options
    from radsight.report.dataset_summary import inspect_recipe, inspect_source

    if (source is None) == (recipe is None):
        raise ConfigError("data inspect: pass either --source (one dataset) or --recipe (sources combined)")
    if overrides and recipe is None:
        raise ConfigError("data inspect: --set overrides a recipe's fields; pass --recipe with it")
    chosen = {"probe": probe} | ({} if level is None else {"level": level})
    if recipe is not None:
        loaded = load_recipe(recipe, overrides)
        values = loaded.data.shortcut_audit.model_dump() | chosen
        config = validate_options(ShortcutAuditConfig, values, "data inspect")
        data = loaded.data.model_copy(update={"shortcut_audit": config})
        summary, audit = inspect_recipe(data, out, max_images=max_images, seed=loaded.seed)
    else:
        config = validate_options(ShortcutAuditConfig, chosen, "data inspect")
        spec = SourceSpec(
            name=source, root=None if root is None else str(root), options=_parse_options(options)
        )
        summary, audit = inspect_source(spec, out, max_images=max_images, audit=config)
    table = Table(title=f"{summary['source']}: {summary['images']} images, {summary['patients']} patients")
    for column in ("label", "positive", "negative", "not annotated"):
        table.add_column(column)
    for label, counts in summary["labels"].items():
        table.add_row(label, *(str(counts[k]) for k in ("positive", "negative", "not_annotated")))
    stdout.print(table)
    stdout.print(json.dumps(summary["coverage"]))
    _print_audit(audit)
    stdout.print(f"report: {out / 'report.md'}")
    audit.check(strict)


@data_app.command("shard", cls=PlainCommand)
@reports_errors
def shard_data(
    source: Annotated[str, typer.Option(help=f"data source: {SOURCE_NAMES}")],
    out: Annotated[str, typer.Option(help="folder or s3://bucket/prefix for the shards")],
    root: Annotated[
        Path | None, typer.Option(help="the source's root folder (a manifest's default: its CSV's folder)")
    ] = None,
    options: SourceOptions = [],  # noqa: B006
    image_size: Annotated[
        int | None, typer.Option(help="store images shrunk to this longer side (default: as the files are)")
    ] = None,
    raw_pixels: Annotated[
        bool,
        typer.Option("--raw-pixels", help="store 16-bit pixels, not compressed files: larger, no decoding"),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="parallel writer processes")] = 1,
) -> None:
    """Pack a source (labels, boxes, masks, gaze, report, meta) into streaming shards that a recipe reads
    as `source: shards`, locally or on S3 (credentials and AWS_ENDPOINT_URL from the environment). An
    interrupted write resumes when run again."""
    if image_size is not None and image_size < 8:
        raise ConfigError(f"--image-size must be at least 8 pixels, not {image_size}")
    from radsight.config import SourceSpec
    from radsight.data.assemble import build_source
    from radsight.data.shards import write_shards

    spec = SourceSpec(name=source, root=None if root is None else str(root), options=_parse_options(options))
    dataset = build_source(spec)
    catalog = write_shards(
        dataset, source, spec.options, out, image_size=image_size, raw_pixels=raw_pixels, workers=workers
    )
    stdout.print(f"{len(catalog.patient_ids)} samples of {source} in {out}")


def _print_audit(audit: ShortcutAudit) -> None:
    """The shortcut audit's warning lines (one per flagged label) and notes, or that it found none."""
    for line in audit.warnings():
        print_flagged("shortcut warning:", "yellow", line)
    for line in audit.notes:
        console.print(f"shortcut note: {line}", highlight=False, soft_wrap=True)
    if not audit.warnings():
        console.print(f"shortcut audit: no predictor above AUROC {audit.level:.2f} for any label")


@text_app.command("agreement", cls=PlainCommand)
@reports_errors
def text_agreement(
    root: Annotated[Path, typer.Option(help="the IU X-ray folder (indiana_reports.csv)")],
    out: Annotated[Path, typer.Option(help="folder for agreement.json and agreement.md")],
) -> None:
    """Precision and recall, per finding, of the report finding extractor against the MeSH Problems codes
    of the IU X-ray reports."""
    existing_files([root / "indiana_reports.csv"])
    from radsight.text.agreement import iu_agreement, write_agreement

    write_agreement(iu_agreement(root), out)
    stdout.print((out / "agreement.md").read_text(), soft_wrap=True)


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
