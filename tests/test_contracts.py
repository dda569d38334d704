"""What every registered method and source promises, checked for each entry of the registries (as timm
tests every registered model): a method or source is covered the day it is registered, and fails here
until it has a tiny configuration or a fixture below.

- A method, built tiny: one optimisation step of each of its stages has a finite loss and changes
  exactly the parameters the stage trains; ``predict`` gives B x C probabilities; the export reloads
  into a model that predicts the same.
- A source: its first sample follows the conventions of the architecture (image 1 x H x W in [0, 1],
  xyxy boxes, masks and fixations inside the image, NaN-for-unknown labels over ``label_names``, a
  patient), and agrees with what the source says without reading images (patient ids, label matrix,
  annotated flags), since splits and label budgets are drawn from those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_captioning import MODEL as TINY_CAPTIONING
from test_gaze_unet import TINY as TINY_GAZE_UNET
from test_gaze_unet import phantom_batch
from test_glam import LABELS as MAMMO_LABELS
from test_glam import TINY as TINY_GLAM
from test_latent_kd import TINY as TINY_LATENT_KD
from test_pretext_curriculum import TINY as TINY_CURRICULUM
from test_shards import phantom_shards
from test_sources_cbis import cbis
from test_sources_chexpert_mimic import chexpert, mimic
from test_sources_gaze import egd, reflacx
from test_sources_manifest import folder

from radsight.checkpoints import export_model
from radsight.config import DataConfig, Recipe, SourceSpec, StageConfig
from radsight.data.sample import Batch, Sample, collate
from radsight.data.sources import SOURCES, source_class
from radsight.data.sources.phantoms_mammo import PhantomMammogram
from radsight.methods.registry import METHODS, build_method, export_config, load_method, method_class
from radsight.text.tokenizer import ReportTokenizer

# ---------------------------------------------------------------- methods

CHEST_LABELS = ("nodule", "opacity")


def mammo_batch() -> Batch:
    """Two phantom mammograms at the size TINY_GLAM is laid out for."""
    return collate(list(PhantomMammogram(2, size=(256, 192), seed=1, prevalence=0.8)))


@dataclass(frozen=True)
class TinyMethod:
    """The smallest options a method takes, a batch of the images it is made for, and their labels."""

    model: dict[str, Any]
    batch: Callable[[], Batch]
    label_names: tuple[str, ...]
    prepare: Callable[[Any, Batch], None] | None = None
    """What a run does to the method before its stages that the method needs (a vocabulary, say)."""


def learn_vocabulary(method: Any, batch: Batch) -> None:
    """The captioning method's vocabulary, learnt on the batch's reports as a run learns it on its
    training split's."""
    reports = [report for report in batch.reports if report]
    method.set_tokenizer(ReportTokenizer.train(reports, TINY_CAPTIONING["report"]["vocab_size"]))


TINY_METHODS = {
    "supervised": TinyMethod({"backbone": "tiny_cnn"}, phantom_batch, CHEST_LABELS),
    "captioning": TinyMethod(TINY_CAPTIONING, phantom_batch, CHEST_LABELS, learn_vocabulary),
    "gaze_unet": TinyMethod(TINY_GAZE_UNET, phantom_batch, CHEST_LABELS),
    "glam": TinyMethod(TINY_GLAM, mammo_batch, tuple(MAMMO_LABELS)),
    "latent_kd": TinyMethod(TINY_LATENT_KD, phantom_batch, CHEST_LABELS),
    "pretext_curriculum": TinyMethod(TINY_CURRICULUM, phantom_batch, CHEST_LABELS),
}


def tiny(name: str) -> TinyMethod:
    if name not in TINY_METHODS:
        pytest.fail(f"method {name!r} is registered but has no tiny configuration in TINY_METHODS here")
    return TINY_METHODS[name]


def tiny_recipe(name: str) -> Recipe:
    """A recipe of the method with every stage, as a run would export it."""
    case = tiny(name)
    return Recipe(
        name=f"contract-{name}",
        method=name,
        data=DataConfig(sources=[SourceSpec(name="phantom")], labels=list(case.label_names)),
        model=case.model,
        stages=[StageConfig(name=stage) for stage in method_class(name).stage_names],
    )


def build_tiny(name: str):
    recipe = tiny_recipe(name)
    torch.manual_seed(0)
    method = build_method(recipe, list(tiny(name).label_names))
    if (prepare := tiny(name).prepare) is not None:
        prepare(method, tiny(name).batch())
    return method


def owner(parameter: str) -> str:
    """The layer a parameter belongs to: its name less the last part ("head.1.bias" -> "head.1")."""
    return parameter.rpartition(".")[0]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_stage_takes_a_finite_step_that_changes_only_what_it_trains(name: str) -> None:
    batch = tiny(name).batch()
    assert method_class(name).stage_names, f"{name} declares no stages"
    for stage in method_class(name).stage_names:
        method = build_tiny(name)  # each stage from a fresh initialisation, checked on its own
        method.set_stage(stage)
        method.train()
        before = {key: p.detach().clone() for key, p in method.named_parameters()}
        trained = {key for key, p in method.named_parameters() if p.requires_grad}
        assert trained, f"{name} stage {stage} trains no parameter"
        optimizer = torch.optim.SGD(method.parameters(), lr=0.01)  # no decay: only a gradient moves one
        loss, _ = method.compute_loss(batch)
        assert torch.isfinite(loss), f"{name} stage {stage}: loss {loss.item()}"
        loss.backward()
        optimizer.step()
        changed = {key for key, p in method.named_parameters() if not torch.equal(p.detach(), before[key])}
        assert not changed - trained, f"{name} stage {stage} changed frozen {sorted(changed - trained)[:5]}"
        # every trained layer moves (a single parameter may not: a bias before a softmax has no gradient)
        still = {owner(key) for key in trained} - {owner(key) for key in changed}
        assert not still, f"{name} stage {stage} left layers {sorted(still)[:5]} unchanged"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_predict_gives_probabilities_and_the_export_reloads_to_the_same(name: str, tmp_path: Path) -> None:
    method = build_tiny(name).eval()
    batch = tiny(name).batch()
    with torch.no_grad():
        prediction = method.predict(batch)
    probs = prediction.probs
    assert probs.shape == (len(batch), len(tiny(name).label_names))
    assert torch.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    for key, maps in (prediction.maps or {}).items():
        assert maps.ndim == 4 and maps.shape[0] == len(batch), f"map {key!r} is {tuple(maps.shape)}"
    for per_image in (prediction.regions, prediction.text):
        assert per_image is None or len(per_image) == len(batch)

    recipe = tiny_recipe(name)
    export_model(method, export_config(recipe, list(tiny(name).label_names)), tmp_path)
    loaded, loaded_recipe = load_method(tmp_path)
    assert loaded_recipe == recipe and type(loaded) is type(method)
    with torch.no_grad():
        again = loaded.predict(batch)
    assert torch.equal(again.probs, probs)
    assert (again.maps or {}).keys() == (prediction.maps or {}).keys()
    for key, maps in (prediction.maps or {}).items():
        assert torch.equal(again.maps[key], maps), key


# ---------------------------------------------------------------- sources

Arguments = tuple[tuple[Any, ...], dict[str, Any]]
"""Positional and keyword arguments of a source's constructor."""


def built_in(*args: Any, **options: Any) -> Callable[[pytest.FixtureRequest], Arguments]:
    return lambda request: (args, options)


def shared_data(folder_name: str) -> Callable[[pytest.FixtureRequest], Arguments]:
    """A folder of RADSIGHT_DATA (the small real extracts)."""
    return lambda request: ((request.getfixturevalue("data_root") / folder_name,), {})


def written(
    fixture: Any, with_images: bool = False, **options: Any
) -> Callable[[pytest.FixtureRequest], Arguments]:
    """Files a source's own tests write in the dataset's layout (their fixture: a root, or with
    ``with_images`` a root and the MIMIC-CXR-JPG image folder it points into)."""

    def arguments(request: pytest.FixtureRequest) -> Arguments:
        value = request.getfixturevalue(fixture.name)
        if with_images:
            root, images = value
            return (root,), {"images_root": images, **options}
        return (value,), options

    return arguments


SOURCE_FIXTURES = {
    "phantom": built_in(2, size=(64, 48)),
    "phantom_mammo": built_in(1, size=(256, 192)),
    "covid": shared_data("covid-chestxray"),
    "nih": shared_data("nih-cxr14"),
    "nyu_mammo": shared_data("mammo-nyu"),
    "iu_xray": shared_data("iu-xray-reports"),
    "pneumoniamnist": shared_data("pneumoniamnist"),
    "cbis_ddsm": written(cbis),
    "chexpert": written(chexpert),
    "mimic_cxr_jpg": written(mimic),
    "manifest": written(folder, label_columns=["Effusion", "Nodule"]),
    "shards": written(phantom_shards),
    "egd": written(egd, with_images=True),
    "reflacx": written(reflacx, with_images=True),
}


def test_every_source_fixture_names_a_registered_source() -> None:
    assert not set(SOURCE_FIXTURES) - set(SOURCES)


def has_annotation(sample: Sample) -> bool:
    """A box, a mask or a fixation: what the annotated pool selects."""
    return bool(
        (sample.boxes is not None and len(sample.boxes))
        or sample.masks
        or (sample.fixations is not None and len(sample.fixations))
    )


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_first_sample_follows_the_conventions(name: str, request: pytest.FixtureRequest) -> None:
    if name not in SOURCE_FIXTURES:
        pytest.fail(f"source {name!r} is registered but has no fixture in SOURCE_FIXTURES here")
    args, options = SOURCE_FIXTURES[name](request)
    source = source_class(name)(*args, **options)
    sample = source[0]
    assert isinstance(sample, Sample)

    image = sample.image
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 1, image.shape
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    height, width = sample.size
    if sample.meta.original_size is not None:
        assert sample.meta.original_size == (height, width)  # no transform: the file's own pixels

    if sample.boxes is not None:
        boxes = sample.boxes
        assert boxes.dtype.is_floating_point and boxes.ndim == 2 and boxes.shape[1] == 4
        x0, y0, x1, y1 = boxes.unbind(-1)
        assert ((x0 >= 0) & (x0 < x1) & (x1 <= width)).all(), boxes
        assert ((y0 >= 0) & (y0 < y1) & (y1 <= height)).all(), boxes
        assert sample.box_labels is not None and len(sample.box_labels) == len(boxes)
    for key, mask in (sample.masks or {}).items():
        assert mask.dtype in (torch.bool, torch.uint8) and mask.shape == (height, width), key
    if sample.fixations is not None:
        x, y, duration = sample.fixations.unbind(-1)
        assert sample.fixations.ndim == 2 and sample.fixations.shape[1] == 3
        assert ((x >= 0) & (x <= width) & (y >= 0) & (y <= height)).all(), sample.fixations
        assert (duration >= 0).all() and torch.isfinite(duration).all()

    labels = sample.labels
    assert labels is not None and labels.dtype == torch.float32
    assert labels.shape == (len(source.label_names),)
    assert bool(((labels == 0) | (labels == 1) | labels.isnan()).all()), labels
    assert isinstance(sample.meta.patient_id, str) and sample.meta.patient_id
    assert sample.report is None or isinstance(sample.report, str)

    # what splits and budgets read without loading images agrees with the sample
    assert len(source.patient_ids) == len(source.label_matrix) == len(source.annotated) == len(source)
    assert source.patient_ids[0] == sample.meta.patient_id
    assert np.array_equal(source.label_matrix[0], labels.numpy(), equal_nan=True)
    assert bool(source.annotated[0]) == has_annotation(sample)
