"""Metrics as plain functions on arrays or tensors; each ``*_section`` builds one metrics.json section."""

from radsight.metrics.attention import attention_section
from radsight.metrics.classification import (
    classification_curves,
    classification_section,
    paired_bootstrap_test,
)
from radsight.metrics.localization import localization_section
from radsight.metrics.saliency import saliency_section

__all__ = [
    "attention_section",
    "classification_curves",
    "classification_section",
    "localization_section",
    "paired_bootstrap_test",
    "saliency_section",
]
