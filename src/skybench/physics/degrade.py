"""The degradation of Schawinski et al. 2017 (arXiv:1702.00403, Sec. 2): a worse Gaussian PSF, then white noise
raising the background sigma to a given multiple of the original.

The blur is the paper's Gaussian of FWHM 1.4" (sigma = FWHM/0.396/2.355 px) sampled at pixel centres, the
renderer's PSF kernel: the truth is already pixel-averaged, so a pixel-integrated kernel would add a second pixel
box (FWHM 1.426" instead of 1.4" for extended light). Their ``roou.py`` differs from the paper in two ways we do not
copy: ``cv2.GaussianBlur`` with a 5x5 window (the kernel cut at +-2 px, an effective FWHM of about 1.1") and one
noise field shared by the three bands; here the kernel is whole and each band gets its own noise."""

from __future__ import annotations

import numpy as np

from skybench.physics.psf import convolution_matrix, gaussian_kernel_1d, gaussian_kernel_2d

# their blur is a PSF of the renderer's: one kernel
degradation_kernel_1d, degradation_kernel = gaussian_kernel_1d, gaussian_kernel_2d


def blurred_noise_gain(fwhm: float, pixel_scale: float) -> float:
    """sigma of white noise after the blur / sigma before: sqrt(sum k2d^2) = sum k1d^2 for a separable kernel."""
    k = degradation_kernel_1d(fwhm, pixel_scale)
    return float(np.sum(k**2))


def added_sigma(sigma_truth: np.ndarray, fwhm: float, pixel_scale: float, factor: float) -> np.ndarray:
    """sigma of the white noise to add after the blur so that the background sigma is ``factor * sigma_truth``:
    sqrt(factor^2 - gain^2) * sigma_truth, the blurred truth noise having sigma gain * sigma_truth."""
    gain = blurred_noise_gain(fwhm, pixel_scale)
    if factor < gain:
        raise ValueError(f"noise_factor {factor} is below the blurred noise level {gain:.3f}: noise cannot be removed")
    return np.sqrt(factor**2 - gain**2) * np.asarray(sigma_truth, dtype=np.float64)


def degrade(truth: np.ndarray, sigma_truth: np.ndarray, fwhm: float, pixel_scale: float, factor: float,
            normal: np.ndarray) -> np.ndarray:
    """(B, bands, n, n) truth -> degraded images: convolve every band with the Gaussian of FWHM ``fwhm`` arcsec
    (zero padding outside the frame, as the renderer), then add ``normal`` (standard-normal draws, same shape)
    times :func:`added_sigma` of each band's background sigma ``sigma_truth`` (bands,)."""
    truth = np.asarray(truth, dtype=np.float64)
    n = truth.shape[-1]
    conv = convolution_matrix(degradation_kernel_1d(fwhm, pixel_scale), n)
    blurred = conv @ truth @ conv.T
    add = added_sigma(sigma_truth, fwhm, pixel_scale, factor)[None, :, None, None]
    return blurred + np.asarray(normal, dtype=np.float64) * add
