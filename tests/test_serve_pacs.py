"""`radsight serve --pacs`: the page lists a real Orthanc's studies and analyses one's frontal image."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from orthanc import PASSWORD, USER, running_orthanc
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from test_pacs import as_new_instance

from radsight.dicom.pacs import PacsClient
from radsight.infer import LoadedModel
from radsight.serve.app import create_app

RG1 = Path(get_testdata_file("RG1_UNCR.dcm"))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield PacsClient(server.dicomweb, (USER, PASSWORD))


def study_of(view: str) -> pydicom.Dataset:
    """The RG1 film as a study of its own, taken in ``view``."""
    dataset = pydicom.dcmread(RG1)
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    return as_new_instance(dataset, ViewPosition=view)


def test_the_page_picks_a_pacs_study_and_answers_as_for_an_upload(pacs, untrained_model: Path) -> None:
    frontal, lateral = study_of("PA"), study_of("LL")
    pacs.store([frontal, lateral])
    model = LoadedModel.load(untrained_model)
    client = TestClient(create_app(model, pacs=pacs))
    assert client.get("/model").json()["pacs"] is True

    studies = {s["study_uid"]: s for s in client.get("/pacs/studies").json()}
    assert {frontal.StudyInstanceUID, lateral.StudyInstanceUID} <= set(studies)
    assert studies[frontal.StudyInstanceUID]["patient_id"] == "9RG1"

    picked = client.post("/pacs/view", params={"study": frontal.StudyInstanceUID, "explanation": "gradcam"})
    assert picked.status_code == 200, picked.text
    uploaded = client.post(
        "/view", params={"explanation": "gradcam"}, files={"file": ("rg1.dcm", RG1.read_bytes())}
    ).json()
    answer = picked.json()
    assert answer["probabilities"] == pytest.approx(uploaded["probabilities"], abs=1e-6)
    assert answer["dicom"]["sop_instance_uid"] == frontal.SOPInstanceUID
    assert answer["faithfulness"] == pytest.approx(uploaded["faithfulness"], abs=1e-6)

    refused = client.post("/pacs/view", params={"study": lateral.StudyInstanceUID})
    assert refused.status_code == 400 and "has no frontal image" in refused.json()["detail"]
    assert "view LL is not frontal" in refused.json()["detail"]
    assert client.post("/pacs/view", params={"study": frontal.StudyInstanceUID}).status_code == 200


def test_without_a_pacs_the_pacs_routes_say_how_to_configure_one(untrained_model: Path) -> None:
    client = TestClient(create_app(LoadedModel.load(untrained_model)))
    assert client.get("/model").json()["pacs"] is False
    answer = client.get("/pacs/studies")
    assert answer.status_code == 404 and "--pacs URL" in answer.json()["detail"]
