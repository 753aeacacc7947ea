"""Scoring of the photometric-redshift tracks: point metrics, PDF metrics and the diagnostic plots.

A submission returns either a point estimate z_phot of shape (N,) or bin probabilities of shape (N, K) on the
track's grid (``output.grid``); a PDF's point estimate is its ``output.point_estimate`` (mean by default).
Written to ``out_dir``, the organiser's folder: ``metrics.json``, ``zphot.csv`` (id, z_spec, z_phot, dz),
``zphot_vs_zspec.png``, ``dz_vs_zspec.png`` and, for a PDF, ``pit.csv`` and ``pit.png``. All of them are built
from per-object truth, so participants see only the aggregate metrics (:mod:`skybench.harness.visibility`): a PIT
histogram of 20 bins is 20 more numbers to probe the truth with, and a submission that encodes each object's
identity in its z_phot turns the z_phot-vs-z_spec plots into a lookup table of z_spec. A real set
(``evaluation.real_set``: a release whose hidden metadata has the spectroscopic redshift) gets the same metrics as
``real_<name>``, and the same files with the suffix ``_real``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from skybench.common import check_indices, on_resamples, stratified, stratum_key, stratum_masks
from skybench.tasks.photoz.config import PhotozTrack
from skybench.tasks.photoz.metrics import (
    _sigma_total_and_mad,
    pdf_grid,
    pdf_point_estimate,
    photoz_dz,
    photoz_metrics,
    pit,
    validate_pdf,
)

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit

PIT_BINS = 20


def point_and_pdf(track: PhotozTrack,
                  predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(z_phot, pdf or None, bin edges or None) from a submission's output; raises ``ValueError`` for a bad PDF.

    A point estimate below 0 counts as 0 (a galaxy's redshift): dz = (z_phot - z_spec) / (1 + z_spec) is -1 for
    every object at z_phot = -1, a sigma_MAD of 0 whatever the labels, and near it (z_phot = c > -1) sigma_MAD is
    about (1 + c) that of a constant 0, far below any real model's for c near -1."""
    pred = np.asarray(predictions, dtype=np.float64)
    if pred.ndim == 1:
        return np.maximum(pred, 0.0), None, None
    if track.output.grid is None:
        raise ValueError(f"track {track.name!r} declares no PDF grid; return a point estimate of shape (N,)")
    centres, edges = pdf_grid(track.output.grid)
    pdf = validate_pdf(pred, len(centres))
    return pdf_point_estimate(pdf, centres, track.output.point_estimate), pdf, edges


def true_redshifts(track: PhotozTrack, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """The spectroscopic redshifts (the label column) of ``ids``, in that order."""
    name = track.label.name
    return truth.truth(ids, [name])[name].to_numpy(np.float64)


def score(track: PhotozTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path | None) -> dict[str, float]:
    z_spec = true_redshifts(track, truth, ids)
    metrics = score_photoz(track, ids, z_spec, predictions, out_dir)
    if track.strata:
        columns = sorted({s.column for s in track.strata} - {track.label.name})
        table = truth.truth(ids, columns) if columns else pd.DataFrame(index=pd.Index(ids))
        metrics |= stratified_photoz(track, table, z_spec, predictions, out_dir)
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def score_real(track: PhotozTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
               out_dir: Path | None) -> dict[str, float]:
    """The same metrics on the real set's spectroscopic redshifts, as ``real_<metric>`` columns."""
    z = true_redshifts(track, real_truth, real_ids)
    metrics = score_photoz(track, real_ids, z, real_predictions, out_dir, suffix="_real")
    return {f"real_{k}": v for k, v in metrics.items()}


def oracle(track: PhotozTrack, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """z_spec itself: a point estimate is a valid output of a PDF track too, and no binned PDF is as exact."""
    return true_redshifts(track, truth, ids)


def score_resamples(track: PhotozTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """The primary metric on each resample: sigma_total or sigma_MAD (as :func:`photoz_metrics`: of dz = (z_phot -
    z_spec) / (1 + z_spec)) by medians along the resample axis; any other metric of :func:`photoz_metrics` by the
    generic loop."""
    z_spec = true_redshifts(track, truth, ids)
    z_phot, pdf, edges = point_and_pdf(track, predictions)
    primary = track.metrics.primary
    idx = check_indices(indices, len(z_spec))
    if primary in ("sigma_total", "sigma_mad"):
        dz = photoz_dz(z_phot, z_spec)
        out = np.empty(idx.shape[0])
        step = max(1, 4_000_000 // max(idx.shape[1], 1))
        for lo in range(0, idx.shape[0], step):
            out[lo:lo + step] = _sigma_total_and_mad(dz[idx[lo:lo + step]], axis=1)[primary == "sigma_mad"]
        return out
    if pdf is None:
        return on_resamples(lambda zs, zp: photoz_metrics(zs, zp, n_resamples=0)[primary], idx, z_spec, z_phot)
    return on_resamples(lambda zs, zp, p: photoz_metrics(zs, zp, p, edges, n_resamples=0)[primary], idx, z_spec,
                        z_phot, pdf)


def score_photoz(track: PhotozTrack, ids: np.ndarray, z_spec: np.ndarray, predictions: np.ndarray,
                 out_dir: Path | None, suffix: str = "") -> dict[str, float]:
    """Metrics of ``predictions`` against ``z_spec``; per-object table, PIT histogram and plots into ``out_dir``
    (file names ending in ``suffix``; None: none)."""
    z_phot, pdf, edges = point_and_pdf(track, predictions)
    metrics = photoz_metrics(z_spec, z_phot, pdf, edges, n_resamples=1000, seed=0)
    if out_dir is None:
        return metrics
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dz = photoz_dz(z_phot, z_spec)
    pd.DataFrame({"id": ids, "z_spec": z_spec, "z_phot": z_phot, "dz": dz}).to_csv(out_dir / f"zphot{suffix}.csv",
                                                                                 index=False)
    pit_values = pit(pdf, edges, z_spec) if pdf is not None and edges is not None else None
    if pit_values is not None:
        counts, bins = np.histogram(pit_values, bins=PIT_BINS, range=(0, 1))
        pd.DataFrame({"low": bins[:-1], "high": bins[1:], "count": counts}).to_csv(out_dir / f"pit{suffix}.csv",
                                                                                   index=False)
    _plot(z_spec, z_phot, dz, pit_values, metrics, track, out_dir, suffix)
    return metrics


def stratified_photoz(track: PhotozTrack, table: pd.DataFrame, z_spec: np.ndarray, predictions: np.ndarray,
                      out_dir: Path | None) -> dict[str, float]:
    """The track's metrics in each bin of its ``strata:`` (``by_<column>_<bin>_<metric>``, sigma_MAD with its
    bootstrap interval, ``n_objects``); for a PDF, the local PIT: each bin's ``pit_ks`` beside the global one, and
    its PIT histogram in ``pit_strata.csv`` / ``.png`` (organiser only, like the global one). ``table``: the hidden
    columns of the objects, in the order of ``z_spec``; the label column is ``z_spec`` itself."""
    z_phot, pdf, edges = point_and_pdf(track, predictions)
    keep = {*track.metrics.report, "sigma_mad_ci_low", "sigma_mad_ci_high", "sigma_total_ci_low",
            "sigma_total_ci_high", "n_objects"}
    columns = {c: table[c].to_numpy() for c in table.columns} | {track.label.name: z_spec}

    def per_bin(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {"n_objects": 0}
        m = photoz_metrics(z_spec[mask], z_phot[mask], None if pdf is None else pdf[mask], edges,
                           n_resamples=1000, seed=0)
        return {k: v for k, v in m.items() if k in keep}

    metrics = stratified(track.strata, columns, per_bin)
    if pdf is not None and edges is not None and out_dir is not None:
        pit_values = pit(pdf, edges, z_spec)
        rows = []
        for st in track.strata:
            for label, mask in stratum_masks(st.edges, st.values, columns[st.column]):
                counts, bins = np.histogram(pit_values[mask], bins=PIT_BINS, range=(0, 1))
                rows += [{"column": st.column, "bin": label, "low": lo, "high": hi, "count": c}
                         for lo, hi, c in zip(bins[:-1], bins[1:], counts, strict=True)]
        hist = pd.DataFrame(rows, columns=["column", "bin", "low", "high", "count"])
        hist.to_csv(out_dir / "pit_strata.csv", index=False)
        _plot_local_pit(hist, metrics, out_dir / "pit_strata.png")
    return metrics


def _plot_local_pit(hist: pd.DataFrame, metrics: dict[str, float], path: Path) -> None:
    """One panel per stratum: the PIT density of each bin (a calibrated PDF is flat at 1), KS in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(hist.groupby("column", sort=False))
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, (column, g) in zip(axes[0], groups, strict=True):
        for label, b in g.groupby("bin", sort=False):
            n = b["count"].sum()
            if n:
                ks = metrics.get(stratum_key(str(column), str(label), "pit_ks"), float("nan"))
                ax.stairs(b["count"] / n * len(b), np.r_[b["low"].to_numpy(), b["high"].iloc[-1]],
                          label=f"{label} (KS {ks:.3f})")
        ax.axhline(1.0, c="k", ls="--", lw=0.8)
        ax.set(xlabel="PIT", ylabel="density", title=f"local PIT by {column}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot(z_spec: np.ndarray, z_phot: np.ndarray, dz: np.ndarray, pit_values: np.ndarray | None, metrics: dict,
          track: PhotozTrack, out_dir: Path, suffix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    hi = float(track.output.grid[1]) if track.output.grid else float(max(z_spec.max(), z_phot.max()))
    hi = max(hi, float(np.percentile(z_spec, 99.5)))
    title = (f"sigma_MAD {metrics['sigma_mad']:.4f}  bias {metrics['bias_mean']:+.4f}  "
             f"eta {100 * metrics['outlier_frac']:.2f}%")
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.hist2d(z_spec, z_phot, bins=80, range=[[0, hi], [0, hi]], cmap="viridis", norm=LogNorm(), cmin=1)
    ax.plot([0, hi], [0, hi], c="w", lw=0.8, ls="--")
    ax.set(xlabel="z_spec", ylabel="z_phot", title=title)
    ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(out_dir / f"zphot_vs_zspec{suffix}.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist2d(z_spec, np.clip(dz, -0.15, 0.15), bins=[80, 60], range=[[0, hi], [-0.15, 0.15]], cmap="viridis",
              norm=LogNorm(), cmin=1)
    for y in (0.0,):
        ax.axhline(y, c="w", lw=0.8, ls="--")
    for y in (-0.05, 0.05):
        ax.axhline(y, c="r", lw=0.6, ls=":")
    ax.set(xlabel="z_spec", ylabel="dz = (z_phot - z_spec) / (1 + z_spec)", title=title)
    ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(out_dir / f"dz_vs_zspec{suffix}.png", dpi=100)
    plt.close(fig)

    if pit_values is not None:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        ax.hist(pit_values, bins=PIT_BINS, range=(0, 1), density=True, histtype="stepfilled", alpha=0.7)
        ax.axhline(1.0, c="k", ls="--", lw=0.8)
        ax.set(xlabel="PIT", ylabel="density", title=f"PIT (KS {metrics['pit_ks']:.3f}, CRPS {metrics['crps']:.4f})")
        fig.tight_layout()
        fig.savefig(out_dir / f"pit{suffix}.png", dpi=100)
        plt.close(fig)
