"""The ``detections`` output kind in the harness: a model's (N, K, 3) NaN-padded candidates and a ``predictions``
CSV ``tile_id,x,y,score``, checked by :mod:`skybench.harness.submission` with the track's K and tile size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skybench.harness.submission import MAX_MESSAGE, read_detections_csv, validate_predictions
from skybench.tracks import load_track

TRACK = load_track("lens-tiles").for_profile("demo")
K, SIZE = TRACK.output.max_candidates or 0, TRACK.image_shape()[-1]
IDS = np.array([3, 7, 11])


def _good() -> np.ndarray:
    pred = np.full((3, K, 3), np.nan, np.float32)
    pred[0, :2] = [(10.0, 20.0, 0.9), (SIZE - 0.5, -0.5, 0.1)]  # the tile's outer pixel edges are inside
    pred[2, 0] = (100.0, 400.0, -3.0)
    return pred


def _reason(pred: np.ndarray) -> str:
    return validate_predictions(pred, 3, TRACK.output, TRACK.image_shape())


def test_nan_padded_candidates_are_accepted() -> None:
    assert _reason(_good()) == "" and _reason(_good().astype(np.float64)) == ""
    assert _reason(np.full((3, K, 3), np.nan, np.float32)) == ""  # no candidate at all


@pytest.mark.parametrize(("edit", "words"), [
    (lambda p: p.__setitem__((1, 0), (SIZE + 1.0, 5.0, 1.0)), "outside the tile"),
    (lambda p: p.__setitem__((1, 0), (5.0, -1.0, 1.0)), "outside the tile"),
    (lambda p: p.__setitem__((0, 0, 2), np.inf), "non-finite score"),
    (lambda p: p.__setitem__((0, 0, 0), np.nan), "non-finite x or y"),
])
def test_bad_candidates_are_refused_with_one_line(edit, words: str) -> None:
    pred = _good()
    edit(pred)
    reason = _reason(pred)
    assert words in reason and "\n" not in reason and len(reason) <= MAX_MESSAGE, reason


def test_more_than_k_candidates_or_another_shape_is_refused() -> None:
    wide = np.full((3, K + 1, 3), 1.0, np.float32)
    assert f"expected (3, {K}, 3)" in _reason(wide)
    assert f"expected (3, {K}, 3)" in _reason(_good()[:2])
    assert "non-numeric" in _reason(_good().astype(str))


def _csv(tmp_path: Path, text: str) -> tuple[np.ndarray | None, str]:
    path = tmp_path / "candidates.csv"
    path.write_text(text)
    return read_detections_csv(path, IDS, TRACK.output, TRACK.image_shape())


def test_a_csv_of_candidates_becomes_the_padded_array(tmp_path: Path) -> None:
    pred, reason = _csv(tmp_path, "tile_id,x,y,score\n11,100,400,-3\n3,10,20,0.9\n3,511.5,-0.5,0.1\n")
    assert reason == "" and pred is not None and pred.dtype == np.float32 and pred.shape == (3, K, 3)
    np.testing.assert_array_equal(pred, _good())


@pytest.mark.parametrize(("text", "words"), [
    ("tile_id,x,y\n3,1,2\n", "expected the columns tile_id,x,y,score"),
    ("tile_id,x,y,score\n4,1,2,0.5\n", "tile_id 4 is not a tile of this split"),
    ("tile_id,x,y,score\n3,1,600,0.5\n", "outside the tile"),
    ("tile_id,x,y,score\n3,1,2,high\n", "x, y, score numbers"),
    ("tile_id,x,y,score\n3,1,2,1e300\n", "non-finite"),
    ("tile_id,x,y,score\n" + "7,1,2,0.5\n" * (K + 1), f"tile 7 has {K + 1} candidates, more than the track's K"),
])
def test_a_bad_csv_is_refused_with_one_line(tmp_path: Path, text: str, words: str) -> None:
    pred, reason = _csv(tmp_path, text)
    assert pred is None and words in reason and "\n" not in reason and len(reason) <= MAX_MESSAGE, reason


@pytest.mark.parametrize("output", [{"kind": "detections", "shape": ["N", 5, 3]},
                                    {"kind": "score", "shape": ["N"], "max_candidates": 5}])
def test_max_candidates_goes_with_the_detections_kind_only(output: dict) -> None:
    from skybench.tracks import Output

    with pytest.raises(ValueError, match="max_candidates .* goes with kind detections"):
        Output.model_validate(output)
