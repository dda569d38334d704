"""Image reading: real DICOM across transfer syntaxes, bit depths, and clear errors for bad files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dicom
from PIL import Image
from pydicom.data import get_testdata_file

from radsight.data.image_io import read_image, read_mask
from radsight.errors import DataError


def rg1(name: str) -> Path:
    path = get_testdata_file(f"RG1_{name}.dcm")
    assert path is not None, "pydicom-data's RG1 chest radiograph is missing"
    return Path(path)


@pytest.fixture(scope="module")
def chest() -> dict[str, torch.Tensor]:
    return {name: read_image(rg1(name))[0] for name in ("UNCR", "J2KR", "UNCI", "J2KI")}


def test_real_chest_radiograph_decodes_identically_across_transfer_syntaxes(chest):
    uncompressed, lossless = chest["UNCR"], chest["J2KR"]
    assert uncompressed.shape == (1, 1955, 1841)
    assert torch.equal(uncompressed, lossless)
    assert torch.equal(chest["UNCI"], chest["J2KI"])
    # the "I" pair was encoded lossily once, so it differs a little from the lossless original
    difference = (chest["UNCI"] - uncompressed).abs()
    assert 0 < float(difference.mean()) < 0.01


def test_monochrome1_radiograph_comes_out_with_dark_lungs(chest):
    image = chest["UNCR"][0]
    height, width = image.shape
    rows = slice(int(0.3 * height), int(0.6 * height))
    right_lung = image[rows, int(0.2 * width) : int(0.35 * width)].mean()
    left_lung = image[rows, int(0.65 * width) : int(0.8 * width)].mean()
    mediastinum = image[rows, int(0.45 * width) : int(0.55 * width)].mean()
    assert right_lung < mediastinum - 0.2 and left_lung < mediastinum - 0.2
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_metadata_of_real_dicom():
    _, info = read_image(rg1("UNCR"))
    assert info.original_size == (1955, 1841)
    assert info.bits_stored == 15
    assert info.photometric == "MONOCHROME1"
    assert info.pixel_spacing is None  # the file stores 0 x 0, which means unknown


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
    normal = read_image(write_dicom(tmp_path / "m2.dcm", ramp))[0]
    inverted = read_image(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))[0]
    assert torch.allclose(normal, 1 - inverted)
    assert float(normal[0, 0, 0]) == 0.0 and float(normal[0, 0, -1]) == 1.0


def test_rescale_and_window_are_applied(tmp_path):
    ramp = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (8, 1))
    path = write_dicom(
        tmp_path / "w.dcm", ramp, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=900, WindowWidth=200
    )
    image = read_image(path)[0][0, 0]
    stored = np.arange(0, 1000, 10) * 2 - 100
    # below the window is black, above it white, in between it rises
    assert float(image[stored < 800].max()) == 0.0
    assert float(image[stored > 1000].min()) == 1.0
    inside = image[(stored > 810) & (stored < 990)].numpy()
    assert np.all(np.diff(inside) > 0)


def test_dicom_without_pixel_data_is_named(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", None)
    with pytest.raises(DataError, match=r"empty\.dcm: DICOM has no pixel data"):
        read_image(path)


def test_truncated_dicom_is_named(tmp_path):
    data = rg1("UNCR").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.dcm: .*(truncated|decode)"):
        read_image(path)


def test_twelve_bit_values_in_sixteen_bit_png_fill_the_range(tmp_path):
    values = np.linspace(0, 4095, 64 * 32).reshape(64, 32).astype(np.uint16)
    path = tmp_path / "mammo.png"
    Image.fromarray(values).save(path)
    image, info = read_image(path)
    assert info.bits_stored == 12
    assert float(image.max()) == pytest.approx(1.0) and float(image.min()) == 0.0
    full, info16 = read_image(path, bits_stored=16)
    assert info16.bits_stored == 16 and float(full.max()) == pytest.approx(4095 / 65535)


def test_real_nyu_mammogram_is_twelve_bit(data_root):
    image, info = read_image(data_root / "mammo-nyu" / "images_original" / "0_R-CC.png")
    assert info.bits_stored == 12
    assert image.shape[0] == 1 and float(image.max()) > 0.9


def test_rgb_jpeg_and_gray_png_read_as_one_channel(tmp_path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., :] = np.linspace(100, 200, 30, dtype=np.uint8)[None, :, None]  # a smooth horizontal ramp
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.png")
    jpeg, _ = read_image(tmp_path / "a.jpg")
    png, info = read_image(tmp_path / "b.png")
    assert jpeg.shape == png.shape == (1, 20, 30)
    assert info.bits_stored == 8
    assert float(png.mean()) == pytest.approx(rgb[..., 0].mean() / 255)
    assert float((jpeg - png).abs().max()) < 0.02


def test_truncated_png_and_corrupt_jpeg_are_named(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "ok.png"
    )
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"cut\.png: corrupt or truncated image"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match=r"junk\.jpg: "):
        read_image(tmp_path / "junk.jpg")


def test_one_bit_image_is_refused(tmp_path):
    Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / "bits.png")
    with pytest.raises(DataError, match="1-bit image"):
        read_image(tmp_path / "bits.png")


def test_mask_of_wrong_size_is_refused(tmp_path):
    Image.fromarray(np.ones((10, 12), dtype=np.uint8) * 255).save(tmp_path / "mask.png")
    assert read_mask(tmp_path / "mask.png", (10, 12)).all()
    with pytest.raises(DataError, match=r"mask\.png: mask size 12x10 differs from its image 20x10"):
        read_mask(tmp_path / "mask.png", (10, 20))


def test_dicom_mask_reads_nonzero_pixels_as_inside(tmp_path):
    pixels = np.zeros((12, 10), dtype=np.uint16)
    pixels[3:7, 2:5] = 255
    path = write_dicom(tmp_path / "roi.dcm", pixels, modality="MG", bits_stored=16)
    mask = read_mask(path, (12, 10))
    assert mask.dtype == torch.bool and torch.equal(mask, torch.from_numpy(pixels > 0))
    with pytest.raises(DataError, match="mask size 10x12 differs from its image 12x12"):
        read_mask(path, (12, 12))


def dcmtk_rendering(path: Path, window: list[str], tmp_path: Path) -> np.ndarray:
    """dcmtk's own rendering of ``path`` (its JPEG and JPEG-LS decoders, then dcm2pnm with ``window``)
    as 16-bit PNG, scaled to [0, 1]: the reference the standard display pipeline is checked against."""
    import pydicom

    for tool in ("dcm2pnm", "dcmdjpeg", "dcmdjpls"):
        assert shutil.which(tool), f"{tool} not found: install Debian's dcmtk (.ci/run does)"
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    decoder = {"1.2.840.10008.1.2.4.7": "dcmdjpeg", "1.2.840.10008.1.2.4.8": "dcmdjpls"}.get(syntax[:21])
    if decoder:
        plain = tmp_path / f"{path.stem}.plain.dcm"
        subprocess.run([decoder, str(path), str(plain)], check=True, capture_output=True)
        path = plain
    png = tmp_path / f"{path.stem}.png"
    subprocess.run(["dcm2pnm", "+on2", *window, str(path), str(png)], check=True, capture_output=True)
    return np.asarray(Image.open(png)).astype(np.float64) / 65535.0


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("RG1_UNCR.dcm", ["+Wi", "1"]),  # real 15-bit MONOCHROME1 chest film, windowed
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", ["+Wi", "1"]),  # JPEG Lossless, windowed
        ("MR_small_jpeg_ls_lossless.dcm", ["+Wi", "1"]),  # JPEG-LS lossless, windowed
        ("JPEG-LL.dcm", ["+Wm"]),  # JPEG Lossless without a window: its own range
        ("JPEGLSNearLossless_16.dcm", ["+Wm"]),  # JPEG-LS near-lossless, 16 bits
        ("vlut_04.dcm", ["+Wl", "1"]),  # a VOI LUT instead of a window
    ],
)
def test_standard_rendering_equals_dcmtk(name: str, window: list[str], tmp_path: Path) -> None:
    path = Path(get_testdata_file(name))
    ours = read_image(path)[0][0].numpy()
    reference = dcmtk_rendering(path, window, tmp_path)
    assert ours.shape == reference.shape
    assert float(np.abs(ours - reference).max()) < 1e-3


def test_jpeg_ls_lossless_decodes_to_the_uncompressed_original() -> None:
    lossless = read_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))[0]
    assert torch.equal(lossless, read_image(get_testdata_file("MR_small.dcm"))[0])


def test_stretch_is_a_contrast_change_of_the_standard_rendering(chest):
    standard = chest["UNCR"][0].double()
    stretched = read_image(rg1("UNCR"), rendering="stretch")[0][0].double()
    # the film's window (15000 +- 15000) is wider than its values, so the stretch is linear in it
    slope, intercept = np.polyfit(standard.flatten().numpy(), stretched.flatten().numpy(), 1)
    assert slope == pytest.approx(1.172, abs=1e-3) and intercept == pytest.approx(-0.137, abs=1e-3)
    assert float(stretched.min()) == 0.0 and float(stretched.max()) == 1.0
    assert float(standard.min()) > 0.0  # the standard rendering keeps the window's own black


def test_window_outside_the_values_clips_instead_of_stretching(tmp_path):
    ramp = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (8, 1))
    path = write_dicom(tmp_path / "w.dcm", ramp, WindowCenter=2000, WindowWidth=1000)
    with pytest.raises(DataError, match=r"w\.dcm: image is constant"):  # every value is below the window
        read_image(path)
    assert float(read_image(path, allow_degenerate=True)[0].max()) == 0.0  # black, not stretched
    with pytest.raises(DataError, match=r"w\.dcm: image is constant"):
        read_image(path, rendering="stretch")


def test_real_dicom_identity_is_kept():
    identity = read_image(rg1("J2KR"))[1].dicom
    assert identity is not None
    assert identity.study_instance_uid == "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
    assert identity.series_instance_uid == "1.3.6.1.4.1.5962.1.3.9.1.20040826185059.5457"
    assert identity.sop_instance_uid == "1.3.6.1.4.1.5962.1.1.9.1.2.20040826185059.5457"
    assert (identity.patient_name, identity.patient_id, identity.patient_sex) == (
        "CompressedSamples^RG1",
        "9RG1",
        "F",
    )
    assert (identity.study_date, identity.study_id, identity.view_position) == ("20040826", "9RG1", "PA")


def test_multi_frame_dicom_is_named():
    with pytest.raises(DataError, match=r"emri_small_jpeg_ls_lossless\.dcm: expected one grayscale frame"):
        read_image(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))


def test_sigmoid_window_equals_dcmtk(tmp_path: Path) -> None:
    import pydicom

    dataset = pydicom.dcmread(rg1("UNCR"))
    dataset.VOILUTFunction = "SIGMOID"
    dataset.WindowCenter, dataset.WindowWidth = 9000, 6000
    path = tmp_path / "sigmoid.dcm"
    dataset.save_as(path)
    ours = read_image(path)[0][0].numpy()
    assert float(np.abs(ours - dcmtk_rendering(path, ["+Wi", "1"], tmp_path)).max()) < 1e-3


def test_degenerate_images_are_read_when_allowed(tmp_path):
    Image.fromarray(np.full((1, 4000), 90, dtype=np.uint8)).save(tmp_path / "line.png")
    with pytest.raises(DataError, match=r"line\.png: 4000x1 image has a side below 8 pixels"):
        read_image(tmp_path / "line.png")
    image, info = read_image(tmp_path / "line.png", allow_degenerate=True)
    assert image.shape == (1, 1, 4000) and info.original_size == (1, 4000)
    assert torch.all(image == 90 / 255)


def test_the_pixel_limit_is_checked_from_the_header_and_can_be_raised(tmp_path):
    values = np.add.outer(np.arange(100), np.arange(120)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "film.png")
    with pytest.raises(DataError, match=r"film\.png: 120x100x1 pixels \(12,000\) exceed the limit of 11,999"):
        read_image(tmp_path / "film.png", max_pixels=11_999)
    with pytest.raises(DataError, match="exceed the limit of 11,999"):
        read_mask(tmp_path / "film.png", max_pixels=11_999)
    assert read_image(tmp_path / "film.png", max_pixels=12_000)[0].shape == (1, 100, 120)


def test_source_options_choose_how_files_are_read(tmp_path):
    from radsight.config import SourceSpec
    from radsight.data.assemble import SourceReading, build_source

    Image.fromarray(np.full((40, 50), 90, dtype=np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "list.csv").write_text("path,patient_id\nflat.png,p1\n")
    options = {"csv": str(tmp_path / "list.csv")}
    with pytest.raises(DataError, match=r"flat\.png: image is constant"):
        build_source(SourceSpec(name="manifest", options=options))[0]
    allowed = SourceSpec(name="manifest", options={**options, "allow_degenerate": True, "max_pixels": 2000})
    assert SourceReading.of(allowed).read_options == {"max_pixels": 2000, "allow_degenerate": True}
    assert float(build_source(allowed)[0].image.mean()) == pytest.approx(90 / 255)
    smaller = SourceSpec(name="manifest", options={**options, "allow_degenerate": True, "max_pixels": 1999})
    with pytest.raises(DataError, match="exceed the limit of 1,999"):
        build_source(smaller)[0]
