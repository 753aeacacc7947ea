"""Image enhancement: the undegraded galaxy image recovered from its blurred, noisier copy (Schawinski et al.
2017).

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a enhance track imports neither the physics nor the plotting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skybench.tasks.base import Task
from skybench.tasks.enhance.config import EnhanceTrack

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.tracks import Track


class EnhanceTask(Task):
    name = "enhance"
    track_model = EnhanceTrack
    output_kinds = ("image",)

    def simulator(self) -> Any:
        from skybench.tasks.enhance.simulator import EnhanceSimulator

        return EnhanceSimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.enhance import score

        return score.score(self._own(track), ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.enhance import score

        return score.score_real(self._own(track), ids, predictions, truth, real_ids, real_predictions, real_truth,
                                out_dir)

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        from skybench.tasks.enhance import score

        return score.oracle(self._own(track), truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        from skybench.tasks.enhance import score

        return score.score_resamples(self._own(track), ids, predictions, truth, indices)

    @staticmethod
    def _own(track: Track) -> EnhanceTrack:
        if not isinstance(track, EnhanceTrack):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a EnhanceTrack")
        return track


TASK = EnhanceTask
