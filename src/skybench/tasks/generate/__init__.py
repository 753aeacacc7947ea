"""Weak-lensing map generation (issue 17; CosmoGAN, Mustafa et al. 2019): submissions are generators, given latent
vectors and returning convergence maps, scored by how well the statistics of their maps match the truth's. On a
conditional track (``population.grid``: ``wl-maps-conditional``) a generator also gets each object's
``params`` = (Omega_m, sigma8) and is scored per grid point, and by how well a fixed regressor reads the
parameters back from its maps.

``config`` (the map population and the track model), ``simulator`` (pyccl C_l, Gaussian and shifted lognormal
fields; :class:`~skybench.tasks.generate.simulator.GenerateSimulator` writes the releases), ``metrics`` (C_l, PDF,
peaks, Minkowski functionals, chi^2, memorisation, collapse) and ``score`` (the scorer). Its
:class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skybench.tasks.base import Task
from skybench.tasks.generate.config import GenerateTrack

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit
    from skybench.tracks import Track


class GenerateTask(Task):
    name = "generate"
    track_model = GenerateTrack
    output_kinds = ("maps",)
    paired = False  # the score compares distributions: a prediction belongs to no particular object

    def simulator(self) -> Any:
        from skybench.tasks.generate.simulator import GenerateSimulator

        return GenerateSimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.generate import score

        return score.score(self._own(track), ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        from skybench.tasks.generate import score

        return score.score_real(self._own(track), ids, predictions, truth, real_ids, real_predictions, real_truth,
                                out_dir)

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        from skybench.tasks.generate import score

        return score.oracle(self._own(track), truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        from skybench.tasks.generate import score

        return score.score_resamples(self._own(track), ids, predictions, truth, indices)

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                         out_dir: Path) -> None:
        from skybench.tasks.generate import score

        score.public_artifacts(self._own(track), ids, predictions, truth, out_dir)

    @staticmethod
    def _own(track: Track) -> GenerateTrack:
        if not isinstance(track, GenerateTrack):
            raise TypeError(f"track {track.name!r} is a {type(track).__name__}, not a GenerateTrack")
        return track


TASK = GenerateTask
