"""Checkpoints that survive a kill, and the inference export that never unpickles.

- Lightning checkpoints (for ``--resume``) are written to a temporary file, flushed to disk and renamed
  into place, so a run killed mid-write keeps its previous complete checkpoint.
- The inference export is ``model.safetensors`` plus ``config.json``: tensors and plain JSON only.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import load_model, save_model

from radsight.errors import ConfigError
from radsight.run_folder import EXPORT_FORMAT


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then rename it over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with write-to-temporary-then-rename, and tensor-only loading."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def save_weights(module: torch.nn.Module, path: str | Path) -> None:
    atomic_write(path, lambda tmp: save_model(module, str(tmp)))


def export_model(module: torch.nn.Module, config: dict[str, Any], out_dir: str | Path) -> None:
    """Write the inference export: weights as safetensors and everything needed to rebuild as JSON."""
    out_dir = Path(out_dir)
    save_weights(module, out_dir / "model.safetensors")
    write_json(out_dir / "config.json", {"format": EXPORT_FORMAT, **config})


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights strictly, reporting mismatches as a configuration error."""
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except Exception as error:  # safetensors raises several types for bad files
        raise ConfigError(f"{path}: cannot load weights ({error})") from None
    if missing or unexpected:
        raise ConfigError(
            f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
