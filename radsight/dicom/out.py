"""A prediction as DICOM objects that a PACS stores and a viewer shows, written with highdicom.

For one source image three objects, each in the source's study, in a new series of its own, and each
referencing the source SOP instance:

- a Comprehensive SR (TID 1500 measurement report): per label its probability, the operating threshold
  and whether it is reached, by which model (name and version); the regions the model points at (its
  own patches, or the boxes around the map's peak) as 2-D spatial coordinates on the source image;
- a Secondary Capture of the overlay with "NOT FOR DIAGNOSIS" burned in, for viewers showing only images;
- the explanation map as a fractional Segmentation, pixel for pixel on the source image.

UIDs are derived from the source SOP instance and the model, so predicting the same image with the
same model again gives the same objects (a retry stores nothing twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radsight import __version__
from radsight.errors import DataError
from radsight.infer import FilePrediction, LoadedModel
from radsight.metrics.localization import boxes_from_map

SCHEME = "99RADSIGHT"  # private coding scheme of radsight's own concepts (labels, thresholds)
PROBABILITY = hd.sr.CodedConcept("probability", SCHEME, "Probability of finding")
THRESHOLD = hd.sr.CodedConcept("operating-threshold", SCHEME, "Operating threshold")
REACHED = hd.sr.CodedConcept("threshold-reached", SCHEME, "Probability reaches operating threshold")
PROCEDURE = hd.sr.CodedConcept("image-analysis", SCHEME, "Automated image analysis by radsight")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
MANUFACTURER = "radsight"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS"
KINDS = ("sr", "overlay", "map")
SERIES_NUMBERS = {"sr": 9901, "overlay": 9902, "map": 9903}
PATIENT_AND_STUDY = (  # the type 2 attributes every result copies from its source
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "ReferringPhysicianName",
    "AccessionNumber",
)
MAP_REGION_THRESHOLD = 0.5  # a map's region: the boxes around where it reaches half its peak


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a result: a readable name and a version that changes with its weights."""

    name: str
    version: str

    @classmethod
    def of(cls, model_dir: str | Path, model: LoadedModel) -> ModelIdentity:
        digest = hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
        return cls(f"radsight {model.recipe.method} {model.recipe.name}"[:64], digest[:16])

    def uid(self, *parts: str) -> str:
        """A UID determined by the model and ``parts`` (the same inputs give the same UID)."""
        return generate_uid(entropy_srcs=[self.name, self.version, *parts])


def source_header(file: str | Path | bytes, name: str) -> Dataset:
    """The source image's header (no pixels), checked for what results need to be filed with it."""
    opened: Any = pydicom.filebase.DicomBytesIO(bytes(file)) if isinstance(file, bytes) else file
    try:
        header = pydicom.dcmread(opened, stop_before_pixels=True, force=isinstance(file, bytes))
    except Exception as error:  # pydicom raises many types for an unreadable file
        raise DataError(name, f"not a readable DICOM file ({error})") from None
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(header.get(keyword, "")).strip():
            raise DataError(name, f"DICOM has no {keyword}: results cannot be filed with its study")
    for keyword in PATIENT_AND_STUDY:
        if keyword not in header:
            setattr(header, keyword, "")  # type 2: present and empty means unknown, as results copy it
    return header


def label_code(label: str) -> hd.sr.CodedConcept:
    """A label as a code of radsight's scheme: its name, or a digest of it when longer than a code value
    may be (16 characters), so that labels never share a code."""
    value = label if len(label) <= 16 else hashlib.sha256(label.encode()).hexdigest()[:16]
    return hd.sr.CodedConcept(value, SCHEME, label)


def region_boxes(prediction: FilePrediction) -> np.ndarray:
    """The regions the model points at, xyxy in the file's pixels: its own (e.g. GLAM's patches), else
    the boxes around the map's peak; empty when there is neither."""
    if prediction.regions is not None:
        return prediction.regions.numpy().reshape(-1, 4)
    if prediction.map is None:
        return np.zeros((0, 4))
    return boxes_from_map(prediction.map.numpy(), MAP_REGION_THRESHOLD)


def structured_report(prediction: FilePrediction, source: Dataset, model: ModelIdentity) -> Dataset:
    """The Comprehensive SR of a prediction (see the module docstring)."""
    algorithm = hd.sr.AlgorithmIdentification(name=model.name, version=model.version)
    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
    groups: list[Any] = []
    for label, probability in prediction.probabilities.items():
        finding = label_code(label)
        measurements = [_number(PROBABILITY, probability, algorithm)]
        evaluations = []
        threshold = prediction.thresholds.get(label)
        if threshold is not None:
            measurements.append(_number(THRESHOLD, threshold, algorithm))
            reached = codes.SCT.Yes if probability >= threshold else codes.SCT.No
            evaluations.append(hd.sr.QualitativeEvaluation(REACHED, reached))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=model.uid(source.SOPInstanceUID, "finding", label), identifier=label
                ),
                finding_type=finding,
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations or None,
                source_images=[image],
            )
        )
    top = prediction.top_label
    region_source = hd.sr.SourceImageForRegion.from_source_image(source)
    for index, (x1, y1, x2, y2) in enumerate(region_boxes(prediction)):
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=model.uid(source.SOPInstanceUID, "region", str(index)),
                    identifier=f"{top} region {index + 1}",
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=corners,
                    source_image=region_source,
                ),
                finding_type=label_code(top),
                algorithm_id=algorithm,
                measurements=[_number(PROBABILITY, prediction.probabilities[top], algorithm)],
            )
        )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model.uid("device"), name=model.name, manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report[0],
        **_new_instance("sr", source, model),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"{model.name} findings"[:64],
    )


def overlay_capture(prediction: FilePrediction, source: Dataset, model: ModelIdentity) -> Dataset:
    """The overlay as a Secondary Capture image, "NOT FOR DIAGNOSIS" burned in."""
    if prediction.map is None:
        raise DataError(prediction.file.name, "no map to draw: predict with a map for an overlay")
    drawn = Image.fromarray(prediction.file.draw(prediction.map, prediction.headline, prediction.regions))
    drawn = drawn.convert("RGB")
    _burn_in(drawn, NOT_FOR_DIAGNOSIS)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.asarray(drawn),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),  # a placeholder highdicom requires; the source's own is copied below
        **_new_instance("overlay", source, model),
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    capture.PatientOrientation = source.get("PatientOrientation", "")
    if "Laterality" not in capture:
        capture.Laterality = source.get("ImageLaterality") or source.get("Laterality") or ""
    capture.BurnedInAnnotation = "YES"
    capture.SeriesDescription = f"{model.name} overlay, not for diagnosis"[:64]
    capture.ImageComments = f"{NOT_FOR_DIAGNOSIS}: {model.name} {model.version}"
    capture.DerivationDescription = "explanation map of the model drawn on the source image"
    capture.SourceImageSequence = [_reference(source)]
    return capture


def map_segmentation(prediction: FilePrediction, source: Dataset, model: ModelIdentity) -> Dataset:
    """The explanation map, as a fractional (probability) Segmentation on the source image's pixel grid.

    A Parametric Map needs a frame of reference, which projection radiographs rarely have; a fractional
    Segmentation carries the same map (in 1/255 steps) on any source image."""
    if prediction.map is None:
        raise DataError(prediction.file.name, "no map to store: predict with a map for a map object")
    values = prediction.map.numpy().astype(np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=f"{prediction.top_label} {prediction.map_method}"[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model.name, version=model.version, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    segmentation = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=scaled[None],
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        segment_descriptions=[segment],
        **_new_instance("map", source, model),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=__version__,
        device_serial_number=model.version,
        series_description=f"{model.name} map"[:64],
    )
    if "FrameOfReferenceUID" not in source:  # the source's orientation, empty where it has none (unknown)
        segmentation.PatientOrientation = source.get("PatientOrientation", "")
    measures = segmentation.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence")
    if measures and min(float(v) for v in measures[0].PixelSpacing) <= 0:
        del segmentation.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence  # 0 x 0: spacing unknown
    return segmentation


def results(prediction: FilePrediction, source: Dataset, model: ModelIdentity) -> list[Dataset]:
    """The SR, the overlay and the map of one prediction, in that order."""
    made = [
        structured_report(prediction, source, model),
        overlay_capture(prediction, source, model),
        map_segmentation(prediction, source, model),
    ]
    for dataset in made:  # viewers list a series by its date: the time the results were made
        if "ContentDate" in dataset and "SeriesDate" not in dataset:
            dataset.SeriesDate, dataset.SeriesTime = dataset.ContentDate, dataset.ContentTime
    return made


def read_probabilities(report: Dataset) -> dict[str, float]:
    """Per label the probability a radsight SR states (read back with highdicom's own parser)."""
    parsed = hd.sr.ComprehensiveSR.from_dataset(report)
    found = {}
    for group in parsed.content.get_image_measurement_groups():
        label = group.finding_type.meaning
        for measurement in group.get_measurements(name=PROBABILITY):
            found[label] = float(measurement.value)
    return found


def _number(name: hd.sr.CodedConcept, value: float, algorithm: Any) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=NO_UNITS, algorithm_id=algorithm)


def _new_instance(kind: str, source: Dataset, model: ModelIdentity) -> dict[str, Any]:
    """The series (one per kind, study and model) and instance (one per source image) of a result."""
    return {
        "series_instance_uid": model.uid(source.StudyInstanceUID, kind),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": model.uid(source.SOPInstanceUID, kind),
        "instance_number": int(source.get("InstanceNumber") or 1),
    }


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def _burn_in(image: Image.Image, text: str) -> None:
    """Write ``text`` in white on black across the image's bottom edge, readable at any size."""
    size = max(12, image.height // 30)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = size // 2, image.height - (bottom - top) - size
    draw.rectangle((x - 4, y - 4, x + right - left + 4, y + bottom + 4), fill=(0, 0, 0))
    draw.text((x, y - top), text, fill=(255, 255, 255), font=font)
