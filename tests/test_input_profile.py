"""The profile of a model's training images and the check of a file against it: statistics by hand,
the widened training range by hand, tags, the JSON round trip, and chest films against mammograms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dicom

from radsight.data.image_io import DicomIdentity, read_image
from radsight.data.input_profile import InputProfile, Statistic, image_statistics
from radsight.data.sources import IMAGING, SOURCES
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.data.sources.phantoms_mammo import PhantomMammogram
from radsight.errors import ConfigError

CHEST_TAGS = "CR/DX/RG"


def identity(modality: str | None, body_part: str | None) -> DicomIdentity:
    fields = dict.fromkeys(DicomIdentity.__dataclass_fields__)
    return DicomIdentity(**{**fields, "modality": modality, "body_part_examined": body_part})


@pytest.fixture(scope="module")
def chest_profile() -> InputProfile:
    films = PhantomChestXray(60, size=(128, 128), seed=1, lesion_scale=1.5)
    return InputProfile.of_samples([films[i] for i in range(len(films))], ["phantom"])


def test_statistics_of_an_image_by_hand() -> None:
    # 4 rows x 2 columns: a black column and a white one
    image = torch.tensor([[[0.0, 1.0]] * 4])
    assert image.shape == (1, 4, 2)
    stats = image_statistics(image)
    assert stats == {
        "long_side": 4.0,
        "aspect": 2.0,
        "mean": 0.5,
        "std": 0.5,
        "p05": 0.0,  # numpy's linear percentile of [0, 0, 0, 0, 1, 1, 1, 1]: index 0.35
        "p50": 0.5,  # index 3.5, halfway between 0 and 1
        "p95": 1.0,  # index 6.65
    }


def test_the_training_range_is_widened_by_half_its_width_and_at_least_the_tolerance() -> None:
    intensity = Statistic("mean intensity", 0.1)
    # a narrow range 0.4..0.5: half its width (0.05) is below the tolerance, so 0.1 either side
    assert intensity.admits(0.31, 0.4, 0.5) and intensity.admits(0.59, 0.4, 0.5)
    assert not intensity.admits(0.29, 0.4, 0.5) and not intensity.admits(0.61, 0.4, 0.5)
    # a wide range 0.1..0.9: half its width, 0.4, either side
    assert intensity.admits(1.29, 0.1, 0.9) and not intensity.admits(1.31, 0.1, 0.9)
    side = Statistic("long side", math.log(4), log=True)
    # 100..200 px spans a factor 2; half of it (a factor sqrt 2) is below 4, so a factor 4 either side
    assert side.admits(26, 100, 200) and side.admits(790, 100, 200)
    assert not side.admits(24, 100, 200) and not side.admits(810, 100, 200)


def test_chest_films_like_the_training_ones_pass_and_a_mammogram_does_not(chest_profile) -> None:
    fresh = PhantomChestXray(20, size=(128, 128), seed=7)
    assert all(chest_profile.check(fresh[i].image, None) == [] for i in range(len(fresh)))
    mammogram = PhantomMammogram(1, seed=0)[0].image
    assert mammogram.shape == (1, 2048, 1280)
    [warning] = chest_profile.check(mammogram, None)
    assert warning.startswith("unlike the training images: long side 2048 px (training 128 px), ")
    assert "height/width 1.60 (training 1.00)" in warning


def test_a_real_mammogram_is_unlike_phantom_chest_films(chest_profile, data_root) -> None:
    image, _ = read_image(data_root / "mammo-nyu" / "images_original" / "0_L-CC.png")
    [warning] = chest_profile.check(image, None)
    assert "long side 2023 px (training 128 px)" in warning and "height/width 2.53" in warning


def test_dicom_tags_that_name_another_modality_or_body_part_warn(chest_profile) -> None:
    film = PhantomChestXray(1, size=(128, 128), seed=7)[0].image
    assert chest_profile.check(film, identity("MG", "BREAST")) == [
        f"DICOM Modality MG, but the model was trained on {CHEST_TAGS}",
        "DICOM BodyPartExamined BREAST, but the model was trained on CHEST/THORAX",
    ]
    assert chest_profile.check(film, identity("DX", "chest")) == []  # tags compared in capitals
    assert chest_profile.check(film, identity("CR", None)) == []  # a file that does not say passes
    # a user's manifest may hold anything: with one among the sources, tags cannot be checked
    films = PhantomChestXray(4, size=(128, 128), seed=1)
    mixed = InputProfile.of_samples([films[i] for i in range(4)], ["phantom", "manifest"])
    assert mixed.check(film, identity("MG", "BREAST")) == []


def test_the_profile_is_plain_json_and_reads_back_equal(chest_profile, tmp_path: Path) -> None:
    path = tmp_path / "input_profile.json"
    path.write_text(json.dumps(chest_profile.to_json()))
    assert InputProfile.read(path) == chest_profile
    payload = json.loads(path.read_text())
    assert payload["sources"] == [
        {"name": "phantom", "modalities": ["CR", "DX", "RG"], "body_parts": ["CHEST", "THORAX"]}
    ]
    assert payload["images"] == 60 and payload["statistics"]["long_side"] == {
        "p01": 128,
        "p50": 128,
        "p99": 128,
    }
    assert InputProfile.read(tmp_path / "absent.json") is None
    path.write_text(json.dumps({**payload, "format": 7}))
    with pytest.raises(ConfigError, match=r"input_profile\.json: unsupported input profile format 7"):
        InputProfile.read(path)
    del payload["statistics"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match=r"input_profile\.json: not a radsight input profile"):
        InputProfile.read(path)


def test_read_image_gives_the_body_part_examined(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (50, 1))
    path = write_dicom(tmp_path / "view.dcm", pixels, modality="MG", BodyPartExamined="BREAST")
    dicom = read_image(path)[1].dicom
    assert dicom is not None and (dicom.modality, dicom.body_part_examined) == ("MG", "BREAST")


def test_every_source_says_what_its_images_are() -> None:
    assert set(IMAGING) == set(SOURCES)
