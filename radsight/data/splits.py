"""Patient-level splits (seeded, or named per image by the data) and nested label-budget subsets.

Images of one patient are correlated (same anatomy, often same findings); splitting by image would let
a model be tested on the patients it trained on. Label budgets model "we could afford n expert labels
per class": the subsets for growing budgets are nested so a label-efficiency curve measures the value
of more labels, not of a different draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radsight.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")


def patient_split(
    patient_ids: Sequence[str],
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sorted image indices of the train, val and test splits; every patient's images in one split.

    Fractions count patients: each split gets within one patient of ``fraction * n_patients``. With
    ``labels`` (N x C, NaN = not annotated, treated as not positive) patients are stratified by which
    classes any of their images is positive for: patients are shuffled, grouped by that pattern, and
    dealt to the split furthest below its share, so every group is spread in proportion.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ConfigError(
            f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}"
        )
    patients, image_patient = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(patients))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32).reshape(len(image_patient), -1)
        positive = np.zeros((len(patients), labels.shape[1]), dtype=bool)
        np.logical_or.at(positive, image_patient, labels == 1)
        pattern = np.unique(positive, axis=0, return_inverse=True)[1].reshape(-1)
        order = order[np.argsort(pattern[order], kind="stable")]
    patient_split_of = np.empty(len(patients), dtype=np.int64)
    counts = np.zeros(3)
    for dealt, patient in enumerate(order, start=1):
        split = int(np.argmax(fractions * dealt - counts))
        patient_split_of[patient] = split
        counts[split] += 1
    image_split = patient_split_of[image_patient]
    return {name: np.flatnonzero(image_split == k) for k, name in enumerate(SPLIT_NAMES)}


def named_split(split_names: Sequence[str], patient_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Sorted image indices of each split that ``split_names`` (train, val or test per image) gives,
    refused when a patient's images lie in two splits (the model would be tested on its own patients)."""
    names = np.asarray(split_names, dtype=str)
    unknown = sorted(set(names.tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"split names must be {', '.join(SPLIT_NAMES)}, got {unknown}")
    splits_of: dict[str, set[str]] = {}
    for patient, name in zip(patient_ids, names.tolist(), strict=True):
        splits_of.setdefault(patient, set()).add(name)
    mixed = [(patient, sorted(found)) for patient, found in splits_of.items() if len(found) > 1]
    if mixed:
        patient, found = mixed[0]
        problem = f"{len(mixed)} patient(s) have images in several splits, e.g. {patient!r} in {found}"
        raise DataError(None, f"split column: {problem}; give each patient one split")
    return {name: np.flatnonzero(names == name) for name in SPLIT_NAMES}


def label_budget_subsets(
    labels: np.ndarray,
    budgets: Sequence[int],
    seed: int = 0,
    label_names: Sequence[str] | None = None,
) -> dict[int, np.ndarray]:
    """For each budget n, sorted indices of images whose labels may be used: exactly n positives of
    every class, plus exactly n "normal" images, nested across budgets.

    - Positive means label 1; NaN (not annotated) never counts. A multi-label image counts for every
      class it is positive for, so it is only taken while none of those classes is already full.
    - Normal means no annotated label is positive and at least one label is annotated (0).
    - Each class, then the normals, is filled from its own seeded shuffle, and a larger budget only adds
      images, so the subset for 10 lies inside the one for 30.
    - A budget that cannot be met (too few positives or normals, or co-occurring positives that would
      overfill another class) raises ``DataError`` saying which class fell short and by how much.
    """
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 2:
        raise DataError(None, f"labels must be N x C, got shape {labels.shape}")
    if any(int(b) != b or b < 1 for b in budgets):
        raise ConfigError(f"label budgets must be positive integers, got {list(budgets)}")
    n_classes = labels.shape[1]
    names = list(label_names) if label_names is not None else [f"class {c}" for c in range(n_classes)]
    positive = labels == 1
    annotated = ~np.isnan(labels)
    normal = ~positive.any(axis=1) & annotated.any(axis=1)
    rng = np.random.default_rng(seed)
    queues = [rng.permutation(np.flatnonzero(positive[:, c])) for c in range(n_classes)]
    normal_queue = rng.permutation(np.flatnonzero(normal))

    chosen = np.zeros(len(labels), dtype=bool)
    counts = np.zeros(n_classes, dtype=np.int64)
    subsets: dict[int, np.ndarray] = {}
    for budget in sorted(set(int(b) for b in budgets)):
        for c, queue in enumerate(queues):
            for index in queue:
                if counts[c] >= budget:
                    break
                if chosen[index] or (positive[index] & (counts >= budget)).any():
                    continue
                chosen[index] = True
                counts += positive[index]
            if counts[c] < budget:
                raise DataError(
                    None,
                    f"label budget {budget}: only {counts[c]} positives of {names[c]} could be chosen "
                    f"({len(queue)} positive images, some shared with classes already full)",
                )
        normals_needed = budget - int(chosen[normal_queue].sum())
        fresh = normal_queue[~chosen[normal_queue]][:normals_needed]
        if len(fresh) < normals_needed:
            raise DataError(
                None, f"label budget {budget}: needs {budget} normal images, only {len(normal_queue)}"
            )
        chosen[fresh] = True
        subsets[budget] = np.flatnonzero(chosen)
    return subsets
