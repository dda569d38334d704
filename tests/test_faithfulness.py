"""Deletion and insertion curves rank maps by how well they point at what the model uses."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from radsight.explain.faithfulness import Curve, baseline_images, deletion_curve, insertion_curve

SIZE = 64


class RegionMean(nn.Module):
    """Its single output is the mean brightness of one known 16 x 16 region."""

    def __init__(self) -> None:
        super().__init__()
        self.region = (slice(20, 36), slice(8, 24))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))[:, None]


@pytest.fixture
def case() -> tuple[RegionMean, Tensor, dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = 0.2 + 0.8 * torch.rand(3, 1, SIZE, SIZE, generator=generator)
    region = torch.zeros(SIZE, SIZE)
    region[20:36, 8:24] = 1
    good = region + 0.01 * torch.rand(3, SIZE, SIZE, generator=generator)
    maps = {"good": good, "random": torch.rand(3, SIZE, SIZE, generator=generator), "inverted": 1 - good}
    return RegionMean(), images, maps


def test_a_map_on_the_evidence_deletes_faster_and_inserts_faster(case) -> None:
    model, images, maps = case
    options = {"baseline": "black", "activation": "none", "steps": 20}
    deletion = {name: deletion_curve(model, images, m, **options).auc for name, m in maps.items()}
    insertion = {name: insertion_curve(model, images, m, **options).auc for name, m in maps.items()}
    for other in ("random", "inverted"):
        assert bool((deletion["good"] < deletion[other] - 0.1).all()), (deletion, other)
        assert bool((insertion["good"] > insertion[other] + 0.1).all()), (insertion, other)
    # The region is 1/16 of the image: by the step at fraction 0.1 a perfect map has removed all of it.
    curve = deletion_curve(model, images, maps["good"], **options)
    assert curve.fractions[2] == pytest.approx(0.1)
    torch.testing.assert_close(curve.scores[:, 2:], torch.zeros(3, 19))


def test_curves_run_from_the_image_to_the_baseline_and_back(case) -> None:
    model, images, maps = case
    full = model(images)[:, 0].sigmoid()
    blurred = model(baseline_images(images, "blur"))[:, 0].sigmoid()
    black = torch.full((3,), 0.5)  # sigmoid of a mean over zeros
    deletion = deletion_curve(model, images, maps["random"], steps=5, batch_size=4)
    insertion = insertion_curve(model, images, maps["random"], steps=5, batch_size=4)
    assert deletion.scores.shape == insertion.scores.shape == (3, 6)
    torch.testing.assert_close(deletion.scores[:, 0], full)
    torch.testing.assert_close(deletion.scores[:, -1], black)
    torch.testing.assert_close(insertion.scores[:, 0], blurred)
    torch.testing.assert_close(insertion.scores[:, -1], full)
    assert not torch.allclose(blurred, full)  # the blur baseline really differs from the image


def test_blur_baseline_smooths_and_keeps_the_mean() -> None:
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    blurred = baseline_images(images, "blur", blur_sigma=3.0)
    assert blurred.shape == images.shape
    assert float(blurred.std()) < 0.5 * float(images.std())
    torch.testing.assert_close(blurred.mean(), images.mean(), atol=0.01, rtol=0)
    assert baseline_images(torch.rand(1, 1, 4, 4), "blur").shape == (1, 1, 4, 4)  # kernel capped


def test_auc_is_the_trapezoid_over_fractions_and_inputs_are_checked(case) -> None:
    curve = Curve(
        fractions=torch.tensor([0.0, 0.5, 1.0]), scores=torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.5, 1.0]])
    )
    torch.testing.assert_close(curve.auc, torch.tensor([0.75, 0.5]))
    model, images, maps = case
    with pytest.raises(ValueError, match="maps must be"):
        deletion_curve(model, images, maps["good"][:, :32])
    with pytest.raises(ValueError, match="unknown baseline"):
        insertion_curve(model, images, maps["good"], baseline="gray")  # type: ignore[arg-type]
