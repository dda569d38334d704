"""EGD-CXR and REFLACX sources on small files written in the datasets' exact layouts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radsight.data.sources.egd import EGDCXR, screen_to_image
from radsight.data.sources.gaze_common import resolve_mimic_image
from radsight.data.sources.reflacx import LABELS, REFLACX, load_mention_spans
from radsight.errors import ConfigError, DataError

NAN = float("nan")


def write_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
    Image.fromarray(ramp).save(path)


def write_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], crlf: bool = False
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(header)
        writer.writerows(rows)


def same(actual: object, expected: Sequence[float]) -> bool:
    """Equal float vectors, NaN matching NaN."""
    return np.allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), equal_nan=True)


# ---------------------------------------------------------------- EGD-CXR

# d1 is 100 x 200 (portrait): resized to 540 x 1080 on screen, so 690 px pads left and right.
# d2 is 200 x 100 (landscape): resized to 1920 x 960, so 60 px pads top and bottom.
D1_PADS = (0, 0, 690, 690)
D2_PADS = (60, 60, 0, 0)
GAZE_HEADER = [
    "SESSION_ID", "DICOM_ID", "CNT", "Time (in secs)", "TIMETICK(f=10000000)", "FPOGX", "FPOGY", "FPOGS",
    "FPOGD", "FPOGID", "FPOGV", "BPOGX", "BPOGY", "BPOGV", "LPCX", "X_ORIGINAL", "Y_ORIGINAL",
]  # fmt: skip


def gaze_row(dicom_id: str, x: float, y: float, duration: float, valid: int, x0: object, y0: object) -> list:
    return [1, dicom_id, 0, 0.0, 0, x, y, 0.0, duration, 1, valid, x, y, 1, 0.5, x0, y0]


@pytest.fixture
def egd(tmp_path: Path) -> tuple[Path, Path]:
    root, images = tmp_path / "egd-cxr", tmp_path / "mimic-cxr-jpg"
    write_image(images / "files/p10/p10000001/s50000001/d1.jpg", 100, 200)
    write_image(images / "files/p10/p10000002/s50000002/d2.jpg", 200, 100)
    header = [
        "dicom_id", "path", "study_id", "patient_id", "stay_id", "gender", "anchor_age", "ViewPosition",
        "Normal", "CHF", "pneumonia",
        "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad",
    ]  # fmt: skip
    write_csv(
        root / "master_sheet.csv",
        header,
        [
            [
                "d1",
                "files/p10/p10000001/s50000001/d1.dcm",
                50000001,
                10000001,
                1,
                "F",
                60,
                "PA",
                0,
                1,
                0,
                *D1_PADS,
            ],
            [
                "d2",
                "files/p10/p10000002/s50000002/d2.dcm",
                50000002,
                10000002,
                2,
                "M",
                50,
                "PA",
                1,
                0,
                0,
                *D2_PADS,
            ],
        ],
    )
    write_csv(
        root / "fixations.csv",
        GAZE_HEADER,
        [
            gaze_row("calib-0001", 0.5, 0.5, 0.9, 1, -1, -1),  # calibration screen: not in the sheet
            gaze_row("d1", 0.45, 0.2, 0.25, 1, 30, 40),  # dataset's own mapping
            gaze_row("d1", 0.5, 0.5, 0.5, 1, -1, -1),  # screen centre = image centre (50, 100)
            gaze_row("d1", 0.5, 0.5, 0.3, 0, 10, 10),  # invalid fixation
            gaze_row("d1", 0.1, 0.5, 0.2, 1, -1, -1),  # on the left padding: off the image
            gaze_row("d1", 0.4296875, 0.25, 0.125, 1, "", ""),  # screen (825, 270) -> (25, 50)
            gaze_row("d2", 0.5, 0.5, 1.5, 1, -1, -1),  # centre of the landscape image (100, 50)
        ],
    )
    write_csv(
        root / "bounding_boxes.csv",
        ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"],
        [["d1", "Left Lung", 55, 95, 20, 180], ["d1", "Right Lung", 5, 45, 25, 175]],
    )
    folder = root / "audio_segmentation_transcripts" / "d1"
    folder.mkdir(parents=True)
    transcript = {
        "full_text": "ignored",
        "time_stamped_text": [
            {"phrase": "mild cardiomegaly ", "begin_time": 1.0, "end_time": 2.5},
            {"phrase": "with pulmonary vascular congestion.", "begin_time": 2.6, "end_time": 4.0},
        ],
    }
    (folder / "transcript.json").write_text(json.dumps(transcript))
    for name in ("left_lung", "right_lung"):
        mask = np.zeros((200, 100), dtype=np.uint8)
        mask[20:180, 5:45] = 255
        Image.fromarray(mask).save(folder / f"{name}.png")
    return root, images


def test_screen_to_image_centre_and_corners() -> None:
    # portrait 100 x 200 image between 690 px pads: its screen rectangle is x 690..1230, y 0..1080
    gaze = np.array([[0.5, 0.5], [690 / 1920, 0.0], [1230 / 1920, 1.0], [0.4296875, 0.25]])
    np.testing.assert_allclose(
        screen_to_image(gaze, D1_PADS, (200, 100)), [[50, 100], [0, 0], [100, 200], [25, 50]]
    )
    # landscape 200 x 100 image between 60 px pads: y 60..1020
    gaze = np.array([[0.5, 0.5], [0.0, 60 / 1080], [1.0, 1020 / 1080]])
    np.testing.assert_allclose(
        screen_to_image(gaze, D2_PADS, (100, 200)), [[100, 50], [0, 0], [200, 100]], atol=1e-9
    )


def test_egd_records_labels_and_patients(egd: tuple[Path, Path]) -> None:
    root, images = egd
    dataset = EGDCXR(root, images_root=images)
    assert len(dataset) == 2
    assert dataset.label_names == ["Normal", "CHF", "pneumonia"]
    assert same(dataset.label_matrix, [[0, 1, 0], [1, 0, 0]])
    assert dataset.patient_ids == ["10000001", "10000002"]
    # the sheet lists DICOMs; the MIMIC-CXR-JPG file of the same stem is used
    assert dataset.records[0].image_path == images / "files/p10/p10000001/s50000001/d1.jpg"
    assert same(EGDCXR(root, images_root=images, labels=["CHF"]).label_matrix, [[1], [0]])


def test_egd_sample_fixations_boxes_masks_report(egd: tuple[Path, Path]) -> None:
    root, images = egd
    dataset = EGDCXR(root, images_root=images)
    sample = dataset[0]
    assert sample.size == (200, 100)
    # calibration, invalid and off-image rows dropped; the rest in file order
    np.testing.assert_allclose(sample.fixations.numpy(), [[30, 40, 0.25], [50, 100, 0.5], [25, 50, 0.125]])
    assert sample.boxes.tolist() == [[55, 20, 95, 180], [5, 25, 45, 175]]
    assert sample.box_labels == ["Left Lung", "Right Lung"]
    assert set(sample.masks) == {"left_lung", "right_lung"}
    assert sample.masks["left_lung"].shape == (200, 100)
    assert sample.report == "mild cardiomegaly with pulmonary vascular congestion."
    assert sample.meta.view == "PA" and sample.meta.extra["dicom_id"] == "d1"
    other = dataset[1]
    np.testing.assert_allclose(other.fixations.numpy(), [[100, 50, 1.5]])
    assert other.boxes is None and other.masks is None and other.report is None


def test_egd_without_dataset_mapping_maps_every_fixation(egd: tuple[Path, Path]) -> None:
    root, images = egd
    gaze = root / "fixations.csv"
    lines = [line.rsplit(",", 2)[0] for line in gaze.read_text().splitlines()]
    gaze.write_text("\n".join(lines) + "\n")  # no X_ORIGINAL, Y_ORIGINAL columns
    fixations = EGDCXR(root, images_root=images).records[0].fixations
    # screen (864, 216) -> ((864 - 690) * 100 / 540, 216 * 200 / 1080)
    np.testing.assert_allclose(fixations, [[174 / 5.4, 40, 0.25], [50, 100, 0.5], [25, 50, 0.125]], rtol=1e-6)


def test_egd_index_errors(egd: tuple[Path, Path], tmp_path: Path) -> None:
    root, images = egd
    sheet = root / "master_sheet.csv"
    sheet.write_text(sheet.read_text().replace("image_left_pad", "left_pad"))
    with pytest.raises(DataError, match=r"master_sheet\.csv.*image_left_pad"):
        EGDCXR(root, images_root=images)
    with pytest.raises(DataError, match="images_root"):
        EGDCXR(root, images_root=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="Pneumonia"):
        EGDCXR(root, images_root=images, labels=["Pneumonia"])


def test_egd_missing_fixation_column(egd: tuple[Path, Path]) -> None:
    root, images = egd
    gaze = root / "fixations.csv"
    gaze.write_text(gaze.read_text().replace("FPOGD", "DURATION"))
    with pytest.raises(DataError, match=r"fixations\.csv.*FPOGD"):
        EGDCXR(root, images_root=images)


# ---------------------------------------------------------------- REFLACX

PHASE_1_LABELS = [
    "Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema", "Enlarged cardiac silhouette",
    "Fibrosis", "Fracture", "Groundglass opacity", "Mass", "Nodule", "Other", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary edema", "Quality issue", "Support devices",
    "Wide mediastinum",
]  # fmt: skip
PHASE_3_LABELS = [*LABELS[:11], "Other", *LABELS[11:]]
METADATA = ["id", "split", "eye_tracking_data_discarded", "image", "dicom_id", "subject_id", "image_size_x",
            "image_size_y"]  # fmt: skip
FIXATIONS = [
    "timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position", "pupil_area_normalized",
    "angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree", "window_width",
    "window_level", "xmin_shown_from_image", "ymin_shown_from_image", "xmax_shown_from_image",
    "ymax_shown_from_image", "xmin_in_screen_coordinates", "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates", "ymax_in_screen_coordinates",
]  # fmt: skip
FIXATION_DISPLAY = [1.0, 40, 40, 1, 0.5, 0, 0, 120, 100, 0, 0, 1, 1]  # the columns after x/y, unused
BOX = ["xmin", "ymin", "xmax", "ymax"]
P3, P1, P2 = "P300R000001", "P102R000002", "P201R000003"


def metadata_row(
    reading: str, discarded: bool, stem: str, subject: int, columns: list[str], **values: object
) -> list:
    """A metadata row for a 120 x 100 image; findings 0 unless given (underscores for spaces)."""
    cells = dict.fromkeys(columns, 0) | {"Other": "", "Support devices": False, "Quality issue": False}
    cells |= {key.replace("_", " "): value for key, value in values.items()}
    image = f"physionet.org/files/mimic-cxr/2.0.0/files/p10/p{subject}/s{subject + 40_000_000}/{stem}.dcm"
    return [reading, "train", discarded, image, stem, subject, 120, 100, *(cells[c] for c in columns)]


def write_reading(
    root: Path, reading: str, fixations: list, findings: list[str], ellipses: list, text: str
) -> None:
    """One reading's files; ``ellipses`` holds (box, certainty, findings marked in it)."""
    folder = root / "main_data" / reading
    write_csv(
        folder / "fixations.csv", FIXATIONS, [[*row, *FIXATION_DISPLAY] for row in fixations], crlf=True
    )
    rows = [[*box, certainty, *(f in marked for f in findings)] for box, certainty, marked in ellipses]
    write_csv(folder / "anomaly_location_ellipses.csv", [*BOX, "certainty", *findings], rows, crlf=True)
    write_csv(folder / "chest_bounding_box.csv", BOX, [[2, 3, 118, 97]], crlf=True)
    (folder / "transcription.txt").write_text(text)


@pytest.fixture
def reflacx(tmp_path: Path) -> tuple[Path, Path]:
    root, images = tmp_path / "reflacx", tmp_path / "mimic-cxr-jpg"
    write_image(images / "files/p10/p10000001/s50000001/r1.jpg", 120, 100)
    write_image(images / "files/p10/p10000002/s50000002/r2.jpg", 120, 100)
    main = root / "main_data"
    # Consolidation 2 is below the default threshold 3; a blank certainty is negative
    row = metadata_row(P3, False, "r1", 10000001, PHASE_3_LABELS, Atelectasis=3, Consolidation=2,
                       Pulmonary_edema=5, Hiatal_hernia="", Support_devices=True)  # fmt: skip
    write_csv(main / "metadata_phase_3.csv", [*METADATA, *PHASE_3_LABELS], [row], crlf=True)
    row = metadata_row(P2, True, "r2", 10000002, PHASE_3_LABELS)
    write_csv(main / "metadata_phase_2.csv", [*METADATA, *PHASE_3_LABELS], [row], crlf=True)
    row = metadata_row(P1, False, "r2", 10000002, PHASE_1_LABELS, Enlarged_cardiac_silhouette=4, Fracture=5,
                       Atelectasis=1)  # fmt: skip
    write_csv(main / "metadata_phase_1.csv", [*METADATA, *PHASE_1_LABELS], [row], crlf=True)
    write_reading(
        root,
        P3,
        [[0.0, 0.3, 10, 20], [0.5, 0.75, -5, 30], [1.0, 1.5, 60, 50], [2.0, 2.2, 130, 50]],
        list(LABELS),
        [([5, 10, 50, 60], 4, {"Atelectasis", "Pulmonary edema"}), ([70, 10, 130, 90], 2, {"Consolidation"})],
        "Mild pulmonary edema. Left basilar atelectasis.",
    )
    write_reading(
        root,
        P1,
        [[0.0, 0.2, 40, 40]],
        PHASE_1_LABELS,
        [([10, 10, 110, 90], 5, {"Enlarged cardiac silhouette"}), ([0, 0, 20, 20], 5, {"Fracture"})],
        "Cardiomegaly.",
    )
    return root, images


def test_reflacx_records_labels_and_phase_1(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    dataset = REFLACX(root, images_root=images)
    assert len(dataset) == 2  # the discarded phase-2 reading is dropped
    assert [r.extra["reading_id"] for r in dataset.records] == [P1, P3]
    assert dataset.patient_ids == ["10000002", "10000001"]
    phase_1, phase_3 = dataset.label_matrix
    positive = {"Atelectasis", "Pulmonary edema", "Support devices"}  # 3, 5 and True; Consolidation 2 < 3
    assert same(phase_3, [float(label in positive) for label in LABELS])
    # phase 1: same-named findings are read (Atelectasis 1 < 3, cardiac silhouette 4), the others NaN
    expected = dict.fromkeys(["Atelectasis", "Consolidation", "Groundglass opacity", "Pneumothorax"], 0)
    expected |= {"Enlarged cardiac silhouette": 1, "Pulmonary edema": 0, "Support devices": 0}
    assert same(phase_1, [expected.get(label, NAN) for label in LABELS])
    assert dataset.records[1].image_path == images / "files/p10/p10000001/s50000001/r1.jpg"


def test_reflacx_certainty_threshold_and_phases(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    dataset = REFLACX(root, images_root=images, certainty_threshold=2, phases=(3,))
    assert len(dataset) == 1
    assert dataset.label_matrix[0, LABELS.index("Consolidation")] == 1
    with pytest.raises(ConfigError, match="certainty_threshold"):
        REFLACX(root, images_root=images, certainty_threshold=0)
    with pytest.raises(ConfigError, match="phases"):
        REFLACX(root, images_root=images, phases=(4,))
    with pytest.raises(ConfigError, match="Cardiomegaly"):
        REFLACX(root, images_root=images, labels=["Cardiomegaly"])


def test_reflacx_sample_fixations_boxes_report(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    sample = REFLACX(root, images_root=images, phases=(3,))[0]
    assert sample.size == (100, 120)
    # x = -5 and x = 130 fall off the 120 x 100 image; durations are end - start
    np.testing.assert_allclose(sample.fixations.numpy(), [[10, 20, 0.3], [60, 50, 0.5]], rtol=1e-6)
    # the certainty-2 consolidation ellipse does not reach the threshold
    assert sample.boxes.tolist() == [[5, 10, 50, 60], [5, 10, 50, 60]]
    assert sample.box_labels == ["Atelectasis", "Pulmonary edema"]
    assert sample.report == "Mild pulmonary edema. Left basilar atelectasis."
    assert sample.meta.patient_id == "10000001"
    assert sample.meta.extra["phase"] == 3 and sample.meta.extra["dicom_id"] == "r1"


def test_reflacx_boxes_clipped_and_chest_box(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    dataset = REFLACX(root, images_root=images, certainty_threshold=2, chest_box=True)
    phase_1, phase_3 = dataset[0], dataset[1]
    # the phase-1 "Fracture" ellipse has no phase 2-3 finding of that name
    assert phase_1.box_labels == ["Enlarged cardiac silhouette", "chest"]
    # the consolidation ellipse reaches x 130 on a 120 px wide image: clipped
    assert phase_3.box_labels == ["Atelectasis", "Pulmonary edema", "Consolidation", "chest"]
    assert phase_3.boxes.tolist()[2:] == [[70, 10, 120, 90], [2, 3, 118, 97]]


def test_reflacx_missing_label_column(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    path = root / "main_data" / "metadata_phase_3.csv"
    path.write_bytes(path.read_bytes().replace(b"Enlarged hilum", b"Hilum"))
    with pytest.raises(DataError, match=r"metadata_phase_3\.csv.*Enlarged hilum"):
        REFLACX(root, images_root=images)


def test_reflacx_missing_fixation_column(reflacx: tuple[Path, Path]) -> None:
    root, images = reflacx
    path = root / "main_data" / P3 / "fixations.csv"
    path.write_bytes(path.read_bytes().replace(b"x_position", b"x"))
    with pytest.raises(DataError, match=rf"{P3}.fixations\.csv.*x_position"):
        REFLACX(root, images_root=images)


def test_resolve_mimic_image(tmp_path: Path) -> None:
    study = tmp_path / "files/p10/p10000001/s5"
    study.mkdir(parents=True)
    (study / "a.dcm").touch()
    (study / "b.jpg").touch()
    assert (
        resolve_mimic_image(tmp_path, "files/p10/p10000001/s5/a.dcm")
        == tmp_path / "files/p10/p10000001/s5/a.dcm"
    )
    listed = "physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000001/s5/b.dcm"
    assert resolve_mimic_image(tmp_path, listed) == tmp_path / "files/p10/p10000001/s5/b.jpg"
    assert (
        resolve_mimic_image(tmp_path, "files/p10/x.dcm") == tmp_path / "files/p10/x.dcm"
    )  # named when missing


def test_load_mention_spans_real_file(data_root: Path) -> None:
    spans = load_mention_spans(data_root / "eye-gaze-formats" / "reflacx_manually_labeled_reports_3.csv")
    assert len(spans) == 200
    assert set(spans["P300R081391"]) == set(LABELS) - {"Support devices"}
    assert spans["P300R081391"]["Atelectasis"] == [(105, 116)]
    assert spans["P300R081391"]["Pleural abnormality"] == [(84, 93)]
    assert spans["P300R098087"]["Consolidation"] == [(331, 341), (280, 285), (268, 284)]
    assert spans["P300R003100"]["Pneumothorax"] == []
    assert sum(len(found) for reading in spans.values() for found in reading.values()) == 392


def test_load_mention_spans_rejects_code(tmp_path: Path) -> None:
    path = tmp_path / "spans.csv"
    write_csv(path, ["IDs", "atelectasis_location"], [["P300R1", "[[1, 2]]"], ["P300R2", "__import__('os')"]])
    with pytest.raises(DataError, match="P300R2"):
        load_mention_spans(path)
    write_csv(path, ["IDs", "cardiomegaly_location"], [["P300R1", "[]"]])
    with pytest.raises(DataError, match="cardiomegaly_location"):
        load_mention_spans(path)
