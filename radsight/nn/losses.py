"""Classification losses that skip labels nobody annotated (NaN), instead of treating them as negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy over annotated (non-NaN) entries; zero when none are annotated."""
    annotated = ~torch.isnan(labels)
    if not annotated.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[annotated], labels[annotated])


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy for one-hot labels; rows with any NaN (not annotated) are skipped."""
    annotated = ~torch.isnan(labels).any(dim=1)
    if not annotated.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[annotated], labels[annotated].argmax(dim=1))


def classification_loss(task: str, logits: Tensor, labels: Tensor) -> Tensor:
    return masked_bce(logits, labels) if task == "multilabel" else masked_cross_entropy(logits, labels)


def probabilities(task: str, logits: Tensor) -> Tensor:
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
