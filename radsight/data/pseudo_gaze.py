"""Pseudo-gaze: stand-in fixations derived from boxes, for data that has boxes but no eye tracking.

This is NOT radiologists' gaze. No public chest X-ray set with gaze can be redistributed (EGD-CXR and
REFLACX sit behind PhysioNet credentials), so a gaze-supervised method can only be exercised on public
data by inventing a target. The rule says plainly what the target is: "attention covers the annotated
boxes, each box equally". Scores against it measure agreement with the boxes, not with readers.

The rule, deterministic and independent of the image content: each box gets a ``GRID x GRID`` lattice
of fixations at the centres of the cells of an even ``GRID x GRID`` division of the box, and every box
gets the same total dwell ``BOX_DWELL_S`` split evenly over its points, so a small nodule weighs as much
as a large consolidation (as a reader dwells on each finding). Blurred by the recipe's
``gaze_sigma_fraction``, the lattice becomes a smooth blob filling the box. Lesion boxes (NIH, RSNA
pneumonia) thus give attention on findings; lung boxes (covid-chestxray) give attention spread over
both lung fields, which is what a reader scans when the finding is diffuse. Images without boxes get no
pseudo-gaze (their gaze stays absent, and losses and metrics skip them), and real fixations are never
replaced.

Apply it before any geometric transform: the fixations are made in the file's frame and then move with
the image like real ones (``build_transforms(..., pseudo_gaze=True)``; recipe ``data.pseudo_gaze``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from radsight.data.sample import Sample

GRID = 3
"""Fixations per box side: 3 x 3 points, once blurred, cover a box from its centre to its edges."""

BOX_DWELL_S = 1.0
"""Total fixation duration given to each box, in seconds."""

META_KEY = "pseudo_gaze"
"""``sample.meta.extra`` flag marking fixations made by this rule, so reports can say so."""


def box_fixations(boxes: Tensor, grid: int = GRID, dwell_s: float = BOX_DWELL_S) -> Tensor:
    """``N * grid^2 x 3`` fixations (x, y, duration_s) on a lattice inside each xyxy box."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    steps = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    x = boxes[:, 0:1] + steps[None, :] * (boxes[:, 2:3] - boxes[:, 0:1])  # N x grid
    y = boxes[:, 1:2] + steps[None, :] * (boxes[:, 3:4] - boxes[:, 1:2])
    xs = x[:, None, :].expand(-1, grid, -1).reshape(-1)
    ys = y[:, :, None].expand(-1, -1, grid).reshape(-1)
    durations = torch.full_like(xs, dwell_s / grid**2)
    return torch.stack([xs, ys, durations], dim=1)


class PseudoGaze:
    """``Sample -> Sample``: add box-derived fixations to samples that have boxes and no fixations."""

    def __call__(self, sample: Sample) -> Sample:
        if sample.fixations is not None or sample.boxes is None or len(sample.boxes) == 0:
            return sample
        meta = replace(sample.meta, extra={**sample.meta.extra, META_KEY: True})
        return sample.replace(fixations=box_fixations(sample.boxes), meta=meta)

    def __repr__(self) -> str:
        return f"PseudoGaze(grid={GRID}, box_dwell_s={BOX_DWELL_S})"
