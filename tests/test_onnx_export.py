"""ONNX export: every registered method's prediction traced to model.onnx, whose outputs in ONNX Runtime
equal PyTorch's, for any batch size, and the ONNX runtime behind the one inference core and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from radsight.checkpoints import export_model
from radsight.config import Recipe, parse_recipe
from radsight.data.assemble import evaluation_pipeline
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.infer import LoadedModel, infer
from radsight.methods.registry import METHODS, build_method, export_config
from radsight.onnx_export import PredictionGraph, export_onnx, images_only, largest_difference
from radsight.run_folder import ONNX_FILE
from radsight.runtime import OnnxRuntime, TorchRuntime

LABELS = ["nodule", "opacity"]
SMALL = (64, 64)
METHOD_CASES: dict[str, tuple[dict, list[str], tuple[int, int]]] = {
    "supervised": ({"backbone": "tiny_cnn"}, ["classify"], SMALL),
    "gaze_unet": (
        {"backbone": "tiny_cnn", "unet_width": 1 / 16, "fusion_features": 16, "projection_features": 16},
        ["classify", "joint"],
        SMALL,
    ),
    "glam": (
        {
            "global_module": {
                "stem": 4,
                "widths": [4, 8, 8, 8],
                "blocks": [1, 1, 1, 1],
                "strides": [1, 2, 2, 2],
                "map_size": [16, 12],
            },
            "local_module": {"stem": 4, "widths": [4, 8], "blocks": [1, 1], "strides": [1, 2]},
            "patches": {"size": [64, 64]},
        },
        ["global"],  # with local stages it cannot be traced: see the refusal test
        (256, 192),
    ),
    "latent_kd": ({"backbone": "tiny_cnn", "latent": 8, "hidden": 16}, ["global", "distil"], SMALL),
    "captioning": (  # the classifier a captioning encoder transfers into; its reports come from PyTorch
        {"backbone": "tiny_cnn", "decoder": {"width": 32, "heads": 4, "layers": 1}},
        ["finetune"],
        SMALL,
    ),
    "pretext_curriculum": (
        {"backbone": "tiny_cnn", "jigsaw": {"permutations": 8}, "order": ["rotation"]},
        ["rotation", "finetune"],
        SMALL,
    ),
}
"""Method -> (tiny model options, stages, image size): small enough to trace in seconds."""
TOLERANCE = 1e-4


def recipe_for(method: str) -> Recipe:
    options, stages, size = METHOD_CASES[method]
    return parse_recipe(
        {
            "name": f"onnx-{method}",
            "method": method,
            "data": {
                "sources": [{"name": "phantom", "options": {"n": 20, "size": list(size), "seed": 0}}],
                "labels": LABELS,
                "image_size": list(size),
            },
            "model": options,
            "stages": [{"name": name} for name in stages],
        }
    )


def films(recipe: Recipe, n: int = 20) -> torch.Tensor:
    """``n`` phantom films through the recipe's evaluation pipeline: n x 1 x H x W."""
    pipeline = evaluation_pipeline(recipe.data)
    dataset = PhantomChestXray(n, size=tuple(recipe.data.image_size), seed=3)
    return torch.stack([pipeline.transform(dataset[i]).image for i in range(n)])


def exported_run(method: str, folder: Path) -> Path:
    recipe = recipe_for(method)
    torch.manual_seed(0)
    export_model(build_method(recipe, LABELS, pretrained=False), export_config(recipe, LABELS), folder)
    return folder


def test_every_registered_method_has_a_case() -> None:
    assert set(METHOD_CASES) == set(METHODS)


@pytest.mark.parametrize("method", list(METHOD_CASES))
def test_onnx_runtime_equals_pytorch_on_20_films(method: str, tmp_path: Path) -> None:
    run = exported_run(method, tmp_path / "run")
    path, checked = export_onnx(run, tmp_path / "onnx")
    assert path == tmp_path / "onnx" / ONNX_FILE and checked <= TOLERANCE
    loaded = LoadedModel.load(tmp_path / "onnx")  # the other folder is a model folder too
    images = films(loaded.recipe)
    assert largest_difference(loaded.method, path, images) <= TOLERANCE
    # every output, one by one, and the batch dimension is free (20 here, 2 when traced)
    ours = TorchRuntime(loaded.method).predict(images_only(images))
    theirs = OnnxRuntime(path).predict(images_only(images))
    assert theirs.probs.shape == (20, len(LABELS))
    np.testing.assert_allclose(theirs.probs.numpy(), ours.probs.numpy(), atol=TOLERANCE, rtol=0)
    assert sorted(theirs.maps or {}) == sorted(ours.maps or {})
    for name, expected in (ours.maps or {}).items():
        np.testing.assert_allclose(theirs.maps[name].numpy(), expected.numpy(), atol=TOLERANCE, rtol=0)
    assert (theirs.regions is None) == (ours.regions is None)
    if ours.regions is not None:
        np.testing.assert_allclose(torch.stack(theirs.regions), torch.stack(ours.regions), atol=TOLERANCE)


def test_metadata_states_the_preprocessing_and_labels(tmp_path: Path) -> None:
    run = exported_run("supervised", tmp_path)
    path, _ = export_onnx(run, tmp_path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    spec = json.loads(metadata["radsight.preprocessing"])
    assert spec["image_size"] == list(SMALL)
    assert spec["letterbox"]["fill"] == 0.0 and "aspect" in spec["letterbox"]["how"]
    assert spec["sources"] == [{"name": "phantom", "read_options": {}, "align_breast": False}]
    assert "MONOCHROME1" in spec["rendering"]
    assert json.loads(metadata["radsight.labels"]) == LABELS
    assert metadata["radsight.method"] == "supervised"
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, free batch dimension
    assert [o.name for o in graph.output] == ["probs"]


def test_native_map_outputs_are_named_by_the_method(tmp_path: Path) -> None:
    recipe = recipe_for("gaze_unet")
    method = build_method(recipe, LABELS, pretrained=False).eval()
    graph = PredictionGraph.of(method, torch.rand(2, 1, *SMALL))
    assert graph.output_names == ["probs", "map_saliency"]


def test_predict_with_onnxruntime_gives_the_pytorch_probabilities(tmp_path: Path) -> None:
    run = exported_run("gaze_unet", tmp_path)
    export_onnx(run, run)
    film = tmp_path / "film.png"
    image = (films(recipe_for("gaze_unet"), 1)[0, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(image).save(film)
    by_torch = infer(LoadedModel.load(run), film, how="native")
    onnx_model = LoadedModel.load(run, runtime="onnxruntime")
    by_onnx = infer(onnx_model, film, how="native")
    assert by_onnx.runtime == "onnxruntime" and by_onnx.map_runtime == "onnxruntime"
    np.testing.assert_allclose(by_onnx.probs.numpy(), by_torch.probs.numpy(), atol=TOLERANCE, rtol=0)
    assert by_onnx.map is not None and by_torch.map is not None
    np.testing.assert_allclose(by_onnx.map.numpy(), by_torch.map.numpy(), atol=1e-3, rtol=0)
    # Grad-CAM needs gradients: PyTorch draws it, whatever computed the probabilities
    explained = infer(onnx_model, film, how="gradcam")
    assert explained.map_runtime == "torch"
    np.testing.assert_allclose(explained.map.numpy(), infer(LoadedModel.load(run), film).map.numpy())


def test_onnx_runtime_without_an_export_names_the_command(tmp_path: Path) -> None:
    run = exported_run("supervised", tmp_path)
    from radsight.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.onnx: not found; write it with radsight export"):
        LoadedModel.load(run, runtime="onnxruntime")
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'; choose one of torch, onnxruntime"):
        LoadedModel.load(run, runtime="tensorrt")


def test_glam_with_its_local_module_says_in_one_line_why_it_cannot_be_exported(tmp_path: Path) -> None:
    recipe = recipe_for("glam")
    recipe = recipe.model_copy(
        update={"stages": [*recipe.stages, recipe.stages[0].model_copy(update={"name": "local"})]}
    )
    torch.manual_seed(0)
    export_model(build_method(recipe, LABELS, pretrained=False), export_config(recipe, LABELS), tmp_path)
    from radsight.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"^method 'glam' cannot be exported to ONNX: its local module crops"
    ) as error:
        export_onnx(tmp_path, tmp_path)
    assert "\n" not in str(error.value) and not (tmp_path / ONNX_FILE).exists()


def test_cli_exports_then_predicts_and_evaluates_with_onnxruntime(
    trained_model: Path, tmp_path: Path
) -> None:
    """``radsight export`` writes a model folder whose ONNX predictions and test metrics are PyTorch's."""
    from conftest import run_cli

    onnx_dir = tmp_path / "onnx"
    result = run_cli("export", "--model", trained_model, "--format", "onnx", "--out", onnx_dir)
    assert "model.onnx" in result.output and (onnx_dir / ONNX_FILE).is_file()
    film = tmp_path / "film.png"
    Image.fromarray(
        (films(LoadedModel.load(trained_model).recipe, 1)[0, 0].numpy() * 255).astype(np.uint8)
    ).save(film)
    payloads = {}
    for runtime in ("torch", "onnxruntime"):
        out = tmp_path / f"pred-{runtime}"
        run_cli("predict", "--model", onnx_dir, film, "--out", out, "--runtime", runtime)
        payloads[runtime] = json.loads((out / "predictions.json").read_text())
    onnx_payload, torch_payload = payloads["onnxruntime"], payloads["torch"]
    assert onnx_payload["runtime"] == "onnxruntime" and onnx_payload["map_runtime"] == "torch"  # Grad-CAM
    for label, p in torch_payload["files"][0]["probabilities"].items():
        assert onnx_payload["files"][0]["probabilities"][label] == pytest.approx(p, abs=TOLERANCE)
    metrics = {}
    for runtime in ("torch", "onnxruntime"):
        out = tmp_path / f"eval-{runtime}"
        run_cli("evaluate", "--model", onnx_dir, "--out", out, "--runtime", runtime, "--n-boot", "50")
        metrics[runtime] = json.loads((out / "metrics.json").read_text())["classification"]
    assert metrics["onnxruntime"]["auroc_macro"] == pytest.approx(metrics["torch"]["auroc_macro"], abs=1e-3)
    run_cli("export", "--model", trained_model, "--format", "tflite", "--out", onnx_dir, expect=2)
