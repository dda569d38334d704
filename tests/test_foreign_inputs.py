"""A model knows what it was trained on: training stores the profile of its images, and predict warns
about (or refuses) a mammogram given to the phantom chest model, not about a chest film like its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_dicom
from PIL import Image

from radsight.data.sources.phantoms import PhantomChestXray

TAG_WARNINGS = [
    "DICOM Modality MG, but the model was trained on CR/DX/RG",
    "DICOM BodyPartExamined BREAST, but the model was trained on CHEST/THORAX",
]


@pytest.fixture
def inputs(data_root: Path, tmp_path: Path) -> dict[str, Path]:
    """A chest film like the training ones (PNG), a real mammogram, and the chest film as a DICOM
    tagged as a mammogram."""
    film = PhantomChestXray(1, size=(128, 128), seed=11)[0].image[0].numpy()
    chest = tmp_path / "chest.png"
    Image.fromarray(np.round(film * 255).astype(np.uint8)).save(chest)
    tagged = write_dicom(
        tmp_path / "tagged.dcm", np.round(film * 4095), modality="MG", BodyPartExamined="BREAST"
    )
    return {
        "chest": chest,
        "mammogram": data_root / "mammo-nyu" / "images_original" / "0_L-CC.png",
        "tagged": tagged,
    }


def test_training_stores_the_profile_of_its_training_images(trained_model: Path) -> None:
    profile = json.loads((trained_model / "input_profile.json").read_text())
    assert profile["sources"] == [
        {"name": "phantom", "modalities": ["CR", "DX", "RG"], "body_parts": ["CHEST", "THORAX"]}
    ]
    train_split = len(json.loads((trained_model / "splits.json").read_text())["train"])
    assert train_split > 100 and profile["images"] == 100  # a bounded sample of the training split
    assert profile["statistics"]["long_side"] == {"p01": 128, "p50": 128, "p99": 128}
    assert profile["statistics"]["aspect"] == {"p01": 1, "p50": 1, "p99": 1}
    mean = profile["statistics"]["mean"]
    assert 0 < mean["p01"] < mean["p50"] < mean["p99"] < 1


def test_predict_warns_about_a_mammogram_and_a_mammogram_tag_not_about_a_chest_film(
    trained_model: Path, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the table and the warning lines unwrapped
    out = tmp_path / "out"
    result = run_cli("predict", "--model", trained_model, *inputs.values(), "--out", out)
    payload = json.loads((out / "predictions.json").read_text())
    assert payload["inputs_checked"] is True
    rows = {Path(row["path"]).name: row for row in payload["files"]}
    assert rows["chest.png"]["warnings"] == []
    [mammogram] = rows["0_L-CC.png"]["warnings"]
    assert mammogram.startswith("unlike the training images: long side 2023 px (training 128 px)")
    assert rows["tagged.dcm"]["warnings"] == TAG_WARNINGS  # its pixels are the chest film's
    # the terminal: one table row per file with its probabilities, one warning line per foreign file
    for name, row in rows.items():
        cells = [f"{p:.3f}" for p in row["probabilities"].values()]
        assert any(
            name in line and all(cell in line for cell in cells) for line in result.output.splitlines()
        )
    warning_lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning_lines == [
        f"warning: {inputs['mammogram']}: {mammogram}",
        f"warning: {inputs['tagged']}: {'; '.join(TAG_WARNINGS)}",
    ]


def test_refuse_foreign_stops_with_one_line_before_writing(
    trained_model: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    files = [inputs["chest"], inputs["mammogram"], inputs["tagged"]]
    result = run_cli("predict", "--model", trained_model, *files, "--out", out, "--refuse-foreign", expect=2)
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {inputs['mammogram']}: refused, unlike the training images: long side")
    assert line.endswith("(and 1 more of the 3 files)")
    assert not out.exists()
    run_cli("predict", "--model", trained_model, inputs["chest"], "--out", out, "--refuse-foreign")
    assert json.loads((out / "predictions.json").read_text())["files"][0]["warnings"] == []


def test_a_model_exported_before_profiles_predicts_with_one_note(
    trained_model: Path, inputs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(trained_model / name, old / name)
    out = tmp_path / "out"
    run_cli("predict", "--model", old, inputs["chest"], inputs["mammogram"], "--out", out)
    notes = [record.getMessage() for record in caplog.records if "input profile" in record.getMessage()]
    assert notes == [
        f"{old} has no input profile (exported before inputs were checked): the files cannot be "
        "checked against the training images"
    ]
    payload = json.loads((out / "predictions.json").read_text())
    assert payload["inputs_checked"] is False
    assert [row["warnings"] for row in payload["files"]] == [[], []]
    refused = run_cli("predict", "--model", old, inputs["chest"], "--out", out, "--refuse-foreign", expect=2)
    assert refused.output.startswith(f"error: {old}: no input profile")
