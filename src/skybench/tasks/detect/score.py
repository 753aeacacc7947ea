"""The scorer of the ``detect`` task: candidates (N, K, 3) of the test tiles against the hidden truth table
(``objects``, :data:`skybench.tasks.detect.config.TABLE`), through :func:`~skybench.tasks.detect.metrics.score_tiles`.

Organiser-only files (``out_dir``): the pooled completeness-purity curve and every true lens with the score of the
candidate that found it. Participants see (``public_artifacts``, listed in :mod:`skybench.harness.visibility`) only
aggregates of the public part: completeness and purity at fixed false-positive rates per deg^2 (a fixed grid, so
neither its size nor its points depend on the submission's scores), and a histogram of their own candidates' scores
and counts per tile (no truth at all). No position of a true lens is ever shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skybench.common import UndefinedMetricError, stratum_key, stratum_masks
from skybench.release import ReleaseError, layout, read_manifest
from skybench.release.reader import HiddenSplit
from skybench.tasks.detect.config import TABLE, DetectTrack
from skybench.tasks.detect.metrics import (
    Matched,
    average_precision,
    completeness_at,
    match,
    pr_curve,
    score_tiles,
    threshold_at_fp_rate,
    validate_detections,
)

N_RESAMPLES = 1000  # bootstrap resamples of tiles for the intervals
FP_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)  # false positives per deg^2 (public)
PUBLIC_FILES = ("completeness_public.csv", "completeness_public.png", "candidates_public.png")


def resolve(track: DetectTrack, truth: HiddenSplit) -> DetectTrack:
    """``track`` with the geometry of the release ``truth`` is a split of: resolved for its manifest's profile
    (per-profile tile sizes) and checked against the tile size the release recorded. A bare split folder (no
    release around it) keeps the track's own, which must then be a single size."""
    try:
        manifest = read_manifest(layout.release_of(truth.folder)[0])
    except (ValueError, ReleaseError):
        return track
    resolved = track.for_profile(str(manifest.get("profile")))
    recorded = manifest.get("tile_size")
    if recorded is not None and recorded != resolved.tile_size:
        raise ValueError(f"track {track.name!r}: the release of {truth.folder} has {recorded}-pixel tiles, the "
                         f"track's {manifest.get('profile')} profile {resolved.tile_size}; the track YAML changed "
                         "after the release was made: simulate it again")
    return resolved


def lenses(truth: HiddenSplit) -> pd.DataFrame:
    """The true lenses of a split (tile, x, y, theta_E, ...) from its truth table."""
    table = truth.table(TABLE)
    return table[table["kind"] == "lens"].reset_index(drop=True)


def _matched(track: DetectTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit) -> Matched:
    track = resolve(track, truth)
    rule = track.label.matching
    cands = validate_detections(predictions, len(ids), track.output.max_candidates, track.tile_size)
    return match(cands, lenses(truth), [int(i) for i in ids], rule.radius, rule.theta_E_factor,
                 track.survey.pixel_scale, track.tile_area_deg2)


def _stratum_counts(track: DetectTrack, m: Matched) -> dict[str, float]:
    """``n_lens`` of each bin of the ``lens_theta_E`` stratum (the participant view hides bins with few lenses)."""
    out: dict[str, float] = {}
    for s in track.strata:
        if s.column == "lens_theta_E":
            for label, mask in stratum_masks(s.edges, s.values, m.lens_theta_E):
                out[stratum_key(s.column, label, "n_lens")] = float(np.sum(mask))
    return out


def score(track: DetectTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
          out_dir: Path | None) -> dict[str, float]:
    """Detection metrics with bootstrap intervals over tiles (NaN, with the counts, for tiles without a lens); the
    completeness-purity curve and the lenses with their matched scores go to ``out_dir`` (organiser only: they
    hold per-object truth)."""
    track = resolve(track, truth)
    m = _matched(track, ids, predictions, truth)
    try:
        metrics = score_tiles(track, [int(i) for i in ids], predictions, lenses(truth), n_resamples=N_RESAMPLES)
    except UndefinedMetricError:  # no lens in these tiles (a small public part, a --limit run): counts only
        metrics = {name: float("nan") for name in ("average_precision", "completeness", *track.metrics.report)}
        metrics |= {"n_tiles": float(m.n_tiles), "n_lens": 0.0, "n_candidates": float(m.score.size)}
    metrics |= _stratum_counts(track, m)
    if out_dir is None:
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    if m.lens_tile.size:
        recall, precision, thr = pr_curve(m)
        pd.DataFrame({"score": thr, "completeness": recall, "purity": precision, "true_positive": m.tp}).to_csv(
            out_dir / "completeness_purity.csv", index=False)
    pd.DataFrame({"tile": np.asarray(ids)[m.lens_tile], "theta_E": m.lens_theta_E,
                  "matched_score": m.lens_score}).to_csv(out_dir / "lenses.csv", index=False)
    return metrics


def score_real(track: DetectTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
               real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
               out_dir: Path | None) -> dict[str, float]:
    """The detection metrics of a set of real tiles as ``real_<metric>`` (those undefined there, e.g. an empty
    theta_E bin, left out); only the counts when it holds no lens. The simulated tiles are not needed."""
    track = resolve(track, real_truth)
    try:
        metrics = score_tiles(track, [int(i) for i in real_ids], real_predictions, lenses(real_truth),
                              n_resamples=N_RESAMPLES)
    except UndefinedMetricError:
        metrics = {"n_tiles": float(len(real_ids)), "n_lens": 0.0}
    return {f"real_{k}": v for k, v in metrics.items() if not np.isnan(v)}


def oracle(track: DetectTrack, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    """Every true lens of each tile at its position with score 1, NaN-padded to K: AP 1."""
    k = track.output.max_candidates
    out = np.full((len(ids), k, 3), np.nan)
    by_tile = {int(t): g for t, g in lenses(truth).groupby("tile")}
    for i, t in enumerate(np.asarray(ids).tolist()):
        g = by_tile.get(int(t))
        if g is not None:
            xy = g[["x", "y"]].to_numpy(np.float64)[:k]
            out[i, :len(xy), :2], out[i, :len(xy), 2] = xy, 1.0
    return out


def score_resamples(track: DetectTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                    indices: np.ndarray) -> np.ndarray:
    """Average precision of each resample of the tiles: matched once, each resample a vector of tile weights (a
    tile drawn twice counts twice, as :func:`score` on the repeated tiles); NaN where no lens is drawn."""
    if track.metrics.primary != "average_precision":
        raise ValueError(f"track {track.name!r}: score_resamples gives average_precision, the primary metric is "
                         f"{track.metrics.primary!r}")
    m = _matched(track, ids, predictions, truth)
    out = np.full(len(indices), np.nan)
    for r, rows in enumerate(np.asarray(indices)):
        try:
            out[r] = average_precision(m, np.bincount(rows, minlength=len(ids)))
        except UndefinedMetricError:
            pass
    return out


def public_artifacts(track: DetectTrack, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                     out_dir: Path) -> None:
    """What a participant sees of the public part ``ids``: completeness and purity at the fixed false-positive
    rates of :data:`FP_GRID` (``completeness_public.csv`` / ``.png``) and their candidates' scores and counts per
    tile (``candidates_public.png``)."""
    track = resolve(track, truth)
    m = _matched(track, ids, predictions, truth)
    rows = []
    area = len(ids) * track.tile_area_deg2
    for f in FP_GRID:
        t = threshold_at_fp_rate(m, f)
        kept = m.score >= t
        tp = int(np.sum(m.tp & kept))
        try:
            c = completeness_at(m, t)
        except UndefinedMetricError:
            c = float("nan")
        rows.append({"fp_per_deg2": f, "completeness": c, "purity": tp / max(int(kept.sum()), 1) if kept.any()
                     else float("nan"), "candidates_per_deg2": float(kept.sum()) / area})
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "completeness_public.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.semilogx(table["fp_per_deg2"], table["completeness"], "o-", label="completeness")
    ax.semilogx(table["fp_per_deg2"], table["purity"], "s--", label="purity")
    ax.set(xlabel="false positives per deg$^2$", ylim=(-0.02, 1.02), title="public part, fixed FP rates")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "completeness_public.png", dpi=100)
    plt.close(fig)

    cands = np.asarray(predictions, dtype=np.float64)
    used = np.all(np.isfinite(cands), axis=2)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5))
    scores = cands[..., 2][used]
    try:
        counts, edges = np.histogram(scores, bins=30)
    except ValueError:  # a range float64 cannot cut into 30 bins (equal scores of 1e15 and more): one bar
        counts, edges = np.array([scores.size]), np.array([scores.min(), scores.max()])
    a1.stairs(counts, edges, fill=True)
    a1.set(xlabel="candidate score", ylabel="candidates", title="your candidates (public part)")
    a2.hist(used.sum(axis=1), bins=np.arange(track.output.max_candidates + 2) - 0.5)
    a2.set(xlabel="candidates per tile", ylabel="tiles")
    fig.tight_layout()
    fig.savefig(out_dir / "candidates_public.png", dpi=100)
    plt.close(fig)
