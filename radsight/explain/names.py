"""The names of the explanation methods and map normalisations: the one list that options, recipes and
help texts are built from.

Kept apart from :mod:`radsight.explain.cam` so that reading a recipe or printing the command line's
help does not import torch.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["gradcam", "gradcam++", "hirescam", "ig", "native"]
METHODS: tuple[str, ...] = get_args(Method)

Normalisation = Literal["max", "minmax"]
# What 0 and 1 of a map mean under each normalisation, for legends and reports.
NORMALISATIONS: dict[str, str] = {
    "max": "each map divided by its maximum (0 = no evidence, 1 = the image's strongest)",
    "minmax": "each map rescaled min-max (0 = the image's weakest evidence, 1 = its strongest)",
}
