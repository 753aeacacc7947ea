"""Scoring of a generate track: the statistics of the generated maps against those of the hidden truth maps.

The truth reference is every hidden test map of the release (a sample of the truth process, whatever ``ids``);
the generated set is ``predictions`` (one map per latent vector, rows as given, repeats counted). Metrics
(:mod:`skybench.tasks.generate.metrics`):

* ``chi2_per_dof`` (primary, lower is better, an independent draw of the truth process scores ~1): the chi^2 of
  the mean summary vector (binned C_l, peak counts, V0, V1, V2; bins fixed from the truth maps) against the truth's
  mean with the truth's covariance (Hartlap-debiased), per degree of freedom; ``chi2_cl``, ``chi2_peaks``,
  ``chi2_minkowski``: the same for one statistic; ``chi2_per_dof_raw``: before the flag penalty;
* ``cl_rel_diff`` (mean |relative difference| of the mean C_l over l bins), ``pdf_ks`` and ``pdf_w1`` (pooled
  pixel PDF), each with a bootstrap interval over generated maps (``_ci_low`` / ``_ci_high``);
* ``memorised`` (1 when the maps are closer to the public maps, train and val, than held-out truth maps are:
  copies),
  ``collapsed`` (1 when the map-to-map C_l variance or the spread of the set is far below the truth's), with
  their statistics. **Rule**: a flagged generator's primary is ``chi2_per_dof_raw + label.flag_penalty``, so it
  ranks below every unflagged one (the Gaussian baseline included). The flags are checked on the distinct ids
  of ``ids`` (a bootstrap resample repeats objects; the evaluator never does), and :func:`score_resamples` keeps the
  flags of the whole set for every resample.

Participants see ``summary_stats.png`` (:func:`public_artifacts`): their maps' statistics against the public
training maps'; nothing from the hidden maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skybench.common import bootstrap_ci, check_indices
from skybench.release import layout
from skybench.release.reader import Release
from skybench.tasks.generate.config import GenerateScoring, GenerateTrack
from skybench.tasks.generate.metrics import (
    SummaryBins,
    as_maps,
    chi2_per_dof,
    cl_mean_abs_rel_diff,
    collapse_check,
    memorisation_check,
    pdf_distances,
    power_spectrum,
)

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit

PDF_BINS = 2000  # bins (equal shares of the truth's pixels) of the binned PDF distances behind their intervals


def bin_counts(label: GenerateScoring, n_truth: int) -> tuple[int, int, int]:
    """(C_l bins, peak bins, thresholds) of the summary vector: the track's, reduced (largest first, to 2 each)
    until its size D = n_ell + n_peaks + 3 n_thresholds is at most (n_truth - 3) / 2, so the truth covariance is
    estimable (Hartlap factor >= 1/2). ValueError when even the smallest vector needs more truth maps."""
    n_ell, n_peaks, n_thr = label.n_ell, label.n_peaks, label.n_thresholds
    budget = (n_truth - 3) // 2
    while n_ell + n_peaks + 3 * n_thr > budget and max(n_ell, n_peaks, n_thr) > 2:
        if n_thr > 2 and 3 * n_thr >= max(n_ell, n_peaks):
            n_thr -= 1
        elif n_ell >= n_peaks:
            n_ell -= 1
        else:
            n_peaks -= 1
    d = n_ell + n_peaks + 3 * n_thr
    if d > budget:
        raise ValueError(f"{n_truth} truth maps are too few for the chi^2 score: the smallest summary vector "
                         f"({d} components) needs at least {2 * d + 3}")
    return n_ell, n_peaks, n_thr


@dataclass(frozen=True)
class Reference:
    """What every score of one truth set shares: its maps, bins and summary vectors."""

    maps: np.ndarray  # (Nt, H, W)
    bins: SummaryBins
    vectors: np.ndarray  # (Nt, D)

    @classmethod
    def of(cls, track: GenerateTrack, truth: HiddenSplit) -> Reference:
        maps = as_maps(np.asarray(truth.array("maps")[:]), "truth maps")
        n_ell, n_peaks, n_thr = bin_counts(track.label, maps.shape[0])
        bins = SummaryBins.from_truth(maps, track.population.size_deg, n_ell=n_ell, n_peaks=n_peaks,
                                      n_thresholds=n_thr)
        return cls(maps, bins, bins.vectors(maps))


def _train_maps(truth: HiddenSplit) -> np.ndarray:
    """Every public map of the release, train and val (what a memorising generator can copy), but those of the
    truth's own split (``skybench validate --score`` scores against the val maps)."""
    root, _, own = layout.release_of(truth.folder)
    rel = Release(root)
    public = [np.asarray(rel.array(split, "maps")[:]) for split in ("train", "val")
              if split != own and rel.manifest["counts"][split]]
    return as_maps(np.concatenate(public), "public maps")


def _generated(track: GenerateTrack, predictions: np.ndarray, ids: np.ndarray) -> np.ndarray:
    n = track.population.n_pix
    g = np.asarray(predictions, dtype=np.float64)
    if g.shape != (len(ids), 1, n, n):
        raise ValueError(f"predictions have shape {g.shape}, expected {(len(ids), 1, n, n)} (one map per id)")
    return g[:, 0]


def flags(track: GenerateTrack, gen: np.ndarray, ids: np.ndarray, ref: Reference, train: np.ndarray
          ) -> dict[str, float]:
    """The memorisation and collapse checks on the maps of the distinct ``ids``."""
    first = np.unique(np.asarray(ids), return_index=True)[1]
    g = gen[np.sort(first)]
    mem = memorisation_check(g, train, ref.maps, alpha=track.label.memorisation_alpha)
    col = collapse_check(g, ref.maps, track.population.size_deg, ref.bins.ell_edges,
                         min_ratio=track.label.collapse_min_ratio)
    return {"memorised": float(mem.flagged), "memorisation_p_value": mem.p_value,
            "closer_to_train": mem.closer_to_train, "closer_to_train_expected": mem.expected,
            "nn_train_distance_ratio": mem.median_ratio, "collapsed": float(col.flagged),
            "cl_variance_ratio": col.median_variance_ratio, "duplicate_ratio": col.duplicate_ratio}


def _pdf_histograms(gen: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per generated map, its pixel counts in PDF_BINS bins holding equal shares of the truth's pixels (outer
    bins open), with the truth's CDF at the inner edges and the bins' widths: a bootstrap resample's binned KS and
    W1 are then sums over rows (the intervals of ``pdf_ks`` and ``pdf_w1``)."""
    t = truth.ravel()
    edges = np.unique(np.quantile(t, np.linspace(0, 1, PDF_BINS + 1)))
    inner = edges[1:-1]
    n = gen.shape[0]
    idx = np.searchsorted(inner, gen.reshape(n, -1), side="right")  # bin 0 .. len(inner)
    k = len(inner) + 1
    hist = np.bincount((idx + k * np.arange(n)[:, None]).ravel(), minlength=k * n).reshape(n, k).astype(float)
    ref_cdf = np.searchsorted(np.sort(t), inner, side="right") / t.size
    return hist, ref_cdf, np.diff(inner)


def _binned_pdf_distances(counts: np.ndarray, ref_cdf: np.ndarray, widths: np.ndarray) -> tuple[float, float]:
    """(KS, W1) between the pixel counts ``counts`` and the truth's CDF at the same bins' inner edges."""
    cdf = np.cumsum(counts)[:-1] / counts.sum()
    diff = np.abs(cdf - ref_cdf)
    return float(diff.max()), float(np.sum(0.5 * (diff[1:] + diff[:-1]) * widths))


def _chi2(gen_vectors: np.ndarray, ref: Reference, part: slice | list[slice] | None = None) -> float:
    cols = np.r_[tuple(part)] if isinstance(part, list) else (part if part is not None else slice(None))
    t = ref.vectors[:, cols]
    return chi2_per_dof(gen_vectors[:, cols], t).per_dof


def score_maps(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               train: np.ndarray, ref: Reference | None = None, with_chi2: bool = True) -> dict[str, float]:
    """Every metric of the generated maps ``predictions`` (aligned with ``ids``) against ``truth``'s maps."""
    label = track.label
    gen = _generated(track, predictions, ids)
    ref = ref or Reference.of(track, truth)
    out: dict[str, float] = {"n_maps": float(len(gen))}
    size = track.population.size_deg
    edges = ref.bins.ell_edges
    cl_g, cl_t = power_spectrum(gen, size, edges).cl, power_spectrum(ref.maps, size, edges).cl
    mean_t = cl_t.mean(axis=0)
    out["cl_rel_diff"] = cl_mean_abs_rel_diff(cl_g.mean(axis=0), mean_t)
    out["pdf_ks"], out["pdf_w1"] = pdf_distances(gen, ref.maps)
    rows = np.arange(len(gen))
    if label.n_bootstrap:
        out["cl_rel_diff_ci_low"], out["cl_rel_diff_ci_high"] = bootstrap_ci(
            lambda r: cl_mean_abs_rel_diff(cl_g[r].mean(axis=0), mean_t), rows, n_resamples=label.n_bootstrap)
        hist, ref_cdf, widths = _pdf_histograms(gen, ref.maps)
        for k, name in enumerate(("pdf_ks", "pdf_w1")):
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(
                lambda r, k=k: _binned_pdf_distances(hist[r].sum(axis=0), ref_cdf, widths)[k], rows,
                n_resamples=label.n_bootstrap)
    out |= flags(track, gen, ids, ref, train)
    if not with_chi2:
        return out
    vec = ref.bins.vectors(gen)
    sl = ref.bins.slices
    raw = _chi2(vec, ref)
    out["chi2_per_dof_raw"] = raw
    out["chi2_cl"], out["chi2_peaks"] = _chi2(vec, ref, sl["cl"]), _chi2(vec, ref, sl["peaks"])
    out["chi2_minkowski"] = _chi2(vec, ref, [sl["v0"], sl["v1"], sl["v2"]])
    penalty = label.flag_penalty if out["memorised"] or out["collapsed"] else 0.0
    out["chi2_per_dof"] = raw + penalty
    if label.n_bootstrap:
        out["chi2_per_dof_ci_low"], out["chi2_per_dof_ci_high"] = (
            v + penalty for v in bootstrap_ci(lambda r: _chi2(vec[r], ref), rows, n_resamples=label.n_bootstrap))
    return out


def score(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path) -> dict[str, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = score_maps(track, ids, predictions, truth, _train_maps(truth))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def score_real(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
               out_dir: Path) -> dict[str, float]:
    """The same metrics against a second truth set (``real_<metric>``); the chi^2 only where that set has enough
    maps for its covariance."""
    ref_maps = as_maps(np.asarray(real_truth.array("maps")[:]), "real truth maps")
    try:
        n_ell, n_peaks, n_thr = bin_counts(track.label, ref_maps.shape[0])
        bins = SummaryBins.from_truth(ref_maps, track.population.size_deg, n_ell=n_ell, n_peaks=n_peaks,
                                      n_thresholds=n_thr)
        with_chi2 = True
    except ValueError:
        from skybench.tasks.generate.metrics import ell_bins

        bins = SummaryBins(track.population.size_deg, ell_bins(ref_maps.shape[-1], track.population.size_deg,
                                                               track.label.n_ell), np.array([-np.inf, np.inf]),
                           np.zeros(1))
        with_chi2 = False
    ref = Reference(ref_maps, bins, bins.vectors(ref_maps) if with_chi2 else np.zeros((len(ref_maps), 0)))
    metrics = score_maps(track, real_ids, real_predictions, real_truth, _train_maps(truth), ref, with_chi2)
    return {f"real_{k}": v for k, v in metrics.items()}


def score_resamples(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """The primary on each resample: summary vectors once per map, the chi^2 of each resample's mean vector; the
    flags (and so the penalty) of the whole set."""
    gen = _generated(track, predictions, ids)
    ref = Reference.of(track, truth)
    vec = ref.bins.vectors(gen)
    f = flags(track, gen, ids, ref, _train_maps(truth))
    penalty = track.label.flag_penalty if f["memorised"] or f["collapsed"] else 0.0
    idx = check_indices(indices, len(gen))
    return np.array([_chi2(vec[rows], ref) + penalty for rows in idx])


def oracle(track: GenerateTrack, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """The hidden truth maps of ``ids`` (the truth process itself; chi^2 0 against itself)."""
    meta_ids = truth.ids()
    pos = {v: i for i, v in enumerate(meta_ids.tolist())}
    take = np.array([pos[i] for i in np.asarray(ids).tolist()], dtype=np.int64)
    return np.asarray(truth.array("maps")[:])[take]


def public_artifacts(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                     out_dir: Path) -> None:
    """``summary_stats.png``: C_l, pixel PDF and peak counts of the generated maps against the public training
    maps' (no hidden map enters it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skybench.tasks.generate.metrics import ell_bins, peak_counts

    gen, train = _generated(track, predictions, ids), _train_maps(truth)
    size = track.population.size_deg
    edges = ell_bins(train.shape[-1], size, track.label.n_ell)
    ps_g, ps_t = power_spectrum(gen, size, edges), power_spectrum(train, size, edges)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    for cl, name in ((ps_t.cl, "training maps"), (ps_g.cl, "generated")):
        ax[0].errorbar(ps_t.ell, cl.mean(axis=0), cl.std(axis=0), label=name, capsize=2)
    ax[0].set(xscale="log", yscale="log", xlabel="l", ylabel="C_l", title="power spectrum")
    lo, hi = np.quantile(train, [0.001, 0.999])
    bins = np.linspace(lo, hi, 60)
    for m, name in ((train, "training maps"), (gen, "generated")):
        ax[1].hist(m.ravel(), bins=bins, density=True, histtype="step", label=name)
    ax[1].set(yscale="log", xlabel="kappa", title="pixel PDF")
    peak_edges = np.r_[-np.inf, np.linspace(lo, hi, 12), np.inf]
    centres = np.r_[lo, 0.5 * (peak_edges[1:-2] + peak_edges[2:-1]), hi]
    for m, name in ((train, "training maps"), (gen, "generated")):
        ax[2].plot(centres, peak_counts(m, peak_edges).mean(axis=0), "o-", label=name)
    ax[2].set(xlabel="peak height kappa", ylabel="peaks per map", title="peak counts")
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "summary_stats.png", dpi=80)
    plt.close(fig)
