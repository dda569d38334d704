"""``radsight data inspect``: what a dataset holds, before anyone trains on it: label counts, annotation
coverage, a contact sheet, and the shortcut audit (``radsight.data.shortcut_audit``), in summary.json and
report.md."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from radsight.checkpoints import write_json
from radsight.config import DataConfig, ResizeMode, ShortcutAuditConfig, SourceSpec
from radsight.data.assemble import build_source, build_union, evaluation_pipeline
from radsight.data.shortcut_audit import ShortcutAudit, audit_dataset
from radsight.data.transforms import Letterbox
from radsight.errors import DataError
from radsight.explain.overlay import overlay, save_grid
from radsight.report.cells import section_cell

log = logging.getLogger(__name__)
SHEET_SIZE = (256, 256)
SHEET_COLUMNS = 4
ONE_VALUE = "—"


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


def _coverage_rows(dataset: Any) -> list[dict[str, bool]]:
    if hasattr(dataset, "sources"):  # several sources combined
        return [row for source in dataset.sources for row in _coverage_rows(source)]
    if hasattr(dataset, "records"):
        return [_kinds(r.boxes, r.mask_paths, r.fixations, r.report) for r in dataset.records]
    samples = (dataset[i] for i in range(len(dataset)))
    return [_kinds(s.boxes, s.masks, s.fixations, s.report) for s in samples]


def coverage(dataset: Any) -> dict[str, float]:
    """Share of images carrying each annotation kind, from the index alone when the source has one."""
    rows = _coverage_rows(dataset)
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


def inspect_source(
    spec: SourceSpec,
    out_dir: Path,
    max_images: int = 16,
    audit: ShortcutAuditConfig | None = None,
) -> tuple[dict[str, Any], ShortcutAudit]:
    """Inspect one source (its own labels), audited as a default recipe would fit it (letterbox, 224 px)."""
    dataset = build_source(spec, on_bad_file="skip")
    return inspect_dataset(dataset, spec.name, out_dir, max_images, audit or ShortcutAuditConfig())


def inspect_recipe(
    data: DataConfig, out_dir: Path, max_images: int = 16, seed: int = 0
) -> tuple[dict[str, Any], ShortcutAudit]:
    """Inspect a recipe's sources combined as training sees them: its labels, its fit (``data.resize``
    to ``data.image_size``) and its ``data.shortcut_audit``; the source is one of the predictors."""
    union = build_union(data.model_copy(update={"on_bad_file": "skip"}), evaluation_pipeline(data))
    name = " + ".join(spec.name for spec in data.sources)
    return inspect_dataset(
        union, name, out_dir, max_images, data.shortcut_audit, data.image_size, data.resize, seed
    )


def inspect_dataset(
    dataset: Any,
    name: str,
    out_dir: Path,
    max_images: int,
    audit_config: ShortcutAuditConfig,
    image_size: tuple[int, int] = (224, 224),
    resize: ResizeMode = "letterbox",
    seed: int = 0,
) -> tuple[dict[str, Any], ShortcutAudit]:
    """Write summary.json, report.md and contact_sheet.png of ``dataset`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    label_names = list(dataset.label_names)
    # the sheet first: when no image can be read, it names the first bad file
    sheet = contact_sheet(dataset, out_dir / "contact_sheet.png", max_images)
    audit = audit_dataset(dataset, label_names, audit_config, image_size=image_size, resize=resize, seed=seed)
    sources = getattr(dataset, "sources", [dataset])
    summary = {
        "source": name,
        "images": len(dataset),
        "patients": len(set(dataset.patient_ids)),
        "labels": label_counts(dataset.label_matrix, label_names),
        "coverage": coverage(dataset),
        "contact_sheet": sheet.name,
        "skipped_files": [line for source in sources for line in getattr(source, "skipped", [])],
        "shortcut_audit": audit.to_json(),
    }
    write_json(out_dir / "summary.json", summary)
    (out_dir / "report.md").write_text("\n".join(inspection_report(summary, audit)) + "\n")
    return summary, audit


def inspection_report(summary: dict[str, Any], audit: ShortcutAudit) -> list[str]:
    """report.md of an inspection: counts, then the audit's warnings, notes and its AUROC table."""
    lines = [f"# {summary['source']}: {summary['images']} images, {summary['patients']} patients", ""]
    lines += ["| label | positive | negative | not annotated |", "|---|---|---|---|"]
    for label, counts in summary["labels"].items():
        lines.append(f"| {label} | {counts['positive']} | {counts['negative']} | {counts['not_annotated']} |")
    lines += ["", "## Shortcut audit", ""]
    lines.append(
        f"{audit.n_images} images audited. AUROC (95% BCa interval over patients) of each label from "
        f"predictors that are not the lungs; above {audit.level:.2f} is a warning. Thin labels "
        f"(few positive or negative images) are not warned about; {ONE_VALUE}: the predictor takes one "
        "value only there."
    )
    if audit.probe is not None:
        probe = audit.probe
        lines.append(
            f"masked_probe: a tiny CNN on {probe['input_size'][0]}x{probe['input_size'][1]} inputs "
            f"({probe['resize']}) with the lungs blanked ({probe['lung_masks']} by their lung mask, "
            f"{probe['central_box']} by a fixed central box), scored out of fold by patient."
        )
    lines += ["", *([f"- warning: {line}" for line in audit.warnings()] or ["- no warning"])]
    lines += [f"- note: {line}" for line in audit.notes]
    names = sorted({n for entry in audit.per_label.values() for n in entry["predictors"]})
    lines += ["", "| label | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, entry in audit.per_label.items():
        found = entry["predictors"]
        cells = [section_cell(found[n], "auroc", 2) if n in found else ONE_VALUE for n in names]
        lines.append(f"| {label}{' (thin)' if entry['thin'] else ''} | " + " | ".join(cells) + " |")
    return lines
