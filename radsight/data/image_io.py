"""Read any radiograph file into one float tensor in [0, 1], with clear errors for bad files.

DICOM goes through pydicom (pylibjpeg decodes JPEG 2000; python-gdcm and pyjpegls, both permissively
licensed, decode JPEG Lossless and JPEG-LS) and is rendered as the standard display pipeline renders it
(DICOM PS3.3 C.11.2, as dcmtk's ``dcm2pnm`` does): modality rescale, then the VOI LUT or the first window
mapped to [0, 1] and clipped outside it, then MONOCHROME1 inversion, so that air is always dark. A file
without a VOI is stretched to its own range; ``rendering="stretch"`` stretches a windowed file too.
PNG and JPEG go through Pillow: 8-bit, 16-bit (including 12-bit values stored in 16 bits) and RGB, which
is reduced to gray.
A file is read from its path, or from its bytes (an upload, a PACS transfer) with a name for errors.

Every file is untrusted: the header is checked before any pixel is decoded (a pixel limit against
decompression bombs, grayscale only, numeric window, rescale and spacing values), images too small or
without contrast to be a radiograph are refused unless allowed, and whatever a decoder raises on a
corrupt file leaves ``read_image``, ``read_mask`` and ``read_image_size`` as a DataError naming it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from radsight.errors import DataError

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
# Stored bit depths that 16-bit containers commonly hold; the smallest that covers the data is used.
_CONTAINER_DEPTHS = (10, 12, 14, 16)
Rendering = Literal["standard", "stretch"]
RENDERINGS: tuple[Rendering, ...] = ("standard", "stretch")
MAX_PIXELS = 50_000_000
"""Default bound on a file's pixels (rows x columns x frames), checked from its header before decoding:
the largest mammography detectors give about 30 megapixels, a decompression bomb declares billions."""
MIN_SIDE = 8
"""Images with a shorter side are refused (unless degenerate images are allowed): no radiograph is a
line or a dot, and a model would still answer on one."""
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
ISOLATED_DECODERS = ("gdcm",)
"""Decoders run in a child process, after every other installed one (see _decoded)."""
_ALLOW_HINT = "the source option allow_degenerate: true reads it"


@dataclass(frozen=True)
class DicomIdentity:
    """Which study, series and instance a DICOM file is, so results can be filed back with it, and what
    it shows (modality, body part), so a model can tell images unlike its training ones."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    patient_id: str | None
    accession_number: str | None
    modality: str | None
    laterality: str | None
    view_position: str | None
    body_part_examined: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_id: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    referring_physician_name: str | None = None
    frame_of_reference_uid: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """Pixel-space facts about a file, kept in the Sample's meta; ``dicom`` is None for PNG/JPEG."""

    original_size: tuple[int, int]
    bits_stored: int
    pixel_spacing: tuple[float, float] | None = None
    photometric: str = "MONOCHROME2"
    dicom: DicomIdentity | None = None


def read_image(
    file: str | Path | bytes,
    bits_stored: int | None = None,
    *,
    name: str | None = None,
    rendering: Rendering = "standard",
    max_pixels: int = MAX_PIXELS,
    allow_degenerate: bool = False,
) -> tuple[Tensor, ImageInfo]:
    """Return a 1 x H x W float32 tensor in [0, 1] (dark = air) and the file's pixel-space facts.

    ``file`` is a path or the file's bytes; ``name`` names bytes in errors (its suffix ``.dcm`` marks
    DICOM without a preamble). ``bits_stored`` overrides the bit depth inferred for 16-bit PNGs (e.g.
    12 for mammograms whose brightest pixel is below 4095 in a particular image). ``rendering`` is how a
    DICOM's VOI becomes [0, 1]: "standard" maps the window itself, "stretch" maps the windowed image's
    own min-max (radsight's reading before the standard one became the default). A file of more than
    ``max_pixels`` is refused from its header; ``allow_degenerate`` reads images with a side below
    ``MIN_SIDE`` or without contrast, which are otherwise refused.
    """
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, not {rendering!r}")
    in_memory = isinstance(file, bytes | bytearray | memoryview)
    label: str | Path = (name or "<bytes>") if in_memory else Path(file)
    bounds = _Bounds(max_pixels, 1 if allow_degenerate else MIN_SIDE)
    with _only_data_errors(label, "image"):
        if in_memory:
            opened: Path | BytesIO = BytesIO(bytes(file))
            dicom = _is_dicom(Path(label), opened.getvalue()[:132])
        else:
            opened = Path(file)
            if not opened.is_file():
                raise DataError(label, "file not found")
            dicom = _is_dicom(opened)
        if dicom:
            with _only_data_errors(label, "DICOM"):
                array, info = _read_dicom(opened, label, bounds, rendering)
        else:
            array, info = _read_pillow(opened, label, bits_stored, bounds)
        if not np.isfinite(array).all():
            raise DataError(label, "image holds NaN or infinite pixel values")
        if not allow_degenerate and float(array.max()) <= float(array.min()):
            raise DataError(label, f"image is constant: no contrast to read ({_ALLOW_HINT})")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None], info


@dataclass(frozen=True)
class _Bounds:
    """The sizes a file's header may declare: at most ``max_pixels``, at least ``min_side`` a side."""

    max_pixels: int
    min_side: int

    def check(self, path: str | Path, height: int, width: int, planes: int = 1) -> None:
        """Refuse, before decoding, a header with an empty side, a side below ``min_side`` or more
        than ``max_pixels`` pixels over its ``planes`` (frames x samples)."""
        if height < 1 or width < 1 or planes < 1:
            raise DataError(path, f"image has no pixels ({width}x{height}, {planes} plane(s))")
        pixels = height * width * planes
        if pixels > self.max_pixels:
            raise DataError(
                path,
                f"{width}x{height}x{planes} pixels ({pixels:,}) exceed the limit of {self.max_pixels:,} "
                "(a decompression bomb, or raise max_pixels)",
            )
        if min(height, width) < self.min_side:
            raise DataError(
                path, f"{width}x{height} image has a side below {self.min_side} pixels ({_ALLOW_HINT})"
            )


@contextmanager
def _only_data_errors(path: str | Path, kind: str) -> Iterator[None]:
    """Let only DataError out: a corrupt or hostile file fails deep inside a decoder in many ways
    (zlib, unknown value representations, odd header values, byte counts), and all mean it is unusable."""
    try:
        yield
    except DataError:
        raise
    except MemoryError:
        raise DataError(path, f"{kind} too large to decode in memory") from None
    except Exception as error:
        raise DataError(path, f"unreadable {kind} ({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    """An exception as one short line: its type and the first 200 characters of its message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return (height, width) from the file's header alone, cheap enough to call for every row of an index.

    Sources need it when annotations must be mapped into the image frame before any pixel is read.
    """
    path = Path(path)
    with _only_data_errors(path, "image"):
        if not path.is_file():
            raise DataError(path, "file not found")
        if _is_dicom(path):
            dataset = _dcmread(path, path, stop_before_pixels=True)
            return _whole(dataset, "Rows", path), _whole(dataset, "Columns", path)
        with _pillow_errors(path, "image"), Image.open(path) as image:
            width, height = image.size
        return height, width


def _is_dicom(path: Path, head: bytes | None = None) -> bool:
    """A DICOM suffix, or the DICM preamble in the first 132 bytes (``head``, else read from ``path``)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if head is None:
        with path.open("rb") as handle:
            head = handle.read(132)
    return len(head) >= 132 and head[128:132] == b"DICM"


@contextmanager
def _pillow_errors(path: str | Path, kind: str) -> Iterator[None]:
    """Pillow's ways of saying a file is not a readable image, as one DataError line; its own
    decompression-bomb check only trips beyond radsight's limit when that was raised past Pillow's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise DataError(path, f"not a readable {kind} (unknown or corrupt format)") from None
    except Image.DecompressionBombError as error:
        raise DataError(path, f"too many pixels to decode ({_reason(error)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DataError(path, f"corrupt or truncated {kind} ({error})") from None


def _read_pillow(
    file: Path | BytesIO, path: str | Path, bits_stored: int | None, bounds: _Bounds
) -> tuple[np.ndarray, ImageInfo]:
    with _pillow_errors(path, "image"), Image.open(file) as image:
        bounds.check(path, image.height, image.width)
        image.load()
        mode = image.mode
        if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            image = image.convert("L")
            mode = "L"
        array = np.asarray(image)
    height, width = array.shape[:2]
    if mode == "1":
        raise DataError(path, "1-bit image: a radiograph needs at least 8 bits per pixel")
    if mode == "F":
        raise DataError(path, "floating-point image: store radiographs as 8- or 16-bit integers")
    if mode == "L":
        return array.astype(np.float32) / 255.0, ImageInfo((height, width), 8)
    if mode.startswith("I"):
        values = array.astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(path, f"pixel values {values.min()}..{values.max()} do not fit 16 bits")
        depth = bits_stored or next(d for d in _CONTAINER_DEPTHS if values.max() < 2**d)
        if values.max() >= 2**depth:
            raise DataError(path, f"pixel value {values.max()} exceeds the stated {depth} bits")
        return values.astype(np.float32) / float(2**depth - 1), ImageInfo((height, width), depth)
    raise DataError(path, f"unsupported pixel mode {mode!r}")


def _dcmread(file: Path | BytesIO, path: str | Path, *, stop_before_pixels: bool = False) -> Any:
    """The parsed dataset, or a DataError: a mutated file breaks the parser in many ways (zlib on
    deflated syntaxes, value lengths beyond the file, unknown value representations)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(file, force=isinstance(file, BytesIO), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise DataError(path, "not a DICOM file (no DICM preamble)") from None
    except MemoryError:
        raise DataError(path, "corrupt DICOM (an element longer than memory)") from None
    except Exception as error:
        raise DataError(path, f"corrupt or truncated DICOM ({_reason(error)})") from None


def _whole(dataset: Any, keyword: str, path: str | Path, default: int | None = None) -> int:
    """A header attribute that must be one whole number (Rows, Columns, NumberOfFrames)."""
    value = dataset.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise DataError(path, f"DICOM header has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(path, f"DICOM {keyword} {str(value)!r} is not a whole number") from None


def _numbers(dataset: Any, keyword: str, path: str | Path) -> list[float]:
    """An attribute's finite numeric values (none when absent), or a DataError naming it."""
    try:
        value = dataset.get(keyword)  # pydicom converts a value when it is first read
    except (TypeError, ValueError, OverflowError) as error:
        raise DataError(path, f"DICOM {keyword} is not numeric ({_reason(error)})") from None
    if value is None or value == "":
        return []
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else [value]
    shown = "\\".join(str(v) for v in values)  # as DICOM writes several values
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(path, f"DICOM {keyword} '{shown}' is not numeric") from None
    if not all(math.isfinite(n) for n in numbers):
        raise DataError(path, f"DICOM {keyword} '{shown}' is not finite")
    return numbers


def _check_rendering(dataset: Any, path: str | Path) -> None:
    """Refuse, before decoding, what a grayscale rendering cannot use: colour or palette images,
    non-numeric rescale and window values, an empty window, an unknown VOI function, incomplete LUTs."""
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in GRAYSCALE:
        raise DataError(
            path,
            f"unsupported photometric interpretation {photometric}: only grayscale "
            "(MONOCHROME1/2) radiographs are read",
        )
    slope = _numbers(dataset, "RescaleSlope", path)
    if slope and slope[0] == 0:
        raise DataError(path, "DICOM RescaleSlope 0 would make every pixel the same")
    _numbers(dataset, "RescaleIntercept", path)
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        for item in dataset.get(keyword) or []:
            if len(_numbers(item, "LUTDescriptor", path)) != 3 or "LUTData" not in item:
                raise DataError(path, f"DICOM {keyword} item lacks a 3-value LUTDescriptor or its LUTData")
    if "WindowCenter" in dataset:
        centers = _numbers(dataset, "WindowCenter", path)
        widths = _numbers(dataset, "WindowWidth", path)
        if not centers or not widths:
            raise DataError(path, "DICOM WindowCenter without a WindowWidth")
        if min(widths) < 1:
            raise DataError(path, f"DICOM WindowWidth {widths[0]:g} is not a window (it must be at least 1)")
        function = str(dataset.get("VOILUTFunction", "LINEAR")).strip()
        if function not in VOI_FUNCTIONS:
            raise DataError(path, f"DICOM VOILUTFunction {function!r} is not one of {list(VOI_FUNCTIONS)}")


def _pixel_spacing(dataset: Any, path: str | Path) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; zero means unknown."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _numbers(dataset, keyword, path)
        if not spacing:
            continue
        if len(spacing) != 2:
            raise DataError(path, f"DICOM {keyword} has {len(spacing)} value(s), not (row, column)")
        return (spacing[0], spacing[1]) if min(spacing) > 0 else None
    return None


def _decoded(dataset: Any, path: str | Path) -> np.ndarray:
    """The pixel data as an array, compressed syntaxes through each installed decoder in turn: the
    in-process ones first, then GDCM in a child process (it aborts the whole process on some
    inconsistent headers; see :mod:`radsight.data.isolated_decode`)."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    plugins = [""]  # uncompressed data needs no plugin
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).available_plugins
        except NotImplementedError:
            raise DataError(path, f"no decoder for the transfer syntax {syntax}") from None
        plugins = sorted(available, key=lambda name: name in ISOLATED_DECODERS)
        if not plugins:
            raise DataError(path, f"no decoder for {syntax.name}: install python-gdcm or a pylibjpeg plugin")
    failures = []
    for plugin in plugins:
        try:
            if plugin in ISOLATED_DECODERS:
                from radsight.data.isolated_decode import decode_isolated

                return decode_isolated(dataset, plugin)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset.pixel_array_options(decoding_plugin=plugin)
                return dataset.pixel_array
        except Exception as error:  # decoders raise many types; all mean the pixel data is unusable
            failures.append(f"{plugin or 'pydicom'}: {_reason(error)}")
    raise DataError(path, f"cannot decode DICOM pixel data ({'; '.join(failures)})")


def _dicom_pixels(
    file: Path | BytesIO, path: str | Path, bounds: _Bounds, *, grayscale: bool = True
) -> tuple[Any, np.ndarray]:
    """The dataset and its one frame as stored (no LUT applied), or a DataError naming ``path``; the
    header is checked against ``bounds`` (and, for a ``grayscale`` rendering, its values) first."""
    dataset = _dcmread(file, path)
    if "PixelData" not in dataset:
        raise DataError(path, "DICOM has no pixel data (PixelData element missing)")
    planes = _whole(dataset, "NumberOfFrames", path, 1) * _whole(dataset, "SamplesPerPixel", path, 1)
    bounds.check(path, _whole(dataset, "Rows", path), _whole(dataset, "Columns", path), planes)
    if grayscale:
        _check_rendering(dataset, path)
    pixels = _decoded(dataset, path)
    if pixels.ndim != 2:
        raise DataError(path, f"expected one grayscale frame, got pixel array of shape {pixels.shape}")
    return dataset, pixels


def _read_dicom(
    file: Path | BytesIO, path: str | Path, bounds: _Bounds, rendering: Rendering
) -> tuple[np.ndarray, ImageInfo]:
    from pydicom.pixels import apply_modality_lut

    dataset, pixels = _dicom_pixels(file, path, bounds)
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    has_voi = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    if has_voi and rendering == "standard":
        scaled = _apply_voi(values, dataset)
    else:
        if has_voi:
            values = _apply_voi(values, dataset)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    info = ImageInfo(
        original_size=(int(pixels.shape[0]), int(pixels.shape[1])),
        bits_stored=int(dataset.get("BitsStored", 16)),
        pixel_spacing=_pixel_spacing(dataset, path),
        photometric=photometric,
        dicom=_dicom_identity(dataset),
    )
    return scaled.astype(np.float32), info


def _apply_voi(values: np.ndarray, dataset: Any) -> np.ndarray:
    """The first VOI LUT, else the first window (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT or SIGMOID),
    mapped to [0, 1]; values outside the window clip to its ends."""
    if "VOILUTSequence" in dataset:
        from pydicom.pixels import apply_voi

        lut = dataset.VOILUTSequence[0]
        out_bits = int(lut.LUTDescriptor[2])
        entries = np.rint(values).astype(np.int64)  # a LUT is indexed by whole stored values
        return apply_voi(entries, dataset, index=0).astype(np.float64) / float(2**out_bits - 1)
    center, width = (_first(dataset.WindowCenter), _first(dataset.WindowWidth))
    function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        mapped = (values - center) / width + 0.5
    else:
        mapped = (values - (center - 0.5)) / max(width - 1.0, 1e-9) + 0.5
    return np.clip(mapped, 0.0, 1.0)


def _first(value: Any) -> float:
    """The first of a multi-valued window attribute (the window the modality lists first)."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _dicom_identity(dataset: Any) -> DicomIdentity:
    """The identifying attributes of an already parsed dataset (absent ones None)."""

    def text(keyword: str) -> str | None:
        value = dataset.get(keyword)
        return (str(value).strip() or None) if value is not None else None

    return DicomIdentity(
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        patient_id=text("PatientID"),
        accession_number=text("AccessionNumber"),
        modality=text("Modality"),
        laterality=text("ImageLaterality") or text("Laterality"),
        view_position=text("ViewPosition"),
        body_part_examined=text("BodyPartExamined"),
        patient_name=text("PatientName"),
        patient_birth_date=text("PatientBirthDate"),
        patient_sex=text("PatientSex"),
        study_id=text("StudyID"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        referring_physician_name=text("ReferringPhysicianName"),
        frame_of_reference_uid=text("FrameOfReferenceUID"),
    )


def read_mask(
    path: str | Path, expected_size: tuple[int, int] | None = None, *, max_pixels: int = MAX_PIXELS
) -> Tensor:
    """Read a binary mask file, PNG-like or DICOM (any nonzero pixel is inside), as an H x W bool tensor.

    ``expected_size`` is the (height, width) of the image the mask belongs to; a mismatch is an error,
    never a silent resize. An empty mask is a mask (no minimum size or contrast); ``max_pixels`` bounds
    the header as for images.
    """
    path = Path(path)
    bounds = _Bounds(max_pixels, 1)
    with _only_data_errors(path, "mask"):
        if not path.is_file():
            raise DataError(path, "mask file not found")
        if _is_dicom(path):
            with _only_data_errors(path, "DICOM mask"):
                array = _dicom_pixels(path, path, bounds, grayscale=False)[1]
        else:
            with _pillow_errors(path, "mask"), Image.open(path) as image:
                bounds.check(path, image.height, image.width)
                image.load()
                array = np.asarray(image.convert("L") if image.mode not in ("L", "1") else image)
        size = (int(array.shape[0]), int(array.shape[1]))
        if expected_size is not None and size != tuple(expected_size):
            raise DataError(
                path,
                f"mask size {size[1]}x{size[0]} differs from its image {expected_size[1]}x{expected_size[0]}",
            )
        return torch.from_numpy(array > 0)
