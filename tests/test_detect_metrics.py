"""The detection metrics of the lens-tiles task: hand-built truth tables with answers worked out by hand, COCOeval
(pycocotools) as the reference for the matching and the AP on random inputs, and the validation of predictions."""

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from skybench.tasks.detect.metrics import (
    average_precision,
    completeness_at,
    detection_metrics,
    detections_from_csv,
    match,
    pr_curve,
    summary,
    threshold_at_fp_rate,
    validate_detections,
)

PIX = 0.1  # arcsec per pixel: radius max(1", theta_E) is max(10 px, 10 theta_E px)
NAN3 = [np.nan] * 3


def _truth() -> pd.DataFrame:
    # tile 0: A (r = 10 px), B (theta_E 1.5": r = 15 px), and a look-alike (not a lens); tile 1: C (r = 10 px)
    return pd.DataFrame({"tile": [0, 0, 0, 1], "kind": ["lens", "lens", "lookalike", "lens"],
                         "x": [20.0, 70.0, 40.0, 50.0], "y": [20.0, 70.0, 40.0, 50.0],
                         "theta_E": [0.5, 1.5, np.nan, 0.6]})


def _candidates() -> np.ndarray:
    return np.array([
        [[21, 20, 0.9],    # A: TP
         [20, 22, 0.8],    # A again: FP (a lens matches one candidate)
         [82, 70, 0.7],    # 12 px from B, inside its 15 px: TP
         [40, 40, 0.3],    # on the look-alike: FP
         NAN3],
        [[50, 61, 0.85],   # 11 px from C, outside its 10 px: FP
         [50, 55, 0.6],    # C: TP
         NAN3, NAN3, NAN3],
    ], dtype=np.float64)


def _matched(area: float = 1.0):
    return match(_candidates(), _truth(), [0, 1], radius=1.0, theta_E_factor=1.0, pixel_scale=PIX,
                 tile_area_deg2=area)


def test_hand_built_matching_curve_and_ap():
    m = _matched()
    # pooled by score: 0.9 TP, 0.85 FP, 0.8 FP, 0.7 TP, 0.6 TP, 0.3 FP
    np.testing.assert_array_equal(m.score, [0.9, 0.85, 0.8, 0.7, 0.6, 0.3])
    np.testing.assert_array_equal(m.tp, [True, False, False, True, True, False])
    recall, precision, _ = pr_curve(m)
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 1 / 2, 3 / 5, 1 / 2])
    # envelope: 1 up to recall 1/3 (levels 0.00..0.33: 34 of them), then 0.6 (levels 0.34..1.00: 67)
    assert average_precision(m) == pytest.approx((34 * 1.0 + 67 * 0.6) / 101, abs=1e-12)


def test_hand_built_completeness_at_false_positive_rates_and_per_theta_E_bin():
    m = _matched(area=1.0)  # two tiles of 1 deg^2 each
    # <= 1 FP/deg^2 = 2 FPs: keep down to 0.6 (FPs 0.85, 0.8): all 3 lenses
    assert threshold_at_fp_rate(m, 1.0) == 0.6
    assert completeness_at(m, 0.6) == 1.0
    # <= 0.5 FP/deg^2 = 1 FP: keep down to 0.85: A only
    assert threshold_at_fp_rate(m, 0.5) == 0.85
    s = summary(m, fp_per_deg2=(0.5,), theta_E_edges=[0.4, 1.0, 2.0])
    assert s["completeness_fp0.5"] == pytest.approx(1 / 3)
    assert s["completeness"] == 1.0
    assert s["by_lens_theta_E_0.4-1_completeness_fp0.5"] == 0.5  # A found, C (0.6 < 0.85) not
    assert s["by_lens_theta_E_1-2_completeness_fp0.5"] == 0.0  # B at 0.7 < 0.85
    # a tiny area: not one false positive allowed, so only what scores above the first FP counts
    assert threshold_at_fp_rate(_matched(area=1e-6), 10.0) == 0.9


def test_tied_scores_are_kept_or_dropped_together():
    cands = np.array([[[20, 20, 0.5], [90, 90, 0.5], NAN3]])  # a TP and an FP with the same score
    truth = pd.DataFrame({"tile": [0], "x": [20.0], "y": [20.0], "theta_E": [0.5]})
    m = match(cands, truth, [0], 1.0, 1.0, PIX, tile_area_deg2=1.0)
    assert threshold_at_fp_rate(m, 0.5) == np.inf  # keeping the TP keeps the FP: nothing passes
    assert completeness_at(m, threshold_at_fp_rate(m, 1.0)) == 1.0


def test_average_precision_of_tied_scores_does_not_depend_on_the_order_of_the_tiles():
    """Every candidate scored 1: COCO reads the curve inside the tie, in tile order, so AP moved with the order of
    the tiles (0.0 with the false positive's tile first, 1.0 with the lens's); a tie is one threshold: recall 1 at
    precision 1/2 wherever the tiles are, AP 0.5."""
    lens, empty = [[20, 20, 1.0], NAN3], [[90, 90, 1.0], NAN3]
    for at, rows in ((0, [lens, empty]), (1, [empty, lens])):
        truth = pd.DataFrame({"tile": [at], "x": [20.0], "y": [20.0], "theta_E": [0.5]})
        m = match(np.array(rows, dtype=np.float64), truth, [0, 1], 1.0, 1.0, PIX, 1.0)
        assert average_precision(m) == pytest.approx(0.5, abs=1e-6), at


def test_a_lens_no_candidate_found_is_never_complete():
    """Unmatched lenses carry score -inf; at the threshold -inf (no candidate at all, or "completeness" of any
    candidate) they must not count as found: an empty submission scores 0, not 1."""
    truth = pd.DataFrame({"tile": [0, 1], "x": [20.0, 30.0], "y": [20.0, 30.0], "theta_E": [0.5, 0.5]})
    empty = match(np.full((2, 3, 3), np.nan), truth, [0, 1], 1.0, 1.0, PIX, tile_area_deg2=1.0)
    s = summary(empty, fp_per_deg2=(1.0, 10.0))
    assert (s["average_precision"], s["completeness"], s["completeness_fp1"], s["completeness_fp10"]) == (0, 0, 0, 0)
    one = np.full((2, 3, 3), np.nan)
    one[0, 0] = (20, 20, 0.9)  # finds the lens of tile 0, none in tile 1
    s = summary(match(one, truth, [0, 1], 1.0, 1.0, PIX, tile_area_deg2=1.0), fp_per_deg2=(1.0,))
    assert (s["completeness"], s["completeness_fp1"]) == (0.5, 0.5)
    # a resample of the tiles without a candidate (tile 1 only) finds nothing either
    assert completeness_at(empty, threshold_at_fp_rate(empty, 1.0), np.array([0.0, 1.0])) == 0.0


def test_nearest_in_units_of_radius_wins_and_a_lens_is_matched_once():
    # one candidate between two lenses: 8 px from a theta_E = 2" lens (r 20 px), 6 px from a r = 10 px lens
    truth = pd.DataFrame({"tile": [0, 0], "x": [42.0, 56.0], "y": [50.0, 50.0], "theta_E": [2.0, 0.5]})
    m = match(np.array([[[50, 50, 1.0], [50, 50, 0.5]]]), truth, [0], 1.0, 1.0, PIX, 1.0)
    assert m.lens_score.tolist() == [1.0, 0.5]  # 8/20 < 6/10: the big lens takes the best candidate


def test_bootstrap_intervals_bracket_the_values_and_resample_tiles():
    rng = np.random.default_rng(1)
    cands, truth = _random_problem(rng, n_tiles=40)
    m = match(cands, truth, list(range(40)), 1.0, 1.0, PIX, tile_area_deg2=0.01)
    out = detection_metrics(m, fp_per_deg2=(10.0, 100.0), theta_E_edges=[0.4, 1.2, 2.0], n_resamples=200)
    for k in ("average_precision", "completeness_fp10", "completeness_fp100",
              "by_lens_theta_E_0.4-1.2_completeness_fp100"):
        assert out[f"{k}_ci_low"] <= out[k] <= out[f"{k}_ci_high"], k
        assert out[f"{k}_ci_low"] < out[f"{k}_ci_high"], k
    assert out["n_tiles"] == 40 and out["n_lens"] == len(truth)

    # weights are tile multiplicities: tile 3 twice and tile 7 once is the problem of those three tiles
    w = np.zeros(40)
    w[[3, 7]] = [2, 1]
    copies = pd.concat([truth[truth.tile == t].assign(tile=i) for i, t in enumerate([3, 3, 7])])
    three = match(cands[[3, 3, 7]], copies, [0, 1, 2], 1.0, 1.0, PIX, 0.01)
    for t in (0.2, 0.5, 0.8):
        assert completeness_at(m, t, w) == pytest.approx(completeness_at(three, t))
    assert threshold_at_fp_rate(m, 300.0, w) == threshold_at_fp_rate(three, 300.0)


# --------------------------------------------------------------------------- against COCOeval
def _random_problem(rng: np.random.Generator, n_tiles: int, size: int = 200, k: int = 12):
    rows, cands = [], np.full((n_tiles, k, 3), np.nan)
    for t in range(n_tiles):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(10, size - 10, (n, 2))
        theta = rng.uniform(0.4, 2.0, n)
        rows += [{"tile": t, "x": a, "y": b, "theta_E": th} for (a, b), th in zip(xy, theta, strict=True)]
        nc = int(rng.integers(0, k + 1))
        near = rng.random(nc) < 0.6
        c = rng.uniform(0, size - 1, (nc, 2))
        if n:
            pick = xy[rng.integers(0, n, nc)] + rng.normal(0, 8, (nc, 2))
            c = np.where(near[:, None], np.clip(pick, 0, size - 1), c)
        cands[t, :nc, :2], cands[t, :nc, 2] = c, rng.random(nc)
    return cands, pd.DataFrame(rows)


def test_a_completeness_of_every_lens_has_an_interval_below_1():
    """Every lens found: each tile resample finds all its lenses too, so the bootstrap's interval was [1, 1]; the
    interval takes in the Wilson one of n of n (what a fixed threshold alone leaves open)."""
    from scipy.stats import binomtest

    truth = _truth()
    cands = np.array([[[20, 20, 0.9], [70, 70, 0.8], NAN3], [[50, 50, 0.7], NAN3, NAN3]], dtype=np.float64)
    m = match(cands, truth, [0, 1], 1.0, 1.0, PIX, tile_area_deg2=1.0)
    out = detection_metrics(m, fp_per_deg2=(1.0,), theta_E_edges=[0.4, 1.0, 2.0], n_resamples=200)
    for key, n in (("completeness", 3), ("completeness_fp1", 3), ("by_lens_theta_E_0.4-1_completeness_fp1", 2)):
        assert out[key] == 1.0, key
        want = binomtest(n, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert out[f"{key}_ci_low"] == pytest.approx(want.low, abs=1e-12) and out[f"{key}_ci_high"] == 1.0, key
    assert out["average_precision"] == 1.0



def _coco_ap(cands: np.ndarray, truth: pd.DataFrame, k: int) -> float:
    """COCOeval's AP with its own matching (evaluateImg) and accumulation; the similarity of a (candidate, lens)
    pair is 1 - distance / radius (>= 0 inside the radius) instead of the box IoU, with IoU threshold 0."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = []
    for i, r in enumerate(truth.itertuples()):
        rad = max(1.0, r.theta_E) / PIX  # the lens's radius as a square box of side 2 r around it
        anns.append({"id": i + 1, "image_id": int(r.tile), "category_id": 1, "iscrowd": 0, "area": 4 * rad**2,
                     "bbox": [r.x - rad, r.y - rad, 2 * rad, 2 * rad]})
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt = COCO()
        gt.dataset = {"info": {}, "images": [{"id": t} for t in range(len(cands))], "categories": [{"id": 1}],
                      "annotations": anns}
        gt.createIndex()
        dts = [{"image_id": t, "category_id": 1, "bbox": [x - 1, y - 1, 2, 2], "score": s}
               for t in range(len(cands)) for x, y, s in cands[t].tolist() if np.isfinite(s)]
        dt = gt.loadRes(dts)

    class CentreDistanceEval(COCOeval):
        def computeIoU(self, imgId, catId):  # noqa: N802 - COCOeval's name
            g, d = self._gts[imgId, catId], self._dts[imgId, catId]
            if not g or not d:
                return []
            d = [d[i] for i in np.argsort([-x["score"] for x in d], kind="mergesort")][: self.params.maxDets[-1]]
            gc = np.array([[b[0] + b[2] / 2, b[1] + b[3] / 2, b[2] / 2] for b in (x["bbox"] for x in g)])
            dc = np.array([[b[0] + b[2] / 2, b[1] + b[3] / 2] for b in (x["bbox"] for x in d)])
            dist = np.hypot(dc[:, None, 0] - gc[None, :, 0], dc[:, None, 1] - gc[None, :, 1])
            return 1.0 - dist / gc[None, :, 2]

    ev = CentreDistanceEval(gt, dt, "bbox")
    ev.params.iouThrs = np.array([0.0])
    ev.params.maxDets = [k]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][0, :, 0, 0, 0]
    return float(np.mean(p[p > -1]))


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_agrees_with_cocoeval_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    cands, truth = _random_problem(rng, n_tiles=25)
    m = match(cands, truth, list(range(25)), 1.0, 1.0, PIX, tile_area_deg2=1.0)
    assert average_precision(m) == pytest.approx(_coco_ap(cands, truth, cands.shape[1]), abs=1e-12)


# --------------------------------------------------------------------------- validation of predictions
def test_validation_pads_to_k_and_accepts_edges():
    a = validate_detections(np.array([[[-0.5, 99.5, 1.0]], [NAN3]]), 2, 4, 100)
    assert a.shape == (2, 4, 3) and np.isnan(a[0, 1:]).all()
    # more columns than K is fine when the extra rows are padding; they are compacted
    b = validate_detections(np.array([[NAN3, [5, 5, 0.1], NAN3]]), 1, 2, 100)
    np.testing.assert_array_equal(b[0, 0], [5, 5, 0.1])


@pytest.mark.parametrize(("pred", "words"), [
    ([[[100.0, 5.0, 1.0]]], "outside the tile"),
    ([[[5.0, -0.6, 1.0]]], "outside the tile"),
    ([[[5.0, 5.0, np.inf]]], "non-finite score"),
    ([[[5.0, 5.0, np.nan]]], "non-finite score"),
    ([[[np.nan, 5.0, 1.0]]], "non-finite x or y"),
    ([[[1.0, 1.0, 0.1], [2.0, 2.0, 0.2], [3.0, 3.0, 0.3]]], "3 candidates, more than the track's K = 2"),
    ([[1.0, 1.0, 0.1]], "must have shape (1, K, 3)"),
    ([[["a", 1.0, 0.1]]], "must be numbers"),
])
def test_validation_refuses_with_one_line(pred, words):
    with pytest.raises(ValueError) as err:
        validate_detections(pred, 1, 2, 100)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_csv_form_becomes_the_padded_array_and_is_checked():
    frame = pd.DataFrame({"tile_id": [11, 10, 11], "x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0],
                          "score": [0.1, 0.2, 0.3]})
    a = detections_from_csv(frame, [10, 11, 12], 2, 50)
    assert a.shape == (3, 2, 3)
    np.testing.assert_array_equal(a[1], [[1, 1, 0.1], [3, 3, 0.3]])
    assert np.isnan(a[2]).all() and np.isnan(a[0, 1]).all()
    with pytest.raises(ValueError, match="tile 11 has 2 candidates, more than the track's K = 1"):
        detections_from_csv(frame, [10, 11, 12], 1, 50)
    with pytest.raises(ValueError, match="tile_id 11 is not a tile of this split"):
        detections_from_csv(frame, [10], 2, 50)
    with pytest.raises(ValueError, match="outside the tile"):
        detections_from_csv(frame.assign(x=[1.0, 2.0, 60.0]), [10, 11], 2, 50)


def test_operating_points_allow_floor_of_rate_times_area_false_positives_on_the_demo_area():
    """The demo's 64 tiles of 51.2" (0.013 deg^2): 1 and 10 false positives per deg^2 allow floor(0.013) =
    floor(0.13) = 0 false positives (completeness before the best false positive), 1000 allow floor(12.9) = 12,
    10000 allow 129 (everything here)."""
    from skybench.tasks.detect.metrics import allowed_false_positives
    from skybench.tracks import load_track

    track = load_track("lens-tiles").for_profile("demo")
    area = 64 * track.tile_area_deg2
    assert area == pytest.approx(64 * 51.2**2 / 3600**2)
    assert [allowed_false_positives(f, area) for f in (1, 10, 1000, 10000)] == [0, 0, 12, 129]
    assert allowed_false_positives(13 / area, area) == 13  # rate x area a hair under 13 in floating point
    # one candidate per tile, pooled by score: TP .99, FP .95, TP .90, 12 FPs .80-.69, TP .60, FP .50, TP .40
    steps = [("tp", .99), ("fp", .95), ("tp", .90), *[("fp", .80 - .01 * i) for i in range(12)], ("tp", .60),
             ("fp", .50), ("tp", .40)]
    cands = np.full((64, 5, 3), np.nan)
    lens_rows = []
    for t, (kind, s) in enumerate(steps):
        cands[t, 0] = (100.0, 100.0, s) if kind == "tp" else (400.0, 400.0, s)
        if kind == "tp":
            lens_rows.append({"tile": t, "x": 100.0, "y": 100.0, "theta_E": 1.0})
    m = match(cands, pd.DataFrame(lens_rows), list(range(64)), 1.0, 1.0, PIX, track.tile_area_deg2)
    assert threshold_at_fp_rate(m, 1.0) == threshold_at_fp_rate(m, 10.0) == 0.99
    assert threshold_at_fp_rate(m, 1000.0) == pytest.approx(0.70)  # the 12th false positive: .80 - .01 x 10
    s = summary(m, fp_per_deg2=track.label.matching.fp_per_deg2)
    assert (s["completeness_fp1"], s["completeness_fp10"], s["completeness_fp1000"], s["completeness_fp10000"]) \
        == (0.25, 0.25, 0.5, 1.0)
    assert summary(m, fp_per_deg2=(13 / area,))[f"completeness_fp{13 / area:g}"] == 0.75  # 13 allowed: TP .60 in
    # the best candidate is a false positive: at zero allowed, nothing is found
    first_fp = cands.copy()
    first_fp[63, 0] = (400.0, 400.0, 0.999)
    m = match(first_fp, pd.DataFrame(lens_rows), list(range(64)), 1.0, 1.0, PIX, track.tile_area_deg2)
    assert threshold_at_fp_rate(m, 10.0) == np.inf and summary(m, (10.0,))["completeness_fp10"] == 0.0
