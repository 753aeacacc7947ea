"""Lens mass: singular isothermal ellipsoid plus external shear, in lenstronomy's conventions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skybench.physics import kernels as K
from skybench.physics.backend import array_namespace, param


def ellipticity2phi_q(e1: Any, e2: Any) -> tuple[Any, Any]:
    """phi = atan2(e2, e1)/2, q = (1-|e|)/(1+|e|) (lenstronomy Util/param_util.py)."""
    phi = np.arctan2(e2, e1) / 2
    c = np.minimum(np.sqrt(np.square(e1) + np.square(e2)), 0.9999)
    return phi, (1 - c) / (1 + c)


def phi_q2ellipticity(phi: Any, q: Any) -> tuple[Any, Any]:
    """e1 = (1-q)/(1+q) cos 2phi, e2 = (1-q)/(1+q) sin 2phi (lenstronomy Util/param_util.py)."""
    e = (1 - q) / (1 + q)
    if isinstance(phi, (float, int)) and isinstance(q, (float, int)):
        return e * math.cos(2 * phi), e * math.sin(2 * phi)
    return e * np.cos(2 * phi), e * np.sin(2 * phi)


def einstein_radius(theta_E: Any, e1: Any, e2: Any, gamma1: Any, gamma2: Any, n: int = 720) -> np.ndarray:
    """R_ein = sqrt(A_ein / pi), A_ein the area inside the tangential critical curve (Metcalf et al. 2019), of an
    SIE (lenstronomy's kappa = theta_E / 2 sqrt(q x^2 + y^2 / q) in its major-axis frame) plus external shear.

    An isothermal lens's Hessian at (r, t) is 2 kappa(1, t) e_t e_t^T / r (e_t = (-sin t, cos t): Kormann et al.
    1994), so det(I - Hessian - shear) = 0 at r(t) = 2 kappa(1, t) (1 - g1 cos 2t - g2 sin 2t) / (1 - g^2), and
    A_ein = 1/2 of the integral of r(t)^2 over t (n directions; the mean of a periodic function: exact fast)."""
    theta_E, e1, e2, g1, g2 = (np.asarray(v, dtype=np.float64)[..., None] for v in (theta_E, e1, e2, gamma1, gamma2))
    phi, q = ellipticity2phi_q(e1, e2)
    t = np.arange(n) * (2 * np.pi / n)
    major, minor = np.cos(t - phi), np.sin(t - phi)  # the direction t in the major-axis frame
    kappa = theta_E / (2 * np.sqrt(q * major**2 + minor**2 / q))
    r = 2 * kappa * (1 - g1 * np.cos(2 * t) - g2 * np.sin(2 * t)) / (1 - g1**2 - g2**2)
    return np.sqrt(np.mean(r**2, axis=-1))  # sqrt(A / pi), A = pi mean(r^2)


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


def sie_shear_ray_shoot(xs: np.ndarray, ys: np.ndarray, like: Any, theta_E: Any, e1: Any, e2: Any,
                        center_x: Any, center_y: Any, gamma1: Any, gamma2: Any, origin_x: Any = 0.0,
                        origin_y: Any = 0.0, work: Any = None, s_scale: float = 1e-10) -> tuple[Any, Any]:
    """beta - origin, beta = theta - alpha_SIE(theta) - alpha_shear(theta) (the lens equation), for B lenses on
    the regular grid x = xs[j], y = ys[i] (float64 numpy 1-D): two (B, ny, nx) arrays in ``like``'s dtype and
    backend, views of ``work`` (a (6, B, ny, nx) scratch array, made here if None).

    The same formulas as :func:`sie_deflection` and :func:`shear_deflection`, arranged for a batch without
    temporaries: psi^2 = q^2 (s^2 + x'^2) + y'^2 is a quadratic form of (x, y), hence one matrix product
    (kernels.quadratic_form_factors); x', y' are outer sums of per-row and per-column terms (kernels.outer_sum)."""
    theta_E, e1, e2, cx, cy, g1, g2, ox, oy = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (
        theta_E, e1, e2, center_x, center_y, gamma1, gamma2, origin_x, origin_y))
    phi, q = ellipticity2phi_q(e1, e2)
    q = np.minimum(q, 0.99999999)  # lenstronomy NIEMajorAxis
    b, s, sq = theta_E * np.sqrt(q), s_scale / np.sqrt(q), np.sqrt(1.0 - q**2)
    cos, sin, k = np.cos(phi), np.sin(phi), b / sq
    B, ny, nx = max(len(v) for v in (theta_E, e1, e2, cx, cy, g1, g2, ox, oy)), len(ys), len(xs)
    m = K.module(like)
    work = work if work is not None else K.empty((6, B, ny, nx), like)
    psi, t, u, z, bx, by = work  # u, z and bx, by are adjacent: each pair of outer sums is one product
    c = K.lift(np.broadcast_to(np.stack([s, (q**2 - 1) * s, k * cos, 0.5 * k * sin, k * sin, 0.5 * k * cos]),
                               (6, B))[..., None, None], like)  # per-object factors (6, B, 1, 1)
    dx, dy = xs[None, :] - cx[:, None], ys[None, :] - cy[:, None]
    # psi = sqrt(q^2 (s^2 + x'^2) + y'^2), x' = cos dx + sin dy, y' = -sin dx + cos dy (major-axis frame).
    L, R = K.quadratic_form_factors(xs, ys, q**2 * cos**2 + sin**2, (q**2 - 1) * sin * cos,
                                    q**2 * sin**2 + cos**2, cx, cy, const=q**2 * s**2)
    K.matmul(K.lift(L, like), K.lift(R, like), out=psi)
    m.sqrt(psi, out=psi)
    # u = sq x', z = sq y'
    sc, ss = (sq * cos)[:, None], (sq * sin)[:, None]
    K.outer_sum(np.stack([ss * dy, sc * dy]), np.stack([sc * dx, -ss * dx]), out=work[2:4])
    # ax' = atan(sq x' / (psi + s)), in the major-axis frame (lenstronomy NIEMajorAxis.derivatives).
    psi += c[0]
    u /= psi
    K.atan_(u)
    # ay' = atanh(sq y' / (psi + q^2 s)) = log((1 + w) / (1 - w)) / 2, one log instead of atanh.
    psi += c[1]
    z /= psi
    m.add(z, 1.0, out=t)
    K.rsub_(z, 1.0)
    t /= z
    K.log_(t)
    # beta = theta - R(-phi) (b/sq) (ax', ay') - shear, minus the origin.
    K.outer_sum(np.stack([-g2[:, None] * ys[None, :], (1 + g1)[:, None] * ys[None, :] - oy[:, None]]),
                np.stack([(1 - g1)[:, None] * xs[None, :] - ox[:, None], -g2[:, None] * xs[None, :]]),
                out=work[4:6])
    m.multiply(u, c[2], out=z)
    bx -= z
    m.multiply(t, c[3], out=z)
    bx += z
    m.multiply(u, c[4], out=z)
    by -= z
    m.multiply(t, c[5], out=z)
    by -= z
    return bx, by
