"""Your own images as a dataset: one row per image in a CSV file (source name ``"manifest"``).

The CSV has a header row; it is read as UTF-8 (with or without a byte-order mark), UTF-16 with a
byte-order mark or, failing those, Windows-1252 (logged); the option ``encoding`` names another
(``encoding=latin-1``). Column names are case-sensitive; columns not listed here are ignored.

``path`` (required)
    The image file (DICOM, 8/16-bit PNG or JPEG; see ``radsight.data.image_io``), absolute or relative to the
    dataset root, which is the CSV's folder unless ``root`` is given.
``patient_id`` (optional)
    Groups images for patient-level splits. When the column is absent or a cell is blank, the ``path``
    cell is used, so that image counts as its own patient.
``split`` (optional)
    ``train``, ``val`` or ``test``: the split is then this column's, not a random one (``data.split`` is
    not used; a patient's images must all be in one split), and ``radsight evaluate --source manifest``
    scores the ``test`` rows only. Every row needs a value.
``view``, ``report`` (optional)
    Free text (e.g. "PA", "MLO"; the radiology report). A blank cell means none.
Labels (optional), in one of two layouts chosen by an option:
    - ``label_columns=[...]``: one column per label, named as the label. A cell is ``1`` (positive),
      ``0`` (negative), ``-1`` (uncertain, read as not annotated: NaN) or blank (not annotated: NaN).
      Anything else, ``nan`` and ``0.5`` included, is a DataError naming the file, row and column.
    - ``label_names=[...]``: a ``labels`` column of ``|``-separated positive names, e.g.
      ``Effusion|Nodule``; the other names are negative. ``none`` states that no label is positive and a
      blank cell means not annotated. A name outside ``label_names`` is a DataError.
    Without either option the samples carry no labels (evaluation then scores maps and attention only).
``boxes`` (optional)
    A JSON list of ``[x0, y0, x1, y1, "label"]`` in pixels of the image file (x to the right, y down),
    e.g. ``[[10, 20, 110, 140, "Nodule"]]``. Blank means no box annotation. A box outside its image is a
    DataError when the image is read.
``mask_<name>`` (optional, any number)
    Path (absolute or relative to the root) of a binary mask of the image's size, any nonzero pixel
    inside; it becomes the mask ``<name>`` (``mask_lungs`` -> ``"lungs"``). Several paths separated by
    ``|`` (``left.png|right.png``) make one mask, their union. Blank means no such mask.

Evaluation reports the share of each map inside the mask ``lungs``; ``radsight evaluate --region``
names other masks, and a region made of several mask columns (``--region lungs=left_lung,right_lung``
for ``mask_left_lung`` and ``mask_right_lung``: their union).

The CSV is checked when the dataset is built; error messages count rows from 1 after the header. Image
and mask files are read when a sample is requested, so a missing or corrupt file follows ``on_bad_file``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radsight.data.sources.base import Record, SourceDataset, cell_text, multi_hot, read_csv
from radsight.data.splits import SPLIT_NAMES
from radsight.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MASK_PREFIX = "mask_"
MASK_SEPARATOR = "|"
SPLIT_COLUMN = "split"
NO_POSITIVE = "none"
_LABEL_CELL_VALUES = {1.0: 1.0, 0.0: 0.0, -1.0: math.nan}


class ManifestDataset(SourceDataset):
    """A generic CSV of image paths with optional labels, boxes, masks, views and reports."""

    name = "manifest"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        csv: str | Path | None = None,
        label_columns: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        encoding: str | None = None,
        **options: Any,
    ) -> None:
        """``csv`` defaults to ``<root>/manifest.csv`` and ``root`` to the CSV's folder; ``label_columns``
        or ``label_names`` choose the label layout; ``encoding`` the CSV's (see the module docstring)."""
        if csv is None:
            if root is None:
                raise ConfigError("manifest: pass the CSV file (csv=...) or its folder (root)")
            csv = Path(root) / "manifest.csv"
        if label_columns and label_names:
            raise ConfigError("manifest: give label_columns (one column per label) or label_names, not both")
        self.csv_path = Path(csv)
        self.encoding = encoding
        self.label_columns = list(label_columns or [])
        self.all_labels = tuple(self.label_columns or label_names or ())
        super().__init__(self.csv_path.parent if root is None else root, **options)

    def _scan(self) -> list[Record]:
        required = ["path", *self.label_columns]
        if self.all_labels and not self.label_columns:
            required.append("labels")
        table = read_csv(
            self.csv_path, required=required, encoding=self.encoding, dtype=str, keep_default_na=False
        )
        if "labels" in table.columns and not self.all_labels:
            log.warning("manifest: %s: 'labels' column ignored (no label_names option)", self.csv_path)
        masks = [column for column in table.columns if column.startswith(MASK_PREFIX)]
        if MASK_PREFIX in masks:
            raise DataError(self.csv_path, f"column {MASK_PREFIX!r} names no mask (use e.g. 'mask_lungs')")
        records = []
        for number, row in enumerate(table.to_dict("records"), start=1):
            where = f"row {number}"
            path_text = row["path"].strip()
            if not path_text:
                raise DataError(self.csv_path, f"{where}: empty path")
            boxes, box_labels = self._boxes(row.get("boxes", ""), where)
            records.append(
                Record(
                    image_path=self._resolve(path_text),
                    patient_id=row.get("patient_id", "").strip() or path_text,
                    labels=self._labels(row, where),
                    boxes=boxes,
                    box_labels=box_labels,
                    mask_paths={
                        column.removeprefix(MASK_PREFIX): self._mask_files(row[column])
                        for column in masks
                        if row[column].strip()
                    },
                    report=cell_text(row.get("report")),
                    view=cell_text(row.get("view")),
                    extra=self._split(row, where) if SPLIT_COLUMN in table.columns else {},
                )
            )
        return records

    @property
    def predefined_split(self) -> list[str] | None:
        """Each image's split from the ``split`` column (train, val or test); None without the column."""
        if not self.records or SPLIT_COLUMN not in self.records[0].extra:
            return None
        return [record.extra[SPLIT_COLUMN] for record in self.records]

    def _split(self, row: dict[str, str], where: str) -> dict[str, str]:
        name = row[SPLIT_COLUMN].strip()
        if name not in SPLIT_NAMES:
            problem = f"{where}, column {SPLIT_COLUMN!r}: {name!r} is not one of {', '.join(SPLIT_NAMES)}"
            raise DataError(self.csv_path, problem)
        return {SPLIT_COLUMN: name}

    def _resolve(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.root / path

    def _mask_files(self, cell: str) -> Path | tuple[Path, ...]:
        """One mask file, or several (``|``-separated) whose union is the mask."""
        paths = tuple(self._resolve(part.strip()) for part in cell.split(MASK_SEPARATOR) if part.strip())
        return paths[0] if len(paths) == 1 else paths

    def _labels(self, row: dict[str, str], where: str) -> np.ndarray | None:
        """The row's label vector in whichever layout the options chose; None when there are no labels."""
        if not self.all_labels:
            return None
        if self.label_columns:
            cells = [self._label_cell(row[column], where, column) for column in self.label_columns]
            return np.array(cells, dtype=np.float32)
        names = row["labels"].strip()
        if not names:
            return np.full(len(self.all_labels), np.nan, dtype=np.float32)
        positives = [] if names == NO_POSITIVE else [name.strip() for name in names.split("|")]
        return multi_hot(positives, self.all_labels, self.csv_path, f"{where}, column 'labels'")

    def _label_cell(self, text: str, where: str, column: str) -> float:
        text = text.strip()
        if not text:
            return math.nan
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if value not in _LABEL_CELL_VALUES:
            problem = f"{where}, column {column!r}: label {text!r} is not 1, 0, -1 or blank"
            raise DataError(self.csv_path, problem)
        return _LABEL_CELL_VALUES[value]

    def _boxes(self, text: str, where: str) -> tuple[np.ndarray | None, list[str] | None]:
        """Parse a ``boxes`` cell into N x 4 xyxy and labels; (None, None) when blank."""
        if not text.strip():
            return None, None
        problem = f"{where}, column 'boxes': expected a JSON list of [x0, y0, x1, y1, \"label\"]"
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(self.csv_path, f"{problem}, not valid JSON ({error})") from None
        if not isinstance(items, list) or not all(_is_box(item) for item in items):
            raise DataError(self.csv_path, f"{problem}, got {text.strip()!r}")
        coordinates = np.array([item[:4] for item in items], dtype=np.float32).reshape(-1, 4)
        return coordinates, [item[4] for item in items]


def _is_box(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 5
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item[:4])
        and isinstance(item[4], str)
    )
