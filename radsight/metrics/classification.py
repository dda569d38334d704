"""Classification metrics for multi-label (sigmoid) and single-label (softmax) tasks.

Conventions, chosen once for every output:

- Labels are 1 / 0 / NaN; NaN ("not annotated") images are left out of that label only.
- A label whose annotated images hold one class only is *undefined*: its metrics are NaN here and None
  in JSON (never 0.5, never a crash), and it is left out of every macro average. The same holds within
  a bootstrap resample that happens to hold one class of a label: that resample's macro averages the
  other labels. Micro averages pool every annotated (image, label) pair, undefined labels' included.
- Ranking metrics follow scikit-learn: AUROC counts tied scores as half, AUPRC is average precision
  (sum over thresholds of recall increase x precision).
- Sensitivity, specificity and F1 predict positive when ``prob >= threshold``, one threshold per label
  given by the caller and held fixed on every bootstrap resample: thresholds are chosen once, on other
  images (the validation split, :func:`choose_thresholds`), never on the images being scored.
- A label with fewer than ``min_count`` positive or negative annotated images is *thin*: its values are
  reported and marked, and it is left out of the macro averages unless ``macro_includes_thin``.
- Single-label tasks also report argmax accuracy and macro F1, and calibration uses the top-class
  confidence; multi-label calibration pools every annotated (image, label) probability.

Every metric is computed from weighted counts with one row per bootstrap resample (see
:mod:`radsight.metrics.bootstrap`): the point estimate is the same code with weights of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from radsight.config import ThresholdRule
from radsight.metrics.bootstrap import (
    CI_LEVEL,
    CI_METHOD,
    bootstrap,
    json_float,
    paired_test,
    patient_groups,
    percentile_ci,
    resample,
    with_ci,
)
from radsight.metrics.maps import FloatArray, as_array

ECE_BINS = 15  # equal-width bins over [0, 1], as Guo et al. (2017) and torchmetrics' default
MIN_CLASS_COUNT = 10  # fewer positive or negative images than this make a label thin
DEFAULT_THRESHOLD = 0.5
Average = Literal["none", "macro", "micro"]


@dataclass(frozen=True)
class _Ranking:
    """One label's annotated images sorted by descending score, grouped by tied score."""

    images: np.ndarray  # image index per sorted item
    positive: np.ndarray  # bool per sorted item
    starts: np.ndarray  # first sorted position of each tie group
    thresholds: np.ndarray  # the score of each group, descending
    # The positives and the negatives apart, each in ranking order, and how many of each class lie
    # in the tie groups above an item (``_above``) or in those and its own (``_through``):
    # what the bootstrap's cumulative counts are indexed by (:func:`_block_metrics`).
    positives: np.ndarray  # image index per positive item
    negatives: np.ndarray  # image index per negative item
    pos_through_pos: np.ndarray  # per positive: positives through its group
    neg_through_pos: np.ndarray  # per positive: negatives through its group
    pos_above_neg: np.ndarray  # per negative: positives above its group
    pos_through_neg: np.ndarray  # per negative: positives through its group
    pos_upto: np.ndarray  # per group boundary (groups + 1): positives in the groups above it
    neg_upto: np.ndarray  # the same for negatives


@dataclass(frozen=True)
class _Prepared:
    """Validated inputs and what every resample reuses (rankings, calibration bins)."""

    probs: FloatArray  # (n, L)
    onehot: FloatArray  # (n, L) with NaN for not annotated
    classes: FloatArray | None  # (n,) class index with NaN (single-label only)
    rankings: list[_Ranking | None]  # None: no annotated image for that label
    pooled: _Ranking | None
    bin_counts: FloatArray  # (n, bins): calibration items per image and bin
    bin_confidence: FloatArray  # (n, bins): summed confidence
    bin_hits: FloatArray  # (n, bins): summed outcome (label, or top-class correct)
    n_bins: int

    @property
    def n_images(self) -> int:
        return int(self.probs.shape[0])

    @property
    def n_positive(self) -> np.ndarray:
        return np.nansum(self.onehot, axis=0)

    @property
    def n_negative(self) -> np.ndarray:
        return np.sum(self.onehot == 0, axis=0)

    @property
    def defined(self) -> np.ndarray:
        """Labels with both classes among their annotated images."""
        return (self.n_positive > 0) & (self.n_negative > 0)

    def thin(self, min_count: int) -> np.ndarray:
        """Defined labels with fewer than ``min_count`` positive or negative annotated images."""
        return self.defined & ((self.n_positive < min_count) | (self.n_negative < min_count))


def _rank(scores: FloatArray, positive: np.ndarray, images: np.ndarray) -> _Ranking | None:
    if scores.size == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    is_pos = positive[order]
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1  # tie group of each sorted item
    pos_per_group = np.add.reduceat(is_pos.astype(np.intp), starts)
    neg_per_group = np.diff(np.r_[starts, ordered.size]) - pos_per_group
    pos_upto, neg_upto = np.r_[0, np.cumsum(pos_per_group)], np.r_[0, np.cumsum(neg_per_group)]
    pos_group, neg_group = group[is_pos], group[~is_pos]
    return _Ranking(
        images=images[order],
        positive=is_pos,
        starts=starts,
        thresholds=ordered[starts],
        positives=images[order][is_pos],
        negatives=images[order][~is_pos],
        pos_through_pos=pos_upto[pos_group + 1],
        neg_through_pos=neg_upto[pos_group + 1],
        pos_above_neg=pos_upto[neg_group],
        pos_through_neg=pos_upto[neg_group + 1],
        pos_upto=pos_upto,
        neg_upto=neg_upto,
    )


def _prepare(probs: ArrayLike, labels: ArrayLike, multilabel: bool, n_bins: int = ECE_BINS) -> _Prepared:
    p = as_array(probs)
    y = as_array(labels)
    p = p[:, None] if p.ndim == 1 else p
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected probabilities of shape (images, labels), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities hold NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must lie in [0, 1] (pass sigmoid or softmax outputs, not logits)")
    n, n_labels = p.shape
    classes = None
    if multilabel:
        onehot = y[:, None] if y.ndim == 1 else y
        if onehot.shape != p.shape:
            raise ValueError(f"labels of shape {y.shape} do not match probabilities of shape {p.shape}")
    else:
        if n_labels < 2:
            raise ValueError("a single-label (softmax) task needs probabilities for at least 2 classes")
        if y.shape == p.shape:  # one-hot rows; a row with any NaN is not annotated
            annotated = ~np.isnan(y).any(axis=1)
            rows = y[annotated]
            if not (np.all((rows == 0) | (rows == 1)) and np.all(rows.sum(axis=1) == 1)):
                raise ValueError("single-label one-hot rows must hold exactly one 1")
            y = np.where(annotated, np.argmax(np.nan_to_num(y), axis=1), np.nan)
        if y.shape != (n,):
            raise ValueError(f"single-label labels must be (images,) class indices or one-hot {p.shape}")
        known = y[~np.isnan(y)]
        if not np.all((known == np.round(known)) & (known >= 0) & (known < n_labels)):
            raise ValueError(f"class indices must be integers in [0, {n_labels})")
        classes = y
        onehot = np.full(p.shape, np.nan)
        onehot[~np.isnan(y)] = np.eye(n_labels)[known.astype(int)]
    known = onehot[~np.isnan(onehot)]
    if not np.all((known == 0) | (known == 1)):
        raise ValueError("labels must be 1, 0 or NaN (not annotated)")

    rankings = []
    for k in range(n_labels):
        valid = np.flatnonzero(~np.isnan(onehot[:, k]))
        rankings.append(_rank(p[valid, k], onehot[valid, k] == 1, valid))
    image_of, label_of = np.nonzero(~np.isnan(onehot))
    pooled = _rank(p[image_of, label_of], onehot[image_of, label_of] == 1, image_of)

    if multilabel:
        confidence, hits = p[image_of, label_of], onehot[image_of, label_of]
    else:
        image_of = np.flatnonzero(~np.isnan(classes))
        confidence = p[image_of].max(axis=1)
        hits = (p[image_of].argmax(axis=1) == classes[image_of]).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    cell = image_of * n_bins + bins

    def per_image(values: FloatArray) -> FloatArray:
        return np.bincount(cell, weights=values, minlength=n * n_bins).reshape(n, n_bins)

    return _Prepared(
        probs=p,
        onehot=onehot,
        classes=classes,
        rankings=rankings,
        pooled=pooled,
        bin_counts=per_image(np.ones_like(confidence)),
        bin_confidence=per_image(confidence),
        bin_hits=per_image(hits),
        n_bins=n_bins,
    )


def _cumulative(ranking: _Ranking, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true / false positives when predicting positive down to each group, with a leading 0."""
    w = weights[:, ranking.images]
    w_pos = w * ranking.positive
    if ranking.starts.size < ranking.images.size:  # tied scores: sum each tie group
        w = np.add.reduceat(w, ranking.starts, axis=1)
        w_pos = np.add.reduceat(w_pos, ranking.starts, axis=1)
    tp = np.zeros((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    fp = np.zeros_like(tp)
    np.cumsum(w_pos, axis=1, out=tp[:, 1:])
    np.cumsum(w - w_pos, axis=1, out=fp[:, 1:])
    return tp, fp


# Weight entries (resamples x ranked items) processed at once by :func:`_label_metrics`: a few arrays of
# this many 8-byte integers stay small for any test set, and the pooled (micro) ranking of every
# (image, label) pair is cut into blocks of resamples like the per-label ones.
_RANKING_ENTRIES = 200_000


def _label_metrics(ranking: _Ranking | None, weights: np.ndarray, threshold: float) -> dict:
    """AUROC, AUPRC and, at ``threshold`` (NaN: none), sensitivity, specificity and F1 of one label; NaN
    on rows with one class only.

    Bootstrap weights are integer counts, so every count below is an exact integer (int64, whose
    cumulative sums numpy vectorises, unlike float64's): the ROC area is exact, and each metric is the
    same division of the same counts as on float weights.
    """
    rows = weights.shape[0]
    names = ("auroc", "auprc", "sensitivity", "specificity", "f1")
    if ranking is None:
        return dict.fromkeys(names, np.full(rows, np.nan))
    step = max(1, _RANKING_ENTRIES // ranking.images.size)
    blocks = (weights[start : start + step] for start in range(0, rows, step))
    parts = [_block_metrics(ranking, block, threshold) for block in blocks]
    return {k: np.concatenate([part[k] for part in parts]) for k in names}


def _block_metrics(ranking: _Ranking, weights: np.ndarray, threshold: float) -> dict:
    """:func:`_label_metrics` on one block of weight rows, from cumulative sums of positives and negatives
    apart (each item is summed once, and each metric reads them only where it needs them)."""
    rows = len(weights)
    # cumulative weight of the positives (negatives) down the ranking, with a leading 0
    tp = np.zeros((rows, ranking.positives.size + 1), dtype=weights.dtype)
    fp = np.zeros((rows, ranking.negatives.size + 1), dtype=weights.dtype)
    w_pos, w_neg = weights[:, ranking.positives], weights[:, ranking.negatives]
    np.cumsum(w_pos, axis=1, out=tp[:, 1:])
    np.cumsum(w_neg, axis=1, out=fp[:, 1:])
    pos, neg = tp[:, -1], fp[:, -1]
    # ROC area (trapezoids): each negative times the positives above it, those tied with it counted half
    above = tp[:, ranking.pos_above_neg]
    tied = not np.array_equal(ranking.pos_above_neg, ranking.pos_through_neg)
    through = tp[:, ranking.pos_through_neg] if tied else above
    twice_area = np.einsum("ij,ij->i", w_neg, above) + np.einsum("ij,ij->i", w_neg, through)
    # precision where each positive's tie group ends, weighted by that positive
    tp_end = tp[:, ranking.pos_through_pos]
    called = tp_end + fp[:, ranking.neg_through_pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp_end / np.maximum(called, 1)  # nothing called positive yet: tp = 0, precision 0
        auprc = np.sum(w_pos * precision, axis=1) / pos
        metrics = {"auroc": (twice_area / 2) / (pos * neg), "auprc": auprc}
        if np.isnan(threshold):
            metrics |= dict.fromkeys(("sensitivity", "specificity", "f1"), np.full(rows, np.nan))
        else:
            cut = np.searchsorted(-ranking.thresholds, -threshold, side="right")  # groups >= threshold
            tp_cut, fp_cut = tp[:, ranking.pos_upto[cut]], fp[:, ranking.neg_upto[cut]]
            metrics |= {
                "sensitivity": tp_cut / pos,
                "specificity": 1 - fp_cut / neg,
                "f1": 2 * tp_cut / (pos + tp_cut + fp_cut),
            }
    undefined = (pos == 0) | (neg == 0)
    return {k: np.where(undefined, np.nan, v) for k, v in metrics.items()}


def _chosen_threshold(ranking: _Ranking | None, rule: ThresholdRule, value: float | None) -> float:
    """One label's threshold by ``rule`` on the images of ``ranking`` (NaN when they hold one class)."""
    if ranking is None or ranking.positive.all() or not ranking.positive.any():
        return float("nan")
    tp, fp = _cumulative(ranking, np.ones((1, int(ranking.images.max()) + 1)))
    tpr, fpr = tp[0, 1:] / tp[0, -1], fp[0, 1:] / fp[0, -1]
    # the first (highest) score reaching the target; equal rates may differ in their last bit
    youden = tpr - fpr
    reached = youden >= youden.max() - 1e-12 if rule == "youden" else tpr >= value - 1e-12
    cut = int(np.argmax(reached))
    return float(ranking.thresholds[cut])


def choose_thresholds(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    rule: ThresholdRule,
    value: float | None = None,
    multilabel: bool = True,
) -> FloatArray:
    """Per-label thresholds chosen on these images (the validation split), to be applied to others.

    ``youden``: the score maximising sensitivity + specificity - 1 (the highest such score on ties);
    ``sensitivity``: the highest score whose sensitivity reaches ``value``; ``fixed``: ``value`` for every
    label. Each threshold is one of the scores, so ``prob >= threshold`` reproduces the choice. A label
    with one class among its annotated images gets NaN (no threshold can be chosen from it).
    """
    prep = _prepare(probs, labels, multilabel)
    if rule == "fixed":
        if value is None:
            raise ValueError("the fixed rule needs a threshold value")
        return np.full(prep.probs.shape[1], float(value))
    if rule == "sensitivity" and (value is None or not 0 < value <= 1):
        raise ValueError(f"a target sensitivity must lie in (0, 1], got {value}")
    if rule not in ("youden", "sensitivity"):
        raise ValueError(f"unknown threshold rule {rule!r}; choose youden, sensitivity or fixed")
    return np.array([_chosen_threshold(r, rule, value) for r in prep.rankings])


def _calibration_error(prep: _Prepared, weights: FloatArray) -> FloatArray:
    """ECE = sum over bins of |observed - mean confidence| weighted by the bin's share of items."""
    counts = weights @ prep.bin_counts
    gap = np.abs(weights @ prep.bin_hits - weights @ prep.bin_confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        return gap.sum(axis=1) / counts.sum(axis=1)


def _argmax_metrics(prep: _Prepared, weights: FloatArray) -> dict[str, FloatArray]:
    """Single-label accuracy, per-class F1 and macro F1 of the argmax prediction."""
    assert prep.classes is not None
    valid = np.flatnonzero(~np.isnan(prep.classes))
    truth = prep.classes[valid].astype(int)
    predicted = prep.probs[valid].argmax(axis=1)
    w = weights[:, valid]
    n_classes = prep.probs.shape[1]
    true_1h, pred_1h = np.eye(n_classes)[truth], np.eye(n_classes)[predicted]
    tp = w @ (true_1h * pred_1h)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (w @ true_1h + w @ pred_1h)  # 0/0 (class neither true nor predicted): NaN
        accuracy = (w @ (truth == predicted)) / w.sum(axis=1)
    return {"accuracy": accuracy, "f1": f1, "f1_macro": _nanmean(f1)}


def _nanmean(values: FloatArray) -> FloatArray:
    """Row means over the defined (non-NaN) columns; NaN where none is defined."""
    count = np.sum(~np.isnan(values), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.nansum(values, axis=1) / count, np.nan)


def _macro(values: FloatArray, included: np.ndarray) -> FloatArray:
    """Row means over the ``included`` labels that are defined on that row."""
    return _nanmean(np.where(included[None, :], values, np.nan))


def _thresholds(threshold: float | ArrayLike, n_labels: int) -> FloatArray:
    """One threshold per label from a scalar or a per-label sequence (NaN or None: no threshold)."""
    values = np.array(threshold, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n_labels, values[0])
    if values.size != n_labels:
        raise ValueError(f"{values.size} thresholds for {n_labels} labels")
    return values


def _statistics(
    prep: _Prepared, weights: FloatArray, thresholds: FloatArray, macro: np.ndarray, multilabel: bool
) -> dict:
    """Every metric for each weight row: per-label arrays (rows, labels) and flat ones (rows,); macro
    averages over the labels ``macro`` includes."""
    per_label = [_label_metrics(r, weights, t) for r, t in zip(prep.rankings, thresholds, strict=True)]
    stats = {k: np.stack([m[k] for m in per_label], axis=1) for k in per_label[0]}
    pooled = _label_metrics(prep.pooled, weights, float("nan"))
    flat = {
        "auroc_macro": _macro(stats["auroc"], macro),
        "auroc_micro": pooled["auroc"],
        "auprc_macro": _macro(stats["auprc"], macro),
        "auprc_micro": pooled["auprc"],
        "sensitivity_at_threshold_macro": _macro(stats["sensitivity"], macro),
        "specificity_at_threshold_macro": _macro(stats["specificity"], macro),
        "ece": _calibration_error(prep, weights),
    }
    if multilabel:
        flat["f1_at_threshold_macro"] = _macro(stats["f1"], macro)
    else:
        argmax = _argmax_metrics(prep, weights)
        stats["f1"] = argmax["f1"]
        flat["accuracy"], flat["f1_macro"] = argmax["accuracy"], _macro(argmax["f1"], macro)
    return {"per_label": stats, "flat": flat}


def _point(
    prep: _Prepared,
    multilabel: bool,
    threshold: float | ArrayLike = DEFAULT_THRESHOLD,
    macro: np.ndarray | None = None,
) -> dict:
    """The metrics on the images as they are (weights of one); macro over every label by default (those
    undefined here are NaN, so left out)."""
    cuts = _thresholds(threshold, prep.probs.shape[1])
    included = np.ones(cuts.size, dtype=bool) if macro is None else macro
    return _statistics(prep, np.ones((1, prep.n_images)), cuts, included, multilabel)


# --- plain metrics ---------------------------------------------------------------------------------


def _ranking_metric(
    name: str, probs: ArrayLike, labels: ArrayLike, average: Average, multilabel: bool
) -> FloatArray | float:
    point = _point(_prepare(probs, labels, multilabel), multilabel)
    if average == "none":
        return point["per_label"][name][0]
    return float(point["flat"][f"{name}_{average}"][0])


def auroc(
    probs: ArrayLike, labels: ArrayLike, *, average: Average = "none", multilabel: bool = True
) -> FloatArray | float:
    """Area under the ROC curve: per label (NaN where undefined), macro over defined labels, or micro."""
    return _ranking_metric("auroc", probs, labels, average, multilabel)


def auprc(
    probs: ArrayLike, labels: ArrayLike, *, average: Average = "none", multilabel: bool = True
) -> FloatArray | float:
    """Average precision: per label (NaN where undefined), macro over defined labels, or micro."""
    return _ranking_metric("auprc", probs, labels, average, multilabel)


def threshold_metrics(
    probs: ArrayLike, labels: ArrayLike, *, threshold: float | ArrayLike, multilabel: bool = True
) -> dict[str, FloatArray]:
    """Per-label sensitivity, specificity and F1 at ``threshold`` (one, or one per label).

    Single-label tasks get no thresholded F1 here: their F1 is the argmax one (:func:`macro_f1`).
    """
    point = _point(_prepare(probs, labels, multilabel), multilabel, threshold)["per_label"]
    names = ("sensitivity", "specificity") + (("f1",) if multilabel else ())
    return {k: point[k][0] for k in names}


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Single-label accuracy of the argmax class over annotated images."""
    return float(_point(_prepare(probs, labels, False), False)["flat"]["accuracy"][0])


def macro_f1(probs: ArrayLike, labels: ArrayLike) -> float:
    """Single-label macro F1 of the argmax class, over classes that are true or predicted at least once."""
    return float(_point(_prepare(probs, labels, False), False)["flat"]["f1_macro"][0])


def confusion_matrix(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Single-label counts, rows = true class, columns = argmax class; unannotated images left out."""
    prep = _prepare(probs, labels, False)
    assert prep.classes is not None
    valid = ~np.isnan(prep.classes)
    n_classes = prep.probs.shape[1]
    cells = prep.classes[valid].astype(int) * n_classes + prep.probs[valid].argmax(axis=1)
    return np.bincount(cells, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, *, multilabel: bool = True, n_bins: int = ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-width bins [i/n, (i+1)/n), the last one closed at 1."""
    prep = _prepare(probs, labels, multilabel, n_bins)
    return float(_calibration_error(prep, np.ones((1, prep.n_images)))[0])


def reliability_diagram(
    probs: ArrayLike, labels: ArrayLike, *, multilabel: bool = True, n_bins: int = ECE_BINS
) -> dict:
    """Per-bin edges, mean confidence, observed frequency (NaN for empty bins), item count, and the ECE."""
    prep = _prepare(probs, labels, multilabel, n_bins)
    counts = prep.bin_counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = prep.bin_confidence.sum(axis=0) / counts
        observed = prep.bin_hits.sum(axis=0) / counts
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": confidence,
        "observed": observed,
        "count": counts,
        "ece": float(_calibration_error(prep, np.ones((1, prep.n_images)))[0]),
    }


# --- report sections -------------------------------------------------------------------------------


def classification_section(
    probs: ArrayLike,
    labels: ArrayLike,
    label_names: Sequence[str],
    patient_ids: Sequence | ArrayLike,
    *,
    thresholds: float | ArrayLike = DEFAULT_THRESHOLD,
    multilabel: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
    macro_includes_thin: bool = False,
) -> dict:
    """The metrics.json "classification" section: flat named numbers plus ``per_label`` dicts.

    Every metric comes with ``_ci_low`` / ``_ci_high`` (95% BCa interval over ``n_boot`` patient
    resamples). Undefined values are None. ``*_at_threshold`` metrics use each label's ``threshold``
    (``thresholds``: one for all labels or one per label, NaN for none), the same on every resample.
    Thin labels (see the module) are listed and flagged; macro averages cover ``macro_labels``.
    """
    prep = _prepare(probs, labels, multilabel)
    names = list(label_names)
    if len(names) != prep.probs.shape[1]:
        raise ValueError(f"{len(names)} label names for {prep.probs.shape[1]} labels")
    cuts = _thresholds(thresholds, len(names))
    groups = patient_groups(patient_ids, prep.n_images)
    defined, thin = prep.defined, prep.thin(min_count)
    macro = defined if macro_includes_thin else defined & ~thin
    point = _statistics(prep, np.ones((1, prep.n_images)), cuts, macro, multilabel)
    boots = None
    if n_boot > 0:
        boots = resample(
            lambda w: _flatten(_statistics(prep, w, cuts, macro, multilabel)), groups, n_boot, seed
        )
    section: dict = {
        "n_images": prep.n_images,
        "n_patients": int(groups.max()) + 1,
        "n_labels": len(names),
        "n_labels_defined": int(defined.sum()),
        "undefined_labels": [n for n, d in zip(names, defined, strict=True) if not d],
        "min_class_count": int(min_count),
        "thin_labels": [n for n, t in zip(names, thin, strict=True) if t],
        "macro_includes_thin": bool(macro_includes_thin),
        "macro_labels": [n for n, m in zip(names, macro, strict=True) if m],
        "ece_bins": prep.n_bins,
        "n_boot": n_boot,
        "ci_level": CI_LEVEL,
        "ci_method": CI_METHOD,
        "seed": seed,
    }
    for name, values in point["flat"].items():
        section.update(with_ci(name, float(values[0]), None if boots is None else boots[name]))
    metric_names = {"auroc": "auroc", "auprc": "auprc"}
    metric_names |= {k: f"{k}_at_threshold" for k in ("sensitivity", "specificity")}
    metric_names["f1"] = "f1_at_threshold" if multilabel else "f1"
    section["per_label"] = {}
    for k, label in enumerate(names):
        entry: dict = {
            "defined": bool(defined[k]),
            "thin": bool(thin[k]),
            "n_positive": int(prep.n_positive[k]),
            "n_negative": int(prep.n_negative[k]),
            "threshold": json_float(cuts[k]),
        }
        for stat, key in metric_names.items():
            samples = None if boots is None else boots[stat][k]
            entry.update(with_ci(key, float(point["per_label"][stat][0, k]), samples))
        section["per_label"][label] = entry
    return section


def _flatten(stats: dict) -> dict[str, FloatArray]:
    return stats["per_label"] | stats["flat"]


def paired_bootstrap_test(
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    labels: ArrayLike,
    patient_ids: Sequence | ArrayLike,
    *,
    metric: str = "auroc_macro",
    multilabel: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    thresholds: float | ArrayLike = DEFAULT_THRESHOLD,
    thresholds_b: float | ArrayLike | None = None,
    min_count: int = MIN_CLASS_COUNT,
    macro_includes_thin: bool = False,
) -> dict:
    """Difference metric(A) - metric(B) on the same test set, by the paired patient-bootstrap test of
    :func:`radsight.metrics.bootstrap.paired_test` (its NaN convention: a resample where a label holds one
    class only leaves that label out of the macro average; one where the difference is still undefined is
    left out of the interval and the p-value). ``metric`` is any flat key of :func:`classification_section`;
    thresholds are as there (each model's own: ``thresholds`` for A, ``thresholds_b`` for B, default the
    same), and so are the macro's labels (thin ones left out unless asked), the same for both.
    """
    prep_a = _prepare(probs_a, labels, multilabel)
    prep_b = _prepare(probs_b, labels, multilabel)
    if prep_a.probs.shape != prep_b.probs.shape:
        raise ValueError(f"models disagree on shape: {prep_a.probs.shape} vs {prep_b.probs.shape}")
    cuts = _thresholds(thresholds, prep_a.probs.shape[1])
    cuts_b = cuts if thresholds_b is None else _thresholds(thresholds_b, prep_b.probs.shape[1])
    macro = prep_a.defined if macro_includes_thin else prep_a.defined & ~prep_a.thin(min_count)
    choices = _point(prep_a, multilabel, cuts, macro)["flat"]
    if metric not in choices:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(choices)}")

    def difference(weights: FloatArray) -> dict[str, FloatArray]:
        a = _statistics(prep_a, weights, cuts, macro, multilabel)["flat"][metric]
        b = _statistics(prep_b, weights, cuts_b, macro, multilabel)["flat"][metric]
        return {"a": a, "b": b, "difference": a - b}

    return paired_test(difference, patient_ids, prep_a.n_images, metric=metric, n_boot=n_boot, seed=seed)


def _runs_mean(
    runs: Sequence[ArrayLike],
    labels: ArrayLike,
    *,
    metric: str,
    multilabel: bool,
    macro: np.ndarray | None,
    min_count: int,
    macro_includes_thin: bool,
) -> tuple[Callable[[FloatArray], FloatArray], np.ndarray]:
    """A weight-matrix statistic: the mean over ``runs`` (several trainings scored on the same images) of
    ``metric``; and the labels its macro averages over (``macro``, else the first run's as the
    classification section chooses them)."""
    preps = [_prepare(probs, labels, multilabel) for probs in runs]
    if macro is None:
        first = preps[0]
        macro = first.defined if macro_includes_thin else first.defined & ~first.thin(min_count)
    cuts = _thresholds(DEFAULT_THRESHOLD, preps[0].probs.shape[1])
    if metric not in _point(preps[0], multilabel, cuts, macro)["flat"]:
        raise ValueError(f"unknown metric {metric!r}")

    def mean(weights: FloatArray) -> FloatArray:
        values = [_statistics(prep, weights, cuts, macro, multilabel)["flat"][metric] for prep in preps]
        return np.mean(values, axis=0)

    return mean, macro


def runs_mean_with_ci(
    runs: Sequence[ArrayLike],
    labels: ArrayLike,
    patient_ids: Sequence | ArrayLike,
    *,
    metric: str = "auroc_macro",
    multilabel: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
    macro_includes_thin: bool = False,
) -> dict:
    """The mean ``metric`` of several runs on the same images (e.g. training seeds) as ``value`` with its
    patient-bootstrap interval: each resample scores every run on the same drawn patients."""
    mean, _ = _runs_mean(
        runs,
        labels,
        metric=metric,
        multilabel=multilabel,
        macro=None,
        min_count=min_count,
        macro_includes_thin=macro_includes_thin,
    )
    groups = patient_groups(patient_ids, len(np.asarray(labels)))
    replicates = resample(lambda w: {"value": mean(w)}, groups, n_boot, seed)["value"]
    return with_ci("value", float(mean(np.ones((1, len(groups))))[0]), replicates)


def runs_mean_test(
    runs_a: Sequence[ArrayLike],
    runs_b: Sequence[ArrayLike],
    labels: ArrayLike,
    patient_ids: Sequence | ArrayLike,
    *,
    metric: str = "auroc_macro",
    multilabel: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    min_count: int = MIN_CLASS_COUNT,
    macro_includes_thin: bool = False,
) -> dict:
    """Paired patient-bootstrap test of mean metric(runs of A) - mean metric(runs of B) on the same
    images (:func:`radsight.metrics.bootstrap.paired_test`), the macro over the same labels for both."""
    options = {"metric": metric, "multilabel": multilabel, "min_count": min_count}
    mean_a, macro = _runs_mean(runs_a, labels, macro=None, macro_includes_thin=macro_includes_thin, **options)
    mean_b, _ = _runs_mean(runs_b, labels, macro=macro, macro_includes_thin=macro_includes_thin, **options)

    def difference(weights: FloatArray) -> dict[str, FloatArray]:
        a, b = mean_a(weights), mean_b(weights)
        return {"a": a, "b": b, "difference": a - b}

    n_images = len(np.asarray(labels))
    return paired_test(difference, patient_ids, n_images, metric=metric, n_boot=n_boot, seed=seed)


def classification_curves(
    probs: ArrayLike,
    labels: ArrayLike,
    label_names: Sequence[str],
    patient_ids: Sequence | ArrayLike,
    *,
    multilabel: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    n_grid: int = 101,
) -> dict:
    """What the plots need (not part of the JSON section): ROC and PR points, ROC bands, reliability.

    ``roc[name]`` holds the exact curve (``fpr``, ``tpr``, ``thresholds``), and a 95% band of the
    resampled step ROC on ``fpr_grid``; ``defined`` is False (with no points) for a one-class label.
    Single-label tasks also get the confusion matrix.
    """
    prep = _prepare(probs, labels, multilabel)
    names = list(label_names)
    if len(names) != prep.probs.shape[1]:
        raise ValueError(f"{len(names)} label names for {prep.probs.shape[1]} labels")
    grid = np.linspace(0.0, 1.0, n_grid)
    ones = np.ones((1, prep.n_images))
    drawn = [k for k, r in enumerate(prep.rankings) if prep.defined[k] and r is not None]

    def bands(weights: FloatArray) -> dict[str, FloatArray]:
        out = {}
        for k in drawn:
            tp, fp = _cumulative(prep.rankings[k], weights)
            out[f"roc{k}"], out[f"pr{k}"] = _step_roc(tp, fp, grid), _step_pr(tp, fp, grid)
        return out

    boots = bootstrap(bands, patient_groups(patient_ids, prep.n_images), n_boot, seed) if n_boot > 0 else {}
    roc: dict = {name: {"defined": False} for name in names}
    pr: dict = {name: {"defined": False} for name in names}
    for k in drawn:
        ranking, name = prep.rankings[k], names[k]
        tp, fp = _cumulative(ranking, ones)
        tpr, fpr = tp[0] / tp[0, -1], fp[0] / fp[0, -1]
        nan_band = (np.full_like(grid, np.nan),) * 2
        low, high = percentile_ci(boots[f"roc{k}"]) if boots else nan_band
        pr_low, pr_high = percentile_ci(boots[f"pr{k}"]) if boots else nan_band
        point = _label_metrics(ranking, ones, float("nan"))
        roc[name] = {
            "defined": True,
            "fpr": fpr,
            "tpr": tpr,
            "thresholds": np.r_[np.inf, ranking.thresholds],
            "auroc": float(point["auroc"][0]),
            "fpr_grid": grid,
            "tpr_ci_low": low,
            "tpr_ci_high": high,
        }
        pr[name] = {
            "defined": True,
            "recall": tpr,
            "precision": np.r_[1.0, tp[0, 1:] / (tp[0, 1:] + fp[0, 1:])],
            "auprc": float(point["auprc"][0]),
            "prevalence": float(tp[0, -1] / (tp[0, -1] + fp[0, -1])),
            "recall_grid": grid,
            "precision_ci_low": pr_low,
            "precision_ci_high": pr_high,
        }
    curves = {
        "roc": roc,
        "pr": pr,
        "reliability": reliability_diagram(probs, labels, multilabel=multilabel),
    }
    if not multilabel:
        curves["confusion_matrix"] = confusion_matrix(probs, labels)
    return curves


def _step_roc(tp: FloatArray, fp: FloatArray, grid: FloatArray) -> FloatArray:
    """TPR of each resample's step ROC at each grid FPR (best TPR at FPR <= grid); NaN rows if undefined."""
    pos, neg = tp[:, -1:], fp[:, -1:]
    out = np.full((tp.shape[0], grid.size), np.nan)
    rows = np.flatnonzero((pos[:, 0] > 0) & (neg[:, 0] > 0))
    if rows.size:
        tpr, fpr = tp[rows] / pos[rows], fp[rows] / neg[rows]
        offset = 2.0 * np.arange(rows.size)[:, None]  # rows of FPR in [0, 1] made disjoint for one search
        index = np.searchsorted((fpr + offset).ravel(), (grid + offset).ravel(), side="right") - 1
        out[rows] = tpr.ravel()[index].reshape(rows.size, grid.size)
    return out


def _step_pr(tp: FloatArray, fp: FloatArray, grid: FloatArray) -> FloatArray:
    """Interpolated precision of each resample at each grid recall (best precision at recall >= grid)."""
    pos = tp[:, -1:]
    out = np.full((tp.shape[0], grid.size), np.nan)
    rows = np.flatnonzero(pos[:, 0] > 0)
    if rows.size:
        recall = tp[rows] / pos[rows]
        called = tp[rows] + fp[rows]
        precision = np.divide(tp[rows], called, out=np.ones(called.shape), where=called > 0)
        best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        offset = 2.0 * np.arange(rows.size)[:, None]  # rows of recall in [0, 1] made disjoint for one search
        index = np.searchsorted((recall + offset).ravel(), (grid + offset).ravel(), side="left")
        out[rows] = best_after.ravel()[index].reshape(rows.size, grid.size)
    return out


def auroc_with_ci(
    name: str,
    scores: ArrayLike,
    labels: ArrayLike,
    patient_ids: Sequence | ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """AUROC of any per-image score (a probability, an image width, a category's positive rate) for one
    label (1 / 0, NaN left out), with its patient-bootstrap BCa interval: ``{name, name_ci_low,
    name_ci_high}``. Undefined (None) with one class only."""
    score, label = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    keep = ~np.isnan(label) & ~np.isnan(score)
    ids = np.asarray(patient_ids)[keep]
    ranking = _rank(score[keep], label[keep] == 1, np.arange(int(keep.sum())))
    if ranking is None:
        return with_ci(name, float("nan"), None)

    def statistic(weights: FloatArray) -> dict[str, FloatArray]:
        return {"auroc": _label_metrics(ranking, weights, float("nan"))["auroc"]}

    value = float(statistic(np.ones((1, ids.size)))["auroc"][0])
    replicates = None
    if n_boot > 0 and np.isfinite(value):
        replicates = resample(statistic, patient_groups(ids, ids.size), n_boot, seed)["auroc"]
    return with_ci(name, value, replicates)
