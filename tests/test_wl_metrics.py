"""The generate task's map metrics on inputs with known answers: white noise's flat C_l, a shift's Wasserstein
distance, peaks of constant and single-bump maps, the Gaussian Minkowski functionals, the chi^2 of truth
against truth, and the memorisation and collapse checks against copying and repeating generators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats
from scipy.special import erfc

from skybench.tasks.generate.metrics import (
    as_maps,
    chi2_per_dof,
    collapse_check,
    ell_bins,
    memorisation_check,
    minkowski,
    pdf_distances,
    peak_counts,
    power_spectrum,
)

N, SIZE = 64, 3.5


def smooth_gaussian_maps(n_maps: int, seed: int, sigma_pix: float = 3.0, n: int = N) -> np.ndarray:
    """Gaussian random fields: white noise smoothed by a periodic Gaussian (scipy.ndimage, mode wrap)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n_maps, n, n))
    return np.stack([ndimage.gaussian_filter(w, sigma_pix, mode="wrap") for w in white])


def lognormal_maps(n_maps: int, seed: int) -> np.ndarray:
    """Skewed maps (a shifted lognormal of smooth Gaussian fields), the truth-like process of these tests."""
    g = smooth_gaussian_maps(n_maps, seed)
    g /= g.std()
    return np.expm1(0.6 * g - 0.18)


def test_white_noise_has_a_flat_power_spectrum_at_sigma2_times_pixel_area():
    sigma = 0.02
    maps = sigma * np.random.default_rng(0).standard_normal((64, 1, N, N))
    ps = power_spectrum(maps, SIZE, ell_bins(N, SIZE, 8))
    expected = sigma**2 * (np.deg2rad(SIZE) / N) ** 2
    # each bin: a mean of n_modes / 2 exponentials per map, 64 maps
    err = expected * np.sqrt(2 / ps.n_modes / 64)
    z = (ps.cl.mean(0) - expected) / err
    assert np.all(np.abs(z) < 4), z
    assert np.all(np.diff(ps.ell) > 0) and ps.cl.shape == (64, 8)


def test_pdf_distances_known_answers():
    maps = lognormal_maps(8, 1)
    assert pdf_distances(maps, maps) == (0.0, 0.0)
    ks, w1 = pdf_distances(maps + 0.05, maps)  # a shift by c: Wasserstein-1 is exactly c
    assert w1 == pytest.approx(0.05, rel=1e-9) and ks > 0
    ks_gauss, _ = pdf_distances(smooth_gaussian_maps(8, 2) / smooth_gaussian_maps(8, 2).std() * maps.std(), maps)
    assert ks_gauss > 0.03  # same variance, no skewness: the KS statistic sees it


def test_peaks_of_constant_bump_and_plateau_maps():
    edges = np.array([-10.0, 0.5, 1.5, 10.0])
    assert peak_counts(np.full((3, 1, N, N), 0.7), edges).sum() == 0
    bump = np.zeros((1, N, N))
    bump[0, 0, 0] = 1.0  # at the corner: its neighbours wrap around
    np.testing.assert_array_equal(peak_counts(bump, edges), [[0, 1, 0]])
    plateau = bump.copy()
    plateau[0, 0, 1] = 1.0  # two equal maxima side by side: neither is strictly above all neighbours
    assert peak_counts(plateau, edges).sum() == 0
    two = np.zeros((2, N, N))
    two[1, 10, 10], two[1, 30, 40] = 2.0, 1.0
    np.testing.assert_array_equal(peak_counts(two, edges), [[0, 0, 0], [0, 1, 1]])


def test_minkowski_functionals_of_a_gaussian_field_match_the_analytic_ones():
    maps = smooth_gaussian_maps(32, 3, sigma_pix=4.0)
    maps -= maps.mean()
    s0 = maps.std()
    nu = np.linspace(-2.5, 2.5, 21)
    v0, v1, v2 = minkowski(maps, nu * s0)
    # V0: the Gaussian tail fraction
    np.testing.assert_allclose(v0.mean(0), 0.5 * erfc(nu / np.sqrt(2)), atol=0.02)
    # V1, V2 (Tomita 1986; Schmalzing & Gorski 1998): s1^2 = <|grad kappa|^2> per pixel^2, from the spectrum
    k = 2 * np.pi * np.fft.fftfreq(N)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    s1 = np.sqrt(np.mean(np.sum(k2 * np.abs(np.fft.fft2(maps)) ** 2, axis=(1, 2))) / N**4)
    g = np.exp(-(nu**2) / 2)
    v1_th = s1 / (8 * np.sqrt(2) * s0) * g
    v2_th = s1**2 / (2 * s0**2) / (2 * np.pi) ** 1.5 * nu * g
    np.testing.assert_allclose(v1.mean(0), v1_th, atol=0.06 * v1_th.max())
    np.testing.assert_allclose(v2.mean(0), v2_th, atol=0.08 * np.abs(v2_th).max())
    with pytest.raises(ValueError, match="equally spaced"):
        minkowski(maps, np.array([0.0, 1.0, 3.0]))


def test_minkowski_v1_v2_are_lenstools_sums_with_numpy_derivatives():
    """V1, V2 as REFERENCES.md defines them (LensTools extern/minkowski.c, differentials.c): periodic central
    differences in pixels, the second derivatives those applied twice (np.gradient of np.gradient, a +-2-pixel
    stencil), each bin's sum over N_pix and the bin width."""
    maps = smooth_gaussian_maps(16, 2, sigma_pix=1.5)
    maps /= maps.std()
    nu = np.linspace(-2.0, 2.0, 9)
    _, v1, v2 = minkowski(maps, nu)
    pad = 4

    def grad(a: np.ndarray, axis: int) -> np.ndarray:  # periodic np.gradient: wrap, differentiate, crop
        return np.gradient(np.pad(a, pad, mode="wrap"), axis=axis)[pad:-pad, pad:-pad]

    step, edges = nu[1] - nu[0], np.r_[nu - (nu[1] - nu[0]) / 2, nu[-1] + (nu[1] - nu[0]) / 2]
    for m, got1, got2 in zip(maps, v1, v2, strict=True):
        ky, kx = grad(m, 0), grad(m, 1)
        kyy, kxx, kxy = grad(ky, 0), grad(kx, 1), grad(kx, 0)
        g2 = kx**2 + ky**2
        curv = (2 * kx * ky * kxy - kx**2 * kyy - ky**2 * kxx) / g2
        want1 = np.histogram(m, edges, weights=np.sqrt(g2))[0] / (4 * m.size * step)
        want2 = np.histogram(m, edges, weights=curv)[0] / (2 * np.pi * m.size * step)
        np.testing.assert_allclose(got1, want1, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got2, want2, rtol=1e-9, atol=1e-12)


def test_chi2_per_dof_of_truth_against_truth_is_one_with_the_hartlap_factor():
    rng = np.random.default_rng(4)
    d, n_t, n_g = 10, 40, 30
    a = rng.standard_normal((d, d))
    cov = a @ a.T + d * np.eye(d)
    draws = [chi2_per_dof(rng.multivariate_normal(np.ones(d), cov, n_g),
                          rng.multivariate_normal(np.ones(d), cov, n_t)) for _ in range(400)]
    # Hartlap's (n_t - d - 2) / (n_t - 1) = 0.72 here: without it the mean would be about 1.4
    assert np.mean([c.chi2 / d for c in draws]) == pytest.approx(1.0, abs=0.08)
    assert np.mean([c.spread / d for c in draws]) == pytest.approx(1.0, abs=0.15)
    assert np.mean([c.per_dof for c in draws]) == pytest.approx(1.0, abs=0.1)
    # a mean off by delta: chi^2 about delta^T C^-1 delta / (1/n_g + 1/n_t)
    delta = 3 * np.ones(d)
    shifted = chi2_per_dof(rng.multivariate_normal(1 + delta, cov, n_g), rng.multivariate_normal(np.ones(d), cov, 400))
    expected = delta @ np.linalg.solve(cov, delta) / (1 / n_g + 1 / 400) / d
    assert shifted.chi2 / d == pytest.approx(expected, rel=0.5) and expected > 5
    with pytest.raises(ValueError, match="do not vary"):
        chi2_per_dof(np.ones((5, 3)), np.c_[rng.standard_normal((20, 2)), np.zeros(20)])
    with pytest.raises(ValueError, match="cannot estimate"):
        chi2_per_dof(np.ones((5, 3)), rng.standard_normal((5, 3)))


def test_chi2_per_dof_ranks_too_little_spread_below_an_independent_draw():
    """The mean's chi^2 alone falls with the generated spread (0.5 per dof for no spread at the truth's mean), so
    a lower-is-better score rewarded an under-dispersed generator; the spread term makes 1 the minimum."""
    rng = np.random.default_rng(5)
    d, n = 10, 100
    a = rng.standard_normal((d, d))
    cov = a @ a.T + d * np.eye(d)

    def mean_score(scale: float) -> tuple[float, float]:
        runs = [chi2_per_dof(scale * rng.multivariate_normal(np.zeros(d), cov, n),
                             rng.multivariate_normal(np.zeros(d), cov, n)) for _ in range(100)]
        return float(np.mean([c.chi2 / d for c in runs])), float(np.mean([c.per_dof for c in runs]))

    honest, narrow, none = mean_score(1.0), mean_score(np.sqrt(0.6)), mean_score(0.0)
    assert narrow[0] < honest[0] - 0.1 and none[0] < 0.6  # the mean's chi^2 alone: less spread, "better"
    assert honest[1] == pytest.approx(1.0, abs=0.1) and narrow[1] > 2 * honest[1] and none[1] > 1e3
    assert mean_score(np.sqrt(2.0))[1] > 2 * honest[1]  # too much spread too
    with pytest.raises(ValueError, match="no spread"):
        chi2_per_dof(np.ones((1, 3)), rng.standard_normal((20, 3)))


def test_chi2_per_dof_does_not_reward_lighter_tails_than_the_truths():
    """The spread term took the generated set's Var(log s^2) with the truth's excess kurtosis: summaries of the
    truth's mean and variance but lighter tails (a two-point law against a Student t) scored 0.82 per dof, below
    an independent draw of the truth process (1.09). Each set's own kurtosis now: no law of independent maps (each a
    function of its own latent, as the re-run check holds them), lighter or heavier tailed, scores below it."""
    rng = np.random.default_rng(6)
    n, d = 300, 10

    def t6(size: tuple[int, int]) -> np.ndarray:  # unit variance, excess kurtosis 3
        return rng.standard_t(6, size) / np.sqrt(1.5)

    def few_carry_all(size: tuple[int, int]) -> np.ndarray:  # unit variance, carried by 1 in 75 maps (drawn alone)
        return rng.choice([-1.0, 1.0], size) * np.sqrt(75.0) * (rng.random(size[0]) < 1 / 75)[:, None]

    scores: dict[str, list[float]] = {"t6": [], "two-point": [], "heavy": []}
    for _ in range(60):
        truth = t6((n, d))
        scores["t6"].append(chi2_per_dof(t6((n, d)), truth).per_dof)
        scores["two-point"].append(chi2_per_dof(rng.choice([-1.0, 1.0], (n, d)), truth).per_dof)
        scores["heavy"].append(chi2_per_dof(few_carry_all((n, d)), truth).per_dof)
    honest, light, heavy = (np.mean(v) for v in scores.values())
    assert honest == pytest.approx(1.0, abs=0.1) and light > 0.95 and heavy > 0.95, (honest, light, heavy)


def test_cl_rel_diff_is_the_mean_over_l_bins() -> None:
    """The mean over bins of |<C_gen> / <C_truth> - 1| (it was one ratio of sums, which the first bins dominate)."""
    from skybench.tasks.generate.metrics import cl_mean_abs_rel_diff

    truth = np.array([[100.0, 10, 1, 0.1], [100.0, 10, 1, 0.1]])
    assert cl_mean_abs_rel_diff(truth * [1, 1, 2, 2], truth) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="per-map spectra"):
        cl_mean_abs_rel_diff(truth.mean(axis=0), truth.mean(axis=0))


def summaries(maps: np.ndarray) -> np.ndarray:
    s = 0.45  # about the truth maps' standard deviation
    cl = power_spectrum(maps, SIZE, ell_bins(N, SIZE, 6)).cl
    peaks = peak_counts(maps, np.array([-1, 0.5, 1, 2, 10]) * s)
    v0, v1, v2 = minkowski(maps, np.linspace(-1, 2, 4) * s)
    return np.c_[np.log(cl), peaks, v0, v1, v2]


def test_chi2_on_maps_separates_a_gaussian_field_from_the_skewed_truth():
    truth, again = summaries(lognormal_maps(200, 5)), summaries(lognormal_maps(100, 6))
    assert 0.2 < chi2_per_dof(again, truth).per_dof < 2.5
    gauss = smooth_gaussian_maps(100, 7)
    gauss *= lognormal_maps(50, 8).std() / gauss.std()  # same variance, no skewness
    assert chi2_per_dof(summaries(gauss), truth).per_dof > 10


def test_memorisation_check_catches_copies_shifted_flipped_and_noisy():
    train, heldout, fresh = lognormal_maps(60, 10), lognormal_maps(60, 11), lognormal_maps(40, 12)
    honest = memorisation_check(fresh, train, heldout)
    assert not honest.flagged and honest.median_ratio > 0.8
    rng = np.random.default_rng(0)
    copies = train[rng.integers(0, len(train), 40)]
    assert memorisation_check(copies, train, heldout).flagged
    moved = np.stack([np.roll(m, (int(rng.integers(N)), int(rng.integers(N))), axis=(0, 1)) for m in copies])
    moved[::2] = moved[::2, ::-1]  # mirrored
    moved[1::4] = np.rot90(moved[1::4], axes=(1, 2))
    check = memorisation_check(moved, train, heldout)
    assert check.flagged, check
    noisy = copies + 0.2 * copies.std() * rng.standard_normal(copies.shape)
    assert memorisation_check(noisy, train, heldout).flagged
    # half the batch copied is still caught
    assert memorisation_check(np.concatenate([copies[:20], fresh[:20]]), train, heldout).flagged


def test_memorisation_check_passes_honest_and_biased_generators_whose_votes_share_hubs():
    """Honest generators, right or wrong, must not be flagged: the truth process, a Gaussian field of the same
    variance, and a biased one (half the amplitude) whose maps all have the same few low-amplitude training or
    held-out maps as nearest neighbours. The last gives the training maps more votes than their share (hubs that
    happen to be training maps), which a binomial test of independent votes flags (p ~ 1e-6); the test of the
    distinct neighbours knows that a few hubs carry the votes."""
    train, heldout = lognormal_maps(150, 10), lognormal_maps(100, 11)
    scale = lognormal_maps(20, 99).std()
    for seed in (20, 21, 22):
        fresh = lognormal_maps(100, seed)
        gauss = smooth_gaussian_maps(100, seed + 50)
        gauss *= scale / gauss.std()
        for name, gen in (("truth", fresh), ("gaussian", gauss), ("half amplitude", 0.5 * fresh)):
            check = memorisation_check(gen, train, heldout)
            assert not check.flagged and check.p_value > 0.01, (name, seed, check)
        biased = memorisation_check(0.5 * fresh, train, heldout)
        assert biased.neighbours < 40 and biased.closer_to_train > biased.expected + 0.15, biased
        assert stats.binomtest(round(biased.closer_to_train * 100), 100, biased.expected,
                               alternative="greater").pvalue < 1e-4  # what the binomial test would have said


def test_memorisation_check_catches_copies_among_biased_maps_and_of_a_few_maps():
    """Copies still stand out when the rest of the batch votes for hubs, and a copier of 40 distinct training
    maps, each twice with a little noise, is caught by the votes of distinct maps (its repeats by the collapse
    check)."""
    train, heldout = lognormal_maps(150, 10), lognormal_maps(100, 11)
    rng = np.random.default_rng(3)
    copies = train[rng.choice(len(train), 40, replace=False)]
    mixed = np.concatenate([copies, 0.5 * lognormal_maps(60, 30)])
    check = memorisation_check(mixed, train, heldout)
    assert check.flagged and check.p_value < 1e-4, check
    twice = np.concatenate([copies, copies]) + 0.1 * copies.std() * rng.standard_normal((80, N, N))
    check = memorisation_check(twice, train, heldout)
    assert check.flagged and check.p_value < 1e-6 and check.train_neighbours >= 39, check


def test_memorisation_check_catches_copies_beside_a_map_equally_near_every_map():
    """A map of 1e20 (DC and Nyquist modes only, so no C_l bin and no peak sees it) is, in float64, exactly as near
    to every public and held-out map, in pixels and in Fourier amplitudes: had it shared its vote among them all,
    every map of the union would be a distinct neighbour (p = 1), and one such map would hide any number of
    copies. A generated map names one neighbour, however many are tied."""
    train, heldout = lognormal_maps(60, 10), lognormal_maps(60, 11)
    rng = np.random.default_rng(0)
    copies = train[rng.permutation(len(train))[:40]]
    bomb = np.full((1, N, N), 1e20)
    bomb[0, 1::2] = -1e20 / 3  # rows alternate: V0 is 1/2 at every threshold, no gradient in range
    for extra in (bomb, np.full((1, N, N), -1e20)):
        check = memorisation_check(np.concatenate([copies, extra]), train, heldout)
        assert check.flagged and check.neighbours <= 41, check
    fresh = lognormal_maps(40, 12)
    check = memorisation_check(np.concatenate([fresh, bomb]), train, heldout)
    assert not check.flagged, check


def test_memorisation_p_value_is_hypergeometric_in_the_distinct_neighbours():
    """Known answers: generated maps that are k training and D - k held-out maps (each its own nearest
    neighbour) give the hypergeometric tail of k of D; all votes for one training map, a p-value of ~1."""
    train, heldout = lognormal_maps(60, 10), lognormal_maps(40, 11)
    for k in (12, 15, 19):
        gen = np.concatenate([train[:k], heldout[: 20 - k]])
        check = memorisation_check(gen, train, heldout)
        exact = min(1.0, 2 * stats.hypergeom.sf(k - 1, 100, 60, 20))
        assert check.neighbours == 20 and check.train_neighbours == k, check
        assert check.p_value == pytest.approx(exact, rel=1e-9), (k, check.p_value, exact)
    one = memorisation_check(np.repeat(train[:1], 30, axis=0), train, heldout)
    assert one.closer_to_train == 1 and one.neighbours == 1 and not one.flagged and one.p_value == 1.0, one


def test_collapse_check_catches_repeated_maps_but_not_a_weaker_amplitude():
    truth, fresh = lognormal_maps(60, 20), lognormal_maps(60, 21)
    edges = ell_bins(N, SIZE, 6)
    assert not collapse_check(fresh, truth, SIZE, edges).flagged
    assert not collapse_check(0.5 * fresh, truth, SIZE, edges).flagged  # wrong, but not collapsed
    one = np.repeat(fresh[:1], 60, axis=0)
    assert collapse_check(one, truth, SIZE, edges).flagged
    rng = np.random.default_rng(1)
    rolled = np.stack([np.roll(fresh[0], (int(rng.integers(N)), int(rng.integers(N))), axis=(0, 1)) for _ in range(60)])
    c = collapse_check(rolled, truth, SIZE, edges)
    assert c.flagged and c.median_variance_ratio < 1e-6
    few = np.tile(fresh[:5], (12, 1, 1))  # five maps repeated: the C_l scatter looks fine, the duplicates do not
    c = collapse_check(few, truth, SIZE, edges)
    assert c.flagged and c.duplicate_ratio < 0.1


def test_maps_are_validated():
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_maps(np.full((2, 1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="shape"):
        as_maps(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="shape"):
        as_maps(np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="hold no Fourier mode"):
        ell_bins(N, SIZE, 200)
    assert stats.skew(lognormal_maps(4, 0).ravel()) > 0.5


def test_the_chi2_interval_is_bias_corrected_so_it_holds_its_own_point_estimate() -> None:
    """Resampling the generated maps duplicates rows, which inflates a chi^2 of their mean: the plain percentile
    interval of an honest generator lies above its own chi^2, the bias-corrected one brackets it."""
    from skybench.common import bootstrap_ci
    from skybench.tasks.generate.metrics import chi2_per_dof

    missed, held = 0, 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        truth, gen = rng.normal(size=(400, 40)), rng.normal(size=(100, 40))  # the same process, 40 summaries
        rows = np.arange(len(gen))
        point = chi2_per_dof(gen, truth).per_dof

        def chi2(r: np.ndarray, gen: np.ndarray = gen, truth: np.ndarray = truth) -> float:
            return chi2_per_dof(gen[r], truth).per_dof

        low, high = bootstrap_ci(chi2, rows, n_resamples=200, seed=seed)
        missed += not low <= point <= high
        low, high = bootstrap_ci(chi2, rows, n_resamples=200, seed=seed, bias_corrected=True)
        held += low <= point <= high
    assert missed == 6 and held == 6


def test_the_binned_pdf_distances_behind_the_intervals_see_the_tails() -> None:
    """The intervals of pdf_ks and pdf_w1 come from binned distances: W1 was integrated between the truth's inner
    quantile edges only, so pixels beyond them counted for nothing. A Gaussian field of the truth's variance had W1
    10% above its own interval, and maps wrong only in their top 0.1% of pixels an interval of honest maps."""
    from skybench.tasks.generate.metrics import pdf_distances
    from skybench.tasks.generate.score import _BinnedPdf

    truth, honest = lognormal_maps(40, 1), lognormal_maps(40, 2)
    gauss = smooth_gaussian_maps(40, 3)
    gauss = (gauss - gauss.mean()) / gauss.std() * truth.std() + truth.mean()
    tails = honest.copy()
    tails[honest > np.quantile(truth, 0.999)] *= 3
    rows = np.arange(40)
    for gen in (honest, gauss, tails, honest + 0.05):
        ks, w1 = pdf_distances(gen, truth)
        binned_ks, binned_w1 = _BinnedPdf.of(gen, truth).distances(rows)
        assert binned_ks == pytest.approx(ks, abs=2e-3) and binned_w1 == pytest.approx(w1, rel=0.02), (ks, w1)


def test_invariant_features_are_kept_by_content_never_stale() -> None:
    """The cache the leaderboard's flags share between entries: same content, same (read-only) features; changed
    content, recomputed ones."""
    from skybench.tasks.generate.metrics import _invariant_features, invariant_features

    maps = np.random.default_rng(3).normal(size=(5, 16, 16))
    first = invariant_features(maps)
    assert not first.flags.writeable
    assert invariant_features(maps.copy()) is first  # another array, the same content
    np.testing.assert_array_equal(first, _invariant_features(maps, 16))
    maps[2, 3, 4] += 1.0  # changed in place: never the stale features
    np.testing.assert_array_equal(invariant_features(maps), _invariant_features(maps, 16))
    assert not np.array_equal(invariant_features(maps), first)



def test_collapse_check_is_not_passed_by_a_bin_without_power():
    """Maps of period n/2 have every odd Fourier mode exactly 0, so no power in the lowest C_l bin: its variance
    ratio was 0/0 = NaN, the median NaN, and a collapsed set (the same power in every map) passed unflagged."""
    truth = lognormal_maps(60, 20)
    edges = ell_bins(N, SIZE, 6)
    rng = np.random.default_rng(2)
    h = N // 2
    k = np.hypot(np.fft.fftfreq(h)[:, None] * h, np.fft.rfftfreq(h)[None, :] * h)
    shell = np.floor(k).astype(int)
    amp = np.where(k > 0, (k + 1.0) ** -1.5, 0.0)
    tiles = []
    for _ in range(60):  # the same power in every shell of every map, spread differently over its modes
        w = rng.exponential(size=k.shape)
        for s in np.unique(shell):
            w[shell == s] /= w[shell == s].mean()
        tiles.append(np.fft.irfft2(amp * np.sqrt(w) * np.exp(2j * np.pi * rng.random(k.shape)), s=(h, h)))
    collapsed = np.asarray(tiles)
    periodic = np.tile(collapsed, (1, 2, 2)).astype(np.float32)
    assert np.all(power_spectrum(periodic, SIZE, edges).cl[:, 0] == 0)
    c = collapse_check(periodic, truth, SIZE, edges)
    assert c.duplicate_ratio > 0.5 and c.flagged and c.median_variance_ratio < 0.5, c
