"""The PACS round trip with a real Orthanc over DICOMweb: the real RG1 film uploaded, predicted from the
PACS, its results stored back, found by QIDO and read back equal to the local prediction; a PACS that
is down or refuses is one line; a retry stores nothing twice."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pydicom
import pytest
from conftest import run_cli
from orthanc import PASSWORD, USER, free_port, running_orthanc
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_cli import assert_one_line_error

from radsight.dicom.out import read_probabilities
from radsight.dicom.pacs import InstanceRef, PacsClient
from radsight.infer import LoadedModel, infer

RG1 = Path(get_testdata_file("RG1_UNCR.dcm"))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADSIGHT_PACS_USER", USER)
    monkeypatch.setenv("RADSIGHT_PACS_PASSWORD", PASSWORD)


def new_study(**changes) -> pydicom.Dataset:
    """The RG1 film as another study (new UIDs), with ``changes`` (None deletes an attribute)."""
    dataset = pydicom.dcmread(RG1)
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    return as_new_instance(dataset, **changes)


def as_new_instance(dataset: pydicom.Dataset, **changes) -> pydicom.Dataset:
    """``dataset`` with a new SOP Instance UID and ``changes`` (None deletes an attribute)."""
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


def test_round_trip_of_the_real_film(orthanc, logged_in, untrained_model: Path) -> None:
    pacs = PacsClient(orthanc.dicomweb, (USER, PASSWORD))
    source = pydicom.dcmread(RG1)
    assert [str(d.SOPInstanceUID) for d in pacs.store([source])] == [source.SOPInstanceUID]
    study = source.StudyInstanceUID
    assert [s["0020000D"]["Value"][0] for s in pacs.search_studies(PatientID="9RG1")] == [study]

    result = run_cli("predict", "--model", untrained_model, "--pacs", orthanc.dicomweb, "--study", study)
    assert "stored 3 result object(s), 0 already in the PACS" in result.output
    found = {ref.modality: ref for ref in pacs.instances(study)}  # QIDO-RS
    assert set(found) == {"CR", "SR", "OT", "SEG"}
    local = infer(LoadedModel.load(untrained_model), RG1).probabilities
    report = pacs.fetch(found["SR"])  # WADO-RS
    assert read_probabilities(report) == pytest.approx(local, abs=1e-6)

    # every reference of every result resolves to an instance the PACS holds
    capture, segmentation = pacs.fetch(found["OT"]), pacs.fetch(found["SEG"])
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    references = [
        (
            evidence.ReferencedSeriesSequence[0].SeriesInstanceUID,
            evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        ),
        (source.SeriesInstanceUID, capture.SourceImageSequence[0].ReferencedSOPInstanceUID),
        (
            segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID,
            segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID,
        ),
    ]
    for series_uid, sop_uid in references:
        resolved = pacs.fetch(InstanceRef(study, series_uid, sop_uid, None, None))
        assert resolved.SOPInstanceUID == source.SOPInstanceUID

    # a retry stores nothing twice
    again = run_cli("predict", "--model", untrained_model, "--pacs", orthanc.dicomweb, "--study", study)
    assert "stored 0 result object(s), 3 already in the PACS" in again.output
    assert len(pacs.instances(study)) == 4


def test_credentials_from_a_file(orthanc, untrained_model, tmp_path, monkeypatch) -> None:
    secret = tmp_path / "pacs.credentials"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    monkeypatch.setenv("RADSIGHT_PACS_CREDENTIALS", str(secret))
    study = new_study(ViewPosition="LL")
    PacsClient(orthanc.dicomweb, (USER, PASSWORD)).store([study])
    uid = study.StudyInstanceUID
    result = run_cli(
        "predict", "--model", untrained_model, "--pacs", orthanc.dicomweb, "--study", uid, expect=2
    )
    # the file's credentials were accepted: the answer is about the study, which has no frontal image
    assert_one_line_error(result.output, f"study {uid} has no frontal image", "view LL is not frontal")


def test_a_bad_image_is_one_line_and_the_rest_of_the_study_completes(orthanc, logged_in, untrained_model):
    good = new_study()
    bad = new_study(PixelData=None)
    bad.StudyInstanceUID = good.StudyInstanceUID
    pacs = PacsClient(orthanc.dicomweb, (USER, PASSWORD))
    pacs.store([good, bad])
    study = good.StudyInstanceUID
    result = run_cli(
        "predict", "--model", untrained_model, "--pacs", orthanc.dicomweb, "--study", study, expect=2
    )
    assert_one_line_error(result.output, bad.SOPInstanceUID, "no pixel data")
    assert "stored 3 result object(s)" in result.output
    assert sorted(ref.modality for ref in pacs.instances(study)) == ["CR", "CR", "OT", "SEG", "SR"]


def test_wrong_credentials_are_one_line(orthanc, untrained_model, monkeypatch) -> None:
    monkeypatch.setenv("RADSIGHT_PACS_USER", USER)
    monkeypatch.setenv("RADSIGHT_PACS_PASSWORD", "wrong")
    result = run_cli(
        "predict", "--model", untrained_model, "--pacs", orthanc.dicomweb, "--study", "1.2.3", expect=2
    )
    assert_one_line_error(result.output, orthanc.dicomweb, "HTTP 401", "RADSIGHT_PACS_USER")


def test_a_pacs_that_is_down_is_one_line(untrained_model, logged_in) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    result = run_cli("predict", "--model", untrained_model, "--pacs", url, "--study", "1.2.3", expect=2)
    assert_one_line_error(result.output, url, "PACS unreachable")


class Failing(BaseHTTPRequestHandler):
    """A server whose every answer is HTTP 500."""

    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_pacs_answering_500_is_one_line(untrained_model, logged_in) -> None:
    server = HTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dicom-web"
        result = run_cli("predict", "--model", untrained_model, "--pacs", url, "--study", "1.2.3", expect=2)
        assert_one_line_error(
            result.output, url, "PACS answered HTTP 500 to search the instances of study 1.2.3"
        )
    finally:
        server.shutdown()


def test_credentials_never_come_from_the_command_line(untrained_model) -> None:
    result = run_cli(
        "predict",
        "--model",
        untrained_model,
        "--pacs",
        "http://u:p@h/",
        "--study",
        "1",
        "--password",
        "p",
        expect=2,
    )
    assert "No such option: --password" in result.output
    url = "http://radsight:secret@127.0.0.1:8042/dicom-web"
    result = run_cli("predict", "--model", untrained_model, "--pacs", url, "--study", "1", expect=2)
    assert_one_line_error(result.output, "credentials in the URL", "RADSIGHT_PACS_USER")
    assert "secret" not in result.output
