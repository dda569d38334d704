"""A real Orthanc PACS for tests: started on 127.0.0.1 with a generated configuration (free ports, a
temporary storage folder, authentication on, the DICOMweb plugin) and stopped afterwards."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "radsight", "not-a-real-secret"
AE_TITLE = "ORTHANC"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Orthanc:
    http_port: int
    dicom_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """Orthanc's own REST API (not DICOMweb), as an administrator would use it."""
        answer = requests.request(method, f"{self.url}{path}", auth=(USER, PASSWORD), timeout=300, **kwargs)
        answer.raise_for_status()
        return answer


@contextmanager
def running_orthanc(folder: Path, modalities: dict[str, list] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with its storage in ``folder`` and the DICOM peers ``modalities`` (name: [AE, host,
    port]); yield once it answers, stop it afterwards."""
    assert shutil.which(ORTHANC) and Path(DICOMWEB_PLUGIN).is_file(), (
        "Orthanc or its DICOMweb plugin is missing: install Debian's orthanc and orthanc-dicomweb "
        "(.ci/run does)"
    )
    server = Orthanc(free_port(), free_port(), folder)
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "radsight-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": modalities or {},
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "DicomScuTimeout": 300,
        "HttpTimeout": 300,
        "StableAge": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                server.rest("GET", "/system")
                break
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
