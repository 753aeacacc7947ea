"""Strong-lens classification metrics (Metcalf et al. 2019, A&A 625, A119, arXiv:1802.03609).

Dependency-light: numpy and scikit-learn only, no plotting. Conventions:

* an object is classified as a lens when its score ``p >= threshold``; the thresholds are the
  distinct score values, so a block of tied scores is one threshold (a lens tied with a non-lens
  is never counted as found before that non-lens);
* every ROC curve starts at (0, 0) (threshold ``+inf``, nothing selected) and ends at (1, 1)
  (threshold = lowest score, everything selected).

:func:`bootstrap_ci` is generic (any ``metric_fn(*arrays) -> float``) so that other tracks, such as
photometric redshifts, can reuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score

__all__ = [
    "UndefinedMetricError",
    "auroc",
    "average_precision",
    "bootstrap_ci",
    "completeness_by_bin",
    "lens_metrics",
    "roc_curve",
    "roc_on_grid",
    "threshold_at_fpr",
    "tpr0",
    "tpr10",
    "tpr_at_fpr",
    "tpr_at_max_fp",
]


class UndefinedMetricError(ValueError):
    """The metric is undefined for this input (e.g. only one class present).

    :func:`bootstrap_ci` skips resamples whose metric raises this error.
    """


# --------------------------------------------------------------------------- validation


def _validate(
    labels: ArrayLike, scores: ArrayLike, *, require_both: bool = True
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Check labels/scores and return them as (bool array, float64 array)."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numeric or boolean 0/1, got dtype {y.dtype}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    is_one = y == 1
    if not np.all(is_one | (y == 0)):
        bad = np.unique(y[~(is_one | (y == 0))])[:5]
        raise ValueError(f"labels must be 0 (non-lens) or 1 (lens); found other values, e.g. {bad.tolist()}")
    s = s.astype(np.float64, copy=False)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be finite; found {int(np.sum(~np.isfinite(s)))} NaN/inf value(s)")
    if require_both:
        n_pos = int(np.count_nonzero(is_one))
        if n_pos == 0 or n_pos == y.shape[0]:
            raise UndefinedMetricError(
                "both classes must be present (labels contain "
                f"{n_pos} lens(es) and {y.shape[0] - n_pos} non-lens(es))"
            )
    return is_one, s


def _counts(
    y: NDArray[np.bool_], s: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Cumulative (TP, FP, threshold) at each distinct score, descending, with a leading (0, 0, +inf)."""
    order = np.argsort(s)[::-1]
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each tie block (scores sorted descending)
    ends = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])
    ends = np.append(ends, s_sorted.shape[0] - 1)
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp = ends + 1 - tp
    zero = np.zeros(1, dtype=np.int64)
    thresholds = np.concatenate([[np.inf], s_sorted[ends]])
    return np.concatenate([zero, tp]), np.concatenate([zero, fp.astype(np.int64)]), thresholds


# --------------------------------------------------------------------------- ROC-based metrics


def roc_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Tie-aware ROC curve ``(fpr, tpr, thresholds)``, one point per distinct score.

    ``thresholds[0]`` is ``+inf`` (the (0, 0) point); the last point is (1, 1). Matches
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, s = _validate(labels, scores)
    tp, fp, thresholds = _counts(y, s)
    # Metcalf+19 Sec. 4: "TPR = TP/(TP+FN)", "FPR = FP/(FP+TN)", lens if p >= threshold
    return fp / fp[-1], tp / tp[-1], thresholds


# FPRs at which participants see the ROC curve: a fixed grid, so the table's size never depends on the scores
ROC_FPR_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def roc_on_grid(labels: ArrayLike, scores: ArrayLike,
                grid: Sequence[float] = ROC_FPR_GRID) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, tpr)``: the ROC curve sampled at the fixed FPRs ``grid``.

    At each grid FPR ``f`` the TPR is interpolated linearly between the last ROC point with ``fpr <= f`` and
    the next one (the operating points reachable by randomising between their two thresholds), so one point
    per grid value whatever the scores: unlike :func:`roc_curve` it has no step per distinct score to read
    labels off."""
    fpr, tpr, _ = roc_curve(labels, scores)
    f = np.asarray(grid, dtype=np.float64)
    if f.ndim != 1 or np.any((f < 0) | (f > 1)) or np.any(np.diff(f) <= 0):
        raise ValueError(f"grid must be increasing FPRs in [0, 1], got {grid!r}")
    i = np.searchsorted(fpr, f, side="right") - 1  # last point at or left of f (highest TPR there)
    j = np.minimum(i + 1, len(fpr) - 1)
    span = fpr[j] - fpr[i]
    w = np.divide(f - fpr[i], span, out=np.zeros_like(f), where=span > 0)
    return f, tpr[i] + w * (tpr[j] - tpr[i])


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the tie-aware ROC curve (equals ``sklearn.metrics.roc_auc_score``)."""
    y, s = _validate(labels, scores)
    tp, fp, _ = _counts(y, s)
    # Metcalf+19 Sec. 4: "AUROC ... the area under the ROC curve" (trapezoid, exact integer sum)
    twice_area = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))
    return twice_area / (2.0 * float(tp[-1]) * float(fp[-1]))


def tpr_at_max_fp(labels: ArrayLike, scores: ArrayLike, max_fp: int) -> float:
    """Highest TPR over thresholds that make at most ``max_fp`` false positives (0 if none do)."""
    if int(max_fp) != max_fp or max_fp < 0:
        raise ValueError(f"max_fp must be a non-negative integer, got {max_fp!r}")
    y, s = _validate(labels, scores)
    tp, fp, _ = _counts(y, s)
    # the (0, 0) point always qualifies; TP is non-decreasing so the last qualifying point is the max
    return float(tp[fp <= max_fp].max() / tp[-1])


def tpr0(labels: ArrayLike, scores: ArrayLike) -> float:
    """TPR0: the highest TPR reached before a single false positive occurs."""
    # Metcalf+19 Sec. 4: "TPR0 ... the highest TPR reached, as a function of p threshold,
    # before a single false positive occurs"
    return tpr_at_max_fp(labels, scores, 0)


def tpr10(labels: ArrayLike, scores: ArrayLike) -> float:
    """TPR10: the highest TPR over thresholds with fewer than ten false positives."""
    # Metcalf+19 Sec. 4: "TPR10 ... the TPR at the point where less than ten false positives are made"
    return tpr_at_max_fp(labels, scores, 9)


def _fpr_ok(fp: NDArray[np.int64], fpr: float) -> NDArray[np.bool_]:
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr!r}")
    # FP/N <= fpr, with FPR = FP/(FP+TN) (Metcalf+19 Sec. 4)
    return fp / fp[-1] <= fpr


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, fpr: float = 1e-3) -> float:
    """Highest TPR over thresholds whose FPR is <= ``fpr``."""
    y, s = _validate(labels, scores)
    tp, fp, _ = _counts(y, s)
    return float(tp[_fpr_ok(fp, fpr)].max() / tp[-1])


def threshold_at_fpr(labels: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """Lowest threshold (a score value) whose FPR is <= ``fpr``.

    Returns ``+inf`` (select nothing) when even the highest-scored block exceeds ``fpr``.
    """
    y, s = _validate(labels, scores)
    _, fp, thresholds = _counts(y, s)
    # thresholds descend, so the last qualifying one is the lowest
    return float(thresholds[_fpr_ok(fp, fpr)][-1])


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, ``sklearn.metrics.average_precision_score``."""
    y, s = _validate(labels, scores)
    # sklearn: "AP = sum_n (R_n - R_{n-1}) P_n"
    return float(average_precision_score(y, s))


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` confidence interval of ``metric_fn(*arrays)``.

    Rows (axis 0) of all ``arrays`` are resampled together with replacement using
    ``numpy.random.default_rng(seed)``. A resample is skipped when ``metric_fn`` raises
    :class:`UndefinedMetricError` (e.g. only one class drawn) or returns a non-finite value;
    any other exception propagates.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one data array")
    _check_bootstrap_args(n_resamples, alpha)
    data = [np.asarray(a) for a in arrays]
    if any(a.ndim == 0 for a in data):
        raise ValueError("bootstrap_ci arrays must have at least one dimension")
    n = data[0].shape[0]
    if any(a.shape[0] != n for a in data):
        raise ValueError(f"bootstrap_ci arrays differ in length: {[a.shape[0] for a in data]}")
    if n == 0:
        raise ValueError("bootstrap_ci arrays are empty")

    rng = np.random.default_rng(seed)
    stats = np.empty(int(n_resamples))
    n_ok = 0
    for _ in range(int(n_resamples)):
        idx = rng.integers(0, n, size=n)
        try:
            value = float(metric_fn(*(a[idx] for a in data)))
        except UndefinedMetricError:
            continue
        if np.isfinite(value):
            stats[n_ok] = value
            n_ok += 1
    return _percentile_interval(stats[:n_ok], alpha)


def _check_bootstrap_args(n_resamples: int, alpha: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _percentile_interval(stats: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    if stats.shape[0] == 0:
        raise ValueError("metric undefined on every bootstrap resample")
    # Efron & Tibshirani 1993, Sec. 13.3: percentile interval [q(alpha/2), q(1 - alpha/2)]
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _auroc_bootstrap_ci(
    y: NDArray[np.bool_], s: NDArray[np.float64], n_resamples: int, seed: int, alpha: float
) -> tuple[float, float]:
    """Same result as ``bootstrap_ci(auroc, y, s, ...)`` (same draws), without a sort per resample.

    The data are sorted once; each resample becomes integer counts per object, and the exact
    integer trapezoid sum of :func:`auroc` is taken over the fixed tie blocks.
    """
    _check_bootstrap_args(n_resamples, alpha)
    n = s.shape[0]
    order = np.argsort(s)[::-1]
    pos = np.empty(n, dtype=np.intp)
    pos[order] = np.arange(n)
    s_sorted = s[order]
    y_sorted = y[order]
    starts = np.flatnonzero(np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]]))
    rng = np.random.default_rng(seed)
    stats = np.empty(int(n_resamples))
    n_ok = 0
    for _ in range(int(n_resamples)):
        w = np.bincount(pos[rng.integers(0, n, size=n)], minlength=n)
        tp_b = np.add.reduceat(np.where(y_sorted, w, 0), starts)
        fp_b = np.add.reduceat(w, starts) - tp_b
        n_pos = int(tp_b.sum())
        n_neg = n - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        # trapezoid: sum dFP * (TP + TP_prev), TP_prev = TP - dTP; empty blocks add zero area
        twice_area = int(np.sum(fp_b * (2 * np.cumsum(tp_b) - tp_b)))
        stats[n_ok] = twice_area / (2.0 * float(n_pos) * float(n_neg))
        n_ok += 1
    return _percentile_interval(stats[:n_ok], alpha)


# --------------------------------------------------------------------------- completeness


def completeness_by_bin(
    labels: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    values: ArrayLike,
    bins: Sequence[float] | NDArray[Any],
) -> dict[str, NDArray[Any]]:
    """Lens completeness (fraction with ``score >= threshold``) in bins of ``values``.

    Only true lenses are used; ``values`` of non-lenses are ignored (may be NaN). ``bins`` are
    increasing edges with ``numpy.histogram`` semantics (last bin closed); lenses outside are dropped.
    Returns ``bin_edges``, ``n_lens``, ``n_found`` and ``completeness`` (NaN for empty bins).
    """
    y, s = _validate(labels, scores, require_both=False)
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != y.shape[0]:
        raise ValueError(f"values must be 1-D with the length of labels ({y.shape[0]}), got shape {v.shape}")
    if v.dtype.kind not in "biuf":
        raise ValueError(f"values must be real numbers, got dtype {v.dtype}")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.shape[0] < 2 or not np.all(np.isfinite(edges)):
        raise ValueError("bins must be a 1-D sequence of at least two finite edges")
    if not np.all(np.diff(edges) > 0):
        raise ValueError("bins must be strictly increasing")
    if np.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    v_lens = v[y].astype(np.float64)
    if not np.all(np.isfinite(v_lens)):
        raise ValueError("values must be finite for every lens")
    found = s[y] >= threshold
    n_lens, _ = np.histogram(v_lens, bins=edges)
    n_found, _ = np.histogram(v_lens[found], bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        completeness = np.where(n_lens > 0, n_found / np.maximum(n_lens, 1), np.nan)
    return {"bin_edges": edges, "n_lens": n_lens, "n_found": n_found, "completeness": completeness}


# --------------------------------------------------------------------------- summary


def lens_metrics(
    labels: ArrayLike, scores: ArrayLike, *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """All lens-finding metrics of Metcalf et al. 2019 plus a bootstrap CI on AUROC.

    ``n_resamples=0`` skips the bootstrap (CI bounds are NaN).
    """
    y, s = _validate(labels, scores)
    if n_resamples:
        # fast path, identical to bootstrap_ci(auroc, y, s, n_resamples=n_resamples, seed=seed)
        low, high = _auroc_bootstrap_ci(y, s, n_resamples, seed, 0.05)
    else:
        low, high = float("nan"), float("nan")
    n_lens = int(np.count_nonzero(y))
    return {
        "auroc": auroc(y, s),
        "auroc_ci_low": low,
        "auroc_ci_high": high,
        "tpr0": tpr0(y, s),
        "tpr10": tpr10(y, s),
        "tpr_fpr1e-3": tpr_at_fpr(y, s, 1e-3),
        "average_precision": average_precision(y, s),
        "n_lens": n_lens,
        "n_nonlens": int(y.shape[0]) - n_lens,
    }


# --------------------------------------------------------------------------- photometric redshifts
# dz = (z_phot - z_spec) / (1 + z_spec) throughout (Pasquet et al. 2019, arXiv:1806.06607, Sec. 4).

PHOTOZ_OUTLIER_DZ = 0.05  # Pasquet et al. 2019: eta = fraction of |dz| > 0.05
PDF_NORM_TOLERANCE = 1e-3  # a PDF row's probabilities must sum to 1 within this


def _photoz_validate(z_phot: ArrayLike, z_spec: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    zp = np.asarray(z_phot, dtype=np.float64)
    zs = np.asarray(z_spec, dtype=np.float64)
    if zp.ndim != 1 or zs.ndim != 1 or zp.shape != zs.shape:
        raise ValueError(f"z_phot and z_spec must be 1-D of equal length, got shapes {zp.shape} and {zs.shape}")
    if zp.shape[0] == 0:
        raise ValueError("z_phot and z_spec are empty")
    if not (np.all(np.isfinite(zp)) and np.all(np.isfinite(zs))):
        raise ValueError("z_phot and z_spec must be finite")
    if np.any(zs <= -1):
        raise ValueError("z_spec must be > -1")
    return zp, zs


def photoz_dz(z_phot: ArrayLike, z_spec: ArrayLike) -> NDArray[np.float64]:
    """dz = (z_phot - z_spec) / (1 + z_spec)."""
    zp, zs = _photoz_validate(z_phot, z_spec)
    # Pasquet et al. 2019 Sec. 4: "dz = (z_phot - z_spec) / (1 + z_spec)"
    return (zp - zs) / (1.0 + zs)


def sigma_mad(z_phot: ArrayLike, z_spec: ArrayLike) -> float:
    """sigma_MAD = 1.4826 x median(|dz - median(dz)|)."""
    dz = photoz_dz(z_phot, z_spec)
    # Pasquet et al. 2019 Sec. 4: "sigma_MAD = 1.4826 x MAD", MAD = median(|dz - median(dz)|)
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


def bias_mean(z_phot: ArrayLike, z_spec: ArrayLike) -> float:
    """Mean of dz."""
    # Pasquet et al. 2019 Sec. 4: "bias = <dz>"
    return float(np.mean(photoz_dz(z_phot, z_spec)))


def bias_median(z_phot: ArrayLike, z_spec: ArrayLike) -> float:
    """Median of dz."""
    # RAIL / qp point metrics: "bias = median(e_z)"
    return float(np.median(photoz_dz(z_phot, z_spec)))


def sigma_iqr(z_phot: ArrayLike, z_spec: ArrayLike) -> float:
    """sigma_IQR = IQR(dz) / 1.349."""
    q25, q75 = np.percentile(photoz_dz(z_phot, z_spec), [25, 75])
    # RAIL PointSigmaIQR: "sigma_IQR = IQR / 1.349"
    return float((q75 - q25) / 1.349)


def outlier_fraction(z_phot: ArrayLike, z_spec: ArrayLike, threshold: float = PHOTOZ_OUTLIER_DZ) -> float:
    """Fraction of objects with |dz| > ``threshold`` (Pasquet's eta with the default 0.05)."""
    # Pasquet et al. 2019 Sec. 4: "eta ... the percentage of outliers with |dz| > 0.05"
    return float(np.mean(np.abs(photoz_dz(z_phot, z_spec)) > threshold))


def rail_outlier_rate(z_phot: ArrayLike, z_spec: ArrayLike) -> float:
    """Fraction of objects with |dz| > max(0.06, 3 sigma_IQR)."""
    # RAIL PointOutlierRate: "|e_z| > max(0.06, 3 sigma_IQR)"
    return outlier_fraction(z_phot, z_spec, max(0.06, 3.0 * sigma_iqr(z_phot, z_spec)))


def pdf_grid(grid: Sequence[float]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(centres, edges) of a track's redshift grid (first centre, last centre, K): K equal bins."""
    low, high, k = float(grid[0]), float(grid[1]), int(grid[2])
    if k < 2 or not high > low:
        raise ValueError(f"a PDF grid needs K >= 2 centres with high > low, got {tuple(grid)}")
    centres = np.linspace(low, high, k)
    width = (high - low) / (k - 1)
    edges = np.concatenate([centres - width / 2, [centres[-1] + width / 2]])
    return centres, edges


def validate_pdf(pdf: ArrayLike, n_bins: int, tolerance: float = PDF_NORM_TOLERANCE) -> NDArray[np.float64]:
    """Check an (N, K) array of bin probabilities: finite, non-negative, each row summing to 1 within
    ``tolerance``. Returns it as float64; raises ``ValueError`` with one clear line otherwise."""
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != n_bins:
        raise ValueError(f"a PDF must have shape (N, {n_bins}) (one probability per redshift bin), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"the PDF has {int(np.sum(~np.isfinite(p)))} non-finite value(s)")
    if np.any(p < 0):
        rows = np.flatnonzero(np.any(p < 0, axis=1))
        raise ValueError(f"the PDF has negative values in {rows.size} row(s), e.g. row {int(rows[0])} "
                         f"(min {p.min():.3g})")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > tolerance)
    if bad.size:
        raise ValueError(f"PDF rows must sum to 1 within {tolerance:g} (bin probabilities); {bad.size} row(s) do "
                         f"not, e.g. row {int(bad[0])} sums to {sums[bad[0]]:.6g}")
    return p


def pdf_point_estimate(pdf: ArrayLike, centres: ArrayLike, kind: str = "mean") -> NDArray[np.float64]:
    """Point estimate of each binned PDF row: ``mean`` (sum p_k z_k), ``median`` (CDF = 1/2, linear within
    the bin) or ``mode`` (centre of the most probable bin)."""
    p, z = np.asarray(pdf, dtype=np.float64), np.asarray(centres, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    if kind == "mean":
        return p @ z
    if kind == "mode":
        return z[np.argmax(p, axis=1)]
    if kind == "median":
        width = z[1] - z[0]
        cdf = np.cumsum(p, axis=1)
        k = np.minimum(np.argmax(cdf >= 0.5, axis=1), len(z) - 1)
        below = np.take_along_axis(cdf, k[:, None], 1)[:, 0] - p[np.arange(len(p)), k]
        frac = (0.5 - below) / np.maximum(p[np.arange(len(p)), k], 1e-300)
        return z[k] - width / 2 + frac * width
    raise ValueError(f"unknown point estimate {kind!r} (mean, median or mode)")


def pdf_cdf_at(pdf: ArrayLike, edges: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
    """CDF of each binned PDF row at ``z`` (constant density within each bin)."""
    p, e, z = np.asarray(pdf, np.float64), np.asarray(edges, np.float64), np.asarray(z, np.float64)
    k = np.clip(np.searchsorted(e, z, side="right") - 1, 0, p.shape[1] - 1)
    cum = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(p, axis=1)], axis=1)
    frac = np.clip((z - e[k]) / (e[k + 1] - e[k]), 0.0, 1.0)
    out = cum[np.arange(len(z)), k] + frac * p[np.arange(len(z)), k]
    return np.where(z < e[0], 0.0, np.where(z >= e[-1], 1.0, out))


def pit(pdf: ArrayLike, edges: ArrayLike, z_spec: ArrayLike) -> NDArray[np.float64]:
    """Probability integral transform PIT_i = CDF_i(z_spec,i)."""
    # RAIL / qp: "PIT_i = CDF_i(z_true,i)"; uniform for calibrated PDFs (Dawid 1984)
    return pdf_cdf_at(pdf, edges, z_spec)


def pit_ks(pit_values: ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic of the PIT values against U(0, 1)."""
    from scipy.stats import kstest

    # RAIL PITMetrics: KS test of the PIT distribution against the uniform distribution
    return float(kstest(np.asarray(pit_values, np.float64), "uniform").statistic)


def crps(pdf: ArrayLike, edges: ArrayLike, z_spec: ArrayLike) -> float:
    """Mean continuous ranked probability score, CRPS_i = int (F_i(z) - H(z - z_spec,i))^2 dz, of binned PDFs
    (F linear within each bin); exact, including the parts outside the grid."""
    p, e, zs = np.asarray(pdf, np.float64), np.asarray(edges, np.float64), np.asarray(z_spec, np.float64)
    n = p.shape[0]
    F = np.concatenate([np.zeros((n, 1)), np.cumsum(p, axis=1)], axis=1)  # CDF at the edges
    zc = np.clip(zs, e[0], e[-1])
    # split the grid at z: segments below (H = 0) and above (H = 1); int of a linear g^2 = dx (g0^2+g0 g1+g1^2)/3
    x0, x1 = e[None, :-1], e[None, 1:]
    a0, a1 = np.minimum(x0, zc[:, None]), np.minimum(x1, zc[:, None])  # part of each bin below z
    b0, b1 = np.maximum(x0, zc[:, None]), np.maximum(x1, zc[:, None])  # part above z
    slope = (F[:, 1:] - F[:, :-1]) / (x1 - x0)

    def f_at(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return F[:, :-1] + slope * (x - x0)

    def seg(lo: NDArray[np.float64], hi: NDArray[np.float64], h: float) -> NDArray[np.float64]:
        g0, g1 = f_at(lo) - h, f_at(hi) - h
        return (hi - lo) * (g0**2 + g0 * g1 + g1**2) / 3.0

    inside = (seg(a0, a1, 0.0) + seg(b0, b1, 1.0)).sum(axis=1)
    outside = np.abs(zs - zc)  # beyond the grid F is 0 (below) or 1 (above) while H is the other: (1)^2 dz
    # Hersbach 2000, Weather Forecast. 15, 559, eq. 5: CRPS = int (P(x) - H(x - x_a))^2 dx
    return float(np.mean(inside + outside))


def cde_loss(pdf: ArrayLike, edges: ArrayLike, z_spec: ArrayLike) -> float:
    """CDE loss = mean_i int f_i(z)^2 dz - 2 mean_i f_i(z_spec,i), f the density (probability / bin width)."""
    p, e, zs = np.asarray(pdf, np.float64), np.asarray(edges, np.float64), np.asarray(z_spec, np.float64)
    width = np.diff(e)
    dens = p / width[None, :]
    k = np.searchsorted(e, zs, side="right") - 1
    inside = (k >= 0) & (k < p.shape[1])
    f_true = np.where(inside, dens[np.arange(len(zs)), np.clip(k, 0, p.shape[1] - 1)], 0.0)
    # Izbicki & Lee 2017 (arXiv:1704.08095) / RAIL CDELoss: "L = E[int f(z|x)^2 dz] - 2 E[f(Z|X)]"
    return float(np.mean(np.sum(dens**2 * width[None, :], axis=1)) - 2.0 * np.mean(f_true))


def photoz_metrics(z_spec: ArrayLike, z_phot: ArrayLike, pdf: ArrayLike | None = None,
                   edges: ArrayLike | None = None, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every photo-z metric: point metrics of ``z_phot``, a bootstrap CI of sigma_MAD, and for a binned ``pdf``
    (with its bin ``edges``) the PIT KS statistic, CRPS and CDE loss. ``n_resamples=0`` skips the bootstrap."""
    zp, zs = _photoz_validate(z_phot, z_spec)
    if n_resamples:
        dz = (zp - zs) / (1.0 + zs)
        # sigma_MAD of resampled dz (faster than recomputing dz per resample; same value)
        low, high = bootstrap_ci(lambda d: 1.4826 * np.median(np.abs(d - np.median(d))), dz,
                                 n_resamples=n_resamples, seed=seed)
    else:
        low = high = float("nan")
    out = {"sigma_mad": sigma_mad(zp, zs), "sigma_mad_ci_low": low, "sigma_mad_ci_high": high,
           "bias_mean": bias_mean(zp, zs), "bias_median": bias_median(zp, zs), "sigma_iqr": sigma_iqr(zp, zs),
           "outlier_frac": outlier_fraction(zp, zs), "rail_outlier_frac": rail_outlier_rate(zp, zs),
           "n_objects": int(zs.shape[0])}
    if pdf is not None:
        if edges is None:
            raise ValueError("PDF metrics need the bin edges of the grid")
        p = validate_pdf(pdf, len(np.asarray(edges)) - 1)
        if p.shape[0] != zs.shape[0]:
            raise ValueError(f"the PDF has {p.shape[0]} rows for {zs.shape[0]} objects")
        out |= {"pit_ks": pit_ks(pit(p, edges, zs)), "crps": crps(p, edges, zs), "cde_loss": cde_loss(p, edges, zs)}
    return out


# --------------------------------------------------------------------------- image enhancement
# Images are float arrays (N, bands, H, W) in flux per pixel; every function returns one value per image (N,).


def _image_pair(pred: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if t.ndim != 4:
        raise ValueError(f"images must be (N, bands, H, W), got truth of shape {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from the truth's {t.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"predictions must be finite; found {int(np.sum(~np.isfinite(p)))} NaN/inf pixel(s)")
    return p, t


def _per_band(value: ArrayLike, bands: int, name: str) -> NDArray[np.float64]:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (bands,))
    if not np.all(v > 0):
        raise ValueError(f"{name} must be positive for every band, got {v.tolist()}")
    return v


def psnr(pred: ArrayLike, truth: ArrayLike, data_range: ArrayLike) -> NDArray[np.float64]:
    """Peak signal-to-noise ratio [dB] per image with a fixed data range R_b per band (inf for identical images)."""
    p, t = _image_pair(pred, truth)
    r = _per_band(data_range, t.shape[1], "data_range")[None, :, None, None]
    # PSNR = 10 log10(R^2 / MSE) (Gonzalez & Woods, Digital Image Processing; skimage.metrics.peak_signal_noise_ratio)
    mse = np.mean(((p - t) / r) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def ssim(pred: ArrayLike, truth: ArrayLike, data_range: ArrayLike) -> NDArray[np.float64]:
    """Mean structural similarity per image, averaged over bands, each with its data range R_b."""
    from skimage.metrics import structural_similarity

    p, t = _image_pair(pred, truth)
    r = _per_band(data_range, t.shape[1], "data_range")
    # SSIM of Wang et al. 2004 (IEEE TIP 13, 600), 7x7 uniform window: skimage.metrics.structural_similarity
    return np.array([np.mean([structural_similarity(t[i, b], p[i, b], data_range=float(r[b]))
                              for b in range(t.shape[1])]) for i in range(t.shape[0])])


def flux_rel_error(pred: ArrayLike, truth: ArrayLike, signed: bool = False) -> NDArray[np.float64]:
    """Relative total-flux error per image, (sum pred - sum truth) / sum truth per band, averaged over bands
    (absolute values unless ``signed``)."""
    p, t = _image_pair(pred, truth)
    ft, fp = t.sum(axis=(2, 3)), p.sum(axis=(2, 3))
    if not np.all(ft > 0):
        raise ValueError(f"relative flux error needs a positive total truth flux; {int(np.sum(ft <= 0))} "
                         "band(s) have none")
    rel = (fp - ft) / ft  # (N, bands)
    return rel.mean(axis=1) if signed else np.abs(rel).mean(axis=1)


def second_moments(images: ArrayLike, pixel_scale: float, weight_sigma: float,
                   iterations: int = 20) -> dict[str, NDArray[np.float64]]:
    """Gaussian-weighted second moments of the band-summed images: centroid, size and ellipticity per image.

    Q_ij = sum w I x_i x_j / sum w I about the weighted centroid (``iterations`` re-centrings from the frame
    centre), w a circular Gaussian of ``weight_sigma`` arcsec; size = sqrt((Q_xx + Q_yy) / 2) [arcsec] and
    (e1, e2) = (Q_xx - Q_yy, 2 Q_xy) / (Q_xx + Q_yy) (Bernstein & Jarvis 2002, AJ 123, 583, Eq. 2-5)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"images must be (N, bands, H, W), got shape {a.shape}")
    img = a.sum(axis=1)
    n, h, w = img.shape
    ys = (np.arange(h) - (h - 1) / 2.0) * pixel_scale
    xs = (np.arange(w) - (w - 1) / 2.0) * pixel_scale
    cx, cy = np.zeros(n), np.zeros(n)
    for _ in range(max(1, iterations)):
        dx, dy = xs[None, None, :] - cx[:, None, None], ys[None, :, None] - cy[:, None, None]
        wi = np.exp(-(dx**2 + dy**2) / (2.0 * weight_sigma**2)) * img
        norm = wi.sum(axis=(1, 2))
        if not np.all(norm > 0):
            raise ValueError("second moments need a positive weighted flux in every image")
        cx, cy = cx + (wi * dx).sum(axis=(1, 2)) / norm, cy + (wi * dy).sum(axis=(1, 2)) / norm
    dx, dy = xs[None, None, :] - cx[:, None, None], ys[None, :, None] - cy[:, None, None]
    wi = np.exp(-(dx**2 + dy**2) / (2.0 * weight_sigma**2)) * img
    norm = wi.sum(axis=(1, 2))
    qxx, qyy, qxy = ((wi * dx * dx).sum(axis=(1, 2)) / norm, (wi * dy * dy).sum(axis=(1, 2)) / norm,
                     (wi * dx * dy).sum(axis=(1, 2)) / norm)
    trace = qxx + qyy
    return {"x": cx, "y": cy, "size": np.sqrt(np.clip(trace, 0.0, None) / 2.0),
            "e1": (qxx - qyy) / trace, "e2": 2.0 * qxy / trace}


def shape_errors(pred: ArrayLike, truth: ArrayLike, pixel_scale: float,
                 weight_sigma: float) -> dict[str, NDArray[np.float64]]:
    """``size_rel_error`` = |size_pred / size_truth - 1| and ``ellipticity_error`` = |e_pred - e_truth| per image."""
    p, t = _image_pair(pred, truth)
    mp, mt = second_moments(p, pixel_scale, weight_sigma), second_moments(t, pixel_scale, weight_sigma)
    return {"size_rel_error": np.abs(mp["size"] / mt["size"] - 1.0),
            "ellipticity_error": np.hypot(mp["e1"] - mt["e1"], mp["e2"] - mt["e2"])}


def chi2_per_pixel(pred: ArrayLike, truth: ArrayLike, variance: ArrayLike) -> NDArray[np.float64]:
    """chi^2 per pixel of the residual against the truth's known noise: mean((pred - truth)^2 / variance)."""
    p, t = _image_pair(pred, truth)
    var = np.broadcast_to(np.asarray(variance, dtype=np.float64), t.shape)
    if not np.all(var > 0):
        raise ValueError("chi^2 needs a positive noise variance in every pixel")
    # chi^2 / N_pix = (1/N) sum (d - m)^2 / sigma^2 (e.g. Press et al., Numerical Recipes, Sec. 15.1)
    return np.mean((p - t) ** 2 / var, axis=(1, 2, 3))


def truth_variance(truth: ArrayLike, sigma_bkg: ArrayLike, total_time: ArrayLike) -> NDArray[np.float64]:
    """Noise variance of each truth pixel: sigma_bkg^2 + max(truth, 0) / T per band (lenstronomy data_util:
    background + Poisson), the truth itself standing in for its noise-free model."""
    t = np.asarray(truth, dtype=np.float64)
    s = np.asarray(sigma_bkg, dtype=np.float64)
    s = s.reshape((-1, t.shape[1], 1, 1)) if s.ndim == 2 else s.reshape(1, -1, 1, 1)
    tt = np.asarray(total_time, dtype=np.float64).reshape(1, -1, 1, 1)
    return s**2 + np.clip(t, 0.0, None) / tt


def display_stretch(images: ArrayLike, low: ArrayLike, high: ArrayLike) -> NDArray[np.float64]:
    """Schawinski et al. 2017's display stretch with a fixed flux range [low_b, high_b] per band (their [-0.1, 4]
    nanomaggies): clip to the range, rescale to [0, 1], then asinh(10 x) / 3; values in [0, asinh(10)/3]."""
    a = np.asarray(images, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1)
    hi = np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1)
    if not np.all(hi > lo):
        raise ValueError(f"display stretch needs high > low in every band, got {np.ravel(low)} / {np.ravel(high)}")
    # Schawinski et al. 2017 (arXiv:1702.00403), Sec. 2.2: x -> asinh(10 x) / 3 after clipping and rescaling
    return np.arcsinh(10.0 * np.clip((a - lo) / (hi - lo), 0.0, 1.0)) / 3.0


STRETCH_RANGE = float(np.arcsinh(10.0) / 3.0)  # the data range of display_stretch


def stretched_psnr(pred: ArrayLike, truth: ArrayLike, low: ArrayLike, high: ArrayLike) -> NDArray[np.float64]:
    """PSNR [dB] per image of the display-stretched images, data range asinh(10)/3 (the stretch's full range)."""
    p, t = _image_pair(pred, truth)
    return psnr(display_stretch(p, low, high), display_stretch(t, low, high), STRETCH_RANGE)


def image_metrics(pred: ArrayLike, truth: ArrayLike, *, stretch_low: ArrayLike, stretch_high: ArrayLike,
                  flux_range: ArrayLike, variance: ArrayLike, pixel_scale: float, weight_sigma: float,
                  n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, NDArray[np.float64]]]:
    """Image-quality metrics of the enhancement track: the mean over images of each per-image value and its
    bootstrap CI (``<name>_ci_low``/``_ci_high``; NaN with ``n_resamples=0``); also the per-image values.

    ``psnr`` and ``ssim`` are on the display-stretched images (:func:`display_stretch`), ``psnr_flux`` on the flux
    with the fixed data range ``flux_range`` per band; the others on the flux."""
    p, t = _image_pair(pred, truth)
    sp, st = display_stretch(p, stretch_low, stretch_high), display_stretch(t, stretch_low, stretch_high)
    per = {"psnr": psnr(sp, st, STRETCH_RANGE), "ssim": ssim(sp, st, STRETCH_RANGE),
           "psnr_flux": psnr(p, t, flux_range),
           "flux_rel_error": flux_rel_error(p, t), "flux_bias": flux_rel_error(p, t, signed=True),
           **shape_errors(p, t, pixel_scale, weight_sigma), "chi2": chi2_per_pixel(p, t, variance)}
    out: dict[str, float] = {}
    for name, values in per.items():
        out[name] = float(np.mean(values))
        if not n_resamples:
            low, high = float("nan"), float("nan")
        elif not np.all(np.isfinite(values)):  # e.g. PSNR of an exact copy (inf): no interval to speak of
            low = high = out[name]
        else:
            low, high = bootstrap_ci(np.mean, values, n_resamples=n_resamples, seed=seed)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out, per
