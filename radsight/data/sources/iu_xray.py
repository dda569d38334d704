"""Indiana University chest X-ray collection (Open-i): radiology reports with their images.

Layout: ``indiana_reports.csv`` (uid, Problems, findings, impression, ...) and ``indiana_projections.csv``
(uid, filename, projection) in the Kaggle form; images in ``images_dir`` (default
``<root>/sample-images/images``) named either the Kaggle way ("1900_IM-0584-1001.dcm.png") or the Open-i
way ("CXR1900_IM-0584-1001.png"). Rows whose image is in neither form are dropped.

The report is the findings and impression sections (with ``section_headers``, headed "FINDINGS:" and
"IMPRESSION:", so that a captioning recipe can keep either, see :mod:`radsight.text.clean`). Labels
come from the MeSH-derived ``Problems`` column: "normal" plus the ten terms most often indexed that name
a finding (anatomical headings such as "Lung" or "Spine", which only locate an unspecified finding, are
skipped). A report indexed "No Indexing" has every label NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from radsight.data.sources.base import Record, SourceDataset, cell_text, drop_missing_images, read_csv
from radsight.errors import ConfigError, DataError

PROJECTIONS = ("Frontal", "Lateral")
NOT_INDEXED = "No Indexing"
REPORTS = "indiana_reports.csv"


def load_reports(root: str | Path) -> list[str]:
    """Every report's text (findings then impression) in uid order, for tokenizer or caption training
    without images; a report with neither section gives an empty string, keeping one entry per uid."""
    reports = read_csv(Path(root) / REPORTS, required=["uid", "findings", "impression"])
    return [_report_text(row) or "" for row in reports.sort_values("uid").to_dict("records")]


def _report_text(row: dict[str, Any], headed: bool = False) -> str | None:
    parts = [(name, cell_text(row[name.lower()])) for name in ("FINDINGS", "IMPRESSION")]
    return " ".join(f"{name}: {text}" if headed else text for name, text in parts if text) or None


class IUXray(SourceDataset):
    """IU X-ray images (frontal by default) with their report and report-derived labels."""

    name = "iu_xray"
    all_labels = (
        "normal",
        "Opacity",
        "Cardiomegaly",
        "Pulmonary Atelectasis",
        "Calcinosis",
        "Calcified Granuloma",
        "Cicatrix",
        "Markings",
        "Pleural Effusion",
        "Atherosclerosis",
        "Airspace Disease",
    )

    def __init__(
        self,
        root: str | Path,
        *,
        images_dir: str | Path | None = None,
        projection: str | None = "Frontal",
        section_headers: bool = False,
        **options: Any,
    ) -> None:
        """``images_dir``: folder of the image files; ``projection``: "Frontal", "Lateral" or None (both);
        ``section_headers``: head the report's sections "FINDINGS:" and "IMPRESSION:"."""
        if projection is not None and projection not in PROJECTIONS:
            raise ConfigError(f"iu_xray: projection must be {list(PROJECTIONS)} or None, not {projection!r}")
        self.projection = projection
        self.section_headers = section_headers
        self.images_dir = None if images_dir is None else Path(images_dir)
        super().__init__(root, **options)

    def _scan(self) -> list[Record]:
        images = self.images_dir or self.root / "sample-images" / "images"
        if not images.is_dir():
            raise DataError(images, "iu_xray image folder not found (pass images_dir=...)")
        reports = read_csv(self.root / REPORTS, required=["uid", "Problems", "findings", "impression"])
        projections_path = self.root / "indiana_projections.csv"
        projections = read_csv(projections_path, required=["uid", "filename", "projection"])
        if self.projection is not None:
            projections = projections[projections["projection"] == self.projection]
        rows = projections.merge(reports, on="uid", how="left", indicator=True)
        orphans = rows.loc[rows["_merge"] == "left_only", "uid"]
        if len(orphans):
            raise DataError(projections_path, f"uid {orphans.iloc[0]} has no row in {REPORTS}")
        present = {path.name for path in images.iterdir()}
        records = []
        for row in rows.to_dict("records"):
            kaggle = str(row["filename"])
            openi = f"CXR{kaggle.removesuffix('.dcm.png')}.png"
            records.append(
                Record(
                    image_path=images / (openi if openi in present else kaggle),
                    patient_id=str(row["uid"]),
                    labels=self._labels(str(row["Problems"])),
                    report=_report_text(row, self.section_headers),
                    view=str(row["projection"]),
                    extra={"problems": str(row["Problems"])},
                )
            )
        return drop_missing_images(records, self.name)

    def _labels(self, problems: str) -> np.ndarray:
        """Multi-hot over ``all_labels`` of the ';'-separated Problems; NaN when the report is not indexed."""
        terms = problem_terms(problems)
        if terms is None:
            return np.full(len(self.all_labels), np.nan, dtype=np.float32)
        return np.array([name in terms for name in self.all_labels], dtype=np.float32)


def load_coded_reports(root: str | Path) -> list[tuple[str, set[str] | None]]:
    """Every report's text (as ``load_reports``) with its ``Problems`` headings (None: not indexed), in
    uid order: the coders' reading of each report, for checking a report labeller against."""
    reports = read_csv(Path(root) / REPORTS, required=["uid", "Problems", "findings", "impression"])
    rows = reports.sort_values("uid").to_dict("records")
    return [(_report_text(row) or "", problem_terms(str(row["Problems"]))) for row in rows]


def problem_terms(problems: str) -> set[str] | None:
    """The headings of a ';'-separated Problems cell, or None when the report was not indexed."""
    terms = {term.strip() for term in problems.split(";")}
    return None if NOT_INDEXED in terms else terms
