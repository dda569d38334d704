"""Helpers shared by the two MIMIC-CXR eye-gaze sources, EGD-CXR and REFLACX.

Neither dataset ships images: both list MIMIC-CXR DICOM paths, which are found here in the user's
MIMIC-CXR or MIMIC-CXR-JPG copy. Both record gaze that may fall off the image, which is dropped here.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from radsight.errors import DataError


def images_folder(images_root: str | Path) -> Path:
    """The user's MIMIC-CXR(-JPG) folder, checked when the source is built rather than at the first image."""
    folder = Path(images_root)
    if not folder.is_dir():
        raise DataError(folder, "MIMIC-CXR images folder (option images_root) not found")
    return folder


def resolve_mimic_image(images_root: Path, listed: str) -> Path:
    """Find a listed MIMIC-CXR image in the user's copy, accepting the JPG release for a listed DICOM.

    The datasets list ``files/p10/p10000032/s5.../<dicom_id>.dcm``, sometimes behind a download prefix
    (``physionet.org/files/mimic-cxr/2.0.0/``); MIMIC-CXR-JPG has the same tree from ``files/`` on, with
    ``.jpg`` files of the same stem and size. The first existing candidate wins: the path as listed, then
    from its last ``files`` folder on, each with its own suffix and then ``.jpg``. When none exists the
    listed path is returned, so that the missing-file error names what the dataset asked for.
    """
    listed_path = PurePosixPath(listed.replace("\\", "/"))
    parts = listed_path.parts
    tails = [listed_path]
    if "files" in parts:
        tails.append(PurePosixPath(*parts[len(parts) - 1 - parts[::-1].index("files") :]))
    candidates = dict.fromkeys(path for tail in tails for path in (tail, tail.with_suffix(".jpg")))
    for candidate in candidates:
        if (images_root / candidate).is_file():
            return images_root / candidate
    return images_root / listed_path


def on_image(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Which N x 2 (x, y) pixel positions lie on a (height, width) image, edges included; NaN is off."""
    height, width = size
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
