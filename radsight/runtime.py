"""What computes a method's prediction from a batch: PyTorch (the method itself) or ONNX Runtime (the
method's exported graph, ``model.onnx``).

A runtime is the one pluggable part of inference and evaluation: ``predict(batch) -> Prediction``, the
same contract as :meth:`Method.predict`, so :mod:`radsight.infer` and :mod:`radsight.evaluate` run
either without a second pipeline. Explanations that need gradients (Grad-CAM, integrated gradients)
are not predictions: they always run on the PyTorch method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from radsight.data.sample import Batch
from radsight.errors import ConfigError
from radsight.methods.base import Method, Prediction
from radsight.run_folder import ONNX_FILE

RUNTIMES = ("torch", "onnxruntime")
PROBS_OUTPUT = "probs"
MAP_OUTPUT_PREFIX = "map_"
REGIONS_OUTPUT = "regions"


def images_only(images: Tensor) -> Batch:
    """A batch holding nothing but images: what a method may read at prediction time. Its per-image
    lists stay empty, so that tracing never reads the batch size as a number (which would fix it)."""
    return Batch(
        images=images,
        labels=None,
        boxes=[],
        box_labels=[],
        masks={},
        mask_valid={},
        gaze_maps=None,
        gaze_valid=None,
        fixations=[],
        reports=[],
        meta=[],
    )


class Runtime(Protocol):
    name: str

    def predict(self, batch: Batch) -> Prediction: ...


class TorchRuntime:
    """The method itself, in eval mode and without autograd, on the method's device."""

    name = "torch"

    def __init__(self, method: Method) -> None:
        self.method = method

    def predict(self, batch: Batch) -> Prediction:
        self.method.eval()
        with torch.inference_mode():
            return self.method.predict(batch.to(self.method.device))


class OnnxRuntime:
    """An exported ``model.onnx`` in an ONNX Runtime session on the CPU; its outputs (see
    :mod:`radsight.onnx_export`) rebuilt into a :class:`Prediction` of CPU tensors."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: not found; write it with radsight export --model {path.parent} --format onnx "
                f"--out {path.parent}"
            )
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors on a bad file
            raise ConfigError(f"{path}: not a model ONNX Runtime can load ({error})") from None
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.input = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        """The model's metadata (radsight's preprocessing spec and labels, see :func:`export_onnx`)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def predict(self, batch: Batch) -> Prediction:
        images = batch.images.detach().float().cpu().numpy()
        values = dict(zip(self.outputs, self.session.run(None, {self.input: images}), strict=True))
        maps = {
            name.removeprefix(MAP_OUTPUT_PREFIX): torch.from_numpy(value)
            for name, value in values.items()
            if name.startswith(MAP_OUTPUT_PREFIX)
        }
        regions = values.get(REGIONS_OUTPUT)
        return Prediction(
            probs=torch.from_numpy(values[PROBS_OUTPUT]),
            maps=maps or None,
            regions=None if regions is None else list(torch.from_numpy(np.ascontiguousarray(regions))),
        )


def load_runtime(name: str, method: Method, model_dir: str | Path, **options: Any) -> Runtime:
    """The runtime called ``name`` for a loaded method: PyTorch, or the folder's ``model.onnx``."""
    if name == "torch":
        return TorchRuntime(method)
    if name == "onnxruntime":
        return OnnxRuntime(Path(model_dir) / ONNX_FILE, **options)
    raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
