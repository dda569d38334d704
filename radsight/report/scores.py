"""``image_scores.json``: every evaluated image's probabilities and labels, so that runs scored on the
same images can be compared later (``radsight compare``) without the models.

Not to be confused with ``predictions.json`` of ``radsight predict``, which describes files, not a
labelled evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radsight.checkpoints import write_json
from radsight.run_folder import SCORES_FILE


@dataclass
class ImageScores:
    """Per-image probabilities and labels (NaN = not annotated) of one evaluation."""

    label_names: list[str]
    probs: np.ndarray
    labels: np.ndarray
    patient_ids: list[str]
    paths: list[str]

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / SCORES_FILE
        rows = [
            {"path": p, "patient_id": pid, "probs": row.tolist(), "labels": _json_labels(truth)}
            for p, pid, row, truth in zip(self.paths, self.patient_ids, self.probs, self.labels, strict=True)
        ]
        write_json(path, {"label_names": self.label_names, "rows": rows})
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> ImageScores:
        payload = json.loads((Path(run_dir) / SCORES_FILE).read_text())
        rows = payload["rows"]
        return cls(
            label_names=payload["label_names"],
            probs=np.array([r["probs"] for r in rows], dtype=np.float64),
            labels=np.array(
                [[np.nan if v is None else v for v in r["labels"]] for r in rows], dtype=np.float64
            ),
            patient_ids=[r["patient_id"] for r in rows],
            paths=[r["path"] for r in rows],
        )


def _json_labels(row: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in row]
