"""Lens detection in survey tiles (issue 18): find the few strong lenses among the galaxies, stars and look-alikes
of a wide-field tile, as region-proposal networks do.

``config`` (the track model: tiles, scene population, matching rule), ``simulator`` (the scene simulator; the
release's hidden truth table ``objects`` lists every lens, look-alike, galaxy and star of each tile), ``metrics``
(COCO-style greedy matching by distance, average precision, completeness at false positives per deg^2, tile
bootstrap) and ``score`` (the scorer). Submissions return per tile up to K candidates (x, y, score), NaN-padded: the
``detections`` output kind. Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator
and the scorer only when called."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skybench.tasks.base import Task
from skybench.tasks.detect.config import DetectTrack

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.tracks import Track


class DetectTask(Task):
    name = "detect"
    track_model = DetectTrack
    output_kinds = ("detections",)

    def simulator(self) -> Any:
        from skybench.tasks.detect.simulator import DetectSimulator

        return DetectSimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.detect import score

        return score.score(self._own(track), ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.detect import score

        return score.score_real(self._own(track), real_ids, real_predictions, real_truth)

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        from skybench.tasks.detect import score

        return score.oracle(self._own(track), truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        from skybench.tasks.detect import score

        return score.score_resamples(self._own(track), ids, predictions, truth, indices)

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                         out_dir: Path) -> None:
        from skybench.tasks.detect import score

        score.public_artifacts(self._own(track), ids, predictions, truth, out_dir)

    @staticmethod
    def _own(track: Track) -> DetectTrack:
        if not isinstance(track, DetectTrack):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a DetectTrack")
        return track


TASK = DetectTask
