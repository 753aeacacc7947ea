"""Photometric redshifts: a point estimate or a binned PDF per galaxy, from images or catalogue magnitudes.

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a photoz track imports neither the physics nor the plotting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skybench.tasks.base import Task
from skybench.tasks.photoz.config import PhotozTrack

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.tracks import Track


class PhotozTask(Task):
    name = "photoz"
    track_model = PhotozTrack
    output_kinds = ("point", "pdf")

    def simulator(self) -> Any:
        from skybench.tasks.photoz.simulator import GalaxySimulator

        return GalaxySimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.photoz import score

        return score.score(self._own(track), ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.photoz import score

        return score.score_real(self._own(track), ids, predictions, truth, real_ids, real_predictions, real_truth,
                                out_dir)

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        from skybench.tasks.photoz import score

        return score.oracle(self._own(track), truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        from skybench.tasks.photoz import score

        return score.score_resamples(self._own(track), ids, predictions, truth, indices)

    @staticmethod
    def _own(track: Track) -> PhotozTrack:
        if not isinstance(track, PhotozTrack):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a PhotozTrack")
        return track


TASK = PhotozTask
