"""The detect task on a tiny release of 256-pixel tiles (the fast lane; the contract suite runs lens-tiles in the
slow one): the hidden truth table agrees with the per-tile counts, the oracle scores AP 1, resamples are the scorer
on repeated tiles, and what participants see holds no position of a true lens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skybench.release.reader import HiddenSplit, open_release
from skybench.simulate import simulate_release
from skybench.tasks import get_task
from skybench.tasks.detect.config import DetectTrack, load_detect_track
from skybench.tasks.detect.score import FP_GRID, PUBLIC_FILES

SMALL = Path(__file__).resolve().parent / "detect" / "lens-tiles-small.yaml"
TASK = get_task("detect")


@pytest.fixture(scope="module")
def track() -> DetectTrack:
    return load_detect_track(SMALL)


@pytest.fixture(scope="module")
def release(track: DetectTrack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_release(track, tmp_path_factory.mktemp("detect") / "rel", seed=4, size=10, progress=False,
                            workers=1, backend="numpy")


@pytest.fixture(scope="module")
def truth(release: Path) -> HiddenSplit:
    return open_release(release).hidden("test")


def test_the_hidden_table_lists_every_object_of_every_test_tile(release: Path, truth: HiddenSplit) -> None:
    meta, table = truth.meta(), truth.table("objects")
    assert set(table["tile"]) <= set(meta["id"]) and {"x", "y", "theta_E", "kind", "lens_theta_E"} <= set(table)
    counts = table.groupby(["tile", "kind"]).size().unstack(fill_value=0).reindex(meta["id"], fill_value=0)
    for kind in ("lens", "lookalike", "galaxy", "star"):
        got = counts[kind].to_numpy() if kind in counts else np.zeros(len(meta), int)
        np.testing.assert_array_equal(got, meta[f"n_{kind}"].to_numpy(), err_msg=kind)
    lens = table[table["kind"] == "lens"]
    assert len(lens) > 0 and np.all(np.isfinite(lens[["x", "y", "theta_E"]].to_numpy()))


def test_the_oracle_scores_ap_1_and_shuffled_tiles_score_worse(track: DetectTrack, truth: HiddenSplit,
                                                              tmp_path: Path) -> None:
    ids = truth.ids()
    best = TASK.score(track, ids, TASK.oracle(track, truth, ids), truth, tmp_path / "best")
    assert best["average_precision"] == pytest.approx(1.0) and best["completeness"] == 1.0
    shifted = TASK.score(track, ids, TASK.oracle(track, truth, np.roll(ids, 1)), truth, tmp_path / "shifted")
    assert shifted["average_precision"] < 0.5, shifted
    # the organiser's files hold the truth: the lenses with the score of the candidate that found each
    assert len(pd.read_csv(tmp_path / "best" / "lenses.csv")) == best["n_lens"]


def test_resamples_are_the_scorer_on_repeated_tiles(track: DetectTrack, truth: HiddenSplit, tmp_path: Path) -> None:
    ids = truth.ids()
    rng = np.random.default_rng(3)
    pred = TASK.oracle(track, truth, ids)
    pred[..., 2] += rng.normal(0, 0.5, pred.shape[:2])
    pred[:, -1] = (40.0, 50.0, 0.9)  # a false positive in every tile
    rows = np.vstack([np.arange(len(ids)), rng.integers(0, len(ids), (2, len(ids)))])
    got = TASK.score_resamples(track, ids, pred, truth, rows)
    for r, idx in enumerate(rows):
        want = TASK.score(track, ids[idx], pred[idx], truth, tmp_path / str(r))["average_precision"]
        assert got[r] == pytest.approx(want, rel=1e-12), (r, got[r], want)
    assert 0 < got[0] < 1


def test_participants_see_fixed_aggregates_and_their_own_candidates_only(track: DetectTrack, truth: HiddenSplit,
                                                                        tmp_path: Path) -> None:
    ids = truth.ids()
    pred = TASK.oracle(track, truth, ids)
    pred[:, -3:] = np.random.default_rng(0).uniform(0, 255, (len(ids), 3, 3))  # some other candidates
    TASK.public_artifacts(track, ids, pred, truth, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PUBLIC_FILES)
    table = pd.read_csv(tmp_path / "completeness_public.csv")
    assert list(table.columns) == ["fp_per_deg2", "completeness", "purity", "candidates_per_deg2"]
    assert table["fp_per_deg2"].tolist() == list(FP_GRID)  # its size never depends on the submission


def test_tiles_without_a_lens_score_nan_with_their_counts(track: DetectTrack, truth: HiddenSplit,
                                                         tmp_path: Path) -> None:
    meta = truth.meta()
    empty = meta.loc[meta["n_lens"] == 0, "id"].to_numpy()[:1]
    if not empty.size:
        pytest.skip("every tile of this release has a lens")
    pred = np.full((1, track.output.max_candidates, 3), np.nan)
    pred[0, 0] = (30.0, 40.0, 1.0)
    got = TASK.score(track, empty, pred, truth, tmp_path)
    assert np.isnan(got["average_precision"]) and got["n_lens"] == 0 and got["n_candidates"] == 1, got
