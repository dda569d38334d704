"""Read pickles that hold only plain data, refusing any object a pickle could use to run code.

Some public datasets ship their index as a pickle (NYU's exam lists). Unpickling runs whatever callable the
file names, so the reader below resolves no global except a few plain builtin types, calls those with no
size argument beyond a bound (``bytes(2**27)`` in a 46-byte file would be 134 million items), and checks
that what it built is no larger or deeper than an index needs before anyone walks it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radsight.errors import DataError

_ALLOWED = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool"}
MAX_BYTES = 64 * 2**20
"""Largest pickle file read."""
MAX_ITEMS = 5_000_000
"""Most items (container entries, counted at every place they appear) a loaded pickle may hold."""
MAX_DEPTH = 100
"""Deepest nesting of containers a loaded pickle may hold."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, handle: Any, path: Path, max_items: int) -> None:
        super().__init__(handle)
        self.path = path
        self.max_items = max_items

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # as protocols 0 to 2 name it
        if module == "builtins" and name in _ALLOWED:
            return self._bounded(super().find_class(module, name), f"{module}.{name}")
        raise DataError(self.path, f"refused pickle global {module}.{name}: only plain data is read")

    def _bounded(self, constructor: Callable[..., Any], name: str) -> Callable[..., Any]:
        """``constructor``, refusing an integer argument above ``max_items`` (a size to allocate)."""

        def build(*args: Any) -> Any:
            for arg in args:
                if isinstance(arg, int) and abs(arg) > self.max_items:
                    bound = f"sizes are bounded by {self.max_items:,}"
                    raise DataError(self.path, f"refused pickle call {name}({arg}): {bound}")
            return constructor(*args)

        return build


def load_plain_pickle(
    path: str | Path, *, max_bytes: int = MAX_BYTES, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH
) -> Any:
    """Unpickle a file of dicts, lists, strings, numbers, booleans and None; anything else, or a file or
    object beyond the bounds, is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(path, f"pickle of {size:,} bytes exceeds the limit of {max_bytes:,}")
    with path.open("rb") as handle:
        try:
            loaded = _PlainUnpickler(handle, path, max_items).load()
        except DataError:
            raise
        except MemoryError:
            raise DataError(path, "corrupt pickle (it expands beyond memory)") from None
        except Exception as error:  # a corrupt pickle fails in many ways; all mean the file is unusable
            raise DataError(path, f"corrupt pickle ({type(error).__name__}: {error})") from None
    _check_extent(loaded, path, max_items, max_depth)
    return loaded


def _check_extent(loaded: Any, path: Path, max_items: int, max_depth: int) -> None:
    """Refuse an object nested deeper than ``max_depth`` or holding more than ``max_items`` entries,
    counting a shared entry wherever it appears (a few bytes of shared references can stand for
    billions of entries to whoever walks them). Walked without recursion, and stopped at the bound."""
    stack = [(loaded, 0)]
    items = 0
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list | tuple | set | frozenset):
            continue
        if depth >= max_depth:
            raise DataError(path, f"pickle nests containers deeper than {max_depth} levels")
        items += len(value) * (2 if isinstance(value, dict) else 1)
        if items > max_items:
            raise DataError(path, f"pickle holds more than {max_items:,} items")
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
