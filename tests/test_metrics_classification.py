"""Classification metrics: hand-computed cases, scikit-learn / torchmetrics references, patient bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from radsight.metrics.bootstrap import (
    Replicates,
    bca_interval,
    jackknife_blocks,
    patient_groups,
    weight_blocks,
)
from radsight.metrics.classification import (
    accuracy,
    auprc,
    auroc,
    choose_thresholds,
    classification_curves,
    classification_section,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    paired_bootstrap_test,
    reliability_diagram,
    threshold_metrics,
)


def multilabel_data(n: int = 120, n_labels: int = 3, seed: int = 0, missing: float = 0.1):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_labels)) < 0.3).astype(float)
    probs = np.clip(0.35 * labels + 0.65 * rng.random((n, n_labels)), 0, 1)
    labels[rng.random((n, n_labels)) < missing] = np.nan
    patients = rng.integers(0, n // 3, n)
    return probs, labels, patients


def single_label_data(n: int = 150, n_classes: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[classes]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, classes


# --- hand-computed cases ---------------------------------------------------------------------------


def test_auroc_and_auprc_hand_computed():
    # Sorted by score: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg): 3 of 4 pos/neg pairs ranked right.
    probs, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert auroc(probs, labels)[0] == pytest.approx(0.75)
    # AP: recall 0.5 at precision 1, then recall 1 at precision 2/3.
    assert auprc(probs, labels)[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_tied_scores_count_half():
    assert auroc([0.5, 0.5, 0.2], [1, 0, 0])[0] == pytest.approx((0.5 + 1) / 2)


def test_threshold_metrics_hand_computed():
    probs = np.array([0.9, 0.6, 0.55, 0.3, 0.2, 0.7])
    labels = np.array([1, 1, 0, 1, 0, 0])
    fixed = threshold_metrics(probs, labels, threshold=0.5)
    # predicted positive: 0.9, 0.6, 0.55, 0.7 -> TP 2, FP 2, FN 1, TN 1
    assert fixed["sensitivity"][0] == pytest.approx(2 / 3)
    assert fixed["specificity"][0] == pytest.approx(1 / 3)
    assert fixed["f1"][0] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_thresholds_chosen_by_hand():
    # scores descending: 0.9 P, 0.7 N, 0.6 P, 0.55 N, 0.3 P, 0.2 N (3 positives, 3 negatives)
    probs = np.array([0.9, 0.6, 0.55, 0.3, 0.2, 0.7])
    labels = np.array([1, 1, 0, 1, 0, 0])
    # cut at score s (positive when >= s): TPR - FPR = 0.9: 1/3-0, 0.7: 1/3-1/3, 0.6: 2/3-1/3,
    # 0.55: 2/3-2/3, 0.3: 1-2/3, 0.2: 1-1. The maximum 1/3 is reached at 0.9, 0.6 and 0.3: the highest wins.
    assert choose_thresholds(probs, labels, rule="youden")[0] == 0.9
    # sensitivity 2/3 first reached at 0.6, 1 at 0.3; a target of 0.5 needs 2 of 3 positives
    assert choose_thresholds(probs, labels, rule="sensitivity", value=0.5)[0] == 0.6
    assert choose_thresholds(probs, labels, rule="sensitivity", value=0.9)[0] == 0.3
    assert choose_thresholds(probs, labels, rule="fixed", value=0.42)[0] == 0.42
    one_class = np.c_[labels, np.zeros(6)]
    chosen = choose_thresholds(np.c_[probs, probs], one_class, rule="youden")
    assert chosen[0] == 0.9 and np.isnan(chosen[1])  # no threshold can be chosen from one class
    with pytest.raises(ValueError, match="target sensitivity"):
        choose_thresholds(probs, labels, rule="sensitivity", value=0.0)


def test_ece_hand_computed():
    # 0.1 falls in bin [0.1, 0.2) with outcome 0, 0.9 in [0.9, 1.0] with outcome 1: gap 0.1 in each.
    assert expected_calibration_error([0.1, 0.9], [0, 1], n_bins=10) == pytest.approx(0.1)
    diagram = reliability_diagram([0.1, 0.9], [0, 1], n_bins=10)
    assert diagram["count"].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert diagram["observed"][9] == 1.0 and np.isnan(diagram["observed"][0])


def test_single_label_hand_computed():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    classes = np.array([0, 1, 1, np.nan])  # the last image is not annotated
    assert accuracy(probs, classes) == pytest.approx(2 / 3)
    assert confusion_matrix(probs, classes).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    # F1 class 0: 2*1/(1+2) = 2/3; class 1: 2*1/(2+1) = 2/3; class 2 neither true nor predicted: left out.
    assert macro_f1(probs, classes) == pytest.approx(2 / 3)


# --- references ------------------------------------------------------------------------------------


def test_per_label_macro_micro_match_sklearn_with_nan_labels():
    probs, labels, _ = multilabel_data()
    per_label_auroc, per_label_ap = auroc(probs, labels), auprc(probs, labels)
    for k in range(labels.shape[1]):
        valid = ~np.isnan(labels[:, k])
        assert per_label_auroc[k] == pytest.approx(skm.roc_auc_score(labels[valid, k], probs[valid, k]))
        assert per_label_ap[k] == pytest.approx(
            skm.average_precision_score(labels[valid, k], probs[valid, k])
        )
    assert auroc(probs, labels, average="macro") == pytest.approx(per_label_auroc.mean())
    valid = ~np.isnan(labels)
    assert auroc(probs, labels, average="micro") == pytest.approx(
        skm.roc_auc_score(labels[valid], probs[valid])
    )
    assert auprc(probs, labels, average="micro") == pytest.approx(
        skm.average_precision_score(labels[valid], probs[valid])
    )


def test_micro_and_macro_match_sklearn_averages_without_nan():
    probs, labels, _ = multilabel_data(missing=0.0)
    for average in ("macro", "micro"):
        assert auroc(probs, labels, average=average) == pytest.approx(
            skm.roc_auc_score(labels, probs, average=average)
        )
        assert auprc(probs, labels, average=average) == pytest.approx(
            skm.average_precision_score(labels, probs, average=average)
        )


def test_youden_and_fixed_threshold_match_sklearn():
    probs, labels, _ = multilabel_data(n=200)
    chosen = choose_thresholds(probs, labels, rule="youden")
    youden = threshold_metrics(probs, labels, threshold=chosen)
    fixed = threshold_metrics(probs, labels, threshold=0.45)
    for k in range(labels.shape[1]):
        valid = ~np.isnan(labels[:, k])
        y, p = labels[valid, k], probs[valid, k]
        fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
        best = np.argmax(tpr - fpr)
        assert chosen[k] == pytest.approx(thresholds[best])
        assert youden["sensitivity"][k] == pytest.approx(tpr[best])
        assert youden["specificity"][k] == pytest.approx(1 - fpr[best])
        assert youden["f1"][k] == pytest.approx(skm.f1_score(y, p >= thresholds[best]))
        predicted = p >= 0.45
        assert fixed["sensitivity"][k] == pytest.approx(skm.recall_score(y, predicted))
        assert fixed["specificity"][k] == pytest.approx(skm.recall_score(1 - y, ~predicted))
        assert fixed["f1"][k] == pytest.approx(skm.f1_score(y, predicted))
        target = choose_thresholds(p, y, rule="sensitivity", value=0.9)[0]
        first = np.flatnonzero(tpr >= 0.9)[0]  # sklearn's thresholds descend: the highest reaching 0.9
        assert target == pytest.approx(thresholds[first])


def test_single_label_metrics_match_sklearn_and_torchmetrics():
    probs, classes = single_label_data()
    assert accuracy(probs, classes) == pytest.approx(skm.accuracy_score(classes, probs.argmax(1)))
    assert macro_f1(probs, classes) == pytest.approx(skm.f1_score(classes, probs.argmax(1), average="macro"))
    np.testing.assert_array_equal(
        confusion_matrix(probs, classes), skm.confusion_matrix(classes, probs.argmax(1))
    )
    assert auroc(probs, classes, average="macro", multilabel=False) == pytest.approx(
        skm.roc_auc_score(classes, probs, multi_class="ovr", average="macro")
    )
    reference = multiclass_calibration_error(
        torch.from_numpy(probs), torch.from_numpy(classes), num_classes=3, n_bins=15
    )
    assert expected_calibration_error(probs, classes, multilabel=False) == pytest.approx(float(reference))
    onehot = np.eye(3)[classes]
    assert accuracy(probs, onehot) == accuracy(probs, classes)


def test_multilabel_ece_matches_torchmetrics_binary():
    probs, labels, _ = multilabel_data(missing=0.0)
    reference = binary_calibration_error(
        torch.from_numpy(probs.ravel()), torch.from_numpy(labels.ravel()), n_bins=15
    )
    assert expected_calibration_error(probs, labels) == pytest.approx(float(reference))


def test_curves_match_sklearn():
    probs, labels, patients = multilabel_data()
    curves = classification_curves(probs, labels, ["a", "b", "c"], patients, n_boot=50)
    valid = ~np.isnan(labels[:, 0])
    y, p = labels[valid, 0], probs[valid, 0]
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(curves["roc"]["a"]["fpr"], fpr)
    np.testing.assert_allclose(curves["roc"]["a"]["tpr"], tpr)
    precision, recall, _ = skm.precision_recall_curve(y, p)
    np.testing.assert_allclose(curves["pr"]["a"]["precision"], precision[::-1])
    np.testing.assert_allclose(curves["pr"]["a"]["recall"], recall[::-1])
    band = curves["roc"]["a"]
    assert np.all(band["tpr_ci_low"] <= band["tpr_ci_high"])
    assert band["tpr_ci_high"][-1] == 1.0


# --- undefined labels ------------------------------------------------------------------------------


def test_one_class_label_is_undefined_and_left_out_of_macro():
    probs, labels, patients = multilabel_data()
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 0.0)  # no positive among annotated images
    section = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=100)
    assert section["per_label"]["b"]["defined"] is False
    assert section["per_label"]["b"]["auroc"] is None and section["per_label"]["b"]["auroc_ci_low"] is None
    assert section["undefined_labels"] == ["b"] and section["n_labels_defined"] == 2
    defined = [section["per_label"][k]["auroc"] for k in ("a", "c")]
    assert section["auroc_macro"] == pytest.approx(np.mean(defined))
    json.dumps(section, allow_nan=False)  # None, never NaN, in the JSON


def test_all_unannotated_label_is_undefined():
    probs, labels, _ = multilabel_data()
    labels[:, 2] = np.nan
    assert np.isnan(auroc(probs, labels)[2])
    assert auroc(probs, labels, average="macro") == pytest.approx(np.mean(auroc(probs, labels)[:2]))


def test_invalid_labels_raise():
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        auroc([0.2, 0.4], [0, 2])
    with pytest.raises(ValueError, match="do not match"):
        auroc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not logits"):
        auroc([-1.2, 3.0], [0, 1])
    with pytest.raises(ValueError, match="class indices"):
        accuracy(np.full((2, 2), 0.5), [0, 3])


# --- section, bootstrap and paired test ------------------------------------------------------------


def test_section_keys_and_threshold_naming():
    probs, labels, patients = multilabel_data()
    section = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=50)
    for key in ("auroc_macro", "auroc_micro", "auprc_macro", "ece", "f1_at_threshold_macro"):
        assert {key, f"{key}_ci_low", f"{key}_ci_high"} <= section.keys()
    assert {"sensitivity_at_threshold_macro", "specificity_at_threshold_macro"} <= section.keys()
    entry = section["per_label"]["a"]
    assert entry["threshold"] == 0.5 and "sensitivity_at_threshold" in entry  # 0.5 unless given
    assert section["ci_method"] == "bca" and section["min_class_count"] == 10
    per_label = classification_section(
        probs, labels, ["a", "b", "c"], patients, n_boot=50, thresholds=[0.2, 0.4, None]
    )
    assert [per_label["per_label"][k]["threshold"] for k in "abc"] == [0.2, 0.4, None]
    assert per_label["per_label"]["c"]["sensitivity_at_threshold"] is None  # no threshold, no sensitivity
    assert per_label["sensitivity_at_threshold_macro"] == pytest.approx(
        np.mean([per_label["per_label"][k]["sensitivity_at_threshold"] for k in "ab"])
    )
    assert section["auroc_macro_ci_low"] <= section["auroc_macro"] <= section["auroc_macro_ci_high"]
    single = classification_section(
        *single_label_data(), ["x", "y", "z"], np.arange(150), multilabel=False, n_boot=50
    )
    assert {"accuracy", "accuracy_ci_low", "f1_macro", "ece"} <= single.keys()
    assert "f1" in single["per_label"]["x"]


# --- operating points chosen elsewhere, thin labels ------------------------------------------------


def test_a_validation_threshold_is_applied_to_the_test_set_and_to_every_resample():
    rng = np.random.default_rng(4)
    val_labels = (rng.random(80) < 0.4).astype(float)
    val_probs = np.clip(0.3 * val_labels + 0.7 * rng.random(80), 0, 1)
    (threshold,) = choose_thresholds(val_probs, val_labels, rule="youden")
    labels = (rng.random(60) < 0.4).astype(float)
    probs = np.clip(0.3 * labels + 0.7 * rng.random(60), 0, 1)
    (own,) = choose_thresholds(probs, labels, rule="youden")
    assert own != threshold  # the test set's own Youden threshold is another one
    section = classification_section(probs, labels, ["a"], np.arange(60), thresholds=threshold, n_boot=300)
    entry = section["per_label"]["a"]
    positive = probs >= threshold
    assert entry["threshold"] == threshold
    assert entry["sensitivity_at_threshold"] == pytest.approx(positive[labels == 1].mean())
    assert entry["specificity_at_threshold"] == pytest.approx(1 - positive[labels == 0].mean())

    def naive(index: np.ndarray, retune: bool) -> float:
        y, p = labels[index], probs[index]
        cut = choose_thresholds(p, y, rule="youden")[0] if retune else threshold
        return np.mean(p[y == 1] >= cut)

    groups = patient_groups(np.arange(60), 60)
    (weights,) = weight_blocks(groups, 300, seed=0)
    resamples = [np.repeat(np.arange(60), row.astype(int)) for row in weights]
    left_out = [np.flatnonzero(row) for row in next(jackknife_blocks(groups))]
    fixed = Replicates(
        np.array([naive(i, False) for i in resamples]), np.array([naive(i, False) for i in left_out])
    )
    low, high = bca_interval(entry["sensitivity_at_threshold"], fixed)
    assert (entry["sensitivity_at_threshold_ci_low"], entry["sensitivity_at_threshold_ci_high"]) == (
        pytest.approx(float(low)),
        pytest.approx(float(high)),
    )
    # re-tuning the threshold on each resample would give another interval: no resample re-tunes
    retuned = Replicates(
        np.array([naive(i, True) for i in resamples]), np.array([naive(i, True) for i in left_out])
    )
    assert not np.allclose(bca_interval(entry["sensitivity_at_threshold"], retuned), [low, high])
    assert low <= entry["sensitivity_at_threshold"] <= high


def test_thin_labels_are_marked_and_left_out_of_the_macro_unless_asked():
    probs, labels, patients = multilabel_data(n=150, missing=0.0)
    labels[:, 2] = 0.0
    labels[[3, 50, 90, 120], 2] = 1.0  # 4 positives: thin at the default count of 10
    names = ["a", "b", "c"]
    section = classification_section(probs, labels, names, patients, n_boot=50)
    assert section["thin_labels"] == ["c"] and section["macro_labels"] == ["a", "b"]
    c = section["per_label"]["c"]
    assert c["thin"] is True and c["n_positive"] == 4 and c["auroc"] is not None  # shown, marked
    assert section["per_label"]["a"]["thin"] is False
    per_label = auroc(probs, labels)
    assert section["auroc_macro"] == pytest.approx(per_label[:2].mean())
    asked = classification_section(probs, labels, names, patients, n_boot=50, macro_includes_thin=True)
    assert asked["macro_labels"] == names and asked["auroc_macro"] == pytest.approx(per_label.mean())
    assert classification_section(probs, labels, names, patients, n_boot=0, min_count=4)["thin_labels"] == []
    negatives = classification_section(1 - probs, 1 - labels, names, patients, n_boot=0)
    assert negatives["thin_labels"] == ["c"]  # 4 negatives are as thin as 4 positives
    test = paired_bootstrap_test(probs, probs, labels, patients, n_boot=20)
    assert test["model_a"] == pytest.approx(per_label[:2].mean())  # the paired test averages the same


# --- section, bootstrap and paired test ------------------------------------------------------------


def test_bca_matches_scipy_on_the_same_resamples():
    rng = np.random.default_rng(11)
    labels = (rng.random((90, 1)) < 0.45).astype(float)
    probs = np.clip(0.25 * labels + 0.75 * rng.random((90, 1)), 0, 1)
    section = classification_section(probs, labels, ["a"], np.arange(90), thresholds=0.5, n_boot=500, seed=3)
    entry = section["per_label"]["a"]
    y, p = labels[:, 0], probs[:, 0]

    def reference(statistic) -> tuple[float, float]:
        # scipy draws rng.integers(0, n, (n_resamples, n)) once: the resamples of weight_blocks, seed 3
        result = stats.bootstrap(
            (p, y),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=500,
            method="BCa",
            rng=np.random.default_rng(3),
        )
        return result.confidence_interval.low, result.confidence_interval.high

    sensitivity = reference(lambda pp, yy: np.mean(pp[yy == 1] >= 0.5))
    assert (entry["sensitivity_at_threshold_ci_low"], entry["sensitivity_at_threshold_ci_high"]) == (
        pytest.approx(sensitivity[0]),
        pytest.approx(sensitivity[1]),
    )
    area = reference(lambda pp, yy: skm.roc_auc_score(yy, pp))
    assert (entry["auroc_ci_low"], entry["auroc_ci_high"]) == (pytest.approx(area[0]), pytest.approx(area[1]))


def test_bca_of_a_skewed_mean_matches_scipy_and_moves_the_percentile_interval():
    x = np.random.default_rng(2).exponential(size=40)
    (weights,) = weight_blocks(patient_groups(np.arange(40), 40), 2000, seed=5)
    jackknife = np.array([np.delete(x, i).mean() for i in range(40)])
    replicates = Replicates(weights @ x / 40, jackknife)
    low, high = bca_interval(x.mean(), replicates)
    result = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(5))
    assert (low, high) == (
        pytest.approx(result.confidence_interval.low),
        pytest.approx(result.confidence_interval.high),
    )
    percentile = np.quantile(replicates.boot, [0.025, 0.975])
    assert low > percentile[0] and high > percentile[1]  # right skew: BCa shifts the interval up


def test_bootstrap_resamples_patients_with_all_their_images():
    patients = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    groups = patient_groups(patients, 6)
    (weights,) = weight_blocks(groups, 50, seed=3)
    assert weights.shape == (50, 6)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 3] == weights[:, 5])
    draws = weights[:, 0] + weights[:, 2] + weights[:, 3]  # one image per patient: patient draw counts
    assert np.all(draws == 3)


def test_bootstrap_ci_matches_a_naive_resampling_loop():
    probs, labels, patients = multilabel_data(n=60, missing=0.0)
    section = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=100, seed=7)
    groups = patient_groups(patients, 60)
    (weights,) = weight_blocks(groups, 100, seed=7)

    def naive(index: np.ndarray) -> float:
        y, p = labels[index, 0], probs[index, 0]
        return skm.roc_auc_score(y, p) if 0 < y.sum() < y.size else np.nan

    boot = [naive(np.repeat(np.arange(60), row.astype(int))) for row in weights]
    jackknife = [naive(np.flatnonzero(groups != patient)) for patient in range(groups.max() + 1)]
    low, high = bca_interval(
        section["per_label"]["a"]["auroc"], Replicates(np.array(boot), np.array(jackknife))
    )
    assert section["per_label"]["a"]["auroc_ci_low"] == pytest.approx(low)
    assert section["per_label"]["a"]["auroc_ci_high"] == pytest.approx(high)


def test_section_is_seeded():
    probs, labels, patients = multilabel_data()
    first = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=100, seed=1)
    again = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=100, seed=1)
    other = classification_section(probs, labels, ["a", "b", "c"], patients, n_boot=100, seed=2)
    assert first == again
    assert first["auroc_macro_ci_low"] != other["auroc_macro_ci_low"]


def test_paired_bootstrap_test():
    probs, labels, patients = multilabel_data(n=200)
    same = paired_bootstrap_test(probs, probs, labels, patients, n_boot=200)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    noise = np.random.default_rng(5).random(probs.shape)
    better = paired_bootstrap_test(probs, noise, labels, patients, n_boot=200)
    assert better["difference"] > 0.2 and better["p_value"] < 0.01
    assert better["difference_ci_low"] > 0
    worse = paired_bootstrap_test(noise, probs, labels, patients, n_boot=200)
    assert worse["difference"] == pytest.approx(-better["difference"])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap_test(probs, probs, labels, patients, metric="auc", n_boot=10)


def test_pr_band_brackets_the_interpolated_precision_of_the_full_test_set():
    from sklearn.metrics import precision_recall_curve

    from radsight.metrics.classification import classification_curves

    rng = np.random.default_rng(3)
    labels = (rng.random((300, 1)) < 0.3).astype(float)
    probs = np.clip(labels * 0.3 + rng.random((300, 1)) * 0.7, 0, 1)
    curves = classification_curves(probs, labels, ["a"], np.arange(300), n_boot=300, seed=0)
    pr = curves["pr"]["a"]
    precision, recall, _ = precision_recall_curve(labels[:, 0], probs[:, 0])
    grid = pr["recall_grid"]
    interpolated = np.array([precision[recall >= r].max() for r in grid])
    low, high = pr["precision_ci_low"], pr["precision_ci_high"]
    inside = (low <= interpolated + 1e-9) & (interpolated <= high + 1e-9)
    assert inside.mean() > 0.95
    assert np.all(pr["precision_ci_low"] <= pr["precision_ci_high"])


def test_vectorised_bootstrap_equals_a_resample_by_resample_reference():
    """Every per-label and micro metric on every resample (tied scores, unannotated labels, several
    images per patient) equals the metric of the resampled images computed one resample at a time."""
    probs, labels, patients = multilabel_data(n=90, n_labels=4, seed=5)
    probs = np.round(probs, 1)  # many tied scores
    names = ["a", "b", "c", "d"]
    section = classification_section(probs, labels, names, patients, n_boot=60, seed=11, thresholds=0.4)
    groups = patient_groups(patients, 90)

    def reference(index: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics of the images ``index`` (repeated as drawn), straight from scikit-learn."""
        out: dict[str, list[float]] = {k: [] for k in ("auroc", "auprc", "sensitivity", "specificity", "f1")}
        for k in range(4):
            keep = index[~np.isnan(labels[index, k])]
            y, p = labels[keep, k], probs[keep, k]
            both = 0 < y.sum() < y.size
            called = p >= 0.4
            out["auroc"].append(skm.roc_auc_score(y, p) if both else np.nan)
            out["auprc"].append(skm.average_precision_score(y, p) if both else np.nan)
            out["sensitivity"].append(called[y == 1].mean() if both else np.nan)
            out["specificity"].append(1 - called[y == 0].mean() if both else np.nan)
            out["f1"].append(skm.f1_score(y, called) if both else np.nan)
        values = {k: np.array(v) for k, v in out.items()}
        annotated = ~np.isnan(labels[index])
        y, p = labels[index][annotated], probs[index][annotated]
        values["auroc_micro"] = np.array(skm.roc_auc_score(y, p))
        values["auprc_micro"] = np.array(skm.average_precision_score(y, p))
        return values

    rows = [np.repeat(np.arange(90), row) for block in weight_blocks(groups, 60, 11) for row in block]
    sets = [np.repeat(np.arange(90), row) for block in jackknife_blocks(groups) for row in block]
    boot, jack = [reference(index) for index in rows], [reference(index) for index in sets]

    def replicates(name: str) -> Replicates:
        return Replicates(np.array([b[name] for b in boot]), np.array([j[name] for j in jack]))

    point = reference(np.arange(90))
    for name in ("auroc_micro", "auprc_micro"):
        low, high = bca_interval(point[name], replicates(name))
        assert section[name] == pytest.approx(float(point[name]), rel=1e-12)
        assert section[f"{name}_ci_low"] == pytest.approx(float(low), rel=1e-12)
        assert section[f"{name}_ci_high"] == pytest.approx(float(high), rel=1e-12)
    keys = {"auroc": "auroc", "auprc": "auprc", "f1": "f1_at_threshold"}
    keys |= {k: f"{k}_at_threshold" for k in ("sensitivity", "specificity")}
    for k, label in enumerate(names):
        for stat, key in keys.items():
            low, high = bca_interval(point[stat][k], replicates(stat)[k])
            entry = section["per_label"][label]
            assert entry[key] == pytest.approx(point[stat][k], rel=1e-12, nan_ok=True)
            assert entry[f"{key}_ci_low"] == pytest.approx(float(low), rel=1e-12, nan_ok=True), (label, key)
            assert entry[f"{key}_ci_high"] == pytest.approx(float(high), rel=1e-12, nan_ok=True), (label, key)
