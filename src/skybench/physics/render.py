"""One renderer for every simulator: supersampled pixel grid, binning, per-band PSF, noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from skybench.physics import kernels as K
from skybench.physics.backend import Backend
from skybench.physics.light import _SMOOTHING, ellipse_metric, sersic_profile_
from skybench.physics.noise import background_sigma
from skybench.physics.psf import convolution_matrix, gaussian_kernel_1d


class Renderer:
    """Pixel grid and image formation for (B, bands, size, size) cut-outs.

    Coordinates follow lenstronomy with ``transform_pix2angle = pixel_scale * I`` and pixel (0, 0) at
    (-(size-1)/2, -(size-1)/2) * pixel_scale: x runs along columns, y along rows. Surface brightness is
    evaluated on a grid supersampled ``supersampling`` times per axis, averaged and multiplied by the pixel
    area, then convolved at the native resolution (lenstronomy's default supersampling_convolution=False).
    """

    def __init__(self, size: int, pixel_scale: float, supersampling: int, bands: Sequence[Any],
                 backend: Backend):
        self.size, self.pixel_scale, self.supersampling, self.backend = size, pixel_scale, supersampling, backend
        s = supersampling
        # lenstronomy util.make_subgrid: sub-pixel centres at (k + 1/2)/s - 1/2 pixel from the centre.
        sub = (np.arange(size * s) + 0.5) / s - 0.5
        coords = (sub - (size - 1) / 2.0) * pixel_scale
        xx, yy = np.meshgrid(coords, coords)  # xx varies along columns
        self.x, self.y = backend.asarray(xx[None]), backend.asarray(yy[None])
        self.coords = coords  # x of the columns and y of the rows (float64)
        self._work: dict[str, Any] = {}
        kernels = [gaussian_kernel_1d(b.seeing, pixel_scale) for b in bands]
        mats = np.stack([convolution_matrix(k, size) for k in kernels])[None]  # (1, bands, n, n)
        self._conv, self._conv_t = backend.asarray(mats), backend.asarray(np.swapaxes(mats, -1, -2))
        # The convolution matrices are banded (half-width h): on numpy, products by row blocks of ~n/4 skip
        # most of the zeros (about 2.5x fewer operations at 101 pixels); exact, the band holds every tap.
        h, bs = max(len(k) for k in kernels) // 2, -(-size // 4)
        self._blocks = [(i, min(size, i + bs), max(0, i - h), min(size, i + bs + h))
                        for i in range(0, size, bs)] if 2 * h < bs else None
        self.sigma_bkg = np.array([background_sigma(b.read_noise, b.exposure_time, b.num_exposures,
                                                    b.sky_brightness, b.zero_point, pixel_scale) for b in bands])
        self.total_time = np.array([b.num_exposures * b.exposure_time for b in bands])

    def workspace(self, name: str, shape: tuple[int, ...]) -> Any:
        """A scratch array of the backend, reused between calls on numpy (fresh large temporaries cost page
        faults there); its contents are undefined and the next request of ``name`` overwrites them."""
        if self.backend.name != "numpy":
            return K.empty(shape, self.x)
        size = math.prod(shape)
        buf = self._work.get(name)
        if buf is None or buf.size < size:
            buf = self._work[name] = np.empty(size, dtype=self.backend.dtype)
        return buf[:size].reshape(shape)

    def quadratic_form(self, qxx: Any, qxy: Any, qyy: Any, center_x: Any, center_y: Any, const: Any = 0.0,
                       out: Any = None) -> Any:
        """qxx dx^2 + 2 qxy dx dy + qyy dy^2 + const on the supersampled grid, dx = x - center_x, ..., for B
        objects (per-object numpy values, (B,) or (B, 1, 1)): (B, n*s, n*s), one batched matrix product."""
        L, R = K.quadratic_form_factors(self.coords, self.coords, qxx, qxy, qyy, center_x, center_y, const)
        m = len(self.coords)
        out = out if out is not None else K.empty((max(len(L), len(R)), m, m), self.x)
        return K.matmul(K.lift(L, self.x), K.lift(R, self.x), out=out)

    def sersic(self, R_sersic: Any, n_sersic: Any, e1: Any, e2: Any, center_x: Any, center_y: Any,
               out: Any = None) -> Any:
        """light.sersic_ellipse with amp = 1 on the supersampled grid, (B, n*s, n*s)."""
        R_s2 = np.maximum(np.asarray(R_sersic, dtype=np.float64), _SMOOTHING).reshape(-1) ** 2
        qxx, qxy, qyy = (np.reshape(v, -1) / R_s2 for v in ellipse_metric(np.reshape(e1, -1), np.reshape(e2, -1)))
        u2 = self.quadratic_form(qxx, qxy, qyy, center_x, center_y, out=out)  # (R / R_sersic)^2
        return sersic_profile_(u2, np.reshape(R_sersic, -1), np.reshape(n_sersic, -1))

    def gaussian(self, sigma: Any, e1: Any, e2: Any, center_x: Any, center_y: Any, out: Any = None) -> Any:
        """light.gaussian_ellipse with amp = 1 on the supersampled grid, (B, n*s, n*s): the exponent, with
        log(1 / 2 pi sigma^2) as its constant, is one quadratic form."""
        sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
        k = -0.5 / sigma**2
        qxx, qxy, qyy = (np.reshape(v, -1) * k for v in ellipse_metric(np.reshape(e1, -1), np.reshape(e2, -1)))
        arg = self.quadratic_form(qxx, qxy, qyy, center_x, center_y, const=-np.log(2 * np.pi * sigma**2), out=out)
        return K.module(arg).exp(arg, out=arg)

    def bin(self, surface_brightness: Any, out: Any = None) -> Any:
        """(..., n*s, n*s) surface brightness per arcsec^2 -> (..., n, n) flux per pixel."""
        s, n, sb = self.supersampling, self.size, surface_brightness
        m = K.module(sb)
        out = out if out is not None else K.empty(tuple(sb.shape[:-2]) + (n, n), sb)
        if s == 1:
            m.multiply(sb, 1.0, out=out)
        else:  # rows first (contiguous runs), then columns: much faster than strided sums of s*s lattices
            rows = self.workspace("bin_rows", tuple(sb.shape[:-2]) + (n, n * s))
            m.add(sb[..., 0::s, :], sb[..., 1::s, :], out=rows)
            for i in range(2, s):
                rows += sb[..., i::s, :]
            m.add(rows[..., 0::s], rows[..., 1::s], out=out)
            for j in range(2, s):
                out += rows[..., j::s]
        out *= self.pixel_scale**2 / s**2
        return out

    def convolve(self, images: Any) -> Any:
        """Convolve (B, bands, n, n) images with each band's PSF."""
        if self.backend.name != "numpy" or self._blocks is None:
            return self._conv @ images @ self._conv_t
        shape = tuple(np.broadcast_shapes(self._conv.shape, images.shape))
        tmp, out = self.workspace("conv", shape), np.empty(shape, dtype=self.backend.dtype)
        for i0, i1, j0, j1 in self._blocks:  # rows i0:i1 of C @ images use only rows j0:j1 of images
            np.matmul(self._conv[..., i0:i1, j0:j1], images[..., j0:j1, :], out=tmp[..., i0:i1, :])
        for i0, i1, j0, j1 in self._blocks:
            np.matmul(tmp[..., j0:j1], self._conv_t[..., j0:j1, i0:i1], out=out[..., i0:i1])
        return out

    def add_noise(self, images: Any, normal: np.ndarray) -> Any:
        """Add background + Poisson noise to noise-free (B, bands, n, n) images in e-/s, using the
        standard-normal draws ``normal`` (numpy, same shape) so that every backend gets the same noise."""
        m = K.module(images)
        noisy = m.abs(images)
        noisy *= self.backend.asarray(1.0 / self.total_time[None, :, None, None])
        noisy += self.backend.asarray(self.sigma_bkg[None, :, None, None] ** 2)
        m.sqrt(noisy, out=noisy)
        noisy *= self.backend.asarray(normal)
        noisy += images
        return noisy
