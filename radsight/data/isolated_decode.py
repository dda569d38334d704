"""Decode DICOM pixel data with a decoder that may abort the process, in a child process.

GDCM is the only permissively licensed JPEG Lossless decoder that pydicom drives, and on some
inconsistent headers it ends the whole process (an uncaught C++ exception), which no ``try`` can catch.
So it runs in a forked child: the parent gets the pixels as raw bytes (never a pickle), or one line
saying that the decoder failed or crashed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

DECODE_TIMEOUT_S = 60.0
"""A decoder still running after this long is stopped; no radiograph takes more than seconds."""


def _decode_and_send(dataset: Any, plugin: str, pipe: Connection) -> None:
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)  # a crashing decoder's own message would print over the parent's one line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.pixel_array_options(decoding_plugin=plugin)
            pixels = np.ascontiguousarray(dataset.pixel_array)
        header = {"dtype": pixels.dtype.str, "shape": list(pixels.shape)}
        pipe.send_bytes(json.dumps(header).encode())
        pipe.send_bytes(pixels.tobytes())
    except Exception as error:  # reported to the parent, which turns it into a DataError line
        pipe.send_bytes(json.dumps({"error": f"{type(error).__name__}: {error}"[:300]}).encode())
    finally:
        pipe.close()


def decode_isolated(dataset: Any, plugin: str) -> np.ndarray:
    """The dataset's pixel array through ``plugin`` in a child process; RuntimeError with the reason
    when the decoder raised, crashed or hung."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_decode_and_send, args=(dataset, plugin, sender), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork beside threads: the child only decodes
        child.start()
    sender.close()
    try:
        if not receiver.poll(DECODE_TIMEOUT_S):
            raise RuntimeError(f"{plugin} did not finish within {DECODE_TIMEOUT_S:.0f} s")
        header = json.loads(receiver.recv_bytes())
        if "error" in header:
            raise RuntimeError(header["error"])
        data = receiver.recv_bytes()
        return np.frombuffer(data, dtype=np.dtype(header["dtype"])).reshape(header["shape"]).copy()
    except EOFError:
        child.join(5)
        raise RuntimeError(f"the {plugin} decoder crashed on it (exit status {child.exitcode})") from None
    finally:
        receiver.close()
        if child.is_alive():
            os.kill(child.pid, 9)
        child.join(5)
