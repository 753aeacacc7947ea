"""One renderer for every simulator: supersampled pixel grid, binning, per-band PSF, noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import Backend
from .noise import background_sigma
from .psf import convolution_matrix, gaussian_kernel_1d


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
        kernels = [gaussian_kernel_1d(b.seeing, pixel_scale) for b in bands]
        mats = np.stack([convolution_matrix(k, size) for k in kernels])[None]  # (1, bands, n, n)
        self._conv, self._conv_t = backend.asarray(mats), backend.asarray(np.swapaxes(mats, -1, -2))
        self.sigma_bkg = np.array([background_sigma(b.read_noise, b.exposure_time, b.num_exposures,
                                                    b.sky_brightness, b.zero_point, pixel_scale) for b in bands])
        self.total_time = np.array([b.num_exposures * b.exposure_time for b in bands])

    def bin(self, surface_brightness: Any) -> Any:
        """(B, n*s, n*s) surface brightness per arcsec^2 -> (B, n, n) flux per pixel."""
        s = self.supersampling
        # Sum the s*s sub-pixel lattices: strided adds are much faster than a mean over reshaped axes.
        total = sum(surface_brightness[:, i::s, j::s] for i in range(s) for j in range(s))
        return total * (self.pixel_scale**2 / s**2)

    def convolve(self, images: Any) -> Any:
        """Convolve (B, bands, n, n) images with each band's PSF."""
        return self._conv @ images @ self._conv_t

    def add_noise(self, images: Any, normal: np.ndarray) -> Any:
        """Add background + Poisson noise to noise-free (B, bands, n, n) images in e-/s, using the
        standard-normal draws ``normal`` (numpy, same shape) so that every backend gets the same noise."""
        xp = self.backend.xp
        sig = self.backend.asarray(self.sigma_bkg[None, :, None, None])
        t = self.backend.asarray(self.total_time[None, :, None, None])
        return images + self.backend.asarray(normal) * xp.sqrt(sig**2 + xp.abs(images) / t)
