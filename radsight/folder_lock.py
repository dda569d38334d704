"""One radsight process at a time per output folder.

Two trainings in one run folder interleave their log and overwrite each other's checkpoints; two
predictions into one folder lose one's rows. A command that writes a folder holds an exclusive
``fcntl`` lock on ``<folder>/.radsight.lock`` while it runs, with its process id written inside for the
refusal message. The kernel releases the lock when the process ends however it ends, so the lock file
of a killed run is simply taken over by the next one. A process that holds a folder may take it
again (a command locks its folder, and the training it runs locks it too).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from radsight.errors import ConfigError

LOCK_FILE = ".radsight.lock"

_held: set[Path] = set()
"""The folders this process holds."""


@contextmanager
def locked_folder(folder: Path) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for this process, or refuse in one line naming the holder. A
    folder created here and left empty (the command failed before writing) is removed again."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        yield folder
        return
    path = folder / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"{folder} is in use by another radsight process (pid {holder}, lock {path}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        _held.add(key)
        try:
            yield folder
        finally:
            _held.discard(key)
            if created and [entry.name for entry in folder.iterdir()] == [LOCK_FILE]:
                path.unlink()
                folder.rmdir()
    finally:
        os.close(descriptor)  # releases the lock; a kept file stays, so no process locks a stale copy
