"""Saliency-vs-gaze metrics: MIT benchmark definitions, hand-computed cases, properties, references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from radsight.metrics.saliency import (
    auc_borji,
    auc_judd,
    auc_shuffled,
    cc,
    center_bias,
    fixation_map,
    histogram_similarity,
    information_gain,
    kl_divergence,
    kl_divergence_no_eps,
    nss,
    saliency_section,
    sim,
)

RNG = np.random.default_rng(0)
MAP = RNG.random((24, 32)) + 0.01
GAZE = RNG.random((24, 32)) + 0.01


def one_fixation(size=(2, 2), row=0, col=0) -> np.ndarray:
    fixated = np.zeros(size, dtype=bool)
    fixated[row, col] = True
    return fixated


# --- fixations and baseline ------------------------------------------------------------------------


def test_fixation_map_floors_pixels_and_drops_off_frame_points():
    fixated = fixation_map(
        np.array([[0.2, 0.9, 0.3], [3.99, 1.0, 0.1], [9.0, 1.0, 0.2], [0.5, 0.5, 0.1]]), (3, 4)
    )
    assert fixated.sum() == 2 and fixated[0, 0] and fixated[1, 3]  # duplicates collapse, x = 9 is off frame
    with pytest.raises(ValueError, match="inside"):
        fixation_map(np.array([[-1.0, 2.0]]), (3, 4))


def test_center_bias_peaks_at_the_centre():
    bias = center_bias((9, 11))
    assert np.unravel_index(bias.argmax(), bias.shape) == (4, 5)
    np.testing.assert_allclose(bias, bias[::-1, ::-1])


# --- distribution-based metrics --------------------------------------------------------------------


def test_cc_properties_and_pearson_reference():
    assert cc(GAZE, GAZE) == pytest.approx(1.0)
    assert cc(GAZE.max() - GAZE, GAZE) == pytest.approx(-1.0)
    assert cc(MAP, GAZE) == pytest.approx(stats.pearsonr(MAP.ravel(), GAZE.ravel())[0])
    assert cc(np.ones((4, 4)), GAZE) == 0.0  # a constant map is chance


def test_kl_divergence_definition():
    assert kl_divergence(GAZE, GAZE) == pytest.approx(0.0, abs=1e-12)
    # gaze is the reference distribution: KL(G || S); natural log; scipy's entropy(pk, qk) = KL(pk || qk)
    assert kl_divergence(MAP, GAZE) == pytest.approx(stats.entropy(GAZE.ravel(), MAP.ravel()), rel=1e-9)
    # hand: G = (1/2, 1/2), S = (1/4, 3/4)
    expected = 0.5 * np.log(2) + 0.5 * np.log(2 / 3)
    assert kl_divergence(np.array([[1.0, 3.0]]), np.array([[1.0, 1.0]])) == pytest.approx(expected)
    assert kl_divergence(MAP, GAZE) > 0


def test_kl_divergence_no_eps():
    assert kl_divergence_no_eps(MAP, GAZE) == pytest.approx(kl_divergence(MAP, GAZE), rel=1e-9)
    saliency, gaze = np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])
    assert kl_divergence_no_eps(saliency, gaze) == float("inf")
    assert np.isfinite(kl_divergence(saliency, gaze))  # eps keeps the benchmark's KL finite
    assert kl_divergence_no_eps(np.array([[1.0, 1.0]]), np.array([[0.0, 1.0]])) == pytest.approx(np.log(2))


def test_sim_and_histogram_similarity_hand_computed():
    saliency, gaze = np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[4.0, 3.0, 2.0, 1.0]])
    # SIM: min-max then sum-normalise -> (0, 1/6, 1/3, 1/2) and (1/2, 1/3, 1/6, 0): sum of minima 1/3
    assert sim(saliency, gaze) == pytest.approx(1 / 3)
    # without the min-max step: (.1, .2, .3, .4) and (.4, .3, .2, .1): sum of minima .6
    assert histogram_similarity(saliency, gaze) == pytest.approx(0.6)
    assert sim(GAZE, GAZE) == pytest.approx(1.0)
    assert histogram_similarity(GAZE, GAZE) == pytest.approx(1.0)
    assert 0 <= sim(MAP, GAZE) <= 1


def test_distribution_metrics_need_valid_maps():
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(MAP - 0.5, GAZE)
    with pytest.raises(ValueError, match="gaze map"):
        cc(MAP, np.zeros_like(GAZE))


def test_saliency_map_is_resized_to_the_gaze_frame():
    coarse = np.array([[1.0, 2.0], [3.0, 4.0]])
    gaze = np.kron(coarse, np.ones((8, 8)))
    assert cc(coarse, gaze) > 0.9
    assert cc(coarse, gaze) == pytest.approx(cc(gaze, gaze), abs=0.1)


# --- fixation-based metrics ------------------------------------------------------------------------


def test_nss_hand_computed_with_sample_std():
    # map = fixation map, one fixation in 4 pixels: mean .25, sample std .5 -> (1 - .25) / .5
    fixated = one_fixation()
    assert nss(fixated.astype(float), fixated) == pytest.approx(1.5)
    assert nss(np.ones((2, 2)), fixated) == 0.0
    with pytest.raises(ValueError, match="empty"):
        nss(MAP, np.zeros((24, 32)))


def test_auc_judd_hand_computed():
    saliency = np.array([[0.1, 0.9, 0.4, 0.6, 0.2]])
    fixated = np.array([[0, 1, 1, 0, 0]], dtype=bool)
    # thresholds .9 and .4: (FPR, TPR) = (0, .5), (1/3, 1); trapezoids with (0, 0) and (1, 1)
    assert auc_judd(saliency, fixated) == pytest.approx((1 / 3) * 0.75 + (2 / 3))


def test_auc_judd_properties():
    fixated = RNG.random((24, 32)) < 0.05
    assert auc_judd(fixated.astype(float), fixated) == pytest.approx(1.0)
    assert auc_judd(np.full((24, 32), 3.0), fixated) == pytest.approx(0.5)


def test_auc_judd_matches_sklearn_roc_points_at_fixated_values():
    fixated = RNG.random((24, 32)) < 0.1
    fpr, tpr, thresholds = skm.roc_curve(fixated.ravel(), MAP.ravel(), drop_intermediate=False)
    at_fixations = np.isin(thresholds, MAP[fixated])  # Judd's curve has points only at fixated values
    reference = np.trapezoid(np.r_[0, tpr[at_fixations], 1], np.r_[0, fpr[at_fixations], 1])
    assert auc_judd(MAP, fixated) == pytest.approx(reference)


def test_auc_borji_expectation_matches_sklearn_against_all_pixels():
    # Values on the 0.1 grid: Borji's trapezoids are then exact, and averaged over splits the random
    # negatives become all pixels: AUROC of fixated values vs every pixel (ties count half).
    rng = np.random.default_rng(4)
    saliency = rng.integers(0, 11, (30, 30)).astype(float)
    saliency[0, 0], saliency[0, 1] = 0.0, 10.0
    fixated = rng.random((30, 30)) < 0.01 + saliency / 200
    scores = np.r_[saliency[fixated], saliency.ravel()]
    truth = np.r_[np.ones(fixated.sum()), np.zeros(saliency.size)]
    reference = skm.roc_auc_score(truth, scores)
    assert auc_borji(saliency, fixated, n_splits=2000, seed=0) == pytest.approx(reference, abs=0.01)
    assert auc_borji(np.ones((30, 30)), fixated) == pytest.approx(0.5)
    assert auc_borji(saliency, fixated, seed=3) == auc_borji(saliency, fixated, seed=3)


def test_auc_shuffled_hand_computed():
    saliency = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]])
    fixated = np.array([[0, 1, 0, 0, 1]], dtype=bool)  # values .25 and 1
    others = np.array([[1, 0, 1, 0, 0]], dtype=bool)  # values 0 and .5, both drawn on every split
    # pairs (fixated > other): 1 > .5, 1 > 0, .25 > 0 win; .25 < .5 loses: 3/4
    assert auc_shuffled(saliency, fixated, others) == pytest.approx(0.75)


def test_shuffled_auc_cancels_centre_bias():
    size = (40, 40)
    rng = np.random.default_rng(0)

    def centred() -> np.ndarray:  # fixations of one image, all images sharing the same centre bias
        return fixation_map(np.clip(rng.normal(20, 6, (40, 2)), 0, 39), size)

    bias = center_bias(size)
    fixated, others = centred(), centred()
    assert auc_borji(bias, fixated) > 0.8
    assert auc_shuffled(bias, fixated, others) == pytest.approx(0.5, abs=0.1)


def test_information_gain_hand_computed():
    saliency, baseline = np.array([[0.0, 1.0, 2.0, 3.0]]), np.array([[3.0, 2.0, 1.0, 0.0]])
    fixated = np.array([[0, 0, 1, 0]], dtype=bool)
    # min-max + sum: saliency (0, 1/6, 1/3, 1/2), baseline (1/2, 1/3, 1/6, 0): log2(1/3) - log2(1/6) = 1 bit
    assert information_gain(saliency, fixated, baseline) == pytest.approx(1.0)
    assert information_gain(MAP, MAP > 0.9, MAP) == 0.0  # no gain over itself


# --- section ---------------------------------------------------------------------------------------


def test_saliency_section():
    rng = np.random.default_rng(6)
    maps = [rng.random((8, 8)) for _ in range(4)]
    gaze = [rng.random((32, 32)), None, rng.random((32, 32)), rng.random((32, 32))]
    fixations = [rng.random((15, 3)) * 32 for _ in range(4)]
    section = saliency_section(
        maps, gaze, fixations, frame_sizes=(32, 32), patient_ids=[1, 1, 2, 3], n_boot=100
    )
    assert section["n_images_with_gaze_map"] == 3 and section["n_images_with_fixations"] == 4
    expected_cc = np.mean([cc(maps[i], gaze[i]) for i in (0, 2, 3)])
    assert section["cc"] == pytest.approx(expected_cc)
    expected_nss = np.mean([nss(m, fixation_map(f, (32, 32))) for m, f in zip(maps, fixations, strict=True)])
    assert section["nss"] == pytest.approx(expected_nss)
    for key in (
        "kl_divergence",
        "sim",
        "kl_divergence_no_eps",
        "histogram_similarity",
        "auc_judd",
        "auc_borji",
    ):
        assert section[f"{key}_ci_low"] <= section[key] <= section[f"{key}_ci_high"]
    assert {"auc_shuffled", "information_gain", "kl_divergence_no_eps_n_infinite"} <= section.keys()
    with pytest.raises(ValueError, match="frame_sizes"):
        saliency_section(maps, None, fixations)
    with pytest.raises(ValueError, match="gaze maps or fixations"):
        saliency_section(maps)
