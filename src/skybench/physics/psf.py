"""Gaussian PSF: a separable kernel sampled at pixel centres, applied as two small matrix products; near the cores
the PSF integrated over each pixel from sub-pixel points (lenstronomy supersampling_convolution=True, render.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # sigma = FWHM / 2.3548


def gaussian_kernel_1d(fwhm: float, pixel_scale: float, truncation: float = 5.0) -> np.ndarray:
    """exp(-x^2 / 2 sigma^2) at the pixel centres x, sigma = FWHM / 2.3548 / pixel_scale, odd length, truncated at
    ``truncation`` sigma, sum 1: lenstronomy's GAUSSIAN PSF (``kernel_util.kernel_gaussian``). Not integrated over
    the pixel: the image it blurs is already pixel-averaged, and a second pixel box would widen the PSF (0.189"
    for VIS's 0.18" at 0.1"/px)."""
    sigma = fwhm * FWHM_TO_SIGMA / pixel_scale
    half = max(1, int(np.ceil(truncation * sigma)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    return k / k.sum()


def pixel_integrated_gaussian_1d(fwhm: float, pixel_scale: float, truncation: float = 5.0,
                                 offset: float = 0.0) -> np.ndarray:
    """The Gaussian PSF integrated over each pixel (erf differences: a point source's pixel values), odd length,
    truncated at ``truncation`` sigma, sum 1, for a point ``offset`` pixels (|offset| <= 1/2) from the middle
    pixel's centre. A point source binned to one pixel and blurred by :func:`gaussian_kernel_1d` has a peak up to 15%
    higher (0.18" FWHM at 0.1"/px): no box to average over."""
    from scipy.special import ndtr

    sigma = fwhm * FWHM_TO_SIGMA / pixel_scale
    half = max(1, int(np.ceil(truncation * sigma)))
    edges = (np.arange(-half, half + 2) - 0.5 - offset) / sigma
    k = np.diff(ndtr(edges))  # Phi((j + 1/2) / sigma) - Phi((j - 1/2) / sigma)
    return k / k.sum()


def pixel_integrated_gaussian_weights(fwhms: Sequence[float], pixel_scale: float, u: np.ndarray,
                                      width: int) -> np.ndarray:
    """(..., len(fwhms), width, k) fractions of a point at ``u`` (..., k) that each Gaussian PSF puts in pixels
    0..width-1 (pixel i spans [i, i + 1), in pixels): Phi((i + 1 - u) / sigma) - Phi((i - u) / sigma) over their
    sum (the PSF cut at the frame of ``width`` pixels: :func:`pixel_integrated_gaussian_1d` where it holds the
    5-sigma kernel around a pixel centre)."""
    from scipy.special import ndtr

    sigmas = np.array([fwhm * FWHM_TO_SIGMA / pixel_scale for fwhm in fwhms])[:, None, None]
    x = np.arange(width + 1, dtype=np.float64)[:, None] - np.asarray(u, dtype=np.float64)[..., None, None, :]
    cdf = ndtr(x / sigmas)  # (..., bands, width + 1, k)
    return np.diff(cdf, axis=-2) / (cdf[..., -1:, :] - cdf[..., :1, :])


def gaussian_kernel_2d(fwhm: float, pixel_scale: float, truncation: float = 5.0) -> np.ndarray:
    """The 2-D kernel that the separable convolution applies (for lenstronomy's PIXEL PSF)."""
    k = gaussian_kernel_1d(fwhm, pixel_scale, truncation)
    return np.outer(k, k)


def convolution_matrix(kernel_1d: np.ndarray, n: int) -> np.ndarray:
    """Toeplitz matrix M with (M @ v) = convolve(v, kernel, mode="same"), zero padding outside."""
    half = len(kernel_1d) // 2
    offsets = np.arange(n)[None, :] - np.arange(n)[:, None]  # j - i
    inside = np.abs(offsets) <= half
    return np.where(inside, kernel_1d[np.clip(offsets + half, 0, len(kernel_1d) - 1)], 0.0)

