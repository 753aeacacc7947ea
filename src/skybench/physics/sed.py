"""Galaxy SEDs and synthetic AB photometry: Coleman-Wu-Weedman templates (GalSim's ``share/SEDs``) and the Blanton &
Roweis 2007 templates (the ``kcorrect`` package's ``kcorrect-default-v4.fits``), redshifted and integrated through the
SDSS filter curves of speclite (``sdss2010-*``).

All spectra are f_lambda [erg/s/cm^2/A] on wavelengths in Angstrom. ``Photometry`` integrates many spectra at once
on one fine observed-frame grid (trapezoid rule, photon-counting weights, as speclite does), so a batch of
galaxies costs a few matrix products."""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np

C_ANGSTROM = 2.99792458e18  # speed of light [A/s]
AB_FNU = 3631e-23  # AB zero point [erg/s/cm^2/Hz] (Oke & Gunn 1983)
CWW_TEMPLATES = ("E", "Sbc", "Scd", "Im")
# The CWW templates plus two repaired ones, in the spirit of Budavari et al. 2000 (AJ 120, 1588), who repaired CWW
# templates against multicolour photometry: E_uvfix, the E template dimmed by UV_FIX_MAG below UV_FIX_RAMP[0] A
# (rest frame), linearly in magnitude up to UV_FIX_RAMP[1] (the CWW E near UV, which the u band sees at z < 0.3, is
# bluer than SDSS red-sequence galaxies: u-g 1.73 against ~1.9 at z = 0.1); Sbc_irfix, the Sbc template dimmed by
# IR_FIX_MAG above IR_FIX_RAMP[1] A, ramping from IR_FIX_RAMP[0] (the CWW Sbc, extended beyond ~8000 A by
# Bolzonella et al. 2000, has i-z 0.31 at z = 0.1, redder than the E template and than SDSS blue-cloud galaxies,
# ~0.22). Mixture weights of a template and its repaired version are fitted to the MGS train split
# (skybench.tasks.photoz.calibrate).
# "lines": the nebular emission lines the CWW templates lack (star-forming galaxies), H-alpha flux 1; mixed into
# disks with an H-alpha equivalent width (skybench.tasks.photoz.simulator).
# The five Blanton & Roweis 2007 (AJ 133, 734) kcorrect v4 templates: non-negative combinations of Bruzual & Charlot
# 2003 population synthesis spectra with dust and MAPPINGS-III emission lines, fitted to SDSS+GALEX+2MASS galaxies,
# so that non-negative mixtures of them span real SDSS galaxy colours. Their file's METS (metallicity) and M300, M1000
# (mass shares formed in the last 0.3, 1 Gyr): BR07_0 the reddest (Z 0.05, M1000 0.66), BR07_1 a burst (M300 1, strong
# lines), BR07_2 young (Z 0.023, M1000 0.46), BR07_3 old (Z 0.021, M1000 0), BR07_4 young, metal poor (Z 0.006).
BR07_TEMPLATES = tuple(f"BR07_{k}" for k in range(5))
# BR07_3_uvfix: the old template BR07_3 with the same UV repair as E_uvfix (its near UV sets the red sequence's u-g,
# whose spread in the MGS, ~0.5 mag, the BR07 mixtures alone do not reach at the red sequence's g-r).
TEMPLATES = (*CWW_TEMPLATES, "E_uvfix", "Sbc_irfix", "lines", *BR07_TEMPLATES, "BR07_3_uvfix")
UV_FIX_MAG = 1.5
UV_FIX_RAMP = (3500.0, 3900.0)
IR_FIX_MAG = 1.0
IR_FIX_RAMP = (7500.0, 8500.0)
# Line fluxes relative to H-alpha of a typical star-forming SDSS galaxy: H-beta 1/2.86 (case B, Osterbrock &
# Ferland 2006), [NII]6584/H-alpha 0.35 and [OIII]5007/H-beta 0.6 (the star-forming BPT locus, Kauffmann et al.
# 2003, MNRAS 346, 1055), [NII]6548 = [NII]6584/3 and [OIII]4959 = [OIII]5007/3 (atomic ratios), [OII]3727/H-alpha
# 0.7 (Kennicutt 1998, ARA&A 36, 189: SFR([OII]) vs SFR(H-alpha)); Gaussian, sigma 3 A.
EMISSION_LINES = {3727.4: 0.7, 4861.3: 1 / 2.86, 4958.9: 0.6 / 2.86 / 3, 5006.8: 0.6 / 2.86, 6548.1: 0.35 / 3,
                  6562.8: 1.0, 6583.5: 0.35}
SDSS_BANDS = ("u", "g", "r", "i", "z")
# Galactic extinction A_b / E(B-V) for the SDSS bands, R_V = 3.1 (Schlafly & Finkbeiner 2011, ApJ 737, 103, Table 6).
SDSS_EXTINCTION = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}


def galsim_sed_dir() -> str:
    import galsim

    return os.path.join(os.path.dirname(galsim.__file__), "share", "SEDs")


def kcorrect_template_file() -> str:
    """The kcorrect package's default template file (found without importing the package, whose import pulls in
    matplotlib)."""
    spec = importlib.util.find_spec("kcorrect")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the Blanton & Roweis 2007 templates come with the kcorrect package: "
                                  "pip install 'kcorrect>=5.1' (skybench's [sim] extra)")
    return os.path.join(os.path.dirname(spec.origin), "data", "templates", "kcorrect-default-v4.fits")


@functools.cache
def _br07() -> tuple[np.ndarray, np.ndarray]:
    from astropy.io import fits

    with fits.open(kcorrect_template_file()) as hdul:
        table = hdul["FLUX"].data  # one row: wave (nwave,), flux (5, nwave) [erg/s/cm^2/A at 10 pc per M_sun]
        return np.asarray(table["wave"][0], np.float64), np.asarray(table["flux"][0], np.float64)


@functools.cache
def load_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength [A], f_lambda) of a template of ``TEMPLATES``: a CWW one (``E``, ``Sbc``, ``Scd``, ``Im``) from
    GalSim's ``*_ext.sed`` (columns "Angstroms, Flux/A"; extended to the UV and IR by Bolzonella et al. 2000), or
    ``E_uvfix`` (E, near UV dimmed by ``UV_FIX_MAG``), ``Sbc_irfix`` (Sbc, near IR dimmed by ``IR_FIX_MAG``) or
    ``lines`` (the emission lines ``EMISSION_LINES``, H-alpha flux 1), or a Blanton & Roweis 2007 one (``BR07_0`` ..
    ``BR07_4``, read from the kcorrect package's data; ``BR07_3_uvfix``: BR07_3 UV-repaired as ``E_uvfix``)."""
    if name in BR07_TEMPLATES:
        wave, flux = _br07()
        return wave, flux[BR07_TEMPLATES.index(name)]
    if name in ("E_uvfix", "BR07_3_uvfix"):
        wave, flux = load_template(name.removesuffix("_uvfix"))
        dim = UV_FIX_MAG * np.clip((UV_FIX_RAMP[1] - wave) / (UV_FIX_RAMP[1] - UV_FIX_RAMP[0]), 0.0, 1.0)
        return wave, flux * 10.0 ** (-0.4 * dim)
    if name == "lines":
        wave = np.arange(900.0, 30000.0, 0.5)
        flux = np.full_like(wave, 1e-9)  # a floor: the magnitude table interpolates log maggies
        for centre, ratio in EMISSION_LINES.items():
            flux += ratio * np.exp(-0.5 * ((wave - centre) / 3.0) ** 2) / (3.0 * np.sqrt(2 * np.pi))
        return wave, flux
    if name == "Sbc_irfix":
        wave, flux = load_template("Sbc")
        dim = IR_FIX_MAG * np.clip((wave - IR_FIX_RAMP[0]) / (IR_FIX_RAMP[1] - IR_FIX_RAMP[0]), 0.0, 1.0)
        return wave, flux * 10.0 ** (-0.4 * dim)
    path = os.path.join(galsim_sed_dir(), f"CWW_{name}_ext.sed")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no CWW template {name!r} at {path}; known: {', '.join(TEMPLATES)}")
    data = np.loadtxt(path)
    wave, flux = data[:, 0], data[:, 1]
    keep = np.concatenate([[True], np.diff(wave) > 0])  # strictly increasing for interpolation
    return wave[keep], flux[keep]


def calzetti_k(wave_rest: np.ndarray) -> np.ndarray:
    """Calzetti et al. 2000 (ApJ 533, 682, eq. 4) starburst attenuation curve k(lambda), R_V = 4.05, wave in A;
    extended linearly in 1/lambda beyond its 0.12-2.2 micron range."""
    lam = np.clip(np.asarray(wave_rest, dtype=np.float64) / 1e4, 0.09, 3.0)  # micron
    x = 1.0 / lam
    short = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + 4.05
    long = 2.659 * (-1.857 + 1.040 * x) + 4.05
    return np.maximum(np.where(lam < 0.63, short, long), 0.0)


@functools.cache
def sdss_filters() -> Any:
    import speclite.filters

    return speclite.filters.load_filters(*(f"sdss2010-{b}" for b in SDSS_BANDS))


class Photometry:
    """AB magnitudes of redshifted template mixtures through the SDSS filters.

    ``wave``: a fine observed-frame grid (``step`` A) covering every filter; ``weights[b]``: the trapezoid
    weights of R_b(lambda) lambda / (h c) on it, divided by the AB normalisation, so that
    ``maggies = spectra @ weights.T`` for spectra sampled on ``wave``."""

    def __init__(self, step: float = 1.0):
        filters = sdss_filters()
        lo = min(f.wavelength[0] for f in filters)
        hi = max(f.wavelength[-1] for f in filters)
        self.wave = np.arange(np.floor(lo), np.ceil(hi) + step, step)
        trap = np.gradient(self.wave) * 0.0 + step
        trap[0] = trap[-1] = step / 2  # trapezoid rule on a uniform grid
        weights = []
        for f in filters:
            resp = np.interp(self.wave, f.wavelength, f.response, left=0.0, right=0.0)
            w = resp * self.wave * trap  # photon-counting: integrand f_lambda R lambda (speclite convolution)
            ab = np.sum(w * AB_FNU * C_ANGSTROM / self.wave**2)  # same integral of the AB source
            weights.append(w / ab)
        self.weights = np.stack(weights)  # (bands, wave)
        self.templates = {t: load_template(t) for t in TEMPLATES}

    def rest_templates(self, z: np.ndarray) -> np.ndarray:
        """(B, templates, wave) rest-frame f_lambda at lambda_obs / (1 + z), already divided by (1 + z)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        rest = self.wave[None, :] / (1.0 + z[:, None])
        out = np.stack([np.interp(rest, *self.templates[t]) for t in TEMPLATES], axis=1)
        # f_lambda,obs(lambda) = f_lambda,rest(lambda / (1+z)) / (1+z) for a source at fixed luminosity distance
        return out / (1.0 + z[:, None, None])

    def maggies(self, z: np.ndarray, template_weights: np.ndarray, ebv_internal: np.ndarray | None = None,
                ebv_galactic: np.ndarray | None = None) -> np.ndarray:
        """(B, bands) AB maggies of ``sum_t w_t T_t`` redshifted to ``z``, attenuated in the rest frame by a Calzetti
        law with E(B-V)_int = ``ebv_internal`` and in the observed frame by Galactic E(B-V) = ``ebv_galactic``
        (per-band coefficients ``SDSS_EXTINCTION``, applied after the integration)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        w = np.asarray(template_weights, dtype=np.float64).reshape(len(z), len(TEMPLATES))
        spec = np.einsum("bt,btl->bl", w, self.rest_templates(z))
        if ebv_internal is not None:
            k = calzetti_k(self.wave[None, :] / (1.0 + z[:, None]))
            spec = spec * 10.0 ** (-0.4 * k * np.asarray(ebv_internal, dtype=np.float64).reshape(-1, 1))
        maggies = spec @ self.weights.T
        if ebv_galactic is not None:
            r = np.array([SDSS_EXTINCTION[b] for b in SDSS_BANDS])
            maggies = maggies * 10.0 ** (-0.4 * r[None, :] * np.asarray(ebv_galactic, float).reshape(-1, 1))
        return maggies

    def magnitudes(self, z: np.ndarray, template_weights: np.ndarray, ebv_internal: np.ndarray | None = None,
                   ebv_galactic: np.ndarray | None = None) -> np.ndarray:
        """(B, bands) AB magnitudes, m = -2.5 log10(maggies)."""
        return -2.5 * np.log10(self.maggies(z, template_weights, ebv_internal, ebv_galactic))


def one_hot(template: str) -> np.ndarray:
    """Mixture weights selecting one template of ``TEMPLATES``."""
    return np.array([1.0 if t == template else 0.0 for t in TEMPLATES])


class MagnitudeTable:
    """Maggies of every template (``TEMPLATES``) on a (z, internal E(B-V)) grid, interpolated bilinearly in log-maggies.

    Mixtures are exact (maggies are linear in the template weights, and the rest-frame attenuation multiplies each
    template); the interpolation error is < 1e-3 mag on the default grid (tests/test_photoz_sed.py). Building
    it costs one :meth:`Photometry.maggies` call per grid point and template; a lookup costs microseconds."""

    def __init__(self, phot: Photometry | None = None, z_max: float = 0.45, dz: float = 0.0025,
                 ebv_max: float = 0.3, debv: float = 0.05):
        phot = phot or Photometry()
        self.z = np.arange(0.0, z_max + dz / 2, dz)
        self.ebv = np.arange(0.0, ebv_max + debv / 2, debv)
        table = np.empty((len(TEMPLATES), len(self.z), len(self.ebv), len(SDSS_BANDS)))
        for i, z in enumerate(self.z):  # the same steps as Photometry.maggies, one redshift at a time
            spec = phot.rest_templates(np.array([z]))[0]  # (templates, wave)
            k = calzetti_k(phot.wave / (1.0 + z))
            att = 10.0 ** (-0.4 * k[None, :] * self.ebv[:, None])  # (ebv, wave)
            table[:, i] = np.einsum("tl,el,bl->teb", spec, att, phot.weights)
        self.log_maggies = np.log(table)  # (templates, z, ebv, bands)

    def maggies(self, z: np.ndarray, template_weights: np.ndarray, ebv_internal: np.ndarray) -> np.ndarray:
        """(B, bands) maggies, as :meth:`Photometry.maggies` without Galactic extinction."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        e = np.asarray(ebv_internal, dtype=np.float64).reshape(-1)
        if np.any((z < self.z[0]) | (z > self.z[-1])) or np.any((e < self.ebv[0]) | (e > self.ebv[-1])):
            raise ValueError(f"z or E(B-V) outside the table ({self.z[-1]:.3f}, {self.ebv[-1]:.3f})")
        fz = np.clip((z - self.z[0]) / (self.z[1] - self.z[0]), 0, len(self.z) - 1 - 1e-9)
        fe = np.clip((e - self.ebv[0]) / (self.ebv[1] - self.ebv[0]), 0, len(self.ebv) - 1 - 1e-9)
        iz, ie = fz.astype(int), fe.astype(int)
        tz, te = (fz - iz)[None, :, None], (fe - ie)[None, :, None]
        lm = self.log_maggies
        val = ((1 - tz) * (1 - te) * lm[:, iz, ie] + tz * (1 - te) * lm[:, iz + 1, ie]
               + (1 - tz) * te * lm[:, iz, ie + 1] + tz * te * lm[:, iz + 1, ie + 1])  # (templates, B, bands)
        w = np.asarray(template_weights, dtype=np.float64).reshape(len(z), len(TEMPLATES))
        return np.einsum("bt,tbk->bk", w, np.exp(val))

    def magnitudes(self, z: np.ndarray, template_weights: np.ndarray, ebv_internal: np.ndarray) -> np.ndarray:
        return -2.5 * np.log10(self.maggies(z, template_weights, ebv_internal))
