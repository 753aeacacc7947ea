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
