"""Saliency maps against radiologists' gaze, with the MIT saliency benchmark's definitions.

Definitions follow Bylinskii et al., "What do different evaluation metrics tell us about saliency
models?" (TPAMI 2019) and the benchmark's reference implementation; the code here is written from those
formulas. Every saliency map is bilinearly resized to the gaze frame first. Continuous gaze-density maps
are the reference for CC, KL and SIM; binary fixation maps (duplicate fixations on one pixel count once,
durations are ignored) for NSS, the AUCs and information gain.

AUC-Judd comes in two readings that differ only on tied pixels, which CAMs (exact zeros after the ReLU)
and maps saved as 8-bit images are full of: :func:`auc_judd` ranks ties exactly (as pysaliency without
jitter; deterministic, 0.5 for a constant map) and :func:`auc_judd_mit` adds the benchmark's tiny random
jitter before ranking, averaged over seeded draws (the number to put beside published MIT scores).
``saliency_section`` reports both under those names.

Deliberate departures, all at degenerate inputs where the benchmark returns NaN:

- a constant saliency map is chance: CC = NSS = 0, AUCs = 0.5 (``auc_judd_mit`` keeps the benchmark's
  value, above 0.5); as a distribution (KL, SIM, information gain) a map without mass after
  normalisation is uniform.

NSS uses the sample standard deviation (ddof=1), as MATLAB's ``std`` in the benchmark does.

Two variants used by the multi-task gaze UNet papers are kept under their own names:
:func:`kl_divergence_no_eps` and :func:`histogram_similarity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from radsight.metrics.bootstrap import mean_with_ci
from radsight.metrics.maps import BoolArray, FloatArray, MapLike, as_array, as_map, minmax, resize_map

EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps, the benchmark's regulariser
AUC_SPLITS = 100  # random negative sets averaged by AUC-Borji and shuffled AUC
AUC_STEP = 0.1  # threshold step of AUC-Borji and shuffled AUC
MIT_JITTER = 1e-7  # the benchmark's AUC-Judd adds uniform noise in [0, MIT_JITTER) to the map before ranking
AUC_JUDD_DRAWS = 10  # jitter draws averaged by auc_judd_mit


def fixation_map(fixations: ArrayLike, size: tuple[int, int]) -> BoolArray:
    """Binary map of fixated pixels from (x, y[, duration]) rows in pixels; off-frame points are dropped.

    Pixel (row, col) covers [row, row + 1) x [col, col + 1), as box coordinates do. A fixated pixel counts
    once, however many fixations land on it and however long they last: the benchmark's fixation maps are
    binary, so NSS and the AUCs weigh pixels, not fixations.
    """
    points = as_array(fixations)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise ValueError(f"fixations must be rows of (x, y[, duration]), got shape {points.shape}")
    height, width = int(size[0]), int(size[1])
    cols, rows = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    out = np.zeros((height, width), dtype=bool)
    out[rows[inside], cols[inside]] = True
    if not out.any():
        raise ValueError(f"no fixation falls inside the {height} x {width} frame")
    return out


def center_bias(size: tuple[int, int], sigma: float = 0.25) -> FloatArray:
    """A centred Gaussian with a standard deviation of ``sigma`` times each side: the usual baseline."""
    rows = (np.arange(size[0]) + 0.5) / size[0] - 0.5
    cols = (np.arange(size[1]) + 0.5) / size[1] - 0.5
    return np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2))


def _fixations(fixations: MapLike) -> BoolArray:
    fixated = as_map(fixations) > 0
    if not fixated.any():
        raise ValueError("fixation map is empty (no fixated pixel): the metric is undefined for it")
    return fixated


def _gaze(gaze_map: MapLike) -> FloatArray:
    density = as_map(gaze_map)
    if density.min() < 0 or density.sum() <= 0:
        raise ValueError("gaze map must be non-negative with positive mass")
    return density / density.sum()


def _distribution(values: FloatArray, rescale: bool) -> FloatArray:
    """Sum-normalised map, min-max rescaled first when ``rescale``; a map without mass is uniform."""
    if rescale:
        values = minmax(values)
    elif values.min() < 0:
        raise ValueError("this metric reads the map as a distribution: it must be non-negative")
    total = values.sum()
    return values / total if total > 0 else np.full_like(values, 1.0 / values.size)


def _standardise(values: FloatArray) -> FloatArray:
    """Zero mean, unit sample standard deviation; a constant map becomes zeros (chance)."""
    centred = values - values.mean()
    spread = values.std(ddof=1) if values.size > 1 else 0.0
    return centred / spread if spread > 0 else np.zeros_like(values)


def cc(saliency: MapLike, gaze_map: MapLike) -> float:
    """Pearson correlation between the saliency map and the gaze density map."""
    g = _gaze(gaze_map)
    s = _standardise(resize_map(saliency, g.shape))
    g = _standardise(g)
    denominator = np.sqrt(np.sum(s * s) * np.sum(g * g))
    return float(np.sum(s * g) / denominator) if denominator > 0 else 0.0


def kl_divergence(saliency: MapLike, gaze_map: MapLike) -> float:
    """KL(gaze || saliency) = Σ G log(eps + G / (S + eps)), both sum-normalised (natural log)."""
    g = _gaze(gaze_map)
    s = _distribution(resize_map(saliency, g.shape), rescale=False)
    return float(np.sum(g * np.log(EPS + g / (s + EPS))))


def kl_divergence_no_eps(saliency: MapLike, gaze_map: MapLike) -> float:
    """KL(gaze || saliency) without regularisation: infinite where the map is 0 but gaze is not."""
    g = _gaze(gaze_map)
    s = _distribution(resize_map(saliency, g.shape), rescale=False)
    looked = g > 0
    if np.any(s[looked] == 0):
        return float("inf")
    return float(np.sum(g[looked] * np.log(g[looked] / s[looked])))


def sim(saliency: MapLike, gaze_map: MapLike) -> float:
    """Similarity (histogram intersection) Σ min(S, G) after min-max then sum normalisation of each."""
    g = _distribution(_gaze(gaze_map), rescale=True)
    s = _distribution(resize_map(saliency, g.shape), rescale=True)
    return float(np.minimum(s, g).sum())


def histogram_similarity(saliency: MapLike, gaze_map: MapLike) -> float:
    """Σ min(S, G) of the sum-normalised maps, without SIM's min-max step."""
    g = _gaze(gaze_map)
    s = _distribution(resize_map(saliency, g.shape), rescale=False)
    return float(np.minimum(s, g).sum())


def nss(saliency: MapLike, fixations: MapLike) -> float:
    """Normalized scanpath saliency: mean of the standardised map at fixated pixels.

    The map is standardised with its sample standard deviation (ddof=1), as the benchmark's MATLAB
    ``std`` does; each fixated pixel counts once (see :func:`fixation_map`).
    """
    fixated = _fixations(fixations)
    return float(_standardise(resize_map(saliency, fixated.shape))[fixated].mean())


def auc_judd(saliency: MapLike, fixations: MapLike) -> float:
    """ROC area of fixated pixels vs all other pixels, one curve point per fixated value (Judd et al.).

    At each threshold t among the fixated values: TPR = share of fixated pixels >= t, FPR = share of the
    other pixels >= t; the points (0, 0) and (1, 1) close the curve, integrated by trapezoids. Tied
    pixels are counted exactly: they pass each threshold together, so a constant map scores 0.5. Equal
    to the benchmark on maps without ties; see :func:`auc_judd_mit` for its jittered reading of ties.
    """
    fixated = _fixations(fixations)
    return _judd_area(resize_map(saliency, fixated.shape), fixated)


def auc_judd_mit(
    saliency: MapLike, fixations: MapLike, *, n_draws: int = AUC_JUDD_DRAWS, seed: int = 0
) -> float:
    """AUC-Judd as the MIT benchmark computes it with its default jitter, averaged over ``n_draws``.

    Each draw adds uniform noise in [0, ``MIT_JITTER``) to the map rescaled to [0, 1] (the benchmark
    jitters the map as read from an image, in [0, 1]; rescaling first keeps the noise that small next to
    the map's range whatever its units, e.g. a gaze softmax of 1e-5 per pixel), so that tied pixels are
    ranked in random order, then scores it with :func:`auc_judd`. Draw d uses the d-th
    ``random(shape)`` field of ``numpy.random.default_rng(seed)``. On a map without ties (and with gaps
    above the jitter) it equals :func:`auc_judd`; on ties it is higher, because Judd's curve has points
    only at fixated pixels and its trapezoids credit the pixels ranked between two of them by half (a
    constant map with n fixated pixels scores 0.5 + 1 / (2 n + 2) on average).
    """
    if n_draws < 1:
        raise ValueError(f"auc_judd_mit needs at least one jitter draw, got n_draws={n_draws}")
    fixated = _fixations(fixations)
    s = minmax(resize_map(saliency, fixated.shape))
    rng = np.random.default_rng(seed)
    return float(np.mean([_judd_area(s + MIT_JITTER * rng.random(s.shape), fixated) for _ in range(n_draws)]))


def _judd_area(values: FloatArray, fixated: BoolArray) -> float:
    """Judd's ROC area of ``values`` (in the fixations' frame) with ties counted exactly."""
    n_other = fixated.size - fixated.sum()
    if n_other == 0:
        raise ValueError("every pixel is fixated: AUC-Judd has no negatives")
    s = minmax(values)
    at_fixations, everywhere = np.sort(s[fixated]), np.sort(s, axis=None)
    thresholds = np.unique(at_fixations)[::-1]
    tp = at_fixations.size - np.searchsorted(at_fixations, thresholds, side="left")
    above = everywhere.size - np.searchsorted(everywhere, thresholds, side="left")
    tpr = np.r_[0.0, tp / at_fixations.size, 1.0]
    fpr = np.r_[0.0, (above - tp) / n_other, 1.0]
    return float(np.trapezoid(tpr, fpr))


def _sampled_auc(s: FloatArray, fixated: BoolArray, negatives: FloatArray, step: float) -> float:
    """Mean over rows of ``negatives`` of the ROC area of fixated values vs that row, on a step grid."""
    top = max(s[fixated].max(), negatives.max())
    per_unit = 1.0 / step  # k / per_unit, not k * step: 3 * 0.1 != 0.3 would drop values equal to a step
    thresholds = np.arange(int(np.floor(top * per_unit + 1e-9)), -1, -1) / per_unit
    tpr = np.mean(s[fixated][None, :] >= thresholds[:, None], axis=1)
    fpr = np.mean(negatives[:, None, :] >= thresholds[None, :, None], axis=2)
    rows = negatives.shape[0]
    tpr = np.hstack([np.zeros((rows, 1)), np.broadcast_to(tpr, (rows, tpr.size)), np.ones((rows, 1))])
    fpr = np.hstack([np.zeros((rows, 1)), fpr, np.ones((rows, 1))])
    return float(np.mean(np.trapezoid(tpr, fpr, axis=1)))


def auc_borji(
    saliency: MapLike,
    fixations: MapLike,
    *,
    n_splits: int = AUC_SPLITS,
    step: float = AUC_STEP,
    seed: int = 0,
) -> float:
    """ROC area of fixated values vs as many uniformly random pixels, averaged over ``n_splits`` draws."""
    fixated = _fixations(fixations)
    s = minmax(resize_map(saliency, fixated.shape))
    draws = np.random.default_rng(seed).integers(0, s.size, size=(n_splits, int(fixated.sum())))
    return _sampled_auc(s, fixated, s.ravel()[draws], step)


def auc_shuffled(
    saliency: MapLike,
    fixations: MapLike,
    other_fixations: MapLike,
    *,
    n_splits: int = AUC_SPLITS,
    step: float = AUC_STEP,
    seed: int = 0,
) -> float:
    """AUC-Borji with negatives drawn (without replacement) from other images' fixated pixels.

    Sampling negatives where people look on other images cancels the centre bias that a plain AUC
    rewards. ``other_fixations`` is a binary map of those pixels in this image's frame.
    """
    fixated, other = _fixations(fixations), _fixations(other_fixations)
    if other.shape != fixated.shape:
        raise ValueError(f"other images' fixation map is {other.shape}, this image's frame {fixated.shape}")
    others = np.flatnonzero(other)
    s = minmax(resize_map(saliency, fixated.shape))
    count = min(int(fixated.sum()), others.size)
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(others.size, count, replace=False) for _ in range(n_splits)])
    return _sampled_auc(s, fixated, s.ravel()[others[picks]], step)


def information_gain(saliency: MapLike, fixations: MapLike, baseline: MapLike) -> float:
    """Mean bits per fixation gained over ``baseline``: mean log2(eps + S) - log2(eps + B) at fixations,
    each map min-max rescaled then sum-normalised (Kümmerer et al., 2015)."""
    fixated = _fixations(fixations)
    s = _distribution(resize_map(saliency, fixated.shape), rescale=True)
    b = _distribution(resize_map(baseline, fixated.shape), rescale=True)
    return float(np.mean(np.log2(EPS + s[fixated]) - np.log2(EPS + b[fixated])))


def saliency_section(
    pred_maps: Sequence[MapLike],
    gaze_maps: Sequence[MapLike | None] | None = None,
    fixations_list: Sequence[ArrayLike | None] | None = None,
    *,
    frame_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None = None,
    baseline_map: MapLike | None = None,
    patient_ids: Sequence | ArrayLike | None = None,
    n_splits: int = AUC_SPLITS,
    step: float = AUC_STEP,
    judd_draws: int = AUC_JUDD_DRAWS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The metrics.json "saliency" section: means over images with a patient-bootstrap CI.

    Gaze maps give CC, KL, SIM and the two UNet-paper variants; fixations ((x, y[, duration]) rows in
    pixels of the gaze frame) give NSS, AUC-Judd (``auc_judd``: ties exact; ``auc_judd_mit``: the
    benchmark's jitter, mean of ``judd_draws`` draws), AUC-Borji, shuffled AUC (negatives: the fixations of
    every other image, rescaled to this frame) and information gain over ``baseline_map`` (default: a
    centre-bias Gaussian). Images whose gaze map or fixations are None are left out of those metrics.
    The frame of image i is its gaze map's shape, else ``frame_sizes`` (one size or one per image).
    """
    n = len(pred_maps)
    gaze = list(gaze_maps) if gaze_maps is not None else [None] * n
    fixes = list(fixations_list) if fixations_list is not None else [None] * n
    if len(gaze) != n or len(fixes) != n:
        raise ValueError(f"{n} maps but {len(gaze)} gaze maps and {len(fixes)} fixation lists")
    if all(g is None for g in gaze) and all(f is None for f in fixes):
        raise ValueError("saliency metrics need gaze maps or fixations")
    frames = [_frame(i, gaze[i], fixes[i], frame_sizes) for i in range(n)]
    scores: dict[str, FloatArray] = {}
    for i, raw in enumerate(pred_maps):
        if frames[i] is None:
            continue
        saliency = resize_map(raw, frames[i])  # once: every metric below finds it in its frame
        values: dict[str, float] = {}
        if gaze[i] is not None:
            for metric in (cc, kl_divergence, sim, kl_divergence_no_eps, histogram_similarity):
                values[metric.__name__] = metric(saliency, gaze[i])
        if fixes[i] is not None:
            fixated = fixation_map(fixes[i], frames[i])
            baseline = center_bias(frames[i]) if baseline_map is None else baseline_map
            sampling = {"n_splits": n_splits, "step": step, "seed": seed + i}
            values["nss"] = nss(saliency, fixated)
            values["auc_judd"] = auc_judd(saliency, fixated)
            values["auc_judd_mit"] = auc_judd_mit(saliency, fixated, n_draws=judd_draws, seed=seed + i)
            values["auc_borji"] = auc_borji(saliency, fixated, **sampling)
            others = _other_fixations(i, fixes, frames)
            if others is not None:
                values["auc_shuffled"] = auc_shuffled(saliency, fixated, others, **sampling)
            values["information_gain"] = information_gain(saliency, fixated, baseline)
        for name, value in values.items():
            scores.setdefault(name, np.full(n, np.nan))[i] = value
    section: dict = {
        "n_images": n,
        "n_images_with_gaze_map": sum(g is not None for g in gaze),
        "n_images_with_fixations": sum(f is not None for f in fixes),
    }
    boot = {"patient_ids": patient_ids, "n_boot": n_boot, "seed": seed}
    for name, per_image in scores.items():
        section |= mean_with_ci(name, per_image, **boot)
    if "auc_judd_mit" in scores:
        section["auc_judd_mit_draws"] = judd_draws
    if "kl_divergence_no_eps" in scores:
        section["kl_divergence_no_eps_n_infinite"] = int(np.isinf(scores["kl_divergence_no_eps"]).sum())
    return section


def _frame(
    i: int,
    gaze_map: MapLike | None,
    fixations: ArrayLike | None,
    frame_sizes: Sequence[tuple[int, int]] | tuple[int, int] | None,
) -> tuple[int, int] | None:
    """Image i's gaze frame: its gaze map's shape, else the given size; None when it has no gaze data."""
    if gaze_map is not None:
        shape = as_map(gaze_map).shape
        return int(shape[0]), int(shape[1])
    if fixations is None:
        return None
    if frame_sizes is None:
        raise ValueError(f"image {i} has fixations but no gaze map: pass frame_sizes")
    size = frame_sizes if isinstance(frame_sizes[0], int | np.integer) else frame_sizes[i]
    return int(size[0]), int(size[1])


def _other_fixations(
    i: int, fixes: list[ArrayLike | None], frames: list[tuple[int, int] | None]
) -> BoolArray | None:
    """Every other image's fixations, rescaled into image i's frame; None when no other image has any."""
    height, width = frames[i]
    scaled = []
    for j, points in enumerate(fixes):
        if j != i and points is not None:
            xy = as_array(points)[:, :2]
            scaled.append(xy * [width / frames[j][1], height / frames[j][0]])
    return fixation_map(np.concatenate(scaled), (height, width)) if scaled else None
