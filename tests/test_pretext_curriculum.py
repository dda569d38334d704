"""Curricular self-supervised pre-training: each pretext task's targets, the X-ray views, the probe and
the order it sets, the encoder carried across stages and runs, and a label-free unlabelled pool."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from radsight.config import DataConfig, Recipe, SourceSpec, StageConfig, TrainerConfig
from radsight.data.assemble import build_splits
from radsight.errors import ConfigError, DataError
from radsight.methods.pretext_curriculum import CURRICULUM_FILE, PretextCurriculum, curriculum_order
from radsight.methods.registry import check_recipe
from radsight.metrics.linear_probe import probe_auroc
from radsight.nn.backbones import create_backbone
from radsight.nn.pretext import (
    NEIGHBOURS,
    Inpainting,
    Jigsaw,
    JigsawOptions,
    PositionOptions,
    RelativePosition,
    Rotation,
    ViewOptions,
    XrayViews,
    equalised,
    grid_cells,
    hamming_permutations,
    masked_mse,
    nt_xent,
)
from radsight.train import stage_loaders, train

TINY = {"backbone": "tiny_cnn", "jigsaw": {"permutations": 8}, "probe_steps": 2}
LABELS = ["opacity"]


def images(n: int = 6, side: int = 48) -> torch.Tensor:
    """Distinct random images: any misplaced pixel shows."""
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- tasks


def test_rotating_back_by_the_label_restores_the_image() -> None:
    originals = images()
    rotated, turns = Rotation(8).make_batch(originals)
    assert set(turns.tolist()) <= {0, 1, 2, 3}
    for image, turned, k in zip(originals, rotated, turns, strict=True):
        torch.testing.assert_close(torch.rot90(turned, -int(k), dims=(-2, -1)), image, rtol=0, atol=0)


def test_unpermuting_a_jigsaw_batch_by_its_labels_restores_the_image() -> None:
    originals = images(side=45)  # 3 cells of 15 px, no pixel left over
    task = Jigsaw(8, JigsawOptions(permutations=20, gap=0.0))
    shuffled, labels = task.make_batch(originals)
    assert shuffled.shape == (6, 9, 1, 15, 15)
    for image, tiles, label in zip(originals, shuffled, labels, strict=True):
        order = task.permutations[label].tolist()
        restored = torch.empty_like(tiles)
        for position, tile in enumerate(order):  # position j shows tile order[j]
            restored[tile] = tiles[position]
        rows = [torch.cat(list(restored[3 * r : 3 * r + 3, 0]), dim=1) for r in range(3)]
        torch.testing.assert_close(torch.cat(rows, dim=0), image[0], rtol=0, atol=0)


def test_the_permutation_set_is_greedy_max_min_hamming() -> None:
    chosen = hamming_permutations(6)
    assert len({tuple(p) for p in chosen}) == 6 and sorted(chosen[0]) == list(range(9))
    everything = np.array(list(itertools.permutations(range(9))))
    for k in range(1, len(chosen)):  # each pick is as far as any permutation can be from those before it
        nearest = np.min([(everything != p).sum(axis=1) for p in chosen[:k]], axis=0)
        assert min((chosen[k] != p).sum() for p in chosen[:k]) == nearest.max()
    assert nearest.max() == 9  # 9 tiles all moved: a derangement of every earlier pick


def test_the_neighbour_patch_lies_where_its_label_says() -> None:
    originals = images(side=48)
    inputs, labels = RelativePosition(8, PositionOptions(gap=0.0)).make_batch(originals)
    for image, pair, label in zip(originals, inputs, labels, strict=True):
        row, col = NEIGHBOURS[int(label)]
        torch.testing.assert_close(pair[0, 0], image[0, 16:32, 16:32], rtol=0, atol=0)
        cut = image[0, 16 * (1 + row) : 16 * (2 + row), 16 * (1 + col) : 16 * (2 + col)]
        torch.testing.assert_close(pair[1, 0], cut, rtol=0, atol=0)


def test_grid_cells_trim_the_border_of_an_indivisible_image() -> None:
    image = torch.arange(50 * 50, dtype=torch.float32).view(1, 1, 50, 50)
    cells = grid_cells(image)  # 16 px cells of the central 48 x 48
    torch.testing.assert_close(cells[0, 0, 0], image[0, 0, 1:17, 1:17])


def test_the_inpainting_loss_ignores_unmasked_pixels() -> None:
    task = Inpainting(8, stride=8)
    originals = images(4, 32)
    inputs, targets = task.make_batch(originals)
    mask = targets[:, 1:]
    assert 0 < mask.mean() < 1 and set(mask.unique().tolist()) == {0.0, 1.0}
    for masked, image, where in zip(inputs[:, :1], originals, mask.bool(), strict=True):
        torch.testing.assert_close(masked[where], image.mean().expand(int(where.sum())))  # filled by the mean
        torch.testing.assert_close(masked[~where], image[~where], rtol=0, atol=0)
    outputs = torch.rand_like(originals)
    loss = task.loss(outputs, targets)
    expected = ((outputs - originals) ** 2)[mask.bool()].mean()
    torch.testing.assert_close(loss, expected)
    changed = torch.where(mask.bool(), outputs, outputs + 5.0)  # anything outside the mask
    torch.testing.assert_close(task.loss(changed, targets), loss)
    assert masked_mse(outputs + mask, originals, mask) != loss


def test_nt_xent_of_a_hand_computed_case() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # views i and i + 2 agree
    # row 0: similarities to rows 1, 2, 3 are 0, 1, 0 at temperature 1: -log(e / (e + 2))
    torch.testing.assert_close(nt_xent(z, 1.0), torch.tensor(math.log(1 + 2 / math.e)))


def test_views_without_randomness_are_the_image_and_flips_are_off_by_default() -> None:
    still = ViewOptions(crop_scale=(1, 1), rotation_degrees=0, gamma=(1, 1), contrast=0, equalise_p=0)
    originals = images(8, 32)
    torch.testing.assert_close(XrayViews(still)(originals), originals, atol=1e-5, rtol=0)
    flipped = XrayViews(still.model_copy(update={"hflip": True}))(originals)
    mirrored = [torch.allclose(f, o.flip(-1), atol=1e-5) for f, o in zip(flipped, originals, strict=True)]
    kept = [torch.allclose(f, o, atol=1e-5) for f, o in zip(flipped, originals, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)


def test_equalisation_spreads_the_values_evenly() -> None:
    image = torch.tensor([[[[0.1, 0.1001], [0.5, 0.9]]]])
    torch.testing.assert_close(equalised(image), torch.tensor([[[[0.0, 1 / 3], [2 / 3, 1.0]]]]))


# ---------------------------------------------------------------- probe and order


def test_the_probe_scores_separable_features_one_and_matches_sklearn_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0], 20)[:, None]
    separable = np.c_[labels[:, 0] * 3 + rng.normal(0, 0.1, 40), rng.normal(size=40)]
    patients = [f"p{i}" for i in range(40)]
    assert probe_auroc(separable, labels, patients) == pytest.approx(1.0)
    noise = rng.normal(size=(40, 3))
    score = probe_auroc(noise, labels, patients)
    assert 0.2 < score < 0.8
    with pytest.raises(DataError, match="no label has two images of each class"):
        probe_auroc(noise, np.ones((40, 1)), patients)


def test_the_curriculum_runs_from_the_lowest_probe_score_to_the_highest() -> None:
    scores = {"rotation": 0.7, "jigsaw": 0.6, "contrastive": 0.9}
    assert curriculum_order(scores, "auto") == ["jigsaw", "rotation", "contrastive"]
    assert curriculum_order(scores, "reverse") == ["contrastive", "rotation", "jigsaw"]


def tiny_recipe(stages: list[StageConfig], **model) -> Recipe:
    return Recipe(
        name="tiny-curriculum",
        method="pretext_curriculum",
        data=DataConfig(
            sources=[SourceSpec(name="phantom", options={"n": 64, "size": [48, 48], "classes": ["opacity"]})],
            labels=LABELS,
            image_size=(48, 48),
            split=(0.5, 0.3, 0.2),
            batch_size=8,
        ),
        model={**TINY, **model},
        stages=stages,
        trainer=TrainerConfig(accelerator="cpu", progress_bar=False),
    )


def trained_stages(run: Path) -> list[str]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return list(dict.fromkeys(json.loads(line)["stage"] for line in lines))


def test_order_auto_trains_the_tasks_in_the_order_of_their_probe_scores(tmp_path: Path) -> None:
    stages = [StageConfig(name=n, epochs=1) for n in ("rotation", "position", "inpainting")]
    train(tiny_recipe(stages), tmp_path, require_test=False)
    record = json.loads((tmp_path / CURRICULUM_FILE).read_text())
    assert set(record["scores"]) == {"rotation", "position", "inpainting"}
    assert record["order"] == sorted(record["scores"], key=record["scores"].get)
    assert trained_stages(tmp_path) == record["order"]


def test_the_encoder_carries_over_between_stages_and_into_fine_tuning(tmp_path: Path) -> None:
    still = {"lr": 1e-12, "weight_decay": 0.0, "scheduler": "none"}
    stages = [
        StageConfig(name="rotation", epochs=1, lr=0.01),
        StageConfig(name="jigsaw", epochs=1, **still),
        StageConfig(name="finetune", epochs=1, **still),
    ]
    result = train(tiny_recipe(stages, order=["rotation", "jigsaw"]), tmp_path, require_test=False)
    assert trained_stages(tmp_path) == ["rotation", "jigsaw", "finetune"]

    def encoder(path: Path) -> dict[str, torch.Tensor]:
        state = safetensors.torch.load_file(path)
        return {
            k: v
            for k, v in state.items()
            if k.startswith("backbone.") and "running" not in k and "num_batches" not in k
        }

    after_rotation = encoder(tmp_path / "stages" / "rotation" / "stage.safetensors")
    final = encoder(tmp_path / "model.safetensors")
    trained = {k for k, _ in result.method.backbone.named_parameters()}
    # jigsaw and finetune (at a vanishing learning rate) started from rotation's encoder and kept it; a
    # fresh initialisation anywhere would differ everywhere
    for key in (f"backbone.{k}" for k in trained):
        torch.testing.assert_close(final[key], after_rotation[key], atol=1e-6, rtol=0)


def test_a_recipe_can_start_its_encoder_from_an_earlier_run(tmp_path: Path) -> None:
    stages = [StageConfig(name="rotation", epochs=1)]
    train(tiny_recipe(stages), tmp_path / "pre", require_test=False)
    saved = safetensors.torch.load_file(tmp_path / "pre" / "model.safetensors")
    backbone = create_backbone("tiny_cnn", pretrained=f"run:{tmp_path / 'pre'}")
    for key, value in backbone.model.state_dict().items():
        if not key.endswith("num_batches_tracked"):  # a counter, not a weight: not loaded
            torch.testing.assert_close(value, saved[f"backbone.model.{key}"], rtol=0, atol=0)
    with pytest.raises(ConfigError) as error:
        create_backbone("resnet18", pretrained=f"run:{tmp_path / 'pre'}")
    assert str(error.value) == (
        f"model.pretrained: run:{tmp_path / 'pre'} holds a 'tiny_cnn' encoder and this recipe builds "
        "'resnet18'; the architectures must match"
    )
    with pytest.raises(ConfigError, match="not a radsight model folder"):
        create_backbone("tiny_cnn", pretrained=f"run:{tmp_path}")


def test_pretext_stages_see_no_label_or_annotation(tmp_path: Path) -> None:
    recipe = tiny_recipe([StageConfig(name="rotation"), StageConfig(name="finetune")])
    splits = build_splits(recipe.data, recipe.seed, require_test=False)
    method = PretextCurriculum(LABELS, "multilabel", recipe.model, recipe.stages)
    loader, _ = stage_loaders(method, splits, "rotation")
    seen = 0
    for batch in loader:
        assert batch.labels is None and not batch.masks and all(b is None for b in batch.boxes)
        assert all(f is None for f in batch.fixations) and all(r is None for r in batch.reports)
        seen += len(batch)
    assert seen == len(splits.train_split)  # every training-split image, none of val or test
    labelled, _ = stage_loaders(method, splits, "finetune")
    assert next(iter(labelled)).labels is not None


def test_an_order_list_must_name_the_recipes_tasks(tmp_path: Path) -> None:
    stages = [StageConfig(name="rotation"), StageConfig(name="jigsaw"), StageConfig(name="finetune")]
    with pytest.raises(ConfigError, match=r"unknown pretext task\(s\) \['spin'\]"):
        check_recipe(tiny_recipe(stages, order=["spin"]))
    with pytest.raises(ConfigError, match="must list each pretext stage of the recipe once"):
        PretextCurriculum(LABELS, "multilabel", {**TINY, "order": ["rotation"]}, stages)
