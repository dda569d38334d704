"""Round-trip time per image against a real Orthanc (DICOMweb, authentication on), and a screenshot of
the results in Orthanc's own web explorer taken with headless Chromium (selenium and chromedriver).

Each repeat uploads the real RG1 chest film as a new study, then times ``predict_study``: the QIDO
search, the WADO-RS fetch, the prediction with its map, building the SR, overlay and map objects, and
the STOW-RS store. The model is the given run folder (default: an untrained tiny one, since the time
is then mostly DICOM encoding and transfer at the film's 1955 x 1841 pixels, not the model).

    python bench/pacs_round_trip.py --out bench/results --screenshot docs/orthanc-results.jpg
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
from outputs import write_results
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from orthanc import PASSWORD, USER, running_orthanc  # the tests' Orthanc launcher

from radsight.dicom.pacs import PacsClient
from radsight.dicom.study import DicomPredictor, predict_study

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
EXPAND_ALL = "document.querySelectorAll('a.toggler.closed').forEach(a => a.click())"


def untrained_model(folder: Path) -> Path:
    """A tiny untrained baseline exported like a run folder."""
    import torch

    from radsight.checkpoints import export_model
    from radsight.config import parse_recipe
    from radsight.methods.registry import build_method, export_config

    labels = ["nodule", "opacity"]
    recipe = parse_recipe(
        {
            "name": "bench",
            "data": {"sources": [{"name": "phantom"}], "labels": labels, "image_size": [128, 128]},
            "model": {"backbone": "tiny_cnn"},
        }
    )
    torch.manual_seed(0)
    export_model(build_method(recipe, labels, pretrained=False), export_config(recipe, labels), folder)
    return folder


def browser(user: str, password: str) -> Any:
    """Headless Chromium (through selenium) sending HTTP basic credentials with every request: Orthanc's
    explorer breaks on credentials in the URL (history.replaceState refuses such URLs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=900,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    return driver


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="run folder (default: an untrained tiny model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--screenshot", type=Path, help="JPEG of the SR and overlay in Orthanc's explorer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, running_orthanc(Path(scratch) / "orthanc") as orthanc:
        model = args.model or untrained_model(Path(scratch) / "model")
        predictor = DicomPredictor.load(model)
        pacs = PacsClient(orthanc.dicomweb, (USER, PASSWORD))
        seconds, study = [], ""
        for _ in range(args.repeats):
            film = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
            film.StudyInstanceUID, film.SeriesInstanceUID = generate_uid(), generate_uid()
            film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            pacs.store([film])
            study = film.StudyInstanceUID
            start = time.perf_counter()
            predict_study(predictor, pacs, study)
            seconds.append(time.perf_counter() - start)
        result = {"image": "RG1_UNCR (1955 x 1841, 15 bit)", "seconds_per_image": seconds}
        table = (
            "| round trip per image (QIDO + WADO-RS + predict + SR/overlay/map + STOW-RS) | s |\n|---|---|\n"
            f"| median of {len(seconds)} | {statistics.median(seconds):.2f} |\n"
            f"| min / max | {min(seconds):.2f} / {max(seconds):.2f} |"
        )
        write_results(args.out, "pacs_round_trip", result, table)
        if args.screenshot:
            shoot(orthanc, study, args.screenshot, Path(scratch))


def shoot(orthanc: Any, study_uid: str, path: Path, scratch: Path) -> None:
    """Orthanc's explorer on the study (its new series), on the SR's content at the first probability,
    and the overlay as the explorer's preview shows it, side by side."""
    query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
    found = orthanc.rest("POST", "/tools/find", json=query).json()
    by_modality = {}
    for instance in found:
        tags = orthanc.rest("GET", f"/instances/{instance['ID']}/simplified-tags").json()
        by_modality[tags.get("Modality")] = instance
    study_id = orthanc.rest("GET", f"/series/{by_modality['SR']['ParentSeries']}").json()["ParentStudy"]
    explorer = f"{orthanc.url}/app/explorer.html"
    shots = [scratch / "study.png", scratch / "sr.png", scratch / "overlay.png"]
    driver = browser(USER, PASSWORD)
    try:
        driver.get(f"{explorer}#study?uuid={study_id}")
        time.sleep(3)
        driver.save_screenshot(str(shots[0]))
        driver.get(f"{explorer}#instance?uuid={by_modality['SR']['ID']}")
        time.sleep(3)
        for _ in range(8):  # the content tree is nested 7 levels down to a probability
            driver.execute_script(EXPAND_ALL)
        value = driver.find_element("xpath", "//span[contains(., 'NumericValue')]")
        driver.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -500);", value)
        time.sleep(1)
        driver.save_screenshot(str(shots[1]))
    finally:
        driver.quit()
    shots[2].write_bytes(orthanc.rest("GET", f"/instances/{by_modality['OT']['ID']}/preview").content)
    pictures = [Image.open(p).convert("RGB") for p in shots]
    pictures[2].thumbnail((800, pictures[0].height))
    sheet = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        sheet.paste(picture, (x, 0))
        x += picture.width
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=85, optimize=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
