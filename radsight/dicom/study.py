"""One DICOM image to its DICOM results, and a whole PACS study: the flow ``predict --dicom``,
``predict --pacs`` and ``listen`` share.

Only projection radiographs are predicted (CR, DX, MG), and of chest films only frontal views (PA,
AP); any other image is one line saying why, and the rest of a study goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset

from radsight.dicom.out import ModelIdentity, results, source_header
from radsight.dicom.pacs import PacsClient
from radsight.errors import DataError
from radsight.infer import LoadedModel, infer

log = logging.getLogger(__name__)

MODALITIES = ("CR", "DX", "MG")
FRONTAL_VIEWS = ("PA", "AP")
RESULT_MODALITIES = ("SR", "OT", "SEG")  # radsight's own results (and their kind) are never predicted


class NotPredicted(DataError):
    """An image radsight does not predict (another modality, a lateral view): skipped, not failed."""


@dataclass
class DicomPredictor:
    """A loaded model that turns DICOM images into their SR, overlay and map objects."""

    model: LoadedModel
    identity: ModelIdentity
    how: str | None = None

    @classmethod
    def load(cls, model_dir: str | Path, how: str | None = None) -> DicomPredictor:
        model = LoadedModel.load(model_dir)
        return cls(model, ModelIdentity.of(model_dir, model), how)

    def predict(self, file: str | Path | bytes, name: str) -> list[Dataset]:
        """The results of one DICOM file (path or bytes); DataError for a bad file, NotPredicted for one
        radsight does not predict."""
        header = source_header(file, name)
        check_predictable(header, name)
        prediction = infer(self.model, file, name=name, how=self.how)
        for warning in prediction.warnings:
            log.warning("%s: %s", name, warning)
        return results(prediction, header, self.identity)

    def predict_dataset(self, dataset: Dataset, name: str) -> list[Dataset]:
        """The results of a dataset received over the network."""
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return self.predict(buffer.getvalue(), name)


def check_predictable(header: Dataset, name: str) -> None:
    """NotPredicted unless the image is a projection radiograph and, for chest films, a frontal view."""
    modality = str(header.get("Modality", "")).strip()
    if modality not in MODALITIES:
        raise NotPredicted(name, f"modality {modality or 'missing'} is not predicted (only {MODALITIES})")
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(name, f"multi-frame object ({header.NumberOfFrames} frames): one image expected")
    view = str(header.get("ViewPosition", "")).strip()
    if modality != "MG" and view not in FRONTAL_VIEWS:
        raise NotPredicted(name, f"view {view or 'missing'} is not frontal (only {FRONTAL_VIEWS})")


@dataclass
class StudyOutcome:
    """What happened to each image of a study: results stored (new or already held), skipped, failed."""

    stored: list[str] = field(default_factory=list)
    already_held: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def predict_study(predictor: DicomPredictor, pacs: PacsClient, study_uid: str) -> StudyOutcome:
    """Pull a study (WADO-RS), predict every frontal image and push its results back (STOW-RS).

    A bad image is one line and the rest of the study goes on; a study with no frontal image, or a PACS
    that fails, is a DataError. Results the PACS already holds are not stored again.
    """
    outcome = StudyOutcome()
    refs = pacs.instances(study_uid)
    if not refs:
        raise DataError(pacs.url, f"study {study_uid} not found (no instances)")
    results_made = False
    for ref in refs:
        if ref.modality in RESULT_MODALITIES:
            continue
        name = f"{study_uid}/{ref.sop_uid}"
        dataset = pacs.fetch(ref)
        try:
            made = predictor.predict_dataset(dataset, name)
        except NotPredicted as reason:
            outcome.skipped.append(str(reason))
            continue
        except DataError as error:
            outcome.failed.append(str(error))
            continue
        results_made = True
        stored = {str(d.SOPInstanceUID) for d in pacs.store(made)}
        for result in made:
            uid = str(result.SOPInstanceUID)
            (outcome.stored if uid in stored else outcome.already_held).append(uid)
    if not results_made and not outcome.failed:
        raise _no_frontal_image(pacs, study_uid, outcome.skipped)
    return outcome


def first_frontal_image(pacs: PacsClient, study_uid: str) -> tuple[Dataset, str]:
    """The study's first image radsight predicts (as :func:`predict_study` chooses them) and its name."""
    skipped = []
    for ref in pacs.instances(study_uid):
        if ref.modality in RESULT_MODALITIES:
            continue
        name = f"{study_uid}/{ref.sop_uid}"
        dataset = pacs.fetch(ref)
        try:
            check_predictable(dataset, name)
        except NotPredicted as reason:
            skipped.append(str(reason))
            continue
        return dataset, name
    raise _no_frontal_image(pacs, study_uid, skipped)


def _no_frontal_image(pacs: PacsClient, study_uid: str, skipped: list[str]) -> DataError:
    reasons = "; ".join(skipped) or "no image"
    return DataError(pacs.url, f"study {study_uid} has no frontal image to predict ({reasons})")
