"""Where every benchmark leaves its numbers: ``<name>.json`` for machines, ``<name>.md`` for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: Path, name: str, result: Any, table: str) -> None:
    """Write ``result`` as JSON and ``table`` (Markdown) into ``out``, and show the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table.rstrip("\n") + "\n")
    print(table)
