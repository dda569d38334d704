"""Checkpoints that survive a kill, and the inference export that never unpickles.

- Lightning checkpoints (for ``--resume``) are written whole or not at all (:mod:`radsight.atomic`),
  so a run killed mid-write keeps its previous complete checkpoint; one read back for ``--resume`` is
  checked to be a readable, tensors-only checkpoint of the same model first (:func:`check_resume_checkpoint`).
- The inference export is ``model.safetensors`` plus ``config.json``: tensors and plain JSON only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import load_model, save_model

from radsight.atomic import atomic_write, write_json
from radsight.errors import ConfigError
from radsight.run_folder import EXPORT_FORMAT


def _save_torch(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a Python file, so that a full disk is an OSError naming its cause."""
    with path.open("wb") as stream:
        torch.save(checkpoint, stream)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with write-to-temporary-then-rename, and tensor-only loading."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write(path, lambda tmp: _save_torch(checkpoint, tmp))

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


def check_resume_checkpoint(path: Path, module: torch.nn.Module, stage: str) -> int:
    """``path`` (a stage's ``last.ckpt``) is a checkpoint ``module`` can resume from: readable with
    tensors and plain values only (nothing is executed), and holding weights of the same names and
    shapes. Otherwise one ConfigError line naming the file, the problem and how to restart the stage.
    Returns the epoch the checkpoint finished."""
    restart = f"delete it to restart stage {stage!r} from its first epoch, or start the run over with --force"
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty checkpoint (a write was cut short); {restart}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, foreign or unsafe files
        problem = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}: not a readable tensors-only checkpoint ({problem}); {restart}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not isinstance(checkpoint.get("epoch"), int):
        raise ConfigError(f"{path}: not a Lightning checkpoint of a radsight stage; {restart}")
    labels = (checkpoint.get("hyper_parameters") or {}).get("label_names")
    own = module.hparams.get("label_names")
    if labels is not None and labels != own:
        raise ConfigError(f"{path}: checkpoint of a model for other labels ({labels}, not {own}); {restart}")
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in state.items() if isinstance(value, torch.Tensor)}
    if found != expected:
        differ = sorted(set(expected) ^ set(found)) or [n for n in expected if expected[n] != found[n]]
        raise ConfigError(
            f"{path}: checkpoint of another model (other labels or backbone: {len(differ)} weight(s) differ, "
            f"e.g. {differ[0]}); {restart}"
        )
    return checkpoint["epoch"]
