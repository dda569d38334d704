"""Errors that reach the user as one line: what went wrong, and with which file."""

from __future__ import annotations

from pathlib import Path


class RadsightError(Exception):
    """Base class for every error radsight reports to a user (the CLI prints it without a traceback)."""


class DataError(RadsightError):
    """A file or dataset row cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(RadsightError):
    """A recipe or command-line option is invalid."""


class OutputError(RadsightError):
    """An output file cannot be written (disk full, quota, permission); the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
