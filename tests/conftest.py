"""Shared fixtures: the real data folder (RADSIGHT_DATA) and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder of small real datasets; tests that need it skip when RADSIGHT_DATA is unset."""
    value = os.environ.get("RADSIGHT_DATA")
    if not value:
        pytest.skip("RADSIGHT_DATA is not set (CI always sets it)")
    root = Path(value)
    if not root.is_dir():
        pytest.fail(f"RADSIGHT_DATA={value} is not a folder")
    return root
