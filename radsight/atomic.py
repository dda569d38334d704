"""Files written whole or not at all: every output goes to a temporary file beside its place, is
flushed to disk and renamed over it in one step, so a kill or a full disk never leaves half a file.

The temporary files are named ``.<name>.<random>.tmp``; one left by a killed process is removed by
:func:`remove_stale_temporaries` when the next run takes the folder (under its lock). A file that cannot
be written (disk full, quota, no permission) is one :class:`~radsight.errors.OutputError` line naming it.
Finished files get the mode the user's umask gives new files (the temporary file itself is private).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radsight.errors import OutputError

_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
"""What ``tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")`` names."""

_OS_ERROR = re.compile(r"\(os error (\d+)\)")
"""How libraries written in Rust (safetensors) report the operating system's error."""


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_problem(error: BaseException) -> str | None:
    """What the system said when a write failed, or None when the failure is not the system's. The
    system's error may be behind the one raised (torch reports a full disk as a RuntimeError about a
    file position, raised while handling the OSError)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return os.strerror(seen.errno).lower()
        if found := _OS_ERROR.search(str(seen)):
            return os.strerror(int(found.group(1))).lower()
        seen = seen.__cause__ or seen.__context__
    return None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then rename it over ``path`` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(path, f"cannot write ({_write_problem(error)})") from None
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        problem = _write_problem(error) if isinstance(error, Exception) else None
        if problem is None:
            raise
        raise OutputError(path, f"cannot write ({problem}); nothing was left half-written") from None


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def remove_stale_temporaries(*folders: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folders`` (not below them); call it only
    while holding their lock, so no live writer's file is taken."""
    found = (path for folder in folders if folder.is_dir() for path in folder.glob(".*.tmp"))
    stale = [path for path in found if path.is_file() and _TEMPORARY.match(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
