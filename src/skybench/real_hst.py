"""Real HST images brought to a track's grid, PSF, flux scale and noise: what the real-data importers share
(the lens importer :mod:`skybench.tasks.lens.real`, the enhancement one :mod:`skybench.tasks.enhance.real`).

:func:`process_lens` reads one ``lenses_hst/*.fits`` file (see ``data/README.md`` section 1) and, in this order:

1. reads the primary HDU with ``astropy.io.fits`` (array axis 0 = FITS y = NAXIS2) and the pixel scale of
   each axis from the WCS CD matrix (SLACS), the ``PIX2AN`` pixel-to-arcsec matrix (DESI) or ``PIXSCALE``;
2. measures the FWHM of the HST PSF (``PSF`` extension) with a pixel-integrated circular Gaussian fit to
   its core, and convolves, on the original grid, with the discrete Gaussian kernel (``exp(-t) I_n(t)``,
   variance exactly ``t`` pixel^2) that takes it to the target's Gaussian PSF:
   ``s_diff^2 = s_track^2 - p^2/12/S^2 - s_hst^2 - 2 p_hst^2/12`` (``p_hst^2/12`` twice: the blur of the
   HST pixel, which the image already has, and the same again that the piecewise-constant resampling of step 3
   adds; the output's own pixel then adds ``p^2/12``; ``- p^2/12/S^2``: the simulated images bin ``S``-times
   supersampled points, short of a whole pixel box by that, before the PSF kernel sampled at pixel centres, so
   that the result has the blur a simulated image of the track has);
3. resamples to the target grid (e.g. 0.1"/px, 101 x 101) centred on the image centre (or, with ``centre_sigma``,
   on the deflector's light centre offset as the simulated deflectors are: :func:`jittered_centre`), by exact
   area-weighted rebinning of the image as a piecewise-constant surface: ``new = A_y @ img @ A_x.T`` with
   ``A[i, j] = overlap(new pixel i, old pixel j) / old pixel length``, which conserves the flux (e-/s) of
   every old pixel inside the frame; the frame outside the HST footprint is zero;
4. scales the flux so that the flux within ``r = 2"`` of the centre (deflector + arcs, measured after
   resampling, before the PSF step) has the target magnitude at the target's zero point;
5. adds Gaussian background noise whose covariance is ``level * I - C_exist``, so that the sum with the HST
   noise carried through steps 2-4 (covariance ``C_exist``: white noise of rms ``BKG_RMS``, or ``1.4826 * MAD``
   of a 5-pixel border ring of the original image where there is no ``BKG_RMS``, propagated exactly through
   the linear map of steps 2-4, correlated between pixels) is white noise of variance ``level = max(sigma_bkg^2,
   largest eigenvalue of C_exist)``, as in a simulated image; plus the Poisson term ``|img| / T`` per pixel
   (lenstronomy ``data_util``, ``T = num_exposures * exposure_time``).

Every number of every step is returned with the image, for the hidden metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from astropy.io import fits
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares
from scipy.special import erf, ive

from skybench.common import robust_sigma
from skybench.physics.noise import background_sigma, cps2magnitude, magnitude2cps
from skybench.physics.psf import FWHM_TO_SIGMA, convolution_matrix
from skybench.tracks import Track

APERTURE_RADIUS = 2.0  # arcsec: flux of deflector + arcs used to set the magnitude
BORDER_WIDTH = 5  # pixels of the original image used for a MAD noise estimate when BKG_RMS is missing
# AB zero points (magnitude of 1 e-/s), only to record the HST magnitude of each object. WFC3/IR F140W:
# STScI WFC3 IR photometric calibration; ACS/WFC: computed from PHOTFLAM and PHOTPLAM in the header.
F140W_AB_ZERO_POINT = 26.4524
# The central galaxy's light centre (:func:`light_centre`): the cut-outs are centred on catalogue coordinates, the
# galaxy up to 1" off (DESI F140W: 0.99"; the next bright peak is 1.1" away in DESIJ0136-0008, 5.6" in DESIJ1018-0121).
CENTRE_SEARCH_RADIUS = 1.5  # arcsec from the image centre within which the brightest smoothed peak is taken
CENTRE_SMOOTH = 0.1  # arcsec: Gaussian sigma of the smoothing before the peak is found
CENTRE_WINDOW = 0.15  # arcsec: Gaussian sigma of the window of the windowed centroid


# ------------------------------------------------------------------------------------------ resampling
def overlap_matrix(n_in: int, scale_in: float, n_out: int, scale_out: float, centre: float | None = None
                   ) -> np.ndarray:
    """(n_out, n_in) matrix A with ``A[i, j]`` = overlap length of new pixel i with old pixel j / old pixel
    length, for two pixel rows with the same centre: the new row's centre lies at old pixel coordinate ``centre``
    (0-based, pixel j spans j - 1/2 .. j + 1/2; default the old row's centre, (n_in - 1) / 2).

    ``A @ v`` rebins a row of fluxes per pixel: every old pixel's flux is shared among the new pixels in
    proportion to the length they cover, so a column of A sums to 1 when the old pixel is inside the new row
    (flux is conserved) and a constant surface brightness gives ``scale_out / scale_in`` times the old value."""
    shift = 0.0 if centre is None else centre - (n_in - 1) / 2.0
    old = (np.arange(n_in + 1) - n_in / 2.0 - shift) * scale_in
    new = (np.arange(n_out + 1) - n_out / 2.0) * scale_out
    lo = np.maximum(new[:-1, None], old[None, :-1])
    hi = np.minimum(new[1:, None], old[None, 1:])
    return np.clip(hi - lo, 0.0, None) / scale_in


def resample_flux(image: np.ndarray, scale_in: float | tuple[float, float], scale_out: float,
                  out_shape: tuple[int, int], centre: tuple[float, float] | None = None) -> np.ndarray:
    """Flux-conserving resampling of a (y, x) image in flux per pixel onto a centred grid of ``out_shape``
    pixels of ``scale_out``; ``scale_in`` is one pixel scale or (y, x) scales of the input; ``centre``: the (y, x)
    input pixel coordinate the grid is centred on (default the image's centre)."""
    cy, cx = (None, None) if centre is None else centre
    sy, sx = cast("tuple[float, float]", (scale_in, scale_in) if np.isscalar(scale_in) else scale_in)
    image = np.asarray(image, dtype=np.float64)
    a_y = overlap_matrix(image.shape[0], float(sy), out_shape[0], scale_out, cy)
    a_x = overlap_matrix(image.shape[1], float(sx), out_shape[1], scale_out, cx)
    return a_y @ image @ a_x.T


def light_centre(image: np.ndarray, scale_in: tuple[float, float], radius: float = CENTRE_SEARCH_RADIUS
                 ) -> tuple[float, float]:
    """(y, x) input pixel coordinate (0-based) of the light centre of the galaxy nearest the image centre: the
    brightest pixel of the image smoothed by a Gaussian of ``CENTRE_SMOOTH`` arcsec within ``radius`` arcsec of the
    image centre, refined by a windowed centroid (SExtractor's XWIN/YWIN, Bertin, SExtractor manual "Windowed
    positional parameters": ``x <- x + 2 sum w I (x_i - x) / sum w I``, ``w = exp(-r^2 / 2 s^2)``, s =
    ``CENTRE_WINDOW``), or the peak where the iteration strays beyond ``2 s`` of it."""
    image = np.asarray(image, dtype=np.float64)
    sy, sx = scale_in
    ny, nx = image.shape
    y = (np.arange(ny) - (ny - 1) / 2.0) * sy  # arcsec from the image centre
    x = (np.arange(nx) - (nx - 1) / 2.0) * sx
    smooth = gaussian_filter(image, (CENTRE_SMOOTH / sy, CENTRE_SMOOTH / sx))
    smooth[np.hypot(y[:, None], x[None, :]) > radius] = -np.inf
    py, px = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    cy, cx = y[py], x[px]
    for _ in range(16):
        w = image * np.exp(-((y[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) / (2.0 * CENTRE_WINDOW**2))
        norm = w.sum()
        if not norm > 0:
            break
        dy, dx = 2.0 * (w.sum(axis=1) @ (y - cy)) / norm, 2.0 * (w.sum(axis=0) @ (x - cx)) / norm
        cy, cx = cy + dy, cx + dx
        if np.hypot(dy, dx) < 1e-4 * min(sy, sx):
            break
    if not np.hypot(cy - y[py], cx - x[px]) <= 2.0 * CENTRE_WINDOW:
        cy, cx = y[py], x[px]
    return float(cy / sy + (ny - 1) / 2.0), float(cx / sx + (nx - 1) / 2.0)


def jittered_centre(image: np.ndarray, scale_in: tuple[float, float], sigma: float, rng: np.random.Generator
                    ) -> tuple[tuple[float, float], dict[str, Any]]:
    """The (y, x) input pixel coordinate a real object's frame is centred on: its :func:`light_centre` offset by
    ``N(0, sigma)`` arcsec per axis (``rng``: y then x), as the simulated deflectors are (``lens.center_sigma``); and
    the numbers, for the hidden metadata."""
    ly, lx = light_centre(image, scale_in)
    jy, jx = rng.normal(0.0, sigma, 2)
    centre = (ly + jy / scale_in[0], lx + jx / scale_in[1])
    ny, nx = np.shape(image)
    return centre, {"light_centre_y": ly, "light_centre_x": lx,
                    "light_offset_arcsec_y": (ly - (ny - 1) / 2.0) * scale_in[0],
                    "light_offset_arcsec_x": (lx - (nx - 1) / 2.0) * scale_in[1],
                    "centre_jitter_arcsec_y": float(jy), "centre_jitter_arcsec_x": float(jx), "centre_sigma": sigma,
                    "centre_y": centre[0], "centre_x": centre[1]}


# ------------------------------------------------------------------------------------------ PSF
def discrete_gaussian_kernel(variance: float, tail: float = 1e-14) -> np.ndarray:
    """Lindeberg's discrete Gaussian ``exp(-t) I_n(t)``: non-negative, sum 1 and variance ``t`` pixel^2
    however small ``t`` is (a sampled Gaussian of sub-pixel width gets its variance wrong); truncated where
    the weights fall below ``tail``."""
    if variance <= 0:
        return np.ones(1)
    half = int(np.ceil(4.0 * np.sqrt(variance))) + 1
    while ive(half, variance) > tail:
        half += 1
    k = ive(np.abs(np.arange(-half, half + 1)), variance)
    return k / k.sum()


def fit_psf_fwhm(psf: np.ndarray, pixel_scale: float, radius: float = 0.3) -> float:
    """FWHM [arcsec] of the circular Gaussian whose pixel integrals best fit the PSF core (``radius`` arcsec
    around its peak): the width of the continuous PSF, without the pixel."""
    psf = np.asarray(psf, dtype=np.float64)
    psf = psf / psf.sum()
    half = max(2, int(round(radius / pixel_scale)))
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    cy = int(np.clip(py, half, psf.shape[0] - half - 1))
    cx = int(np.clip(px, half, psf.shape[1] - half - 1))
    core = psf[cy - half:cy + half + 1, cx - half:cx + half + 1]
    idx = np.arange(-half, half + 1, dtype=np.float64)

    def integrated(c: float, s: float) -> np.ndarray:
        return 0.5 * (erf((idx + 0.5 - c) / (np.sqrt(2.0) * s)) - erf((idx - 0.5 - c) / (np.sqrt(2.0) * s)))

    def resid(q: np.ndarray) -> np.ndarray:
        amp, x0, y0, s, bkg = q
        return (amp * np.outer(integrated(y0, s), integrated(x0, s)) + bkg - core).ravel()

    fit = least_squares(resid, [core.max() * 2.0, 0.0, 0.0, 1.0, 0.0],
                        bounds=([0.0, -1.0, -1.0, 0.05, -np.inf], [np.inf, 1.0, 1.0, half, np.inf]))
    return float(fit.x[3] / FWHM_TO_SIGMA * pixel_scale)


# ------------------------------------------------------------------------------------------ one object
@dataclass(frozen=True)
class Target:
    """What the images are brought to: the track's grid, PSF, noise and a lens magnitude."""

    size: int
    pixel_scale: float
    fwhm: float
    zero_point: float
    sigma_bkg: float
    total_time: float
    target_mag: float
    supersampling: int = 1  # the track's cutout.supersampling: its binning is p^2/12/S^2 short of a pixel box

    @property
    def sim_pixel_variance(self) -> float:
        """arcsec^2 of blur beyond the PSF and one pixel box (p^2/12) in the track's simulated images, negative: the
        Renderer bins S x S supersampled points ((1 - 1/S^2) p^2/12, Sheppard's correction, short of a whole pixel
        box by p^2/12/S^2) and then convolves with the PSF kernel sampled at pixel centres (no box)."""
        return -self.pixel_scale**2 / 12.0 / self.supersampling**2

    @classmethod
    def from_track(cls, track: Track, target_mag: float) -> Target:
        """The target of a one-band track: its grid, seeing, zero point, background sigma and exposure time."""
        if len(track.survey.bands) != 1:
            raise ValueError(f"track {track.name!r} has bands {track.band_names}; the HST lenses are one band")
        return cls.for_band(track, 0, target_mag)

    @classmethod
    def for_band(cls, track: Track, band: int, target_mag: float) -> Target:
        """The target of band number ``band`` of ``track``: its grid, seeing, zero point, background sigma and
        exposure time."""
        b = track.survey.bands[band]
        assert track.cutout is not None, f"track {track.name!r} has no cutout"
        sigma = background_sigma(b.read_noise, b.exposure_time, b.num_exposures, b.sky_brightness, b.zero_point,
                                 track.survey.pixel_scale)
        return cls(track.cutout.size, track.survey.pixel_scale, b.seeing, b.zero_point, sigma,
                   b.num_exposures * b.exposure_time, target_mag, track.cutout.supersampling)


def _pixel_scales(header: fits.Header) -> tuple[float, float, str]:
    """(y, x) arcsec per pixel of data axes 0 and 1 (FITS axes 2 and 1) and where they came from."""
    if "CD1_1" in header:
        cd = np.array([[header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                       [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)]]) * 3600.0
        return float(np.hypot(*cd[:, 1])), float(np.hypot(*cd[:, 0])), "WCS CD matrix"
    if "PIX2AN11" in header:
        m = np.array([[header["PIX2AN11"], header["PIX2AN12"]], [header["PIX2AN21"], header["PIX2AN22"]]])
        return float(np.hypot(*m[:, 1])), float(np.hypot(*m[:, 0])), "PIX2AN matrix"
    return float(header["PIXSCALE"]), float(header["PIXSCALE"]), "PIXSCALE"


def _ab_zero_point(header: fits.Header) -> float:
    if "PHOTFLAM" in header and "PHOTPLAM" in header:
        return float(-2.5 * np.log10(header["PHOTFLAM"]) - 5.0 * np.log10(header["PHOTPLAM"]) - 2.408)
    if str(header.get("FILTER", "")).strip().upper() == "F140W":
        return F140W_AB_ZERO_POINT
    return float("nan")


def _border(image: np.ndarray, width: int) -> np.ndarray:
    mask = np.zeros(image.shape, dtype=bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return image[mask]


NOISE_MAX_LAG = 3  # input pixels of noise autocorrelation measured per axis


def noise_correlation(image: np.ndarray, width: int = BORDER_WIDTH, max_lag: int = NOISE_MAX_LAG
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation of the input noise at lags 0..``max_lag`` along axis 0 and axis 1, from the ``width``-pixel
    border ring (drizzled HST and coadded ground images have correlated noise). Robust to sources in the ring:
    ``rho = (s+^2 - s-^2) / (s+^2 + s-^2)`` with s+- the 1.4826 MAD of the sums and differences of pixel pairs."""
    image = np.asarray(image, dtype=np.float64)
    strips = {0: [image[:, :width], image[:, -width:]], 1: [image[:width], image[-width:]]}
    out = []
    for axis in (0, 1):
        rho = [1.0]
        for lag in range(1, max_lag + 1):
            a = np.concatenate([np.take(st, np.arange(st.shape[axis] - lag), axis=axis).ravel()
                                for st in strips[axis]])
            b = np.concatenate([np.take(st, np.arange(lag, st.shape[axis]), axis=axis).ravel()
                                for st in strips[axis]])
            sp, sm = robust_sigma(a + b) ** 2, robust_sigma(a - b) ** 2
            rho.append(float((sp - sm) / (sp + sm)) if sp + sm > 0 else 0.0)
        out.append(np.asarray(rho))
    return out[0], out[1]


def _toeplitz_psd(rho: np.ndarray, n: int) -> np.ndarray:
    """(n, n) correlation matrix of a stationary row with autocorrelation ``rho`` (lags 0..L, zero beyond),
    made positive semi-definite by clipping its eigenvalues."""
    lags = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    r = np.where(lags < len(rho), np.asarray(rho)[np.minimum(lags, len(rho) - 1)], 0.0)
    e, u = np.linalg.eigh(r)
    return (u * np.clip(e, 0.0, None)) @ u.T


def flux_reach(image: np.ndarray, scale_in: tuple[float, float], fwhm_in: float, sigma_in: float, target: Target,
               noise_corr: tuple[np.ndarray, np.ndarray] | None = None, centre: tuple[float, float] | None = None
               ) -> tuple[float, float]:
    """(flux within ``APERTURE_RADIUS`` on the target grid in the image's units, the largest such flux in the
    target's e-/s it can be scaled to before its carried noise, whitened, is above the target's background):
    brighter, the real object would be noisier than a simulated one. ``centre``: as in :func:`match_to_target`."""
    _, num = match_to_target(image, scale_in, fwhm_in, sigma_in, target, np.random.default_rng(0), flux_scale=1.0,
                             poisson=False, noise_corr=noise_corr, centre=centre)
    flux, eig = num["aperture_flux_orig"], num["existing_sigma_processed_eig_max"]
    return flux, (flux * target.sigma_bkg / eig if eig > 0 else float("inf"))


def draw_flux(reference: np.ndarray, rng: np.random.Generator, reach: float = float("inf")) -> float | None:
    """A flux drawn from the empirical distribution ``reference`` (sorted) below ``reach``: a random quantile of
    its part at or below ``reach``, linearly interpolated; None where no part is."""
    below = reference[:np.searchsorted(reference, reach, side="right")]
    return float(np.quantile(below, rng.uniform())) if len(below) else None


def process_lens(path: Path, target: Target, rng: np.random.Generator, *, reference: np.ndarray | None = None,
                 flux_rng: np.random.Generator | None = None, centre_sigma: float | None = None,
                 centre_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One HST FITS file -> (size, size) float64 image in e-/s per pixel of the target, and its numbers.
    ``reference``: sorted fluxes within 2" (e-/s) the object's is drawn from by ``flux_rng`` (:func:`draw_flux`,
    below what it can reach at the target's noise), instead of ``target.target_mag``. ``centre_sigma``: the frame
    is centred on the deflector's light centre offset by N(0, centre_sigma) arcsec per axis drawn by ``centre_rng``
    (:func:`jittered_centre`; the HST cut-outs have the deflector up to 1" off their centre) instead of the image
    centre."""
    with fits.open(path) as hdul:
        header = hdul[0].header
        image = np.asarray(hdul[0].data, dtype=np.float64)  # axis 0 = y (NAXIS2), axis 1 = x (NAXIS1)
        psf = np.asarray(hdul["PSF"].data, dtype=np.float64) if "PSF" in hdul else None
        psf_scale = float(hdul["PSF"].header.get("PIXSCALE", 0.0)) if psf is not None else 0.0
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D primary image, got shape {image.shape}")
    n_bad = int(np.count_nonzero(~np.isfinite(image)))
    image = np.where(np.isfinite(image), image, 0.0)
    sy, sx, scale_from = _pixel_scales(header)
    fwhm_hst = fit_psf_fwhm(psf, psf_scale or float(np.sqrt(sy * sx))) if psf is not None else float("nan")
    bkg_rms = header.get("BKG_RMS")
    if bkg_rms is not None and np.isfinite(float(bkg_rms)) and float(bkg_rms) > 0:
        sigma_in, noise_from = float(bkg_rms), "BKG_RMS header"
    else:
        sigma_in, noise_from = robust_sigma(_border(image, BORDER_WIDTH)), f"1.4826*MAD of {BORDER_WIDTH}-px border"
    corr = noise_correlation(image)
    centre: tuple[float, float] | None = None
    placed: dict[str, Any] = {}
    if centre_sigma is not None:
        assert centre_rng is not None, "a centre_sigma needs a centre_rng"
        centre, placed = jittered_centre(image, (sy, sx), centre_sigma, centre_rng)
    drawn: dict[str, Any] = {}
    if reference is not None:
        assert flux_rng is not None, "a reference needs a flux_rng"
        flux, reach = flux_reach(image, (sy, sx), fwhm_hst, sigma_in, target, corr, centre)
        want = draw_flux(reference, flux_rng, reach) if flux > 0 else None
        if want is None:
            raise ValueError(f"{path}: its flux cannot reach the reference's within the target's noise")
        target = replace(target, target_mag=float(cps2magnitude(want, target.zero_point)))
        drawn = {"flux_reach": reach, "flux_draw_truncated": bool(reach < reference[-1])}
    try:
        out, numbers = match_to_target(image, (sy, sx), fwhm_hst, sigma_in, target, rng, noise_corr=corr,
                                       centre=centre)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    numbers |= drawn | placed
    ab_zp = _ab_zero_point(header)
    aperture_flux = numbers["aperture_flux_orig"]
    numbers = {
        "orig_shape_y": numbers.pop("orig_shape_y"), "orig_shape_x": numbers.pop("orig_shape_x"),
        "orig_pixel_scale_y": sy, "orig_pixel_scale_x": sx, "orig_pixel_scale_from": scale_from,
        "orig_bkg_rms_header": float(bkg_rms) if bkg_rms is not None else np.nan, "orig_nonfinite_pixels": n_bad,
        **numbers, "hst_ab_zero_point": ab_zp, "hst_ab_mag_aperture": float(cps2magnitude(aperture_flux, ab_zp)),
        "existing_noise_from": noise_from,
    }
    return out, numbers


def match_to_target(image: np.ndarray, scale_in: tuple[float, float], fwhm_in: float, sigma_in: float,
                    target: Target, rng: np.random.Generator, *, flux_scale: float | None = None,
                    poisson: bool = True, noise_corr: tuple[np.ndarray, np.ndarray] | None = None,
                    centre: tuple[float, float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Steps 2-5 of the module docstring for one band of one image (background-subtracted, flux per pixel, axis 0
    = y) of pixel scales ``scale_in`` = (y, x) arcsec, Gaussian PSF FWHM ``fwhm_in`` arcsec (NaN: unknown,
    treated as a point), white noise ``sigma_in`` per original pixel. ``flux_scale``: the factor to the target's
    e-/s (default: the one that gives the flux within ``APERTURE_RADIUS`` the target's magnitude). ``poisson``:
    add the Poisson term ``|img| / T`` (False for images whose own noise already has it, e.g. ground-based).
    ``noise_corr``: the input noise's autocorrelation along axes 0 and 1 (:func:`noise_correlation`; default
    white). ``centre``: the (y, x) input pixel coordinate (0-based) put at the frame's centre (default the image's
    centre). Returns the (size, size) float64 image and the numbers of every step."""
    image = np.asarray(image, dtype=np.float64)
    sy, sx = scale_in
    ny, nx = image.shape
    n, p = target.size, target.pixel_scale

    # --- PSF: difference kernel on the original grid (both axes use their own pixel scale)
    s_target = target.fwhm * FWHM_TO_SIGMA
    s_hst = fwhm_in * FWHM_TO_SIGMA if np.isfinite(fwhm_in) else 0.0
    p_hst = float(np.sqrt(sy * sx))
    # the input pixel's box blur is in the image already and the piecewise-constant rebinning adds it again
    # (each a variance p^2/12: Sheppard's correction); the output pixel's box is the simulated images' own, less
    # what their supersampled binning falls short of it (Target.sim_pixel_variance, negative)
    diff_var = s_target**2 + target.sim_pixel_variance - s_hst**2 - 2.0 * p_hst**2 / 12.0  # arcsec^2
    s_diff = float(np.sqrt(max(diff_var, 0.0)))

    cy, cx = ((ny - 1) / 2.0, (nx - 1) / 2.0) if centre is None else centre

    def axis_map(n_in: int, scale_in: float, c_in: float) -> np.ndarray:
        k = discrete_gaussian_kernel((s_diff / scale_in) ** 2)
        pad = len(k) // 2
        conv = convolution_matrix(k, n_in + 2 * pad)[:, pad:pad + n_in]  # original -> zero-padded grid
        return overlap_matrix(n_in + 2 * pad, scale_in, n, p, c_in + pad) @ conv

    a_y, a_x = overlap_matrix(ny, sy, n, p, cy), overlap_matrix(nx, sx, n, p, cx)
    m_y, m_x = axis_map(ny, sy, cy), axis_map(nx, sx, cx)
    rebinned = a_y @ image @ a_x.T

    # --- flux scale from the aperture flux (after resampling, before the PSF step)
    c = (np.arange(n) - (n - 1) / 2.0) * p
    aperture = np.hypot(c[:, None], c[None, :]) <= APERTURE_RADIUS
    aperture_flux = float(rebinned[aperture].sum())
    if flux_scale is None:
        if not aperture_flux > 0:
            raise ValueError(f"no positive flux within {APERTURE_RADIUS}\" of the centre")
        flux_scale = float(magnitude2cps(target.target_mag, target.zero_point)) / aperture_flux
    model = flux_scale * (m_y @ image @ m_x.T)

    # --- existing noise, carried through the same linear map: covariance (f sigma_in)^2 (m_y R_y m_y^T) kron
    # (m_x R_x m_x^T), R the input's correlation (identity: white), correlated between the output pixels
    # (upsampling shares input pixels).
    # The added noise has covariance level * I minus that, so the sum is white at ``level`` (the track's
    # sigma^2, or the carried noise's largest eigenvalue where that is above it): neither the noise level nor its
    # pixel-to-pixel correlation tells a real object from a simulated one. Kronecker eigenvectors: exact, cheap.
    r_y, r_x = (np.eye(ny), np.eye(nx)) if noise_corr is None else \
        (_toeplitz_psd(noise_corr[0], ny), _toeplitz_psd(noise_corr[1], nx))
    cov_y, cov_x = m_y @ r_y @ m_y.T, m_x @ r_x @ m_x.T
    e_y, u_y = np.linalg.eigh(cov_y)
    e_x, u_x = np.linalg.eigh(cov_x)
    exist_eig = (flux_scale * sigma_in) ** 2 * np.outer(np.clip(e_y, 0.0, None), np.clip(e_x, 0.0, None))
    level = max(target.sigma_bkg**2, float(exist_eig.max()))
    gain_y, gain_x = np.diag(cov_y), np.diag(cov_x)
    exist_var = (flux_scale * sigma_in) ** 2 * np.outer(gain_y, gain_x)
    footprint = (a_y.sum(axis=1)[:, None] > 0) & (a_x.sum(axis=1)[None, :] > 0)
    add_bkg_var = np.clip(level - exist_var, 0.0, None)  # its diagonal, for the record
    background = u_y @ (np.sqrt(np.clip(level - exist_eig, 0.0, None)) * rng.standard_normal(model.shape)) @ u_x.T
    poisson_var = np.abs(model) / target.total_time if poisson else np.zeros_like(model)
    out = model + background + rng.standard_normal(model.shape) * np.sqrt(poisson_var)

    inner = np.zeros((n, n), dtype=bool)
    inner[10:-10, 10:-10] = True
    numbers = {
        "orig_shape_y": ny, "orig_shape_x": nx,
        "footprint_arcsec_y": ny * sy, "footprint_arcsec_x": nx * sx,
        "footprint_fraction": float(footprint.mean()),
        "resample_factor_y": sy / p, "resample_factor_x": sx / p, "pixel_area_ratio": p * p / (sy * sx),
        "psf_fwhm_hst": fwhm_in, "psf_fwhm_target": target.fwhm, "psf_diff_sigma_arcsec": s_diff,
        "psf_diff_variance_arcsec2": diff_var,
        # FWHM of the result's PSF without the output pixel: the input's, twice its pixel (p^2/12) and the
        # difference kernel, as Gaussians
        "psf_fwhm_result": float(np.sqrt(s_hst**2 + 2.0 * p_hst**2 / 12.0 + s_diff**2) / FWHM_TO_SIGMA),
        "aperture_radius_arcsec": APERTURE_RADIUS, "aperture_flux_orig": aperture_flux,
        "target_mag": target.target_mag, "zero_point": target.zero_point, "flux_scale": flux_scale,
        "existing_sigma_orig": sigma_in,
        "existing_noise_corr_lag1_y": float(r_y[0, 1]) if ny > 1 else 0.0,
        "existing_noise_corr_lag1_x": float(r_x[0, 1]) if nx > 1 else 0.0,
        "existing_sigma_processed": float(np.sqrt(np.median(exist_var[footprint]))),
        "existing_sigma_processed_max": float(np.sqrt(exist_var[footprint].max())),
        "existing_sigma_processed_eig_max": float(np.sqrt(exist_eig.max())),
        "white_noise_sigma": float(np.sqrt(level)),
        "sigma_bkg_target": target.sigma_bkg,
        "added_bkg_sigma": float(np.sqrt(np.median(add_bkg_var[footprint]))),
        "added_bkg_sigma_outside_footprint": float(np.sqrt(level)),
        "poisson_exposure_time": target.total_time,
        "final_border_sigma": robust_sigma(out[~inner]),
    }
    return out, numbers


# ------------------------------------------------------------------------------------------ the release
def _lens_dir(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    return data_dir if (data_dir / "catalog.csv").is_file() else data_dir / "lenses_hst"


def _text(value: Any) -> str:
    return "" if pd.isna(value) else str(value)


def _read_catalog(lens_dir: Path) -> pd.DataFrame:
    """``lens_dir``/catalog.csv sorted by file, after checking that every file it names is there."""
    catalog_path = lens_dir / "catalog.csv"
    if not catalog_path.is_file():
        raise FileNotFoundError(f"no {catalog_path}: pull the real data first (dvc pull)")
    catalog = pd.read_csv(catalog_path).sort_values("file", ignore_index=True)
    missing = [f for f in catalog["file"] if not (lens_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{lens_dir}: files in catalog.csv are missing: {missing}")
    return catalog
