"""Strong-lens finding: a score per cut-out, ranked against the simulated ``is_lens`` (Metcalf et al. 2019).

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a lens track imports neither the physics nor the plotting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skybench.tasks.base import Task
from skybench.tasks.lens.config import LensTrack

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.tracks import Track


class LensTask(Task):
    name = "lens"
    track_model = LensTrack
    output_kinds = ("score",)

    def simulator(self) -> Any:
        from skybench.tasks.lens.simulator import LensSimulator

        return LensSimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.lens import score

        return score.score(self._own(track), ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.lens import score

        return score.score_real(self._own(track), ids, predictions, truth, real_ids, real_predictions, real_truth,
                                out_dir)

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        from skybench.tasks.lens import score

        return score.oracle(self._own(track), truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        from skybench.tasks.lens import score

        return score.score_resamples(self._own(track), ids, predictions, truth, indices)

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                         out_dir: Path) -> None:
        from skybench.tasks.lens import score

        score.public_artifacts(self._own(track), ids, predictions, truth, out_dir)

    @staticmethod
    def _own(track: Track) -> LensTrack:
        if not isinstance(track, LensTrack):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a LensTrack")
        return track


TASK = LensTask
