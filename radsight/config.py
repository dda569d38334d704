"""Recipes: one YAML file fully describes a run, validated by pydantic before anything starts.

A recipe names its data sources, the label list, the method and its model options, the training
stages in order, the trainer (devices, strategy, precision) and the evaluation. ``--set a.b=value``
overrides any field from the command line.

This module checks a recipe's own schema and every value's range. What the recipe names elsewhere (the
method's options and stage names, each source's options) is checked against the method and source
registries by ``radsight.methods.registry.check_recipe``, still before any data is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from radsight.errors import ConfigError
from radsight.explain.names import Method as ExplanationMethod
from radsight.explain.names import Normalisation


class Strict(BaseModel):
    """Unknown keys are errors, so a typo in a recipe never silently falls back to a default; so are
    infinite and NaN numbers (an infinite learning rate passes every lower bound)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Options = TypeVar("Options", bound=BaseModel)

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""What numpy's and Lightning's seeding accept."""

ImageSide = Annotated[int, Field(ge=8)]

ResizeMode = Literal["letterbox", "stretch", "crop_center", "crop_lungs"]
"""How a file is fitted to ``data.image_size`` (``radsight.data.transforms.RESIZE_MODES``)."""

PRECISIONS = Literal[
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
]
"""The precision strings Lightning's Trainer accepts."""

BATCH_CASTING_PRECISIONS = ("16-true", "bf16-true", "64-true", "64")
"""Precisions for which Lightning casts every batch itself, which radsight's batch records do not allow
(mixed precision casts inside the model instead)."""

ACCELERATORS = Literal["auto", "cpu", "cuda", "gpu", "mps", "tpu"]
"""Lightning's registered accelerators plus its aliases ``auto`` and ``gpu``."""


def validation_problems(error: ValidationError) -> str:
    """Pydantic's errors as ``place: problem`` joined on one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
    )


def validate_options(schema: type[Options], values: Mapping[str, Any], what: str) -> Options:
    """``values`` read as ``schema``, or one ConfigError line: unknown keys named with the allowed ones,
    or every other problem (a wrong type, a missing value) with its key."""
    allowed = sorted(schema.model_fields)
    unknown = sorted(str(key) for key in set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; allowed options: {allowed}")
    try:
        return schema.model_validate(dict(values))
    except ValidationError as error:
        raise ConfigError(f"{what}: invalid option(s) ({validation_problems(error)})") from None


def repeated(names: list[str]) -> list[str]:
    """The names listed more than once, sorted."""
    return sorted({name for name in names if names.count(name) > 1})


class SourceSpec(Strict):
    """One dataset source: its registry name, root folder and keyword options."""

    name: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ShortcutAuditConfig(Strict):
    """The shortcut audit (``radsight.data.shortcut_audit``) of ``radsight data inspect``, of the start of
    training and of evaluation: a predictor whose AUROC for a label exceeds ``level`` is warned about
    (an error with ``strict``)."""

    level: float = Field(0.70, gt=0.5, le=1.0)
    strict: bool = False
    probe: bool = Field(True, description="train the masked-image probe (lungs blanked)")
    max_images: int = Field(1000, ge=20, description="images audited: a seeded sample when there are more")
    n_boot: int = Field(1000, ge=1, description="patient resamples of each AUROC's interval")


class DataConfig(Strict):
    sources: list[SourceSpec] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    image_size: tuple[ImageSide, ImageSide] = (224, 224)
    resize: ResizeMode = Field(
        "letterbox", description="letterbox pads (the bars show the aspect ratio); stretch and crops do not"
    )
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: Seed | None = Field(None, description="seed of the patient split (default: the recipe seed)")
    budget: int | None = Field(None, ge=1, description="labelled images per class kept in the training split")
    budget_seed: Seed | None = Field(None, description="seed of the budget subset (default: the recipe seed)")
    augment: bool = True
    gaze_sigma_fraction: float | None = Field(None, gt=0, le=1)
    pseudo_gaze: bool = Field(
        False, description="stand-in fixations from boxes where gaze is absent (radsight.data.pseudo_gaze)"
    )
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    on_bad_file: Literal["raise", "skip"] = "raise"
    shortcut_audit: ShortcutAuditConfig = Field(default_factory=ShortcutAuditConfig)

    @field_validator("split")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(value) - 1.0) > 1e-6 or min(value) < 0:
            raise ValueError(f"split fractions must be non-negative and sum to 1, got {value}")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_differ(cls, value: list[str]) -> list[str]:
        if repeats := repeated(value):
            raise ValueError(f"label(s) {repeats} listed more than once")
        return value

    @model_validator(mode="after")
    def _pseudo_gaze_needs_a_map(self) -> DataConfig:
        if self.pseudo_gaze and self.gaze_sigma_fraction is None:
            raise ValueError("pseudo_gaze makes fixations: set gaze_sigma_fraction to turn them into a map")
        return self


Pool = Literal["labelled", "unlabelled", "annotated", "reports"]
"""The training images a stage can learn from (see :class:`StageData`)."""

LABEL_FREE_POOLS: tuple[Pool, ...] = ("unlabelled", "reports")
"""The pools a label budget does not touch: a stage on one of them is the same at every budget."""


class StageData(Strict):
    """The training data of one stage; validation always uses the val split.

    ``pool``: ``labelled`` is the training split after any label budget (what every stage saw so far);
    ``unlabelled`` is every image of the training split, the ones the budget left out included, with no
    label, box, mask, gaze or report; ``annotated`` is the labelled images that carry boxes, masks or
    gaze; ``reports`` is every image of the training split that has a report, with its report and
    nothing else (the report is the signal, not the labels). ``augment`` overrides ``data.augment`` for
    this stage.
    """

    pool: Pool = "labelled"
    augment: bool | None = None


class StageConfig(Strict):
    """A named training step with its own optimiser settings; methods define what each name trains."""

    name: str
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    scheduler: Literal["none", "cosine", "plateau"] = "cosine"
    data: StageData | None = Field(
        None, description="the stage's training data (default: the method's choice, else the labelled pool)"
    )


class TrainerConfig(Strict):
    """Passed to Lightning's Trainer: the same recipe runs on a laptop CPU or many GPU nodes."""

    accelerator: ACCELERATORS = Field(
        "auto", description="gpu/cuda is refused at training time when torch sees no GPU"
    )
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: PRECISIONS = Field(
        "32-true", description="bf16-mixed: bfloat16 autocast on CPU and GPU, fp32 weights and optimizer"
    )
    channels_last: bool = Field(
        False, description="train in channels-last memory layout (faster convolutions, same values)"
    )
    limit_train_batches: int | float | None = None
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="also checkpoint every N training steps, so a kill mid-epoch resumes there"
    )
    gradient_clip_val: float | None = Field(None, gt=0)
    progress_bar: bool = True
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (default: CPUs available less data-loader workers)"
    )

    @field_validator("devices")
    @classmethod
    def _devices_count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1 and value != -1:
            raise ValueError(f"a count from 1, -1 (all) or a string such as 'auto', not {value}")
        return value

    @field_validator("precision")
    @classmethod
    def _precision_radsight_runs(cls, value: str) -> str:
        if value in BATCH_CASTING_PRECISIONS:
            raise ValueError(
                f"{value!r} makes Lightning cast each batch, which radsight's batches do not support; "
                "use 32-true, 16-mixed or bf16-mixed"
            )
        return value

    @field_validator("limit_train_batches")
    @classmethod
    def _batches_limit(cls, value: int | float | None) -> int | float | None:
        if (isinstance(value, int) and value < 1) or (isinstance(value, float) and not 0 < value <= 1):
            raise ValueError(f"a count from 1 or a fraction in (0, 1], not {value}")
        return value


ThresholdRule = Literal["youden", "sensitivity", "fixed"]
"""How a label's threshold is chosen (see :class:`OperatingPointConfig`)."""


class OperatingPointConfig(Strict):
    """How each label's threshold (positive when ``prob >= threshold``) is chosen, once, on the validation
    split after training: ``youden`` maximises sensitivity + specificity - 1; ``sensitivity`` is the highest
    threshold reaching the target sensitivity ``value`` (e.g. 0.9); ``fixed`` uses ``value`` for every label.
    """

    rule: ThresholdRule = "youden"
    value: float | None = None

    @model_validator(mode="after")
    def _value_fits_the_rule(self) -> OperatingPointConfig:
        if self.rule == "youden" and self.value is not None:
            raise ValueError("the youden rule takes no value")
        if self.rule == "sensitivity" and (self.value is None or not 0 < self.value <= 1):
            raise ValueError("the sensitivity rule needs a target value in (0, 1], e.g. 0.9")
        if self.rule == "fixed" and (self.value is None or not 0 <= self.value <= 1):
            raise ValueError("the fixed rule needs a threshold value in [0, 1]")
        return self


class EvaluationConfig(Strict):
    n_boot: int = Field(1000, ge=1)
    explain: ExplanationMethod = "gradcam"
    operating_point: OperatingPointConfig = Field(default_factory=OperatingPointConfig)
    min_class_count: int = Field(
        10, ge=1, description="a label with fewer positive or negative test images is marked thin"
    )
    macro_includes_thin: bool = Field(False, description="average thin labels into the macro metrics too")
    map_normalisation: Normalisation = Field(
        "max", description="explanation maps divided by their maximum, or rescaled min-max (pytorch-grad-cam)"
    )
    auc_judd_draws: int = Field(10, ge=1, description="jitter draws averaged by the MIT reading of AUC-Judd")

    @model_validator(mode="before")
    @classmethod
    def _fixed_threshold_of_older_exports(cls, raw: Any) -> Any:
        """Exports written before operating points held ``threshold`` (None: Youden, else a fixed value)."""
        if isinstance(raw, dict) and "threshold" in raw:
            raw = dict(raw)
            threshold = raw.pop("threshold")
            if threshold is not None:
                raw.setdefault("operating_point", {"rule": "fixed", "value": threshold})
        return raw


TemplatePath = tuple[str | int, ...]
"""Where a string sits in a recipe: its keys and list positions from the top."""


class Recipe(Strict):
    """A whole recipe, ``${VAR}`` already read from the environment. The strings that held variables are
    kept as written (:func:`recipe_as_written`), so what a run folder stores names the variable, never
    its value (a secret, or a path of the machine it ran on)."""

    _templates: dict[TemplatePath, str] = PrivateAttr(default_factory=dict)

    name: str
    method: str = "supervised"
    task: Literal["multilabel", "multiclass"] = "multilabel"
    seed: Seed = 0
    data: DataConfig
    model: dict[str, Any] = Field(
        default_factory=dict, description="the method's options (its options_class), checked by check_recipe"
    )
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="classify")], min_length=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @field_validator("stages")
    @classmethod
    def _stage_names_differ(cls, value: list[StageConfig]) -> list[StageConfig]:
        if repeats := repeated([stage.name for stage in value]):
            raise ValueError(f"stage(s) {repeats} listed more than once")
        return value


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str) -> str:
    """Replace ``${VAR}`` with the environment's value; an unset variable is a clear error."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"recipe refers to ${{{name}}} but the environment variable {name} is not set")
        return os.environ[name]

    return _ENV_PATTERN.sub(substitute, value)


def read_yaml(text: str, origin: str) -> Any:
    """YAML as plain values, refusing aliases (``*name``) before anything is built: nested aliases
    expand exponentially (a few hundred bytes can stand for gigabytes), and a recipe never needs them."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                raise ConfigError(
                    f"{origin}: line {line}: YAML aliases (*{event.anchor}) are not accepted; "
                    "write the value out"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise ConfigError(f"{origin}: not valid YAML ({problem})") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        node: Any = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {key}: {part!r} is not a section of the recipe")
        last = parts[-1]
        value = read_yaml(text, f"--set {key}")
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: cannot set {last!r} there")
    return raw


def _templates(value: Any, where: TemplatePath = ()) -> dict[TemplatePath, str]:
    """Every string of ``value`` that names an environment variable, by its place."""
    if isinstance(value, str):
        return {where: value} if _ENV_PATTERN.search(value) else {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return {place: text for key, item in items for place, text in _templates(item, (*where, key)).items()}


def _expand_all(value: Any) -> Any:
    if isinstance(value, str):
        return expand_env(value)
    if isinstance(value, dict):
        return {key: _expand_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_all(item) for item in value]
    return value


def parse_recipe(raw: dict[str, Any], origin: str = "recipe", *, expand: bool = True) -> Recipe:
    """Validate a recipe dict (``${VAR}`` expanded in every string), as one readable error if invalid.

    ``expand`` False keeps the variables as written: a model folder's recipe, read to rebuild the model
    and to predict, which needs none of the data paths they stand for."""
    try:
        recipe = Recipe.model_validate(_expand_all(raw) if expand else raw)
    except ValidationError as error:
        raise ConfigError(f"{origin}: invalid recipe ({validation_problems(error)})") from None
    recipe._templates = _templates(raw)
    return recipe


def recipe_as_written(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain values (defaults filled in) with each ``${VAR}`` string as it was written:
    what ``recipe.yaml`` and ``config.json`` store."""
    dumped = recipe.model_dump(mode="json")
    for place, text in recipe._templates.items():
        node: Any = dumped
        try:
            for key in place[:-1]:
                node = node[key]
            if isinstance(node[place[-1]], str):
                node[place[-1]] = text
        except (KeyError, IndexError, TypeError):
            continue  # a place the schema dropped or reshaped: nothing of the variable's value is there
    return dumped


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the recipe ({error})") from None
    raw = read_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    return parse_recipe(apply_overrides(raw, overrides or []), str(path))
