"""What the science tasks share (tasks never import one another): the strict pydantic base of every
configuration model, the bootstrap confidence interval of any metric, the robust (MAD) sigma, and the checks of
output kinds that the harness and a task share (PDF rows, detections)."""

from __future__ import annotations

import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict

__all__ = ["SLUG", "Strict", "UndefinedMetricError", "bootstrap_ci", "check_bootstrap_args", "check_indices",
           "write_whole", "detections_from_csv", "on_resamples", "percentile_interval", "proportion_ci", "robust_sigma",
           "stratified", "stratum_key", "stratum_labels", "stratum_masks", "swap_in", "validate_detections",
           "wilson_interval"]


SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # a team's or entry's name (match it whole: re.fullmatch)


class Strict(BaseModel):
    """A frozen model that rejects unknown keys: a typo in a track YAML is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UndefinedMetricError(ValueError):
    """The metric is undefined for this input (e.g. only one class present).

    :func:`bootstrap_ci` skips resamples whose metric raises this error.
    """


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    bias_corrected: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` confidence interval of ``metric_fn(*arrays)``.

    Rows (axis 0) of all ``arrays`` are resampled together with replacement using
    ``numpy.random.default_rng(seed)``. A resample is skipped when ``metric_fn`` raises
    :class:`UndefinedMetricError` (e.g. only one class drawn) or returns a non-finite value;
    any other exception propagates. ``bias_corrected``: shift the interval by the bootstrap estimate of the bias,
    for statistics that resampling itself inflates (a chi^2 of a resampled mean: duplicated rows add variance).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one data array")
    check_bootstrap_args(n_resamples, alpha)
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
    low, high = percentile_interval(stats[:n_ok], alpha)
    if not bias_corrected:
        return low, high
    # Efron & Tibshirani 1993, eq. (10.3): bias_B = mean(theta*) - theta_hat
    bias = float(stats[:n_ok].mean()) - float(metric_fn(*data))
    return low - bias, high - bias


def check_indices(indices: ArrayLike, n: int) -> NDArray[np.intp]:
    """``indices`` as an (R, m) integer array of positions into ``n`` objects; ValueError saying what is wrong."""
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(f"resample indices must be an (R, m) integer array, got {idx.dtype} of shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"resample indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")
    return idx.astype(np.intp, copy=False)


def on_resamples(metric_fn: Callable[..., float], indices: ArrayLike, *arrays: ArrayLike) -> NDArray[np.float64]:
    """``metric_fn`` of the rows ``indices[r]`` of every array, for each resample ``r`` (the slow, generic path of
    :meth:`skybench.tasks.base.Task.score_resamples`); NaN where it raises :class:`UndefinedMetricError`."""
    data = [np.asarray(a) for a in arrays]
    idx = check_indices(indices, data[0].shape[0])
    out = np.full(idx.shape[0], np.nan)
    for r, rows in enumerate(idx):
        try:
            out[r] = float(metric_fn(*(a[rows] for a in data)))
        except UndefinedMetricError:
            pass
    return out


def check_bootstrap_args(n_resamples: int, alpha: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def percentile_interval(stats: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    if stats.shape[0] == 0:
        raise ValueError("metric undefined on every bootstrap resample")
    # Efron & Tibshirani 1993, Sec. 13.3: percentile interval [q(alpha/2), q(1 - alpha/2)]
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


MAD_TO_SIGMA = 1.4826  # Pasquet et al. 2019 Sec. 4's factor as published (1 / Phi^-1(3/4) = 1.482602...)


@overload
def robust_sigma(x: ArrayLike, axis: None = None, *, center: ArrayLike | None = None) -> float: ...


@overload
def robust_sigma(x: ArrayLike, axis: int | tuple[int, ...], *,
                 center: ArrayLike | None = None) -> NDArray[np.floating[Any]]: ...


def robust_sigma(x: ArrayLike, axis: int | tuple[int, ...] | None = None, *,
                 center: ArrayLike | None = None) -> float | NDArray[np.floating[Any]]:
    """The sigma of Gaussian noise estimated robustly, 1.4826 x median(|x - median(x)|), along ``axis`` (None: of
    all of ``x``, a float), in ``x``'s precision. ``center``: the median along ``axis`` (keepdims), if known."""
    a = np.asarray(x)
    med = np.median(a, axis=axis, keepdims=True) if center is None else center
    # Rousseeuw & Croux 1993 (JASA 88, 1273) Eq. 1: MAD = b med_i |x_i - med_j x_j|, b = 1.4826 for Gaussian noise
    s = MAD_TO_SIGMA * np.median(np.abs(a - med), axis=axis)
    return float(s) if axis is None else s


PDF_NORM_TOLERANCE = 1e-3  # a PDF row's probabilities must sum to 1 within this


# The harness checks a `pdf` output with it before any task scores it.
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


# --------------------------------------------------------------------------- strata (the track YAML's ``strata:``)
# Per-bin metric keys are flat, usable as MLflow metric names: ``by_<column>_<bin>_<metric>``, with ``<bin>``
# the edges ``<low>-<high>`` (``%g``: ``by_lens_theta_E_0.4-0.8_tpr_fpr1``) or the category
# (``by_contaminant_ring_fpr_fpr1``); intervals add ``_ci_low`` / ``_ci_high``. The public and private parts prefix
# them as any metric (``public_by_...``).


def stratum_labels(edges: Sequence[float] | None, values: Sequence[str] | None) -> list[str]:
    """The bin names of a stratum, in order: ``"<low>-<high>"`` per pair of ``edges``, else the ``values``."""
    if edges is not None:
        return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return [str(v) for v in values or ()]


def stratum_key(column: str, label: str, metric: str) -> str:
    """The flat metric key of ``metric`` in bin ``label`` of ``column`` (see the comment above)."""
    return f"by_{column}_{label}_{metric}"


def stratum_masks(edges: Sequence[float] | None, values: Sequence[str] | None,
                  column: ArrayLike) -> list[tuple[str, NDArray[np.bool_]]]:
    """(bin name, membership mask over the rows of ``column``) per bin: numeric ``edges`` as ``numpy.histogram``
    (``[low, high)``, the last bin closed; NaN and values outside are in no bin), or equality with each of
    ``values`` (compared as strings)."""
    labels = stratum_labels(edges, values)
    col = np.asarray(column)
    if edges is not None:
        if col.dtype.kind not in "biuf":
            raise ValueError(f"a stratum with edges needs a numeric column, got dtype {col.dtype}")
        x = col.astype(np.float64)
        e = np.asarray(edges, dtype=np.float64)
        last = len(e) - 2
        return [(lab, (x >= e[i]) & ((x < e[i + 1]) if i < last else (x <= e[i + 1])))
                for i, lab in enumerate(labels)]
    as_str = col.astype(str)
    return [(lab, as_str == lab) for lab in labels]


def stratified(strata: Sequence[object], table: Mapping[str, ArrayLike],
               per_bin: Callable[[NDArray[np.bool_]], Mapping[str, float]],
               derived: Mapping[str, Callable[[str], NDArray[np.bool_]]] | None = None) -> dict[str, float]:
    """Per-bin metrics of every stratum (objects with ``column``, ``edges``, ``values``, as
    :class:`skybench.tracks.Stratum`): ``per_bin(mask)`` for each bin's membership mask, under
    :func:`stratum_key` names. ``table`` maps column names to per-object arrays (the rows ``per_bin`` masks);
    ``derived[column](value)`` gives the mask of a categorical bin the table has no column for (e.g. an object
    that belongs to several categories). A column in neither raises ``ValueError`` naming it."""
    out: dict[str, float] = {}
    derived = derived or {}
    for s in strata:
        column, edges, values = s.column, s.edges, s.values  # type: ignore[attr-defined]
        if column in derived and values is not None:
            bins = [(v, derived[column](v)) for v in values]
        elif column in table:
            bins = stratum_masks(edges, values, table[column])
        else:
            raise ValueError(f"strata: the hidden test table has no column {column!r}; fix the track's strata: "
                             f"section (columns: {', '.join(sorted(map(str, table))[:40])})")
        for label, mask in bins:
            out |= {stratum_key(column, label, k): v for k, v in per_bin(mask).items()}
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the binomial proportion ``successes / n`` (NaN, NaN for n = 0): unlike the normal
    approximation or a bootstrap it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    # Wilson 1927, JASA 22, 209: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    # exactly 0 / 1 at 0 / n successes (the formula's terms cancel there, up to rounding)
    low = 0.0 if successes <= 0 else max(0.0, (centre - half) / denom)
    high = 1.0 if successes >= n else min(1.0, (centre + half) / denom)
    return low, high


def proportion_ci(hits: ArrayLike) -> dict[str, float]:
    """``value`` (the mean of the 0/1 ``hits``), its Wilson 95% ``ci_low`` / ``ci_high`` and ``n``; value and
    interval NaN when ``hits`` is empty. (A bootstrap of a 0/1 mean is [0, 0] or [1, 1] at 0 or n hits, whatever n.)"""
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    if not np.all((h == 0) | (h == 1)):
        raise ValueError("proportion_ci needs 0/1 values")
    low, high = wilson_interval(int(h.sum()), h.size)
    return {"value": float(h.mean()), "ci_low": low, "ci_high": high, "n": int(h.size)}


# ------------------------------------------------- detections outputs (the detect task; the harness checks them)
def validate_detections(pred: object, n_tiles: int, max_candidates: int, tile_size: int) -> np.ndarray:
    """Check (N, K', 3) candidates (x, y, score) with K' <= K, NaN-padded rows; returns (N, K, 3) float64 padded with
    NaN to K. A row is padding when all three values are NaN. Raises ValueError with one line saying what is wrong."""
    try:
        a = np.asarray(pred, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"detections must be numbers, an (N, K, 3) array of x, y, score; got "
                         f"{type(pred).__name__}") from None
    if a.ndim != 3 or a.shape[0] != n_tiles or a.shape[2] != 3:
        raise ValueError(f"detections must have shape ({n_tiles}, K, 3) (per tile up to K = {max_candidates} "
                         f"candidates x, y, score, NaN-padded), got {a.shape}")
    if a.shape[1] > max_candidates:
        rows = np.flatnonzero(np.sum(~np.all(np.isnan(a), axis=2), axis=1) > max_candidates)
        if rows.size:
            n = int(np.sum(~np.all(np.isnan(a[rows[0]]), axis=1)))
            raise ValueError(f"tile {int(rows[0])} has {n} candidates, more than the track's K = {max_candidates}; "
                             f"keep the {max_candidates} best")
        a = _compact(a, max_candidates)  # at most K rows are used: the rest is padding
    pad = np.all(np.isnan(a), axis=2)
    bad = ~pad & ~np.all(np.isfinite(a), axis=2)
    if bad.any():
        t, k = (int(v[0]) for v in np.nonzero(bad))
        what = "score" if np.all(np.isfinite(a[t, k, :2])) else "x or y"
        raise ValueError(f"tile {t}, candidate {k}: non-finite {what} {a[t, k].tolist()} (NaN or inf); give "
                         "finite x, y, score, or NaN in all three to pad")
    x, y = a[..., 0], a[..., 1]
    out = ~pad & ((x < -0.5) | (x > tile_size - 0.5) | (y < -0.5) | (y > tile_size - 0.5))
    if out.any():
        t, k = (int(v[0]) for v in np.nonzero(out))
        raise ValueError(f"tile {t}, candidate {k}: (x, y) = ({x[t, k]:g}, {y[t, k]:g}) is outside the tile; pixel "
                         f"centres run from 0 to {tile_size - 1} (x along columns, y along rows)")
    if a.shape[1] < max_candidates:
        a = np.concatenate([a, np.full((n_tiles, max_candidates - a.shape[1], 3), np.nan)], axis=1)
    return a


def _compact(a: np.ndarray, k: int) -> np.ndarray:
    """Move each tile's non-padding rows first and cut to ``k`` rows (callers checked that at most k are used)."""
    out = np.full((a.shape[0], k, 3), np.nan)
    for t, rows in enumerate(a):
        used = rows[~np.all(np.isnan(rows), axis=1)]
        out[t, :len(used)] = used
    return out


def detections_from_csv(frame: Any, tile_ids: Sequence[int], max_candidates: int,
                        tile_size: int) -> np.ndarray:
    """The ``predictions`` CSV form, columns ``tile_id,x,y,score`` (one row per candidate), as the (N, K, 3) array of
    the tiles ``tile_ids`` (a tile with no row has no candidate); refuses unknown tiles and more than K per tile.
    ``frame``: a pandas DataFrame (not imported here: the sandboxed runner imports this module)."""
    need = ["tile_id", "x", "y", "score"]
    if missing := [c for c in need if c not in frame.columns]:
        raise ValueError(f"detections CSV: missing column(s) {missing}; the header must be {','.join(need)}")
    pos = {int(t): i for i, t in enumerate(tile_ids)}
    try:
        tiles = frame["tile_id"].to_numpy(dtype=np.int64)
        xys = frame[["x", "y", "score"]].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("detections CSV: tile_id must be integers and x, y, score numbers") from None
    if unknown := sorted(set(tiles.tolist()) - set(pos)):
        raise ValueError(f"detections CSV: tile_id {unknown[0]} is not a tile of this split "
                         f"({len(unknown)} unknown id(s))")
    counts = np.bincount([pos[t] for t in tiles.tolist()], minlength=len(pos))
    if counts.size and counts.max() > max_candidates:
        i = int(np.argmax(counts))
        raise ValueError(f"detections CSV: tile {int(tile_ids[i])} has {int(counts[i])} candidates, more than the "
                         f"track's K = {max_candidates}; keep the {max_candidates} best")
    out = np.full((len(pos), max_candidates, 3), np.nan)
    fill = np.zeros(len(pos), dtype=np.int64)
    for t, row in zip(tiles.tolist(), xys, strict=True):
        i = pos[t]
        out[i, fill[i]] = row
        fill[i] += 1
    return validate_detections(out, len(pos), max_candidates, tile_size)


def write_whole(folder: Path, texts: Mapping[str, str]) -> None:
    """Write each ``{name: text}`` into ``folder`` beside its old file, then swap them all in: a full or read-only
    disk, or a kill, leaves the previous files whole (never half a file, nor files of different runs). An OSError
    names the folder and says so."""
    folder.mkdir(parents=True, exist_ok=True)
    tmps = {name: folder / f".{name}.{secrets.token_hex(4)}.tmp" for name in texts}
    try:
        for name, text in texts.items():
            tmps[name].write_text(text)
        for name, tmp in tmps.items():
            os.replace(tmp, folder / name)
    except OSError as exc:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {', '.join(texts)} in {folder} ({exc.strerror or exc}); the "
                                 "previous files are kept") from exc


def swap_in(new: Path, dest: Path) -> None:
    """Put the folder ``new`` (built beside ``dest``, on its filesystem) at ``dest``: the old folder is renamed
    away, the new one renamed in, then the old one removed. If the new one cannot be renamed in, the old one is put
    back: a failure or a kill never leaves ``dest`` half-written, and leaves it missing only between two renames.
    A killed swap leaves ``.<name>.old-<pid>``, which :func:`skybench.release.writer.write_release` sweeps."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    had = dest.exists()
    if had:
        dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        if had:
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
