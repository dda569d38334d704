"""radsight: interpretable, label-efficient diagnosis from chest X-rays and mammograms."""

__version__ = "0.1.0"
