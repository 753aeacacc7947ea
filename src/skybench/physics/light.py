"""Light profiles in lenstronomy's conventions (LightModel/Profiles): surface brightness per arcsec^2."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import gamma as gamma_fn
from scipy.special import gammaincinv

from skybench.physics.backend import array_namespace, param

_SMOOTHING = 1e-4  # lenstronomy SersicUtil(smoothing=0.0001): floor on R and R_sersic


def b_n(n: Any) -> Any:
    """lenstronomy's linear approximation b_n = 1.9992 n - 0.3271 (SersicUtil.b_n), not gammaincinv."""
    return np.maximum(1.9992 * np.asarray(n, dtype=np.float64) - 0.3271, 1e-5)


def elliptical_radius2(x: Any, y: Any, e1: Any, e2: Any, center_x: Any, center_y: Any) -> Any:
    """Squared product-average elliptical radius (lenstronomy param_util.transform_e1e2_product_average)."""
    e1, e2 = np.asarray(e1, dtype=np.float64), np.asarray(e2, dtype=np.float64)
    norm = np.sqrt(np.maximum(np.abs(1 - e1**2 - e2**2), 1e-6))
    dx, dy = x - param(center_x, x), y - param(center_y, x)
    xe = param((1 - e1) / norm, x) * dx - param(e2 / norm, x) * dy
    ye = -param(e2 / norm, x) * dx + param((1 + e1) / norm, x) * dy
    return xe**2 + ye**2


def sersic_ellipse(x: Any, y: Any, amp: Any, R_sersic: Any, n_sersic: Any, e1: Any, e2: Any,
                   center_x: Any, center_y: Any) -> Any:
    """I(R) = amp exp(-b_n [(R/R_sersic)^(1/n) - 1]) (lenstronomy SERSIC_ELLIPSE)."""
    xp = array_namespace(x)
    R2 = xp.maximum(elliptical_radius2(x, y, e1, e2, center_x, center_y), param(_SMOOTHING**2, x))
    R_s = np.maximum(np.asarray(R_sersic, dtype=np.float64), _SMOOTHING)
    n, bn = np.asarray(n_sersic, dtype=np.float64), b_n(n_sersic)
    # (R/Rs)^(1/n) = exp(log(R^2)/(2n) - log(Rs)/n): no sqrt or pow on the pixel grid.
    frac = xp.exp(xp.log(R2) * param(0.5 / n, x) - param(np.log(R_s) / n, x))
    return param(amp, x) * xp.exp(param(bn, x) - param(bn, x) * frac)


def sersic_total_flux(amp: Any, R_sersic: Any, n_sersic: Any) -> Any:
    """Total flux 2 pi n R^2 amp e^b / b^(2n) Gamma(2n) (lenstronomy SersicUtil._total_flux)."""
    if isinstance(amp, (float, int)) and isinstance(R_sersic, (float, int)) and isinstance(n_sersic, (float, int)):
        n1, b1 = float(n_sersic), max(1.9992 * float(n_sersic) - 0.3271, 1e-5)  # one object: plain floats
        try:
            return float(amp) * float(R_sersic) ** 2 * 2 * math.pi * n1 * math.exp(b1) / b1 ** (2 * n1) \
                * math.gamma(2 * n1)
        except (OverflowError, ValueError):
            pass
    n, bn = np.asarray(n_sersic, dtype=np.float64), b_n(n_sersic)
    return amp * np.asarray(R_sersic) ** 2 * 2 * np.pi * n * np.exp(bn) / bn ** (2 * n) * gamma_fn(2 * n)


def sersic_flux_radius(n_sersic: Any, share: float) -> Any:
    """The radius, in half-light radii, inside which a Sersic profile holds ``share`` of its light:
    L(<x R_e) / L = P(2n, b_n x^(1/n)) (Graham & Driver 2005, PASA 22, 118, eq. 2), with :func:`b_n`."""
    n = np.asarray(n_sersic, dtype=np.float64)
    return (gammaincinv(2 * n, share) / b_n(n)) ** n


def gaussian_ellipse(x: Any, y: Any, amp: Any, sigma: Any, e1: Any, e2: Any,
                     center_x: Any, center_y: Any) -> Any:
    """amp / (2 pi sigma^2) exp(-R^2 / 2 sigma^2), amp = total flux (lenstronomy GAUSSIAN_ELLIPSE)."""
    xp = array_namespace(x)
    sigma = np.asarray(sigma, dtype=np.float64)
    R2 = elliptical_radius2(x, y, e1, e2, center_x, center_y)
    return param(amp / (2 * np.pi * sigma**2), x) * xp.exp(-R2 * param(0.5 / sigma**2, x))


def ellipse_metric(e1: Any, e2: Any) -> tuple[Any, Any, Any]:
    """(qxx, qxy, qyy) with R^2 = qxx dx^2 + 2 qxy dx dy + qyy dy^2 for the radius of
    :func:`elliptical_radius2` (expand its xe^2 + ye^2), as float64 numpy values."""
    e1, e2 = np.asarray(e1, dtype=np.float64), np.asarray(e2, dtype=np.float64)
    norm2 = np.maximum(np.abs(1 - e1**2 - e2**2), 1e-6)
    return ((1 - e1) ** 2 + e2**2) / norm2, -2 * e2 / norm2, ((1 + e1) ** 2 + e2**2) / norm2


def sersic_profile_(u2: Any, R_sersic: Any, n_sersic: Any) -> Any:
    """In place: u2 = (R / R_sersic)^2 (B, ...) -> I(R) / amp = exp(-b_n [(R/R_sersic)^(1/n) - 1]), with R and
    R_sersic floored at lenstronomy's smoothing as in :func:`sersic_ellipse`; per-object parameters (B,)."""
    from skybench.physics.kernels import clamp_min_, log_, module, per_object

    m, nd = module(u2), u2.ndim
    R_s = np.maximum(np.asarray(R_sersic, dtype=np.float64), _SMOOTHING)
    n, bn = np.asarray(n_sersic, dtype=np.float64), b_n(n_sersic)
    clamp_min_(u2, per_object((_SMOOTHING / R_s) ** 2, u2, nd))
    log_(u2)  # (R/Rs)^(1/n) = exp(log(u2) / 2n): no pow on the pixel grid
    u2 *= per_object(0.5 / n, u2, nd)
    m.exp(u2, out=u2)
    u2 *= per_object(-bn, u2, nd)
    u2 += per_object(bn, u2, nd)
    return m.exp(u2, out=u2)
