"""The toy task: point-source photometry, the worked example of docs/ADDING_A_TASK.md.

A task is one folder: its track model (``config.py``), its simulator (``simulator.py``), its scorer
(``score.py``) and this :class:`~skybench.tasks.base.Task` subclass, registered with
:func:`skybench.tasks.register` (a task inside ``skybench/tasks/`` is one line of ``BUILTIN`` instead).
Its track is ``toy.yaml``; ``baseline/`` is a ``python``-format submission that measures the flux.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skybench.common import check_indices
from skybench.release.reader import HiddenSplit
from skybench.tasks import register
from skybench.tasks.base import Simulator, Task
from skybench.tracks import Track

from .config import ToyTrack
from .score import score_toy, true_flux

TRACK_FILE = Path(__file__).with_name("toy.yaml")
BASELINE = Path(__file__).with_name("baseline")


class ToyTask(Task):
    name = "toy"
    track_model = ToyTrack
    output_kinds = ("point",)

    def simulator(self) -> type[Simulator]:
        from .simulator import ToySimulator

        return ToySimulator

    def score(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
              out_dir: Path | None) -> dict[str, float]:
        return score_toy(ids, predictions, truth, out_dir)

    def score_real(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                   real_ids: np.ndarray, real_predictions: np.ndarray, real_truth: HiddenSplit,
                   out_dir: Path | None) -> dict[str, float]:
        # The flux of a real star needs nothing from the simulated test set: the same metrics, on the real set.
        return score_toy(real_ids, real_predictions, real_truth, out_dir, prefix="real_")

    def oracle(self, track: Track, truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
        return true_flux(truth, ids)

    def score_resamples(self, track: Track, ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit,
                        indices: np.ndarray) -> np.ndarray:
        # the median |relative error| of each resample's rows, vectorised along the resample axis
        rel = np.abs(np.asarray(predictions, np.float64) - true_flux(truth, ids)) / true_flux(truth, ids)
        return np.median(rel[check_indices(indices, len(rel))], axis=1)


TASK = register(ToyTask)
