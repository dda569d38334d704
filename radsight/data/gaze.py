"""Eye-tracking fixations turned into an attention map that sums to 1.

Fixations are ``(x, y, duration_s)`` in continuous pixel coordinates, the frame boxes use: pixel column
``j`` covers ``[j, j + 1)``, so its centre is ``j + 0.5``. The map is a sum of isotropic Gaussians
evaluated at pixel centres. Each Gaussian is normalised over the image on its own, so a fixation near
the border keeps its full weight and the mass of each fixation is exactly proportional to its duration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from radsight.errors import ConfigError, DataError


def fixations_to_map(
    fixations: Tensor,
    size: tuple[int, int],
    sigma_px: float,
    weight_by_duration: bool = True,
) -> Tensor:
    """Duration-weighted Gaussian density of ``fixations`` on an ``size`` = (H, W) grid, summing to 1.

    The Gaussian is separable, so the map is one (H x N) @ (N x W) product: exact, and fast for
    hundreds of fixations at 512 x 512. Fixations outside the image are ignored; if none is left, or
    none was given, this raises ``DataError`` instead of returning a uniform map that would pass for gaze.
    """
    if sigma_px <= 0:
        raise ConfigError(f"gaze sigma must be positive, got {sigma_px} pixels")
    height, width = size
    fixations = torch.as_tensor(fixations, dtype=torch.float32)
    columns = 3 if weight_by_duration else 2
    if fixations.ndim != 2 or fixations.shape[1] < columns:
        raise DataError(
            None, f"fixations must be N x {columns} (x, y[, duration_s]), got {tuple(fixations.shape)}"
        )
    if len(fixations) == 0:
        raise DataError(None, "no fixations to make a gaze map from")
    x, y = fixations[:, 0], fixations[:, 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    if not bool(inside.any()):
        raise DataError(
            None, f"none of the {len(fixations)} fixations lies inside the {width}x{height} image"
        )
    fixations = fixations[inside]
    if weight_by_duration:
        weights = fixations[:, 2]
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise DataError(None, "fixation durations must be finite and non-negative")
        if float(weights.sum()) <= 0:
            raise DataError(None, "all fixation durations are zero")
    else:
        weights = torch.ones(len(fixations))
    gx = _gaussian_profile(fixations[:, 0], width, sigma_px)
    gy = _gaussian_profile(fixations[:, 1], height, sigma_px)
    density = (gy * (weights / weights.sum())[:, None]).T @ gx
    return density / density.sum()


def _gaussian_profile(centres: Tensor, length: int, sigma_px: float) -> Tensor:
    """N x length Gaussian of each centre at pixel centres, each row summing to 1 over the image."""
    pixel_centres = torch.arange(length, dtype=torch.float32) + 0.5
    squared = ((pixel_centres[None, :] - centres[:, None]) / sigma_px) ** 2
    # Shifting by each row's minimum keeps the nearest pixel at exp(0), so a tiny sigma cannot underflow.
    profile = torch.exp(-0.5 * (squared - squared.min(dim=1, keepdim=True).values))
    return profile / profile.sum(dim=1, keepdim=True)
