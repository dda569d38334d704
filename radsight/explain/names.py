"""The names of the explanation methods: the one list that options, recipes and help texts are built from.

Kept apart from :mod:`radsight.explain.cam` so that reading a recipe or printing the command line's
help does not import torch.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["gradcam", "gradcam++", "hirescam", "ig", "native"]
METHODS: tuple[str, ...] = get_args(Method)
