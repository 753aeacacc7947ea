"""Noise model of lenstronomy's Util/data_util.py and SimAPI.noise_for_model, in e-/s per pixel, and the one way
every simulator draws its per-object noise (:func:`object_normals`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def magnitude2cps(magnitude: Any, zero_point: float) -> Any:
    """counts per second = 10^(-(m - ZP)/2.5), ZP the magnitude giving 1 e-/s (data_util.magnitude2cps)."""
    if isinstance(magnitude, (float, int)):  # one value: plain floats are much faster
        x = -(float(magnitude) - zero_point) / 2.5
        return 10.0**x if x < 300 else math.inf
    return 10.0 ** (-(np.asarray(magnitude, dtype=np.float64) - zero_point) / 2.5)


def cps2magnitude(cps: Any, zero_point: float) -> Any:
    return -2.5 * np.log10(np.asarray(cps, dtype=np.float64)) + zero_point


def background_sigma(read_noise: float, exposure_time: float, num_exposures: int, sky_brightness: float,
                     zero_point: float, pixel_scale: float) -> float:
    """sigma_bkg = sqrt(N RN^2 + T cps_sky pix^2) / T, T = N t_exp (data_util.bkg_noise)."""
    total_time = num_exposures * exposure_time
    sky_cps = magnitude2cps(sky_brightness, zero_point) * pixel_scale**2
    return float(np.sqrt(num_exposures * read_noise**2 + total_time * sky_cps) / total_time)



def noise_stream(seed: int, stream: int) -> np.random.Generator:
    """The generator of an object's noise stream ``stream`` (1, 2, ...), apart from its parameters' ``seed`` stream."""
    return np.random.default_rng([seed, stream])


def object_normals(generators: Iterable[np.random.Generator], shape: tuple[int, ...],
                   dtype: Any = np.float32) -> np.ndarray:
    """(objects, *shape) standard normals, object k's drawn from its own generator alone, so an object's noise
    is fixed by its seed whatever the batch; the generator is that of :func:`noise_stream` (never the parameters'
    generator continued: the noise would show its state)."""
    gens = list(generators)
    out = np.empty((len(gens), *shape), dtype=dtype)
    for k, rng in enumerate(gens):
        rng.standard_normal(shape, dtype=dtype, out=out[k])
    return out
