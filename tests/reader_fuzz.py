"""A seeded mutation fuzzer over ``read_image`` and ``read_mask``: the suite runs it briefly
(tests/test_fuzz_readers.py), ``bench/fuzz_readers.py`` at length.

Seeds are real DICOMs shipped with pydicom (explicit, implicit and big-endian syntaxes, deflated, RLE,
JPEG 2000, JPEG lossless, RGB, multi-frame) and PNG / JPEG files made here (8-bit, 16-bit holding 12-bit
values, RGB, a binary mask). Each input is a seed with one to three mutations: byte-level (bit flips,
interesting integers, inserted, deleted or duplicated runs, truncation, splices of two seeds) or
structure-aware (a DICOM attribute set to an odd value; a PNG header field changed with its checksum
repaired, so the decoder gets past the CRC). A reader may answer DataError or a well-formed result;
anything else is a crash, and a result with an empty side or values outside [0, 1] is a bad result.
"""

from __future__ import annotations

import io
import random
import signal
import struct
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from radsight.data.image_io import read_image, read_mask
from radsight.errors import DataError

DICOM_SEEDS = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "SC_rgb.dcm",
    "emri_small.dcm",
    "SC_jpeg_no_color_transform.dcm",
)
ODD_VALUES = (0, 1, -1, 2, 3, 7, 8, 12, 15, 16, 17, 32, 255, 65535, "", "abc", "0", "1\\2\\3", "1e308", "nan")
DICOM_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PhotometricInterpretation",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelSpacing",
    "ImagerPixelSpacing",
)
INTERESTING_INTEGERS = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


@dataclass(frozen=True)
class Seed:
    name: str
    suffix: str
    data: bytes


def seeds() -> list[Seed]:
    """The real DICOMs and the PNG / JPEG files every run starts from."""
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(48), np.arange(64)).astype(np.float64)
    gray = (ramp * 2 + rng.integers(0, 40, ramp.shape)).clip(0, 255).astype(np.uint8)
    found = [
        Seed(name, ".dcm", Path(get_testdata_file(name)).read_bytes())  # type: ignore[arg-type]
        for name in DICOM_SEEDS
    ]
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    made = {
        "gray8.png": (Image.fromarray(gray), "PNG", {}),
        "gray16.png": (Image.fromarray((ramp * 36).astype(np.uint16)), "PNG", {}),  # 12-bit values
        "rgb.png": (Image.fromarray(np.stack([gray, gray[::-1], gray[:, ::-1]], axis=-1)), "PNG", {}),
        "mask.png": (Image.fromarray(mask), "PNG", {}),
        "gray.jpg": (Image.fromarray(gray), "JPEG", {"quality": 90}),
        "rgb.jpg": (Image.fromarray(np.stack([gray] * 3, axis=-1)), "JPEG", {"quality": 90}),
    }
    for name, (image, kind, options) in made.items():
        buffer = io.BytesIO()
        image.save(buffer, kind, **options)
        found.append(Seed(name, Path(name).suffix, buffer.getvalue()))
    return found


# --- mutations -------------------------------------------------------------------------------------


def flip_bits(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return data


def interesting_integer(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    width = rng.choice((1, 2, 4))
    value = rng.choice(INTERESTING_INTEGERS) & ((1 << (8 * width)) - 1)
    position = rng.randrange(max(1, len(data) - width))
    data[position : position + width] = value.to_bytes(width, rng.choice(("little", "big")))
    return data


def insert_run(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    position = rng.randrange(len(data) + 1)
    run = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    data[position:position] = run * rng.choice((1, 1, 16))
    return data


def delete_run(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    start = rng.randrange(len(data))
    del data[start : start + rng.randint(1, 256)]
    return data or bytearray(b"\x00")


def duplicate_run(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    start = rng.randrange(len(data))
    run = data[start : start + rng.randint(1, 512)]
    position = rng.randrange(len(data) + 1)
    data[position:position] = run
    return data


def truncate(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    return data[: rng.randrange(1, len(data))] if len(data) > 1 else data


def splice(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    other = rng.choice(others).data
    cut, other_cut = rng.randrange(len(data)), rng.randrange(len(other))
    return data[:cut] + bytearray(other[other_cut:])


def dicom_attribute(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    """Set one rendering attribute of a parseable DICOM to an odd value (or delete it)."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(bytes(data)), force=True)
        keyword, value = rng.choice(DICOM_KEYWORDS), rng.choice(ODD_VALUES)
        if rng.random() < 0.15:
            if keyword in dataset:
                delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
        buffer = io.BytesIO()
        dataset.save_as(buffer)
    except Exception:  # a value the writer refuses: keep the input as it was
        return data
    return bytearray(buffer.getvalue())


def png_header(rng: random.Random, data: bytearray, others: list[Seed]) -> bytearray:
    """Change one IHDR field (size, bit depth, colour type, interlace) and repair its CRC."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 33:
        return data
    fields = bytearray(data[16:29])
    choice = rng.randrange(5)
    if choice < 2:
        size = rng.choice((0, 1, 2, 7, 8, 4000, 30000, 0x7FFFFFFF))
        fields[4 * choice : 4 * choice + 4] = struct.pack(">I", size)
    else:
        fields[6 + choice] = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255))
    data[16:29] = fields
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + fields))
    return data


BYTE_MUTATIONS: tuple[Callable[[random.Random, bytearray, list[Seed]], bytearray], ...] = (
    flip_bits,
    interesting_integer,
    insert_run,
    delete_run,
    duplicate_run,
    truncate,
    splice,
)


def mutate(rng: random.Random, seed: Seed, others: list[Seed]) -> bytes:
    data = bytearray(seed.data)
    structured = dicom_attribute if seed.suffix == ".dcm" else png_header if seed.suffix == ".png" else None
    for _ in range(rng.randint(1, 3)):
        if structured is not None and rng.random() < 0.35:
            data = structured(rng, data, others)
        else:
            data = rng.choice(BYTE_MUTATIONS)(rng, data, others)
    return bytes(data)


def inputs(count: int, seed: int = 0) -> Iterator[tuple[Seed, bytes]]:
    """``count`` mutated inputs, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    pool = seeds()
    for _ in range(count):
        chosen = rng.choice(pool)
        yield chosen, mutate(rng, chosen, pool)


# --- running ---------------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm inside a reader that ran past the hang bound (a BaseException, so that no
    reader's own error handling can swallow it)."""


@dataclass
class Finding:
    reader: str
    seed: str
    kind: str  # "crash", "hang" or "bad result"
    detail: str
    data: bytes = field(repr=False)


@dataclass
class Report:
    inputs: int = 0
    calls: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    slowest_s: float = 0.0

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]


def _check_image(result: tuple[torch.Tensor, object]) -> str | None:
    image = result[0]
    if image.ndim != 3 or image.shape[0] != 1 or min(image.shape[1:]) < 1:
        return f"image of shape {tuple(image.shape)}"
    if not torch.isfinite(image).all() or float(image.min()) < 0 or float(image.max()) > 1:
        return f"values {float(image.min())}..{float(image.max())} outside [0, 1]"
    return None


def _check_mask(mask: torch.Tensor) -> str | None:
    if mask.ndim != 2 or min(mask.shape) < 1 or mask.dtype != torch.bool:
        return f"mask of shape {tuple(mask.shape)} and type {mask.dtype}"
    return None


READERS: dict[str, tuple[Callable[[Path], object], Callable[..., str | None]]] = {
    "read_image": (read_image, _check_image),
    "read_mask": (read_mask, _check_mask),
}


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def run(count: int, folder: Path, *, seed: int = 0, hang_s: float = 10.0) -> Report:
    """Feed ``count`` mutated inputs to every reader (as files in ``folder``), each call bounded by
    ``hang_s`` seconds of wall time, and sort what came back."""
    report = Report()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for number, (origin, data) in enumerate(inputs(count, seed)):
            path = folder / f"input{number % 2}{origin.suffix}"
            path.write_bytes(data)
            report.inputs += 1
            for name, (reader, check) in READERS.items():
                report.calls += 1
                started = time.perf_counter()
                signal.setitimer(signal.ITIMER_REAL, hang_s)
                try:
                    problem = check(reader(path))
                    outcome = "bad result" if problem else "read"
                except DataError:
                    outcome, problem = "DataError", None
                except Hang:
                    outcome, problem = "hang", f"over {hang_s:g} s"
                except Exception as error:
                    outcome = "crash"
                    where = traceback.extract_tb(error.__traceback__)[-1]
                    problem = f"{type(error).__name__}: {error} at {where.filename}:{where.lineno}"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                report.slowest_s = max(report.slowest_s, time.perf_counter() - started)
                report.outcomes[f"{name}: {outcome}"] += 1
                if problem is not None:
                    report.findings.append(Finding(name, origin.name, outcome, problem, data))
    finally:
        signal.signal(signal.SIGALRM, previous)
    return report
