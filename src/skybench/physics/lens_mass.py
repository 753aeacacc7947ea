"""Lens mass: singular isothermal ellipsoid plus external shear, in lenstronomy's conventions."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import array_namespace, param


def ellipticity2phi_q(e1: Any, e2: Any) -> tuple[Any, Any]:
    """phi = atan2(e2, e1)/2, q = (1-|e|)/(1+|e|) (lenstronomy Util/param_util.py)."""
    phi = np.arctan2(e2, e1) / 2
    c = np.minimum(np.sqrt(np.square(e1) + np.square(e2)), 0.9999)
    return phi, (1 - c) / (1 + c)


def phi_q2ellipticity(phi: Any, q: Any) -> tuple[Any, Any]:
    """e1 = (1-q)/(1+q) cos 2phi, e2 = (1-q)/(1+q) sin 2phi (lenstronomy Util/param_util.py)."""
    e = (1 - q) / (1 + q)
    return e * np.cos(2 * phi), e * np.sin(2 * phi)


def sie_deflection(x: Any, y: Any, theta_E: Any, e1: Any, e2: Any, center_x: Any, center_y: Any,
                   s_scale: float = 1e-10) -> tuple[Any, Any]:
    """SIE deflection (lenstronomy SIE -> NIE, Keeton & Kochanek 1998 eq. after 8).

    Pixel coordinates ``x, y`` are arrays of the backend; the lens parameters are float64 numpy arrays
    of shape (B, 1, 1) (or scalars) and are converted to the grid's backend here, so that the
    per-object trigonometry is done once in double precision."""
    xp = array_namespace(x)
    theta_E, e1, e2 = (np.asarray(v, dtype=np.float64) for v in (theta_E, e1, e2))
    phi, q = ellipticity2phi_q(e1, e2)
    q = np.minimum(q, 0.99999999)  # lenstronomy NIEMajorAxis: q >= 1 -> 0.99999999
    b = theta_E * np.sqrt(q)  # theta_E is the product-average radius: b = theta_E sqrt(q)
    s = s_scale / np.sqrt(q)
    sq = np.sqrt(1.0 - q**2)

    def to(v: Any) -> Any:
        return param(v, x)

    cos, sin = to(np.cos(phi)), to(np.sin(phi))
    dx, dy = x - to(center_x), y - to(center_y)
    xr = dx * cos + dy * sin  # rotate into the major-axis frame (lenstronomy util.rotate)
    yr = -dx * sin + dy * cos
    q2, s_ = to(q**2), to(s)
    psi = xp.sqrt(q2 * (s_**2 + xr**2) + yr**2)
    amp, sq_ = to(b / sq), to(sq)
    ax = amp * xp.atan(sq_ * xr / (psi + s_))
    z = sq_ * yr / (psi + q2 * s_)
    ay = amp * 0.5 * xp.log((1 + z) / (1 - z))  # atanh(z), written with one log: ~3x cheaper here
    return ax * cos - ay * sin, ax * sin + ay * cos  # rotate back by -phi


def shear_deflection(x: Any, y: Any, gamma1: Any, gamma2: Any) -> tuple[Any, Any]:
    """External shear with ra_0 = dec_0 = 0: alpha = (g1 x + g2 y, g2 x - g1 y) (lenstronomy SHEAR)."""
    g1, g2 = param(gamma1, x), param(gamma2, x)
    return g1 * x + g2 * y, g2 * x - g1 * y

