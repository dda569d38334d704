"""Saliency-vs-gaze metrics: MIT benchmark definitions, hand-computed cases, properties, references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from radsight.metrics.saliency import (
    auc_borji,
    auc_judd,
    auc_judd_mit,
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


def mit_auc_judd(saliency: np.ndarray, fixated: np.ndarray, jitter: np.ndarray) -> float:
    """The MIT benchmark's AUC_Judd procedure, step by step: jitter, min-max, one threshold per fixated
    pixel (sorted descending), TPR = i / fixations, FPR = (pixels >= threshold - i) / other pixels."""
    s = saliency + jitter
    s = (s - s.min()) / (s.max() - s.min())
    at_fixations = s[fixated]
    n_fix, n_pix = at_fixations.size, s.size
    tp, fp = [0.0], [0.0]
    for i, threshold in enumerate(sorted(at_fixations, reverse=True), start=1):
        tp.append(i / n_fix)
        fp.append((np.count_nonzero(s >= threshold) - i) / (n_pix - n_fix))
    return float(np.trapezoid([*tp, 1.0], [*fp, 1.0]))


def mit_auc_judd_mean(saliency: np.ndarray, fixated: np.ndarray, n_draws: int, seed: int) -> float:
    """The benchmark's jitter (uniform in [0, 1e-7)) drawn as auc_judd_mit documents its draws."""
    rng = np.random.default_rng(seed)
    return float(
        np.mean([mit_auc_judd(saliency, fixated, rng.random(saliency.shape) / 1e7) for _ in range(n_draws)])
    )


TIED = np.array([[1.0, 1.0, 0.5, 0.0, 0.0, 0.0]])
TIED_FIXATED = np.array([[1, 0, 1, 1, 0, 0]], dtype=bool)  # values 1, 0.5 and 0, each tied but 0.5


def test_auc_judd_counts_ties_exactly_by_hand():
    # thresholds 1, .5, 0 -> (FPR, TPR) = (1/3, 1/3), (1/3, 2/3), (1, 1): 1/18 + 0 + 10/18
    assert auc_judd(TIED, TIED_FIXATED) == pytest.approx(11 / 18)
    assert auc_judd(np.zeros((2, 2)), one_fixation()) == pytest.approx(0.5)  # all tied: chance


def test_auc_judd_mit_breaks_ties_at_random_by_hand():
    # The tie at 1 puts the fixated pixel first or second (FPR 0 or 1/3 at TPR 1/3), the tie at 0 puts it
    # k-th of 3 (FPR k/3 at TPR 1); averaging the areas over these equally likely orders gives 13/18.
    assert auc_judd_mit(TIED, TIED_FIXATED, n_draws=4000) == pytest.approx(13 / 18, abs=0.005)
    # A constant 2 x 2 map, one fixated pixel ranked k-th of 4: area 1 - (k - 1) / 6, mean 0.75.
    assert auc_judd_mit(np.zeros((2, 2)), one_fixation(), n_draws=4000) == pytest.approx(0.75, abs=0.01)


def test_auc_judd_mit_equals_the_benchmark_procedure_on_tied_maps():
    rng = np.random.default_rng(7)
    for _ in range(5):
        cam = np.maximum(rng.normal(size=(12, 16)), 0)  # exact zeros, as after a CAM's ReLU
        as_png = np.round(rng.random((12, 16)) ** 3 * 255)  # 8-bit levels, many ties
        fixated = rng.random((12, 16)) < 0.15
        fixated[0, 0] = True
        for saliency in (cam, as_png, np.full((12, 16), 3.0)):
            expected = mit_auc_judd_mean(saliency, fixated, n_draws=5, seed=3)
            assert auc_judd_mit(saliency, fixated, n_draws=5, seed=3) == pytest.approx(expected, abs=1e-12)
    assert auc_judd_mit(TIED, TIED_FIXATED, seed=1) == auc_judd_mit(TIED, TIED_FIXATED, seed=1)
    with pytest.raises(ValueError, match="n_draws=0"):
        auc_judd_mit(TIED, TIED_FIXATED, n_draws=0)


def test_both_auc_judd_readings_agree_without_ties():
    fixated = RNG.random((24, 32)) < 0.1
    assert np.unique(MAP).size == MAP.size
    assert auc_judd_mit(MAP, fixated) == pytest.approx(auc_judd(MAP, fixated), abs=1e-9)
    assert auc_judd_mit(MAP, fixated) == pytest.approx(mit_auc_judd_mean(MAP, fixated, 10, 0), abs=1e-12)
    # the jitter is sized on the [0, 1] scale of an image, whatever the map's units (a softmax, say)
    assert auc_judd_mit(MAP * 1e-6, fixated) == pytest.approx(auc_judd(MAP, fixated), abs=1e-9)


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
        "auc_judd_mit",
        "auc_borji",
    ):
        assert section[f"{key}_ci_low"] <= section[key] <= section[f"{key}_ci_high"]
    assert {"auc_shuffled", "information_gain", "kl_divergence_no_eps_n_infinite"} <= section.keys()
    expected_mit = np.mean(
        [
            auc_judd_mit(m, fixation_map(f, (32, 32)), seed=i)
            for i, (m, f) in enumerate(zip(maps, fixations, strict=True))
        ]
    )
    assert section["auc_judd_mit"] == pytest.approx(expected_mit) and section["auc_judd_mit_draws"] == 10
    with pytest.raises(ValueError, match="frame_sizes"):
        saliency_section(maps, None, fixations)
    with pytest.raises(ValueError, match="gaze maps or fixations"):
        saliency_section(maps)
