"""The inference core: a file reaches the model exactly as the dataset path prepares the same file, and
what comes back (probabilities, maps, boxes, DICOM identity) is in the file's own terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from conftest import write_dicom
from PIL import Image

from radsight.checkpoints import export_model
from radsight.config import Recipe, parse_recipe
from radsight.data.assemble import build_union, evaluation_pipeline
from radsight.data.image_io import read_image
from radsight.data.sample import collate
from radsight.data.sources.nyu_mammo import NYUMammo
from radsight.data.transforms import AlignBreast, build_transforms
from radsight.errors import ConfigError, DataError
from radsight.infer import LoadedModel, infer
from radsight.methods.registry import build_method, export_config
from radsight.operating_points import OperatingPoints, write_operating_points
from radsight.predict import predict_files

LABELS = ["benign", "malignant"]
SIZE = (256, 160)


def recipe_for(sources: list[dict], image_size: tuple[int, int] = SIZE) -> Recipe:
    return parse_recipe(
        {
            "name": "infer-test",
            "data": {"sources": sources, "labels": LABELS, "image_size": list(image_size), "augment": False},
            "model": {"backbone": "tiny_cnn"},
        }
    )


def nyu(root: Path, cropped: bool) -> dict:
    return {"name": "nyu_mammo", "root": str(root), "options": {"cropped": cropped, "align_breast": True}}


def model_for(recipe: Recipe, source: str | None = None) -> LoadedModel:
    torch.manual_seed(0)
    method = build_method(recipe, LABELS, pretrained=False).eval()
    return LoadedModel.from_method(method, recipe, source)


@pytest.fixture(scope="module")
def root(data_root: Path) -> Path:
    return data_root / "mammo-nyu"


@pytest.fixture(scope="module")
def exported(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model exported like a run folder, for a recipe on NYU's original views."""
    recipe = recipe_for([nyu(root, cropped=False)])
    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    export_model(build_method(recipe, LABELS, pretrained=False), export_config(recipe, LABELS), out)
    return out


@pytest.mark.parametrize("cropped", [False, True], ids=["original-12-bit", "cropped-16-bit"])
def test_model_input_is_bit_for_bit_the_dataset_one(root: Path, cropped: bool) -> None:
    recipe = recipe_for([nyu(root, cropped)])
    model = model_for(recipe)
    # the dataset path twice: the source and evaluation transform by hand, and build_splits' eval view
    source = NYUMammo(root, cropped=cropped, transform=AlignBreast())
    transform = build_transforms(SIZE, train=False, augment=False, gaze_sigma_fraction=None)
    pipeline = evaluation_pipeline(recipe.data)
    view = build_union(recipe.data, pipeline).with_transform(pipeline.transform)
    mirrored = []
    for index in range(len(source)):
        expected = transform(source[index])
        path = source.records[index].image_path
        prepared = infer(model, path, with_map=False).file
        assert torch.equal(prepared.batch.images, collate([expected]).images), path.name
        assert torch.equal(prepared.batch.images, collate([view[index]]).images), path.name
        mirrored.append(prepared.geometry.mirrored)
    # NYU flipped its cropped right views already; the original right views face the other way
    laterality = [record.extra["laterality"] for record in source.records]
    assert mirrored == [not cropped and side == "R" for side in laterality]


def test_a_dark_12_bit_original_is_scaled_as_the_source_scales_it(root: Path, tmp_path: Path) -> None:
    # the same view with every value divided by 8: its brightest pixel (511) is below 1024
    folder = tmp_path / "mammo-nyu"
    (folder / "images_original").mkdir(parents=True)
    (folder / "exam_list_before_cropping.pkl").symlink_to(root / "exam_list_before_cropping.pkl")
    pixels = np.asarray(Image.open(root / "images_original" / "0_L-CC.png")) // 8
    path = folder / "images_original" / "0_L-CC.png"
    Image.fromarray(pixels.astype(np.uint16)).save(path)
    assert pixels.max() == 511
    recipe = recipe_for([nyu(folder, cropped=False)])
    prepared = model_for(recipe).prepare(path)
    assert float(prepared.image.max()) == pytest.approx(511 / 4095)  # 12 bits, as the source reads it
    assert float(read_image(path)[0].max()) == pytest.approx(511 / 1023)  # 10 bits, guessed from pixels
    pipeline = evaluation_pipeline(recipe.data)
    view = build_union(recipe.data, pipeline).with_transform(pipeline.transform)
    assert len(view) == 1 and torch.equal(prepared.batch.images, collate([view[0]]).images)


def test_prediction_in_the_file_frame_and_bytes_like_the_path(exported: Path, root: Path) -> None:
    model = LoadedModel.load(exported)
    path = root / "images_original" / "0_R-CC.png"
    by_path = infer(model, path, how="gradcam")
    by_bytes = infer(model, path.read_bytes(), name=path.name, how="gradcam")
    assert by_path.original_size == by_bytes.original_size == (2144, 801)
    assert by_path.map.shape == by_bytes.map.shape == (2144, 801)
    assert torch.equal(by_path.probs, by_bytes.probs)
    assert torch.equal(by_path.map, by_bytes.map)
    assert by_path.mirrored and by_path.dicom is None and by_path.map_method == "gradcam"
    assert set(by_path.probabilities) == set(LABELS) and by_path.top_label in LABELS
    assert by_bytes.file.name == "0_R-CC.png"
    # the file's image as read is kept for overlays, unmirrored
    assert torch.equal(by_path.file.image, read_image(path, bits_stored=12)[0])


def test_dicom_input_carries_its_identity(exported: Path, tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (120, 1))
    path = write_dicom(
        tmp_path / "view.dcm",
        pixels,
        modality="MG",
        StudyInstanceUID="1.2.826.0.1.3680043.10.1",
        SeriesInstanceUID="1.2.826.0.1.3680043.10.1.2",
        PatientID="NYU-0",
        AccessionNumber="A17",
        ImageLaterality="R",
        ViewPosition="CC",
    )
    model = LoadedModel.load(exported)
    prediction = infer(model, path, with_map=False)
    identity = prediction.dicom
    assert identity is not None
    assert identity.study_instance_uid == "1.2.826.0.1.3680043.10.1"
    assert identity.series_instance_uid == "1.2.826.0.1.3680043.10.1.2"
    assert identity.sop_instance_uid == pydicom.dcmread(path).SOPInstanceUID
    assert identity.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1.1"
    assert (identity.patient_id, identity.accession_number) == ("NYU-0", "A17")
    assert (identity.modality, identity.laterality, identity.view_position) == ("MG", "R", "CC")
    assert prediction.original_size == (120, 100) and prediction.map is None
    from_bytes = infer(model, path.read_bytes(), name="upload.dcm", with_map=False)
    assert from_bytes.dicom == identity and torch.equal(from_bytes.probs, prediction.probs)


def test_geometry_of_a_mirrored_letterboxed_file_by_hand(tmp_path: Path) -> None:
    # A 40 x 100 file whose bright half is on the right: alignment mirrors it; the letterbox to 64 x 64
    # scales columns by 64 / 100 and rows by 26 / 40 (25.6 rounds to 26) and pads 19 rows on top.
    pixels = np.zeros((40, 100), dtype=np.uint8)
    pixels[:, 60:] = 230
    Image.fromarray(pixels).save(tmp_path / "right.png")
    recipe = recipe_for([{"name": "phantom_mammo", "options": {"n": 2, "align_breast": True}}], (64, 64))
    geometry = model_for(recipe).prepare(tmp_path / "right.png").geometry
    assert geometry.mirrored and geometry.original_size == (40, 100) and geometry.size == (64, 64)
    assert (geometry.scale_x, geometry.scale_y, geometry.left, geometry.top) == (0.64, 0.65, 0, 19)
    # a model-frame box at x 6.4..19.2, y 25.5..38.5 is x 10..30, y 10..30 of the mirrored file,
    # so x 70..90 of the file as stored
    model_box = torch.tensor([[6.4, 25.5, 19.2, 38.5]])
    assert torch.allclose(geometry.boxes_to_original(model_box), torch.tensor([[70.0, 10.0, 90.0, 30.0]]))
    heat = torch.zeros(64, 64)
    heat[26:38, 7:19] = 1.0  # that box, in whole model pixels
    back = geometry.map_to_original(heat)
    assert back.shape == (40, 100)
    assert float(back[20, 80]) == 1.0 and float(back[20, 20]) == 0.0


def test_sources_that_read_differently_need_the_files_source_named(root: Path) -> None:
    phantom = {"name": "phantom_mammo", "options": {"n": 2, "align_breast": True}}
    recipe = recipe_for([nyu(root, cropped=True), phantom])
    with pytest.raises(ConfigError, match=r"read files differently.*name the source"):
        model_for(recipe)
    assert model_for(recipe, source="nyu_mammo").reading.read_options == {"bits_stored": 16}
    assert model_for(recipe, source="phantom_mammo").reading.read_options == {}
    with pytest.raises(ConfigError, match="no data source 'cbis_ddsm'"):
        model_for(recipe, source="cbis_ddsm")


def test_a_bad_file_stops_predict_before_anything_is_written(
    exported: Path, root: Path, tmp_path: Path
) -> None:
    good = root / "images_original" / "0_L-CC.png"
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:1000])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cut\.png"):
        predict_files(exported, [good, tmp_path / "cut.png"], out)
    assert not out.exists()


def test_the_stored_operating_points_decide_each_labels_call(
    exported: Path, root: Path, tmp_path: Path
) -> None:
    path = root / "images_original" / "0_R-CC.png"
    bare = LoadedModel.load(exported)
    assert bare.operating_points.fallback is not None  # exported without operating points: 0.5, said so
    plain = infer(bare, path, with_map=False)
    assert plain.thresholds == dict.fromkeys(LABELS, 0.5)
    assert plain.positive == {name: p >= 0.5 for name, p in plain.probabilities.items()}

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "config.json"):
        (run / name).write_bytes((exported / name).read_bytes())
    benign = plain.probabilities["benign"]
    chosen = {"benign": benign - 1e-4, "malignant": None}  # malignant had one class on val: no threshold
    points = OperatingPoints("youden", None, "val", 12, chosen)
    write_operating_points(run, points)
    model = LoadedModel.load(run)
    assert model.operating_points == points
    prediction = infer(model, path, with_map=False)
    assert prediction.thresholds == chosen and prediction.positive == {"benign": True, "malignant": None}
    written = predict_files(run, [path], tmp_path / "out")
    assert written == json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert written["operating_point"] == points.as_json()
    assert written["files"][0]["positive"] == {"benign": True, "malignant": None}
