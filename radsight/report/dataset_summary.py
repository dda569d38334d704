"""``radsight data inspect``: what a dataset holds, before anyone trains on it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from radsight.checkpoints import write_json
from radsight.config import SourceSpec
from radsight.data.assemble import build_source
from radsight.data.transforms import Letterbox
from radsight.errors import DataError
from radsight.explain.overlay import overlay, save_grid

log = logging.getLogger(__name__)
SHEET_SIZE = (256, 256)
SHEET_COLUMNS = 4


def label_counts(label_matrix: np.ndarray, label_names: list[str]) -> dict[str, dict[str, int]]:
    annotated = ~np.isnan(label_matrix)
    return {
        name: {
            "positive": int(np.sum(label_matrix[:, j] == 1)),
            "negative": int(np.sum(label_matrix[:, j] == 0)),
            "not_annotated": int(np.sum(~annotated[:, j])),
        }
        for j, name in enumerate(label_names)
    }


def _kinds(boxes: Any, masks: Any, fixations: Any, report: str | None) -> dict[str, bool]:
    return {
        "boxes": boxes is not None and len(boxes) > 0,
        "masks": bool(masks),
        "fixations": fixations is not None and len(fixations) > 0,
        "report": bool(report),
    }


def coverage(dataset: Any) -> dict[str, float]:
    """Share of images carrying each annotation kind, from the index alone when the source has one."""
    if hasattr(dataset, "records"):
        rows = [_kinds(r.boxes, r.mask_paths, r.fixations, r.report) for r in dataset.records]
    else:
        samples = (dataset[i] for i in range(len(dataset)))
        rows = [_kinds(s.boxes, s.masks, s.fixations, s.report) for s in samples]
    return {kind: round(float(np.mean([row[kind] for row in rows])), 4) for kind in rows[0]}


def contact_sheet(dataset: Any, path: Path, max_images: int) -> Path:
    """Draw the first readable images with every annotation they carry, favouring annotated ones; a
    dataset of which no image can be read is a DataError naming its first bad file."""
    letterbox = Letterbox(SHEET_SIZE)
    annotated = [
        i for i, r in enumerate(getattr(dataset, "records", [])) if r.boxes is not None or r.mask_paths
    ]
    order = dict.fromkeys([*annotated[: max_images // 2], *range(len(dataset))])
    cells = []
    for index in order:
        if len(cells) == max_images:
            break
        sample = dataset[index]
        if sample is None:
            continue
        sample = letterbox(sample)
        cells.append(
            overlay(
                sample.image[0].numpy(),
                boxes=sample.boxes,
                box_labels=sample.box_labels,
                masks=sample.masks,
                fixations=sample.fixations,
                title=Path(sample.meta.path).name[:28],
            )
        )
    if not cells:
        skipped = getattr(dataset, "skipped", [])
        first = f"; the first: {skipped[0]}" if skipped else ""
        problem = f"none of its {len(dataset)} images can be read{first}"
        raise DataError(getattr(dataset, "root", None), problem)
    rows = [cells[i : i + SHEET_COLUMNS] for i in range(0, len(cells), SHEET_COLUMNS)]
    return save_grid(rows, path)


def inspect_source(spec: SourceSpec, out_dir: Path, max_images: int = 16) -> dict[str, Any]:
    dataset = build_source(spec, on_bad_file="skip")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "source": spec.name,
        "images": len(dataset),
        "patients": len(set(dataset.patient_ids)),
        "labels": label_counts(dataset.label_matrix, list(dataset.label_names)),
        "coverage": coverage(dataset),
        "contact_sheet": contact_sheet(dataset, out_dir / "contact_sheet.png", max_images).name,
        "skipped_files": list(getattr(dataset, "skipped", [])),
    }
    write_json(out_dir / "summary.json", summary)
    return summary
