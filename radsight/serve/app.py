"""The web application: a viewer page and a JSON API over one loaded model.

- ``GET /`` the viewer (its script and style under ``/static``, nothing from the internet);
- ``GET /model`` labels, thresholds, explanation methods and the colour scale;
- ``POST /predict`` (multipart field ``file``) the probabilities ``radsight predict`` gives the file;
- ``POST /view`` the same, plus the film and one explanation's map as pictures and that map's deletion
  and insertion AUC (:func:`radsight.explain_files.faithfulness`);
- with a PACS (``radsight serve --pacs URL``): ``GET /pacs/studies`` the PACS's studies (QIDO-RS) and
  ``POST /pacs/view?study=UID`` the same answer as ``/view`` for the study's first frontal image, pulled
  by WADO-RS (:mod:`radsight.dicom.pacs`); without one they answer 404;
- ``/docs`` the API's documentation: FastAPI's OpenAPI document (``/openapi.json``), rendered by a
  local page (FastAPI's own loads Swagger UI from the internet).

Uploads are read into memory (the multipart parser spools large ones to the system's temporary folder)
and nothing is written anywhere else. A body larger than ``max_upload_bytes`` is refused before it is
read whole (413, :class:`UploadLimit`); a file that cannot be read is a 400 naming it, a request without
the file a 422; the server keeps serving either way. One lock serialises the model: Grad-CAM hooks and
torch's threads are not shared between requests.
"""

import threading
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radsight import __version__
from radsight.errors import RadsightError
from radsight.explain.cam import NativeMaps
from radsight.explain.names import METHODS
from radsight.explain_files import faithfulness
from radsight.infer import LoadedModel, infer
from radsight.serve import DEFAULT_MAX_UPLOAD_MB
from radsight.serve.payload import (
    PredictionAnswer,
    Problem,
    ViewAnswer,
    film_png,
    map_png,
    model_json,
    prediction_json,
)

if TYPE_CHECKING:
    from radsight.dicom.pacs import PacsClient

STATIC = Path(str(resources.files("radsight.serve") / "static"))
FAITHFULNESS_STEPS = 20
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the file cannot be read (the detail names it and says why)"},
    413: {"model": Problem, "description": "the upload is larger than the server's limit"},
    422: {"model": Problem, "description": "the request has no multipart field 'file'"},
}
PACS_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the PACS failed, or the study has no frontal image to predict"},
    404: {"model": Problem, "description": "the server was started without --pacs"},
}


def create_app(
    model: LoadedModel,
    *,
    max_upload_bytes: int = round(DEFAULT_MAX_UPLOAD_MB * 2**20),
    pacs: "PacsClient | None" = None,
) -> FastAPI:
    """The application serving ``model``; uploads above ``max_upload_bytes`` are refused; with ``pacs``,
    the page can pick a study there."""
    app = FastAPI(
        title="radsight",
        version=__version__,
        description=f"Predictions and explanations of the model {model.recipe.name!r}. Research software: "
        "not for diagnosis.",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN; /docs renders the same document locally
        redoc_url=None,
    )
    lock = threading.Lock()
    explanations = [m for m in METHODS if m != "native" or isinstance(model.method.classifier(), NativeMaps)]
    described = {**model_json(model, explanations), "pacs": pacs is not None}
    ExplanationQuery = Annotated[str | None, Query(description=f"one of {', '.join(explanations)}")]

    def read(file: UploadFile) -> tuple[bytes, str]:
        name = Path(file.filename or "upload").name
        data = file.file.read()
        if not data:
            raise HTTPException(400, f"{name}: the uploaded file is empty")
        return data, name

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/model", summary="The model's labels, thresholds, explanation methods and colour scale")
    def model_info() -> dict[str, Any]:
        return described

    @app.post(
        "/predict",
        summary="Probabilities of one DICOM, PNG or JPEG file, as radsight predict gives",
        response_model=PredictionAnswer,
        responses=PROBLEMS,
    )
    def predict(file: Annotated[UploadFile, File(description="a DICOM, PNG or JPEG file")]) -> dict[str, Any]:
        data, name = read(file)
        with lock:
            prediction = infer(model, data, name=name, with_map=False)
        return prediction_json(prediction)

    @app.post(
        "/view",
        summary="The prediction, the film and one explanation's map with its faithfulness",
        response_model=ViewAnswer,
        responses=PROBLEMS,
    )
    def view(
        file: Annotated[UploadFile, File(description="a DICOM, PNG or JPEG file")],
        explanation: ExplanationQuery = None,
    ) -> dict[str, Any]:
        how = chosen_explanation(explanation)
        data, name = read(file)
        return viewed(data, name, how)

    def chosen_explanation(explanation: str | None) -> str:
        how = explanation or described["default_explanation"]
        if how not in explanations:
            raise HTTPException(400, f"unknown explanation {how!r}; choose one of {', '.join(explanations)}")
        return how

    def viewed(data: bytes, name: str, how: str) -> dict[str, Any]:
        with lock:
            prediction = infer(model, data, name=name, with_map=False)
            heat, scores = faithfulness(model, prediction.file, how, prediction.top, FAITHFULNESS_STEPS)
        return {
            **prediction_json(prediction),
            "explanation": how,
            "faithfulness": {**scores, "steps": FAITHFULNESS_STEPS},
            "film": film_png(prediction),
            "map": map_png(heat),
        }

    def configured() -> "PacsClient":
        if pacs is None:
            raise HTTPException(404, "no PACS is configured: start radsight serve with --pacs URL")
        return pacs

    @app.get("/pacs/studies", summary="The PACS's studies (with --pacs)", responses=PACS_PROBLEMS)
    def pacs_studies() -> list[dict[str, str | None]]:
        return [study_json(item) for item in configured().search_studies()]

    @app.post(
        "/pacs/view",
        summary="As /view, for the first frontal image of a PACS study (with --pacs)",
        response_model=ViewAnswer,
        responses=PACS_PROBLEMS,
    )
    def pacs_view(
        study: Annotated[str, Query(description="the Study Instance UID")],
        explanation: ExplanationQuery = None,
    ) -> dict[str, Any]:
        how = chosen_explanation(explanation)
        from radsight.dicom.study import first_frontal_image

        dataset, name = first_frontal_image(configured(), study)
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return viewed(buffer.getvalue(), name, how)

    @app.exception_handler(RadsightError)
    def bad_input(request: Any, error: RadsightError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(error)})

    @app.exception_handler(RequestValidationError)
    def incomplete_request(request: Any, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
        detail = f"{problems} (send the image as the multipart field 'file')"
        return JSONResponse(status_code=422, content={"detail": detail})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(UploadLimit, limit=max_upload_bytes)
    return app


class UploadLimit:
    """Refuse a request body over ``limit`` bytes (413, naming the limit): at once by its Content-Length,
    else as soon as the bytes received pass it, so an oversized upload is never read whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.detail = (
            f"upload larger than this server's limit of {limit / 2**20:g} MB (radsight serve --max-upload-mb)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await JSONResponse(status_code=413, content={"detail": self.detail})(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # FastAPI answers an HTTPException from the body reader as such
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


def study_json(item: dict[str, Any]) -> dict[str, str | None]:
    """A QIDO-RS study (DICOM JSON) as the few attributes the page lists."""

    def value(tag: str) -> str | None:
        values = item.get(tag, {}).get("Value") or [None]
        first = values[0]
        return first.get("Alphabetic") if isinstance(first, dict) else (None if first is None else str(first))

    return {
        "study_uid": value("0020000D"),
        "patient_id": value("00100020"),
        "patient_name": value("00100010"),
        "study_date": value("00080020"),
        "description": value("00081030"),
    }
