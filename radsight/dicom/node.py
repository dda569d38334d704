"""A DICOM node (pynetdicom Storage SCP): each image received is predicted and its SR, overlay and map
are sent on by C-STORE to a destination.

It accepts the projection radiograph storage classes only (CR, DX, MG; uncompressed, JPEG Lossless,
JPEG-LS and JPEG 2000), so a sender offering anything else (a CT, an SR) is refused at association.
It answers every C-STORE with a DIMSE status: Success when the results were sent (or when the image is
not one radsight predicts, e.g. a lateral view, which is logged), 0xC000 "cannot understand" for an
object it cannot read (no pixel data, several frames, unsupported photometric interpretation, no study
UID), and 0x0110 "processing failure" when the destination does not take the results. It keeps serving
after any of them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    Verification,
)

from radsight.errors import ConfigError, DataError

if TYPE_CHECKING:  # the model (and torch) is imported by whoever loads it, after the options are checked
    from radsight.dicom.study import DicomPredictor

log = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
RESULT_CLASSES = (ComprehensiveSRStorage, SecondaryCaptureImageStorage, SegmentationStorage)
IMAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
)
IMAGE_SYNTAXES = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
)


@dataclass(frozen=True)
class Destination:
    """A DICOM peer: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = re.fullmatch(r"([^@]{1,16})@([^:@]+):(\d{1,5})", text.strip())
        if not match:
            raise ConfigError(f"--forward expects AE@HOST:PORT (e.g. PACS@10.0.0.5:104), got {text!r}")
        return cls(match.group(1), match.group(2), int(match.group(3)))


class StorageNode:
    """The Storage SCP's C-STORE handler: predict, forward, answer."""

    def __init__(self, predictor: DicomPredictor, destination: Destination, ae_title: str) -> None:
        self.predictor = predictor
        self.destination = destination
        self.ae_title = ae_title

    def handle_store(self, event: Any) -> int | Dataset:
        from radsight.dicom.study import NotPredicted

        dataset = event.dataset
        dataset.file_meta = event.file_meta
        name = f"{event.assoc.requestor.ae_title}/{dataset.get('SOPInstanceUID', '?')}"
        try:
            made = self.predictor.predict_dataset(dataset, name)
        except NotPredicted as reason:
            log.info("%s", reason)
            return SUCCESS
        except DataError as error:
            log.error("%s", error)
            return _status(CANNOT_UNDERSTAND, error.problem)
        except Exception as error:  # a received object must never stop the node
            log.exception("%s: cannot predict", name)
            return _status(CANNOT_UNDERSTAND, f"{type(error).__name__}: {error}")
        problem = self.forward(made)
        if problem:
            log.error("%s: results not forwarded to %s (%s)", name, self.destination.ae_title, problem)
            return _status(PROCESSING_FAILURE, f"results not forwarded: {problem}")
        log.info("%s: %d result object(s) sent to %s", name, len(made), self.destination.ae_title)
        return SUCCESS

    def forward(self, datasets: list[Dataset]) -> str | None:
        """C-STORE the results to the destination; the problem in words, None when all were stored."""
        sender = AE(ae_title=self.ae_title)
        for sop_class in RESULT_CLASSES:
            sender.add_requested_context(sop_class)
        target = self.destination
        association = sender.associate(target.host, target.port, ae_title=target.ae_title)
        if not association.is_established:
            return f"no association with {target.ae_title}@{target.host}:{target.port}"
        try:
            for dataset in datasets:
                answer = association.send_c_store(dataset)
                status = int(answer.Status) if "Status" in answer else None
                if status != SUCCESS:
                    return f"{dataset.SOPClassUID.name} answered status {status}"
        finally:
            association.release()
        return None


def build_ae(node: StorageNode) -> AE:
    """The Storage SCP of the projection radiograph classes (and C-ECHO)."""
    ae = AE(ae_title=node.ae_title)
    for sop_class in IMAGE_CLASSES:
        ae.add_supported_context(sop_class, list(IMAGE_SYNTAXES))
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0
    return ae


def serve(
    predictor: DicomPredictor, port: int, destination: Destination, *, ae_title: str = "RADSIGHT", block=True
) -> Any:
    """Listen on ``port`` on every interface; with ``block=False`` return the server (``shutdown()``)."""
    node = StorageNode(predictor, destination, ae_title)
    handlers = [(evt.EVT_C_STORE, node.handle_store)]
    return build_ae(node).start_server(("0.0.0.0", port), block=block, evt_handlers=handlers)


def _status(code: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = comment[:64]
    return answer
