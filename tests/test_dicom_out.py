"""DICOM results: the SR, the overlay capture and the map of a prediction pass dciodvfy, reference
their source, and say what the prediction said; bad DICOM inputs are one line each."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import run_cli
from PIL import Image
from pydicom.data import get_testdata_file
from test_cli import assert_one_line_error

from radsight.dicom.out import KINDS, NOT_FOR_DIAGNOSIS, ModelIdentity, read_probabilities
from radsight.dicom.study import NotPredicted, check_predictable
from radsight.errors import DataError
from radsight.infer import LoadedModel, infer
from radsight.metrics.localization import boxes_from_map

RG1 = Path(get_testdata_file("RG1_UNCR.dcm"))


@pytest.fixture(scope="module")
def written(untrained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dicom-out")
    run_cli("predict", "--model", untrained_model, RG1, "--out", out, "--dicom")
    return out


def results(folder: Path) -> dict[str, pydicom.Dataset]:
    return {kind: pydicom.dcmread(folder / f"RG1_UNCR.{kind}.dcm") for kind in KINDS}


def dciodvfy_errors(path: Path) -> list[str]:
    """dicom3tools' validator's error lines for one file (its whole report on failure)."""
    assert shutil.which("dciodvfy"), "dciodvfy not found: install Debian's dicom3tools (.ci/run does)"
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_every_result_passes_dciodvfy(written: Path) -> None:
    for kind in KINDS:
        assert dciodvfy_errors(written / f"RG1_UNCR.{kind}.dcm") == [], kind


def test_results_stay_in_the_study_in_new_series_and_reference_the_source(written: Path) -> None:
    source = pydicom.dcmread(RG1, stop_before_pixels=True)
    made = results(written)
    series = {kind: d.SeriesInstanceUID for kind, d in made.items()}
    assert len(set(series.values())) == 3 and source.SeriesInstanceUID not in series.values()
    for dataset in made.values():
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert (dataset.PatientID, dataset.PatientName) == (source.PatientID, source.PatientName)
    evidence = made["sr"].CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    overlay_source = made["overlay"].SourceImageSequence[0]
    map_source = made["map"].ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    for reference in (evidence.ReferencedSOPSequence[0], overlay_source, map_source):
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID


def test_the_report_states_each_label_threshold_model_and_region(
    written: Path, untrained_model: Path
) -> None:
    model = LoadedModel.load(untrained_model)
    prediction = infer(model, RG1)
    report = results(written)["sr"]
    assert read_probabilities(report) == pytest.approx(prediction.probabilities, abs=1e-6)
    saved = json.loads((written / "predictions.json").read_text())["files"][0]["probabilities"]
    assert read_probabilities(report) == pytest.approx(saved, abs=1e-6)
    text = subprocess.run(
        ["dsrdump", str(written / "RG1_UNCR.sr.dcm")], capture_output=True, text=True
    ).stdout
    identity = ModelIdentity.of(untrained_model, model)
    assert identity.name in text and identity.version in text
    # nodule's 0.25 is reached by an untrained model's ~0.5, opacity's 0.75 is not
    assert 'NUM:(,,"Operating threshold")="0.25"' in text and 'NUM:(,,"Operating threshold")="0.75"' in text
    reached = 'CODE:(,,"Probability reaches operating threshold")='
    assert (
        text.count(f'{reached}(373066001,SCT,"Yes")') == 1
        and text.count(f'{reached}(373067005,SCT,"No")') == 1
    )
    # the regions are the boxes around the map's peak, as closed polylines on the source image
    expected = boxes_from_map(prediction.map.numpy(), 0.5)
    parsed = hd.sr.ComprehensiveSR.from_dataset(report)
    regions = parsed.content.get_planar_roi_measurement_groups()
    assert len(regions) == len(expected) > 0
    for group, (x1, y1, x2, y2) in zip(regions, expected, strict=True):
        corners = group.roi.value
        assert np.allclose(corners, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])
        referenced = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert (
            referenced.ReferencedSOPInstanceUID
            == pydicom.dcmread(RG1, stop_before_pixels=True).SOPInstanceUID
        )


def test_overlay_has_not_for_diagnosis_burned_in(written: Path) -> None:
    capture = results(written)["overlay"]
    assert capture.BurnedInAnnotation == "YES" and NOT_FOR_DIAGNOSIS in capture.ImageComments
    pixels = capture.pixel_array
    drawn = np.asarray(Image.open(written / "RG1_UNCR.overlay.png").convert("RGB"))
    assert pixels.shape == drawn.shape == (1955, 1841, 3)
    changed = np.any(pixels != drawn, axis=-1)
    rows, cols = np.nonzero(changed)
    # only the label's box at the bottom left differs: black with white text
    assert rows.min() > 1955 * 0.85 and cols.max() < 1841 * 0.6
    box = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert np.mean(box == 0) > 0.5 and np.any(np.all(box == 255, axis=-1))


def test_map_lies_on_the_source_pixels(written: Path, untrained_model: Path) -> None:
    segmentation = results(written)["map"]
    assert (segmentation.Rows, segmentation.Columns) == (1955, 1841)
    assert segmentation.SegmentationType == "FRACTIONAL"
    heat = infer(LoadedModel.load(untrained_model), RG1).map.numpy()
    expected = (heat - heat.min()) / (heat.max() - heat.min())
    stored = segmentation.pixel_array.astype(np.float64) / segmentation.MaximumFractionalValue
    assert np.abs(stored - expected).max() <= 0.5 / 255 + 1e-6


def test_the_same_image_and_model_give_the_same_objects(written: Path, untrained_model: Path, tmp_path: Path):
    run_cli("predict", "--model", untrained_model, RG1, "--out", tmp_path, "--dicom")
    again = results(tmp_path)
    for kind, dataset in results(written).items():
        assert again[kind].SOPInstanceUID == dataset.SOPInstanceUID
        assert again[kind].SeriesInstanceUID == dataset.SeriesInstanceUID


def rg1_with(path: Path, **changes) -> Path:
    dataset = pydicom.dcmread(RG1)
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"PixelData": None}, "no pixel data"),
        ({"StudyInstanceUID": None}, "no StudyInstanceUID"),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, "unsupported photometric interpretation"),
    ],
    ids=["no-pixels", "no-study-uid", "palette"],
)
def test_bad_dicom_is_one_line_before_anything_is_written(untrained_model, tmp_path, changes, problem):
    bad = rg1_with(tmp_path / "bad.dcm", **changes)
    out = tmp_path / "out"
    result = run_cli("predict", "--model", untrained_model, bad, "--out", out, "--dicom", expect=2)
    assert_one_line_error(result.output, "bad.dcm", problem)
    assert not out.exists()


def test_multi_frame_and_png_inputs_are_refused(untrained_model, tmp_path):
    multi = Path(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    result = run_cli("predict", "--model", untrained_model, multi, "--out", tmp_path, "--dicom", expect=2)
    assert_one_line_error(result.output, "emri_small_jpeg_ls_lossless.dcm", "one grayscale frame")
    png = tmp_path / "film.png"
    Image.fromarray(np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)).save(png)
    result = run_cli("predict", "--model", untrained_model, png, "--out", tmp_path, "--dicom", expect=2)
    assert_one_line_error(result.output, "film.png", "DICOM results need a DICOM input")


def test_only_frontal_projection_radiographs_are_predicted(tmp_path):
    header = pydicom.dcmread(RG1, stop_before_pixels=True)
    check_predictable(header, "pa.dcm")  # a PA chest film
    header.ViewPosition = "LL"
    with pytest.raises(NotPredicted, match=r"lateral\.dcm: view LL is not frontal"):
        check_predictable(header, "lateral.dcm")
    header.Modality = "CT"
    with pytest.raises(NotPredicted, match=r"ct\.dcm: modality CT is not predicted"):
        check_predictable(header, "ct.dcm")
    header.Modality, header.NumberOfFrames = "DX", 3
    with pytest.raises(DataError, match=r"cine\.dcm: multi-frame object \(3 frames\)"):
        check_predictable(header, "cine.dcm")


def test_glam_patches_are_the_reports_regions(tmp_path: Path) -> None:
    import torch
    from conftest import write_dicom
    from test_glam import TINY

    from radsight.checkpoints import export_model
    from radsight.config import parse_recipe
    from radsight.methods.registry import build_method, export_config

    labels = ["benign", "malignant"]
    recipe = parse_recipe(
        {
            "name": "glam-dicom-test",
            "method": "glam",
            "data": {
                "sources": [{"name": "phantom_mammo", "options": {"n": 4, "size": [256, 192]}}],
                "labels": labels,
                "image_size": [256, 192],
                "augment": False,
            },
            "model": TINY,
            "stages": [{"name": "global"}, {"name": "local"}, {"name": "joint"}],
            "evaluation": {"explain": "native"},
        }
    )
    model_dir = tmp_path / "glam"
    torch.manual_seed(0)
    export_model(build_method(recipe, labels, pretrained=False), export_config(recipe, labels), model_dir)
    rng = np.random.default_rng(0)
    view = write_dicom(
        tmp_path / "view.dcm",
        rng.integers(0, 4000, size=(512, 384)).astype(np.uint16),
        modality="MG",
        StudyInstanceUID=pydicom.uid.generate_uid(),
        SeriesInstanceUID=pydicom.uid.generate_uid(),
        PatientID="MG-1",
        ViewPosition="CC",
    )
    run_cli("predict", "--model", model_dir, view, "--out", tmp_path / "out", "--dicom")
    for kind in KINDS:  # a source with a minimal header (no patient name, no study date) gives valid results
        assert dciodvfy_errors(tmp_path / "out" / f"view.{kind}.dcm") == [], kind
    prediction = infer(LoadedModel.load(model_dir), view)
    assert prediction.regions is not None and len(prediction.regions) == 2  # GLAM's two patches
    report = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(tmp_path / "out" / "view.sr.dcm"))
    regions = report.content.get_planar_roi_measurement_groups()
    assert len(regions) == 2
    for group, (x1, y1, x2, y2) in zip(regions, prediction.regions.tolist(), strict=True):
        assert np.allclose(group.roi.value, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], atol=1e-3)


def test_the_model_input_keeps_the_files_dicom_identity(untrained_model: Path) -> None:
    prepared = LoadedModel.load(untrained_model).prepare(RG1)
    identity = prepared.batch.meta[0].dicom
    assert identity is not None and identity == prepared.info.dicom
    assert identity.sop_instance_uid == pydicom.dcmread(RG1, stop_before_pixels=True).SOPInstanceUID
