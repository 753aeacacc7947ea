"""Real galaxy morphologies as lensed sources (``population.source.kind: real``), as GalSim's ``RealGalaxy`` and
lenstronomy's ``INTERPOL`` profile do: a pixelised HST/JWST stamp, prepared once per process
(:func:`load_stamps`), interpolated in the source plane at the ray-traced positions of the supersampled grid
(:func:`interpolate`).

Preparation of one stamp (:func:`prepare_stamp`):

1. background: the sigma-clipped median and standard deviation of a border frame, subtracted;
2. mask: the connected region of the Gaussian-smoothed stamp above ``mask_sigma`` x its noise that holds the
   galaxy's centre, dilated and tapered (so the stamp's noise and its neighbours are not lensed into arcs);
3. PSF: Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``; Richardson 1972, Lucy 1974) with
   the stamp's own PSF, or with a representative ACS PSF (a fixed plane of the COSMOS example PSF cube) for the
   COSMOS stamps that ship none; a stamp with no PSF at all (COSMOS-Web) is used as observed, its PSF kept;
4. the mask again (deconvolution spreads noise), a square box centred on the light centroid, zero-padded, unit sum.

Geometry follows lenstronomy's ``INTERPOL`` (LightModel/Profiles/interpolation.py): the pixel coordinates of a
source-plane offset (dx, dy) are x' = (dx cos phi + dy sin phi) / scale, y' = (-dx sin phi + dy cos phi) / scale
from the box centre, x' along columns; a flip mirrors the columns (x' -> -x')."""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

PSF_CUBE = "COSMOS_F814W_PSF_examples.fits"
BORDER = 4  # pixels of the stamp's edge used for the background


@dataclass(frozen=True)
class Stamp:
    """One prepared source: ``image`` (odd square, unit sum, zero on its edges) and its half-light radius."""

    name: str
    image: np.ndarray  # float64 (N, N), flux per stamp pixel, sum 1
    r_half_pix: float  # circular half-light radius about the box centre, in stamp pixels
    band: str
    psf: str  # "own", "stand-in <plane>" or "none (as observed)"


def _border(image: np.ndarray, width: int = BORDER) -> np.ndarray:
    return np.concatenate([image[:width].ravel(), image[-width:].ravel(), image[width:-width, :width].ravel(),
                           image[width:-width, -width:].ravel()])


def galaxy_mask(image: np.ndarray, mask_sigma: float = 3.0, smooth: float = 1.5, grow: int = 2) -> np.ndarray:
    """A soft mask (0..1) of the galaxy in a background-subtracted stamp: the connected region of the stamp
    smoothed by a Gaussian of ``smooth`` pixels above ``mask_sigma`` times the smoothed stamp's noise (measured on
    its border, so correlated noise counts) that holds the brightest smoothed pixel near the centre, dilated by
    ``grow`` pixels and tapered by a Gaussian of one pixel."""
    smoothed = ndimage.gaussian_filter(image, smooth)
    _, _, noise = sigma_clipped_stats(_border(smoothed), sigma=3.0)
    labels, _ = ndimage.label(smoothed > mask_sigma * noise)
    ny, nx = image.shape
    cy, cx, h = ny // 2, nx // 2, max(3, min(ny, nx) // 6)
    core = smoothed[cy - h:cy + h + 1, cx - h:cx + h + 1]
    py, px = np.unravel_index(np.argmax(core), core.shape)
    label = labels[cy - h + py, cx - h + px]
    if label == 0:
        raise ValueError("no pixel of the stamp's centre is above the mask threshold: is it a galaxy stamp?")
    mask = ndimage.binary_dilation(labels == label, iterations=grow)
    taper = ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
    return np.where(taper > 1e-3, taper, 0.0)


def prepare_stamp(image: np.ndarray, psf: np.ndarray | None, iterations: int = 20, mask_sigma: float = 3.0
                  ) -> tuple[np.ndarray, float]:
    """The unit-sum source image (odd square box about the light centroid) and its half-light radius (pixels)
    from a raw stamp and its PSF on the same grid (None: used as observed). See the module docstring."""
    from skimage.restoration import richardson_lucy

    img = np.asarray(image, dtype=np.float64)
    _, bg, _ = sigma_clipped_stats(_border(img), sigma=3.0)
    img = img - bg
    mask = galaxy_mask(img, mask_sigma)
    galaxy = np.clip(img * mask, 0.0, None)
    if psf is not None:
        kernel = np.clip(np.asarray(psf, dtype=np.float64), 0.0, None)
        kernel /= kernel.sum()
        peak = galaxy.max()
        galaxy = richardson_lucy(galaxy / peak, kernel, num_iter=iterations, clip=False) * peak
        galaxy = np.clip(galaxy, 0.0, None) * (mask > 0)
    total = galaxy.sum()
    yy, xx = np.indices(galaxy.shape)
    cy, cx = int(round(float((yy * galaxy).sum() / total))), int(round(float((xx * galaxy).sum() / total)))
    ys, xs = np.nonzero(galaxy)
    half = int(max(np.abs(ys - cy).max(), np.abs(xs - cx).max())) + 3  # >= 2 zero pixels on every side
    box = np.zeros((2 * half + 1, 2 * half + 1))
    y0, x0 = cy - half, cx - half
    sy, sx = slice(max(y0, 0), min(cy + half + 1, img.shape[0])), slice(max(x0, 0), min(cx + half + 1, img.shape[1]))
    box[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = galaxy[sy, sx]
    box /= box.sum()
    return box, half_light_radius(box)


def half_light_radius(box: np.ndarray) -> float:
    """Radius (pixels) about the box centre of the circle holding half the flux of a unit-sum image."""
    c = (box.shape[0] - 1) / 2
    yy, xx = np.indices(box.shape)
    r = np.hypot(yy - c, xx - c).ravel()
    order = np.argsort(r)
    cum = np.cumsum(box.ravel()[order])
    return float(np.interp(0.5, cum, r[order]))


@functools.lru_cache(maxsize=4)
def load_stamps(folder: str, bands: tuple[str, ...], iterations: int = 20, mask_sigma: float = 3.0
                ) -> tuple[Stamp, ...]:
    """Every galaxy of ``folder`` (``<survey>_<id>_<band>.fits``) in the first of ``bands`` it has, prepared once
    per process, sorted by file name; stamps whose pixels repeat an earlier one are dropped (two slsim test stamps
    are one image)."""
    root = Path(folder)
    files = sorted(p for p in root.glob("*.fits") if p.name != PSF_CUBE)
    if not files:
        raise FileNotFoundError(f"no galaxy stamps (*.fits) in {root}: pull the real-data release (dvc pull data.dvc)"
                                f" or set population.source.real.folder to the folder of hst_stamps")
    by_galaxy: dict[str, dict[str, Path]] = {}
    for p in files:
        galaxy, _, band = p.stem.rpartition("_")
        by_galaxy.setdefault(galaxy, {})[band] = p
    cube: np.ndarray | None = None
    stamps: list[Stamp] = []
    seen: set[bytes] = set()
    for galaxy in sorted(by_galaxy):
        found = [b for b in bands if b in by_galaxy[galaxy]]
        if not found:
            continue
        band = found[0]
        with fits.open(by_galaxy[galaxy][band]) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            own = np.asarray(hdul["PSF"].data, dtype=np.float64) if "PSF" in hdul else None
        key = data.tobytes()
        if key in seen:
            continue
        seen.add(key)
        psf, how = own, "own"
        if own is None and galaxy.startswith("COSMOS_") and (root / PSF_CUBE).is_file():
            if cube is None:
                cube = np.asarray(fits.getdata(root / PSF_CUBE), dtype=np.float64)
            plane = zlib.crc32(galaxy.encode()) % len(cube)  # a fixed representative ACS PSF per galaxy
            psf, how = cube[plane], f"stand-in {plane}"
        elif own is None:
            how = "none (as observed)"
        image, r_half = prepare_stamp(data, psf, iterations, mask_sigma)
        stamps.append(Stamp(galaxy, image, r_half, band, how))
    if not stamps:
        raise FileNotFoundError(f"no stamp in {root} has one of the bands {list(bands)}")
    return tuple(stamps)


def interpolate(stamp: np.ndarray, dx: np.ndarray, dy: np.ndarray, scale: float, angle: float, flip: bool,
                order: int = 3) -> np.ndarray:
    """The stamp's value at source-plane offsets (dx, dy) from its centre (arcsec; lenstronomy INTERPOL geometry,
    see the module docstring), zero outside it: order 1 bilinear, 3 the cubic B-spline interpolant
    (``scipy.ndimage.map_coordinates``)."""
    c, s = np.cos(angle), np.sin(angle)
    x = (dx * c + dy * s) / scale
    y = (-dx * s + dy * c) / scale
    if flip:
        x = -x
    centre = (stamp.shape[0] - 1) / 2
    out = ndimage.map_coordinates(stamp, [y.ravel() + centre, x.ravel() + centre], order=order,
                                  mode="grid-constant", cval=0.0, prefilter=order > 1)
    return out.reshape(np.shape(dx))


def antialiased(stamp: np.ndarray, scale: float, fwhm: float) -> np.ndarray:
    """The stamp convolved with a Gaussian of ``fwhm`` arcsec in the source plane (``scale`` arcsec per stamp
    pixel; flux kept): a stamp finer than the grid that samples it would otherwise alias (its knots fall between
    the ray-traced points, and the image's flux with them)."""
    sigma_pix = fwhm / (2 * np.sqrt(2 * np.log(2))) / scale
    if fwhm <= 0 or sigma_pix < 0.2:
        return stamp
    return ndimage.gaussian_filter(stamp, sigma_pix, mode="constant", cval=0.0, truncate=4.0)


def source_library(real: Any) -> tuple[Stamp, ...]:
    """The stamps of a track's ``population.source.real`` settings (folder relative to the project root)."""
    from skybench.tracks import project_root

    folder = Path(real.folder)
    folder = folder if folder.is_absolute() else project_root() / folder
    return load_stamps(str(folder), tuple(real.bands), real.deconvolution_iterations, real.mask_sigma)
