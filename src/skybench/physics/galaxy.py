"""Galaxy structure beyond Sersic and Gaussian profiles: logarithmic spiral arms (surface brightness per arcsec^2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from skybench.physics.backend import array_namespace, param


def elliptical_coords(x: Any, y: Any, e1: Any, e2: Any, center_x: Any, center_y: Any) -> tuple[Any, Any]:
    """Coordinates in the frame where the ellipse is a circle, as lenstronomy's
    param_util.transform_e1e2_product_average (the same transform as light.elliptical_radius2)."""
    e1, e2 = np.asarray(e1, dtype=np.float64), np.asarray(e2, dtype=np.float64)
    norm = np.sqrt(np.maximum(np.abs(1 - e1**2 - e2**2), 1e-6))
    dx, dy = x - param(center_x, x), y - param(center_y, x)
    xe = param((1 - e1) / norm, x) * dx - param(e2 / norm, x) * dy
    ye = -param(e2 / norm, x) * dx + param((1 + e1) / norm, x) * dy
    return xe, ye


def spiral_arms(x: Any, y: Any, amp: Any, R_sersic: Any, n_arms: Any, pitch: Any, phase: Any, sharpness: Any,
                e1: Any, e2: Any, center_x: Any, center_y: Any) -> Any:
    """Logarithmic spiral arms on an exponential disk (Sersic n = 1 with half-light radius ``R_sersic``):

    I = amp exp(-b_1 (R/R_s - 1)) [(1 + cos(m (theta - ln(R/R_s) / tan(pitch)) - phase)) / 2]^sharpness
        (1 - exp(-(R / (0.5 R_s))^2)),

    a log spiral r = r0 exp(theta tan(pitch)) (Binney & Tremaine 2008, Sec. 6.1.1) of ``n_arms`` = m arms, the
    last factor fading the arms into the bulge region. ``pitch`` in radians; per-object arrays (B, 1, 1)."""
    xp = array_namespace(x)
    xe, ye = elliptical_coords(x, y, e1, e2, center_x, center_y)
    R_s = np.maximum(np.asarray(R_sersic, dtype=np.float64), 1e-4)
    r = xp.sqrt(xe**2 + ye**2 + param(1e-8, x))
    theta = xp.atan2(ye, xe)
    b1 = 1.9992 - 0.3271  # lenstronomy's b_n at n = 1 (light.b_n)
    disk = xp.exp(param(b1, x) - r * param(b1 / R_s, x))
    wind = theta - xp.log(r * param(1.0 / R_s, x)) * param(1.0 / np.tan(np.asarray(pitch, dtype=np.float64)), x)
    pattern = (1.0 + xp.cos(wind * param(n_arms, x) - param(phase, x))) * 0.5
    pattern = xp.exp(xp.log(pattern + param(1e-12, x)) * param(sharpness, x))
    inner = 1.0 - xp.exp(-(r * param(2.0 / R_s, x)) ** 2)
    return param(amp, x) * disk * pattern * inner
