"""Detection metrics for lens finding in tiles: candidates (x, y, score) against the true lenses.

Matching (as COCO's ``evaluateImg``, with a distance rule instead of IoU): per tile, candidates in descending score
(stable: ties keep their order) each take the unmatched true lens with the smallest distance / radius among those
within their radius, radius = max(radius, theta_E_factor x theta_E); a candidate that takes none is a false positive
(a second candidate on a matched lens too). Candidates are then pooled over tiles (tile order, then score, sorted
stably by score as COCO's ``accumulate``) into the completeness-purity (recall-precision) curve, read at the ends of
blocks of equal scores (a tie is one threshold).

Every metric is a function of per-tile weights (how many times each tile is in a bootstrap resample), so the
intervals resample tiles (:func:`skybench.common.bootstrap_ci`) without matching again."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from skybench.common import (  # noqa: F401 - the predictions' checks, shared with the harness
    UndefinedMetricError,
    bootstrap_ci,
    detections_from_csv,
    stratum_key,
    stratum_masks,
    validate_detections,
    wilson_interval,
)
from skybench.tasks.detect.config import DetectTrack

REC_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCO's recThrs


# --------------------------------------------------------------------------- matching
@dataclass
class Matched:
    """The candidates and lenses of N tiles after matching; metrics are functions of per-tile weights."""

    n_tiles: int
    tile_area_deg2: float
    score: np.ndarray  # (M,) every candidate, in COCO's pooled order (sorted by descending score, stable)
    tp: np.ndarray  # (M,) bool: it matched a lens
    cand_tile: np.ndarray  # (M,) tile position of the candidate
    lens_tile: np.ndarray  # (L,) tile position of each true lens
    lens_score: np.ndarray  # (L,) score of the candidate that matched it, -inf if none
    lens_theta_E: np.ndarray  # (L,) arcsec


def match_tile(cands: np.ndarray, lens_xy: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Greedy matching in one tile. ``cands`` (K, 3) NaN-padded, ``lens_xy`` (L, 2), ``radius`` (L,) pixels.
    Returns the used candidates' indices in descending score (stable), the lens each matched (-1: none), and per
    lens the index of its candidate (-1: none)."""
    used = np.flatnonzero(np.all(np.isfinite(cands), axis=1))
    order = used[np.argsort(-cands[used, 2], kind="stable")]
    cand_lens = np.full(order.size, -1)
    lens_cand = np.full(len(lens_xy), -1)
    if len(lens_xy) and order.size:
        d = np.hypot(cands[order, 0, None] - lens_xy[None, :, 0], cands[order, 1, None] - lens_xy[None, :, 1])
        rel = d / radius[None, :]  # distance in units of each lens's radius
        for i in range(order.size):
            free = (lens_cand < 0) & (rel[i] <= 1.0)
            if free.any():
                j = int(np.flatnonzero(free)[np.argmin(rel[i, free])])
                cand_lens[i], lens_cand[j] = j, order[i]
    return order, cand_lens, lens_cand


def match(candidates: np.ndarray, truth: pd.DataFrame, tile_ids: Sequence[int], radius: float,
          theta_E_factor: float, pixel_scale: float, tile_area_deg2: float) -> Matched:
    """Match (N, K, 3) candidates of the tiles ``tile_ids`` to the lenses of ``truth`` (columns tile, x, y,
    theta_E; rows of another ``kind`` than ``lens`` are left out)."""
    if "kind" in truth.columns:
        truth = truth[truth["kind"] == "lens"]
    pos = {int(t): i for i, t in enumerate(tile_ids)}
    lenses = truth[truth["tile"].isin(list(pos))]
    by_tile = {t: g for t, g in lenses.groupby("tile")}
    scores, tps, ctile, ltile, lscore, ltheta = [], [], [], [], [], []
    for i, t in enumerate(tile_ids):
        g = by_tile.get(t)
        xy = g[["x", "y"]].to_numpy(dtype=np.float64) if g is not None else np.zeros((0, 2))
        theta = g["theta_E"].to_numpy(dtype=np.float64) if g is not None else np.zeros(0)
        r = np.maximum(radius, theta_E_factor * theta) / pixel_scale
        order, cand_lens, lens_cand = match_tile(candidates[i], xy, r)
        scores.append(candidates[i, order, 2])
        tps.append(cand_lens >= 0)
        ctile.append(np.full(order.size, i))
        ltile.append(np.full(len(xy), i))
        lscore.append(np.where(lens_cand >= 0, candidates[i, np.maximum(lens_cand, 0), 2], -np.inf))
        ltheta.append(theta)
    score, tp, cand_tile = np.concatenate(scores), np.concatenate(tps), np.concatenate(ctile).astype(np.int64)
    order = np.argsort(-score, kind="stable")  # COCO accumulate: mergesort of the per-image lists concatenated
    return Matched(len(tile_ids), tile_area_deg2, score[order], tp[order], cand_tile[order],
                   np.concatenate(ltile).astype(np.int64), np.concatenate(lscore), np.concatenate(ltheta))


# --------------------------------------------------------------------------- metrics of weighted tiles
def _weights(m: Matched, w: np.ndarray | None) -> np.ndarray:
    return np.ones(m.n_tiles) if w is None else np.asarray(w, dtype=np.float64)


def pr_curve(m: Matched, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, score) after each candidate in pooled order; recall = completeness, precision = purity."""
    w = _weights(m, w)
    n_lens = float(np.sum(w[m.lens_tile]))
    if n_lens == 0:
        raise UndefinedMetricError("no true lens in these tiles: completeness is undefined")
    wc = w[m.cand_tile]
    tp, fp = np.cumsum(wc * m.tp), np.cumsum(wc * ~m.tp)
    return tp / n_lens, tp / (tp + fp + np.spacing(1)), m.score  # COCO: tp / (fp + tp + eps)


def average_precision(m: Matched, w: np.ndarray | None = None) -> float:
    """COCO's AP (cocoeval.py ``accumulate``, Lin et al. 2014): the precision made non-increasing from the right,
    read at the first point reaching each of 101 recall levels 0, 0.01, ..., 1 (0 beyond the last), averaged. The
    levels are COCOeval's ``np.linspace`` floats, as pycocotools reads them: a recall of exactly 7/10 does not reach
    0.7000000000000001, so AP can differ from exact k/100 levels by ~1e-3 (it matches pycocotools exactly).
    Candidates of equal score are one threshold, as in the lens metrics: the curve is read at the end of each block
    of ties (COCO reads inside it, in tile order, so a detector of tied scores scored by the order of the tiles)."""
    recall, precision, score = pr_curve(m, w)
    if recall.size == 0:
        return 0.0
    last = np.append(score[1:] != score[:-1], True)
    recall, precision = recall[last], precision[last]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, REC_THRESHOLDS, side="left")
    q = np.where(idx < recall.size, envelope[np.minimum(idx, recall.size - 1)], 0.0)
    return float(np.mean(q))


def allowed_false_positives(fp_per_deg2: float, area_deg2: float) -> int:
    """The false positives an operating point allows on ``area_deg2``: floor(rate x area) (a tolerance of 1e-9 for
    the rounding of the product). Below one per the area scored, e.g. 1 and 10 deg^-2 on the demo's 64 tiles of
    51.2" (0.013 deg^2), it is 0: the completeness before the best-scoring false positive."""
    return math.floor(fp_per_deg2 * area_deg2 + 1e-9)


def threshold_at_fp_rate(m: Matched, fp_per_deg2: float, w: np.ndarray | None = None) -> float:
    """The lowest score threshold (candidates with score >= it are kept) at which the (weighted) false positives
    of the tiles stay <= :func:`allowed_false_positives` for their area; +inf when even the best candidate alone
    exceeds it (a false positive first, with none allowed)."""
    w = _weights(m, w)
    area = float(np.sum(w)) * m.tile_area_deg2
    wc = w[m.cand_tile]
    present = wc > 0  # candidates of the tiles in the resample
    score, fp = m.score[present], np.cumsum((wc * ~m.tp)[present])
    if score.size == 0:
        return -np.inf
    last = np.append(score[1:] != score[:-1], True)  # a threshold keeps a whole group of tied scores
    ok = np.flatnonzero(last & (fp <= allowed_false_positives(fp_per_deg2, area) + 1e-9))
    return float(score[ok[-1]]) if ok.size else np.inf


def completeness_at(m: Matched, threshold: float, w: np.ndarray | None = None,
                    lens_mask: np.ndarray | None = None) -> float:
    """Fraction of the (weighted) lenses matched by a candidate that scores >= ``threshold`` (an unmatched lens is
    not found even at ``threshold = -inf``)."""
    w = _weights(m, w)
    lw = w[m.lens_tile] * (1.0 if lens_mask is None else lens_mask)
    total = float(np.sum(lw))
    if total == 0:
        raise UndefinedMetricError("no true lens in these tiles (or bin)")
    found = np.isfinite(m.lens_score) & (m.lens_score >= threshold)  # -inf: no candidate matched it, never found
    return float(np.sum(lw * found) / total)


def _fp_key(rate: float) -> str:
    return f"completeness_fp{rate:g}"


def summary(m: Matched, fp_per_deg2: Sequence[float] = (1.0, 10.0), theta_E_edges: Sequence[float] | None = None,
            w: np.ndarray | None = None) -> dict[str, float]:
    """Every scalar metric for tile weights ``w``: average_precision, completeness_fp<F> at each operating point,
    completeness (any candidate), and per theta_E bin the completeness at the largest F (NaN for an empty bin)."""
    out = {"average_precision": average_precision(m, w), "completeness": completeness_at(m, -np.inf, w)}
    thresholds = {f: threshold_at_fp_rate(m, f, w) for f in fp_per_deg2}
    for f, t in thresholds.items():
        out[_fp_key(f)] = completeness_at(m, t, w)
    if theta_E_edges is not None and fp_per_deg2:
        f = max(fp_per_deg2)
        for label, mask in stratum_masks(theta_E_edges, None, m.lens_theta_E):
            try:
                out[stratum_key("lens_theta_E", label, _fp_key(f))] = completeness_at(m, thresholds[f], w, mask)
            except UndefinedMetricError:
                out[stratum_key("lens_theta_E", label, _fp_key(f))] = float("nan")
    return out


def detection_metrics(m: Matched, fp_per_deg2: Sequence[float] = (1.0, 10.0),
                      theta_E_edges: Sequence[float] | None = None, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """:func:`summary` with 95% bootstrap intervals over tiles (``<metric>_ci_low`` / ``_ci_high``) and the counts
    n_tiles, n_lens, n_candidates."""
    point = summary(m, fp_per_deg2, theta_E_edges)
    cache: dict[bytes, dict[str, float] | None] = {}

    def resample(idx: np.ndarray) -> dict[str, float] | None:
        key = idx.tobytes()  # bootstrap_ci draws the same resamples for every metric (same seed): match once
        if key not in cache:
            try:
                cache[key] = summary(m, fp_per_deg2, theta_E_edges, np.bincount(idx, minlength=m.n_tiles))
            except UndefinedMetricError:
                cache[key] = None
        return cache[key]

    lenses = {name: m.lens_tile.size for name in point if name != "average_precision"}  # lenses of each completeness
    if theta_E_edges is not None and fp_per_deg2:
        for label, mask in stratum_masks(theta_E_edges, None, m.lens_theta_E):
            lenses[stratum_key("lens_theta_E", label, _fp_key(max(fp_per_deg2)))] = int(np.sum(mask))
    out = dict(point)
    for name in point:
        def metric(idx: np.ndarray, name: str = name) -> float:
            s = resample(idx)
            if s is None:
                raise UndefinedMetricError(name)
            return s[name]

        try:
            low, high = bootstrap_ci(metric, np.arange(m.n_tiles), n_resamples=n_resamples, seed=seed)
        except ValueError:  # undefined on every resample (an empty bin)
            low, high = float("nan"), float("nan")
        if name in lenses and math.isfinite(point[name]):  # a completeness: a proportion of lenses
            # the tiles' bootstrap carries the threshold's spread but is [1, 1] at n of n found; Wilson's is not
            w_low, w_high = wilson_interval(round(point[name] * lenses[name]), lenses[name])
            low, high = min(low, w_low), max(high, w_high)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    out.update(n_tiles=float(m.n_tiles), n_lens=float(m.lens_tile.size), n_candidates=float(m.score.size))
    return out


def score_tiles(track: DetectTrack, tile_ids: Sequence[int], predictions: object, truth: pd.DataFrame,
                n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """A track's detection metrics: ``predictions`` (N, K, 3) for the tiles ``tile_ids`` validated, matched to the
    lenses of the truth table with the track's rule (``label.matching``), scored at its false-positive rates and
    per bin of its ``lens_theta_E`` stratum, with bootstrap intervals over tiles."""
    rule = track.label.matching
    cands = validate_detections(predictions, len(tile_ids), track.output.max_candidates, track.tile_size)
    m = match(cands, truth, tile_ids, rule.radius, rule.theta_E_factor, track.survey.pixel_scale,
              track.tile_area_deg2)
    edges = next((s.edges for s in track.strata if s.column == "lens_theta_E"), None)
    return detection_metrics(m, rule.fp_per_deg2, edges, n_resamples=n_resamples, seed=seed)
