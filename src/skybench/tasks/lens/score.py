"""Scoring of the lens tracks: Metcalf et al. 2019's metrics, the ROC curve, completeness in bins of Einstein
radius and arc S/N, and, at the threshold of 1% false positives on the simulated test set, the recall of real lenses
and the false-positive rate of real non-lenses, with the AUROC of real lenses against real non-lenses.

Written to ``out_dir``, the organiser's folder: ``metrics.json``, ``roc.csv`` / ``roc.png`` and
``completeness.csv`` / ``.png``; participants see only :func:`public_artifacts` (``roc_public.*``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from skybench.common import on_resamples, percentile_interval, proportion_ci, stratified, wilson_interval
from skybench.tasks.lens.metrics import (
    BOOTSTRAPPED,
    completeness_by_bin,
    lens_metrics,
    roc_curve,
    roc_on_grid,
    roc_resamples,
    threshold_at_fpr,
)
from skybench.tracks import Stratum, Track

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit

INTERVAL_METRICS = BOOTSTRAPPED  # lens_metrics' intervals: the leaderboard shows them (Task.interval_metrics)
COMPLETENESS_FPR = 0.01  # completeness and real-lens recall use the threshold giving 1% false positives
THETA_E_BINS = np.array([0.0, 0.6, 0.9, 1.2, 1.5, 2.0, 3.0])
SNR_BINS = np.array([0.0, 10, 20, 40, 80, 160, 1e6])


def score(track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path | None) -> dict[str, float]:
    return score_lens(truth.truth(ids), np.asarray(predictions, dtype=np.float64), out_dir, strata=track.strata)


def score_real(track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit, real_ids: np.ndarray,
               real_predictions: np.ndarray, real_truth: HiddenSplit, out_dir: Path | None) -> dict[str, float]:
    """The real set's metrics at the entry's threshold of FPR = 1% on the simulated test set: ``real_lens_recall``
    (its real lenses, ``is_lens = 1``) and ``real_fpr`` (its real non-lenses, ``is_lens = 0``), each with its
    Wilson 95% interval (``_ci_low``/``_ci_high``: a few dozen objects make a wide one), and ``real_auroc`` (real
    lenses against real non-lenses) with a stratified bootstrap interval. NaN where the real set lacks the
    objects a metric needs (lens-ground has no real lenses: see its YAML)."""
    real = np.asarray(real_predictions, dtype=np.float64)
    labels = real_truth.truth(real_ids)["is_lens"].to_numpy().astype(int)
    cut = threshold_at_fpr(truth.truth(ids)["is_lens"].to_numpy().astype(int),
                           np.asarray(predictions, dtype=np.float64), COMPLETENESS_FPR)
    out: dict[str, float] = {}
    for name, sel in (("real_lens_recall", labels == 1), ("real_fpr", labels == 0)):
        k, n = int(np.count_nonzero(real[sel] >= cut)), int(sel.sum())
        low, high = wilson_interval(k, n)
        out |= {name: k / n if n else float("nan"), f"{name}_ci_low": low, f"{name}_ci_high": high}
    auc, low, high = real_auroc(labels, real)
    return out | {"real_auroc": auc, "real_auroc_ci_low": low, "real_auroc_ci_high": high}


REAL_AUROC_RESAMPLES = 2000


def real_auroc(labels: np.ndarray, scores: np.ndarray, n_resamples: int = REAL_AUROC_RESAMPLES,
               seed: int = 0) -> tuple[float, float, float]:
    """AUROC of the real lenses (label 1) against the real non-lenses (label 0), ``sklearn.metrics.roc_auc_score``,
    and its 95% percentile bootstrap interval, resampling the lenses and the non-lenses separately (stratified: each
    resample keeps both classes and their counts). (NaN, NaN, NaN) without both classes."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(pos) or not len(neg):
        return float("nan"), float("nan"), float("nan")
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(pos, (n_resamples, len(pos))), rng.choice(neg, (n_resamples, len(neg)))], axis=1)
    # Efron & Tibshirani 1993, Sec. 13.3: percentile interval of the resampled AUROCs
    low, high = percentile_interval(roc_resamples(y, s, idx, ("auroc",))["auroc"], 0.05)
    return auc, low, high


def oracle(track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """Perfect scores: the label itself."""
    return truth.truth(ids, ["is_lens"])["is_lens"].to_numpy().astype(np.float64)


def score_resamples(track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """The primary metric on each resample: AUROC or a TPR at fixed false positives by one sort and counts per
    resample (:func:`roc_resamples`); any other metric of :func:`lens_metrics` by the generic loop (NaN on a
    resample without both classes)."""
    labels = truth.truth(ids, ["is_lens"])["is_lens"].to_numpy().astype(int)
    scores = np.asarray(predictions, dtype=np.float64)
    primary = track.metrics.primary
    if primary in BOOTSTRAPPED:
        return roc_resamples(labels, scores, indices, (primary,))[primary]
    return on_resamples(lambda y, s: lens_metrics(y, s, n_resamples=0)[primary], indices, labels, scores)


def public_artifacts(track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                     out_dir: Path) -> None:
    """The participant's ROC curve: ``roc_public.csv`` / ``.png``, sampled at the fixed FPRs of
    :func:`skybench.tasks.lens.metrics.roc_on_grid` on the objects ``ids`` (the public part), so its size and its
    points never depend on how many distinct scores a submission gives."""
    labels = truth.truth(ids, ["is_lens"])["is_lens"]
    fpr, tpr = roc_on_grid(labels.to_numpy().astype(int), np.asarray(predictions, dtype=np.float64))
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(out_dir / "roc_public.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, "o-")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (public part, fixed FPRs)")
    fig.tight_layout()
    fig.savefig(out_dir / "roc_public.png", dpi=100)
    plt.close(fig)


def score_lens(truth: pd.DataFrame, scores: np.ndarray, out_dir: Path | None,
               strata: Sequence[Stratum] = ()) -> dict[str, float]:
    """The metrics; with ``out_dir``, also the ROC and completeness tables and plots and ``metrics.json``."""
    labels = truth["is_lens"].to_numpy().astype(int)
    metrics = lens_metrics(labels, scores, n_resamples=1000, seed=0)
    metrics |= stratified_lens(truth, labels, scores, strata)
    if out_dir is None:
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    fpr, tpr, thr = roc_curve(labels, scores)
    pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}).to_csv(out_dir / "roc.csv", index=False)
    cut = threshold_at_fpr(labels, scores, COMPLETENESS_FPR)
    tables = {}
    for column, bins in (("lens_theta_E", THETA_E_BINS), ("arc_snr", SNR_BINS)):
        if column not in truth.columns:  # a labels-only release (skybench import-bologna)
            continue
        c = completeness_by_bin(labels, scores, cut, truth[column].to_numpy(), bins)
        tables[column] = pd.DataFrame({"low": c["bin_edges"][:-1], "high": c["bin_edges"][1:], "n_lens": c["n_lens"],
                                       "completeness": c["completeness"]})
    if tables:
        pd.concat(tables, names=["quantity"]).to_csv(out_dir / "completeness.csv")
    _plot(fpr, tpr, metrics, tables, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


CONTAMINANTS = ("ring", "arclet", "companion")


def contaminant_mask(truth: pd.DataFrame, kind: str) -> np.ndarray:
    """Objects of contaminant type ``kind``: those with that type alone (``has_<kind>``), ``several`` with two or
    more, ``none`` with none. Exclusive bins: with an object in each type it has, the bins' counts less the part's
    named the few objects counted twice, a group the small-cell rule cannot see (``visibility._complement``)."""
    has = {c: truth[f"has_{c}"].to_numpy().astype(bool) for c in CONTAMINANTS}
    n = np.sum(list(has.values()), axis=0)
    if kind in ("none", "several"):
        return n == 0 if kind == "none" else n >= 2
    if kind not in has:
        raise ValueError(f"unknown contaminant type {kind!r}; choose from "
                         f"{', '.join((*CONTAMINANTS, 'several', 'none'))}")
    return has[kind] & (n == 1)


def stratified_lens(truth: pd.DataFrame, labels: np.ndarray, scores: np.ndarray,
                    strata: Sequence[Stratum]) -> dict[str, float]:
    """Per bin of each stratum, at the entry's FPR = 1% threshold over the whole set scored (fixed, so the interval
    is the Wilson one of a proportion given that threshold): ``tpr_fpr1`` (completeness of the bin's lenses)
    with ``_ci_low`` / ``_ci_high``, ``tpr0`` (at the threshold before the first false positive), ``fpr_fpr1`` (the
    bin's non-lenses scored above the threshold) with its interval, ``n_lens`` and ``n_nonlens``. NaN (empty)
    values are left out."""
    if not strata or set(truth.columns) <= {"id", "is_lens"}:  # labels only (skybench import-bologna): no strata
        return {}
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    cut = threshold_at_fpr(y.astype(int), s, COMPLETENESS_FPR)
    cut0 = threshold_at_fpr(y.astype(int), s, 0.0)

    def per_bin(mask: np.ndarray) -> dict[str, float]:
        lens, non = mask & y, mask & ~y
        out: dict[str, float] = {"n_lens": int(lens.sum()), "n_nonlens": int(non.sum())}
        for name, sel in (("tpr_fpr1", lens), ("fpr_fpr1", non)):
            if sel.any():
                p = proportion_ci(s[sel] >= cut)
                out |= {name: p["value"], f"{name}_ci_low": p["ci_low"], f"{name}_ci_high": p["ci_high"]}
        if lens.any():
            out["tpr0"] = float(np.mean(s[lens] >= cut0))
        return out

    table = {c: truth[c].to_numpy() for c in {st.column for st in strata} if c in truth.columns}
    return stratified(strata, table, per_bin, derived={"contaminant": lambda v: contaminant_mask(truth, v)})


def _plot(fpr: np.ndarray, tpr: np.ndarray, metrics: dict, tables: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
           title=f"AUROC {metrics['auroc']:.4f} [{metrics['auroc_ci_low']:.3f}, {metrics['auroc_ci_high']:.3f}]")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    if not tables:  # a labels-only release: no theta_E or arc S/N to bin
        return
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
    for ax, (column, table) in zip(axes, tables.items(), strict=True):
        centres = np.where(table.high < 1e5, (table.low + table.high) / 2, table.low * 1.5)
        ax.plot(centres, table.completeness, "o-")
        ax.set(xlabel={"lens_theta_E": "theta_E [arcsec]", "arc_snr": "arc S/N"}[column], ylim=(0, 1.05))
    axes[0].set_ylabel(f"completeness at FPR = {COMPLETENESS_FPR:g}")
    fig.tight_layout()
    fig.savefig(out_dir / "completeness.png", dpi=100)
    plt.close(fig)


def real_lens_found(truth: pd.DataFrame, scores: np.ndarray, real_scores: np.ndarray) -> tuple[int, int]:
    """(real lenses scored at or above the threshold that gives FPR = 1% on the simulated test set, real lenses)."""
    cut = threshold_at_fpr(truth["is_lens"].to_numpy().astype(int), np.asarray(scores, float), COMPLETENESS_FPR)
    real = np.asarray(real_scores, float)
    return int(np.count_nonzero(real >= cut)), int(real.size)


def real_lens_recall(truth: pd.DataFrame, scores: np.ndarray, real_scores: np.ndarray) -> float:
    """Fraction of real lenses scored at or above the threshold that gives FPR = 1% on the simulated test set."""
    found, n = real_lens_found(truth, scores, real_scores)
    return found / n if n else float("nan")
