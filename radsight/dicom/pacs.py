"""A small DICOMweb client for a PACS (QIDO-RS search, WADO-RS fetch, STOW-RS store) over dicomweb-client.

Credentials come from the environment (RADSIGHT_PACS_USER and RADSIGHT_PACS_PASSWORD) or from a file
named by RADSIGHT_PACS_CREDENTIALS holding ``user:password``; never from the command line, where other
users of the machine could read them. Every failure of the PACS (down, 401, 500) is one DataError line
naming the URL and what was asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from radsight.errors import ConfigError, DataError

USER_VARIABLE = "RADSIGHT_PACS_USER"
PASSWORD_VARIABLE = "RADSIGHT_PACS_PASSWORD"
CREDENTIALS_FILE_VARIABLE = "RADSIGHT_PACS_CREDENTIALS"
T = TypeVar("T")


def credentials_from_environment() -> tuple[str, str] | None:
    """(user, password) from the environment or the file it names; None when neither is set."""
    user, password = os.environ.get(USER_VARIABLE), os.environ.get(PASSWORD_VARIABLE)
    if user and password is not None:
        return user, password
    named = os.environ.get(CREDENTIALS_FILE_VARIABLE)
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        raise ConfigError(f"{path}: PACS credentials file not found ({CREDENTIALS_FILE_VARIABLE})")
    user, separator, password = path.read_text().strip().partition(":")
    if not separator or not user:
        raise ConfigError(f"{path}: PACS credentials file must hold one line user:password")
    return user, password


@dataclass(frozen=True)
class InstanceRef:
    """Where one instance lives in the PACS, and what QIDO said it is."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str | None
    sop_class_uid: str | None


class PacsClient:
    """One PACS's DICOMweb service at ``url`` (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, credentials: tuple[str, str] | None = None, timeout: float = 60) -> None:
        parts = urlsplit(url)
        if parts.username is not None:
            host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
            raise ConfigError(
                f"{parts._replace(netloc=host).geturl()}: credentials in the URL are visible to every "
                f"user of the machine; set {USER_VARIABLE} and {PASSWORD_VARIABLE}, or "
                f"{CREDENTIALS_FILE_VARIABLE}"
            )
        self.url = url.rstrip("/")
        session = requests.Session()
        if credentials is not None:
            session.auth = credentials
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout)

    @classmethod
    def from_environment(cls, url: str) -> PacsClient:
        return cls(url, credentials_from_environment())

    def search_studies(self, **filters: str) -> list[dict[str, Any]]:
        """QIDO-RS studies matching DICOM keyword filters (e.g. ``PatientID="9RG1"``), as DICOM JSON."""
        return self._ask("search studies", lambda: self._client.search_for_studies(search_filters=filters))

    def instances(self, study_uid: str) -> list[InstanceRef]:
        """Every instance of a study (QIDO-RS), with its series, modality and SOP class."""
        found = self._ask(
            f"search the instances of study {study_uid}",
            lambda: self._client.search_for_instances(study_instance_uid=study_uid, get_remaining=True),
        )
        return [
            InstanceRef(
                study_uid,
                _value(item, "0020000E") or "",
                _value(item, "00080018") or "",
                _value(item, "00080060"),
                _value(item, "00080016"),
            )
            for item in found
        ]

    def fetch(self, ref: InstanceRef) -> Dataset:
        """One instance as stored (WADO-RS)."""
        return self._ask(
            f"fetch instance {ref.sop_uid}",
            lambda: self._client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid),
        )

    def store(self, datasets: Sequence[Dataset]) -> list[Dataset]:
        """Store the datasets a study does not hold yet (STOW-RS), checked by SOP Instance UID so that a
        retry stores nothing twice; returns those stored."""
        by_study: dict[str, list[Dataset]] = {}
        for dataset in datasets:
            by_study.setdefault(str(dataset.StudyInstanceUID), []).append(dataset)
        stored = []
        for study_uid, group in by_study.items():
            held = {ref.sop_uid for ref in self.instances(study_uid)}
            new = [d for d in group if str(d.SOPInstanceUID) not in held]
            if new:
                self._ask(f"store {len(new)} instance(s) in study {study_uid}", self._storer(new, study_uid))
            stored.extend(new)
        return stored

    def _storer(self, datasets: list[Dataset], study_uid: str) -> Callable[[], Any]:
        return lambda: self._client.store_instances(datasets, study_instance_uid=study_uid)

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        with self._answers(what):
            return call()

    @contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        """Turn the PACS's failures into one line naming it and the request."""
        try:
            yield
        except requests.exceptions.ConnectionError:
            raise DataError(self.url, f"PACS unreachable (cannot {what}: connection refused)") from None
        except requests.exceptions.Timeout:
            raise DataError(self.url, f"PACS did not answer in time (cannot {what})") from None
        except requests.exceptions.HTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            if status == 401:
                problem = (
                    f"PACS refused the credentials (HTTP 401) to {what}; set {USER_VARIABLE} and "
                    f"{PASSWORD_VARIABLE}, or {CREDENTIALS_FILE_VARIABLE}"
                )
            else:
                problem = f"PACS answered HTTP {status} to {what}"
            raise DataError(self.url, problem) from None


def _value(item: dict[str, Any], tag: str) -> str | None:
    """The first value of a DICOM JSON attribute (None when absent)."""
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None
