"""The one test-set pass: every requested map kind, in test-set order, native maps preferred where asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radsight.config import StageConfig
from radsight.data.sample import collate
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.transforms import build_transforms
from radsight.errors import ConfigError
from radsight.evaluate import (
    NATIVE,
    MapKind,
    MapRequest,
    collect,
    explanation,
    gaze_pairs,
    lesion_pairs,
    region_pairs,
)
from radsight.explain.cam import explain
from radsight.methods.gaze_unet import GazeUNet
from radsight.methods.supervised import SupervisedClassifier

LABELS = ["nodule", "opacity"]
N = 7  # two batches of 4: the second one shorter


@pytest.fixture(scope="module")
def phantoms() -> PhantomChestXray:
    transform = build_transforms((64, 64), train=False, augment=False, gaze_sigma_fraction=0.05)
    return PhantomChestXray(N, size=(64, 64), seed=2, lesion_scale=1.5, transform=transform)


def classifier() -> SupervisedClassifier:
    torch.manual_seed(0)
    return SupervisedClassifier(
        LABELS, "multilabel", {"backbone": "tiny_cnn"}, [StageConfig(name="classify")]
    )


def gaze_unet() -> GazeUNet:
    torch.manual_seed(0)
    options = {"backbone": "tiny_cnn", "unet_width": 1 / 16, "fusion_features": 16, "projection_features": 16}
    return GazeUNet(LABELS, "multilabel", options, [StageConfig(name="joint")])


def test_maps_of_every_request_arrive_in_test_set_order(phantoms):
    method = classifier().eval()
    image_index = MapKind(
        "image_index",
        lambda method, prediction, batch, images, targets: torch.stack(
            [torch.full((64, 64), float(len(batch) * 100 + i)) for i in images]
        ),
    )
    requests = {
        "lesions": MapRequest(lesion_pairs, explanation("gradcam"), prefer_native="per_class"),
        "lungs": MapRequest(region_pairs(["lungs"]), image_index),
    }
    found = collect(method, phantoms, 4, requests)
    samples = [phantoms[i] for i in range(N)]
    with torch.inference_mode():
        probs = method.predict(collate(samples)).probs.numpy()
    np.testing.assert_allclose(found.prob_matrix, probs, atol=1e-6)
    assert found.patient_ids == [s.meta.patient_id for s in samples]

    lesions = found.maps["lesions"]
    expected = [(i, k) for i, s in enumerate(samples) for k, name in enumerate(LABELS) if s.masks[name].any()]
    assert [
        (i, LABELS.index(label)) for i, label in zip(lesions.images, lesions.labels, strict=True)
    ] == expected
    assert lesions.kinds == ["gradcam"]  # a plain classifier has no native maps
    entries = zip(lesions.images, lesions.labels, lesions.truth, lesions.maps, strict=True)
    for image, label, truth, heat in entries:
        np.testing.assert_array_equal(truth, samples[image].masks[label].numpy() > 0)
        target = [LABELS.index(label)]
        alone = explain(method.classifier(), samples[image].image[None], "gradcam", targets=target)[0]
        assert heat.dtype == np.float16
        np.testing.assert_allclose(heat.astype(np.float32), alone.numpy(), atol=2e-3)

    lungs = found.maps["lungs"]
    assert lungs.images == list(range(N)) and lungs.kinds == ["image_index"]
    assert [LABELS.index(label) for label in lungs.labels] == probs.argmax(axis=1).tolist()
    # the kind saw batch-local indices (batches of 4, then 3); the pass put them in test-set order
    assert [float(m[0, 0]) for m in lungs.maps] == [400 + i for i in range(4)] + [300 + i for i in range(3)]


def test_explanation_maps_are_scaled_as_asked(phantoms):
    method = classifier().eval()
    requests = {
        "lesions": MapRequest(lesion_pairs, explanation("gradcam", "minmax"), prefer_native="per_class")
    }
    lesions = collect(method, phantoms, 4, requests).maps["lesions"]
    image, label = lesions.images[0], lesions.labels[0]
    target = [LABELS.index(label)]
    sample = phantoms[image].image[None]
    expected = explain(method.classifier(), sample, "gradcam", targets=target, normalise="minmax")[0]
    np.testing.assert_allclose(lesions.maps[0].astype(np.float32), expected.numpy(), atol=2e-3)
    assert float(expected.min()) == 0.0


def test_native_maps_are_taken_only_in_the_shape_asked_for(phantoms):
    method = gaze_unet().eval()
    requests = {
        "single": MapRequest(gaze_pairs, explanation("gradcam"), prefer_native="single", dtype=np.float32),
        "per_class": MapRequest(gaze_pairs, explanation("gradcam"), prefer_native="per_class"),
        "native_only": MapRequest(gaze_pairs, None, prefer_native="per_class"),
    }
    found = collect(method, phantoms, 4, requests)
    samples = [phantoms[i] for i in range(N)]
    with torch.inference_mode():
        saliency = method.predict(collate(samples)).maps["saliency"][:, 0].numpy()
    single = found.maps["single"]
    assert single.kinds == ["native"] and single.images == list(range(N))
    np.testing.assert_allclose(np.stack(single.maps), saliency, rtol=1e-5, atol=1e-9)
    for (gaze_map, fixations), sample in zip(single.truth, samples, strict=True):
        np.testing.assert_array_equal(gaze_map, sample.gaze_map.numpy())
        np.testing.assert_array_equal(fixations, sample.fixations.numpy())
    # one class-agnostic channel is no per-class map: the explanation is used, or nothing
    assert found.maps["per_class"].kinds == ["gradcam"] and len(found.maps["per_class"].maps) == N
    assert found.maps["native_only"].maps == [] and found.maps["native_only"].kinds == []


def test_native_kind_of_a_method_without_native_maps_is_a_clear_error(phantoms):
    with pytest.raises(ConfigError, match="SupervisedClassifier predicts no native maps"):
        collect(classifier(), phantoms, 4, {"lesions": MapRequest(lesion_pairs, NATIVE)})
