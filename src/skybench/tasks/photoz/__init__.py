"""Photometric redshifts: a point estimate or a binned PDF per galaxy, from images or catalogue magnitudes.

Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator and the scorer only
when called, so reading a photoz track imports neither the physics nor the plotting."""

from __future__ import annotations

from skybench.tasks.base import PackageTask
from skybench.tasks.photoz.config import PhotozTrack


class PhotozTask(PackageTask):
    name = "photoz"
    track_model = PhotozTrack
    output_kinds = ("point", "pdf")
    simulator_path = "skybench.tasks.photoz.simulator:GalaxySimulator"
    scorer_path = "skybench.tasks.photoz.score"


TASK = PhotozTask
