"""In-batch contrastive losses on image-level labels, for pre-training an encoder before its classifier.

Two images are of the same class when their label vectors are equal: a multi-label row is one class as
a whole, and "not annotated" (NaN) is a value of its own, so unlabelled entries never make two images
positives or negatives of each other by accident. Both losses work on L2-normalised embeddings and use
only the pairs one batch holds; an anchor without a same-class or other-class partner in the batch adds
nothing, and a batch with no usable anchor gives a zero loss that still belongs to the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_ids(labels: Tensor) -> Tensor:
    """One integer per row, equal exactly when two label vectors are equal (NaN equal to NaN)."""
    keys = torch.nan_to_num(labels.float(), nan=-1.0)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def _pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """B x B masks of same-class pairs (excluding i == j) and other-class pairs."""
    ids = class_ids(labels)
    same = ids[:, None] == ids[None, :]
    itself = torch.eye(len(ids), dtype=torch.bool, device=labels.device)
    return same & ~itself, ~same


def triplet_loss(embeddings: Tensor, labels: Tensor, margin: float = 0.5) -> Tensor:
    """Batch-hard triplet margin loss (Hermans et al. 2017) on L2-normalised embeddings.

    Each anchor is paired with its farthest same-class and nearest other-class sample in the batch,
    and contributes ``max(0, d(a, p) - d(a, n) + margin)`` with Euclidean distances; the hardest pair
    is where the encoder is most wrong, so it carries the signal that random triplets dilute.
    """
    z = F.normalize(embeddings, dim=1)
    positive, negative = _pair_masks(labels)
    usable = positive.any(dim=1) & negative.any(dim=1)
    if not usable.any():
        return embeddings.sum() * 0.0
    distance = torch.cdist(z, z)
    hardest_positive = distance.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distance.masked_fill(~negative, float("inf")).amin(dim=1)
    return F.relu(hardest_positive - hardest_negative + margin)[usable].mean()


def supervised_contrastive_loss(embeddings: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the L_out form) on L2-normalised embeddings.

    For anchor i with same-class set P(i): ``-1/|P(i)| sum_p log(exp(z_i.z_p / t) / sum_{a != i}
    exp(z_i.z_a / t))``, averaged over anchors with at least one positive. Unlike the triplet loss it
    uses every pair of the batch at once.
    """
    z = F.normalize(embeddings, dim=1)
    positive, _ = _pair_masks(labels)
    usable = positive.any(dim=1)
    if not usable.any():
        return embeddings.sum() * 0.0
    itself = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1)) / positive.sum(dim=1).clamp(min=1)
    return per_anchor[usable].mean()
