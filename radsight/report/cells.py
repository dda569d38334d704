"""Table cells of every report: a number with its 95% interval, and one spelling of an undefined value.

metrics.json writes an undefined metric (NaN: one class only, no defined resample) as None, and a value
``key`` comes with ``key_ci_low`` / ``key_ci_high``. Every Markdown, HTML and terminal table formats those
through :func:`ci_cell`, so one value reads the same everywhere, and an interval that does not contain
its value is marked (:data:`EXCLUDES_ESTIMATE`) wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNDEFINED = "undefined"
"""How a table shows a value that metrics.json holds as None."""

NONE = "none"
"""How a table shows an empty list (no undefined label)."""

NOT_TESTED = "—"
"""How a table shows a test that was not run (a reference row is not tested against itself)."""

EXCLUDES_ESTIMATE = "†"
"""After an interval that does not contain its value (the bootstrap distribution lies to one side)."""


def number(value: Any, digits: int = 3) -> str:
    """A float with ``digits`` decimals, None as :data:`UNDEFINED`, a flag as yes / no, a list of names
    comma-separated (:data:`NONE` when empty), anything else (counts, names) as is."""
    if value is None:
        return UNDEFINED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or NONE
    return str(value)


def ci_cell(value: Any, low: float | None, high: float | None, digits: int = 3) -> str:
    """``value [low, high]`` (marked :data:`EXCLUDES_ESTIMATE` when the value lies outside); the value alone
    where it has no interval, :data:`UNDEFINED` without one."""
    if value is None or low is None or high is None:
        return number(value, digits)
    mark = "" if low <= value <= high else EXCLUDES_ESTIMATE
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]{mark}"


def section_cell(section: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """The cell of ``key`` in a metrics.json section, or in any dict with ``key_ci_low`` / ``key_ci_high``."""
    return ci_cell(section.get(key), section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high"), digits)
