"""Strong-lens finding: a score per cut-out, ranked against the simulated ``is_lens`` (Metcalf et al. 2019).

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a lens track imports neither the physics nor the plotting."""

from __future__ import annotations

from skybench.tasks.base import PackageTask
from skybench.tasks.lens.config import LensTrack


class LensTask(PackageTask):
    name = "lens"
    track_model = LensTrack
    output_kinds = ("score",)
    simulator_path = "skybench.tasks.lens.simulator:LensSimulator"
    scorer_path = "skybench.tasks.lens.score"


TASK = LensTask
