"""SDSS Main-Galaxy-Sample-like galaxies for the photometric-redshift tracks (after Pasquet et al. 2019).

Per object (its own seeded generator, :class:`~skybench.testkey.ObjectSeeds`):

* redshift from dV/dz x the number of galaxies brighter than the r < ``r_limit`` cut at that redshift (a Schechter
  luminosity function in ^{0.1}r, r shifted to z = 0.1, as Blanton et al. 2003 give it), then the absolute magnitude
  M_0.1r from that luminosity function truncated at the cut with the object's own K-corrections, so that every
  galaxy has r <= ``r_limit``; M_r (rest-frame r at z = 0) is M_0.1r less the object's band shift. The cut is on
  the Petrosian magnitude, as the MGS's (Strauss et al. 2002), and the catalogue holds model (total) magnitudes:
  the Petrosian aperture misses 0.20 mag of a de Vaucouleurs bulge and 0.006 of an exponential disk
  (:func:`petrosian_fraction`), so bulge-dominated galaxies enter the sample up to 0.2 mag brighter in the
  catalogue than the cut;
* two populations (``red_sequence``, ``blue_cloud``: :class:`~skybench.tasks.photoz.config.Component`): an object is
  red with the probability ``red_fraction`` of its M_r (a tanh rising with luminosity, Baldry et al. 2004), then
  its parameters come from its population's uniform ranges (per-object quantiles, so they move smoothly with the
  population's parameters: the fit of :mod:`skybench.tasks.photoz.calibrate` uses common random numbers), moved by
  the population's colour-magnitude slopes (``luminosity_slope``: brighter galaxies redder within a population);
* a bulge (Sersic n = 4) plus a disk (Sersic n = 1), their SEDs non-negative mixtures of the Blanton & Roweis 2007
  templates that ship with the ``kcorrect`` package (``BR07_*``, :mod:`skybench.physics.sed`): the bulge old light
  (BR07_3, a ``uv_repair`` share of it UV-repaired as in Budavari et al. 2000, a ``metal_rich`` share of it from the
  reddest template BR07_0) with a ``bulge_young_fraction`` of young
  (BR07_2) light; the disk a mixture of old, young and young metal-poor light (``disk_type`` 0 .. 2: BR07_3, BR07_2,
  BR07_4) with a ``burst`` share of the starburst template (BR07_1, strong emission lines) and Calzetti internal
  reddening; ``bulge_fraction`` is the bulge's share of the rest-frame r-band light (red sequence: bulge-dominated,
  blue cloud: disk-dominated), so the galaxy SED is a bulge/disk template mixture and its colours have gradients;
* AB magnitudes from :class:`~skybench.physics.sed.Photometry` (templates redshifted and integrated through the
  speclite ``sdss2010`` filters; tabulated by :class:`~skybench.physics.sed.MagnitudeTable` on a (z, E(B-V)_int)
  grid, < 1e-3 mag from the direct integral), Galactic extinction A_b = R_b E(B-V) (Schlafly & Finkbeiner 2011);
  catalogue magnitudes in the SDSS system (``sdss_minus_ab``: u +0.04, z -0.02 from AB), like the real MGS;
* physical half-light radii from size-luminosity relations (after Shen et al. 2003), turned into arcsec with the
  angular-diameter distance of ``astropy.cosmology`` - so sizes shrink with z. The surface brightness is total
  flux / area with flux ~ 1/D_L^2 and area ~ 1/D_A^2, i.e. the (1+z)^-4 cosmological dimming;
* images: the lens simulator's :class:`~skybench.physics.render.Renderer` (supersampled Sersic profiles, per-band
  Gaussian PSF, sky + read + Poisson noise); catalogue magnitudes: the extinction-corrected true magnitudes plus
  Gaussian errors from the same noise model in an effective aperture, the quoted errors (``err_*``) from the
  measured flux as a survey's are; a zero-point error per object and band (``mag_error_floor``) offsets the images
  and the catalogue alike, and is not in the quoted errors (SDSS model-magnitude errors are photon statistics
  only: the real MGS quotes err_r down to 0.002 mag).

The photoz-images and photoz-catalog tracks share the population, survey and split sizes, so for one seed they
hold the same galaxies (same ``seed`` column): the CNN-on-images vs k-NN-on-magnitudes comparison is like for like.
Every parameter of every object is in its metadata row."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from skybench.physics.backend import Backend
from skybench.physics.lens_mass import phi_q2ellipticity
from skybench.physics.light import sersic_total_flux
from skybench.physics.noise import background_sigma, noise_stream, object_normals
from skybench.physics.psf import FWHM_TO_SIGMA
from skybench.physics.render import Cores, Renderer
from skybench.physics.sed import SDSS_BANDS, SDSS_EXTINCTION, TEMPLATES, MagnitudeTable
from skybench.tasks.photoz.config import GalaxyPopulation, PhotozTrack
from skybench.testkey import ObjectSeeds, as_object_seeds

ARCSEC_PER_RAD = 206264.806
_COMPONENT_PARAMS = ("bulge_fraction", "bulge_young_fraction", "disk_type", "ebv_internal", "metal_rich", "burst",
                     "uv_repair")
# the limits of a value moved by a population's luminosity_slope: disk types 0 .. 2, E(B-V) within the magnitude
# table (MagnitudeTable's ebv_max), the others shares in [0, 1]
_PARAM_LIMITS = {"disk_type": (0.0, 2.0), "ebv_internal": (0.0, 0.3)}
M_PIVOT = -21.0  # M_r where the colour-magnitude relations (Component.luminosity_slope) leave the drawn values
_T = {t: i for i, t in enumerate(TEMPLATES)}
MAG_ERR = 2.5 / np.log(10.0)  # sigma_m = 1.0857 sigma_F / F (first-order error propagation)


@functools.cache
def petrosian_fraction(n: float) -> float:
    """Share of a Sersic-n profile's total flux inside the SDSS Petrosian aperture 2 R_P, where I(R_P) / <I>(<R_P)
    = 0.2 (Graham et al. 2005, AJ 130, 1535: n = 4 misses 0.20 mag); seeing and the composite profile left out."""
    from scipy.optimize import brentq
    from scipy.special import gammainc, gammaincinv

    b = float(gammaincinv(2 * n, 0.5))  # exact b_n (half the light inside R_e), in units of R_e

    def inside(r: float) -> float:
        return float(gammainc(2 * n, b * r ** (1 / n)))

    total = 2 * np.pi * n * np.exp(b) * b ** (-2 * n) * math.gamma(2 * n)  # L_tot / (I_e R_e^2)
    r_p = brentq(lambda r: np.exp(-b * (r ** (1 / n) - 1)) * np.pi * r**2 / (inside(r) * total) - 0.2, 0.05, 50.0)
    return inside(2 * r_p)


def petrosian_deficit(bulge_share: np.ndarray) -> np.ndarray:
    """Petrosian minus model magnitude of a de Vaucouleurs bulge + exponential disk with the bulge's ``bulge_share``
    of the light: each component's own Petrosian share, light-weighted."""
    kept = bulge_share * petrosian_fraction(4.0) + (1 - bulge_share) * petrosian_fraction(1.0)
    return -2.5 * np.log10(kept)


def _simulated(track: PhotozTrack) -> GalaxyPopulation:
    """The track's simulated population (a real catalogue track is imported, never simulated)."""
    if not isinstance(track.population, GalaxyPopulation):
        raise ValueError(f"track {track.name!r} is a real catalogue (population.source: {track.population.source}); "
                         "import it (skybench import-sdss-mgs) instead of simulating it")
    return track.population


@functools.cache
def magnitude_table() -> MagnitudeTable:
    """The template magnitude table (built once per process; a forked worker inherits the parent's)."""
    return MagnitudeTable()


class GalaxySimulator:
    hidden_arrays: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ("z",)

    @staticmethod
    def arrays(track: PhotozTrack) -> dict[str, tuple[int, ...]]:
        pop = _simulated(track)
        out: dict[str, tuple[int, ...]] = {}
        if "images" in track.inputs:
            if track.cutout is None:
                raise ValueError(f"track {track.name!r} takes images but has no cutout")
            out["images"] = (len(track.band_names), track.cutout.size, track.cutout.size)
        if "features" in track.inputs:
            out["features"] = (len(pop.features),)
        return out

    @staticmethod
    def release_info(track: PhotozTrack) -> dict[str, Any]:
        pop = _simulated(track)
        magnitude_table()  # built here, in the parent process, so that the forked simulation workers inherit it
        return {"feature_names": list(pop.features) if "features" in track.inputs else [],
                "label": "z", "cosmology": f"FlatLambdaCDM(H0={pop.H0}, Om0={pop.Om0})"}

    @staticmethod
    def object_domain(track: PhotozTrack) -> str:
        """Tracks of one survey and population draw the same test galaxies (photoz-images and photoz-catalog, like
        for like; ``skybench.simulate.object_domain``), whatever each publishes of them (``features``)."""
        same = {"survey": track.survey.model_dump(mode="json"),
                "population": _simulated(track).model_dump(mode="json", exclude={"features"})}
        return "photoz:" + hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:32]

    def __init__(self, track: PhotozTrack, backend: Backend):
        if track.band_names != list(SDSS_BANDS):
            raise ValueError(f"track {track.name!r}: the photo-z simulator needs bands {list(SDSS_BANDS)}, "
                             f"got {track.band_names}")
        self.track, self.backend = track, backend
        self.pop = _simulated(track)
        self.bands = track.survey.bands
        self.phot = magnitude_table()
        self.renderer: Renderer | None = None
        if "images" in track.inputs:
            assert track.cutout is not None, f"track {track.name!r} has image inputs but no cutout"
            self.renderer = Renderer(track.cutout.size, track.survey.pixel_scale, track.cutout.supersampling,
                                     self.bands, backend, track.cutout.core_levels)
        px = track.survey.pixel_scale
        self.sigma_bkg = np.array([background_sigma(b.read_noise, b.exposure_time, b.num_exposures,
                                                    b.sky_brightness, b.zero_point, px) for b in self.bands])
        self.total_time = np.array([b.num_exposures * b.exposure_time for b in self.bands])
        self.zero_points = np.array([b.zero_point for b in self.bands])
        self.psf_sigma = np.array([b.seeing * FWHM_TO_SIGMA for b in self.bands])  # arcsec
        self._tables()

    # ---------------------------------------------------------------- distance and selection tables
    def _tables(self) -> None:
        from astropy.cosmology import FlatLambdaCDM

        p = self.pop
        cosmo = FlatLambdaCDM(H0=p.H0, Om0=p.Om0)
        self.z_grid = np.linspace(p.z_range[0], p.z_range[1], 400)
        self.dm_grid = cosmo.distmod(self.z_grid).value  # 5 log10(D_L / 10 pc)
        self.da_grid = cosmo.angular_diameter_distance(self.z_grid).to("kpc").value
        dvdz = cosmo.differential_comoving_volume(self.z_grid).value
        # Schechter function in magnitudes (Blanton et al. 2003 eq. 1 with M): phi ~ x^(alpha+1) exp(-x),
        # x = 10^(-0.4 (M - M*)); its cumulative on a fine grid gives the truncated inverse CDF. M_grid is in
        # Blanton's band, r shifted to z = 0.1 (^{0.1}r), where M* is; M_r (rest r at z = 0) = M_0.1r - shift.
        self.M_grid = np.linspace(p.M_range[0], p.M_range[1], 2001)
        x = 10.0 ** (-0.4 * (self.M_grid - p.M_star))
        phi = x ** (p.alpha + 1.0) * np.exp(-x)
        cdf = np.concatenate([[0.0], np.cumsum((phi[1:] + phi[:-1]) / 2 * np.diff(self.M_grid))])
        self.M_cdf = cdf / cdf[-1]
        # n(z) ~ dV/dz * Phi(M < r_limit - DM - K) with the K-correction and Petrosian deficit of a mid-type (half
        # old, half young light) galaxy; each object's own then set its magnitude, so the cut holds for every object.
        mid = np.zeros(len(TEMPLATES))
        mid[[_T["BR07_3"], _T["BR07_2"]]] = 0.5
        w = self._light_weights(np.tile(mid, (len(self.z_grid), 1)))
        k_r = self._kcorr(self.z_grid, w, np.zeros_like(self.z_grid))[:, 2]
        self.k_typ_r = k_r + petrosian_deficit(np.full(1, 0.5))
        self.shift_typ = float(self._band_shift(self._kcorr(np.full(1, 0.1), w[:1], np.zeros(1))[:, 2])[0])
        n_z = dvdz * np.interp(p.r_limit - self.dm_grid - self.k_typ_r + self.shift_typ, self.M_grid, self.M_cdf)
        c = np.concatenate([[0.0], np.cumsum((n_z[1:] + n_z[:-1]) / 2 * np.diff(self.z_grid))])
        self.z_cdf = c / c[-1]

    @staticmethod
    def _band_shift(k_r_at_01: np.ndarray) -> np.ndarray:
        """M_0.1r - M_r from the r K-correction at z = 0.1 (m_r - M_r - DM there): observed r at z = 0.1 is ^{0.1}r
        at rest, whose own K-correction is -2.5 log10(1.1) (Blanton & Roweis 2007, AJ 133, 734, sec. 2)."""
        return k_r_at_01 + 2.5 * np.log10(1.1)

    def _kcorr(self, z: np.ndarray, weights: np.ndarray, ebv_int: np.ndarray) -> np.ndarray:
        """(B, bands) m_b - M_r - DM: observed magnitudes of the SED at z relative to its rest-frame r band."""
        at_z = self.phot.magnitudes(z, weights, ebv_int)
        rest = self.phot.magnitudes(np.zeros_like(z), weights, ebv_int)[:, 2:3]
        return at_z - rest

    # ---------------------------------------------------------------- parameters
    def sample(self, obj_seed: int) -> dict[str, Any]:
        """Draw the free parameters of one object from ``default_rng(obj_seed)``; same order for all objects."""
        rng = np.random.default_rng(obj_seed)
        u, p = rng.uniform, self.pop
        row: dict[str, Any] = {"seed": obj_seed}
        row["z"] = float(np.interp(rng.random(), self.z_cdf, self.z_grid))
        row["u_M"] = float(rng.random())  # quantile of M_r in the luminosity function truncated at the r cut
        # quantiles: the population (red sequence or blue cloud, decided in photometry() from M_r) maps them to
        # its own parameter ranges, so one object keeps its random numbers whatever the population's parameters
        row["u_red"] = float(rng.random())
        for name in _COMPONENT_PARAMS:
            row[f"u_{name}"] = float(rng.random())
        row["ebv_galactic"] = float(min(rng.exponential(p.ebv_galactic_mean), p.ebv_galactic_max))
        row["bulge_size_dev"] = float(rng.normal(0.0, p.bulge_size.scatter_dex))
        row["disk_size_dev"] = float(rng.normal(0.0, p.disk_size.scatter_dex))
        phi = u(0, np.pi)
        for comp, qr in (("bulge", p.bulge_q), ("disk", p.disk_q)):
            q = u(*qr)
            e1, e2 = phi_q2ellipticity(phi + rng.normal(0, 0.1), q)
            row.update({f"{comp}_q": q, f"{comp}_e1": float(e1), f"{comp}_e2": float(e2)})
        cx, cy = rng.normal(0.0, p.center_sigma, 2)
        row.update(center_x=float(cx), center_y=float(cy))
        for b, c in zip(SDSS_BANDS, rng.normal(0.0, p.mag_error_floor, len(SDSS_BANDS)), strict=True):
            row[f"calib_{b}"] = float(c)
        return row

    def _light_weights(self, light: np.ndarray) -> np.ndarray:
        """Template weights giving each template the share ``light`` (B, templates) of the rest-frame r light."""
        rest_r = self.phot.maggies(np.zeros(len(TEMPLATES)), np.eye(len(TEMPLATES)),
                                   np.zeros(len(TEMPLATES)))[:, 2]
        return light / rest_r[None, :]

    def _disk_weights(self, t: np.ndarray, burst: np.ndarray) -> np.ndarray:
        """Disk template weights: type t in [0, 2] mixes the old (BR07_3), young (BR07_2) and young metal-poor (BR07_4)
        templates (shares of rest r light, linear between neighbours); a share ``burst`` of the light from the
        starburst template (BR07_1)."""
        seq = np.array([_T["BR07_3"], _T["BR07_2"], _T["BR07_4"]])
        w = np.zeros((len(t), len(TEMPLATES)))
        lo = np.clip(np.floor(t), 0, 1).astype(int)
        f = t - lo
        rows = np.arange(len(t))
        w[rows, seq[lo]] = (1.0 - f) * (1.0 - burst)
        w[rows, seq[lo + 1]] = f * (1.0 - burst)
        w[:, _T["BR07_1"]] = burst
        return self._light_weights(w)

    def _bulge_weights(self, young: np.ndarray, metal_rich: np.ndarray, uv_repair: np.ndarray) -> np.ndarray:
        """Bulge template weights: old light (BR07_3, a share ``uv_repair`` of it UV-repaired, BR07_3_uvfix; a share
        ``metal_rich`` of the old light from BR07_0 instead) plus a share ``young`` of young (BR07_2) light."""
        w = np.zeros((len(young), len(TEMPLATES)))
        w[:, _T["BR07_3"]] = (1.0 - young) * (1.0 - metal_rich) * (1.0 - uv_repair)
        w[:, _T["BR07_3_uvfix"]] = (1.0 - young) * (1.0 - metal_rich) * uv_repair
        w[:, _T["BR07_0"]] = (1.0 - young) * metal_rich
        w[:, _T["BR07_2"]] = young
        return self._light_weights(w)

    def photometry(self, meta: pd.DataFrame) -> pd.DataFrame:
        """Magnitudes, fluxes and sizes of every object of ``meta`` (the rows of :meth:`sample`)."""
        p, n = self.pop, len(meta)
        z = meta["z"].to_numpy(np.float64)
        dm = np.interp(z, self.z_grid, self.dm_grid)
        out = pd.DataFrame(index=meta.index)
        # Red or blue from a first M_r (the luminosity-function quantile with the mid-type K-correction of the
        # selection tables), then each object's own parameters, SED and K-correction.
        m_typ = p.r_limit - dm - np.interp(z, self.z_grid, self.k_typ_r) + self.shift_typ
        M_typ = np.interp(meta["u_M"].to_numpy() * np.interp(m_typ, self.M_grid, self.M_cdf), self.M_cdf,
                          self.M_grid) - self.shift_typ
        rf = p.red_fraction
        f_red = rf.low + (rf.high - rf.low) * (1 + np.tanh((rf.M_mid - M_typ) / rf.width)) / 2
        red = meta["u_red"].to_numpy() < f_red
        out["red_sequence"] = red.astype(np.int8)
        for name in _COMPONENT_PARAMS:
            lo_hi = np.where(red[:, None], getattr(p.red_sequence, name), getattr(p.blue_cloud, name))
            value = lo_hi[:, 0] + meta[f"u_{name}"].to_numpy() * (lo_hi[:, 1] - lo_hi[:, 0])
            slope = np.where(red, p.red_sequence.luminosity_slope.get(name, 0.0),
                             p.blue_cloud.luminosity_slope.get(name, 0.0))
            out[name] = np.clip(value + slope * (M_PIVOT - M_typ), *_PARAM_LIMITS.get(name, (0.0, 1.0)))
        fb = out["bulge_fraction"].to_numpy(np.float64)
        ebv_int, ebv_gal = out["ebv_internal"].to_numpy(np.float64), meta["ebv_galactic"].to_numpy(np.float64)
        w_bulge = self._bulge_weights(out["bulge_young_fraction"].to_numpy(np.float64),
                                      out["metal_rich"].to_numpy(np.float64), out["uv_repair"].to_numpy(np.float64))
        w_disk = self._disk_weights(out["disk_type"].to_numpy(np.float64), out["burst"].to_numpy(np.float64))
        # Each component normalised to rest-frame r maggies 1, then weighted by its share of the rest r light.
        k_bulge = 10.0 ** (-0.4 * self._kcorr(z, w_bulge, np.zeros(n)))
        k_disk = 10.0 ** (-0.4 * self._kcorr(z, w_disk, ebv_int))
        k_total = -2.5 * np.log10(fb[:, None] * k_bulge + (1 - fb[:, None]) * k_disk)  # m_b - M_r - DM
        share_b = fb[:, None] * k_bulge / (fb[:, None] * k_bulge + (1 - fb[:, None]) * k_disk)  # per band
        out["petrosian_deficit_r"] = petrosian_deficit(share_b[:, 2])
        m_lim = p.r_limit - dm - k_total[:, 2] - out["petrosian_deficit_r"].to_numpy()  # Petrosian r < r_limit
        z01 = np.full(n, 0.1)
        k01 = -2.5 * np.log10(fb * 10.0 ** (-0.4 * self._kcorr(z01, w_bulge, np.zeros(n))[:, 2])
                              + (1 - fb) * 10.0 ** (-0.4 * self._kcorr(z01, w_disk, ebv_int)[:, 2]))
        shift = self._band_shift(k01)  # this object's M_0.1r - M_r
        cdf_lim = np.interp(m_lim + shift, self.M_grid, self.M_cdf)
        M_01 = np.interp(meta["u_M"].to_numpy() * cdf_lim, self.M_cdf, self.M_grid)
        M_r = M_01 - shift
        out["M_r"], out["M_01r"] = M_r, M_01
        out["distmod"] = dm
        mag_true = M_r[:, None] + dm[:, None] + k_total  # extinction-free AB magnitudes
        ext = np.array([SDSS_EXTINCTION[b] for b in SDSS_BANDS])[None, :] * ebv_gal[:, None]
        calib = meta[[f"calib_{b}" for b in SDSS_BANDS]].to_numpy(np.float64)
        mag_obs = mag_true + ext + calib  # what the calibrated images hold
        # Sizes: physical half-light radii, then arcsec through the angular-diameter distance.
        d_a = np.interp(z, self.z_grid, self.da_grid)
        for comp, rel in (("bulge", p.bulge_size), ("disk", p.disk_size)):
            log_r = np.log10(rel.R0_kpc) - 0.4 * rel.slope * (M_r - rel.M0) + meta[f"{comp}_size_dev"].to_numpy()
            out[f"{comp}_R_kpc"] = 10.0**log_r
            out[f"{comp}_R_sersic"] = 10.0**log_r / d_a * ARCSEC_PER_RAD  # theta = R / D_A (Hogg 1999, eq. 18)
        out["bulge_n_sersic"], out["disk_n_sersic"] = 4.0, 1.0
        out["D_A_kpc"] = d_a
        flux = 10.0 ** (-0.4 * (mag_obs - self.zero_points[None, :]))  # e-/s
        # Catalogue errors: background + Poisson noise in an effective Gaussian aperture of area 4 pi sigma^2
        # (a Gaussian's noise-equivalent area, King 1983, PASP 95, 163; sigma^2 = PSF^2 + (R_half / 1.1774)^2, a
        # Gaussian's half-light radius being sqrt(2 ln 2) sigma), plus the calibration floor.
        r_half = share_b[:, 2] * out["bulge_R_sersic"].to_numpy() + (1 - share_b[:, 2]) * out["disk_R_sersic"]
        sig2 = self.psf_sigma[None, :] ** 2 + (np.asarray(r_half)[:, None] / 1.1774) ** 2
        area = 4 * np.pi * sig2 / self.track.survey.pixel_scale**2
        sky = area * self.sigma_bkg[None, :] ** 2
        err_meas = MAG_ERR * np.sqrt(flux / self.total_time[None, :] + sky) / flux  # the noise's sd (truth)
        # Catalogue magnitudes: extinction-corrected, with the calibration offset and Gaussian noise (its own stream,
        # fixed by the object's seed), in the SDSS system like the real MGS.
        noise = object_normals((noise_stream(s, 2) for s in meta["seed"]), (len(SDSS_BANDS),), np.float64)
        mag = mag_true + calib + noise * err_meas + np.asarray(p.sdss_minus_ab)[None, :]
        # Quoted errors from the measured flux, as a survey's are: from the true flux they would give it away.
        measured = flux * 10.0 ** (-0.4 * noise * err_meas)
        # photon statistics only, as the real MGS's (data/photoz_sdss_mgs: err_r 0.002 .. 0.011, no calibration floor)
        err = MAG_ERR * np.sqrt(measured / self.total_time[None, :] + sky) / measured
        for i, b in enumerate(SDSS_BANDS):
            out[f"mag_{b}"] = mag[:, i]
            out[f"mag_true_{b}"] = mag_true[:, i]
            out[f"mag_obs_true_{b}"] = mag_obs[:, i]
            out[f"err_{b}"] = err[:, i]
            out[f"err_meas_{b}"] = err_meas[:, i]
            out[f"flux_{b}"] = flux[:, i]
            out[f"bulge_share_{b}"] = share_b[:, i]
        return out

    # ---------------------------------------------------------------- rendering
    def render(self, meta: pd.DataFrame) -> Any:
        """Noise-free (B, bands, n, n) images in e-/s on the backend: bulge + disk Sersic profiles, PSF-convolved."""
        be, r = self.backend, self.renderer
        assert r is not None, "render() needs a track with image inputs"
        B, n = len(meta), r.size
        total = None
        cores: list[tuple[Cores, np.ndarray, np.ndarray]] = []  # the refined profiles' cells, for the PSF
        for comp in ("bulge", "disk"):
            def col(name: str) -> np.ndarray:
                return meta[name].to_numpy(np.float64)[:, None, None]

            R, ns = col(f"{comp}_R_sersic"), col(f"{comp}_n_sersic")
            img, cells = r.image_cores("sersic", R, ns, col(f"{comp}_e1"), col(f"{comp}_e2"), col("center_x"),
                                       col("center_y"))
            unit = sersic_total_flux(1.0, R[:, 0, 0], ns[:, 0, 0])  # total flux of amp = 1
            amps = np.stack([meta[f"flux_{b}"].to_numpy() * (meta[f"bulge_share_{b}"].to_numpy() if comp == "bulge"
                                                                else 1 - meta[f"bulge_share_{b}"].to_numpy())
                             for b in SDSS_BANDS], axis=1) / unit[:, None]
            contrib = img[:, None] * be.asarray(amps[:, :, None, None])
            total = contrib if total is None else total + contrib
            if cells is not None:
                cores.append((cells, amps, np.arange(B)))
        assert total is not None and tuple(total.shape) == (B, len(self.bands), n, n)
        return r.convolve(total, cores)

    # ---------------------------------------------------------------- one chunk
    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """Objects ``start..stop`` of ``split``: their arrays (images and/or features) and metadata.
        ``seeds``: the per-object seeds (an int: a release seed, public derivation)."""
        seeds = as_object_seeds(seeds)
        rows = [{"id": i, **self.sample(seeds(split, i))} for i in range(start, stop)]
        meta = pd.DataFrame(rows)
        meta = pd.concat([meta, self.photometry(meta)], axis=1)
        meta.insert(1, "split", split)
        arrays: dict[str, np.ndarray] = {}
        if self.renderer is not None:
            model = self.render(meta)
            shape = (len(self.bands), self.renderer.size, self.renderer.size)
            normal = object_normals((noise_stream(s, 1) for s in meta["seed"]), shape)
            arrays["images"] = self.backend.to_numpy(self.renderer.add_noise(model, normal)).astype(np.float32)
        if "features" in self.track.inputs:
            missing = [c for c in self.pop.features if c not in meta]
            if missing:
                raise ValueError(f"track {self.track.name!r}: unknown feature columns {missing}")
            arrays["features"] = meta[list(self.pop.features)].to_numpy(np.float32)
        return arrays, meta
