"""Source registry: recipe names to dataset classes, imported on first use so a missing optional
dependency of one source never breaks another."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

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
}


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
}
"""Per source name, what its images are; None where a user's files may be anything (``manifest``)."""


def source_class(name: str) -> Any:
    if name not in SOURCES:
        raise ConfigError(f"unknown data source {name!r}; known sources: {sorted(SOURCES)}")
    module, attribute = SOURCES[name].split(":")
    return getattr(import_module(module), attribute)
