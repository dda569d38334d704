"""radsight serve's JSON API: the probabilities radsight predict gives, the faithfulness radsight explain
gives, one-line 4xx answers to bad requests (after which it keeps serving), and nothing written."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from radsight.data.sources.phantoms import PhantomChestXray
from radsight.explain_files import explain_files
from radsight.infer import LoadedModel
from radsight.predict import predict_files
from radsight.serve.app import STATIC, create_app
from radsight.serve.payload import DISPLAY_SIDE

DICOM = Path(get_testdata_file("RG1_UNCR.dcm"))


@pytest.fixture(scope="module")
def model(trained_model: Path) -> LoadedModel:
    return LoadedModel.load(trained_model)


@pytest.fixture(scope="module")
def client(model: LoadedModel) -> TestClient:
    return TestClient(create_app(model))


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "phantom.png"
    image = PhantomChestXray(1, size=(150, 120), seed=3)[0].image[0].numpy()
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def upload(path: Path, data: bytes | None = None) -> dict:
    return {"file": (path.name, path.read_bytes() if data is None else data)}


def picture(data_url: str) -> Image.Image:
    return Image.open(BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_predict_answers_what_radsight_predict_writes(
    client: TestClient, trained_model: Path, png: Path, tmp_path: Path
) -> None:
    written = predict_files(trained_model, [png, DICOM], tmp_path)["files"]
    for path, row in zip([png, DICOM], written, strict=True):
        response = client.post("/predict", files=upload(path))
        assert response.status_code == 200, response.text
        answer = response.json()
        # predict runs its files as one batch, the API one file: the float sums differ in the last bits
        assert answer["probabilities"] == pytest.approx(row["probabilities"], abs=1e-6)
        for key in ("positive", "top_label", "original_size", "regions", "warnings"):
            assert answer[key] == row[key], key
        assert answer["file"] == path.name and answer["text"] is None  # the baseline writes no report
    dicom = client.post("/predict", files=upload(DICOM)).json()["dicom"]
    assert dicom["sop_instance_uid"] and dicom["modality"] is not None


def test_bad_requests_get_one_line_4xx_and_the_server_keeps_serving(model: LoadedModel, png: Path) -> None:
    small = TestClient(create_app(model, max_upload_bytes=2**20))
    good = small.post("/predict", files=upload(png)).json()
    cases = {
        "not a readable image": (400, upload(Path("notes.png"), b"plain text, not pixels")),
        "the uploaded file is empty": (400, upload(Path("empty.png"), b"")),
        "corrupt or truncated": (400, upload(Path("cut.png"), png.read_bytes()[:300])),
        "limit of 1 MB": (413, upload(Path("huge.png"), b"0" * (2**20 + 1))),
    }
    for message, (status, files) in cases.items():
        response = small.post("/predict", files=files)
        detail = response.json()["detail"]
        assert response.status_code == status and message in detail and "\n" not in detail, detail
        assert small.post("/predict", files=upload(png)).json() == good  # still serving, same answer
    missing = small.post("/predict", data={"image": "x"})
    assert missing.status_code == 422
    assert missing.json()["detail"] == "file: Field required (send the image as the multipart field 'file')"
    # a body sent without Content-Length is cut off once it passes the limit
    streamed = small.post(
        "/predict",
        content=iter([b"0" * 2**19] * 3),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413 and "limit of 1 MB" in streamed.json()["detail"]
    unknown = small.post("/view?explanation=lime", files=upload(png))
    assert unknown.status_code == 400
    choices = "gradcam, gradcam++, hirescam, ig"  # no native maps: the baseline has none
    assert unknown.json()["detail"] == f"unknown explanation 'lime'; choose one of {choices}"
    assert small.post("/predict", files=upload(png)).json() == good


def test_view_scores_each_explanation_as_radsight_explain_does(
    client: TestClient, trained_model: Path, png: Path, tmp_path: Path
) -> None:
    methods = ["gradcam", "hirescam"]
    explained = explain_files(trained_model, [png], tmp_path, methods)["files"][0]["methods"]
    for how in methods:
        answer = client.post(f"/view?explanation={how}", files=upload(png)).json()
        assert answer["explanation"] == how
        scores = {key: answer["faithfulness"][key] for key in ("deletion_auc", "insertion_auc")}
        assert scores == explained[how]
        film, heat = (picture(answer[key]) for key in ("film", "map"))
        assert film.mode == "L" and heat.mode == "RGBA" and film.size == heat.size == (120, 150)
        alpha = np.asarray(heat)[..., 3]
        assert alpha.min() == 0 and alpha.max() > 200  # transparent where attention is low
    large = client.post("/view", files=upload(DICOM)).json()  # the recipe's own explanation
    film = picture(large["film"])
    assert max(film.size) == DISPLAY_SIDE and large["original_size"] == [1955, 1841]
    assert large["explanation"] == LoadedModel.load(trained_model).recipe.evaluation.explain


def test_a_methods_draft_report_is_answered_with_the_prediction(model: LoadedModel, png: Path) -> None:
    report = "Findings: a rounded opacity in the right upper zone."
    writer = dataclasses.replace(model, method=model.method)
    plain = writer.method.predict

    def reporting(batch):  # a method that writes a report, as a report-generation method would
        return dataclasses.replace(plain(batch), text=[report])

    writer.method.predict = reporting
    try:
        answer = TestClient(create_app(writer)).post("/predict", files=upload(png)).json()
    finally:
        del writer.method.predict
    assert answer["text"] == report


def test_page_and_api_documentation_are_served_from_the_server_itself(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Machine-generated draft" in page.text
    for asset in (*re.findall(r'(?:src|href)="([^"]+)"', page.text), "/docs", "/static/docs.js"):
        assert asset.startswith("/") and client.get(asset).status_code == 200, asset
    for static in STATIC.iterdir():  # no page asset names another host (the API example: loopback)
        elsewhere = re.search(r"https?://(?!www\.w3\.org/2000/svg|127\.0\.0\.1)", static.read_text())
        assert elsewhere is None, static.name
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = schema["components"]["schemas"][body["$ref"].split("/")[-1]]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["contentMediaType"] == "application/octet-stream"
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/PredictionAnswer")
    assert "probabilities" in schema["components"]["schemas"]["PredictionAnswer"]["required"]
    assert "/openapi.json" in client.get("/docs").text


def test_uploads_leave_no_file_behind(
    model: LoadedModel, png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_model: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    monkeypatch.chdir(work)
    before = sorted(p.name for p in trained_model.rglob("*"))
    client = TestClient(create_app(model))
    # over a megabyte: the multipart parser spools it to the temporary folder, then deletes it
    padded = png.read_bytes() + b"\0" * (2 * 2**20)
    for files in (upload(png), upload(Path("padded.png"), padded), upload(Path("bad.png"), b"x" * 2**21)):
        client.post("/view", files=files)
    assert not list(spool.iterdir()) and not list(work.iterdir())
    assert sorted(p.name for p in trained_model.rglob("*")) == before
    assert json.loads((trained_model / "config.json").read_text())


def test_the_command_refuses_a_folder_that_is_no_model_and_listens_on_loopback_by_default(tmp_path) -> None:
    refused = run_cli("serve", "--model", tmp_path, expect=2)
    assert "not a radsight model folder (needs model.safetensors and config.json)" in refused.output
    assert "[default: 127.0.0.1]" in " ".join(run_cli("serve", "--help").output.split())
