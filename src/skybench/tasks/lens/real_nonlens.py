"""Real non-lens galaxies (``data/galaxies``, see its README) brought to a lens track by
:func:`skybench.real_hst.match_to_target`, the steps of the real-lens importer (PSF matching on the original grid,
flux-conserving rebinning, flux scale, noise to the track's level), for measuring false positives on real skies.

- **lens-space** (Euclid-VIS-like, 0.1"/px, Gaussian PSF 0.18"): the 18 HST/ACS F814W stamps of ``hst_stamps/``
  (13 COSMOS, 5 AEGIS; the AEGIS F606W images are the same galaxies and are left out, and so is the one JWST
  galaxy: NIRCam 1.15-4.4 um is not the VIS band and has no PSF) and cut-outs of the HST scenes of
  ``hst_fields/`` centred on their brightest galaxies (:data:`SCENES`; HDF-N is left out: no PSF, so the PSF
  matching could not be stated; the Abell 2744 scenes are WFC3/IR F105W, 1.05 um, just redder than VIS:
  ``band`` says so per object). The HST flux is not VIS flux, so each object's flux within 2" is drawn from the
  simulated non-lenses' (:func:`simulated_fluxes`), below what the object reaches before its own noise, whitened,
  is above the track's (:func:`skybench.real_hst.flux_reach`); stamps that reach no simulated flux are dropped
  and counted (``stamps_dropped_unreachable_flux``).
- **lens-ground** (u, g, r, i at 0.2"/px): the 176 KiDS stamps of ``kids_viking_field/`` (0.339"/px, an inferred
  scale, so resampling upsamples), with their real KiDS flux (AB zero point 0) converted to the track's e-/s at
  each band's zero point, so the colours are the real ones; the flux within 2" in r is drawn from the simulated
  non-lenses' below what the stamp reaches (a stamp whose reach is below every simulated flux is dropped, and
  counted), which dims it (``flux_dim_mag``); the reach: KiDS i is noisier than the track's i (x1.36 after
  resampling, at the frame's sigma; more in the upsampled pixels that lie inside one KiDS pixel), and a noisier
  band would tell the real objects apart, so all bands of a stamp are dimmed by at least the largest ratio, over
  its bands and pixels, of its noise (1.4826 MAD of its border ring, its correlation modelled, carried to the
  track's grid: the largest eigenvalue of its covariance) to the track's. Even so the real field galaxies are
  fainter than the simulated deflectors (most reach only the faint end of their fluxes) and more extended: a
  classifier on public statistics still tells them apart (tests/test_real_indistinguishable.py). Their empirical
  PSFs (0.86-1.15") are broader than the track's (0.71-0.81"): nothing can sharpen them, so no convolution is done
  and ``psf_fwhm_result`` records the PSF they have. Their real noise is kept (it includes the sources' Poisson
  noise: none is added) and only what is missing to the track's background is added (``noise_ratio``: the KiDS
  part; the sum is whitened). The sky is the median of each stamp's 5-pixel border ring. The 10 GAMA galaxies of
  ``kids_gama_profit/`` are r only: they are left out rather than given invented u, g, i images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy.ndimage import gaussian_filter, maximum_filter

from skybench.common import robust_sigma
from skybench.physics.noise import cps2magnitude
from skybench.real_hst import (
    APERTURE_RADIUS,
    BORDER_WIDTH,
    Target,
    _border,
    draw_flux,
    fit_psf_fwhm,
    flux_reach,
    jittered_centre,
    match_to_target,
    noise_correlation,
    resample_flux,
)
from skybench.release import sha256_file
from skybench.tasks.lens.config import LensTrack
from skybench.tracks import Track

# hst_fields/ scenes used for lens-space, with the most cut-outs taken from each (scenes smaller than the 10.1"
# frame give one, centred on their brightest galaxy, with the frame outside the scene filled by the track's noise).
SCENES = {"HFF_A2744_F105W_cd_galaxy.fits": 6, "HFF_A2744_F105W_dwarf_galaxy.fits": 2,
          "HFF_A2744_F105W_group_of_galaxies.fits": 2, "HFF_A2744_F105W_spiral_galaxy.fits": 1,
          "COSMOS_F814W_field0.fits": 2, "COSMOS_F814W_field1.fits": 2}
SCENE_MIN_SEPARATION = 3.0  # arcsec between the centres of two cut-outs of one scene
SCENE_EDGE = 1.0  # arcsec: a cut-out's centre is at least this far from the scene's edge
SCENE_SMOOTH = 0.1  # arcsec: Gaussian sigma of the smoothing before peak finding
SCENE_NSIGMA = 20.0  # a peak of the smoothed scene must exceed this many sigma of the smoothed noise
KIDS_BANDS = ("u", "g", "r", "i")
KIDS_PSF_RADIUS = 1.5  # arcsec of PSF core fitted (the 0.3" default is under a pixel at 0.339")


@dataclass(frozen=True)
class Item:
    """One real object brought to a track: (bands, size, size) float32 image in e-/s and its hidden numbers."""

    image: np.ndarray
    meta: dict[str, Any]


def _psf_fwhm(psf: np.ndarray, scale: float, radius: float = 0.3) -> float:
    half = min(psf.shape) // 2 - 1  # the fit's core must lie inside the PSF image
    return fit_psf_fwhm(psf, scale, radius=min(radius, half * scale))


def _draw_target(track: LensTrack, reference: np.ndarray, seed: int, index: int, image: np.ndarray, scale: float,
                 fwhm: float, sigma: float, corr: tuple[np.ndarray, np.ndarray], centre: tuple[float, float]
                 ) -> tuple[Target, float] | None:
    """The target of real object ``index`` (one band) and its flux reach: the magnitude of its flux within 2\"
    (of ``centre``) drawn from the simulated non-lenses' below what it reaches at the track's noise (None: it
    reaches none)."""
    probe = Target.for_band(track, 0, float("nan"))
    flux, reach = flux_reach(image, (scale, scale), fwhm, sigma, probe, corr, centre)
    want = draw_flux(reference, np.random.default_rng([seed, 1, index]), reach) if flux > 0 else None
    if want is None:
        return None
    return Target.for_band(track, 0, float(cps2magnitude(want, probe.zero_point))), reach


def _noise_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, index])


def _centre(track: LensTrack, seed: int, index: int, image: np.ndarray, scale: float
            ) -> tuple[tuple[float, float], dict[str, Any]]:
    """Where a lens-space frame is centred: the galaxy's light centre offset by N(0, lens.center_sigma) per axis
    (default_rng([seed, 5, index])), as the simulated deflectors and the real lenses are."""
    return jittered_centre(image, (scale, scale), track.population.lens.center_sigma,
                           np.random.default_rng([seed, 5, index]))


def _check(track: Track) -> LensTrack:
    if not isinstance(track, LensTrack):
        raise ValueError(f"track {track.name!r} is a {track.task} track, not a lens track")
    return track


# ------------------------------------------------------------------------------------------ flux matching
REFERENCE_SIZE = 400  # simulated objects whose fluxes the real objects' fluxes are drawn from
REFERENCE_SEED = 1_000_003  # public seeds of the "train" split: a reference sample, no test object


def reference_band(track: Track) -> int:
    """The band whose flux is matched: r where the track has it (the lens magnitudes are r), else the first."""
    return track.band_names.index("r") if "r" in track.band_names else 0


def simulated_fluxes(track: LensTrack, n: int = REFERENCE_SIZE, seed: int = REFERENCE_SEED) -> dict[int, np.ndarray]:
    """Flux within ``APERTURE_RADIUS`` of the centre in the reference band of ``n`` simulated objects of ``track``
    (public seeds), sorted, per ``is_lens`` label (0, 1): the distributions a real object's flux is drawn from, so
    that its brightness does not tell it from the simulated objects of its class."""
    from skybench.physics.backend import get_backend  # the simulator: only when the real set is built
    from skybench.tasks.lens.simulator import LensSimulator

    images, meta = LensSimulator(track, get_backend("numpy")).simulate(seed, "train", 0, n)
    size, p = images.shape[-1], track.survey.pixel_scale
    c = (np.arange(size) - (size - 1) / 2.0) * p
    aperture = np.hypot(c[:, None], c[None, :]) <= APERTURE_RADIUS
    flux = images[:, reference_band(track)][:, aperture].astype(np.float64).sum(axis=1)
    return {v: np.sort(flux[np.asarray(meta["is_lens"]) == v]) for v in (0, 1)}


# ------------------------------------------------------------------------------------------ lens-space
def _hst_stamps(galaxy_dir: Path) -> list[Path]:
    """The HST F814W galaxy stamps (not the PSF cube), sorted by name."""
    found = sorted(p for p in (galaxy_dir / "hst_stamps").glob("*_F814W.fits"))
    if not found:
        raise FileNotFoundError(f"no {galaxy_dir / 'hst_stamps'}/*_F814W.fits: pull the real data first (dvc pull)")
    return found


def _stamp_item(path: Path, track: LensTrack, seed: int, index: int, psf_cube: np.ndarray,
                reference: np.ndarray) -> Item | None:
    with fits.open(path) as hdul:
        header = hdul[0].header
        image = np.asarray(hdul[0].data, dtype=np.float64)
        psf = np.asarray(hdul["PSF"].data, dtype=np.float64) if "PSF" in hdul else None
    scale = float(header["PIXSCALE"])
    if "NOISEMEA" in header and "NOISEVAR" in header:
        bkg, sigma, noise_from = float(header["NOISEMEA"]), float(np.sqrt(header["NOISEVAR"])), "NOISEMEA/NOISEVAR"
    else:
        border = _border(image, BORDER_WIDTH)
        bkg, sigma, noise_from = float(np.median(border)), robust_sigma(border), "border median/1.4826*MAD"
    psf_from = "own PSF HDU"
    if psf is None:  # a representative COSMOS ACS PSF (data/galaxies/README.md section 1)
        plane = int(np.random.default_rng([seed, 3, index]).integers(len(psf_cube)))
        psf, psf_from = psf_cube[plane], f"COSMOS_F814W_PSF_examples.fits plane {plane} (not this galaxy's)"
    fwhm = _psf_fwhm(psf, scale)
    corr = noise_correlation(image)
    centre, placed = _centre(track, seed, index, image - bkg, scale)
    drawn = _draw_target(track, reference, seed, index, image - bkg, scale, fwhm, sigma, corr, centre)
    if drawn is None:
        return None
    target, reach = drawn
    out, numbers = match_to_target(image - bkg, (scale, scale), fwhm, sigma, target, _noise_rng(seed, index),
                                   noise_corr=corr, centre=centre)
    numbers |= placed
    numbers["flux_reach"] = reach
    meta = {"source_kind": "hst_stamp", "file": f"hst_stamps/{path.name}", "name": str(header.get("OBJECT", "")),
            "band": str(header.get("FILTER", "")), "telescope": str(header.get("TELESCOP", "")),
            "instrument": str(header.get("INSTRUME", "")), "orig_mag": float(header.get("MAG", np.nan)),
            "redshift": float(header.get("ZPHOT", np.nan)),
            "ra": float(header.get("RA", np.nan)), "dec": float(header.get("DEC", np.nan)),  # its galaxy's
            "background_subtracted": bkg, "existing_noise_from": noise_from, "psf_from": psf_from,
            "source_sha256": sha256_file(path), **numbers}
    return Item(out[None].astype(np.float32), meta)


def find_galaxies(image: np.ndarray, sigma: float, scale: float, count: int) -> list[tuple[int, int]]:
    """(y, x) pixels of up to ``count`` brightest peaks of ``image`` smoothed by a Gaussian of ``SCENE_SMOOTH``
    arcsec, above ``SCENE_NSIGMA`` times the smoothed noise (white noise ``sigma`` per pixel), at least
    ``SCENE_EDGE`` from the edges and ``SCENE_MIN_SEPARATION`` from each other, brightest first."""
    s = SCENE_SMOOTH / scale
    smooth = gaussian_filter(image, s)
    # white noise through a normalised Gaussian of sigma s px: sigma / (2 sqrt(pi) s) (its kernel's L2 norm)
    sigma_smooth = sigma / (2.0 * np.sqrt(np.pi) * s)
    sep, edge = SCENE_MIN_SEPARATION / scale, int(np.ceil(SCENE_EDGE / scale))
    peaks = smooth == maximum_filter(smooth, size=int(2 * round(sep / 2) + 1))
    peaks &= smooth > SCENE_NSIGMA * sigma_smooth
    peaks[:edge], peaks[-edge:], peaks[:, :edge], peaks[:, -edge:] = False, False, False, False
    ys, xs = np.nonzero(peaks)
    kept: list[tuple[int, int]] = []
    for k in np.argsort(-smooth[ys, xs], kind="stable"):
        y, x = int(ys[k]), int(xs[k])
        if all(np.hypot(y - a, x - b) >= sep for a, b in kept):
            kept.append((y, x))
        if len(kept) == count:
            break
    return kept


def _sky(header: fits.Header, y: int, x: int) -> dict[str, float]:
    """{"ra", "dec"} (degrees) of pixel (y, x) of an image by its header's WCS; NaN without one."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return {"ra": np.nan, "dec": np.nan}
    ra, dec = wcs.celestial.all_pix2world(float(x), float(y), 0)
    return {"ra": float(ra), "dec": float(dec)}


def _scene_items(galaxy_dir: Path, track: LensTrack, seed: int, start: int, reference: np.ndarray) -> list[Item]:
    items: list[Item] = []
    frame = track.cutout.size * track.survey.pixel_scale if track.cutout is not None else 0.0
    for name, count in SCENES.items():
        path = galaxy_dir / "hst_fields" / name
        with fits.open(path) as hdul:
            header = hdul[0].header
            scene = np.asarray(hdul[0].data, dtype=np.float64)
            psf = np.asarray(hdul["PSF"].data, dtype=np.float64)
        scale = float(header["PIXSCALE"])
        scene = np.where(np.isfinite(scene), scene, 0.0)
        _, bkg, sigma = sigma_clipped_stats(scene, sigma=3.0, maxiters=10)
        scene = scene - bkg
        fwhm = _psf_fwhm(psf, scale)
        corr = noise_correlation(scene)
        # the frame's half width, plus room for the offset of its centre from the peak pixel (light centre, jitter)
        half_frame = int(np.ceil((frame / 2 + 4 * track.population.lens.center_sigma + SCENE_SMOOTH) / scale))
        for y, x in find_galaxies(scene, float(sigma), scale, count):
            index = start + len(items)
            h = min(half_frame, y, x, scene.shape[0] - 1 - y, scene.shape[1] - 1 - x)
            window = scene[y - h:y + h + 1, x - h:x + h + 1]  # odd, centred on the peak pixel
            centre, placed = _centre(track, seed, index, window, scale)
            drawn = _draw_target(track, reference, seed, index, window, scale, fwhm, float(sigma), corr, centre)
            if drawn is None:
                continue
            target, reach = drawn
            out, numbers = match_to_target(window, (scale, scale), fwhm, float(sigma), target, _noise_rng(seed, index),
                                           noise_corr=corr, centre=centre)
            numbers |= placed
            numbers["flux_reach"] = reach
            meta = {"source_kind": "hst_scene", "file": f"hst_fields/{name}", "name": f"{name} peak ({y}, {x})",
                    **_sky(header, y, x),
                    "band": str(header.get("FILTER", "F105W" if "F105W" in name else "F814W")),
                    "telescope": "HST", "instrument": "WFC3/IR" if "F105W" in name else "ACS/WFC",
                    "scene_peak_y": y, "scene_peak_x": x, "scene_window_half_px": h,
                    "background_subtracted": float(bkg), "existing_noise_from": "sigma-clipped (3 sigma) scene std",
                    "psf_from": "PSF HDU of the scene", "source_sha256": sha256_file(path), **numbers}
            items.append(Item(out[None].astype(np.float32), meta))
    return items


def space_nonlenses(galaxy_dir: Path, track: LensTrack, seed: int = 0) -> list[Item]:
    """The lens-space non-lenses: the HST F814W stamps, then the scene cut-outs."""
    stamps = _hst_stamps(galaxy_dir)
    with fits.open(galaxy_dir / "hst_stamps" / "COSMOS_F814W_PSF_examples.fits") as hdul:
        psf_cube = np.asarray(hdul[0].data, dtype=np.float64)
    reference = simulated_fluxes(track)[0]
    found = [_stamp_item(path, track, seed, k, psf_cube, reference) for k, path in enumerate(stamps)]
    items = [it for it in found if it is not None]
    dropped = [p.name for p, it in zip(stamps, found, strict=True) if it is None]
    items += _scene_items(galaxy_dir, track, seed, len(found), reference)
    for it in items:  # the stamps whose flux reach lies below every simulated non-lens's (scenes: peaks kept)
        it.meta["stamps_considered"], it.meta["stamps_dropped_unreachable_flux"] = len(stamps), len(dropped)
        it.meta["stamps_dropped_names"] = ",".join(dropped)
    return items


# ------------------------------------------------------------------------------------------ lens-ground
def ground_nonlenses(galaxy_dir: Path, track: LensTrack, seed: int = 0, limit: int | None = None) -> list[Item]:
    """The lens-ground non-lenses: the 176 KiDS u, g, r, i stamps (the first ``limit``), in the track's band
    order."""
    bands = track.band_names
    if not set(bands) <= set(KIDS_BANDS):
        raise ValueError(f"track {track.name!r} has bands {bands}; the KiDS stamps have {KIDS_BANDS}")
    cubes, psfs, headers, catalog = {}, {}, {}, None
    paths = {b: galaxy_dir / "kids_viking_field" / f"KiDS_field_stamps_{b}.fits" for b in bands}
    for b, path in paths.items():
        with fits.open(path) as hdul:
            headers[b] = hdul[0].header
            cubes[b] = np.asarray(hdul[0].data, dtype=np.float64)
            psfs[b] = np.asarray(hdul["PSF"].data, dtype=np.float64)
            if catalog is None:
                catalog = Table(hdul["CATALOG"].data).to_pandas()
    assert catalog is not None
    sha = {b: sha256_file(p) for b, p in paths.items()}
    targets = {b: Target.for_band(track, i, float("nan")) for i, b in enumerate(bands)}
    fwhms = {b: _psf_fwhm(psfs[b], float(headers[b]["PIXSCALE"]), KIDS_PSF_RADIUS) for b in bands}
    zps = {b: float(10 ** (0.4 * targets[b].zero_point)) for b in bands}  # KiDS flux (AB ZP 0) -> e-/s at the ZP
    # the coadds' noise correlation per band: the mean of every stamp's border estimate
    corr = {b: tuple(np.mean([noise_correlation(im)[a] for im in cubes[b]], axis=0) for a in (0, 1)) for b in bands}
    # The KiDS noise carried to the track's grid, as a multiple of the track's, per unit of input sigma (the same
    # linear map for every stamp; its largest pixel variance: upsampling gives the pixels different variances).
    # Each stamp's noise (1.4826 MAD of its border ring, per band) gives its ratio per band; where one is above 1
    # all the stamp's bands are dimmed by the largest, so that no band is noisier than the track's (a noisier
    # band would tell the real objects apart), and the colours are kept.
    def unit_ratio(b: str, centre: tuple[float, float]) -> float:  # per stamp: its centre sets the grid's phase
        return match_to_target(np.zeros(cubes[b].shape[1:]), (float(headers[b]["PIXSCALE"]),) * 2, fwhms[b], 1.0,
                               targets[b], np.random.default_rng(0), flux_scale=zps[b], poisson=False,
                               noise_corr=corr[b], centre=centre)[1]["existing_sigma_processed_eig_max"] \
            / targets[b].sigma_bkg
    # The flux within 2" in the reference band is drawn from the simulated non-lenses' (brightness would tell the
    # real objects apart); a stamp can only be dimmed (brightening would raise its noise above the track's), so a
    # stamp whose draw lies above what it reaches is dropped, and the manifest says how many.
    reference, ref = simulated_fluxes(track)[0], bands[reference_band(track)]
    n, p = targets[ref].size, targets[ref].pixel_scale
    c = (np.arange(n) - (n - 1) / 2.0) * p
    aperture = np.hypot(c[:, None], c[None, :]) <= APERTURE_RADIUS
    stamps = range(len(catalog) if limit is None else min(limit, len(catalog)))
    items, dropped = [], []
    for k in stamps:
        # the frame is centred on the galaxy (the catalogue centroid, 0-based in the stamp; the stamps are 64 px, so
        # their centre, 31.5, is half a KiDS pixel from the galaxy, 0.85 px of the track: told apart, AUROC ~0.95),
        # offset as the simulated deflectors are, N(0, center_sigma) per axis
        jitter = np.random.default_rng([seed, 5, k]).normal(0.0, track.population.lens.center_sigma, 2)
        centre = (float(catalog["YC"].iloc[k] - catalog["Y0"].iloc[k]) + jitter[0] / float(headers[ref]["PIXSCALE"]),
                  float(catalog["XC"].iloc[k] - catalog["X0"].iloc[k]) + jitter[1] / float(headers[ref]["PIXSCALE"]))
        unit = {b: unit_ratio(b, centre) for b in bands}  # the carried noise's largest eigenvalue: the grid's phase
        sigma = {b: robust_sigma(_border(cubes[b][k], BORDER_WIDTH)) for b in bands}
        dim = min(1.0, 1.0 / max(unit[b] * sigma[b] for b in bands))
        sky = {b: float(np.median(_border(cubes[b][k], BORDER_WIDTH))) for b in bands}  # the stamp's local sky
        native = zps[ref] * float(resample_flux(cubes[ref][k] - sky[ref], float(headers[ref]["PIXSCALE"]), p,
                                                (n, n), centre)[aperture].sum())
        want = draw_flux(reference, np.random.default_rng([seed, 1, k]), native * dim) if native > 0 else None
        if want is None:
            dropped.append(k)
            continue
        factor = want / native  # <= dim: no band noisier than the track's
        planes, meta = [], {"source_kind": "kids_stamp", "file": "kids_viking_field/KiDS_field_stamps_{band}.fits",
                            "name": f"KiDS field stamp {k}", "band": ",".join(bands), "telescope": "VST",
                            "instrument": "OmegaCAM", "stamp": k, "flux_dim_factor_max": dim,
                            "flux_dim_factor": factor, "flux_dim_mag": float(-2.5 * np.log10(factor)),
                            "centre_y": centre[0], "centre_x": centre[1],
                            "reference_band": ref, "reference_flux_target": want,
                            **{f"cat_{c.lower()}": catalog[c].iloc[k].item() for c in catalog.columns}}
        rng = _noise_rng(seed, k)
        for b in bands:
            scale = float(headers[b]["PIXSCALE"])
            out, numbers = match_to_target(cubes[b][k] - sky[b], (scale, scale), fwhms[b], sigma[b], targets[b], rng,
                                           flux_scale=zps[b] * factor, poisson=False, noise_corr=corr[b],
                                           centre=centre)  # the bands' stamps share one pixel grid
            planes.append(out)
            numbers["orig_mag_aperture"] = float(cps2magnitude(numbers["aperture_flux_orig"], 0.0))
            numbers["sky_subtracted"] = sky[b]
            numbers["noise_ratio_before_dimming"] = unit[b] * sigma[b]
            numbers["frame_sigma"] = float(headers[b]["SKYSIG"])
            numbers["noise_ratio"] = numbers["existing_sigma_processed_eig_max"] / targets[b].sigma_bkg
            numbers["source_sha256"] = sha[b]
            numbers.pop("target_mag")
            meta |= {f"{key.replace('_hst', '_input')}_{b}": v for key, v in numbers.items()}
        items.append(Item(np.stack(planes).astype(np.float32), meta))
    for it in items:
        it.meta["stamps_considered"], it.meta["stamps_dropped_unreachable_flux"] = len(stamps), len(dropped)
    return items


def nonlenses(data_dir: Path, track: Track, seed: int = 0, limit: int | None = None) -> list[Item]:
    """The real non-lens set of ``track`` from ``data_dir`` (the folder holding ``galaxies/``, or that folder);
    ``limit``: only the first KiDS stamps (tests)."""
    track = _check(track)
    data_dir = Path(data_dir)
    galaxy_dir = data_dir if (data_dir / "hst_stamps").is_dir() or (data_dir / "kids_viking_field").is_dir() \
        else data_dir / "galaxies"
    if len(track.survey.bands) == 1:
        return space_nonlenses(galaxy_dir, track, seed)
    return ground_nonlenses(galaxy_dir, track, seed, limit)


def describe(track: Track) -> str:
    """The processing note of the non-lens set of ``track``, for the release manifest."""
    if len(track.survey.bands) == 1:
        return ("Real non-lenses (data/galaxies): 18 HST/ACS F814W stamps (13 COSMOS, 5 AEGIS; 0.03\"/px) and cut-outs"
                f" centred on the brightest peaks (Gaussian-smoothed {SCENE_SMOOTH}\", > {SCENE_NSIGMA:g} sigma,"
                f" >= {SCENE_MIN_SEPARATION}\" apart, >= {SCENE_EDGE}\" from the edge) of the HST scenes"
                f" {', '.join(f'{k} (<= {v})' for k, v in SCENES.items())}; background (NOISEMEA, or the scene's"
                " 3-sigma-clipped median) subtracted; PSF FWHM fitted to the own PSF HDU (else a random plane of"
                " COSMOS_F814W_PSF_examples.fits); frame centred on the galaxy's light centre offset by"
                f" N(0, {_check(track).population.lens.center_sigma}\") per axis (as the lenses; numpy"
                " default_rng([seed, 5, index])); then steps (2)-(5) of the lens set, with the flux within 2\""
                f" drawn (numpy default_rng([seed, 1, index])) from {REFERENCE_SIZE} simulated non-lenses' of this"
                f" track (public seed {REFERENCE_SEED}, split train), below the object's reach (flux_reach: brighter,"
                " its own noise, whitened, would be above the track's; stamps reaching none are dropped, counted in"
                " stamps_dropped_unreachable_flux), noise default_rng([seed, 2, index]). Left out: AEGIS F606W (same"
                " galaxies), the JWST"
                " galaxy (not the VIS band, no PSF), HDF-N (no PSF).")
    return ("Real non-lenses (data/galaxies/kids_viking_field): 176 KiDS u, g, r, i stamps (64x64 at an inferred"
            " 0.339\"/px), sky (median of the 5-px border ring) subtracted, the flux (AB ZP 0) times 10^(0.4 ZP_band)"
            " in e-/s, times a dimming factor per stamp (flux_dim_factor: the r flux within 2\" drawn from"
            f" {REFERENCE_SIZE} simulated non-lenses' of this track, public seed {REFERENCE_SEED}, below the stamp's"
            " reach flux_dim_factor_max = 1 / the largest ratio over the bands of the stamp's noise, 1.4826 MAD of"
            " its border ring with its correlation, carried to the track's grid, to the track's sigma; stamps"
            " reaching no simulated flux dropped, counted in stamps_dropped_unreachable_flux), rebinned"
            " (upsampled) to the track's grid; no PSF convolution where the empirical KiDS PSF is already broader"
            " than the track's (psf_fwhm_input_<band>, psf_fwhm_result_<band> record it); background noise added,"
            " so that the sum with the KiDS noise (carried through the rebinning, correlated) is white at the"
            " track's sigma (noise_ratio_<band>); no Poisson term (the real noise has it). The 10 GAMA"
            " galaxies are r only: left out.")
