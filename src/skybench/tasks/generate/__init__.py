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

from skybench.tasks.base import PackageTask
from skybench.tasks.generate.config import GenerateTrack

if TYPE_CHECKING:
    from skybench.tracks import Track


class GenerateTask(PackageTask):
    name = "generate"
    track_model = GenerateTrack
    output_kinds = ("maps",)
    paired = False  # the score compares distributions: a prediction belongs to no particular object
    simulator_path = "skybench.tasks.generate.simulator:GenerateSimulator"
    scorer_path = "skybench.tasks.generate.score"

    def fresh_inputs(self, track: Track, test_dir: Path, manifest: dict[str, Any], submission_sha256: str,
                     out: Path) -> tuple[Path, tuple[Path, ...], int] | None:
        from skybench.tasks.generate.fresh import prepare

        return prepare(self._own(track), test_dir, manifest, submission_sha256, out)

    def check_rerun(self, first: np.ndarray, again: np.ndarray) -> str:
        from skybench.tasks.generate.fresh import check_rerun

        return check_rerun(first, again)


TASK = GenerateTask
