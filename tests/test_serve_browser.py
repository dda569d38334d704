"""radsight serve in a real browser (Debian's chromium, headless, through chromium-driver) and under load.

The browser uploads a real DICOM radiograph, waits for the result, and the probabilities it shows must be
the API's; the overlay toggles and fades, the explanation switches with its scores, a bad file is told
in one line and the page goes on working. The report written by training fits a narrow window. The load
test runs bench/serve.py against ``radsight serve``: 200 sequential and 20 concurrent requests, none
failed. Set RADSIGHT_SCREENSHOTS=DIR to keep the screenshots (serve.png, report.png; docs/ holds them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from pydicom.data import get_testdata_file
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from radsight.infer import LoadedModel
from radsight.serve.app import create_app

DICOM = Path(get_testdata_file("RG1_UNCR.dcm"))
BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve.py"
WAIT_S = 120


@pytest.fixture(scope="module")
def server(trained_model: Path) -> Iterator[str]:
    """The application on a free loopback port, served by uvicorn in a thread."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    app = create_app(LoadedModel.load(trained_model))
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(timeout=30)
    listening.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (apt-get install them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1050"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: RADSIGHT_SCREENSHOTS, else the test's temporary folder."""
    folder = Path(os.environ.get("RADSIGHT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def analysed(browser: webdriver.Chrome, file: Path) -> str:
    """Choose ``file`` in the page and wait for its answer; the page's state afterwards."""
    browser.execute_script("document.body.dataset.state = 'sent'")
    browser.find_element(By.ID, "file").send_keys(str(file))
    return wait_for_answer(browser)


def wait_for_answer(browser: webdriver.Chrome) -> str:
    WebDriverWait(browser, WAIT_S).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
    )
    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def ask(url: str) -> dict:
    """The API's answer for the DICOM the page was given."""
    return httpx.post(url, files={"file": (DICOM.name, DICOM.read_bytes())}, timeout=WAIT_S).json()


def shown_probabilities(browser: webdriver.Chrome) -> dict[str, tuple[float, str, str]]:
    """Per label: the exact probability the page holds, the text it shows, and its call."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#probabilities tbody tr")
    shown = {}
    for row in rows:
        cell = row.find_element(By.CSS_SELECTOR, ".probability")
        call = row.find_elements(By.TAG_NAME, "td")[3].text
        exact = float(cell.get_attribute("data-probability"))
        shown[row.get_attribute("data-label")] = (exact, cell.text, call)
    return shown


def test_the_page_shows_the_apis_answer_and_its_overlay(server: str, browser: webdriver.Chrome, tmp_path):
    browser.get(server)
    WebDriverWait(browser, WAIT_S).until(
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready"
    )
    assert analysed(browser, DICOM) == "done"
    api = ask(f"{server}/predict")
    shown = shown_probabilities(browser)
    assert set(shown) == set(api["probabilities"])
    for label, (probability, text, call) in shown.items():
        assert probability == api["probabilities"][label]
        assert text == f"{api['probabilities'][label]:.3f}"
        assert call == ("at or above" if api["positive"][label] else "below")
    heat = browser.find_element(By.ID, "map")
    assert browser.execute_script("return arguments[0].naturalWidth", heat) > 0 and heat.is_displayed()
    browser.find_element(By.ID, "show-map").click()
    assert not heat.is_displayed()
    browser.find_element(By.ID, "show-map").click()
    assert heat.is_displayed()
    browser.execute_script(
        "const s = document.getElementById('opacity'); s.value = 30; s.dispatchEvent(new Event('input'))"
    )
    assert heat.value_of_css_property("opacity") == "0.3"
    assert "divided by its maximum" in browser.find_element(By.ID, "scale-meaning").text
    assert browser.find_elements(By.CSS_SELECTOR, "#warnings li")  # a chest film unlike the phantoms

    browser.execute_script("document.body.dataset.state = 'sent'")
    Select(browser.find_element(By.ID, "explanation")).select_by_value("hirescam")
    assert wait_for_answer(browser) == "done"
    view = ask(f"{server}/view?explanation=hirescam")
    assert browser.find_element(By.ID, "explained").text.startswith("hirescam map of")
    assert browser.find_element(By.ID, "deletion").text == f"{view['faithfulness']['deletion_auc']:.3f}"
    assert browser.find_element(By.ID, "insertion").text == f"{view['faithfulness']['insertion_auc']:.3f}"
    assert not browser.find_element(By.ID, "report").is_displayed()  # the baseline writes no report

    browser.execute_script(
        "const s = document.getElementById('opacity'); s.value = 60; s.dispatchEvent(new Event('input'))"
    )
    screenshot = screenshots(tmp_path) / "serve.png"
    assert browser.save_screenshot(str(screenshot))
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[1] == 1400
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # the film and its map, not a blank page

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert analysed(browser, bad) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    problem = "notes.png: not a readable image (unknown or corrupt format)"
    assert error.text == f"notes.png was not analysed: {problem}"
    assert analysed(browser, DICOM) == "done" and not error.is_displayed()  # and the page goes on


def test_the_report_fits_a_narrow_window(trained_model: Path, browser: webdriver.Chrome, tmp_path) -> None:
    browser.set_window_size(1000, 1400)
    try:
        browser.get((trained_model / "report.html").as_uri())
        page = browser.execute_script(
            "const d = document.documentElement; return [d.scrollWidth, d.clientWidth]"
        )
        assert page[0] <= page[1], page  # nothing wider than the window
        tables = browser.find_elements(By.TAG_NAME, "table")
        assert len(tables) >= 4
        for table in tables:
            width, room = browser.execute_script(
                "return [arguments[0].scrollWidth, arguments[0].parentElement.clientWidth]", table
            )
            assert width <= room, (width, room, table.text[:80])
        metrics = json.loads((trained_model / "metrics.json").read_text())["classification"]
        sentence = browser.find_element(By.CLASS_NAME, "headline").text
        assert sentence.startswith(f"{metrics['n_images']} images of {metrics['n_patients']} patients")
        assert f"AUROC (mean over labels) {metrics['auroc_macro']:.3f} (95% CI" in sentence
        assert browser.save_screenshot(str(screenshots(tmp_path) / "report.png"))
    finally:
        browser.set_window_size(1400, 1050)


def test_200_sequential_and_20_concurrent_requests_all_answered(trained_model: Path, tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH), "--model", str(trained_model), "--out", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True, timeout=900)
    phases = json.loads((tmp_path / "serve.json").read_text())["phases"]
    assert phases["sequential"]["requests"] == 200 and phases["concurrent"]["requests"] == 20
    assert phases["sequential"]["failed"] == 0 and phases["concurrent"]["failed"] == 0, phases
    table = (tmp_path / "serve.md").read_text()
    assert "| sequential | 200 | 0 |" in table and "| concurrent | 20 | 0 |" in table
