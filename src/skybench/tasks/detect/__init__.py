"""Lens detection in survey tiles (issue 18): find the few strong lenses among the galaxies, stars and look-alikes
of a wide-field tile. The track model (``config``), the scene simulator (``simulator``) and the detection metrics
(``metrics``); the :class:`~skybench.tasks.base.Task` class and its registration come next."""
