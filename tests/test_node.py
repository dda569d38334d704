"""The DICOM node with a real Orthanc as sender and receiver on loopback: each image Orthanc sends is
predicted and its results arrive back in Orthanc; a bad object is answered with a failure status and
the node keeps serving."""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from conftest import run_cli
from orthanc import AE_TITLE, PASSWORD, USER, free_port, running_orthanc
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    CTImageStorage,
)
from test_cli import assert_one_line_error
from test_pacs import as_new_instance

from radsight.dicom.node import CANNOT_UNDERSTAND, Destination, serve
from radsight.dicom.out import KINDS, read_probabilities
from radsight.dicom.pacs import PacsClient
from radsight.dicom.study import DicomPredictor
from radsight.infer import LoadedModel, infer

RG1 = Path(get_testdata_file("RG1_UNCR.dcm"))


def film(**changes) -> pydicom.Dataset:
    """The RG1 film as a new instance of its study, with ``changes`` (None deletes an attribute)."""
    return as_new_instance(pydicom.dcmread(RG1), **changes)


def as_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, untrained_model: Path):
    """Orthanc, which knows the node as the modality ``radsight``, and the node forwarding to Orthanc."""
    port = free_port()
    with running_orthanc(
        tmp_path_factory.mktemp("orthanc"), {"radsight": ["RADSIGHT", "127.0.0.1", port]}
    ) as pacs:
        destination = Destination(AE_TITLE, "127.0.0.1", pacs.dicom_port)
        server = serve(DicomPredictor.load(untrained_model), port, destination, block=False)
        try:
            yield pacs, port
        finally:
            server.shutdown()


def send_from_orthanc(pacs, dataset: pydicom.Dataset) -> dict:
    """Upload an instance to Orthanc, then have Orthanc C-STORE it to the node; Orthanc's job report."""
    uploaded = pacs.rest("POST", "/instances", data=as_bytes(dataset)).json()
    job = {"Resources": [uploaded["ID"]], "Synchronous": False}
    job_id = pacs.rest("POST", "/modalities/radsight/store", json=job).json()["ID"]
    while (state := pacs.rest("GET", f"/jobs/{job_id}").json())["State"] in ("Pending", "Running"):
        time.sleep(0.2)
    return state


def test_orthanc_sends_the_node_predicts_and_orthanc_receives(network, untrained_model) -> None:
    pacs, _ = network
    source = film()
    assert send_from_orthanc(pacs, source)["State"] == "Success"
    client = PacsClient(pacs.dicomweb, (USER, PASSWORD))
    found = {ref.modality: ref for ref in client.instances(source.StudyInstanceUID)}
    assert {"SR", "OT", "SEG"} <= set(found)
    local = infer(LoadedModel.load(untrained_model), as_bytes(source), name="film.dcm").probabilities
    assert read_probabilities(client.fetch(found["SR"])) == pytest.approx(local, abs=1e-6)


def test_a_bad_object_gets_a_failure_status_and_the_node_keeps_serving(network, untrained_model) -> None:
    pacs, port = network
    sender = AE(ae_title="TESTSCU")
    sender.add_requested_context(ComputedRadiographyImageStorage)
    association = sender.associate("127.0.0.1", port, ae_title="RADSIGHT")
    assert association.is_established
    try:
        answer = association.send_c_store(film(PixelData=None))
        assert answer.Status == CANNOT_UNDERSTAND
        assert "no pixel data" in answer.ErrorComment
        answer = association.send_c_store(film(PhotometricInterpretation="PALETTE COLOR"))
        assert answer.Status == CANNOT_UNDERSTAND
        assert "unsupported photometric interpretation" in answer.ErrorComment
    finally:
        association.release()
    # Orthanc's own store of a bad object fails, and a good one after it still goes through
    assert send_from_orthanc(pacs, film(PixelData=None))["State"] == "Failure"
    good = film()
    assert send_from_orthanc(pacs, good)["State"] == "Success"
    client = PacsClient(pacs.dicomweb, (USER, PASSWORD))
    held = {ref.sop_uid for ref in client.instances(good.StudyInstanceUID)}
    identity = DicomPredictor.load(untrained_model).identity
    assert {identity.uid(good.SOPInstanceUID, kind) for kind in KINDS} <= held


def test_other_objects_than_radiographs_are_refused_at_association(network) -> None:
    _, port = network
    sender = AE(ae_title="TESTSCU")
    sender.add_requested_context(CTImageStorage)
    sender.add_requested_context(ComputedRadiographyImageStorage)
    association = sender.associate("127.0.0.1", port, ae_title="RADSIGHT")
    try:
        accepted = {context.abstract_syntax for context in association.accepted_contexts}
        rejected = {context.abstract_syntax for context in association.rejected_contexts}
        assert accepted == {ComputedRadiographyImageStorage} and rejected == {CTImageStorage}
    finally:
        association.release()


def test_a_wrong_destination_is_one_line(untrained_model) -> None:
    result = run_cli(
        "listen", "--model", untrained_model, "--port", "11112", "--forward", "PACS:104", expect=2
    )
    assert_one_line_error(result.output, "--forward expects AE@HOST:PORT", "'PACS:104'")
