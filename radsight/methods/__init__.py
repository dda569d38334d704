"""Methods: LightningModules with named stages (``base``), registered by name (``registry``)."""

from radsight.methods.base import Method, Prediction
from radsight.methods.registry import METHODS, build_method, check_recipe, load_method, method_class

__all__ = ["METHODS", "Method", "Prediction", "build_method", "check_recipe", "load_method", "method_class"]
