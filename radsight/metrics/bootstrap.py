"""Patient-level bootstrap shared by every metrics section.

Images of one patient are correlated (follow-ups, two views), so confidence intervals resample
*patients* with replacement and keep all of each drawn patient's images. A resample is represented as a
row of per-image weights (how many times the image's patient was drawn): a metric computed with integer
sample weights equals the metric on the resampled set, so a block of resamples is one matrix operation.
Intervals are percentile intervals; resamples on which a statistic is undefined (NaN, e.g. one class
only) are left out of that statistic's interval.

Two models scored on the same images are compared by one paired test, :func:`paired_test`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike

from radsight.metrics.maps import FloatArray

# Entries of one weight block (resamples x images); bounds memory for large test sets.
_BLOCK_ENTRIES = 4_000_000
CI_LEVEL = 0.95


def patient_groups(patient_ids: Sequence | ArrayLike, n_images: int) -> np.ndarray:
    """Patient index (0..P-1) per image."""
    ids = np.asarray(patient_ids)
    if ids.shape != (n_images,):
        raise ValueError(f"expected {n_images} patient ids (one per image), got shape {ids.shape}")
    return np.unique(ids, return_inverse=True)[1].ravel()


def weight_blocks(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[FloatArray]:
    """Blocks of resample weights, shape (resamples, images), ``n_boot`` rows in all.

    The draws depend only on (seed, n_boot, groups), so every section and the paired test see the
    same resamples for the same seed.
    """
    n_patients = int(groups.max()) + 1 if groups.size else 0
    if n_patients == 0:
        raise ValueError("cannot bootstrap an empty set of images")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // max(groups.size, n_patients))
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        draws = rng.integers(0, n_patients, size=(rows, n_patients))
        flat = (np.arange(rows)[:, None] * n_patients + draws).ravel()
        counts = np.bincount(flat, minlength=rows * n_patients).reshape(rows, n_patients)
        yield counts[:, groups].astype(np.float64)


def bootstrap(
    statistic: Callable[[FloatArray], dict[str, FloatArray]],
    groups: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, FloatArray]:
    """Run ``statistic`` (weights (b, n) -> arrays with leading axis b) over ``n_boot`` resamples."""
    parts: dict[str, list[FloatArray]] = {}
    for weights in weight_blocks(groups, n_boot, seed):
        for name, values in statistic(weights).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def percentile_ci(samples: FloatArray, level: float = CI_LEVEL) -> tuple[FloatArray, FloatArray]:
    """Percentile interval along axis 0, ignoring NaN resamples; NaN where no resample is defined."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: the interval stays NaN
        low, high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


def json_float(value: float) -> float | None:
    """A JSON-safe number: undefined (NaN) and infinite values become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def with_ci(name: str, value: float, samples: FloatArray | None, level: float = CI_LEVEL) -> dict:
    """``{name, name_ci_low, name_ci_high}``; the interval is None where the value is undefined."""
    low = high = float("nan")
    if samples is not None and math.isfinite(value):
        low, high = (float(v) for v in percentile_ci(samples, level))
    return {name: json_float(value), f"{name}_ci_low": json_float(low), f"{name}_ci_high": json_float(high)}


def ratio_with_ci(
    name: str,
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    patient_ids: Sequence | ArrayLike | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Pooled ratio sum(num) / sum(den) over images (a mean when ``den`` is omitted), with a CI.

    Without patient ids no interval is computed: resampling images as if independent would be too
    narrow whenever patients contribute several images.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=np.float64)
    value = float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")
    samples = None
    if patient_ids is not None and n_boot > 0 and num.size:
        groups = patient_groups(patient_ids, num.size)

        def statistic(weights: FloatArray) -> dict[str, FloatArray]:
            with np.errstate(invalid="ignore", divide="ignore"):
                return {"ratio": (weights @ num) / (weights @ den)}

        samples = bootstrap(statistic, groups, n_boot, seed)["ratio"]
    return with_ci(name, value, samples)


def mean_with_ci(
    name: str,
    values: ArrayLike,
    patient_ids: Sequence | ArrayLike | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean over images with a patient-bootstrap CI; images where the value is NaN (undefined) are left
    out, and callers report how many."""
    array = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(array)
    ids = None if patient_ids is None else np.asarray(patient_ids)[keep]
    return ratio_with_ci(name, array[keep], None, ids, n_boot=n_boot, seed=seed)


def paired_test(
    statistic: Callable[[FloatArray], dict[str, FloatArray]],
    patient_ids: Sequence | ArrayLike,
    n_images: int,
    *,
    metric: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Difference metric(A) - metric(B) of two models on the same images, with a paired patient-bootstrap
    interval and two-sided p-value.

    ``statistic`` maps resample weights (b, n) to ``{"a", "b", "difference"}``: the metric of A, of B
    and their difference on each resample (the difference as exactly as the metric allows, e.g. a mean
    of per-image differences), so both models are scored on the same resamples. The p-value is the
    share of resampled differences, centred on the observed one, at least as far from 0 as the observed
    difference (the bootstrap distribution shifted to the null), with +1 in numerator and denominator
    so that it is never reported as exactly 0.

    Undefined values (NaN): a resample on which the difference is undefined is left out of the interval
    and of the p-value (its numerator and its denominator); where the observed difference is undefined,
    the difference, its interval and the p-value are all undefined (None).
    """
    observed = {k: float(v[0]) for k, v in statistic(np.ones((1, n_images))).items()}
    boots = bootstrap(statistic, patient_groups(patient_ids, n_images), n_boot, seed)
    shifted = boots["difference"][~np.isnan(boots["difference"])] - observed["difference"]
    extreme = np.sum(np.abs(shifted) >= abs(observed["difference"]))
    p_value = (1 + extreme) / (1 + shifted.size) if math.isfinite(observed["difference"]) else math.nan
    return {
        "metric": metric,
        "model_a": json_float(observed["a"]),
        "model_b": json_float(observed["b"]),
        **with_ci("difference", observed["difference"], boots["difference"]),
        "p_value": json_float(p_value),
        "n_boot": n_boot,
        "seed": seed,
    }


def paired_mean_test(
    values_a: ArrayLike,
    values_b: ArrayLike,
    patient_ids: Sequence | ArrayLike,
    *,
    metric: str = "mean",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """:func:`paired_test` of the mean of per-image values, over the images where both are defined
    (``n_images`` of them); a value that is NaN (undefined, as in :func:`mean_with_ci`) leaves its
    image out."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    keep = ~np.isnan(a) & ~np.isnan(b)
    if not keep.any():
        raise ValueError("no image has a value for both models")
    a, b = a[keep], b[keep]

    def means(weights: FloatArray) -> dict[str, FloatArray]:
        total = weights.sum(axis=1)
        return {"a": weights @ a / total, "b": weights @ b / total, "difference": weights @ (a - b) / total}

    ids = np.asarray(patient_ids)[keep]
    result = paired_test(means, ids, a.size, metric=metric, n_boot=n_boot, seed=seed)
    return {**result, "n_images": int(a.size)}
