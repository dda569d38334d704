"""NYU breast cancer screening sample exams (the sample data of NYU's GMIC and GLAM models).

Layout: ``exam_list_before_cropping.pkl`` (a list of exams; each maps a view such as "L-CC" to image names
and holds a ``cancer_label`` dict with left/right benign/malignant flags), ``images_cropped/<image>.png``
(the models' input frame, 16-bit), ``images_original/<image>.png`` (12-bit values in 16-bit PNGs) and
``segmentation/<image>_<benign|malignant>.png`` (lesion masks, cropped frame only). The exam list is read
with ``load_plain_pickle``, which refuses any pickle that would construct objects.

Labels ("benign", "malignant") are the flags of the image's breast. Masks exist only where a lesion was
outlined, so a missing mask means "not provided", not "no lesion". Exams without image files here are
dropped. ``patient_id`` is the exam's position in the list (one exam per woman in this sample).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from radsight.data.plain_pickle import load_plain_pickle
from radsight.data.sources.base import Record, SourceDataset, drop_missing_images
from radsight.errors import DataError

VIEWS = ("L-CC", "L-MLO", "R-CC", "R-MLO")
SIDES = {"L": "left", "R": "right"}


class NYUMammo(SourceDataset):
    """Screening mammograms, one per view, with breast-level benign/malignant labels and lesion masks."""

    name = "nyu_mammo"
    all_labels = ("benign", "malignant")

    def __init__(self, root: str | Path, *, cropped: bool = True, **options: Any) -> None:
        """``cropped``: read the cropped model inputs (with lesion masks) or the originals (no masks, as
        the masks exist only in the cropped frame)."""
        self.cropped = cropped
        options["bits_stored"] = self.read_options_for({**options, "cropped": cropped})["bits_stored"]
        super().__init__(root, **options)

    @classmethod
    def read_options_for(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The originals hold 12-bit values and the crops 16-bit ones, whatever their brightest pixel,
        unless the recipe's ``bits_stored`` says otherwise."""
        default = 16 if options.get("cropped", True) else 12
        return {**super().read_options_for(options), "bits_stored": options.get("bits_stored") or default}

    def _scan(self) -> list[Record]:
        exam_path = self.root / "exam_list_before_cropping.pkl"
        exams = load_plain_pickle(exam_path)
        if not isinstance(exams, list):
            raise DataError(exam_path, f"expected a list of exams, found {type(exams).__name__}")
        folder = self.root / ("images_cropped" if self.cropped else "images_original")
        records = []
        for index, exam in enumerate(exams):
            cancer = exam.get("cancer_label") if isinstance(exam, dict) else None
            if not isinstance(cancer, dict):
                raise DataError(exam_path, f"exam {index} has no cancer_label dict")
            for view_key in VIEWS:
                laterality, view = view_key.split("-")
                images = exam.get(view_key, [])
                if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
                    problem = f"exam {index}: {view_key} is {_shown(images)}, not a list of image names"
                    raise DataError(exam_path, problem)
                for image in images:
                    records.append(
                        Record(
                            image_path=folder / f"{image}.png",
                            patient_id=str(index),
                            labels=_breast_labels(cancer, SIDES[laterality], exam_path, index),
                            mask_paths=self._masks(str(image)),
                            view=view,
                            extra={"laterality": laterality, "exam": index},
                        )
                    )
        return drop_missing_images(records, self.name)

    def _masks(self, image: str) -> dict[str, Path]:
        """Lesion masks outlined on this image, in the cropped frame only."""
        if not self.cropped:
            return {}
        paths = {kind: self.root / "segmentation" / f"{image}_{kind}.png" for kind in self.all_labels}
        return {kind: path for kind, path in paths.items() if path.is_file()}


def _breast_labels(cancer: dict[str, Any], side: str, path: Path, exam: int) -> np.ndarray:
    """(benign, malignant) flags of one breast as a float vector."""
    keys = (f"{side}_benign", f"{side}_malignant")
    missing = [key for key in keys if key not in cancer]
    if missing:
        raise DataError(path, f"exam {exam}: cancer_label lacks {missing}")
    for key in keys:
        if not isinstance(cancer[key], int | float) or cancer[key] not in (0, 1):
            raise DataError(path, f"exam {exam}: cancer_label {key} is {_shown(cancer[key])}, not 0 or 1")
    return np.array([float(cancer[key]) for key in keys], dtype=np.float32)


def _shown(value: Any) -> str:
    """A value of the exam list as it reads in an error line (long ones cut)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
