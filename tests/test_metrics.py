"""Tests for skybench.tasks.lens.metrics and skybench.common (Metcalf et al. 2019 lens-finding metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from skybench import common
from skybench.tasks.lens import metrics as m

# --------------------------------------------------------------------------- helpers / strategies


def _ranked(*blocks: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Data from blocks listed from highest to lowest score: each (n_lens, n_nonlens) shares one score."""
    labels: list[int] = []
    scores: list[float] = []
    for i, (n_lens, n_nonlens) in enumerate(blocks):
        score = 1.0 - i / (len(blocks) + 1)
        labels += [1] * n_lens + [0] * n_nonlens
        scores += [score] * (n_lens + n_nonlens)
    return np.array(labels), np.array(scores)


@st.composite
def _tied_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Labels with both classes and scores drawn from a small set of values (many ties)."""
    n = draw(st.integers(min_value=2, max_value=60))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)))
    levels = draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=4, unique=True))
    scores = draw(st.lists(st.sampled_from(levels), min_size=n, max_size=n))
    return np.array(labels), np.array(scores)


@st.composite
def _continuous_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=2, max_value=80))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)))
    scores = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=n, max_size=n))
    return np.array(labels), np.array(scores)


def _gaussian_scores(n: int, seed: int, lens_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < lens_fraction).astype(int)
    labels[:2] = [0, 1]
    return labels, rng.normal(size=n) + 1.2 * labels


# --------------------------------------------------------------------------- AUROC and ROC curve


@settings(max_examples=300, deadline=None)
@given(_tied_data())
def test_auroc_equals_sklearn_on_heavily_tied_scores(data: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = data
    assert abs(m.auroc(labels, scores) - skm.roc_auc_score(labels, scores)) <= 1e-12


@settings(max_examples=200, deadline=None)
@given(_continuous_data())
def test_auroc_equals_sklearn_on_hypothesis_continuous_scores(data: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = data
    assert abs(m.auroc(labels, scores) - skm.roc_auc_score(labels, scores)) <= 1e-12


@pytest.mark.parametrize("n, seed", [(10, 0), (500, 1), (20_000, 2)])
def test_auroc_equals_sklearn_on_random_continuous_data(n: int, seed: int) -> None:
    labels, scores = _gaussian_scores(n, seed)
    assert abs(m.auroc(labels, scores) - skm.roc_auc_score(labels, scores)) <= 1e-12


def test_auroc_gives_half_credit_to_a_tied_lens_nonlens_pair() -> None:
    assert m.auroc([1, 0], [0.5, 0.5]) == 0.5
    assert m.auroc([1, 0], [0.9, 0.1]) == 1.0
    assert m.auroc([1, 0], [0.1, 0.9]) == 0.0


def _assert_roc_matches_sklearn(labels: np.ndarray, scores: np.ndarray) -> None:
    fpr, tpr, thr = m.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-15)
    # sklearn's extra first threshold (the (0,0) point) is not a score value; ours is +inf
    assert thr[0] == np.inf
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])


@settings(max_examples=200, deadline=None)
@given(_tied_data())
def test_roc_curve_points_equal_sklearn_drop_intermediate_false_with_ties(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    _assert_roc_matches_sklearn(*data)


@settings(max_examples=100, deadline=None)
@given(_continuous_data())
def test_roc_curve_points_equal_sklearn_drop_intermediate_false_continuous(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    _assert_roc_matches_sklearn(*data)


@settings(max_examples=100, deadline=None)
@given(_tied_data())
def test_roc_curve_starts_at_origin_ends_at_one_one_and_is_monotone(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    labels, scores = data
    fpr, tpr, thr = m.roc_curve(labels, scores)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thr) < 0)  # one point per distinct score, descending
    assert len(thr) == len(np.unique(scores)) + 1


def test_roc_curve_treats_a_tie_block_as_one_threshold() -> None:
    fpr, tpr, thr = m.roc_curve([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1])
    np.testing.assert_array_equal(thr, [np.inf, 0.8, 0.3, 0.1])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(fpr, [0.0, 0.5, 0.5, 1.0])


# --------------------------------------------------------------------------- TPR0 / TPR10


def test_tpr0_is_zero_when_top_score_is_a_nonlens() -> None:
    labels, scores = [0, 1, 1, 0], [0.9, 0.8, 0.7, 0.1]
    assert m.tpr0(labels, scores) == 0.0
    assert m.tpr10(labels, scores) == 1.0


def test_tpr0_is_zero_when_a_lens_ties_a_nonlens_at_top_score() -> None:
    labels, scores = [1, 0, 1, 1, 0], [0.9, 0.9, 0.5, 0.4, 0.2]
    assert m.tpr0(labels, scores) == 0.0
    # after that block, one FP: the next two lenses are found with FP = 1
    assert m.tpr_at_max_fp(labels, scores, 1) == 1.0


def test_tpr0_is_one_on_clean_separation() -> None:
    labels, scores = [1, 1, 1, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.1]
    assert m.tpr0(labels, scores) == 1.0
    assert m.tpr10(labels, scores) == 1.0


def test_tpr0_counts_lenses_above_first_nonlens() -> None:
    labels, scores = _ranked((1, 0), (1, 0), (0, 1), (2, 0))
    assert m.tpr0(labels, scores) == 0.5


def test_tpr10_uses_strictly_fewer_than_ten_false_positives() -> None:
    # 4 lenses, then 9 FPs one by one, then 2 lenses (TPR 0.6 at FP=9),
    # then the 10th FP, then 3 lenses (TPR 0.9 at FP=10), then more FPs and the last lens.
    labels, scores = _ranked((4, 0), *[(0, 1)] * 9, (2, 0), (0, 1), (3, 0), (0, 5), (1, 0))
    fpr, tpr, _ = m.roc_curve(labels, scores)
    n_nonlens = 15
    fp = np.rint(fpr * n_nonlens)
    assert tpr[fp == 9].max() == 0.6 and tpr[fp == 10].max() == 0.9  # the layout is as intended
    assert m.tpr10(labels, scores) == 0.6
    assert m.tpr0(labels, scores) == 0.4
    assert m.tpr_at_max_fp(labels, scores, 10) == 0.9


def test_tpr10_tie_block_straddling_tenth_false_positive_is_excluded() -> None:
    # 5 lenses, 8 FPs, then ONE block holding 2 lenses + 3 non-lenses (FP 8 -> 11), then FP 12
    labels, scores = _ranked((5, 0), *[(0, 1)] * 8, (2, 3), (0, 1), (3, 0), (0, 3))
    assert m.tpr10(labels, scores) == 0.5
    assert m.tpr_at_max_fp(labels, scores, 10) == 0.5
    assert m.tpr_at_max_fp(labels, scores, 11) == 0.7


def test_tpr10_tie_block_ending_at_ninth_false_positive_is_included() -> None:
    # 5 lenses, 7 FPs, then a block with 2 lenses + 2 non-lenses (FP 7 -> 9), then FP 10
    labels, scores = _ranked((5, 0), *[(0, 1)] * 7, (2, 2), (0, 1), (3, 0), (0, 3))
    assert m.tpr10(labels, scores) == 0.7
    assert m.tpr_at_max_fp(labels, scores, 8) == 0.5


def test_tpr10_is_one_when_fewer_than_ten_nonlenses_exist() -> None:
    labels, scores = _ranked((0, 3), (2, 0), (0, 6), (1, 0))
    assert m.tpr10(labels, scores) == 1.0
    assert m.tpr0(labels, scores) == 0.0


@st.composite
def _tied_many_nonlenses(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Up to 300 objects, mostly non-lenses, scores from a few levels: tie blocks across the 10th false positive."""
    n = draw(st.integers(min_value=2, max_value=300))
    rate = draw(st.floats(0.02, 0.5))
    bits = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    labels = (np.array(bits) < rate).astype(int)
    labels[:2] = [0, 1]
    levels = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30, unique=True))
    scores = draw(st.lists(st.sampled_from(levels), min_size=n, max_size=n))
    return labels, np.array(scores) + 0.0


@settings(max_examples=300, deadline=None)
@given(_tied_many_nonlenses())
def test_tpr0_tpr10_and_tpr_at_fpr_are_read_off_sklearns_roc_curve(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Metcalf+19: TPR0 the highest TPR before a single false positive, TPR10 with fewer than ten; a tie block is one
    threshold, as in sklearn.metrics.roc_curve (drop_intermediate=False), the independent reference here."""
    labels, scores = data
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    fp = np.rint(fpr * np.count_nonzero(labels == 0))
    assert m.tpr0(labels, scores) == tpr[fp == 0].max()
    assert m.tpr10(labels, scores) == tpr[fp < 10].max()
    assert m.tpr_at_fpr(labels, scores, 1e-2) == tpr[fpr <= 1e-2].max()


def test_tpr_at_max_fp_rejects_negative_or_fractional_fp() -> None:
    with pytest.raises(ValueError, match="max_fp"):
        m.tpr_at_max_fp([0, 1], [0.1, 0.9], -1)
    with pytest.raises(ValueError, match="max_fp"):
        m.tpr_at_max_fp([0, 1], [0.1, 0.9], 2.5)


# --------------------------------------------------------------------------- TPR at FPR, threshold at FPR


def _fpr_case() -> tuple[np.ndarray, np.ndarray]:
    # 2000 non-lenses, 4 lenses: 2 lenses, 2 FPs (FPR = 1e-3 exactly), 1 lens, 1 FP, 1 lens, rest FPs
    return _ranked((2, 0), (0, 1), (0, 1), (1, 0), (0, 1), (1, 0), (0, 1997))


def test_tpr_at_fpr_1e3_includes_the_point_with_fpr_exactly_1e3() -> None:
    labels, scores = _fpr_case()
    assert m.tpr_at_fpr(labels, scores, 1e-3) == 0.75
    assert m.tpr_at_fpr(labels, scores, 0.99e-3) == 0.5
    assert m.tpr_at_fpr(labels, scores, 1.5e-3) == 1.0
    assert m.tpr_at_fpr(labels, scores, 0.0) == 0.5


def test_tpr_at_fpr_is_zero_when_top_block_exceeds_the_fpr() -> None:
    labels, scores = _ranked((0, 5), (3, 0), (0, 995))
    assert m.tpr_at_fpr(labels, scores, 1e-3) == 0.0


def test_threshold_at_fpr_returns_lowest_score_with_fpr_at_most_target() -> None:
    labels, scores = _fpr_case()
    thr = m.threshold_at_fpr(labels, scores, 1e-3)
    assert thr == scores[4]  # the score of the third lens (after the 2nd FP)
    sel = scores >= thr
    assert np.sum(sel & (labels == 0)) == 2 and np.sum(sel & (labels == 1)) == 3
    # the next lower score would exceed the FPR
    assert m.threshold_at_fpr(labels, scores, 1.5e-3) == scores[6]
    assert m.threshold_at_fpr(labels, scores, 1.0) == scores.min()


def test_threshold_at_fpr_small_hand_case_with_ties() -> None:
    labels = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    # 9 non-lenses: FPR 1/9 at 0.8 and 0.7, 2/9 at 0.6
    assert m.threshold_at_fpr(labels, scores, 0.15) == 0.7
    assert m.threshold_at_fpr(labels, scores, 0.1) == 0.9
    assert m.threshold_at_fpr(labels, scores, 0.3) == 0.6  # 0.5 block would give FPR 4/9


def test_threshold_at_fpr_is_inf_when_top_block_holds_a_nonlens_and_fpr_is_zero() -> None:
    assert m.threshold_at_fpr([0, 1, 1], [0.9, 0.5, 0.4], 0.0) == np.inf


def test_threshold_at_fpr_rejects_fpr_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="fpr"):
        m.threshold_at_fpr([0, 1], [0.1, 0.9], 1.5)
    with pytest.raises(ValueError, match="fpr"):
        m.tpr_at_fpr([0, 1], [0.1, 0.9], -0.1)


# --------------------------------------------------------------------------- average precision


def test_average_precision_equals_sklearn_with_ties() -> None:
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.7, 0.5, 0.5, 0.5, 0.2, 0.1])
    assert m.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-15
    )


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_deterministic_for_fixed_seed_and_changes_with_seed() -> None:
    labels, scores = _gaussian_scores(300, 5)
    a = common.bootstrap_ci(m.auroc, labels, scores, n_resamples=200, seed=7)
    b = common.bootstrap_ci(m.auroc, labels, scores, n_resamples=200, seed=7)
    c = common.bootstrap_ci(m.auroc, labels, scores, n_resamples=200, seed=8)
    assert a == b
    assert a != c


def test_bootstrap_ci_contains_point_estimate() -> None:
    labels, scores = _gaussian_scores(1000, 11)
    low, high = common.bootstrap_ci(m.auroc, labels, scores, n_resamples=300, seed=0)
    point = m.auroc(labels, scores)
    assert low < point < high
    assert 0.0 < high - low < 0.2


def test_bootstrap_ci_is_narrower_for_more_data() -> None:
    small = common.bootstrap_ci(m.auroc, *_gaussian_scores(200, 3), n_resamples=300, seed=0)
    large = common.bootstrap_ci(m.auroc, *_gaussian_scores(5000, 3), n_resamples=300, seed=0)
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])


def test_bootstrap_ci_is_generic_over_metric_and_array_count() -> None:
    rng = np.random.default_rng(0)
    z_true = rng.uniform(0.1, 2.0, 2000)
    z_pred = z_true + rng.normal(0, 0.05, 2000) * (1 + z_true)

    def sigma_nmad(zt: np.ndarray, zp: np.ndarray) -> float:
        dz = (zp - zt) / (1 + zt)
        return float(1.4826 * np.median(np.abs(dz - np.median(dz))))

    low, high = common.bootstrap_ci(sigma_nmad, z_true, z_pred, n_resamples=200, seed=1)
    assert low < sigma_nmad(z_true, z_pred) < high
    assert 0.04 < low < high < 0.06
    low1, high1 = common.bootstrap_ci(lambda x: float(np.mean(x)), z_true, n_resamples=200, seed=1)
    assert low1 < float(np.mean(z_true)) < high1


def test_bootstrap_ci_skips_single_class_resamples() -> None:
    # with 3 objects, about a quarter of resamples hold one class only: they must be skipped, not raise
    low, high = common.bootstrap_ci(m.auroc, [1, 0, 0], [0.9, 0.1, 0.2], n_resamples=400, seed=0)
    assert (low, high) == (1.0, 1.0)
    calls: list[int] = []

    def counting_auroc(y: np.ndarray, s: np.ndarray) -> float:
        calls.append(1)
        return m.auroc(y, s)

    low, high = common.bootstrap_ci(counting_auroc, [1, 0], [0.2, 0.8], n_resamples=200, seed=0)
    assert (low, high) == (0.0, 0.0)
    assert len(calls) == 200


def test_bootstrap_ci_propagates_other_errors_and_checks_arguments() -> None:
    def broken(y: np.ndarray) -> float:
        raise ValueError("not a one-class problem")

    with pytest.raises(ValueError, match="not a one-class problem"):
        common.bootstrap_ci(broken, np.arange(5), n_resamples=10)
    with pytest.raises(ValueError, match="differ in length"):
        common.bootstrap_ci(m.auroc, [0, 1, 1], [0.1, 0.2], n_resamples=10)
    with pytest.raises(ValueError, match="n_resamples"):
        common.bootstrap_ci(m.auroc, [0, 1], [0.1, 0.2], n_resamples=0)
    with pytest.raises(ValueError, match="alpha"):
        common.bootstrap_ci(m.auroc, [0, 1], [0.1, 0.2], alpha=1.0)
    with pytest.raises(ValueError, match="every bootstrap resample"):
        common.bootstrap_ci(lambda x: float("nan"), np.arange(5), n_resamples=10)


_POINT = {"auroc": m.auroc, "tpr0": m.tpr0, "tpr10": m.tpr10, "tpr_fpr1e-3": lambda y, s: m.tpr_at_fpr(y, s, 1e-3)}


@pytest.mark.parametrize("n, seed", [(3, 0), (40, 1), (3000, 2)])
def test_lens_metrics_fast_cis_equal_generic_bootstrap(n: int, seed: int) -> None:
    labels, scores = _gaussian_scores(n, seed)
    scores = np.round(scores, 1)  # ties
    out = m.lens_metrics(labels, scores, n_resamples=150, seed=seed)
    assert set(_POINT) == set(m.BOOTSTRAPPED)
    for name, metric in _POINT.items():
        low, high = common.bootstrap_ci(metric, labels, scores, n_resamples=150, seed=seed)
        assert (out[f"{name}_ci_low"], out[f"{name}_ci_high"]) == (low, high), name


def test_tpr0_interval_is_the_brute_force_bootstrap() -> None:
    # 2000 objects at AUROC ~0.95: TPR0 hangs on the top-scored non-lens, so its interval is wide
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.3).astype(int)
    scores = rng.normal(size=2000) + 2.3 * labels
    out = m.lens_metrics(labels, scores, n_resamples=300, seed=4)
    draws = np.random.default_rng(4)  # the resample indices: lens_metrics' draws, one resample after another
    values = [m.tpr0(labels[i], scores[i]) for i in (draws.integers(0, 2000, size=2000) for _ in range(300))]
    want = tuple(np.quantile(values, [0.025, 0.975]))
    assert (out["tpr0_ci_low"], out["tpr0_ci_high"]) == want
    assert out["tpr0_ci_low"] <= out["tpr0"] <= out["tpr0_ci_high"] and want[1] - want[0] > 0.05


def test_resampled_tprs_keep_a_tie_block_as_one_threshold() -> None:
    # the top block (0.9) is a non-lens tied with two lenses, the non-lens first: sorting the block's objects
    # would put the lenses above it (TPR0 = 2/4 instead of 0); dropping the non-lens makes the block all lenses
    labels = np.array([0, 1, 1, 1, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.9, 0.5, 0.5, 0.2, 0.1])
    idx = np.array([np.arange(7), [1, 2, 3, 4, 5, 6, 6], [0, 0, 1, 3, 3, 4, 6], [3, 4, 4, 4, 5, 6, 6]])
    got = m.roc_resamples(labels, scores, idx, chunk_elements=14)  # two chunks
    assert got["tpr0"].tolist() == [0.0, 0.5, 0.0, 0.0]  # [3, 4, ...]: the 0.5 block ties lens 3 with non-lens 4
    for name, metric in _POINT.items():
        np.testing.assert_array_equal(got[name], [metric(labels[i], scores[i]) for i in idx], err_msg=name)
    assert np.isnan(m.roc_resamples(labels, scores, [[1, 2, 3, 5, 1, 2, 3]])["tpr10"][0])  # lenses only
    with pytest.raises(ValueError, match="no resampled metric"):
        m.roc_resamples(labels, scores, idx, ("average_precision",))


def test_resampled_tprs_equal_the_point_metrics() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.round(labels + rng.normal(0, 1, 400), 1)  # ties within and across classes
    idx = rng.integers(0, 400, size=(60, 400))
    got = m.roc_resamples(labels, scores, idx, chunk_elements=5000)
    for name, metric in _POINT.items():
        np.testing.assert_array_equal(got[name], [metric(labels[i], scores[i]) for i in idx], err_msg=name)


# --------------------------------------------------------------------------- lens_metrics


def test_lens_metrics_returns_exact_keys_and_consistent_values() -> None:
    labels, scores = _gaussian_scores(400, 9)
    out = m.lens_metrics(labels, scores, n_resamples=100, seed=0)
    assert list(out) == [
        "auroc",
        "auroc_ci_low",
        "auroc_ci_high",
        "tpr0",
        "tpr0_ci_low",
        "tpr0_ci_high",
        "tpr10",
        "tpr10_ci_low",
        "tpr10_ci_high",
        "tpr_fpr1e-3",
        "tpr_fpr1e-3_ci_low",
        "tpr_fpr1e-3_ci_high",
        "average_precision",
        "n_lens",
        "n_nonlens",
    ]
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert out["average_precision"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert out["tpr0"] == m.tpr0(labels, scores)
    assert out["tpr10"] == m.tpr10(labels, scores)
    assert out["tpr_fpr1e-3"] == m.tpr_at_fpr(labels, scores, 1e-3)
    assert out["n_lens"] == int(labels.sum()) and out["n_nonlens"] == int((labels == 0).sum())
    for name in m.BOOTSTRAPPED:
        assert out[f"{name}_ci_low"] <= out[name] <= out[f"{name}_ci_high"], name
    assert 0.0 <= out["tpr0"] <= out["tpr_fpr1e-3"] <= out["tpr10"] <= 1.0


def test_lens_metrics_without_bootstrap_gives_nan_ci() -> None:
    out = m.lens_metrics([0, 1, 1], [0.1, 0.7, 0.9], n_resamples=0)
    assert all(math.isnan(out[f"{k}_ci_{b}"]) for k in m.BOOTSTRAPPED for b in ("low", "high"))
    assert out["auroc"] == 1.0 and out["tpr0"] == 1.0


# --------------------------------------------------------------------------- completeness


def test_completeness_by_bin_hand_case() -> None:
    labels = [1, 1, 1, 1, 1, 0, 0, 1]
    scores = [0.9, 0.2, 0.5, 0.6, 0.1, 0.99, 0.3, 0.7]
    theta_e = [0.5, 0.7, 1.2, 1.5, 1.9, np.nan, 0.6, 2.0]  # non-lens values are ignored
    out = m.completeness_by_bin(labels, scores, 0.5, theta_e, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out["bin_edges"], [0.0, 1.0, 2.0, 3.0])
    # [0,1): lenses 0.9, 0.2 -> 1/2; [1,2): 0.5 (>= counts), 0.6, 0.1 -> 2/3; [2,3]: 0.7 -> 1/1
    np.testing.assert_array_equal(out["n_lens"], [2, 3, 1])
    np.testing.assert_array_equal(out["n_found"], [1, 2, 1])
    np.testing.assert_allclose(out["completeness"], [0.5, 2 / 3, 1.0])


def test_completeness_by_bin_empty_bin_is_nan() -> None:
    out = m.completeness_by_bin([1, 1, 0], [0.9, 0.1, 0.5], 0.5, [1.0, 1.5, 9.0], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out["n_lens"], [0, 2, 0])
    assert math.isnan(out["completeness"][0]) and math.isnan(out["completeness"][2])
    assert out["completeness"][1] == 0.5


def test_completeness_by_bin_rejects_bad_bins_and_values() -> None:
    with pytest.raises(ValueError, match="increasing"):
        m.completeness_by_bin([1, 0], [0.9, 0.1], 0.5, [1.0, 1.0], [2.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="two finite edges"):
        m.completeness_by_bin([1, 0], [0.9, 0.1], 0.5, [1.0, 1.0], [2.0])
    with pytest.raises(ValueError, match="finite for every lens"):
        m.completeness_by_bin([1, 0], [0.9, 0.1], 0.5, [np.nan, 1.0], [0.0, 2.0])
    with pytest.raises(ValueError, match="values must be 1-D"):
        m.completeness_by_bin([1, 0], [0.9, 0.1], 0.5, [1.0], [0.0, 2.0])


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([[0, 1]], [[0.1, 0.2]], "labels must be 1-D"),
        ([0, 1], [[0.1, 0.2]], "scores must be 1-D"),
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 2], [0.1, 0.2], "0 \\(non-lens\\) or 1 \\(lens\\)"),
        ([0, 0.5], [0.1, 0.2], "0 \\(non-lens\\) or 1 \\(lens\\)"),
        (["a", "b"], [0.1, 0.2], "labels must be numeric"),
        ([0, 1], ["x", "y"], "scores must be real numbers"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 1], [np.inf, 0.2], "finite"),
        ([1, 1], [0.1, 0.2], "both classes"),
        ([0, 0], [0.1, 0.2], "both classes"),
        ([], [], "both classes"),
    ],
)
@pytest.mark.parametrize(
    "fn",
    [m.auroc, m.roc_curve, m.tpr0, m.tpr10, m.tpr_at_fpr, m.average_precision, m.lens_metrics],
)
def test_metrics_raise_clear_value_error_on_bad_input(labels, scores, match, fn) -> None:
    with pytest.raises(ValueError, match=match):
        fn(labels, scores)


def test_single_class_error_is_undefined_metric_error_subclass_of_value_error() -> None:
    with pytest.raises(common.UndefinedMetricError):
        m.auroc([1, 1], [0.1, 0.2])
    assert issubclass(common.UndefinedMetricError, ValueError)


def test_boolean_and_float_labels_are_accepted() -> None:
    expected = m.auroc([0, 1, 1, 0], [0.1, 0.8, 0.3, 0.4])
    assert m.auroc(np.array([False, True, True, False]), [0.1, 0.8, 0.3, 0.4]) == expected
    assert m.auroc([0.0, 1.0, 1.0, 0.0], [0.1, 0.8, 0.3, 0.4]) == expected
    assert expected == 0.75


def test_resampled_fpr_limit_is_the_point_metrics_division() -> None:
    # tpr_at_fpr keeps the points with FP / N <= fpr (a float division): the resampled path's integer limit too
    n = np.arange(1, 20_001)
    for fpr in (0.0, 1e-3, 0.01, 0.07, 0.1, 1 / 3, 0.3, 1.0):
        most = m._max_fp(n, fpr)
        assert np.all(most / n <= fpr) and np.all((most + 1) / n > fpr), fpr
