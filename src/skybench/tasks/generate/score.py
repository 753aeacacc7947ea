"""Scoring of a generate track: the statistics of the generated maps against those of the hidden truth maps.

The truth reference is the hidden maps of the distinct ``ids`` scored (:func:`truth_mask`): every test map for the
whole test set, only the public part's for the public part (``evaluation.public_fraction``), so no public metric
depends on a private map; a bootstrap resample (:func:`score_resamples`, with ``ids`` the part and ``indices``
positions into it) keeps the part's reference. The generated set is ``predictions`` (one map per latent vector,
rows as given, repeats counted). Metrics (:mod:`skybench.tasks.generate.metrics`):

* ``chi2_per_dof`` (primary, lower is better, an independent draw of the truth process scores ~1): the chi^2 of
  the summary vectors (binned C_l, peak counts, V0, V1, V2; bins fixed from the truth maps) against the truth's,
  their mean (with the truth's covariance, Hartlap-debiased; ``chi2_mean``) and the spread of each component
  (``chi2_spread``), per degree of freedom (:func:`~skybench.tasks.generate.metrics.chi2_per_dof`); ``chi2_cl``,
  ``chi2_peaks``, ``chi2_minkowski``: the same for one statistic; ``chi2_per_dof_raw``: before the flag penalty;
* ``cl_rel_diff`` (mean |relative difference| of the mean C_l over l bins), ``pdf_ks`` and ``pdf_w1`` (pooled
  pixel PDF), each with a bootstrap interval over generated maps (``_ci_low`` / ``_ci_high``);
* ``memorised`` (1 when more distinct public maps, train and val, are the generated maps' nearest neighbours
  than chance allows against held-out truth maps: copies; ``nn_neighbours``, ``nn_train_neighbours``),
  ``collapsed`` (1 when the map-to-map C_l variance or the spread of the set is far below the truth's), with
  their statistics. **Rule**: a flagged generator's primary is ``chi2_per_dof_raw + label.flag_penalty``, so it
  ranks below every unflagged one whose chi^2 per dof is under the penalty (10^6; the baselines: 10^3-10^4).
  The flags are checked on the distinct ids of ``ids`` (a bootstrap resample repeats objects; the evaluator never
  does), and :func:`score_resamples` keeps the flags of the whole set for every resample. The private part's
  memorisation check holds out every truth map (:func:`heldout_maps`). Not caught: maps stitched from rotated
  patches of public maps (the check compares whole maps); they score no better than a draw of the public process.

A conditional track (``population.grid``) is scored per grid point by :func:`score_grid` (the same metrics under
``by_cosmology_<label>_<metric>``, their mean over points, the parameter read-back ``param_bias_*``) and
:func:`grid_resamples`; its public-private split draws each grid point's share separately (:func:`split_groups`).

Participants see ``summary_stats.png`` (:func:`public_artifacts`): their maps' statistics against the public
training maps'; nothing from the hidden maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from skybench.common import bootstrap_ci, check_indices, stratum_key
from skybench.release import layout
from skybench.release.reader import Release
from skybench.tasks.generate.config import MIN_MAPS_PER_POINT, POINT_METRICS, GenerateScoring, GenerateTrack
from skybench.tasks.generate.metrics import (
    CollapseCheck,
    MemorisationCheck,
    SummaryBins,
    TruthVectors,
    as_maps,
    chi2_per_dof,
    cl_mean_abs_rel_diff,
    collapse_check,
    combined_p_value,
    content_key,
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


def truth_mask(truth: HiddenSplit, ids: np.ndarray) -> np.ndarray | None:
    """Release-order mask of ``truth``'s objects whose id is among ``ids`` (repeats count once): the maps a score
    of ``ids`` is referred to; None when that is every object (the whole set: all maps, as they are stored).
    ValueError for an id ``truth`` lacks."""
    all_ids = truth.ids()
    wanted = np.unique(np.asarray(ids))
    if (unknown := np.setdiff1d(wanted, all_ids)).size:
        raise ValueError(f"{unknown.size} id(s) not in the truth set {truth.folder}, e.g. {unknown[0]!r}")
    mask = np.isin(all_ids, wanted)
    return None if mask.all() else mask


def truth_maps(truth: HiddenSplit, ids: np.ndarray, what: str = "truth maps") -> np.ndarray:
    """The hidden maps of the distinct ``ids`` in release order (every map for the whole set)."""
    maps = as_maps(np.asarray(truth.array("maps")[:]), what)
    mask = truth_mask(truth, ids)
    return maps if mask is None else maps[mask]


def split_groups(track: GenerateTrack, truth: HiddenSplit) -> np.ndarray | None:
    """The public-private split's groups: on a conditional track the grid point of each truth map (release
    order), so each part holds the same share of every point (its per-point chi^2 needs ``MIN_MAPS_PER_POINT``
    maps in each part); None (one group) on an unconditional track."""
    if track.population.grid is None:
        return None
    return truth.meta(["grid_point"])["grid_point"].to_numpy(np.int64)


@dataclass(frozen=True)
class Reference:
    """What every score of one truth set shares: its maps, bins and summary vectors."""

    maps: np.ndarray  # (Nt, H, W)
    bins: SummaryBins
    vectors: np.ndarray  # (Nt, D)
    stats: dict[str, TruthVectors] = field(default_factory=dict, compare=False, repr=False)  # by components

    @classmethod
    def of(cls, track: GenerateTrack, truth: HiddenSplit, ids: np.ndarray) -> Reference:
        """The reference of the hidden maps of the distinct ``ids`` (:func:`truth_maps`)."""
        return cls.from_maps(track, truth_maps(truth, ids))

    @classmethod
    def from_maps(cls, track: GenerateTrack, maps: np.ndarray) -> Reference:
        """Kept for the last few truth sets (by content): every entry's score and resamples share it."""
        key = content_key(maps, track.label.model_dump_json(), track.population.size_deg)
        if (hit := _REFERENCES.get(key)) is not None:
            return hit
        n_ell, n_peaks, n_thr = bin_counts(track.label, maps.shape[0])
        bins = SummaryBins.from_truth(maps, track.population.size_deg, n_ell=n_ell, n_peaks=n_peaks,
                                      n_thresholds=n_thr)
        ref = cls(maps, bins, bins.vectors(maps))
        for a in (ref.maps, ref.vectors):
            a.flags.writeable = False
        if len(_REFERENCES) >= 8:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = ref
        return ref


_REFERENCES: dict[tuple[object, ...], Reference] = {}


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


def flags(track: GenerateTrack, gen: np.ndarray, ids: np.ndarray, ref: Reference, train: np.ndarray,
          collapse_edges: np.ndarray | None = None, heldout: np.ndarray | None = None) -> dict[str, float]:
    """The memorisation and collapse checks on the maps of the distinct ``ids`` (``collapse_edges``: the C_l bins
    of the collapse check, default the reference's; ``heldout``: the memorisation check's held-out maps, default
    the reference's)."""
    return _flag_values(*_checks(track, gen, ids, ref, train, collapse_edges, heldout))


def heldout_maps(track: GenerateTrack, truth: HiddenSplit, ids: np.ndarray, ref: Reference) -> np.ndarray:
    """The held-out maps of the memorisation check of ``ids``: the reference's (the truth maps of ``ids``), but
    every truth map when ``ids`` are the private part. A part has fewer maps than the whole set, so its own test
    has less power: a copier flagged on the whole set would pass the private part's, the final ranking, unflagged.
    The private part's score may use every map; the public part's keeps its own (no public metric depends on a
    private map)."""
    from skybench.harness.score import part_mask

    public = part_mask(track, truth, np.unique(np.asarray(ids)))
    if public is None or public.any() or truth_mask(truth, ids) is None:
        return ref.maps
    return truth_maps(truth, truth.ids())


def _checks(track: GenerateTrack, gen: np.ndarray, ids: np.ndarray, ref: Reference, train: np.ndarray,
            collapse_edges: np.ndarray | None = None, heldout: np.ndarray | None = None
            ) -> tuple[MemorisationCheck, CollapseCheck]:
    first = np.unique(np.asarray(ids), return_index=True)[1]
    g = gen[np.sort(first)]
    mem = memorisation_check(g, train, ref.maps if heldout is None else heldout,
                             alpha=track.label.memorisation_alpha)
    col = collapse_check(g, ref.maps, track.population.size_deg,
                         ref.bins.ell_edges if collapse_edges is None else collapse_edges,
                         min_ratio=track.label.collapse_min_ratio)
    return mem, col


def _flag_values(mem: MemorisationCheck, col: CollapseCheck) -> dict[str, float]:
    return {"memorised": float(mem.flagged), "memorisation_p_value": mem.p_value,
            "closer_to_train": mem.closer_to_train, "closer_to_train_expected": mem.expected,
            "nn_neighbours": float(mem.neighbours), "nn_train_neighbours": float(mem.train_neighbours),
            "nn_train_distance_ratio": mem.median_ratio, "collapsed": float(col.flagged),
            "cl_variance_ratio": col.median_variance_ratio, "duplicate_ratio": col.duplicate_ratio}


class _BinnedPdf(NamedTuple):
    """Per generated map, its pixel counts in PDF_BINS bins holding equal shares of the truth's pixels (outer bins
    open) and its pixels' summed distances beyond the outermost inner edges, (n, 2); the truth's CDF at the inner
    edges, its mean distances beyond them (2,), and the inner bins' widths. A bootstrap resample's binned KS and W1
    are then sums over rows (the intervals of ``pdf_ks`` and ``pdf_w1``)."""

    hist: np.ndarray
    tails: np.ndarray
    ref_cdf: np.ndarray
    ref_tails: np.ndarray
    widths: np.ndarray

    @classmethod
    def of(cls, gen: np.ndarray, truth: np.ndarray) -> _BinnedPdf:
        t = truth.ravel()
        edges = np.unique(np.quantile(t, np.linspace(0, 1, PDF_BINS + 1)))
        inner = edges[1:-1]
        n = gen.shape[0]
        flat = gen.reshape(n, -1)
        idx = np.searchsorted(inner, flat, side="right")  # bin 0 .. len(inner)
        k = len(inner) + 1
        hist = np.bincount((idx + k * np.arange(n)[:, None]).ravel(), minlength=k * n).reshape(n, k).astype(float)
        ref_cdf = np.searchsorted(np.sort(t), inner, side="right") / t.size

        def beyond(x: np.ndarray) -> np.ndarray:  # (lo - x)+ and (x - hi)+ summed over the last axis
            return np.stack([np.maximum(inner[0] - x, 0).sum(-1), np.maximum(x - inner[-1], 0).sum(-1)], -1)

        return cls(hist, beyond(flat), ref_cdf, beyond(t) / t.size, np.diff(inner))

    def distances(self, rows: np.ndarray) -> tuple[float, float]:
        """(KS, W1) of the maps ``rows`` against the truth. W1 = integral of |F_g - F_t| (Villani 2009, remark
        6.6, in one dimension): the trapezoid rule between the inner edges, and beyond them |E(lo - X)+ -
        E(lo - Y)+| and the same above (integrals of F and of 1 - F there; exact unless the CDFs cross there)."""
        counts = self.hist[rows].sum(axis=0)
        total = counts.sum()
        diff = np.abs(np.cumsum(counts)[:-1] / total - self.ref_cdf)
        inside = np.sum(0.5 * (diff[1:] + diff[:-1]) * self.widths)
        outside = np.abs(self.tails[rows].sum(axis=0) / total - self.ref_tails).sum()
        return float(diff.max()), float(inside + outside)


def _chi2(gen_vectors: np.ndarray, ref: Reference, part: slice | list[slice] | None = None) -> float:
    cols = np.r_[tuple(part)] if isinstance(part, list) else (part if part is not None else slice(None))
    return chi2_per_dof(gen_vectors[:, cols], _truth_vectors(ref, cols)).per_dof


def _truth_vectors(ref: Reference, cols: slice | np.ndarray) -> TruthVectors:
    """The truth's statistics of components ``cols``, once per reference (a bootstrap resamples the maps only)."""
    key = str(cols)
    if (tv := ref.stats.get(key)) is None:
        tv = ref.stats[key] = TruthVectors.of(ref.vectors[:, cols])
    return tv


def score_maps(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               train: np.ndarray, ref: Reference | None = None, with_chi2: bool = True,
               with_flags: bool = True) -> dict[str, float]:
    """Every metric of the generated maps ``predictions`` (aligned with ``ids``) against the truth maps of ``ids``
    (or ``ref``'s); ``with_flags``: also the memorisation and collapse checks (the penalty needs them)."""
    label = track.label
    gen = _generated(track, predictions, ids)
    ref = ref or Reference.of(track, truth, ids)
    out: dict[str, float] = {"n_maps": float(len(gen))}
    size = track.population.size_deg
    edges = ref.bins.ell_edges
    cl_g, cl_t = power_spectrum(gen, size, edges).cl, power_spectrum(ref.maps, size, edges).cl
    out["cl_rel_diff"] = cl_mean_abs_rel_diff(cl_g, cl_t)
    out["pdf_ks"], out["pdf_w1"] = pdf_distances(gen, ref.maps)
    rows = np.arange(len(gen))
    if label.n_bootstrap:
        out["cl_rel_diff_ci_low"], out["cl_rel_diff_ci_high"] = bootstrap_ci(
            lambda r: cl_mean_abs_rel_diff(cl_g[r], cl_t), rows, n_resamples=label.n_bootstrap)
        binned = _BinnedPdf.of(gen, ref.maps)
        for k, name in enumerate(("pdf_ks", "pdf_w1")):
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(
                lambda r, k=k: binned.distances(r)[k], rows, n_resamples=label.n_bootstrap)
    if with_flags:
        out |= flags(track, gen, ids, ref, train, heldout=heldout_maps(track, truth, ids, ref))
    if not with_chi2:
        return out
    vec = ref.bins.vectors(gen)
    sl = ref.bins.slices
    whole = chi2_per_dof(vec, _truth_vectors(ref, slice(None)))
    raw = out["chi2_per_dof_raw"] = whole.per_dof
    out["chi2_mean"], out["chi2_spread"] = whole.chi2 / whole.dof, whole.spread / whole.dof
    out["chi2_cl"], out["chi2_peaks"] = _chi2(vec, ref, sl["cl"]), _chi2(vec, ref, sl["peaks"])
    out["chi2_minkowski"] = _chi2(vec, ref, [sl["v0"], sl["v1"], sl["v2"]])
    penalty = label.flag_penalty if out.get("memorised") or out.get("collapsed") else 0.0
    out["chi2_per_dof"] = raw + penalty
    if label.n_bootstrap:
        out["chi2_per_dof_ci_low"], out["chi2_per_dof_ci_high"] = (
            v + penalty for v in bootstrap_ci(lambda r: _chi2(vec[r], ref), rows, n_resamples=label.n_bootstrap,
                                              bias_corrected=True))
    return out


def score(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path | None) -> dict[str, float]:
    if track.population.grid is not None:
        metrics = score_grid(track, ids, predictions, truth, grid_reference(track, truth, ids))
    else:  # no chi^2 from too few truth maps (``skybench validate --score --limit N``): the other metrics
        ref, with_chi2 = _reference_or_bins(track, truth_maps(truth, ids))
        metrics = score_maps(track, ids, predictions, truth, _train_maps(truth), ref, with_chi2)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def score_real(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
               out_dir: Path | None) -> dict[str, float]:
    """The same metrics against a second truth set (``real_<metric>``), its maps of the distinct ``real_ids``;
    the chi^2 only where those are enough maps for its covariance."""
    if track.population.grid is not None:
        grid = GridReference.of(track, real_truth, public_of(truth), real_ids)
        metrics = score_grid(track, real_ids, real_predictions, real_truth, grid)
    else:
        ref_maps = truth_maps(real_truth, real_ids, "real truth maps")
        ref, with_chi2 = _reference_or_bins(track, ref_maps)
        metrics = score_maps(track, real_ids, real_predictions, real_truth, _train_maps(truth), ref, with_chi2)
    return {f"real_{k}": v for k, v in metrics.items()}


def _reference_or_bins(track: GenerateTrack, ref_maps: np.ndarray) -> tuple[Reference, bool]:
    """The reference of a truth set, and whether it has enough maps for the chi^2 (else only C_l bins)."""
    try:
        return Reference.from_maps(track, ref_maps), True
    except ValueError:
        from skybench.tasks.generate.metrics import ell_bins

        bins = SummaryBins(track.population.size_deg, ell_bins(ref_maps.shape[-1], track.population.size_deg,
                                                               track.label.n_ell), np.array([-np.inf, np.inf]),
                           np.zeros(1))
        return Reference(ref_maps, bins, np.zeros((len(ref_maps), 0))), False


def score_resamples(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """The primary on each resample: summary vectors once per map, the chi^2 of each resample's mean vector against
    the reference of ``ids`` (the part ranked, not a resample's ids); the flags (and so the penalty) of all of
    ``ids``. A conditional track: :func:`grid_resamples`."""
    if track.population.grid is not None:
        return grid_resamples(track, ids, predictions, truth, indices)
    gen = _generated(track, predictions, ids)
    ref = Reference.of(track, truth, ids)
    vec = ref.bins.vectors(gen)
    f = flags(track, gen, ids, ref, _train_maps(truth), heldout=heldout_maps(track, truth, ids, ref))
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
    maps' (no hidden map enters it); on a conditional track also, per grid point, the generated maps' C_l over
    the training maps' and the parameters the regressor (fitted on the public maps) reads back from them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skybench.tasks.generate.metrics import ell_bins, peak_counts

    gen, train = _generated(track, predictions, ids), _train_maps(truth)
    size = track.population.size_deg
    edges = ell_bins(train.shape[-1], size, track.label.n_ell)
    ps_g, ps_t = power_spectrum(gen, size, edges), power_spectrum(train, size, edges)
    grid = track.population.grid
    fig, axes = plt.subplots(1 if grid is None else 2, 3, figsize=(12, 3.6 if grid is None else 7.2), squeeze=False)
    ax = axes[0]
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
    if grid is not None:
        _public_grid_panels(track, ids, gen, truth, edges, axes[1])
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "summary_stats.png", dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------ conditional tracks (population.grid)


@dataclass(frozen=True)
class Public:
    """The public maps a generator could have copied or learned from (train and val, less the truth's own split),
    with their grid points and parameters."""

    maps: np.ndarray  # (Np, H, W)
    points: np.ndarray  # (Np,) grid point of each map
    params: np.ndarray  # (Np, 2) (Omega_m, sigma8)


def public_of(truth: HiddenSplit) -> Public:
    root, _, own = layout.release_of(truth.folder)
    rel = Release(root)
    splits = [s for s in ("train", "val") if s != own and rel.manifest["counts"][s]]
    maps = as_maps(np.concatenate([np.asarray(rel.array(s, "maps")[:]) for s in splits]), "public maps")
    points = np.concatenate([rel.meta(s)["grid_point"].to_numpy(np.int64) for s in splits])
    params = np.concatenate([np.asarray(rel.array(s, "params")[:], np.float64) for s in splits])
    return Public(maps, points, params)


_RELEASE: dict[tuple[str, str, bytes], tuple[Public, ParamReadBack]] = {}
_GRID_REFS: dict[bytes | None, GridReference] = {}  # of the release in _RELEASE, by truth_mask


def grid_reference(track: GenerateTrack, truth: HiddenSplit, ids: np.ndarray) -> GridReference:
    """:meth:`GridReference.of` the truth maps of ``ids`` and the release's public maps. The public maps and
    their regressor are built once per process and release, the reference once per set of ids (the whole set and
    its two parts: the evaluator scores several entries, the leaderboard resamples each against the same truth)."""
    root = layout.release_of(truth.folder)[0]
    key = (track.model_dump_json(), str(Path(truth.folder).resolve()), layout.manifest_path(root).read_bytes())
    if key not in _RELEASE:
        _RELEASE.clear()  # one release at a time: bounded memory
        _GRID_REFS.clear()
        public = public_of(truth)
        _RELEASE[key] = public, ParamReadBack.fit(track, public)
    mask = truth_mask(truth, ids)
    part = None if mask is None else np.packbits(mask).tobytes()
    if part not in _GRID_REFS:
        if len(_GRID_REFS) >= 4:
            _GRID_REFS.pop(next(iter(_GRID_REFS)))
        public, readback = _RELEASE[key]
        _GRID_REFS[part] = GridReference.of(track, truth, public, ids, readback)
    return _GRID_REFS[part]


@dataclass(frozen=True)
class ParamReadBack:
    """The fixed parameter regressor: ridge regression (Hoerl & Kennard 1970, Technometrics 12, 55) of
    (Omega_m, sigma8) on the standardised per-map summary vector (log C_l, peak counts, V0, V1, V2; bins from the
    public maps), fitted on the public maps. Deterministic: the release alone fixes it."""

    bins: SummaryBins
    log_floor: np.ndarray  # per C_l bin: C_l below this is taken as this before the log (a map without power)
    model: Any  # sklearn Pipeline(StandardScaler, Ridge)

    @classmethod
    def fit(cls, track: GenerateTrack, public: Public) -> ParamReadBack:
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        label = track.label
        bins = SummaryBins.from_truth(public.maps, track.population.size_deg, n_ell=label.n_ell,
                                      n_peaks=label.n_peaks, n_thresholds=label.n_thresholds)
        cl = bins.vectors(public.maps)[:, bins.slices["cl"]]
        floor = np.maximum(cl.min(axis=0), 1e-300) * 1e-3
        me = cls(bins, floor, make_pipeline(StandardScaler(), Ridge(alpha=READBACK_ALPHA)))
        me.model.fit(me.features(public.maps), public.params)
        return me

    def features(self, maps: np.ndarray) -> np.ndarray:
        v = self.bins.vectors(maps)
        sl = self.bins.slices["cl"]
        v[:, sl] = np.log(np.maximum(v[:, sl], self.log_floor))
        return v

    def predict(self, maps: np.ndarray) -> np.ndarray:
        """(N, 2) predicted (Omega_m, sigma8)."""
        return np.asarray(self.model.predict(self.features(maps)), np.float64).reshape(len(maps), 2)


READBACK_ALPHA = 1.0  # ridge penalty on standardised features (hundreds of maps, ~30 features: light)


def param_bias(pred: np.ndarray, points: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """Mean over the grid points present of |mean predicted - true|, for Omega_m and sigma8."""
    present = np.unique(points)
    dev = np.array([np.abs(pred[points == p].mean(axis=0) - grid[p]) for p in present])
    return float(dev[:, 0].mean()), float(dev[:, 1].mean())


@dataclass(frozen=True)
class GridReference:
    """What every score of one truth set of a conditional track shares: a :class:`Reference` per grid point
    (``refs``; None when some point has too few truth maps for its chi^2: then ``pooled``, all truth maps as one
    set, scores the maps as on an unconditional track), the public maps and the fitted parameter regressor."""

    grid: np.ndarray  # (P, 2) (Omega_m, sigma8) of every point
    labels: list[str]
    truth_points: np.ndarray  # (Nt,) grid point of every truth map
    refs: list[Reference] | None
    pooled: Reference
    pooled_chi2: bool  # whether the pooled set has enough maps for the chi^2
    public: Public
    readback: ParamReadBack
    truth_bias: tuple[float, float]  # the regressor's param_bias on the truth maps

    @classmethod
    def of(cls, track: GenerateTrack, truth: HiddenSplit, public: Public, ids: np.ndarray,
           readback: ParamReadBack | None = None) -> GridReference:
        """The reference of the truth maps of the distinct ``ids`` (:func:`truth_maps`); ``readback``: the
        regressor fitted on ``public`` (default: fitted here)."""
        assert track.population.grid is not None
        maps = truth_maps(truth, ids)
        points = truth.meta(["grid_point"])["grid_point"].to_numpy(np.int64)
        if (mask := truth_mask(truth, ids)) is not None:
            points = points[mask]
        n_points = track.population.n_points
        grid = np.array(track.population.grid.points(), np.float64)
        counts = np.bincount(points, minlength=n_points)
        refs = None
        if counts.min() >= MIN_MAPS_PER_POINT:
            refs = [Reference.from_maps(track, maps[points == p]) for p in range(n_points)]
        pooled, pooled_chi2 = _reference_or_bins(track, maps)
        readback = readback or ParamReadBack.fit(track, public)
        return cls(grid, track.population.grid.labels(), points, refs, pooled, pooled_chi2, public, readback,
                   param_bias(readback.predict(maps), points, grid))

    def points_of(self, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        """The grid point of each id, from the truth's table (ValueError for an id it lacks)."""
        meta = truth.meta(["id", "grid_point"])
        lookup = pd.Series(meta["grid_point"].to_numpy(np.int64), index=meta["id"].to_numpy())
        try:
            return lookup.loc[np.asarray(ids)].to_numpy(np.int64)
        except KeyError as exc:
            raise ValueError(f"ids not in the truth set {truth.folder}: {exc}") from exc


def _point_rows(points: np.ndarray, n_points: int) -> list[np.ndarray]:
    return [np.flatnonzero(points == p) for p in range(n_points)]


def _grid_chi2(vectors: list[np.ndarray], position: np.ndarray, points: np.ndarray, refs: list[Reference],
               rows: np.ndarray) -> float:
    """Mean over the grid points drawn in ``rows`` of each point's chi^2 per dof (``vectors[p]``: the summary
    vectors of point p's rows, ``position``: where each row sits in its point's vectors)."""
    values = []
    for p, ref in enumerate(refs):
        sel = rows[points[rows] == p]
        if len(sel):
            values.append(_chi2(vectors[p][position[sel]], ref))
    return float(np.mean(values))


def _grid_flags(track: GenerateTrack, gen: np.ndarray, ids: np.ndarray, points: np.ndarray, grid: GridReference
                ) -> tuple[dict[int, dict[str, float]], float]:
    """The memorisation and collapse checks per grid point that has at least 3 distinct generated maps, against
    that point's public and truth maps, and the p-value of the memorisation test of all those points together.

    Memorisation: the exact hypergeometric test (:func:`~skybench.tasks.generate.metrics.memorisation_check`) per point
    at alpha / (2 P) (Bonferroni) and, at alpha / 2, that of the summed counts over the points (copying a little at
    every point adds up). The collapse check's C_l bins are the track's ``label.n_ell`` (not the fewer of a point's
    chi^2: in wide bins the non-Gaussian truth's C_l varies far more than a Gaussian field's, which is no collapse)."""
    from skybench.tasks.generate.metrics import ell_bins

    assert grid.refs is not None
    label = track.label.model_copy(update={"memorisation_alpha": track.label.memorisation_alpha
                                           / (2 * track.population.n_points)})
    strict = track.model_copy(update={"label": label})
    edges = ell_bins(track.population.n_pix, track.population.size_deg, track.label.n_ell)
    out, laws = {}, []
    for p, rows in enumerate(_point_rows(points, len(grid.refs))):
        if len(np.unique(ids[rows])) >= 3:
            mem, col = _checks(strict, gen[rows], ids[rows], grid.refs[p], grid.public.maps[grid.public.points == p],
                               collapse_edges=edges)
            out[p] = _flag_values(mem, col)
            laws.append(mem.laws)
    combined = min(1.0, 2 * min(combined_p_value([law[k] for law in laws]) for k in range(2))) \
        if laws else 1.0
    return out, combined


def _combined_flags(per: dict[int, dict[str, float]], combined_p: float, track: GenerateTrack) -> dict[str, float]:
    """The whole set's flags from the per-point ones: memorised when any point is or the combined test
    (``combined_p``) rejects at alpha / 2; collapsed when the median over points of the C_l variance ratio (each
    point's is noisy: tens of maps) or any point's duplicate ratio is below ``label.collapse_min_ratio``.
    ``memorisation_p_value``: the smaller of the two tests' Bonferroni-corrected p-values."""
    if not per:
        return {"memorised": 0.0, "collapsed": 0.0}
    label, n_points = track.label, track.population.n_points
    col = {k: np.array([f[k] for f in per.values()]) for k in next(iter(per.values()))}
    variance, duplicates = float(np.median(col["cl_variance_ratio"])), float(col["duplicate_ratio"].min())
    p_value = min(1.0, 2 * n_points * float(col["memorisation_p_value"].min()), 2 * combined_p)
    return {"memorised": float(col["memorised"].max() or p_value < label.memorisation_alpha),
            "collapsed": float(not (variance >= label.collapse_min_ratio  # NaN: flagged
                                    and duplicates >= label.collapse_min_ratio)),
            "memorisation_p_value": p_value, "memorisation_p_value_combined": combined_p,
            "closer_to_train": float(col["closer_to_train"].max()),
            "closer_to_train_expected": float(col["closer_to_train_expected"].mean()),
            "nn_train_distance_ratio": float(col["nn_train_distance_ratio"].min()),
            "cl_variance_ratio": variance, "duplicate_ratio": duplicates, "n_points_checked": float(len(per))}


def score_grid(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               grid: GridReference) -> dict[str, float]:
    """The metrics of a conditional track (see :func:`grid_resamples` for its primary on resamples).

    Per grid point ``p`` (the generated maps of the ids at p against p's truth maps, its public maps for the
    memorisation check; :func:`score_maps`), under ``by_cosmology_<label>_<metric>``; the whole set's metric is the
    mean over the points drawn (chi^2 per dof, per statistic, C_l difference, PDF distances), the flags from the
    points' checks (:func:`_combined_flags`; memorisation at alpha / P per point), ``chi2_per_dof`` = the mean
    chi^2 per dof plus the flag penalty (per point too), its interval from resampling all ids together (the other
    metrics have no interval here). ``param_bias_<param>``: mean over points of |mean regressed value on the
    generated maps - the point's value| (:class:`ParamReadBack`); ``_truth``: the same on the truth maps (the
    regressor's own floor: ridge shrinks towards the grid's centre). With too few truth maps at some point (a tiny
    test set), the maps are scored pooled, as on an unconditional track (``n_points_scored`` 0)."""
    gen = _generated(track, predictions, ids)
    ids = np.asarray(ids)
    points = grid.points_of(truth, ids)
    n_points = len(grid.labels)
    out: dict[str, float] = {}
    pred = grid.readback.predict(gen)
    out["param_bias_Omega_m"], out["param_bias_sigma8"] = param_bias(pred, points, grid.grid)
    out["param_bias_Omega_m_truth"], out["param_bias_sigma8_truth"] = grid.truth_bias
    per_point: dict[int, dict[str, float]] = {}
    for p, rows in enumerate(_point_rows(points, n_points)):
        if len(rows):
            per_point[p] = {"n_maps": float(len(rows)), "param_mean_Omega_m": float(pred[rows, 0].mean()),
                            "param_mean_sigma8": float(pred[rows, 1].mean())}
    if grid.refs is None:
        out |= score_maps(track, ids, predictions, truth, grid.public.maps, grid.pooled, grid.pooled_chi2)
        out["n_points_scored"] = 0.0
    else:
        flags_per, combined_p = _grid_flags(track, gen, ids, points, grid)
        out |= _combined_flags(flags_per, combined_p, track)
        penalty = track.label.flag_penalty if out["memorised"] or out["collapsed"] else 0.0
        label = track.label.model_copy(update={"n_bootstrap": 0})
        quiet = track.model_copy(update={"label": label})
        for p, rows in enumerate(_point_rows(points, n_points)):
            if not len(rows):
                continue
            m = score_maps(quiet, ids[rows], predictions[rows], truth, grid.public.maps, grid.refs[p],
                           with_flags=False)
            per_point[p] |= {k: v for k, v in m.items() if k != "n_maps"} | flags_per.get(p, {})
            per_point[p]["chi2_per_dof"] = m["chi2_per_dof_raw"] + penalty  # the whole set's flags
        scored = [per_point[p] for p in sorted(per_point)]
        for k in ("chi2_per_dof_raw", "chi2_cl", "chi2_peaks", "chi2_minkowski", "cl_rel_diff", "pdf_ks",
                  "pdf_w1"):
            out[k] = float(np.mean([m[k] for m in scored]))
        out["n_points_scored"] = float(len(scored))
        out["chi2_per_dof"] = out["chi2_per_dof_raw"] + penalty
        if track.label.n_bootstrap:
            refs = grid.refs
            vectors, position = _point_vectors(gen, points, refs)
            out["chi2_per_dof_ci_low"], out["chi2_per_dof_ci_high"] = (
                v + penalty for v in bootstrap_ci(lambda r: _grid_chi2(vectors, position, points, refs, r),
                                                  np.arange(len(gen)), n_resamples=track.label.n_bootstrap,
                                                  bias_corrected=True))
            for p in per_point:  # each point's own interval, over its maps
                per_point[p]["chi2_per_dof_ci_low"], per_point[p]["chi2_per_dof_ci_high"] = (
                    v + penalty for v in bootstrap_ci(lambda r, p=p: _chi2(vectors[p][r], refs[p]),
                                                      np.arange(len(vectors[p])),
                                                      n_resamples=track.label.n_bootstrap, bias_corrected=True))
    out["n_maps"] = float(len(gen))
    for p, m in per_point.items():
        out |= {stratum_key("cosmology", grid.labels[p], k): v for k, v in m.items()
                if k in POINT_METRICS or k in ("chi2_per_dof_ci_low", "chi2_per_dof_ci_high")}
    return {k: out[k] for k in ("chi2_per_dof",) if k in out} | out  # the primary first (the console shows it)


def _point_vectors(gen: np.ndarray, points: np.ndarray, refs: list[Reference]) -> tuple[list[np.ndarray],
                                                                                        np.ndarray]:
    """Per grid point, the summary vectors (that point's bins) of its rows, and each row's place among them."""
    position = np.zeros(len(gen), np.int64)
    vectors = []
    for p, rows in enumerate(_point_rows(points, len(refs))):
        position[rows] = np.arange(len(rows))
        vectors.append(refs[p].bins.vectors(gen[rows]) if len(rows) else np.zeros((0, refs[p].vectors.shape[1])))
    return vectors, position


def grid_resamples(track: GenerateTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   indices: np.ndarray) -> np.ndarray:
    """The primary of a conditional track on each resample of all ids together (rows regrouped by grid point;
    a point no row of a resample falls on is left out of its mean) against the reference of ``ids`` (the part
    ranked), with the flags of all of ``ids``."""
    gen = _generated(track, predictions, ids)
    ids = np.asarray(ids)
    grid = grid_reference(track, truth, ids)
    idx = check_indices(indices, len(gen))
    if grid.refs is None:
        ref = grid.pooled
        vec = ref.bins.vectors(gen)
        f = flags(track, gen, ids, ref, grid.public.maps)
        penalty = track.label.flag_penalty if f["memorised"] or f["collapsed"] else 0.0
        return np.array([_chi2(vec[rows], ref) + penalty for rows in idx])
    points = grid.points_of(truth, ids)
    f = _combined_flags(*_grid_flags(track, gen, ids, points, grid), track)
    penalty = track.label.flag_penalty if f["memorised"] or f["collapsed"] else 0.0
    vectors, position = _point_vectors(gen, points, grid.refs)
    return np.array([_grid_chi2(vectors, position, points, grid.refs, rows) + penalty for rows in idx])


def _public_grid_panels(track: GenerateTrack, ids: np.ndarray, gen: np.ndarray, truth: HiddenSplit,
                        edges: np.ndarray, ax: Any) -> None:
    """Per grid point: generated / training mean C_l, and the parameters read back (public maps only; the grid
    point of an id is its public ``params``)."""
    assert track.population.grid is not None
    public = public_of(truth)
    size = track.population.size_deg
    grid = np.array(track.population.grid.points())
    # the point of an id: the grid point its public params input names (float32 in the release)
    params = np.asarray(truth.inputs("params", np.asarray(ids)), np.float64)
    points = np.argmin(np.abs(params[:, None, :] - grid[None]).sum(axis=-1), axis=1)
    cl_g = power_spectrum(gen, size, edges)
    cl_t = power_spectrum(public.maps, size, edges).cl
    pred = ParamReadBack.fit(track, public).predict(gen)
    for p, label in enumerate(track.population.grid.labels()):
        mine, theirs = points == p, public.points == p
        if mine.any() and theirs.any():
            ax[0].plot(cl_g.ell, cl_g.cl[mine].mean(axis=0) / cl_t[theirs].mean(axis=0), label=label)
    ax[0].axhline(1, color="k", lw=0.5)
    ax[0].set(xscale="log", xlabel="l", ylabel="generated / training C_l", title="C_l per cosmology")
    ax[0].legend(fontsize=6, ncol=2)
    for k, name in enumerate(("Omega_m", "sigma8")):
        present = [p for p in range(len(grid)) if (points == p).any()]
        mean = [pred[points == p, k].mean() for p in present]
        sd = [pred[points == p, k].std() for p in present]
        ax[1 + k].errorbar(grid[present, k], mean, sd, fmt="o", capsize=2)
        lims = [grid[:, k].min() * 0.9, grid[:, k].max() * 1.1]
        ax[1 + k].plot(lims, lims, "k--", lw=0.5)
        ax[1 + k].set(xlabel=f"{name} asked for", ylabel=f"{name} read back", title=f"{name} read back")
