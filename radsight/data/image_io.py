"""Read any radiograph file into one float tensor in [0, 1], with clear errors for bad files.

DICOM goes through pydicom (pylibjpeg decodes JPEG 2000; python-gdcm and pyjpegls, both permissively
licensed, decode JPEG Lossless and JPEG-LS) and is rendered as the standard display pipeline renders it
(DICOM PS3.3 C.11.2, as dcmtk's ``dcm2pnm`` does): modality rescale, then the VOI LUT or the first window
mapped to [0, 1] and clipped outside it, then MONOCHROME1 inversion, so that air is always dark. A file
without a VOI is stretched to its own range; ``rendering="stretch"`` stretches a windowed file too.
PNG and JPEG go through Pillow: 8-bit, 16-bit (including 12-bit values stored in 16 bits) and RGB, which
is reduced to gray.
A file is read from its path, or from its bytes (an upload, a PACS transfer) with a name for errors.
"""

from __future__ import annotations

import warnings
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
) -> tuple[Tensor, ImageInfo]:
    """Return a 1 x H x W float32 tensor in [0, 1] (dark = air) and the file's pixel-space facts.

    ``file`` is a path or the file's bytes; ``name`` names bytes in errors (its suffix ``.dcm`` marks
    DICOM without a preamble). ``bits_stored`` overrides the bit depth inferred for 16-bit PNGs (e.g.
    12 for mammograms whose brightest pixel is below 4095 in a particular image). ``rendering`` is how a
    DICOM's VOI becomes [0, 1]: "standard" maps the window itself, "stretch" maps the windowed image's
    own min-max (radsight's reading before the standard one became the default).
    """
    if rendering not in RENDERINGS:
        raise ValueError(f"rendering must be one of {RENDERINGS}, not {rendering!r}")
    if isinstance(file, bytes | bytearray | memoryview):
        label: str | Path = name or "<bytes>"
        opened: Path | BytesIO = BytesIO(bytes(file))
        dicom = _is_dicom(Path(label), opened.getvalue()[:132])
    else:
        label = opened = Path(file)
        if not opened.is_file():
            raise DataError(label, "file not found")
        dicom = _is_dicom(opened)
    if dicom:
        array, info = _read_dicom(opened, label, rendering)
    else:
        array, info = _read_pillow(opened, label, bits_stored)
    if not np.isfinite(array).all():
        raise DataError(label, "image holds NaN or infinite pixel values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None], info


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return (height, width) from the file's header alone, cheap enough to call for every row of an index.

    Sources need it when annotations must be mapped into the image frame before any pixel is read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if _is_dicom(path):
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            raise DataError(path, "not a DICOM file (no DICM preamble)") from None
        except (OSError, EOFError, ValueError) as error:
            raise DataError(path, f"corrupt or truncated DICOM ({error})") from None
        if "Rows" not in dataset or "Columns" not in dataset:
            raise DataError(path, "DICOM header has no Rows/Columns")
        return int(dataset.Rows), int(dataset.Columns)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"corrupt or truncated image ({error})") from None
    return height, width


def _is_dicom(path: Path, head: bytes | None = None) -> bool:
    """A DICOM suffix, or the DICM preamble in the first 132 bytes (``head``, else read from ``path``)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if head is None:
        with path.open("rb") as handle:
            head = handle.read(132)
    return len(head) >= 132 and head[128:132] == b"DICM"


def _read_pillow(
    file: Path | BytesIO, path: str | Path, bits_stored: int | None
) -> tuple[np.ndarray, ImageInfo]:
    try:
        with Image.open(file) as image:
            image.load()
            mode = image.mode
            if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                image = image.convert("L")
                mode = "L"
            array = np.asarray(image)
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"corrupt or truncated image ({error})") from None
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


def _dicom_pixels(file: Path | BytesIO, path: str | Path) -> tuple[Any, np.ndarray]:
    """The dataset and its one grayscale frame as stored (no LUT applied), or a DataError naming ``path``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(file, force=isinstance(file, BytesIO))
    except InvalidDicomError:
        raise DataError(path, "not a DICOM file (no DICM preamble)") from None
    except (OSError, EOFError, ValueError) as error:
        raise DataError(path, f"corrupt or truncated DICOM ({error})") from None
    if "PixelData" not in dataset:
        raise DataError(path, "DICOM has no pixel data (PixelData element missing)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = dataset.pixel_array
    except Exception as error:  # decoders raise many types; all mean the pixel data is unusable
        raise DataError(path, f"cannot decode DICOM pixel data ({type(error).__name__}: {error})") from None
    if pixels.ndim != 2:
        raise DataError(path, f"expected one grayscale frame, got pixel array of shape {pixels.shape}")
    return dataset, pixels


def _read_dicom(file: Path | BytesIO, path: str | Path, rendering: Rendering) -> tuple[np.ndarray, ImageInfo]:
    from pydicom.pixels import apply_modality_lut

    dataset, pixels = _dicom_pixels(file, path)
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    has_voi = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    if has_voi and rendering == "standard":
        scaled = _apply_voi(values, dataset)
    else:
        if has_voi:
            values = _apply_voi(values, dataset)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            raise DataError(path, "DICOM image is constant: no contrast to read")
        scaled = (values - low) / (high - low)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    elif photometric != "MONOCHROME2":
        raise DataError(path, f"unsupported photometric interpretation {photometric}")
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    info = ImageInfo(
        original_size=(int(pixels.shape[0]), int(pixels.shape[1])),
        bits_stored=int(dataset.get("BitsStored", 16)),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and min(spacing) > 0 else None,
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


def read_mask(path: str | Path, expected_size: tuple[int, int] | None = None) -> Tensor:
    """Read a binary mask file, PNG-like or DICOM (any nonzero pixel is inside), as an H x W bool tensor.

    ``expected_size`` is the (height, width) of the image the mask belongs to; a mismatch is an error,
    never a silent resize.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "mask file not found")
    if _is_dicom(path):
        array = _dicom_pixels(path, path)[1]
    else:
        try:
            with Image.open(path) as image:
                image.load()
                array = np.asarray(image.convert("L") if image.mode not in ("L", "1") else image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise DataError(path, f"corrupt or unreadable mask ({error})") from None
    size = (int(array.shape[0]), int(array.shape[1]))
    if expected_size is not None and size != tuple(expected_size):
        raise DataError(
            path,
            f"mask size {size[1]}x{size[0]} differs from its image {expected_size[1]}x{expected_size[0]}",
        )
    return torch.from_numpy(array > 0)
