"""Shortcut audit: can a label be predicted from things that are not the lungs?

Chest X-ray models are known to learn the hospital instead of the disease: in public sets the file
size, the width or the aspect ratio can separate the classes. For every label the audit gives the
AUROC, with its patient-bootstrap BCa interval, of simple non-anatomical predictors of each image
(:data:`PREDICTORS`) and of the masked-image probe (:mod:`radsight.data.masked_probe`), and names in
one warning line per label every predictor above ``level`` (``data.shortcut_audit``, default 0.70).

- A numeric predictor is scored in the direction that separates better (its AUROC is at least 0.5;
  ``direction`` says whether higher or lower values go with the label); the probe's out-of-fold
  probabilities are taken as they are (below 0.5 is chance). A categorical one scores each
  image by the share of positives in its category on the audited images (in-sample, so a rare category
  could overfit: categories with fewer than :data:`MIN_CATEGORY` images are pooled as "other").
- A predictor is undefined for a label where it takes one value only (all images 8-bit, one source).
- A label with fewer than ``min_count`` positive or negative audited images is *thin*: its AUROCs are
  reported, not warned about.
- Labels that some of several combined sources do not annotate get a note: the model learns them from
  the other sources' images only, so whatever marks those images can pass for the label.

:func:`stratified_section` is the evaluation's view: the same predictors on the evaluated images, and
the model's AUROC within the two strata of each label's strongest predictor (e.g. small and large
images), so that a model that learnt only the shortcut shows it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from rich.progress import track

from radsight.config import ResizeMode, ShortcutAuditConfig
from radsight.data.masked_probe import probe_input, probe_scores, probe_size
from radsight.data.sample import Sample, SampleMeta
from radsight.data.transforms import RESIZE_MODES, Geometry
from radsight.errors import DataError
from radsight.metrics.bootstrap import json_float
from radsight.metrics.classification import MIN_CLASS_COUNT, auroc_with_ci

log = logging.getLogger(__name__)

Kind = Literal["numeric", "categorical", "probability"]
"""Numeric values are oriented, categories target-encoded, probabilities (the probe's) taken as they are."""
PREDICTORS: dict[str, Kind] = {
    "width": "numeric",
    "height": "numeric",
    "aspect": "numeric",  # height / width
    "file_bytes": "numeric",
    "bit_depth": "numeric",
    "padding": "numeric",  # share of the model's input that shows no pixel of the file
    "source": "categorical",
    "view": "categorical",
    "sex": "categorical",
    "age": "numeric",
}
"""The non-anatomical predictors of an image, read from its metadata and its file."""
PROBE = "masked_probe"
"""The masked-image probe's name among the predictors."""
MIN_CATEGORY = 5
OTHER = "other"
STRATIFIED_COLUMNS = (
    "strongest_predictor",
    "direction",
    "predictor_auroc",
    "stratum_a",
    "n_positive_a",
    "n_negative_a",
    "model_auroc_a",
    "stratum_b",
    "n_positive_b",
    "n_negative_b",
    "model_auroc_b",
)
"""The columns of each label in the evaluation's "shortcuts" section (None where undefined)."""

Value = float | str | None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _category(value: Any) -> str | None:
    text = None if value is None else str(value).strip()
    return text.upper() if text else None


def image_predictors(meta: SampleMeta, geometry: Geometry | None) -> dict[str, Value]:
    """The :data:`PREDICTORS` of one image from its metadata (None where unknown); ``geometry`` is the
    record of the image fitted to the model's input (its padding)."""
    height, width = meta.original_size or (None, None)
    path = Path(meta.path)
    return {
        "width": _number(width),
        "height": _number(height),
        "aspect": None if not width or not height else height / width,
        "file_bytes": float(path.stat().st_size) if path.is_file() else None,
        "bit_depth": _number(meta.extra.get("bits_stored")),
        "padding": None if geometry is None else _number(geometry.padding_share()),
        "source": meta.source,
        "view": _category(meta.view),
        "sex": _category(meta.extra.get("sex")),
        "age": _number(meta.extra.get("age")),
    }


def _pooled(values: Sequence[Value]) -> list[str | None]:
    """Categories as text, those with fewer than :data:`MIN_CATEGORY` images as :data:`OTHER`."""
    counts: dict[str, int] = {}
    for value in values:
        if value is not None:
            counts[str(value)] = counts.get(str(value), 0) + 1
    return [None if v is None else str(v) if counts[str(v)] >= MIN_CATEGORY else OTHER for v in values]


def predictor_scores(
    values: Sequence[Value], kind: Kind, labels: np.ndarray
) -> tuple[np.ndarray, str] | None:
    """Per image, the score a predictor gives one label (NaN where it has no value), oriented so that its
    AUROC is at least 0.5, and the direction in words; None where the predictor takes one value only on
    the annotated images."""
    annotated = ~np.isnan(labels)
    if kind != "categorical":
        raw = np.array([np.nan if v is None else float(v) for v in values])
        present = raw[annotated & ~np.isnan(raw)]
        if present.size == 0 or present.min() == present.max():
            return None
        point = auroc_with_ci("a", raw, labels, np.arange(len(raw)), n_boot=0)["a"]
        if kind == "numeric" and point is not None and point < 0.5:
            return -raw, "lower"
        return raw, "higher"
    categories = _pooled(values)
    rates: dict[str, list[float]] = {}
    for category, label in zip(categories, labels, strict=True):
        if category is not None and not np.isnan(label):
            rates.setdefault(category, []).append(float(label))
    if len(rates) < 2:
        return None
    share = {category: float(np.mean(found)) for category, found in rates.items()}
    scores = np.array([np.nan if c is None or c not in share else share[c] for c in categories])
    top = max(share, key=lambda c: share[c])
    return scores, f"{top} most often positive ({share[top]:.0%})"


def predictor_entry(
    values: Sequence[Value],
    kind: Kind,
    labels: np.ndarray,
    patient_ids: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any] | None:
    """``{auroc, auroc_ci_low, auroc_ci_high, direction, n_images}`` of one predictor for one label, or
    None where it is undefined."""
    scored = predictor_scores(values, kind, labels)
    if scored is None:
        return None
    scores, direction = scored
    entry = auroc_with_ci("auroc", scores, labels, patient_ids, n_boot=n_boot, seed=seed)
    if entry["auroc"] is None:
        return None
    n_images = int(np.sum(~np.isnan(labels) & ~np.isnan(scores)))
    return {**entry, "direction": direction, "n_images": n_images}


def _describe(name: str, entry: dict[str, Any]) -> str:
    interval = ""
    if entry.get("auroc_ci_low") is not None:
        interval = f" [{entry['auroc_ci_low']:.2f}, {entry['auroc_ci_high']:.2f}]"
    return f"{name} (AUROC {entry['auroc']:.2f}{interval}, {entry['direction']})"


@dataclass
class ShortcutAudit:
    """The audit of one set of images: per label its counts and predictors, which are above ``level``,
    the notes on labels only some sources annotate, and how the probe blanked the lungs."""

    level: float
    n_images: int
    per_label: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None

    def flagged(self) -> dict[str, list[str]]:
        """Label -> the predictors above the level (not for thin labels), strongest first."""
        found = {}
        for label, entry in self.per_label.items():
            if entry["thin"]:
                continue
            above = [(p["auroc"], name) for name, p in entry["predictors"].items() if p["auroc"] > self.level]
            if above:
                found[label] = [name for _, name in sorted(above, reverse=True)]
        return found

    def warnings(self) -> list[str]:
        """One line per flagged label naming every predictor above the level."""
        lines = []
        for label, names in self.flagged().items():
            predictors = self.per_label[label]["predictors"]
            described = "; ".join(_describe(name, predictors[name]) for name in names)
            outside = " (learnable with the lungs blanked out)" if PROBE in names else ""
            lines.append(f"{label}: predictable without looking at the lungs{outside} from {described}")
        return lines

    def check(self, strict: bool) -> None:
        """With ``strict``, a flagged label is an error (one line: the first warning and how many)."""
        lines = self.warnings()
        if strict and lines:
            more = f" (and {len(lines) - 1} more label(s))" if len(lines) > 1 else ""
            raise DataError(None, f"shortcut audit (strict): {lines[0]}{more}")

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "n_images": self.n_images,
            "flagged": self.flagged(),
            "warnings": self.warnings(),
            "notes": self.notes,
            "probe": self.probe,
            "per_label": self.per_label,
        }

    def log(self) -> None:
        for line in self.warnings():
            log.warning("shortcut: %s", line)
        for line in self.notes:
            log.info("shortcut: %s", line)
        if not self.warnings():
            log.info("shortcut audit: no predictor above AUROC %.2f for any label", self.level)


def audit_table(
    table: dict[str, list[Value]],
    labels: np.ndarray,
    label_names: Sequence[str],
    patient_ids: Sequence[str],
    config: ShortcutAuditConfig,
    *,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
    probe: np.ndarray | None = None,
) -> ShortcutAudit:
    """The audit of images whose :data:`PREDICTORS` are ``table`` (name -> a value per image), with their
    ``labels`` (images x labels, NaN not annotated) and, when the probe ran, its out-of-fold scores."""
    per_label = {}
    for j, label in enumerate(label_names):
        column = labels[:, j]
        positive, negative = int(np.sum(column == 1)), int(np.sum(column == 0))
        predictors = {}
        columns: list[tuple[str, Kind, Sequence[Value]]] = [(n, PREDICTORS[n], table[n]) for n in PREDICTORS]
        if probe is not None:
            columns.append((PROBE, "probability", [json_float(v) for v in probe[:, j]]))
        for name, kind, values in columns:
            entry = predictor_entry(values, kind, column, patient_ids, config.n_boot, seed)
            if entry is not None:
                predictors[name] = entry
        per_label[label] = {
            "n_positive": positive,
            "n_negative": negative,
            "thin": min(positive, negative) < min_count,
            "predictors": predictors,
        }
    notes = source_notes(table["source"], labels, label_names)
    return ShortcutAudit(config.level, len(labels), per_label, notes)


def source_notes(sources: Sequence[Value], labels: np.ndarray, label_names: Sequence[str]) -> list[str]:
    """One sentence per label that some of several combined sources do not annotate."""
    names = sorted({str(s) for s in sources if s is not None})
    if len(names) < 2:
        return []
    source = np.array([str(s) for s in sources])
    notes = []
    for j, label in enumerate(label_names):
        annotating = [n for n in names if (~np.isnan(labels[source == n, j])).any()]
        lacking = [n for n in names if n not in annotating]
        if annotating and lacking:
            notes.append(
                f"{label} is annotated only by {', '.join(annotating)} (not by {', '.join(lacking)}): the "
                f"model learns it from {', '.join(annotating)} images alone, so whatever marks those images "
                "(size, processing, markers) can stand for it against the other sources"
            )
    return notes


def audit_dataset(
    dataset: Any,
    label_names: Sequence[str],
    config: ShortcutAuditConfig,
    *,
    image_size: tuple[int, int] = (224, 224),
    resize: ResizeMode = "letterbox",
    indices: Sequence[int] | None = None,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
) -> ShortcutAudit:
    """Read up to ``config.max_images`` images of ``dataset`` (samples as read, untransformed; a seeded
    sample of ``indices`` when there are more) once, and audit them: their predictors under the fit
    ``resize`` to ``image_size``, and the masked probe when ``config.probe``."""
    chosen = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=int)
    if len(chosen) > config.max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, config.max_images, replace=False))
    fit: Callable[[Sample], Sample] = RESIZE_MODES[resize](probe_size(image_size))
    table: dict[str, list[Value]] = {name: [] for name in PREDICTORS}
    rows, patients, images, masked = [], [], [], 0
    for index in track(chosen.tolist(), description="shortcut audit", transient=True):
        sample = dataset[index]
        if sample is None:
            continue
        seen, used_mask = probe_input(sample, fit)
        for name, value in image_predictors(sample.meta, seen.meta.geometry).items():
            table[name].append(value)
        nan = np.full(len(label_names), np.nan, dtype=np.float32)
        rows.append(nan if sample.labels is None else sample.labels.numpy())
        patients.append(sample.meta.patient_id)
        images.append(seen.image)
        masked += used_mask
    if not rows:
        raise DataError(None, "shortcut audit: no readable image")
    labels = np.stack(rows).astype(np.float64)
    scores = None
    if config.probe:
        scores = probe_scores(torch.stack(images), labels, patients, seed)
    audit = audit_table(
        table, labels, label_names, patients, config, seed=seed, min_count=min_count, probe=scores
    )
    if config.probe:
        audit.probe = {
            "input_size": list(probe_size(image_size)),
            "resize": resize,
            "lung_masks": masked,
            "central_box": len(rows) - masked,
        }
    return audit


def _strata(values: Sequence[Value], kind: Kind, name: str) -> tuple[np.ndarray, list[str]] | None:
    """Per image, stratum 0 or 1 (-1: no value) of a predictor, and the two strata in words: at or below
    / above the median, or the largest category / the others."""
    if kind == "numeric":
        raw = np.array([np.nan if v is None else float(v) for v in values])
        if np.all(np.isnan(raw)):
            return None
        median = float(np.nanmedian(raw))
        low = raw <= median
        words = [f"{name} <= {median:.4g}", f"{name} > {median:.4g}"]
        if not np.any(~low & ~np.isnan(raw)):
            low, words = raw < median, [f"{name} < {median:.4g}", f"{name} >= {median:.4g}"]
        return np.where(np.isnan(raw), -1, np.where(low, 0, 1)), words
    categories = _pooled(values)
    counts: dict[str, int] = {}
    for category in categories:
        if category is not None:
            counts[category] = counts.get(category, 0) + 1
    if not counts:
        return None
    top = max(counts, key=lambda c: counts[c])
    stratum = np.array([-1 if c is None else 0 if c == top else 1 for c in categories])
    return stratum, [f"{name} = {top}", f"{name} not {top}"]


def stratified_section(
    metas: Sequence[SampleMeta],
    probs: ArrayLike,
    labels: ArrayLike,
    label_names: Sequence[str],
    patient_ids: Sequence[str],
    config: ShortcutAuditConfig,
    *,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
) -> dict[str, Any] | None:
    """The evaluation's "shortcuts" section: the predictors on the evaluated images (``metas``, after
    the evaluation transform), per label the strongest with its AUROC, and the model's AUROC within each
    of its two strata; None where no image carries a label."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if not (~np.isnan(labels)).any():
        return None
    table: dict[str, list[Value]] = {name: [] for name in PREDICTORS}
    for meta in metas:
        for name, value in image_predictors(meta, meta.geometry).items():
            table[name].append(value)
    audit = audit_table(table, labels, label_names, patient_ids, config, seed=seed, min_count=min_count)
    per_label = {}
    for j, label in enumerate(label_names):
        entry = audit.per_label[label]
        row: dict[str, Any] = {"thin": entry["thin"]} | dict.fromkeys(STRATIFIED_COLUMNS)
        if entry["predictors"]:
            name = max(entry["predictors"], key=lambda n: entry["predictors"][n]["auroc"])
            strongest = entry["predictors"][name]
            row |= {"strongest_predictor": name, "direction": strongest["direction"]}
            row |= {k.replace("auroc", "predictor_auroc"): strongest[k] for k in strongest if "auroc" in k}
            row |= _within_strata(
                table[name], name, probs[:, j], labels[:, j], patient_ids, config.n_boot, seed
            )
        per_label[label] = row
    return {
        "level": audit.level,
        "flagged_labels": sorted(audit.flagged()),
        "predictors": {label: entry["predictors"] for label, entry in audit.per_label.items()},
        "per_label": per_label,
    }


def stratified_notes(section: dict[str, Any]) -> list[str]:
    """The report's sentence for each flagged label of a "shortcuts" section: its strongest predictor
    and the model's AUROC within the two strata."""
    notes = []
    for label in section["flagged_labels"]:
        row = section["per_label"][label]
        values = [row[f"model_auroc_{side}"] for side in ("a", "b")]
        strata = [
            f"{'undefined' if value is None else format(value, '.2f')} where {row[f'stratum_{side}']}"
            for value, side in zip(values, ("a", "b"), strict=True)
        ]
        notes.append(
            f"Shortcut: on the evaluated images {row['strongest_predictor']} alone predicts {label} "
            f"(AUROC {row['predictor_auroc']:.2f}, {row['direction']}); the model's AUROC is "
            f"{' and '.join(strata)}. An AUROC near 0.5 within the strata means it learnt the shortcut."
        )
    return notes


def _within_strata(
    values: Sequence[Value],
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    strata = _strata(values, PREDICTORS[name], name)
    if strata is None:
        return {}
    stratum, words = strata
    ids = np.asarray(patient_ids)
    out: dict[str, Any] = {}
    for k, side in enumerate(("a", "b")):
        keep = stratum == k
        inside = auroc_with_ci("auroc", scores[keep], labels[keep], ids[keep], n_boot=n_boot, seed=seed)
        annotated = labels[keep]
        out |= {
            f"stratum_{side}": words[k],
            f"n_positive_{side}": int(np.sum(annotated == 1)),
            f"n_negative_{side}": int(np.sum(annotated == 0)),
            **{key.replace("auroc", f"model_auroc_{side}"): value for key, value in inside.items()},
        }
    return out
