"""Patient-level bootstrap shared by every metrics section.

Images of one patient are correlated (follow-ups, two views), so confidence intervals resample
*patients* with replacement and keep all of each drawn patient's images. A resample is represented as a
row of per-image weights (how many times the image's patient was drawn): a metric computed with integer
sample weights equals the metric on the resampled set, so a block of resamples is one matrix operation.

Intervals are bias-corrected and accelerated (BCa, Efron 1987; Efron & Tibshirani 1993, ch. 14): the
percentile interval moved by the share of resamples below the estimate (bias) and by the skewness of
the leave-one-patient-out jackknife values (acceleration). A percentile interval assumes the bootstrap
distribution is centred on the estimate; for bounded or skewed statistics on small test sets
(a sensitivity near 1, a thin label's AUROC) it is not, and BCa follows that. The jackknife is one more
weight matrix (each row leaves one patient out), computed by the same statistic. Resamples and jackknife
sets on which a statistic is undefined (NaN, e.g. one class only) are left out of that statistic's
interval. An interval that still does not contain its estimate is flagged (``*_ci_excludes_estimate``)
and marked in every table (:mod:`radsight.report.cells`).

Two models scored on the same images are compared by one paired test, :func:`paired_test`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from radsight.metrics.maps import FloatArray

# Entries of one weight block (resamples x images); bounds memory for large test sets.
_BLOCK_ENTRIES = 4_000_000
CI_LEVEL = 0.95
CI_METHOD = "bca"
# More patients than this are left out in this many interleaved groups (a grouped jackknife: the
# acceleration it estimates is the same, at a bounded cost for very large test sets).
MAX_JACKKNIFE_SETS = 1000
EXCLUDES_ESTIMATE = "_ci_excludes_estimate"
TIE_TOLERANCE = 1e-10  # relative: a resample this close to the estimate ties with it


def patient_groups(patient_ids: Sequence | ArrayLike, n_images: int) -> np.ndarray:
    """Patient index (0..P-1) per image."""
    ids = np.asarray(patient_ids)
    if ids.shape != (n_images,):
        raise ValueError(f"expected {n_images} patient ids (one per image), got shape {ids.shape}")
    return np.unique(ids, return_inverse=True)[1].ravel()


def weight_blocks(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resample weights, shape (resamples, images), ``n_boot`` rows in all: integer counts
    (int64), which statistics of counts sum exactly and fast.

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
        yield counts[:, groups]


def jackknife_blocks(groups: np.ndarray) -> Iterator[np.ndarray]:
    """Blocks of leave-one-out weights (int64), shape (sets, images): each row is 1 except for the images
    of one left-out patient (0). With more than :data:`MAX_JACKKNIFE_SETS` patients, patient p is left
    out with every patient of index p modulo that number."""
    n_patients = int(groups.max()) + 1 if groups.size else 0
    if n_patients == 0:
        raise ValueError("cannot bootstrap an empty set of images")
    n_sets = min(n_patients, MAX_JACKKNIFE_SETS)
    left_out_in = groups % n_sets
    block = max(1, _BLOCK_ENTRIES // groups.size)
    for start in range(0, n_sets, block):
        sets = np.arange(start, min(start + block, n_sets))
        yield (left_out_in[None, :] != sets[:, None]).astype(np.int64)


def _run(
    statistic: Callable[[FloatArray], dict[str, FloatArray]], blocks: Iterable[FloatArray]
) -> dict[str, FloatArray]:
    parts: dict[str, list[FloatArray]] = {}
    for weights in blocks:
        for name, values in statistic(weights).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def bootstrap(
    statistic: Callable[[FloatArray], dict[str, FloatArray]],
    groups: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, FloatArray]:
    """Run ``statistic`` (weights (b, n) -> arrays with leading axis b) over ``n_boot`` resamples."""
    return _run(statistic, weight_blocks(groups, n_boot, seed))


@dataclass(frozen=True)
class Replicates:
    """A statistic on every bootstrap resample and on every jackknife set: what a BCa interval needs."""

    boot: FloatArray  # (n_boot, ...)
    jackknife: FloatArray  # (jackknife sets, ...)

    def __getitem__(self, index: int | tuple) -> Replicates:
        """The replicates of one entry of a statistic with trailing axes (e.g. one label)."""
        index = index if isinstance(index, tuple) else (index,)
        return Replicates(self.boot[(slice(None), *index)], self.jackknife[(slice(None), *index)])


def resample(
    statistic: Callable[[FloatArray], dict[str, FloatArray]],
    groups: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, Replicates]:
    """``statistic`` on ``n_boot`` patient resamples and on the leave-one-patient-out jackknife sets."""
    boot = bootstrap(statistic, groups, n_boot, seed)
    jackknife = _run(statistic, jackknife_blocks(groups))
    return {name: Replicates(values, jackknife[name]) for name, values in boot.items()}


def percentile_ci(samples: FloatArray, level: float = CI_LEVEL) -> tuple[FloatArray, FloatArray]:
    """Percentile interval along axis 0, ignoring NaN resamples; NaN where no resample is defined."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: the interval stays NaN
        low, high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


def _quantiles(samples: FloatArray, q: FloatArray) -> FloatArray:
    """Per column of ``samples`` (axis 0), the ``q`` quantile of its defined values (numpy's "linear")."""
    ordered = np.sort(samples, axis=0)  # NaN last
    count = np.sum(~np.isnan(samples), axis=0)
    position = q * np.maximum(count - 1, 0)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    low = np.take_along_axis(ordered, below[None], axis=0)[0]
    high = np.take_along_axis(ordered, above[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        value = low + (position - below) * (high - low)
    return np.where(count > 0, value, np.nan)


def bca_interval(
    estimate: ArrayLike, replicates: Replicates, level: float = CI_LEVEL
) -> tuple[FloatArray, FloatArray]:
    """The BCa interval of each entry (trailing axes) of a statistic; NaN where no resample is defined.

    Bias: z0 = Φ⁻¹(share of defined resamples below the estimate, ties counted half), kept within half a
    resample of 0 and 1 so that an estimate outside every resample still gets a (flagged) interval; a
    resample equal to the estimate up to rounding ties with it (statistics of counts tie often).
    Acceleration: a = Σd³ / (6 (Σd²)^1.5), d the jackknife mean minus each defined jackknife value (0 when
    fewer than two are defined or they do not vary). The bounds are the quantiles of the resamples at
    Φ(z0 + (z0 ± z) / (1 - a (z0 ± z))), z = Φ⁻¹((1 + level) / 2), as in scipy.stats.bootstrap.
    """
    theta = np.asarray(estimate, dtype=np.float64)
    boot = replicates.boot
    defined = np.sum(~np.isnan(boot), axis=0)
    tie = TIE_TOLERANCE * np.maximum(1.0, np.abs(theta))  # equal up to rounding is a tie
    with np.errstate(invalid="ignore", divide="ignore"):
        below = (np.sum(boot < theta - tie, axis=0) + np.sum(boot <= theta + tie, axis=0)) / (2.0 * defined)
        half = 0.5 / np.maximum(defined, 1)
        z0 = ndtri(np.clip(below, half, 1 - half))
        jack = replicates.jackknife
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # columns with no defined jackknife value
            deviation = np.nanmean(jack, axis=0) - jack
        spread = np.nansum(deviation**2, axis=0)
        usable = (np.sum(~np.isnan(jack), axis=0) >= 2) & (spread > 0)
        acceleration = np.where(usable, np.nansum(deviation**3, axis=0) / (6 * spread**1.5), 0.0)
        z = ndtri((1 + level) / 2)
        shifted = [z0 + side for side in (-z, z)]
        alphas = [ndtr(z0 + s / (1 - acceleration * s)) for s in shifted]
    low, high = (_quantiles(boot, np.nan_to_num(alpha, nan=0.5)) for alpha in alphas)
    undefined = (defined == 0) | np.isnan(theta)
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def json_float(value: float) -> float | None:
    """A JSON-safe number: undefined (NaN) and infinite values become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def with_ci(name: str, value: float, replicates: Replicates | None, level: float = CI_LEVEL) -> dict:
    """``{name, name_ci_low, name_ci_high}`` with the BCa interval (None where the value is undefined),
    and ``name_ci_excludes_estimate: True`` when the interval does not contain the value."""
    low = high = float("nan")
    if replicates is not None and math.isfinite(value):
        low, high = (float(v) for v in bca_interval(value, replicates, level))
    entry = {name: json_float(value), f"{name}_ci_low": json_float(low), f"{name}_ci_high": json_float(high)}
    if math.isfinite(low) and math.isfinite(high) and not low <= value <= high:
        entry[f"{name}{EXCLUDES_ESTIMATE}"] = True
    return entry


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

        samples = resample(statistic, groups, n_boot, seed)["ratio"]
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
    boots = resample(statistic, patient_groups(patient_ids, n_images), n_boot, seed)
    differences = boots["difference"].boot
    shifted = differences[~np.isnan(differences)] - observed["difference"]
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
