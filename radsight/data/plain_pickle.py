"""Read pickles that hold only plain data, refusing any object a pickle could use to run code.

Some public datasets ship their index as a pickle (NYU's exam lists). Unpickling runs whatever callable the
file names, so the reader below resolves no global except a few plain builtin types.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from radsight.errors import DataError

_ALLOWED = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool"}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(self.path, f"refused pickle global {module}.{name}: only plain data is read")


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle a file of dicts, lists, strings, numbers, booleans and None; anything else is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with path.open("rb") as handle:
        try:
            return _PlainUnpickler(handle, path).load()
        except DataError:
            raise
        except Exception as error:  # a corrupt pickle fails in many ways; all mean the file is unusable
            raise DataError(path, f"corrupt pickle ({type(error).__name__}: {error})") from None
