"""Lens detection in survey tiles (issue 18): find the few strong lenses among the galaxies, stars and look-alikes
of a wide-field tile, as region-proposal networks do.

``config`` (the track model: tiles, scene population, matching rule), ``simulator`` (the scene simulator; the
release's hidden truth table ``objects`` lists every lens, look-alike, galaxy and star of each tile), ``metrics``
(COCO-style greedy matching by distance, average precision, completeness at false positives per deg^2, tile
bootstrap) and ``score`` (the scorer). Submissions return per tile up to K candidates (x, y, score), NaN-padded: the
``detections`` output kind. Its :class:`~skybench.tasks.base.Task` is :data:`TASK`; the methods import the simulator
and the scorer only when called."""

from __future__ import annotations

from skybench.tasks.base import PackageTask
from skybench.tasks.detect.config import DetectTrack


class DetectTask(PackageTask):
    name = "detect"
    track_model = DetectTrack
    output_kinds = ("detections",)
    simulator_path = "skybench.tasks.detect.simulator:DetectSimulator"
    scorer_path = "skybench.tasks.detect.score"


TASK = DetectTask
