"""Scoring of the image-enhancement track: predicted images against the hidden truth images.

Metrics (:func:`skybench.tasks.enhance.metrics.image_metrics`; each the mean over images with a bootstrap 95% CI):
``psnr`` [dB] and ``ssim`` of the images after Schawinski et al.'s display stretch with the fixed flux range of
``label.display_stretch``, ``psnr_flux`` [dB] on the flux with the fixed range ``label.flux_data_range``,
``flux_rel_error``
(|relative total-flux error|, mean over bands), ``flux_bias`` (signed), ``size_rel_error`` and
``ellipticity_error`` (Gaussian-weighted second moments of the band sum, ``label.moments_sigma``) and ``chi2``
(per pixel, residual against the truth's known noise: sigma_truth^2 + truth/T). A method that invents structure
moves flux and moments and adds residual power beyond the truth's noise, so these show it even where PSNR may not.
The real-truth set (``evaluation.real_set``) gets the same metrics as ``real_<name>`` columns.

Files written to the organiser's folder: ``metrics.json``, ``per_object.csv`` (and ``per_object_real.csv``),
and the galleries ``gallery.png`` / ``gallery_real.png``: input, output, truth and residual of a fixed set of
objects (the ``label.gallery`` lowest ids). Participants see only ``outputs.png``
(:mod:`skybench.harness.visibility`, :func:`stream_artifacts`): the input and output of the first objects of the
published test stream under their stream ids, drawn from the public input and the submission's own output alone, so
they hold nothing of the truth and do not say which objects are real (a gallery per set would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from skybench.common import bootstrap_ci, check_indices, robust_sigma, stratified
from skybench.tasks.enhance.config import EnhanceTrack
from skybench.tasks.enhance.metrics import image_metrics, stretched_psnr, truth_variance

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit

N_RESAMPLES = 1000


def _rows(hidden: HiddenSplit, ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """(metadata of the objects ``ids`` in that order, their rows in release order)."""
    meta = hidden.meta()
    row = pd.Series(np.arange(len(meta)), index=meta["id"].to_numpy())
    missing = np.setdiff1d(ids, row.index)
    if missing.size:
        raise ValueError(f"{hidden}: ids without truth: {missing[:5].tolist()}")
    take = row.loc[np.asarray(ids)].to_numpy()
    return meta.iloc[take].reset_index(drop=True), take


def _aligned(hidden: HiddenSplit, ids: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(metadata, truth, degraded input) of the objects ``ids``, in that order."""
    meta, take = _rows(hidden, ids)
    return meta, hidden.array("truth")[take], hidden.inputs("images", np.asarray(ids))


def score_images(track: EnhanceTrack, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit,
                 out_dir: Path | None, suffix: str = "", strata: bool = False) -> dict[str, float]:
    """Metrics of ``predictions`` against the truth in ``hidden``; per-object table and gallery into ``out_dir``
    (None: none). With ``strata``, also the track's ``strata:`` metrics (:func:`stratified_images`)."""
    deg = track.label
    meta, truth, inputs = _aligned(hidden, np.asarray(ids))
    pred = np.asarray(predictions, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"predictions have shape {pred.shape}, the truth {truth.shape}")
    names = track.band_names
    sigma = meta[[f"sigma_truth_{b}" for b in names]].to_numpy(np.float64)
    total_time = [b.num_exposures * b.exposure_time for b in track.survey.bands]
    metrics, per = image_metrics(pred, truth, stretch_low=[deg.display_stretch["low"][b] for b in names],
                                 stretch_high=[deg.display_stretch["high"][b] for b in names],
                                 flux_range=[deg.flux_data_range[b] for b in names],
                                 variance=truth_variance(truth, sigma, total_time),
                                 pixel_scale=track.survey.pixel_scale, weight_sigma=deg.moments_sigma,
                                 n_resamples=N_RESAMPLES, seed=0)
    if strata:
        metrics |= stratified_images(track, meta, per)
    if out_dir is None:
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": meta["id"], **per}).to_csv(out_dir / f"per_object{suffix}.csv", index=False)
    order = np.argsort(meta["id"].to_numpy())[:deg.gallery]
    if order.size:
        _gallery(inputs[order], pred[order], truth[order], sigma[order], meta["id"].to_numpy()[order],
                 per["psnr"][order], out_dir / f"gallery{suffix}.png")
    return metrics


def score(track: EnhanceTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path | None) -> dict[str, float]:
    metrics = score_images(track, ids, predictions, truth, out_dir, strata=True)
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def score_real(track: EnhanceTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
               out_dir: Path | None) -> dict[str, float]:
    """The same metrics on the real-truth set, as ``real_<metric>`` columns."""
    metrics = score_images(track, real_ids, real_predictions, real_truth, out_dir, suffix="_real")
    return {f"real_{k}": v for k, v in metrics.items()}


def stratified_images(track: EnhanceTrack, meta: pd.DataFrame, per: dict[str, np.ndarray]) -> dict[str, float]:
    """Per bin of each stratum, the mean of every per-object metric with its bootstrap interval
    (``by_<column>_<bin>_<metric>``, ``_ci_low`` / ``_ci_high``) and ``n_objects``; ``meta`` and ``per`` share rows."""

    def per_bin(mask: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {"n_objects": int(mask.sum())}
        if mask.any():
            for name, values in per.items():
                v = np.asarray(values, dtype=np.float64)[mask]
                out[name] = float(np.mean(v))
                if np.all(np.isfinite(v)):  # an exact copy's PSNR is inf: no interval
                    out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(np.mean, v, n_resamples=N_RESAMPLES)
        return out

    return stratified(track.strata, {c: meta[c].to_numpy() for c in meta.columns}, per_bin)
def score_resamples(track: EnhanceTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """The primary metric on each resample: every metric of :func:`image_metrics` is a mean over images, so the
    per-image values are computed once and averaged over each resample's rows."""
    _, take = _rows(truth, np.asarray(ids))
    true_images = truth.array("truth")[take]
    pred = np.asarray(predictions, dtype=np.float64)
    if pred.shape != true_images.shape:
        raise ValueError(f"predictions have shape {pred.shape}, the truth {true_images.shape}")
    deg, names = track.label, track.band_names
    low, high = [deg.display_stretch["low"][b] for b in names], [deg.display_stretch["high"][b] for b in names]
    primary = track.metrics.primary
    if primary == "psnr":  # the one the benchmark ranks by, without the cost of SSIM and the moments
        values = stretched_psnr(pred, true_images, low, high)
    else:
        meta = _rows(truth, np.asarray(ids))[0]
        sigma = meta[[f"sigma_truth_{b}" for b in names]].to_numpy(np.float64)
        total_time = [b.num_exposures * b.exposure_time for b in track.survey.bands]
        values = image_metrics(pred, true_images, stretch_low=low, stretch_high=high,
                               flux_range=[deg.flux_data_range[b] for b in names],
                               variance=truth_variance(true_images, sigma, total_time),
                               pixel_scale=track.survey.pixel_scale, weight_sigma=deg.moments_sigma,
                               n_resamples=0)[1][primary]
    idx = check_indices(indices, len(values))
    with np.errstate(invalid="ignore"):  # inf (an exact copy) stays inf
        return values[idx].mean(axis=1)


def oracle(track: EnhanceTrack, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """The truth images of ``ids``."""
    return truth.array("truth")[_rows(truth, ids)[1]]


def _gallery(inputs: np.ndarray, pred: np.ndarray, truth: np.ndarray, sigma: np.ndarray, ids: np.ndarray,
             psnr: np.ndarray, path: Path) -> None:
    """Rows: objects; columns: input, output, truth (band sum, asinh of flux / noise) and residual / noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ids)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i in range(n):
        noise = float(np.sqrt(np.sum(sigma[i] ** 2)))
        stretch = [np.arcsinh(a[i].sum(axis=0) / noise) for a in (inputs, pred, truth)]
        vmax = float(np.percentile(stretch[2], 99.5))
        for j, (img, title) in enumerate(zip(stretch, ("input", "output", "truth"), strict=True)):
            axes[i, j].imshow(img, origin="lower", cmap="magma", vmin=-1.0, vmax=vmax)
            axes[i, j].set_title(f"{title} (id {ids[i]})" if j == 0 else title, fontsize=8)
        axes[i, 3].imshow((pred[i] - truth[i]).sum(axis=0) / noise, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5)
        axes[i, 3].set_title(f"residual/sigma, PSNR {psnr[i]:.1f}", fontsize=8)
    _save_grid(fig, axes, path)


def stream_artifacts(track: EnhanceTrack, ids: np.ndarray, predictions: np.ndarray, inputs: Path,
                     out_dir: Path) -> None:
    """``outputs.png``, the participant's gallery: the first ``label.gallery`` objects of the published test stream
    (``ids``, ``predictions`` in its order; ``inputs`` its public folder), simulated and real alike, under their
    stream ids."""
    from skybench.release.shards import ShardedArray

    k = min(track.label.gallery, len(ids))
    if k:
        _outputs(ShardedArray.open(Path(inputs), "images")[:k], np.asarray(predictions)[:k], np.asarray(ids)[:k],
                 Path(out_dir) / "outputs.png")


def _outputs(inputs: np.ndarray, pred: np.ndarray, ids: np.ndarray, path: Path) -> None:
    """The participant's gallery: input and output of each object (band sum, asinh of flux / noise), with the
    noise estimated from the public input (MAD) rather than the truth's sigma, so no hidden value shapes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ids)
    fig, axes = plt.subplots(n, 2, figsize=(4, 2.1 * n), squeeze=False)
    for i in range(n):
        band_sum = inputs[i].sum(axis=0)
        noise = robust_sigma(band_sum) or 1.0
        stretch = [np.arcsinh(a[i].sum(axis=0) / noise) for a in (inputs, pred)]
        vmax = max(float(np.percentile(stretch[0], 99.5)), 1.0)
        for j, (img, title) in enumerate(zip(stretch, ("input", "output"), strict=True)):
            axes[i, j].imshow(img, origin="lower", cmap="magma", vmin=-1.0, vmax=vmax)
            axes[i, j].set_title(f"{title} (id {ids[i]})" if j == 0 else title, fontsize=8)
    _save_grid(fig, axes, path)


def _save_grid(fig: Any, axes: np.ndarray, path: Path) -> None:
    """Save a gallery figure without ticks and close it."""
    import matplotlib.pyplot as plt

    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
