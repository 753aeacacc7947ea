"""The generate task (issue 17): weak-lensing convergence maps, CosmoGAN (Mustafa et al. 2019).

So far its physics and metrics: ``config`` (the map population), ``simulator`` (pyccl C_l, Gaussian and
shifted lognormal fields), ``metrics`` (C_l, PDF, peaks, Minkowski functionals, chi^2, memorisation, collapse).
The Task class and its registration in :mod:`skybench.tasks` come with the harness integration.
"""
