"""Shared fixtures: the real data folder (RADSIGHT_DATA) and offline settings."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
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


@pytest.fixture
def mirror(tmp_path: Path) -> Callable[..., Path]:
    """Make a dataset folder in tmp_path whose entries link to the real one, except the CSVs that
    ``edits`` rewrites, so a test can break one index file without copying any image."""

    def make(source: Path, edits: dict[str, Callable[[pd.DataFrame], pd.DataFrame]]) -> Path:
        root = tmp_path / source.name
        root.mkdir()
        for entry in source.iterdir():
            if entry.name in edits:
                edits[entry.name](pd.read_csv(entry)).to_csv(root / entry.name, index=False)
            else:
                (root / entry.name).symlink_to(entry)
        return root

    return make
