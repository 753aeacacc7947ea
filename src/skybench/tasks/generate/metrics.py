"""Summary statistics and scores of convergence maps (the ``generate`` task): how cosmologists judge an emulator.

Maps are ``(N, H, W)`` or ``(N, 1, H, W)``, square, periodic. Every statistic is computed per map (rows), so a
bootstrap over maps (:func:`skybench.common.bootstrap_ci`) can resample them.

- :func:`power_spectrum`: azimuthally binned C_l with the simulator's normalisation;
- :func:`pdf_distances`: one-point pixel PDF, Kolmogorov-Smirnov and Wasserstein-1;
- :func:`peak_counts`: local maxima (8 periodic neighbours) per height bin;
- :func:`minkowski`: V0, V1, V2 per threshold (finite differences);
- :class:`SummaryBins` and :func:`chi2_per_dof`: the concatenated summary vector (C_l, peaks, V0, V1, V2), its
  mean (with the truth covariance, Hartlap factor) and spread against the truth's: the primary score;
- :func:`memorisation_check` and :func:`collapse_check`: copying the training set, mode collapse.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import stats

CHUNK = 256  # maps per vectorised block: bounds the memory of the statistics of thousands of maps

# ---------------------------------------------------------------------------------------------------- inputs


def as_maps(maps: np.ndarray, name: str = "maps") -> np.ndarray:
    """``(N, H, W)`` float64 from ``(N, H, W)`` or ``(N, 1, H, W)``; square, finite, at least one map."""
    a = np.asarray(maps)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] != a.shape[2]:
        raise ValueError(f"{name}: expected maps of shape (N, 1, n, n) or (N, n, n) with N >= 1, got {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name}: expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} pixels are NaN or infinite")
    return a


# ---------------------------------------------------------------------------------------------- power spectrum


def ell_of_modes(n_pix: int, size_deg: float) -> np.ndarray:
    """|l| of the ``numpy.fft.rfft2`` modes of an ``n_pix`` map of side ``size_deg``."""
    d = np.deg2rad(size_deg) / n_pix
    ky = 2 * np.pi * np.fft.fftfreq(n_pix, d=d)
    kx = 2 * np.pi * np.fft.rfftfreq(n_pix, d=d)
    return np.hypot(ky[:, None], kx[None, :])


def _rfft_weights(n_pix: int) -> np.ndarray:
    """How many modes of the full plane each rfft2 column stands for: 1 for kx = 0 and Nyquist, else 2."""
    w = np.full(n_pix // 2 + 1, 2.0)
    w[0] = 1.0
    if n_pix % 2 == 0:
        w[-1] = 1.0
    return np.broadcast_to(w, (n_pix, n_pix // 2 + 1))


def ell_bins(n_pix: int, size_deg: float, n_bins: int, spacing: str = "log") -> np.ndarray:
    """Bin edges from the fundamental mode 2 pi / L to the axis Nyquist frequency (excluded), every bin holding
    at least one mode."""
    # l = 2 pi fftfreq(N, d = L / N): fundamental 2 pi / L, axis Nyquist pi N / L (flat periodic map)
    l_f = 2 * np.pi / np.deg2rad(size_deg)
    lo, hi = l_f * 0.999, l_f * (n_pix / 2 - 1e-6)  # the axis Nyquist modes (real, unpaired) stay out
    edges = np.geomspace(lo, hi, n_bins + 1) if spacing == "log" else np.linspace(lo, hi, n_bins + 1)
    counts = np.histogram(ell_of_modes(n_pix, size_deg), edges)[0]
    if (counts == 0).any():
        raise ValueError(f"ell_bins: {int((counts == 0).sum())} of {n_bins} {spacing} bins hold no Fourier mode "
                         f"of a {n_pix}-pixel map; use fewer bins or linear spacing")
    return edges


@dataclass(frozen=True)
class PowerSpectrum:
    ell: np.ndarray  # (B,) mode-weighted mean |l| per bin
    cl: np.ndarray  # (N, B) per map
    n_modes: np.ndarray  # (B,) modes of the full Fourier plane per bin (each pair l, -l counts twice)
    edges: np.ndarray  # (B + 1,)


def bin_grid(values: np.ndarray, n_pix: int, size_deg: float, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode-weighted means over the bins of ``values`` on the rfft2 grid (``(..., n, n // 2 + 1)``), and the
    number of full-plane modes per bin."""
    ell = ell_of_modes(n_pix, size_deg)
    idx = np.digitize(ell, edges) - 1  # bin of each mode; -1 or B: outside
    w = _rfft_weights(n_pix)
    n_b = len(edges) - 1
    inside = (idx >= 0) & (idx < n_b)
    onehot = np.zeros((n_b, *ell.shape))
    onehot[(idx[inside], *np.nonzero(inside))] = w[inside]
    n_modes = onehot.sum(axis=(1, 2))
    if (n_modes == 0).any():
        raise ValueError(f"bin_grid: bins {np.flatnonzero(n_modes == 0).tolist()} hold no Fourier mode")
    binned = np.tensordot(values, onehot, axes=([-2, -1], [1, 2])) / n_modes
    return binned, n_modes


def power_spectrum(maps: np.ndarray, size_deg: float, edges: np.ndarray) -> PowerSpectrum:
    """Binned C_l of each map: C = pixel_area^2 |rfft2|^2 / map area (the flat-sky estimator with numpy's
    unnormalised FFT; :func:`skybench.tasks.generate.simulator.grid_correlation` is its inverse)."""
    # P = |Delta^2 fft2(kappa)|^2 / L^2 averaged in annuli of |l| (flat-sky estimator, e.g. LensTools
    # ConvergenceMap.powerSpectrum)
    m = as_maps(maps)
    n = m.shape[-1]
    d = np.deg2rad(size_deg) / n
    parts = []
    for s in range(0, m.shape[0], CHUNK):  # bounded memory for thousands of maps
        p = np.abs(np.fft.rfft2(m[s : s + CHUNK])) ** 2 * d**2 / n**2  # d^4 |F|^2 / (n d)^2
        cl, n_modes = bin_grid(p, n, size_deg, edges)
        parts.append(cl)
    cl = np.concatenate(parts)
    ell, _ = bin_grid(ell_of_modes(n, size_deg), n, size_deg, edges)
    return PowerSpectrum(ell=ell, cl=cl, n_modes=n_modes, edges=np.asarray(edges))


def cl_mean_abs_rel_diff(gen_cl: np.ndarray, truth_cl: np.ndarray) -> float:
    """Mean over l bins of |<C_gen> / <C_truth> - 1|, from the per-map spectra ``(N, bins)`` of each set."""
    # the relative difference of the mean spectra, by which Mustafa et al. 2019 (CosmoGAN) compare power spectra
    g, t = np.asarray(gen_cl), np.asarray(truth_cl)
    if g.ndim != 2 or t.ndim != 2 or g.shape[1] != t.shape[1]:
        raise ValueError(f"cl_mean_abs_rel_diff: per-map spectra (N, bins) expected, got {g.shape} and {t.shape}")
    return float(np.mean(np.abs(g.mean(axis=0) / t.mean(axis=0) - 1)))


# ------------------------------------------------------------------------------------------------------- PDF


def pdf_distances(gen: np.ndarray, truth: np.ndarray, max_pixels: int | None = 4_000_000, seed: int = 0
                  ) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic and Wasserstein-1 distance between the pooled pixel values; a set with more
    than ``max_pixels`` pixels is subsampled (uniformly, without replacement, seeded)."""
    rng = np.random.default_rng(seed)

    def pooled(maps: np.ndarray, name: str) -> np.ndarray:
        x = as_maps(maps, name).ravel()
        return x if max_pixels is None or x.size <= max_pixels else rng.choice(x, max_pixels, replace=False)

    g, t = pooled(gen, "gen"), pooled(truth, "truth")
    return float(stats.ks_2samp(g, t).statistic), float(stats.wasserstein_distance(g, t))


# ----------------------------------------------------------------------------------------------------- peaks


def peak_mask(maps: np.ndarray) -> np.ndarray:
    """Pixels strictly above all 8 neighbours (periodic boundaries)."""
    # LensTools lenstools/extern/peaks.c (a pixel greater than its 8 neighbours, periodic wrap)
    m = as_maps(maps)
    mask = np.ones(m.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                mask &= m > np.roll(m, (dy, dx), axis=(1, 2))
    return mask


def _per_map_histogram(values: np.ndarray, rows: np.ndarray, n_rows: int, edges: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """(n_rows, B) histograms of ``values`` (row ``rows[i]`` each) over ``edges``; outside values dropped."""
    b = np.searchsorted(edges, values, side="right") - 1
    ok = (b >= 0) & (b < len(edges) - 1)
    n_b = len(edges) - 1
    flat = rows[ok] * n_b + b[ok]
    w = None if weights is None else weights[ok]
    return np.bincount(flat, weights=w, minlength=n_rows * n_b).reshape(n_rows, n_b)


def peak_counts(maps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, B) number of peaks per map whose height falls in each bin of ``edges`` (map units)."""
    m = as_maps(maps)
    mask = peak_mask(m)
    rows = np.nonzero(mask)[0]
    return _per_map_histogram(m[mask], rows, m.shape[0], np.asarray(edges, dtype=float)).astype(float)


# ------------------------------------------------------------------------------------- Minkowski functionals


def minkowski(maps: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """V0, V1, V2 (each ``(N, T)``) at equally spaced ``thresholds`` (map units); lengths in pixels.

    V0 = area fraction at or above the threshold, V1 = boundary length / (4 area), V2 = integrated boundary curvature
    / (2 pi area), from central finite differences (periodic; the second derivatives are the first applied twice,
    a +-2-pixel stencil, as LensTools' ``extern/differentials.c``); the delta function on the contour is a bin of
    one threshold step around each threshold.
    """
    # Kratochvil et al. 2012, PRD 85, 103513, eqs. (5)-(7); Matsubara 2010, PRD 81, 083505
    m = as_maps(maps)
    nu = np.asarray(thresholds, dtype=float)
    if nu.ndim != 1 or len(nu) < 2 or not np.allclose(np.diff(nu), nu[1] - nu[0], rtol=1e-6) or nu[1] <= nu[0]:
        raise ValueError("minkowski: thresholds must be at least 2 increasing, equally spaced values")
    blocks = [_minkowski_block(m[s : s + CHUNK], nu) for s in range(0, m.shape[0], CHUNK)]
    v0, v1, v2 = (np.concatenate([b[i] for b in blocks]) for i in range(3))
    return v0, v1, v2


def _minkowski_block(m: np.ndarray, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    step = nu[1] - nu[0]
    n, npix = m.shape[0], m.shape[1] * m.shape[2]

    def shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:  # a(y + dy, x + dx)
        return np.roll(a, (-dy, -dx), axis=(1, 2))

    # LensTools extern/differentials.c: central differences, the second derivatives those applied twice (+-2 px)
    kx = (shift(m, 0, 1) - shift(m, 0, -1)) / 2
    ky = (shift(m, 1, 0) - shift(m, -1, 0)) / 2
    kxx = (shift(m, 0, 2) + shift(m, 0, -2) - 2 * m) / 4
    kyy = (shift(m, 2, 0) + shift(m, -2, 0) - 2 * m) / 4
    kxy = (shift(m, 1, 1) - shift(m, 1, -1) - shift(m, -1, 1) + shift(m, -1, -1)) / 4
    grad2 = kx**2 + ky**2
    curv = np.divide(2 * kx * ky * kxy - kx**2 * kyy - ky**2 * kxx, grad2, out=np.zeros_like(m), where=grad2 > 0)

    rows = np.repeat(np.arange(n), npix)
    flat = m.ravel()
    # V0: fraction at or above each threshold
    below = _per_map_histogram(flat, rows, n, np.concatenate([[-np.inf], nu]))  # counts <= ... per gap
    v0 = 1.0 - np.cumsum(below, axis=1) / npix
    centred = np.concatenate([nu - step / 2, [nu[-1] + step / 2]])
    v1 = _per_map_histogram(flat, rows, n, centred, np.sqrt(grad2).ravel()) / (4 * npix * step)
    v2 = _per_map_histogram(flat, rows, n, centred, curv.ravel()) / (2 * np.pi * npix * step)
    return v0, v1, v2


# -------------------------------------------------------------------------------------------- the chi^2 score


@dataclass(frozen=True)
class Chi2:
    chi2: float  # of the mean summary vector (D degrees of freedom)
    spread: float  # of the log-variance of each summary component (D degrees of freedom)
    dof: int
    per_dof: float  # (chi2 + spread) / 2D: 1 is perfect
    hartlap: float  # the factor applied to the inverse covariance


def _log_var_moments(n: int) -> tuple[float, float]:
    """(E[log s^2] - log sigma^2, Var[log s^2]) of the sample variance of ``n`` Gaussian draws: s^2 ~ sigma^2
    chi^2_{n-1} / (n - 1), and E, Var of log chi^2_k are psi(k/2) + log 2, psi'(k/2) (Bartlett & Kendall 1946)."""
    from scipy.special import digamma, polygamma

    k = (n - 1) / 2
    return float(digamma(k) - np.log(k)), float(polygamma(1, k))


@dataclass(frozen=True)
class TruthVectors:
    """What :func:`chi2_per_dof` needs of the truth's summary vectors, computed once (a bootstrap resamples the
    generated maps only, against the same truth)."""

    n: int
    mu: np.ndarray  # (D,) mean
    sd: np.ndarray  # (D,) standard deviation
    corr: np.ndarray  # (D, D) correlation of the standardised vectors
    excess: np.ndarray  # (D,) excess kurtosis, at least -2
    log_var: tuple[float, float]  # _log_var_moments(n)

    @classmethod
    def of(cls, truth: np.ndarray) -> TruthVectors:
        t = np.atleast_2d(np.asarray(truth, float))
        n_t, d = t.shape
        if n_t < d + 3:
            raise ValueError(f"chi2_per_dof: {n_t} truth maps cannot estimate a {d}x{d} covariance; need >= {d + 3}")
        if not np.isfinite(t).all():
            raise ValueError("chi2_per_dof: summary vectors must be finite")
        mu, sd = t.mean(axis=0), t.std(axis=0, ddof=1)
        if (sd == 0).any():
            raise ValueError(f"chi2_per_dof: summary components {np.flatnonzero(sd == 0).tolist()} do not vary over "
                             "the truth maps (e.g. an empty peak or threshold bin); choose bins from the truth maps")
        z_t = (t - mu) / sd  # standardised: solve with the correlation matrix, better conditioned
        corr = np.cov(z_t, rowvar=False, ddof=1).reshape(d, d)
        excess = np.maximum(stats.kurtosis(z_t, axis=0, fisher=True, bias=False), -2.0)
        return cls(n_t, mu, sd, corr, excess, _log_var_moments(n_t))


def chi2_per_dof(gen: np.ndarray, truth: np.ndarray | TruthVectors) -> Chi2:
    """chi^2 of the generated maps' summary vectors against the truth maps', in their mean and in their spread.

    ``gen`` (Ng, D) and ``truth`` (Nt, D) are per-map summary vectors (e.g. C_l bins, peak counts, Minkowski
    functionals concatenated). The mean: the difference of the two means has covariance C (1/Ng + 1/Nt); C is
    estimated from ``truth`` and its inverse debiased by the Hartlap factor (Nt - D - 2) / (Nt - 1). The mean's
    chi^2 alone falls as the generated maps' spread shrinks (a generator at the truth's mean with no spread scores
    0.5 per dof), so the spread enters too: per component, the difference of the log sample variances, less its
    small-sample bias, over its standard deviation (Gaussian, plus each set's excess kurtosis: Var s^2 / sigma^4
    = 2 / (n - 1) + (beta - 3) / n), squared and summed. An independent draw of the truth process scores 1 per
    dof on average; too little or too much spread, or a wrong mean, scores more.
    """
    # Hartlap, Simon & Schneider 2007, A&A 464, 399, eq. (17)
    tv = truth if isinstance(truth, TruthVectors) else TruthVectors.of(truth)
    g = np.atleast_2d(np.asarray(gen, float))
    (n_g, d), n_t = g.shape, tv.n
    if len(tv.mu) != d:
        raise ValueError(f"chi2_per_dof: gen has {d} summary components, truth {len(tv.mu)}")
    if n_g < 2:
        raise ValueError("chi2_per_dof: one generated map has no spread; need >= 2")
    if not np.isfinite(g).all():
        raise ValueError("chi2_per_dof: summary vectors must be finite")
    diff = (g.mean(axis=0) - tv.mu) / tv.sd
    hartlap = (n_t - d - 2) / (n_t - 1)
    chi2 = hartlap * float(diff @ np.linalg.solve(tv.corr, diff)) / (1 / n_g + 1 / n_t)
    # the spread: log(s_g^2 / s_t^2) per component; a generated component with no spread is 1e-12 of the truth's
    (bias_g, var_g), (bias_t, var_t) = _log_var_moments(n_g), tv.log_var
    ratio = np.maximum((g.std(axis=0, ddof=1) / tv.sd) ** 2, 1e-12)
    # each set's own excess kurtosis: with the truth's for both, lighter tails than the truth's (same mean and
    # variance) scored below an independent draw of the truth process (0.82 per dof for a two-point law). The maps
    # are independent draws (each a function of its own latent: the re-run check), so the estimate holds; a set
    # built as a whole (4 maps carrying all the spread) would score 0.5, which that check refuses.
    excess_g = tv.excess if n_g < 4 else np.maximum(np.nan_to_num(
        stats.kurtosis(g, axis=0, fisher=True, bias=False), nan=0.0), -2.0)
    z = (np.log(ratio) - bias_g + bias_t) / np.sqrt(var_g + var_t + excess_g / n_g + tv.excess / n_t)
    spread = float(np.sum(z**2))
    return Chi2(chi2=chi2, spread=spread, dof=d, per_dof=(chi2 + spread) / (2 * d), hartlap=hartlap)


@dataclass(frozen=True)
class SummaryBins:
    """The bins of the summary vector, fixed from the truth maps so that every component varies over them."""

    size_deg: float
    ell_edges: np.ndarray
    peak_edges: np.ndarray  # map units; the outer edges are -inf and +inf
    thresholds: np.ndarray  # map units, equally spaced

    @classmethod
    def from_truth(cls, truth: np.ndarray, size_deg: float, n_ell: int = 8, n_peaks: int = 6,
                   n_thresholds: int = 8, spacing: str = "log") -> SummaryBins:
        """C_l bins from :func:`ell_bins`; peak-height bins holding equal numbers of the truth's peaks; Minkowski
        thresholds equally spaced between the truth's 1st and 99th pixel percentiles."""
        t = as_maps(truth, "truth")
        heights = t[peak_mask(t)]
        if len(heights) < n_peaks:
            raise ValueError(f"SummaryBins: the truth maps have {len(heights)} peaks, fewer than {n_peaks} bins")
        inner = np.quantile(heights, np.linspace(0, 1, n_peaks + 1)[1:-1])
        lo, hi = np.quantile(t, [0.01, 0.99])
        return cls(size_deg=size_deg, ell_edges=ell_bins(t.shape[-1], size_deg, n_ell, spacing),
                   peak_edges=np.r_[-np.inf, inner, np.inf], thresholds=np.linspace(lo, hi, n_thresholds))

    @property
    def slices(self) -> dict[str, slice]:
        """Where each statistic sits in a summary vector (for a chi^2 of one statistic alone)."""
        sizes = {"cl": len(self.ell_edges) - 1, "peaks": len(self.peak_edges) - 1, "v0": len(self.thresholds),
                 "v1": len(self.thresholds), "v2": len(self.thresholds)}
        ends = np.cumsum(list(sizes.values()))
        return {k: slice(int(e - n), int(e)) for (k, n), e in zip(sizes.items(), ends, strict=True)}

    def vectors(self, maps: np.ndarray) -> np.ndarray:
        """(N, D) per-map summary vectors: binned C_l, peak counts, V0, V1, V2 (the primary score's input)."""
        m = as_maps(maps)
        v0, v1, v2 = minkowski(m, self.thresholds)
        return np.concatenate([power_spectrum(m, self.size_deg, self.ell_edges).cl, peak_counts(m, self.peak_edges),
                               v0, v1, v2], axis=1)


# ---------------------------------------------------------------------------------- memorisation and collapse


def content_key(a: np.ndarray, *extra: object) -> tuple[object, ...]:
    """A key of an array's content (digest, shape, dtype) and ``extra``: for caches of what depends on it only."""
    c = np.ascontiguousarray(a)
    return (hashlib.blake2b(c.tobytes(), digest_size=16).digest(), c.shape, c.dtype.str, *extra)


_FEATURES: dict[tuple[object, ...], np.ndarray] = {}
_FEATURES_KEPT = 8


def invariant_features(maps: np.ndarray, k_max: int = 16) -> np.ndarray:
    """(N, 4, F) Fourier amplitudes |FFT| of the modes |k_x|, |k_y| <= ``k_max`` under the 4 symmetries that
    matter for a real square map (identity, transpose, mirror, both): equal for periodic translations, mirrors
    and 90-degree rotations of a map, so a shifted or flipped copy is still a copy.

    Read-only and kept for the last few map sets (by content): the public and truth maps' features are the same
    for every entry the leaderboard's flags check (:func:`memorisation_check`, :func:`collapse_check`)."""
    m = as_maps(maps)
    key = content_key(m, k_max)
    if (hit := _FEATURES.get(key)) is not None:
        return hit
    out = _invariant_features(m, k_max)
    out.flags.writeable = False
    if len(_FEATURES) >= _FEATURES_KEPT:
        _FEATURES.pop(next(iter(_FEATURES)))
    _FEATURES[key] = out
    return out


def _invariant_features(m: np.ndarray, k_max: int) -> np.ndarray:
    n = m.shape[-1]
    k = min(k_max, n // 2 - 1)
    idx = np.r_[0 : k + 1, n - k : n]  # ky, kx = 0..k, -k..-1
    a = np.abs(np.fft.fft2(m))[:, idx][:, :, idx]
    mirror = np.r_[0, np.arange(2 * k, 0, -1)]  # kx -> -kx in that ordering
    variants = [a, a.transpose(0, 2, 1), a[:, :, mirror], a[:, :, mirror].transpose(0, 2, 1)]
    return np.stack(variants, axis=1).reshape(m.shape[0], 4, -1)


def _sq_distances(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``x`` (n, V, F) and ``b`` (m, F): (n, V, m)."""
    xx = np.einsum("ivf,ivf->iv", x, x)
    bb = np.einsum("jf,jf->j", b, b)
    xb = (x.reshape(-1, x.shape[-1]) @ b.T).reshape(x.shape[0], x.shape[1], b.shape[0])  # one BLAS gemm
    return np.maximum(xx[:, :, None] + bb[None, None, :] - 2 * xb, 0.0)


def _nn_distance(a: np.ndarray, b: np.ndarray, exclude_self: bool = False, chunk: int = 256) -> np.ndarray:
    """Euclidean distance of each row of ``a`` ((Na, F) or (Na, V, F): minimum over variants V) to its nearest
    row of ``b`` (Nb, F); with ``exclude_self``, ``a`` and ``b`` are the same set and row i skips itself."""
    a3 = a if a.ndim == 3 else a[:, None]
    b2 = b.reshape(b.shape[0], -1)
    out = np.empty(a3.shape[0])
    for s in range(0, a3.shape[0], chunk):
        d2 = _sq_distances(a3[s : s + chunk], b2).min(axis=1)
        if exclude_self:
            r = np.arange(s, s + d2.shape[0])
            d2[r - s, r] = np.inf
        out[s : s + chunk] = d2.min(axis=1)
    return np.sqrt(out)


def _nn_votes(a: np.ndarray, refs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(Nr,) how many rows of ``a`` ((Na, F), or (Na, V, F): minimum over variants V) have each row of ``refs``
    (Nr, F) as their nearest neighbour; a row with several equally near ones votes for the first of them only.
    Not shared among them: a map of 1e20 is, in float64, exactly as near to every map (its own norm swallows
    the rest of :func:`_sq_distances`), and its shared vote would make every map a distinct neighbour (p = 1)."""
    a3 = a if a.ndim == 3 else a[:, None]
    b2 = refs.reshape(refs.shape[0], -1)
    w = np.zeros(b2.shape[0])
    for s in range(0, a3.shape[0], chunk):
        d2 = _sq_distances(a3[s : s + chunk], b2).min(axis=1)
        w += np.bincount(d2.argmin(axis=1), minlength=b2.shape[0])
    return w


@dataclass(frozen=True)
class MemorisationCheck:
    closer_to_train: float  # fraction of generated maps nearer to a training map than to any held-out map
    expected: float  # that fraction without memorisation, on average: n_train / (n_train + n_heldout)
    p_value: float  # one-sided hypergeometric, training maps among the distinct neighbours; the smaller of the
    # two distances, Bonferroni x2
    median_ratio: float  # median NN distance generated -> train / held-out truth -> train (pixel space)
    flagged: bool
    neighbours: int = 0  # distinct maps of the union that are some generated map's nearest (fewer of the two)
    train_neighbours: int = 0  # how many of those are training maps (in the same distance)
    # (observed k, its null pmf over 0..D) per distance (pixels, invariant features): to combine independent sets
    laws: tuple[tuple[int, np.ndarray], ...] = ()


def combined_p_value(parts: list[tuple[int, np.ndarray]]) -> float:
    """P(sum S >= the observed sum) for independent parts ``(observed S, pmf of S)`` (e.g. one per grid point:
    copying a little everywhere adds up)."""
    pmf = np.ones(1)
    for _, q in parts:
        pmf = np.convolve(pmf, q)
    return float(min(1.0, pmf[sum(o for o, _ in parts):].sum()))


def memorisation_check(gen: np.ndarray, train: np.ndarray, heldout: np.ndarray, alpha: float = 1e-3
                       ) -> MemorisationCheck:
    """Are the generated maps copies of the training maps?

    Each generated map's nearest neighbour in the union of the training and held-out maps (data-copying tests:
    Meehan, Chaudhuri & Dasgupta 2020, AISTATS). The statistic is how many DISTINCT training maps are someone's
    nearest neighbour: if the generator does not depend on which of the (exchangeable) truth maps were the
    training ones, the D distinct neighbours are a random draw from the union as far as the labels go, so that
    number is hypergeometric (D draws, n_train of n_train + n_heldout): an exact test. Counting votes instead is
    not binomial: in 4096 dimensions a few maps are the nearest neighbour of many (hubness), a biased generator's
    maps all vote for the same few, and when those happen to be training maps a binomial test of the votes takes
    it for copying. A copier makes many distinct training maps neighbours, which chance does not. Tested with
    pixel distances and with distances between translation/mirror-invariant Fourier amplitudes
    (:func:`invariant_features`), so a shifted copy is caught. Also reported: the fraction of votes for training
    maps, and the median distance to the training set, generated over held-out (the issue's comparison).
    """
    # Radovanovic, Nanopoulos & Ivanovic 2010, JMLR 11, 2487: hubs in high-dimensional nearest-neighbour graphs
    g, tr, ho = as_maps(gen, "gen"), as_maps(train, "train"), as_maps(heldout, "heldout")
    if not g.shape[1:] == tr.shape[1:] == ho.shape[1:]:
        raise ValueError(f"memorisation_check: map sizes differ: {g.shape[1:]}, {tr.shape[1:]}, {ho.shape[1:]}")
    n_tr, n_all = tr.shape[0], tr.shape[0] + ho.shape[0]
    is_train = np.arange(n_all) < n_tr
    union = np.concatenate([tr, ho])
    flat_g, flat_u = g.reshape(g.shape[0], -1), union.reshape(n_all, -1)
    fractions, tests = [], []
    laws: list[tuple[int, np.ndarray]] = []
    for a, b in ((flat_g, flat_u), (invariant_features(g), invariant_features(union)[:, 0])):
        votes = _nn_votes(a, b)
        fractions.append(float(votes[is_train].sum()) / g.shape[0])
        d, k = int(np.count_nonzero(votes)), int(np.count_nonzero(votes[is_train]))
        tests.append((float(stats.hypergeom.sf(k - 1, n_all, n_tr, d)), d, k))
        laws.append((k, stats.hypergeom.pmf(np.arange(d + 1), n_all, n_tr, d)))
    ratio = float(np.median(_nn_distance(flat_g, flat_u[is_train])) /
                  np.median(_nn_distance(ho.reshape(ho.shape[0], -1), flat_u[is_train])))
    p_min, d, k = min(tests)
    p = min(1.0, 2 * p_min)
    return MemorisationCheck(closer_to_train=max(fractions), expected=n_tr / n_all, p_value=p, median_ratio=ratio,
                             flagged=p < alpha, neighbours=d, train_neighbours=k,
                             laws=tuple(laws))


@dataclass(frozen=True)
class CollapseCheck:
    cl_variance_ratio: np.ndarray  # (B,) map-to-map variance of C_l / its mean^2, generated over truth
    median_variance_ratio: float
    duplicate_ratio: float  # median scale-free nearest-neighbour distance within the set, generated / truth
    flagged: bool


def _scale_free_nn(features: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance within a set (translation/mirror invariant) over the set's median distance
    between random pairs of its maps, so a generator with less power is not mistaken for a collapsed one."""
    b = features[:, 0]
    nn = _nn_distance(features, b, exclude_self=True)
    typical = np.median(np.sqrt(_sq_distances(b[:, None], b)[:, 0][np.triu_indices(len(b), k=1)]))
    return nn / typical if typical > 0 else np.zeros_like(nn)


def collapse_check(gen: np.ndarray, truth: np.ndarray, size_deg: float, edges: np.ndarray,
                   min_ratio: float = 0.5, seed: int = 0) -> CollapseCheck:
    """Mode collapse: the map-to-map (fractional) variance of C_l per bin against the truth's, and
    near-duplicates within the generated set (one map repeated, shifted or mirrored, or a few maps repeated)
    against an equally large set of truth maps. Flagged when the median variance ratio or the duplicate ratio is
    below ``min_ratio``."""
    g, t = as_maps(gen, "gen"), as_maps(truth, "truth")
    if g.shape[0] < 3 or t.shape[0] < 3:
        raise ValueError("collapse_check: needs at least 3 generated and 3 truth maps")
    cl_g, cl_t = power_spectrum(g, size_deg, edges).cl, power_spectrum(t, size_deg, edges).cl
    # fractional variances (2 / modes for a Gaussian field): a generator with the wrong amplitude is no collapse.
    # A bin where the generated maps have no power at all (e.g. maps of period n/2: every odd mode exactly 0) has
    # no variance either: 0, not 0/0, whose NaN would make the median NaN and the check pass.
    mean2_g = cl_g.mean(axis=0) ** 2
    frac_g = np.divide(cl_g.var(axis=0, ddof=1), mean2_g, out=np.zeros_like(mean2_g), where=mean2_g > 0)
    ratio = frac_g / (cl_t.var(axis=0, ddof=1) / cl_t.mean(axis=0) ** 2)
    n = min(g.shape[0], t.shape[0], 2000)  # nearest-neighbour distances depend on the set size: equal sizes
    rng = np.random.default_rng(seed)
    g_sub, t_sub = (x[rng.choice(x.shape[0], n, replace=False)] for x in (g, t))
    dup = float(np.median(_scale_free_nn(invariant_features(g_sub))) /
                np.median(_scale_free_nn(invariant_features(t_sub))))
    med = float(np.median(ratio))
    # both tests and the min_ratio = 0.5 threshold are an in-house heuristic, not a published collapse criterion
    return CollapseCheck(cl_variance_ratio=ratio, median_variance_ratio=med, duplicate_ratio=dup,
                         flagged=not (med >= min_ratio and dup >= min_ratio))  # NaN: flagged
