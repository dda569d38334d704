"""Where a model looks: the share of its positive attribution inside an anatomical mask (the lungs).

A model that reads a chest X-ray should attend to the lungs, not to markers, tubes or the image border.
The share alone depends on how large the mask is, so the *attention ratio* divides it by the mask's
share of the image: 1 means no preference, above 1 a preference for the mask, below 1 avoidance.
Only positive attribution counts (evidence *for* the prediction); a map without any is undefined (NaN),
since it shows no preference at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from radsight.metrics.bootstrap import mean_with_ci
from radsight.metrics.maps import MapLike, as_mask, resize_map


def attribution_share(attribution: MapLike, mask: MapLike) -> float:
    """Σ max(a, 0) inside the mask / Σ max(a, 0), the map resized to the mask's frame; NaN without mass."""
    region = as_mask(mask, "anatomical mask")
    positive = np.clip(resize_map(attribution, region.shape), 0.0, None)
    total = positive.sum()
    return float(positive[region].sum() / total) if total > 0 else float("nan")


def attention_ratio(attribution: MapLike, mask: MapLike) -> float:
    """Attribution share divided by the mask's area share: 1 = no preference for the mask."""
    region = as_mask(mask, "anatomical mask")
    return attribution_share(attribution, region) / float(region.mean())


def attention_section(
    maps: Sequence[MapLike],
    masks: Sequence[MapLike],
    *,
    patient_ids: Sequence | ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The metrics.json "attention" section: mean share and ratio over images with positive attribution."""
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps for {len(masks)} masks")
    share = np.array([attribution_share(a, m) for a, m in zip(maps, masks, strict=True)])
    area = np.array([as_mask(m, "anatomical mask").mean() for m in masks])
    boot = {"patient_ids": patient_ids, "n_boot": n_boot, "seed": seed}
    return {
        "n_images": len(maps),
        "n_without_attribution": int(np.isnan(share).sum()),
        **mean_with_ci("attribution_share", share, **boot),
        **mean_with_ci("attention_ratio", share / area, **boot),
        **mean_with_ci("mask_area_share", area, **boot),
    }
