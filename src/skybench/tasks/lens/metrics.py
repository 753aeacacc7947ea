"""Strong-lens classification metrics (Metcalf et al. 2019, A&A 625, A119, arXiv:1802.03609).

Dependency-light: numpy and scikit-learn only, no plotting. Conventions:

* an object is classified as a lens when its score ``p >= threshold``; the thresholds are the
  distinct score values, so a block of tied scores is one threshold (a lens tied with a non-lens
  is never counted as found before that non-lens);
* every ROC curve starts at (0, 0) (threshold ``+inf``, nothing selected) and ends at (1, 1)
  (threshold = lowest score, everything selected).

The generic bootstrap interval is :func:`skybench.common.bootstrap_ci`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import average_precision_score

from skybench.common import UndefinedMetricError, check_bootstrap_args, check_indices, percentile_interval

__all__ = [
    "BOOTSTRAPPED",
    "auroc",
    "average_precision",
    "completeness_by_bin",
    "lens_metrics",
    "roc_curve",
    "roc_on_grid",
    "roc_resamples",
    "threshold_at_fpr",
    "tpr0",
    "tpr10",
    "tpr_at_fpr",
    "tpr_at_max_fp",
]


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
    """Area under the tie-aware ROC curve (equals ``sklearn.metrics.roc_auc_score``; not a wrapper of it: the
    integer sum is exact, shares :func:`_counts` with the TPR metrics, and is ~4x faster at 100,000 objects)."""
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


# The TPRs of :func:`lens_metrics` at a fixed number of false positives (at most N) or rate (FPR <= f); with AUROC,
# the metrics it gives a bootstrap interval, all from the same resamples (:func:`roc_resamples`).
TPR_AT_MAX_FP = {"tpr0": 0, "tpr10": 9}
TPR_AT_FPR = {"tpr_fpr1e-3": 1e-3}
BOOTSTRAPPED = ("auroc", *TPR_AT_MAX_FP, *TPR_AT_FPR)


def tpr0(labels: ArrayLike, scores: ArrayLike) -> float:
    """TPR0: the highest TPR reached before a single false positive occurs."""
    # Metcalf+19 Sec. 4: "TPR0 ... the highest TPR reached, as a function of p threshold,
    # before a single false positive occurs"
    return tpr_at_max_fp(labels, scores, TPR_AT_MAX_FP["tpr0"])


def tpr10(labels: ArrayLike, scores: ArrayLike) -> float:
    """TPR10: the highest TPR over thresholds with fewer than ten false positives."""
    # Metcalf+19 Sec. 4: "TPR10 ... the TPR at the point where less than ten false positives are made"
    return tpr_at_max_fp(labels, scores, TPR_AT_MAX_FP["tpr10"])


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

def _tie_blocks(y: NDArray[np.bool_], s: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.bool_],
                                                                       NDArray[np.intp]]:
    """(each object's rank by descending score, the labels in that order, the first rank of each tie block)."""
    n = s.shape[0]
    order = np.argsort(s, kind="stable")[::-1]
    pos = np.empty(n, dtype=np.intp)
    pos[order] = np.arange(n)
    s_sorted = s[order]
    starts = np.flatnonzero(np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]])) if n else np.zeros(0, np.intp)
    return pos, y[order], starts


def _chunk_stats(pos: NDArray[np.intp], y_sorted: NDArray[np.bool_], starts: NDArray[np.intp],
                 rows: NDArray[np.intp], names: Sequence[str]) -> dict[str, NDArray[np.float64]]:
    """The metrics ``names`` (of :data:`BOOTSTRAPPED`) of each resample (row of object indices) of ``rows``, NaN
    without both classes: each resample is a count per object, summed over the fixed tie blocks (one threshold per
    block, as :func:`_counts`; no sort per resample); the same numbers as :func:`auroc`, :func:`tpr_at_max_fp` and
    :func:`tpr_at_fpr` of the resampled objects."""
    n, k = pos.shape[0], rows.shape[0]
    w = np.bincount((pos[rows] + n * np.arange(k)[:, None]).ravel(), minlength=k * n).reshape(k, n)
    # in place where it can: a fresh array of k x n costs about what the sums over it do
    fp_b = np.add.reduceat(w, starts, axis=1)
    w[:, ~y_sorted] = 0
    tp_b = np.add.reduceat(w, starts, axis=1)
    del w
    fp_b -= tp_b
    n_pos, n_neg = tp_b.sum(axis=1), fp_b.sum(axis=1)
    tp = np.cumsum(tp_b, axis=1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "auroc" in names:  # trapezoid: sum dFP * (TP + TP_prev), TP_prev = TP - dTP; empty blocks add zero area
            twice = 2 * tp
            twice -= tp_b
            twice *= fp_b
            out["auroc"] = twice.sum(axis=1) / (2.0 * n_pos * n_neg)
            del twice
        fp = np.cumsum(fp_b, axis=1, out=fp_b)
        for name in (m for m in names if m != "auroc"):
            # Metcalf+19 Sec. 4, as tpr_at_max_fp / tpr_at_fpr: highest TP over the points with FP <= the limit,
            # (0, 0) and a prefix of the blocks (FP never falls: a binary search per resample; last = -1: (0, 0))
            limit = np.full(k, TPR_AT_MAX_FP[name]) if name in TPR_AT_MAX_FP else _max_fp(n_neg, TPR_AT_FPR[name])
            last = np.array([np.searchsorted(row, c, side="right") for row, c in zip(fp, limit, strict=True)]) - 1
            out[name] = np.where(last >= 0, tp[np.arange(k), last], 0) / n_pos
    both = (n_pos > 0) & (n_neg > 0)
    return {name: np.where(both, out[name], np.nan) for name in names}


def _max_fp(n_neg: NDArray[np.int64], fpr: float) -> NDArray[np.int64]:
    """The most false positives ``m`` with ``m / n_neg <= fpr`` (as :func:`_fpr_ok` divides), for each ``n_neg``."""
    m = np.floor(fpr * n_neg).astype(np.int64)  # off by at most one: fix up as the division rounds
    m = np.where((m + 1) / n_neg <= fpr, m + 1, m)
    return np.where(m / n_neg > fpr, m - 1, m)


CHUNK_ELEMENTS = 2**17  # counts per chunk of resamples: 1 MB of int64 stays in cache (4M: 1.3-2x slower)


def _bootstrap_cis(
    y: NDArray[np.bool_], s: NDArray[np.float64], n_resamples: int, seed: int, alpha: float
) -> dict[str, tuple[float, float]]:
    """The interval of each of :data:`BOOTSTRAPPED`: the same as ``bootstrap_ci(<metric>, y, s, ...)`` (the same
    draws, one resample after another), by :func:`roc_resamples`' algorithm: sorted once, a chunk at a time."""
    check_bootstrap_args(n_resamples, alpha)
    n = s.shape[0]
    blocks = _tie_blocks(y, s)
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    chunks = []
    for lo in range(0, int(n_resamples), step):
        rows = np.stack([rng.integers(0, n, size=n) for _ in range(min(step, int(n_resamples) - lo))])
        chunks.append(_chunk_stats(*blocks, rows, BOOTSTRAPPED))
    stats = {name: np.concatenate([c[name] for c in chunks]) for name in BOOTSTRAPPED}
    return {name: percentile_interval(v[np.isfinite(v)], alpha) for name, v in stats.items()}


def roc_resamples(labels: ArrayLike, scores: ArrayLike, indices: ArrayLike, names: Sequence[str] = BOOTSTRAPPED,
                  chunk_elements: int = CHUNK_ELEMENTS) -> dict[str, NDArray[np.float64]]:
    """Each metric ``names`` (of :data:`BOOTSTRAPPED`) of each resample ``labels[indices[r]], scores[indices[r]]``
    (NaN without both classes), for a chunk of resamples at a time (at most ``chunk_elements`` counts)."""
    if unknown := [m for m in names if m not in BOOTSTRAPPED]:
        raise ValueError(f"no resampled metric {unknown}; choose from {', '.join(BOOTSTRAPPED)}")
    y, s = _validate(labels, scores, require_both=False)
    n = s.shape[0]
    idx = check_indices(indices, n)
    blocks = _tie_blocks(y, s)
    out = {name: np.full(idx.shape[0], np.nan) for name in names}
    step = max(1, chunk_elements // max(n, 1))
    for lo in range(0, idx.shape[0], step):
        for name, v in _chunk_stats(*blocks, idx[lo:lo + step], names).items():
            out[name][lo:lo + step] = v
    return out


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
    """All lens-finding metrics of Metcalf et al. 2019, each of :data:`BOOTSTRAPPED` with its 95% percentile
    bootstrap interval (``<metric>_ci_low`` / ``_ci_high``, all from the same resamples).

    ``n_resamples=0`` skips the bootstrap (CI bounds are NaN).
    """
    y, s = _validate(labels, scores)
    nan = (float("nan"), float("nan"))
    # fast path, identical to bootstrap_ci(<metric>, y, s, n_resamples=n_resamples, seed=seed) for each metric
    ci = _bootstrap_cis(y, s, n_resamples, seed, 0.05) if n_resamples else dict.fromkeys(BOOTSTRAPPED, nan)
    point = {"auroc": auroc(y, s), **{m: tpr_at_max_fp(y, s, k) for m, k in TPR_AT_MAX_FP.items()},
             **{m: tpr_at_fpr(y, s, f) for m, f in TPR_AT_FPR.items()}}
    out: dict[str, float] = {}
    for name, value in point.items():
        out |= {name: value, f"{name}_ci_low": ci[name][0], f"{name}_ci_high": ci[name][1]}
    n_lens = int(np.count_nonzero(y))
    return out | {"average_precision": average_precision(y, s), "n_lens": n_lens, "n_nonlens": int(y.shape[0]) - n_lens}
