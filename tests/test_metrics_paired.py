"""The one paired bootstrap test and its NaN convention, checked against naive resampling loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from radsight.metrics.bootstrap import (
    Replicates,
    bca_interval,
    paired_mean_test,
    paired_test,
    patient_groups,
    weight_blocks,
)
from radsight.metrics.classification import paired_bootstrap_test


def naive_test(
    differences: list[float], left_out: list[float], observed: float
) -> tuple[float, float, float]:
    """Interval and p-value from differences computed by hand on each resample and on each set leaving
    one patient out (the BCa formula itself is checked against scipy elsewhere): undefined resamples are
    left out of both."""
    kept = np.array([d for d in differences if not np.isnan(d)])
    p_value = (1 + np.sum(np.abs(kept - observed) >= abs(observed))) / (1 + kept.size)
    low, high = bca_interval(observed, Replicates(np.array(differences), np.array(left_out)))
    return float(low), float(high), p_value


def test_resamples_with_an_undefined_difference_are_left_out_of_interval_and_p_value():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=12)
    patients = np.arange(12)

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore"):
            a = weights @ x / total * (weights[:, 0] / weights[:, 0])  # undefined without patient 0
        b = weights @ y / total
        return {"a": a, "b": b, "difference": a - b}

    result = paired_test(statistic, patients, 12, metric="toy", n_boot=300, seed=4)
    observed = x.mean() - y.mean()
    (weights,) = weight_blocks(patient_groups(patients, 12), 300, seed=4)
    differences = []
    for row in weights.astype(int):
        index = np.repeat(np.arange(12), row)
        differences.append(x[index].mean() - y[index].mean() if row[0] else np.nan)
    assert 0 < np.isnan(differences).sum() < 300  # some resamples miss patient 0
    # leaving patient 0 out makes the difference undefined too: that set is left out of the acceleration
    left_out = [np.nan] + [np.delete(x, i).mean() - np.delete(y, i).mean() for i in range(1, 12)]
    low, high, p_value = naive_test(differences, left_out, observed)
    assert result["difference"] == pytest.approx(observed)
    assert result["difference_ci_low"] == pytest.approx(low)
    assert result["difference_ci_high"] == pytest.approx(high)
    assert result["p_value"] == pytest.approx(p_value)


def test_an_undefined_observed_difference_leaves_everything_undefined():
    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        a, b = np.full(len(weights), np.nan), weights.sum(axis=1)
        return {"a": a, "b": b, "difference": a - b}

    result = paired_test(statistic, np.arange(5), 5, metric="toy", n_boot=20)
    assert result["model_a"] is None and result["model_b"] == 5.0
    assert result["difference"] is None and result["difference_ci_low"] is None
    assert result["p_value"] is None


def test_classification_test_follows_the_same_convention():
    # one positive among 15 patients: resamples without it have no defined AUROC, and are left out
    rng = np.random.default_rng(0)
    labels = np.zeros((15, 1))
    labels[4] = 1
    probs_a, probs_b = rng.random((15, 1)), rng.random((15, 1))
    patients = np.arange(15)
    # a thin label (one positive) enters the macro only when asked
    unasked = paired_bootstrap_test(probs_a, probs_b, labels, patients, n_boot=20, seed=1)
    assert unasked["difference"] is None
    result = paired_bootstrap_test(
        probs_a, probs_b, labels, patients, n_boot=200, seed=1, macro_includes_thin=True
    )
    (weights,) = weight_blocks(patient_groups(patients, 15), 200, seed=1)

    def difference(index: np.ndarray) -> float:
        y = labels[index, 0]
        if not 0 < y.sum() < y.size:
            return np.nan
        return skm.roc_auc_score(y, probs_a[index, 0]) - skm.roc_auc_score(y, probs_b[index, 0])

    differences = [difference(np.repeat(np.arange(15), row)) for row in weights.astype(int)]
    left_out = [difference(np.delete(np.arange(15), i)) for i in range(15)]
    observed = difference(np.arange(15))
    low, high, _ = naive_test(differences, left_out, observed)
    assert result["difference"] == pytest.approx(observed)
    assert (result["difference_ci_low"], result["difference_ci_high"]) == pytest.approx((low, high))
    # resampled AUROC differences tie with the observed one (|d - observed| = |observed|, up to rounding):
    # "at least as far" counts the ties; the denominator is the defined resamples only
    kept = np.array([d for d in differences if not np.isnan(d)])
    assert 0 < kept.size < 200
    distance = np.abs(kept - observed) - abs(observed)
    count = result["p_value"] * (1 + kept.size) - 1
    assert count == pytest.approx(round(count))
    assert round(count) == np.sum(distance >= -1e-9) > np.sum(distance > 1e-9)


def test_mean_test_leaves_images_without_both_values_out_and_tests_like_the_others():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(size=30)
    patients = np.repeat(np.arange(15), 2)
    a[3], b[10] = np.nan, np.nan
    result = paired_mean_test(a, b, patients, metric="cc", n_boot=200, seed=2)
    keep = ~np.isnan(a) & ~np.isnan(b)
    ka, kb, kp = a[keep], b[keep], patients[keep]
    (weights,) = weight_blocks(patient_groups(kp, keep.sum()), 200, seed=2)
    differences = [np.average(ka - kb, weights=row) for row in weights]
    left_out = [np.mean((ka - kb)[kp != patient]) for patient in np.unique(kp)]
    low, high, p_value = naive_test(differences, left_out, (ka - kb).mean())
    assert result["n_images"] == 28 and result["metric"] == "cc"
    assert result["model_a"] == pytest.approx(ka.mean()) and result["model_b"] == pytest.approx(kb.mean())
    assert (result["difference_ci_low"], result["difference_ci_high"]) == pytest.approx((low, high))
    assert result["p_value"] == pytest.approx(p_value)


def test_each_model_is_scored_at_its_own_operating_points():
    rng = np.random.default_rng(6)
    labels = (rng.random((40, 2)) < 0.5).astype(float)
    probs = np.clip(0.3 * labels + 0.7 * rng.random((40, 2)), 0, 1)
    metric = "sensitivity_at_threshold_macro"
    result = paired_bootstrap_test(
        probs, probs, labels, np.arange(40), metric=metric, thresholds=[0.3, 0.4], thresholds_b=0.7, n_boot=50
    )
    own = [np.mean(probs[labels[:, k] == 1, k] >= t) for k, t in enumerate([0.3, 0.4])]
    other = [np.mean(probs[labels[:, k] == 1, k] >= 0.7) for k in range(2)]
    assert result["model_a"] == pytest.approx(np.mean(own)) and result["model_b"] == pytest.approx(
        np.mean(other)
    )
    assert result["difference"] > 0  # the same probabilities, a lower threshold: more positives called
