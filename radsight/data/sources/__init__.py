"""Source registry: recipe names to dataset classes, imported on first use so a missing optional
dependency of one source never breaks another, and the options each source declares."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from pydantic import BaseModel, create_model

from radsight.errors import ConfigError

SOURCES = {
    "phantom": "radsight.data.sources.phantoms:PhantomChestXray",
    "phantom_mammo": "radsight.data.sources.phantoms_mammo:PhantomMammogram",
    "covid": "radsight.data.sources.covid:CovidChestXray",
    "nih": "radsight.data.sources.nih:NIHChestXray14",
    "nyu_mammo": "radsight.data.sources.nyu_mammo:NYUMammo",
    "cbis_ddsm": "radsight.data.sources.cbis_ddsm:CBISDDSM",
    "iu_xray": "radsight.data.sources.iu_xray:IUXray",
    "egd": "radsight.data.sources.egd:EGDCXR",
    "reflacx": "radsight.data.sources.reflacx:REFLACX",
    "chexpert": "radsight.data.sources.chexpert:CheXpert",
    "mimic_cxr_jpg": "radsight.data.sources.mimic:MIMICCXRJPG",
    "manifest": "radsight.data.sources.manifest:ManifestDataset",
    "pneumoniamnist": "radsight.data.sources.pneumoniamnist:PneumoniaMNIST",
    "shards": "radsight.data.sources.shards:ShardsSource",
}

VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

NOT_OPTIONS = frozenset({"self", "root", "transform", "on_bad_file"})
"""Constructor arguments a recipe does not set as options: ``root`` and the recipe's ``on_bad_file``
have their own fields, and the transform is built from the recipe."""


@dataclass(frozen=True)
class Imaging:
    """What a source's images are, in DICOM's words: the Modality and BodyPartExamined values that such
    images carry, so a file whose tags say otherwise can be told apart from the training images."""

    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]


CHEST_RADIOGRAPH = Imaging(("CR", "DX", "RG"), ("CHEST", "THORAX"))
MAMMOGRAM = Imaging(("MG",), ("BREAST",))

IMAGING: dict[str, Imaging | None] = {
    "phantom": CHEST_RADIOGRAPH,
    "phantom_mammo": MAMMOGRAM,
    "covid": CHEST_RADIOGRAPH,
    "nih": CHEST_RADIOGRAPH,
    "nyu_mammo": MAMMOGRAM,
    "cbis_ddsm": MAMMOGRAM,
    "iu_xray": CHEST_RADIOGRAPH,
    "egd": CHEST_RADIOGRAPH,
    "reflacx": CHEST_RADIOGRAPH,
    "chexpert": CHEST_RADIOGRAPH,
    "mimic_cxr_jpg": CHEST_RADIOGRAPH,
    "manifest": None,
    "pneumoniamnist": CHEST_RADIOGRAPH,
    "shards": None,
}
"""Per source name, what its images are; None where a user's files may be anything (``manifest``, and
``shards``, which hold any source)."""


def source_class(name: str) -> Any:
    if name not in SOURCES:
        raise ConfigError(f"unknown data source {name!r}; known sources: {sorted(SOURCES)}")
    module, attribute = SOURCES[name].split(":")
    return getattr(import_module(module), attribute)


@functools.cache
def options_schema(cls: type, base: type[BaseModel]) -> type[BaseModel]:
    """The options ``cls`` declares, as a pydantic model derived from ``base`` (its extra settings and
    the options every source accepts): the keyword arguments of its constructor, followed through
    ``**options`` into the parent constructors that receive them. The signature stays the one
    declaration, and a recipe's options are checked against it before any file is scanned."""
    fields: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        parameters = list(inspect.signature(init).parameters.values())
        for parameter in parameters:
            if parameter.name in NOT_OPTIONS or parameter.kind in VARIADIC:
                continue
            default = ... if parameter.default is parameter.empty else parameter.default
            fields.setdefault(parameter.name, (hints.get(parameter.name, Any), default))
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    return create_model(f"{cls.__name__}Options", __base__=base, **fields)
