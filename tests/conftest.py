"""Shared fixtures: the real data folder (RADSIGHT_DATA) and offline settings."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder of small real datasets; tests that need it skip when RADSIGHT_DATA is unset."""
    value = os.environ.get("RADSIGHT_DATA")
    if not value:
        pytest.skip("RADSIGHT_DATA is not set (CI always sets it)")
    root = Path(value)
    if not root.is_dir():
        pytest.fail(f"RADSIGHT_DATA={value} is not a folder")
    return root


@pytest.fixture
def mirror(tmp_path: Path) -> Callable[..., Path]:
    """Make a dataset folder in tmp_path whose entries link to the real one, except the CSVs that
    ``edits`` rewrites, so a test can break one index file without copying any image."""

    def make(source: Path, edits: dict[str, Callable[[pd.DataFrame], pd.DataFrame]]) -> Path:
        root = tmp_path / source.name
        root.mkdir()
        for entry in source.iterdir():
            if entry.name in edits:
                edits[entry.name](pd.read_csv(entry)).to_csv(root / entry.name, index=False)
            else:
                (root / entry.name).symlink_to(entry)
        return root

    return make


TINY_TRAINING = [
    "model.backbone=tiny_cnn",
    "data.sources.0.options={n: 240, size: [128, 128], seed: 1, lesion_scale: 1.5}",
    "data.image_size=[128, 128]",
    "stages.0.epochs=8",
    "stages.0.lr=0.003",
    "evaluation.n_boot=200",
    "trainer.progress_bar=false",
]
"""Overrides of recipes/baseline_cpu.yaml for a phantom task a tiny CNN learns in about 15 s."""


def run_cli(*args: str, expect: int | None = 0):
    """Invoke the radsight CLI in-process and check its exit code (``expect`` None: any), showing its
    output on failure."""
    from typer.testing import CliRunner

    from radsight.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
    return result


@pytest.fixture(scope="session")
def recipes_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, recipes_dir: Path) -> Path:
    """A baseline trained once through ``radsight train`` for the tests that need a model."""
    out = tmp_path_factory.mktemp("run") / "baseline"
    overrides = [item for override in TINY_TRAINING for item in ("--set", override)]
    run_cli("train", recipes_dir / "baseline_cpu.yaml", "--out", out, *overrides)
    return out


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    *,
    modality: str = "DX",
    bits_stored: int = 12,
    **extra,
) -> Path:
    """Write an uncompressed 16-bit-allocated grayscale DICOM (no pixel data when ``pixels`` is None);
    ``extra`` sets further attributes by keyword."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    dataset.PhotometricInterpretation = photometric
    for key, value in extra.items():
        setattr(dataset, key, value)
    if pixels is not None:
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel = 1
        dataset.BitsAllocated = 16
        dataset.BitsStored = bits_stored
        dataset.HighBit = bits_stored - 1
        dataset.PixelRepresentation = 0
        dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained baseline exported like a run folder, with stored operating points (nodule 0.25,
    opacity 0.75): for the tests of what is done with a prediction, not of how good it is."""
    import torch

    from radsight.checkpoints import export_model
    from radsight.config import parse_recipe
    from radsight.methods.registry import build_method, export_config
    from radsight.operating_points import OperatingPoints, write_operating_points

    labels = ["nodule", "opacity"]
    recipe = parse_recipe(
        {
            "name": "dicom-test",
            "data": {
                "sources": [{"name": "phantom", "options": {"n": 8}}],
                "labels": labels,
                "image_size": [128, 128],
                "augment": False,
            },
            "model": {"backbone": "tiny_cnn"},
        }
    )
    out = tmp_path_factory.mktemp("untrained")
    torch.manual_seed(0)
    export_model(build_method(recipe, labels, pretrained=False), export_config(recipe, labels), out)
    write_operating_points(out, OperatingPoints("youden", None, "val", 8, {"nodule": 0.25, "opacity": 0.75}))
    return out
