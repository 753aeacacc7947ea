"""Image enhancement: the undegraded galaxy image recovered from its blurred, noisier copy (Schawinski et al.
2017).

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a enhance track imports neither the physics nor the plotting."""

from __future__ import annotations

from skybench.tasks.base import PackageTask
from skybench.tasks.enhance.config import EnhanceTrack


class EnhanceTask(PackageTask):
    name = "enhance"
    track_model = EnhanceTrack
    output_kinds = ("image",)
    simulator_path = "skybench.tasks.enhance.simulator:EnhanceSimulator"
    scorer_path = "skybench.tasks.enhance.score"


TASK = EnhanceTask
