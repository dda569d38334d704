"""What every dataset source shares: rows scanned and validated up front, files read lazily.

A source subclass only turns its files into a list of ``Record`` (cheap metadata) in ``_scan``. Reading
the image, checking annotations against it, applying the transform and handling bad files happen here,
once, for every source.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import logging
import lzma
import math
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from radsight.data.image_io import MAX_PIXELS, read_image, read_mask
from radsight.data.sample import Sample, SampleMeta
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BadFilePolicy = Literal["raise", "skip"]
READ_OPTIONS = ("bits_stored", "max_pixels", "allow_degenerate")
"""The source options that are ``read_image``'s: how every file of the source is read."""
Transform = Callable[[Sample], Sample]


@dataclass
class Record:
    """One row of a source before its image is read; coordinates are in the file's pixels."""

    image_path: Path
    patient_id: str
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_labels: list[str] | None = None
    mask_paths: dict[str, Path | tuple[Path, ...]] = field(default_factory=dict)
    """Mask name -> its file, or several files whose union it is (e.g. a left and a right lung)."""
    fixations: np.ndarray | None = None
    report: str | None = None
    view: str | None = None
    pixel_spacing: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


CSV_ENCODINGS = ("utf-8-sig", "cp1252")
"""Tried in order when no encoding is given: UTF-8 (with or without a byte-order mark), then Windows-1252,
which spreadsheets and older public metadata files are often saved in."""


def read_csv(
    path: Path, required: Sequence[str], *, encoding: str | None = None, **kwargs: Any
) -> pd.DataFrame:
    """Read a CSV and fail, naming the file and the columns, when required columns are missing.

    Every source reads its tables here, so every source reads UTF-8, UTF-8 with a byte-order mark,
    UTF-16 with one, and Windows-1252 without being told; ``encoding`` forces one.
    """
    if not path.is_file():
        raise DataError(path, "file not found")
    text = decode_text(path, encoding)
    try:
        frame = pd.read_csv(io.StringIO(text), **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(path, f"cannot parse CSV ({error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing required column(s) {missing}; found {list(frame.columns)}")
    return frame


COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
"""Compressed files read by their suffix, as pandas would (e.g. MIMIC's ``.csv.gz``)."""


def file_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when its suffix says it is compressed (a zip holds one file)."""
    suffix = path.suffix.lower()
    try:
        if suffix in COMPRESSED:
            with COMPRESSED[suffix](path, "rb") as stream:
                return stream.read()
        if suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if len(names) != 1:
                    raise DataError(path, f"a zipped CSV must hold one file, not {len(names)}")
                return archive.read(names[0])
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as error:
        raise DataError(path, f"cannot decompress it ({error})") from None
    return path.read_bytes()


def decode_text(path: Path, encoding: str | None = None) -> str:
    """A text file's contents in ``encoding``, or else in the first of :data:`CSV_ENCODINGS` (after a
    UTF-16 byte-order mark) that decodes it; a fallback is logged, since it is a guess."""
    data = file_bytes(path)
    if encoding is not None:
        try:
            return data.decode(encoding)
        except LookupError:
            raise ConfigError(f"{path}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as error:
            problem = f"not {encoding} text ({error.reason} at byte {error.start}): check its encoding"
            raise DataError(path, problem) from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    for candidate in CSV_ENCODINGS:
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:  # UTF-16 or a binary file, which Windows-1252 would decode as garbage
            break
        if candidate != CSV_ENCODINGS[0]:
            log.warning("%s is not UTF-8: read as %s (name its encoding if that is wrong)", path, candidate)
        return text
    tried = " or ".join(CSV_ENCODINGS)
    hint = "save it as UTF-8, or name its encoding (the manifest source's option encoding=NAME)"
    raise DataError(path, f"cannot decode it as {tried}: {hint}")


def cell_value(cell: Any) -> Any:
    """A table cell as a plain Python value, with pandas' NaN for an empty cell as None."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    return cell.item() if isinstance(cell, np.generic) else cell


def cell_text(cell: Any) -> str | None:
    """A free-text cell stripped, with empty or missing text as None."""
    value = cell_value(cell)
    return (str(value).strip() or None) if value is not None else None


def numeric_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """The columns as an N x C float64 array (blank cells NaN); a cell that is not a number is a DataError."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            raise DataError(path, f"column {column!r} holds {frame[column][bad].iloc[0]!r}, not a number")
        out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def select_labels(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """Validate a user's label list against a source's; None keeps them all."""
    if wanted is None:
        return list(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ConfigError(f"unknown label name(s) {unknown}; this source knows {list(available)}")
    return list(wanted)


def drop_missing_images(records: list[Record], source: str) -> list[Record]:
    """Keep records whose image file exists; extracts and partial downloads often lack some files."""
    kept = [r for r in records if r.image_path.is_file()]
    if len(kept) < len(records):
        missing = len(records) - len(kept)
        log.warning("%s: dropped %d of %d rows whose image file is missing", source, missing, len(records))
    return kept


def multi_hot(positives: Iterable[str], label_names: Sequence[str], path: Path, where: str) -> np.ndarray:
    """0/1 float32 vector over ``label_names``; an unknown name is a DataError naming the file and row."""
    vector = np.zeros(len(label_names), dtype=np.float32)
    for name in positives:
        if name not in label_names:
            raise DataError(path, f"{where}: unknown label {name!r}; expected one of {list(label_names)}")
        vector[label_names.index(name)] = 1.0
    return vector


def boxes_by_image(
    frame: pd.DataFrame, key: str, xywh: Sequence[str], label: str
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Group (x, y, width, height) rows by image into N x 4 xyxy arrays and their labels."""
    grouped: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name, rows in frame.groupby(key, sort=False):
        x, y, w, h = (rows[column].to_numpy(np.float32) for column in xywh)
        grouped[str(name)] = (np.stack([x, y, x + w, y + h], axis=1), rows[label].astype(str).tolist())
    return grouped


def read_or_skip(read: Callable[[], Sample], policy: BadFilePolicy, skipped: list[str]) -> Sample | None:
    """One item read under the ``on_bad_file`` policy: a bad file raises, or is logged, kept in
    ``skipped`` and dropped (None), so one damaged file does not end a long run."""
    try:
        return read()
    except DataError as error:
        if policy == "raise":
            raise
        log.warning("skipping bad file: %s", error)
        skipped.append(str(error))
        return None


class SourceDataset(Dataset):
    """A ``Dataset`` of ``Sample`` built from a root folder; subclasses implement ``_scan``.

    ``on_bad_file="skip"`` logs the file and its problem and yields ``None`` for it, which ``collate``
    drops; the default ``"raise"`` stops with the file's name. Either way no bad image becomes zeros.
    """

    name: ClassVar[str] = "source"
    all_labels: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        root: str | Path,
        *,
        labels: Sequence[str] | None = None,
        bits_stored: int | None = None,
        max_pixels: int = MAX_PIXELS,
        allow_degenerate: bool = False,
        transform: Transform | None = None,
        on_bad_file: BadFilePolicy = "raise",
    ) -> None:
        """``labels``: the subset of ``all_labels`` to keep; ``bits_stored``: the bit depth of 16-bit PNGs
        when the files' own is wrong; ``max_pixels``: the largest file read (its header is checked before
        decoding); ``allow_degenerate``: read images too small or without contrast to be radiographs,
        which are refused otherwise (see ``read_image``)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, f"{self.name} root folder not found")
        if on_bad_file not in ("raise", "skip"):
            raise ConfigError(f"on_bad_file must be 'raise' or 'skip', not {on_bad_file!r}")
        self.label_names = select_labels(self.all_labels, labels)
        self.transform = transform
        self.on_bad_file = on_bad_file
        self.read_options = {
            "bits_stored": bits_stored,
            "max_pixels": max_pixels,
            "allow_degenerate": allow_degenerate,
        }
        self.skipped: list[str] = []
        self.records = self._select(self._scan())
        if not self.records:
            raise DataError(self.root, f"{self.name}: no samples left after filtering")

    @classmethod
    def read_options_for(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``read_image``'s options for this source's files under a recipe's source ``options``, known
        without reading any data (inference reads loose files exactly as the source reads its own)."""
        return {key: options[key] for key in READ_OPTIONS if options.get(key) not in (None, False)}

    def _scan(self) -> list[Record]:
        """Read the source's index files into records with labels over ``all_labels``."""
        raise NotImplementedError

    def _select(self, records: list[Record]) -> list[Record]:
        """Reduce label vectors from ``all_labels`` to the chosen ``label_names``."""
        if list(self.label_names) == list(self.all_labels):
            return records
        index = [self.all_labels.index(name) for name in self.label_names]
        for record in records:
            if record.labels is not None:
                record.labels = record.labels[index]
        return records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def patient_ids(self) -> list[str]:
        return [r.patient_id for r in self.records]

    @property
    def image_ids(self) -> list[str]:
        """Each record's image file, relative to the root when inside it: how a run's ``splits.json``
        finds its images again, wherever the dataset folder has moved."""
        paths = [r.image_path for r in self.records]
        return [str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p in paths]

    @property
    def label_matrix(self) -> np.ndarray:
        """N x C labels (NaN where not annotated), for splits and counts without reading images."""
        nan = np.full(len(self.label_names), np.nan, dtype=np.float32)
        return np.stack([nan if r.labels is None else r.labels.astype(np.float32) for r in self.records])

    @property
    def reports(self) -> list[str | None]:
        """Per image, its report text (None: none), read from the index, no image is read."""
        return [r.report for r in self.records]

    @property
    def annotated(self) -> np.ndarray:
        """Per image, whether it carries boxes, masks or gaze (read from the index, no image is read)."""
        return np.array([self.has_annotation(r) for r in self.records], dtype=bool)

    def has_annotation(self, record: Record) -> bool:
        """Whether a record's sample will carry a box, a mask or a fixation."""
        return bool(
            (record.boxes is not None and len(record.boxes))
            or record.mask_paths
            or (record.fixations is not None and len(record.fixations))
        )

    def __getitem__(self, index: int) -> Sample | None:
        record = self.records[index]
        sample = read_or_skip(lambda: self.load(record), self.on_bad_file, self.skipped)
        if sample is None:
            return None
        return self.transform(sample) if self.transform is not None else sample

    def load(self, record: Record) -> Sample:
        """Read one record's image and annotations, checking that they fit the image."""
        image, info = read_image(record.image_path, **self.read_options)
        height, width = info.original_size
        boxes = None
        if record.boxes is not None and len(record.boxes):
            boxes = torch.as_tensor(np.asarray(record.boxes, dtype=np.float32)).reshape(-1, 4)
            check_boxes(boxes, (height, width), record.image_path)
        limit = self.read_options["max_pixels"]
        masks = {
            name: read_mask_union(paths, (height, width), limit) for name, paths in record.mask_paths.items()
        }
        fixations = None
        if record.fixations is not None:
            fixations = torch.as_tensor(np.asarray(record.fixations, dtype=np.float32)).reshape(-1, 3)
        spacing = record.pixel_spacing or info.pixel_spacing
        labels = None if record.labels is None else torch.as_tensor(record.labels, dtype=torch.float32)
        meta = SampleMeta(
            source=self.name,
            path=str(record.image_path),
            patient_id=record.patient_id,
            view=record.view,
            original_size=(height, width),
            pixel_spacing=spacing,
            extra={"bits_stored": info.bits_stored, **record.extra},
            dicom=info.dicom,
        )
        return Sample(
            image=image,
            meta=meta,
            labels=labels,
            boxes=boxes,
            box_labels=record.box_labels if boxes is not None else None,
            masks=masks or None,
            fixations=fixations,
            report=record.report,
        )


def read_mask_union(
    paths: Path | tuple[Path, ...], size: tuple[int, int], max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """One mask file, or the union of several, each of the image's ``size``."""
    if isinstance(paths, Path):
        return read_mask(paths, size, max_pixels=max_pixels)
    return torch.stack([read_mask(path, size, max_pixels=max_pixels) for path in paths]).any(dim=0)


def check_boxes(boxes: torch.Tensor, size: tuple[int, int], path: str | Path, tolerance: float = 1.0) -> None:
    """Reject degenerate boxes and boxes outside the image (beyond ``tolerance`` pixels of rounding)."""
    height, width = size
    if not torch.isfinite(boxes).all():
        raise DataError(path, "box coordinates contain NaN or infinity")
    x0, y0, x1, y1 = boxes.unbind(-1)
    if bool(((x1 <= x0) | (y1 <= y0)).any()):
        raise DataError(path, f"degenerate box (x1<=x0 or y1<=y0): {boxes.tolist()}")
    outside = (x0 < -tolerance) | (y0 < -tolerance) | (x1 > width + tolerance) | (y1 > height + tolerance)
    if bool(outside.any()):
        bad = boxes[outside][0].tolist()
        raise DataError(path, f"box {[round(v, 1) for v in bad]} lies outside the {width}x{height} image")
