"""A corpus of bad inputs, made here by code (no binary is committed), one test per case.

Each case writes one hostile or broken file (an image, a DICOM attribute, a CSV, a pickle) and names
the call that must refuse it. Every case must end as one clear line: a DataError (or, through the CLI,
a non-zero exit with one ``error:`` line and no traceback) that names the file and the problem. The
outcomes are sorted by :func:`outcome`: ``clean``, ``unclear`` (refused, but the line misses the file or
the problem, or is more than one line), ``traceback`` (any other exception) or ``silent`` (accepted).
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import write_dicom
from PIL import Image
from pydicom.data import get_testdata_file

from radsight.data.image_io import read_image, read_mask
from radsight.data.plain_pickle import load_plain_pickle
from radsight.data.sources.nih import NIHChestXray14
from radsight.data.sources.nyu_mammo import NYUMammo
from radsight.errors import DataError


@dataclass
class Attempt:
    """What to call on the written file, and what the one line must name: ``name`` (the file) and
    ``problem`` (a fragment of the reason). ``cli`` marks a command-line call: its result is a
    CliRunner result, not a return value."""

    call: Callable[[], Any]
    name: str
    problem: str
    cli: bool = False


@dataclass
class Place:
    """Where a case writes its files, and the trained model for the cases that predict."""

    folder: Path
    model: Callable[[], Path]


CASES: dict[str, Callable[[Place], Attempt]] = {}


def case(kind: str) -> Callable[[Callable[[Place], Attempt]], Callable[[Place], Attempt]]:
    def register(build: Callable[[Place], Attempt]) -> Callable[[Place], Attempt]:
        CASES[f"{kind}-{build.__name__}"] = build
        return build

    return register


def outcome(attempt: Attempt) -> tuple[str, str]:
    """Run one attempt and sort it: ``clean``, ``unclear``, ``traceback`` or ``silent``, with the line."""
    try:
        result = attempt.call()
    except DataError as error:
        line = str(error)
        named = attempt.name in line and attempt.problem in line and "\n" not in line
        return ("clean" if named else "unclear"), line
    except Exception as error:
        return "traceback", f"{type(error).__name__}: {error}"
    if not attempt.cli:
        return "silent", f"accepted, returned a {type(result).__name__}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback", f"{type(result.exception).__name__}: {result.exception}"
    if result.exit_code == 0:
        return "silent", result.output[-200:]
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    named = len(lines) == 1 and attempt.name in lines[0] and attempt.problem in lines[0]
    clean = named and "Traceback" not in result.output
    return ("clean" if clean else "unclear"), " | ".join(lines) or result.output[-200:]


def cli(*args: object) -> Any:
    from typer.testing import CliRunner

    from radsight.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# --- writers ---------------------------------------------------------------------------------------


def ramp(height: int = 48, width: int = 64, scale: float = 2.0, dtype: Any = np.uint8) -> np.ndarray:
    return (np.add.outer(np.arange(height), np.arange(width)) * scale).astype(dtype)


def png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit gray pixels, with a few bytes of data:
    how a decompression bomb starts (the pixels would be all zeros, which compress to almost nothing)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1) * 4)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def dicom(place: Place, name: str, pixels: np.ndarray | None = None, **attributes: Any) -> Path:
    return write_dicom(
        place.folder / name, ramp(32, 40, 50, np.uint16) if pixels is None else pixels, **attributes
    )


def dicom_with_text(place: Place, name: str, keyword: str, text: str, **attributes: Any) -> Path:
    """A DICOM whose numeric attribute ``keyword`` holds ``text`` (pydicom will not write that, so a
    number of the same length is written and its bytes replaced)."""
    text += " " * (len(text) % 2)
    placeholder = "9" * len(text)
    path = dicom(place, name, **{keyword: placeholder}, **attributes)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    element = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    data = path.read_bytes()
    start = data.index(element) + 8  # tag, VR and a 2-byte length
    assert data[start : start + len(text)] == placeholder.encode()
    path.write_bytes(data[:start] + text.encode() + data[start + len(text) :])
    return path


def image_attempt(path: Path, problem: str, **options: Any) -> Attempt:
    return Attempt(lambda: read_image(path, **options), path.name, problem)


def mask_attempt(path: Path, problem: str, size: tuple[int, int] | None = None) -> Attempt:
    return Attempt(lambda: read_mask(path, size), path.name, problem)


# --- images ----------------------------------------------------------------------------------------


@case("image")
def missing_file(place: Place) -> Attempt:
    return image_attempt(place.folder / "absent.png", "file not found")


@case("image")
def empty_file(place: Place) -> Attempt:
    (place.folder / "empty.png").write_bytes(b"")
    return image_attempt(place.folder / "empty.png", "not a readable image")


@case("image")
def text_named_png(place: Place) -> Attempt:
    (place.folder / "notes.png").write_text("this is not an image\n")
    return image_attempt(place.folder / "notes.png", "not a readable image")


@case("image")
def truncated_png(place: Place) -> Attempt:
    data = png(place.folder / "whole.png", ramp()).read_bytes()
    (place.folder / "cut.png").write_bytes(data[: len(data) // 2])
    return image_attempt(place.folder / "cut.png", "truncated")


@case("image")
def png_with_broken_data(place: Place) -> Attempt:
    data = bytearray(png(place.folder / "whole.png", ramp()).read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = b"\xff" * 16  # the compressed stream, its checksum left stale
    (place.folder / "broken.png").write_bytes(bytes(data))
    return image_attempt(place.folder / "broken.png", "corrupt")


@case("image")
def png_of_zero_width(place: Place) -> Attempt:
    return image_attempt(png_header_only(place.folder / "zero.png", 0, 64), "zero.png")


@case("image")
def one_pixel_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "dot.png", np.array([[128]], np.uint8)), "side below 8 pixels")


@case("image")
def one_by_4000_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "line.png", ramp(1, 4000, 0.05)), "4000x1 image has a side below")


@case("image")
def four_thousand_by_one_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "column.png", ramp(4000, 1, 0.05)), "1x4000 image has a side")


@case("image")
def constant_8_bit_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "flat8.png", np.full((64, 64), 90, np.uint8)), "constant")


@case("image")
def constant_16_bit_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "flat16.png", np.full((64, 64), 3000, np.uint16)), "constant")


@case("image")
def constant_jpeg(place: Place) -> Attempt:
    path = place.folder / "flat.jpg"
    Image.fromarray(np.full((64, 64), 40, np.uint8)).save(path, quality=95)
    return image_attempt(path, "constant")


@case("image")
def png_of_12000_squared(place: Place) -> Attempt:
    return image_attempt(png_header_only(place.folder / "bomb12k.png", 12000, 12000), "exceed the limit")


@case("image")
def png_of_30000_squared(place: Place) -> Attempt:
    return image_attempt(png_header_only(place.folder / "bomb30k.png", 30000, 30000), "pixels")


@case("image")
def png_below_a_lowered_limit(place: Place) -> Attempt:
    path = png(place.folder / "big.png", ramp(200, 300, 0.5))
    return image_attempt(path, "exceed the limit of 10,000", max_pixels=10_000)


@case("image")
def one_bit_png(place: Place) -> Attempt:
    return image_attempt(png(place.folder / "bits.png", np.eye(16, dtype=bool)), "1-bit image")


@case("image")
def float_tiff(place: Place) -> Attempt:
    path = place.folder / "float.tif"
    Image.fromarray(ramp(32, 32, 0.01, np.float32)).save(path)
    return image_attempt(path, "floating-point image")


@case("image")
def sixteen_bit_png_above_its_stated_depth(place: Place) -> Attempt:
    path = png(place.folder / "deep.png", ramp(32, 32, 100, np.uint16))
    return image_attempt(path, "exceeds the stated 10 bits", bits_stored=10)


@case("image")
def truncated_jpeg(place: Place) -> Attempt:
    path = place.folder / "whole.jpg"
    Image.fromarray(ramp()).save(path, quality=90)
    (place.folder / "cut.jpg").write_bytes(path.read_bytes()[:200])
    return image_attempt(place.folder / "cut.jpg", "truncated")


@case("image")
def jpeg_header_only(place: Place) -> Attempt:
    (place.folder / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return image_attempt(place.folder / "junk.jpg", "junk.jpg: ")


@case("image")
def image_bytes_without_a_name(place: Place) -> Attempt:
    return Attempt(lambda: read_image(b"\x89PNG\r\n\x1a\n broken"), "<bytes>", "not a readable image")


# --- masks -----------------------------------------------------------------------------------------


@case("mask")
def truncated_mask(place: Place) -> Attempt:
    data = png(place.folder / "whole_mask.png", ramp()).read_bytes()
    (place.folder / "cut_mask.png").write_bytes(data[: len(data) // 3])
    return mask_attempt(place.folder / "cut_mask.png", "truncated mask")


@case("mask")
def mask_bomb(place: Place) -> Attempt:
    return mask_attempt(png_header_only(place.folder / "bomb_mask.png", 12000, 12000), "exceed the limit")


@case("mask")
def mask_of_zero_height(place: Place) -> Attempt:
    return mask_attempt(png_header_only(place.folder / "flat_mask.png", 64, 0), "flat_mask.png")


@case("mask")
def mask_of_another_size(place: Place) -> Attempt:
    return mask_attempt(
        png(place.folder / "small_mask.png", ramp(10, 12)), "differs from its image", (20, 12)
    )


@case("mask")
def dicom_mask_with_unknown_vr(place: Place) -> Attempt:
    path = dicom(place, "mask_vr.dcm")
    path.write_bytes(path.read_bytes().replace(b"\x28\x00\x10\x00US", b"\x28\x00\x10\x00ZZ"))
    return mask_attempt(path, "Unknown Value Representation")


@case("mask")
def jpeg_dicom_mask_with_one_stored_bit(place: Place) -> Attempt:
    """Found by the fuzzer: GDCM aborts the process (an uncaught C++ exception) on this header, so the
    readers never hand pixel data to GDCM."""
    dataset = pydicom.dcmread(get_testdata_file("SC_jpeg_no_color_transform.dcm"))
    dataset.BitsStored = 1
    dataset.save_as(place.folder / "bits1.dcm")
    return mask_attempt(place.folder / "bits1.dcm", "expected one grayscale frame")


@case("dicom")
def jpeg_lossless_that_crashes_its_decoder(place: Place) -> Attempt:
    """GDCM, the JPEG Lossless decoder, aborts its process on stored bits below the allocated ones in
    this file; it runs in a child process, so the reader still answers with one line."""
    dataset = pydicom.dcmread(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    dataset.BitsStored = 3
    dataset.save_as(place.folder / "lossless_bits3.dcm")
    return image_attempt(place.folder / "lossless_bits3.dcm", "decoder crashed on it")


# --- DICOM attributes ------------------------------------------------------------------------------


@case("dicom")
def window_width_zero(place: Place) -> Attempt:
    path = dicom(place, "ww0.dcm", WindowCenter=100, WindowWidth=0)
    return image_attempt(path, "WindowWidth 0 is not a window")


@case("dicom")
def window_center_text(place: Place) -> Attempt:
    path = dicom_with_text(place, "wc.dcm", "WindowCenter", "abc", WindowWidth=100)
    return image_attempt(path, "WindowCenter 'abc' is not numeric")


@case("dicom")
def window_center_without_width(place: Place) -> Attempt:
    return image_attempt(dicom(place, "wc_only.dcm", WindowCenter=100), "without a WindowWidth")


@case("dicom")
def unknown_voi_function(place: Place) -> Attempt:
    path = dicom(place, "voi.dcm", WindowCenter=100, WindowWidth=50, VOILUTFunction="CUBIC")
    return image_attempt(path, "VOILUTFunction 'CUBIC'")


@case("dicom")
def voi_lut_without_data(place: Place) -> Attempt:
    item = pydicom.Dataset()
    item.LUTDescriptor = [4]
    return image_attempt(dicom(place, "voilut.dcm", VOILUTSequence=[item]), "VOILUTSequence item lacks")


@case("dicom")
def palette_color_without_lut(place: Place) -> Attempt:
    path = dicom(place, "palette.dcm", photometric="PALETTE COLOR")
    return image_attempt(path, "photometric interpretation PALETTE COLOR")


@case("dicom")
def windowed_rgb(place: Place) -> Attempt:
    source = Path(get_testdata_file("SC_rgb.dcm"))  # type: ignore[arg-type]
    dataset = pydicom.dcmread(source)
    dataset.WindowCenter, dataset.WindowWidth = 128, 100
    dataset.save_as(place.folder / "rgb_window.dcm")
    return image_attempt(place.folder / "rgb_window.dcm", "photometric interpretation RGB")


@case("dicom")
def pixel_spacing_text(place: Place) -> Attempt:
    path = dicom_with_text(place, "spacing.dcm", "PixelSpacing", "abc\\def")
    return image_attempt(path, "PixelSpacing 'abc\\def' is not numeric")


@case("dicom")
def pixel_spacing_one_value(place: Place) -> Attempt:
    return image_attempt(dicom(place, "spacing1.dcm", PixelSpacing="0.1"), "PixelSpacing has 1 value")


@case("dicom")
def rescale_slope_text(place: Place) -> Attempt:
    path = dicom_with_text(place, "slope.dcm", "RescaleSlope", "x", RescaleIntercept=0)
    return image_attempt(path, "RescaleSlope 'x' is not numeric")


@case("dicom")
def rescale_slope_zero(place: Place) -> Attempt:
    return image_attempt(dicom(place, "slope0.dcm", RescaleSlope=0, RescaleIntercept=0), "RescaleSlope 0")


@case("dicom")
def rescale_to_infinity(place: Place) -> Attempt:
    return image_attempt(dicom(place, "inf.dcm", RescaleSlope="1e306", RescaleIntercept=0), "infinite")


@case("dicom")
def rows_zero(place: Place) -> Attempt:
    path = dicom(place, "rows0.dcm")
    dataset = pydicom.dcmread(path)
    dataset.Rows = 0
    dataset.save_as(path)
    return image_attempt(path, "image has no pixels")


@case("dicom")
def rows_missing(place: Place) -> Attempt:
    path = dicom(place, "norows.dcm")
    dataset = pydicom.dcmread(path)
    del dataset.Rows
    dataset.save_as(path)
    return image_attempt(path, "no Rows")


@case("dicom")
def declared_65535_squared(place: Place) -> Attempt:
    path = dicom(place, "huge.dcm")
    dataset = pydicom.dcmread(path)
    dataset.Rows = dataset.Columns = 65535
    dataset.save_as(path)
    return image_attempt(path, "exceed the limit")


@case("dicom")
def frames_beyond_the_limit(place: Place) -> Attempt:
    return image_attempt(dicom(place, "frames.dcm", NumberOfFrames=2**31), "exceed the limit")


@case("dicom")
def frames_text(place: Place) -> Attempt:
    return image_attempt(dicom_with_text(place, "frames_x.dcm", "NumberOfFrames", "x"), "NumberOfFrames")


@case("dicom")
def three_frames(place: Place) -> Attempt:
    frames = np.concatenate([ramp(32, 40, 50, np.uint16)] * 3)
    path = dicom(place, "multi.dcm", frames)
    dataset = pydicom.dcmread(path)
    dataset.Rows, dataset.NumberOfFrames = 32, 3
    dataset.save_as(path)
    return image_attempt(path, "expected one grayscale frame")


@case("dicom")
def pixel_data_too_short(place: Place) -> Attempt:
    path = dicom(place, "short.dcm")
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    dataset.save_as(path)
    return image_attempt(path, "cannot decode DICOM pixel data")


@case("dicom")
def bits_allocated_odd(place: Place) -> Attempt:
    path = dicom(place, "bits.dcm")
    dataset = pydicom.dcmread(path)
    dataset.BitsAllocated = 13
    dataset.save_as(path)
    return image_attempt(path, "cannot decode DICOM pixel data")


@case("dicom")
def unknown_value_representation(place: Place) -> Attempt:
    path = dicom(place, "vr.dcm", PixelSpacing=[0.1, 0.1])
    path.write_bytes(path.read_bytes().replace(b"\x28\x00\x30\x00DS", b"\x28\x00\x30\x00ZZ"))
    return image_attempt(path, "Unknown Value Representation")


@case("dicom")
def deflated_stream_broken(place: Place) -> Attempt:
    data = bytearray(Path(get_testdata_file("image_dfl.dcm")).read_bytes())  # type: ignore[arg-type]
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]  # after the group length (0002,0000)
    data[meta_end : meta_end + 16] = b"\xff" * 16  # the start of the deflated stream
    (place.folder / "deflated.dcm").write_bytes(bytes(data))
    return image_attempt(place.folder / "deflated.dcm", "corrupt or truncated DICOM")


@case("dicom")
def constant_dicom(place: Place) -> Attempt:
    return image_attempt(dicom(place, "flat.dcm", np.full((32, 40), 700, np.uint16)), "constant")


@case("dicom")
def one_pixel_dicom(place: Place) -> Attempt:
    return image_attempt(dicom(place, "dot.dcm", np.array([[700]], np.uint16)), "side below 8 pixels")


@case("dicom")
def no_pixel_data(place: Place) -> Attempt:
    return image_attempt(write_dicom(place.folder / "nopixels.dcm", None), "no pixel data")


@case("dicom")
def truncated_dicom(place: Place) -> Attempt:
    data = dicom(place, "whole.dcm").read_bytes()
    (place.folder / "cut.dcm").write_bytes(data[: len(data) // 2])
    return image_attempt(place.folder / "cut.dcm", "cannot decode DICOM pixel data")


@case("dicom")
def garbage_named_dcm(place: Place) -> Attempt:
    (place.folder / "junk.dcm").write_bytes(b"\x00" * 64 + b"not a dicom at all")
    return image_attempt(place.folder / "junk.dcm", "junk.dcm: ")


# --- CSV indexes -----------------------------------------------------------------------------------

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def nih_root(place: Place, size: str = "2500,2048", spacing: str = "0.143,0.143") -> Path:
    root = place.folder / "nih"
    png(root / "images" / "00000001_000.png", ramp(64, 64))
    row = f"00000001_000.png,No Finding,0,1,58,M,PA,{size},{spacing}"
    (root / "Data_Entry_2017_v2020.csv").write_text(f"{NIH_HEADER}\n{row}\n")
    return root


def nih_attempt(
    root: Path, problem: str, boxes: str = "none", name: str = "Data_Entry_2017_v2020.csv"
) -> Attempt:
    return Attempt(lambda: NIHChestXray14(root, boxes=boxes), name, problem)  # type: ignore[arg-type]


@case("csv")
def nih_size_text(place: Place) -> Attempt:
    return nih_attempt(nih_root(place, size="wide,2048"), "holds 'wide', not a number")


@case("csv")
def nih_size_blank(place: Place) -> Attempt:
    return nih_attempt(nih_root(place, size=",2048"), "row 1: original size")


@case("csv")
def nih_spacing_zero(place: Place) -> Attempt:
    return nih_attempt(nih_root(place, spacing="0,0.143"), "not two positive numbers")


@case("csv")
def nih_box_coordinate_text(place: Place) -> Attempt:
    root = nih_root(place)
    (root / "nih_bboxes_BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,x,y,w,h\n00000001_000.png,Mass,left,10,20,20\n"
    )
    return nih_attempt(root, "holds 'left', not a number", boxes="nih", name="nih_bboxes_BBox_List_2017.csv")


@case("csv")
def nih_column_missing(place: Place) -> Attempt:
    root = nih_root(place)
    (root / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels\n00000001_000.png,Mass\n")
    return nih_attempt(root, "missing required column")


@case("csv")
def nih_csv_binary(place: Place) -> Attempt:
    root = nih_root(place)
    (root / "Data_Entry_2017_v2020.csv").write_bytes(b"\x00\x01\x02\xff\xfe" * 40)
    return nih_attempt(root, "cannot decode it")


@case("csv")
def manifest_unclosed_quote(place: Place) -> Attempt:
    from radsight.data.sources.manifest import ManifestDataset

    png(place.folder / "a.png", ramp())
    (place.folder / "manifest.csv").write_text('path,patient_id\n"a.png,p1\n')
    return Attempt(lambda: ManifestDataset(place.folder), "manifest.csv", "cannot parse CSV")


@case("csv")
def manifest_label_maybe(place: Place) -> Attempt:
    from radsight.data.sources.manifest import ManifestDataset

    png(place.folder / "a.png", ramp())
    (place.folder / "manifest.csv").write_text("path,patient_id,nodule\na.png,p1,maybe\n")
    return Attempt(lambda: ManifestDataset(place.folder, label_columns=["nodule"]), "manifest.csv", "maybe")


# --- pickles ---------------------------------------------------------------------------------------


def pickle_attempt(path: Path, problem: str) -> Attempt:
    return Attempt(lambda: load_plain_pickle(path), path.name, problem)


@case("pickle")
def bytes_bomb(place: Place) -> Attempt:
    """tuple(bytes(2**27)) in 44 bytes: 134 million items once loaded."""
    data = b"\x80\x04cbuiltins\ntuple\ncbuiltins\nbytes\nJ\x00\x00\x00\x08\x85R\x85R."
    assert len(data) == 44
    (place.folder / "bomb.pkl").write_bytes(data)
    return pickle_attempt(place.folder / "bomb.pkl", "refused pickle call builtins.bytes(134217728)")


@case("pickle")
def shared_reference_bomb(place: Place) -> Attempt:
    """Forty levels of a pair of the same tuple: a few hundred bytes, 2**40 entries to walk."""
    value: Any = ()
    for _ in range(40):
        value = (value, value)
    (place.folder / "pairs.pkl").write_bytes(pickle.dumps(value))
    return pickle_attempt(place.folder / "pairs.pkl", "holds more than 5,000,000 items")


@case("pickle")
def deep_nesting(place: Place) -> Attempt:
    """500 lists, each inside the next (written by opcode: the pickler itself would recurse too deep)."""
    (place.folder / "deep.pkl").write_bytes(b"\x80\x02" + b"]" * 500 + b"a" * 499 + b".")
    return pickle_attempt(place.folder / "deep.pkl", "deeper than 100 levels")


@case("pickle")
def code_running_global(place: Place) -> Attempt:
    (place.folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    return pickle_attempt(place.folder / "evil.pkl", "refused pickle global os.system")


@case("pickle")
def truncated_pickle(place: Place) -> Attempt:
    (place.folder / "cut.pkl").write_bytes(pickle.dumps([{"a": list(range(50))}])[:40])
    return pickle_attempt(place.folder / "cut.pkl", "corrupt pickle")


@case("pickle")
def empty_pickle(place: Place) -> Attempt:
    (place.folder / "empty.pkl").write_bytes(b"")
    return pickle_attempt(place.folder / "empty.pkl", "corrupt pickle")


@case("pickle")
def text_as_pickle(place: Place) -> Attempt:
    (place.folder / "text.pkl").write_text("exam,view\n0,L-CC\n")
    return pickle_attempt(place.folder / "text.pkl", "corrupt pickle")


def nyu_root(place: Place, exams: Any) -> Path:
    root = place.folder / "nyu"
    (root / "images_cropped").mkdir(parents=True)
    (root / "exam_list_before_cropping.pkl").write_bytes(pickle.dumps(exams))
    return root


def nyu_exam(**changes: Any) -> dict[str, Any]:
    flags = {f"{side}_{kind}": 0 for side in ("left", "right") for kind in ("benign", "malignant")}
    exam: dict[str, Any] = {"L-CC": ["0_L-CC"], "R-CC": ["0_R-CC"], "cancer_label": flags}
    exam.update(changes)
    return exam


def nyu_attempt(root: Path, problem: str) -> Attempt:
    return Attempt(lambda: NYUMammo(root), "exam_list_before_cropping.pkl", problem)


@case("pickle")
def nyu_flag_yes(place: Place) -> Attempt:
    flags = {**nyu_exam()["cancer_label"], "left_benign": "yes"}
    return nyu_attempt(nyu_root(place, [nyu_exam(cancer_label=flags)]), "left_benign is 'yes', not 0 or 1")


@case("pickle")
def nyu_view_integer(place: Place) -> Attempt:
    return nyu_attempt(nyu_root(place, [nyu_exam(**{"L-CC": 3})]), "L-CC is 3, not a list of image names")


@case("pickle")
def nyu_exam_not_a_dict(place: Place) -> Attempt:
    return nyu_attempt(nyu_root(place, ["exam 0"]), "exam 0 has no cancer_label dict")


@case("pickle")
def nyu_list_is_a_dict(place: Place) -> Attempt:
    return nyu_attempt(nyu_root(place, {"exams": []}), "expected a list of exams, found dict")


@case("pickle")
def nyu_flag_missing(place: Place) -> Attempt:
    return nyu_attempt(nyu_root(place, [nyu_exam(cancer_label={"left_benign": 0})]), "cancer_label lacks")


# --- through the command line ----------------------------------------------------------------------


def manifest_inspect(place: Place, images: dict[str, bytes | None], name: str, problem: str) -> Attempt:
    """``data inspect`` on a manifest listing ``images`` (None: listed but absent)."""
    rows = []
    for image, data in images.items():
        if data is not None:
            (place.folder / image).parent.mkdir(parents=True, exist_ok=True)
            (place.folder / image).write_bytes(data)
        rows.append(f"{image},p{len(rows)}")
    (place.folder / "list.csv").write_text("path,patient_id\n" + "\n".join(rows) + "\n")
    csv = f"csv={place.folder / 'list.csv'}"
    command = ("data", "inspect", "--source", "manifest", "--option", csv, "--out", place.folder / "o")
    return Attempt(lambda: cli(*command), name, problem, cli=True)


@case("cli")
def inspect_all_images_unreadable(place: Place) -> Attempt:
    flat = png(place.folder / "made" / "flat.png", np.full((32, 32), 9, np.uint8)).read_bytes()
    images = {"a.png": b"\x89PNG broken", "b.png": flat}
    return manifest_inspect(place, images, "none of its 2 images can be read", "a.png")


@case("cli")
def inspect_all_images_missing(place: Place) -> Attempt:
    images = {"a.png": None, "b.png": None}
    return manifest_inspect(place, images, "a.png: file not found", "none of its 2 images can be read")


@case("cli")
def inspect_markup_in_a_file_name(place: Place) -> Attempt:
    return manifest_inspect(place, {"[bold]scan.png": b"junk"}, "[bold]scan.png", "not a readable image")


@case("cli")
def inspect_closing_tag_in_a_path(place: Place) -> Attempt:
    return manifest_inspect(place, {"a[/]b.png": b"junk"}, "a[/]b.png", "not a readable image")


@case("cli")
def inspect_nih_size_text(place: Place) -> Attempt:
    root = nih_root(place, size="wide,2048")
    command = ("data", "inspect", "--source", "nih", "--root", root, "--option", "boxes=none")
    return Attempt(
        lambda: cli(*command, "--out", place.folder / "o"), "Data_Entry_2017_v2020.csv", "'wide'", cli=True
    )


@case("cli")
def inspect_nyu_view_integer(place: Place) -> Attempt:
    root = nyu_root(place, [nyu_exam(**{"R-CC": 7})])
    command = ("data", "inspect", "--source", "nyu_mammo", "--root", root, "--out", place.folder / "o")
    return Attempt(lambda: cli(*command), "exam_list_before_cropping.pkl", "R-CC is 7", cli=True)


def predict_attempt(place: Place, path: Path, problem: str) -> Attempt:
    out = place.folder / "predicted"
    return Attempt(
        lambda: cli("predict", "--model", place.model(), path, "--out", out), path.name, problem, cli=True
    )


@case("cli")
def predict_one_pixel(place: Place) -> Attempt:
    return predict_attempt(place, png(place.folder / "dot.png", np.array([[1]], np.uint8)), "side below")


@case("cli")
def predict_constant_16_bit(place: Place) -> Attempt:
    path = png(place.folder / "flat16.png", np.full((64, 64), 1000, np.uint16))
    return predict_attempt(place, path, "constant")


@case("cli")
def predict_bomb(place: Place) -> Attempt:
    return predict_attempt(
        place, png_header_only(place.folder / "bomb.png", 12000, 12000), "exceed the limit"
    )


@case("cli")
def predict_window_width_zero(place: Place) -> Attempt:
    return predict_attempt(place, dicom(place, "ww0.dcm", WindowCenter=9, WindowWidth=0), "WindowWidth 0")


@case("cli")
def predict_missing_file_with_markup(place: Place) -> Attempt:
    return predict_attempt(place, place.folder / "a[/]b.png", "file not found")


@case("cli")
def predict_corrupt_file_with_markup(place: Place) -> Attempt:
    (place.folder / "[bold]scan.png").write_bytes(b"\x89PNG\r\n\x1a\n and nothing else")
    return predict_attempt(place, place.folder / "[bold]scan.png", "not a readable image")


@pytest.fixture
def place(tmp_path: Path, request: pytest.FixtureRequest) -> Place:
    return Place(tmp_path, lambda: request.getfixturevalue("trained_model"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, place: Place) -> None:
    kind, line = outcome(CASES[name](place))
    assert kind == "clean", f"{name}: {kind}: {line}"
