"""Weak-lensing convergence maps: Gaussian random fields with pyccl's C_l, made non-Gaussian by the shifted
lognormal transform (the truth process of the ``generate`` task; CosmoGAN, Mustafa et al. 2019).

Per population (:class:`~skybench.tasks.generate.config.MapPopulation`):

1. the convergence power spectrum C_l of the sources' n(z) from pyccl (``WeakLensingTracer`` + ``angular_cl``,
   Limber; converted from shear to convergence with the exact spin-2 factor), interpolated (log-log) onto the
   |l| of the periodic map's Fourier modes; the map's pixels are point samples of that band-limited field
   (modes beyond the grid's Nyquist frequency are dropped: no aliasing, no pixel window);
2. lognormal: the Gaussian field g gets the power spectrum whose lognormal image
   ``kappa = kappa0 * (exp(g - sigma_g^2 / 2) - 1)`` has the target C_l. The mapping is exact on the periodic
   grid: xi_kappa is the inverse FFT of the grid power, xi_g = ln(1 + xi_kappa / kappa0^2) (Hilbert et al.
   2011, Xavier et al. 2016), and C_g its FFT; the few modes where C_g < 0 (at least l = 0) are set to zero,
   and :attr:`MapSimulator.expected_power` is the exact expected power of what is then drawn;
3. optional shape noise (white, sigma_e / sqrt(n_gal * pixel area)), then optional Gaussian smoothing.

Map k is drawn from its own seed (:func:`skybench.physics.noise.noise_stream`: stream 1 the field, stream 2 the
shape noise) so a map does not depend on the batch. The numpy path (float64) is the reference; on a GPU the
FFTs run in torch (float32) on the same normals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from skybench.physics.backend import Backend, get_backend
from skybench.physics.noise import noise_stream, object_normals
from skybench.tasks.generate.config import Cosmology, GenerateTrack, MapPopulation, SmailNz, SourcePlane
from skybench.testkey import ObjectSeeds, as_object_seeds


def ccl_cosmology(cosmo: Cosmology) -> Any:
    """The pyccl ``Cosmology`` of a config (flat, massless neutrinos)."""
    import pyccl

    return pyccl.Cosmology(Omega_c=cosmo.Omega_c, Omega_b=cosmo.Omega_b, h=cosmo.h, n_s=cosmo.n_s,
                           sigma8=cosmo.sigma8, m_nu=0.0, transfer_function=cosmo.transfer_function,
                           matter_power_spectrum=cosmo.matter_power_spectrum)


_CL_CACHE: dict[str, np.ndarray] = {}


def convergence_cl(cosmo: Cosmology, sources: SmailNz | SourcePlane, ell: np.ndarray) -> np.ndarray:
    """The convergence power spectrum C_l^kappa kappa (Limber) at multipoles ``ell`` (>= 2). Memoised per process:
    the release's worker processes are forked, and pyccl (OpenMP) may hang in a child forked after the parent used
    it; a child then inherits the parent's table."""
    ell = np.asarray(ell, dtype=float)
    key = f"{cosmo.model_dump_json()}|{sources.model_dump_json()}|{ell.tobytes().hex()}"
    if key not in _CL_CACHE:
        _CL_CACHE[key] = _convergence_cl(cosmo, sources, ell)
    return _CL_CACHE[key].copy()


def _convergence_cl(cosmo: Cosmology, sources: SmailNz | SourcePlane, ell: np.ndarray) -> np.ndarray:
    import pyccl

    if np.any(ell < 2):
        raise ValueError(f"convergence_cl: multipoles must be >= 2, got min {ell.min()}")
    c = ccl_cosmology(cosmo)
    if isinstance(sources, SourcePlane):
        # pyccl's "CMB lensing" tracer is the convergence of a single source plane.
        t = pyccl.CMBLensingTracer(c, z_source=sources.z_s)
        return np.asarray(pyccl.angular_cl(c, t, t, ell))
    t = pyccl.WeakLensingTracer(c, dndz=sources.table())
    cl_shear = np.asarray(pyccl.angular_cl(c, t, t, ell))
    # kappa_lm = -l(l+1)/2 phi_lm, gamma_E,lm = -sqrt((l+2)!/(l-2)!)/2 phi_lm (Hu 2000, PRD 62, 043007)
    return cl_shear * (ell * (ell + 1)) ** 2 / ((ell + 2) * (ell + 1) * ell * (ell - 1))


def ell_grid(n_pix: int, pixel_rad: float) -> np.ndarray:
    """|l| of the modes of ``numpy.fft.rfft2`` on an ``n_pix`` x ``n_pix`` map, shape (n_pix, n_pix // 2 + 1)."""
    ky = 2 * np.pi * np.fft.fftfreq(n_pix, d=pixel_rad)
    kx = 2 * np.pi * np.fft.rfftfreq(n_pix, d=pixel_rad)
    return np.hypot(ky[:, None], kx[None, :])


def grid_correlation(power: np.ndarray, n_pix: int, pixel_rad: float) -> np.ndarray:
    """The pixel-pixel correlation function xi(x) of a field with grid power ``power`` (C_l units)."""
    # Continuous FT ~ pixel_area * sum (numpy's unnormalised rfft2), <|kappa_l|^2> = area C_l:
    # xi(x) = (1/area) sum_l C_l e^{ilx} = irfft2(C) / pixel_area.
    return np.fft.irfft2(power, s=(n_pix, n_pix)) / pixel_rad**2


def grid_power(xi: np.ndarray, pixel_rad: float) -> np.ndarray:
    """The inverse of :func:`grid_correlation`: C on the rfft2 grid of a correlation function on the pixels."""
    return np.fft.rfft2(xi).real * pixel_rad**2


def lognormal_gaussian_power(power: np.ndarray, kappa0: float, n_pix: int, pixel_rad: float
                             ) -> tuple[np.ndarray, float]:
    """The Gaussian field's grid power whose shifted lognormal image has grid power ``power``, and the fraction
    of |C_g| that had to be clipped (C_g < 0 is no power spectrum)."""
    xi_k = grid_correlation(power, n_pix, pixel_rad)
    if xi_k.min() <= -(kappa0**2):
        raise ValueError(f"lognormal shift kappa0={kappa0:.4g} is too small for this field: the correlation "
                         f"function reaches {xi_k.min():.3g} <= -kappa0^2; use a larger lognormal_shift")
    # xi_g = ln(1 + xi_kappa / kappa0^2) (Xavier et al. 2016, MNRAS 459, 3693, eq. 14)
    c_g = grid_power(np.log1p(xi_k / kappa0**2), pixel_rad)
    clipped = float(np.abs(np.minimum(c_g, 0)).sum() / np.abs(c_g).sum())
    return np.maximum(c_g, 0.0), clipped


class MapSimulator:
    """Convergence maps of one population; ``simulate(seeds)`` returns ``(len(seeds), 1, n_pix, n_pix)`` float32."""

    def __init__(self, pop: MapPopulation, backend: Backend | str = "auto"):
        self.pop = pop
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        n, d = pop.n_pix, pop.pixel_rad
        self.ell = ell_grid(n, d)
        l_min, l_max = 2 * np.pi / np.deg2rad(pop.size_deg), self.ell.max()
        self.ell_table = np.geomspace(max(l_min / 2, 2.0), l_max * 1.01, pop.n_ell)
        self.cl_table = convergence_cl(pop.cosmology, pop.sources, self.ell_table)
        # C_l on the grid, log-log interpolation; l = 0 (the map mean) gets no power
        power = np.zeros_like(self.ell)
        nz = self.ell > 0
        power[nz] = np.exp(np.interp(np.log(self.ell[nz]), np.log(self.ell_table), np.log(self.cl_table)))
        self.target_power = power  # the convergence signal's C_l on the rfft2 grid
        self.kappa0 = pop.kappa0()
        if self.kappa0 is None:
            self.gaussian_power, self.clipped_fraction = power, 0.0
            self.sigma_g2 = float(grid_correlation(power, n, d)[0, 0])
            signal = power
        else:
            self.gaussian_power, self.clipped_fraction = lognormal_gaussian_power(power, self.kappa0, n, d)
            xi_g = grid_correlation(self.gaussian_power, n, d)
            self.sigma_g2 = float(xi_g[0, 0])
            # the exact expected power of the lognormal field drawn from the clipped C_g
            signal = grid_power(self.kappa0**2 * np.expm1(xi_g), d)
        self.noise_sigma = pop.noise_sigma()
        # white noise: C_N = sigma_pix^2 * pixel area (= sigma_e^2 / n_gal, Kaiser 1992, ApJ 388, 272)
        noise_power = 0.0 if self.noise_sigma is None else self.noise_sigma**2 * d**2
        self.window = np.ones_like(self.ell)
        if pop.smoothing_fwhm_arcmin is not None:
            s = np.deg2rad(pop.smoothing_fwhm_arcmin / 60.0) / np.sqrt(8 * np.log(2))  # FWHM = sqrt(8 ln 2) sigma
            self.window = np.exp(-0.5 * (self.ell * s) ** 2)
        # what simulate() returns has, in expectation, this grid power
        self.expected_power = (signal + noise_power) * self.window**2
        self._amplitude = np.sqrt(self.gaussian_power) / d  # rfft2(white) * this = rfft2 of the field

    def normals(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The per-map standard normals (float64): the field's and the shape noise's (or None)."""
        n = self.pop.n_pix
        field = object_normals((noise_stream(int(s), 1) for s in seeds), (n, n), dtype=np.float64)
        noise = None
        if self.noise_sigma is not None:
            noise = object_normals((noise_stream(int(s), 2) for s in seeds), (n, n), dtype=np.float64)
        return field, noise

    def simulate(self, seeds: Sequence[int]) -> np.ndarray:
        field, noise = self.normals(seeds)
        if self.backend.name == "numpy":
            out = self._maps_numpy(field, noise)
        else:
            out = self._maps_torch(field, noise)
        return out.astype(np.float32)[:, None]

    def _maps_numpy(self, field: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        s = (self.pop.n_pix,) * 2
        g = np.fft.irfft2(np.fft.rfft2(field) * self._amplitude, s=s)
        kappa = g if self.kappa0 is None else self.kappa0 * np.expm1(g - self.sigma_g2 / 2)
        if noise is not None and self.noise_sigma is not None:
            kappa = kappa + self.noise_sigma * noise
        if self.pop.smoothing_fwhm_arcmin is not None:
            kappa = np.fft.irfft2(np.fft.rfft2(kappa) * self.window, s=s)
        return kappa

    def _maps_torch(self, field: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        import torch

        dev, dt = self.backend.device, self.backend.dtype
        s = (self.pop.n_pix,) * 2
        amp = torch.as_tensor(self._amplitude, dtype=dt, device=dev)
        g = torch.fft.irfft2(torch.fft.rfft2(torch.as_tensor(field, dtype=dt, device=dev)) * amp, s=s)
        kappa = g if self.kappa0 is None else self.kappa0 * torch.expm1(g - self.sigma_g2 / 2)
        if noise is not None and self.noise_sigma is not None:
            kappa = kappa + self.noise_sigma * torch.as_tensor(noise, dtype=dt, device=dev)
        if self.pop.smoothing_fwhm_arcmin is not None:
            w = torch.as_tensor(self.window, dtype=dt, device=dev)
            kappa = torch.fft.irfft2(torch.fft.rfft2(kappa) * w, s=s)
        return kappa.cpu().numpy()

    def pixel_cdf(self, x: np.ndarray) -> np.ndarray:
        """The one-point CDF of the noise-free, unsmoothed maps: shifted lognormal or Gaussian."""
        from scipy.stats import norm

        sg = np.sqrt(self.sigma_g2)
        x = np.asarray(x, dtype=float)
        if self.kappa0 is None:
            return norm.cdf(x / sg)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = (np.log1p(x / self.kappa0) + self.sigma_g2 / 2) / sg
        return np.where(x <= -self.kappa0, 0.0, norm.cdf(np.nan_to_num(u, nan=-np.inf)))


def latent_rng(seed: int) -> np.random.Generator:
    """The generator of an object's latent vector, seeded by a one-way hash of the object's seed: latents are
    published raw generator output, and a generator state recovered from them (PCG64's can be, at great cost)
    must not give back the seed of the object's hidden map."""
    digest = hashlib.blake2b(int(seed).to_bytes(16, "little", signed=True), digest_size=32,
                             person=b"skybench-latent").digest()
    return np.random.default_rng(np.frombuffer(digest, np.uint32))


class GenerateSimulator:
    """The release-facing simulator of a generate track: per object, a truth map ``maps`` (1, H, W) and a latent
    vector ``latents`` (dim,). On the test split the maps are hidden and the latents are the generator's inputs;
    the latents are drawn from a generator of their own (:func:`latent_rng`), so they say nothing about the hidden
    maps.

    A conditional track (``population.grid``) also has ``params`` (2,): (Omega_m, sigma8) of the object's grid
    point ``id % n_points`` (public on every split: an input), and metadata columns ``grid_point``, ``cosmology``
    (the point's label), ``Omega_m``, ``sigma8``; each point's maps come from its own :class:`MapSimulator`, with
    the same per-object seeds and streams."""

    hidden_arrays = ("maps",)
    label_columns: list[str] = []  # nothing per object to predict: the score compares distributions

    def __init__(self, track: GenerateTrack, backend: Backend | str = "auto"):
        self.track = track
        pop = track.population
        self.sims = [MapSimulator(pop.at_point(k), backend) for k in range(pop.n_points)]
        self.sim = self.sims[0]

    @classmethod
    def arrays(cls, track: GenerateTrack) -> dict[str, tuple[int, ...]]:
        n = track.population.n_pix
        out: dict[str, tuple[int, ...]] = {"latents": (track.population.latent.dim,)}
        if track.population.grid is not None:
            out["params"] = (2,)
        return out | {"maps": (1, n, n)}

    @classmethod
    def release_info(cls, track: GenerateTrack) -> dict[str, Any]:
        pop = track.population
        # built here, in the parent, before the worker processes are forked: they inherit its pyccl C_l (every
        # grid point's)
        sims = [MapSimulator(pop.at_point(k), "numpy") for k in range(pop.n_points)]
        sim = sims[0]
        info: dict[str, Any] = {"n_pix": pop.n_pix, "size_deg": pop.size_deg, "kappa0": sim.kappa0,
                "sigma_g2": sim.sigma_g2, "clipped_fraction": sim.clipped_fraction,
                "latent": pop.latent.model_dump(), "units": "convergence (dimensionless)"}
        if pop.grid is not None:
            info = {k: v for k, v in info.items() if k not in ("kappa0", "sigma_g2", "clipped_fraction")}
            info["grid"] = [{"point": k, "label": label, "Omega_m": om, "sigma8": s8, "kappa0": s.kappa0,
                             "sigma_g2": s.sigma_g2,
                             "clipped_fraction": s.clipped_fraction}
                            for k, ((om, s8), label, s) in enumerate(zip(pop.grid.points(), pop.grid.labels(), sims,
                                                                         strict=True))]
            info["params"] = ["Omega_m", "sigma8"]
        return {"maps": info}

    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        seeds = as_object_seeds(seeds)
        s = [int(seeds(split, i)) for i in range(start, stop)]
        pop = self.track.population
        ids = np.arange(start, stop)
        if pop.grid is None:
            maps = self.sim.simulate(s)
        else:
            point = pop.point_of(ids)
            maps = np.empty((len(s), 1, pop.n_pix, pop.n_pix), np.float32)
            for k in np.unique(point):
                rows = np.flatnonzero(point == k)
                maps[rows] = self.sims[k].simulate([s[r] for r in rows])
        latent = pop.latent
        lat = np.stack([latent.draw(1, latent_rng(x))[0] for x in s]) if s else \
            np.zeros((0, latent.dim), np.float32)
        meta = pd.DataFrame({"id": ids, "split": split, "seed": s,
                             "kappa_std": maps.reshape(len(s), -1).std(axis=1).astype(np.float64)})
        arrays = {"maps": maps, "latents": lat}
        if pop.grid is not None:
            grid = np.array(pop.grid.points(), dtype=np.float64)
            labels = np.array(pop.grid.labels())
            meta["grid_point"] = point
            meta["cosmology"] = labels[point] if len(s) else np.array([], dtype=str)
            meta["Omega_m"], meta["sigma8"] = grid[point, 0], grid[point, 1]
            arrays["params"] = grid[point].astype(np.float32).reshape(len(s), 2)
        return arrays, meta
