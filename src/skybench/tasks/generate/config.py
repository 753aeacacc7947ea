"""The typed configuration of a weak-lensing map population (the ``generate`` task, CosmoGAN, Mustafa et al.
2019): the cosmology, the source redshift distribution, the map geometry, the non-Gaussian (shifted lognormal)
transform, optional shape noise and smoothing, the latent vectors a generator receives and, for a conditional
track, the grid of (Omega_m, sigma8) values (:class:`ParamGrid`) whose parameters it receives too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from skybench.common import Strict as _Strict
from skybench.tracks import Track


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


class Cosmology(_Strict):
    """Flat LCDM, massless neutrinos. ``Omega_m`` is the total matter density (cold dark matter + baryons);
    the conditional track varies ``Omega_m`` and ``sigma8`` (:meth:`with_params`)."""

    Omega_m: float = Field(0.3, gt=0, lt=1)
    Omega_b: float = Field(0.05, gt=0, lt=1)
    h: float = Field(0.7, gt=0.2, lt=1.5)
    n_s: float = Field(0.96, gt=0.5, lt=1.5)
    sigma8: float = Field(0.8, gt=0, lt=3)
    transfer_function: Literal["eisenstein_hu", "bbks", "boltzmann_camb", "boltzmann_class"] = "eisenstein_hu"
    matter_power_spectrum: Literal["halofit", "linear"] = "halofit"

    @property
    def Omega_c(self) -> float:
        return self.Omega_m - self.Omega_b

    @model_validator(mode="after")
    def _check(self) -> Cosmology:
        if self.Omega_b >= self.Omega_m:
            raise ValueError(f"cosmology: Omega_b={self.Omega_b} must be below Omega_m={self.Omega_m} "
                             "(Omega_m counts cold dark matter and baryons)")
        return self

    def with_params(self, Omega_m: float, sigma8: float) -> Cosmology:
        """The same cosmology at another ``(Omega_m, sigma8)``, validated again."""
        return Cosmology.model_validate({**self.model_dump(), "Omega_m": Omega_m, "sigma8": sigma8})


class SmailNz(_Strict):
    """n(z) proportional to z^alpha exp(-(z/z0)^beta) (Smail et al. 1994), tabulated on ``n_z`` points in
    ``[0, z_max]``."""

    kind: Literal["smail"]
    z0: float = Field(gt=0)
    alpha: float = Field(2.0, ge=0)
    beta: float = Field(1.5, gt=0)
    z_max: float = Field(4.0, gt=0)
    n_z: int = Field(512, ge=16)

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.linspace(0.0, self.z_max, self.n_z)
        nz = z**self.alpha * np.exp(-((z / self.z0) ** self.beta))
        return z, nz / _trapezoid(nz, z)

    def average(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """The mean of ``f(z)`` over the sources."""
        z, nz = self.table()
        return float(_trapezoid(f(z) * nz, z))


class SourcePlane(_Strict):
    """All sources at one redshift."""

    kind: Literal["plane"]
    z_s: float = Field(gt=0, le=10)

    def average(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """The mean of ``f(z)`` over the sources: ``f(z_s)``."""
        return float(f(np.asarray(self.z_s)))


Sources = Annotated[SmailNz | SourcePlane, Field(discriminator="kind")]


class Latent(_Strict):
    """The latent vectors a generator receives: shape ``(N, dim)``, float32, drawn by the evaluator."""

    dim: int = Field(64, ge=1, le=4096)
    distribution: Literal["normal", "uniform"] = "normal"  # N(0, 1) or U(-1, 1) per component

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.distribution == "normal":
            return rng.standard_normal((n, self.dim), dtype=np.float32)
        return rng.uniform(-1.0, 1.0, (n, self.dim)).astype(np.float32)


def kappa0_hilbert2011(z_s: np.ndarray) -> np.ndarray:
    """The lognormal shift (minus the minimum convergence) for sources at ``z_s``."""
    # Hilbert, Hartlap & Schneider 2011, A&A 536, A85, eq. (38): fit to the Millennium Simulation.
    return 0.008 * z_s + 0.029 * z_s**2 - 0.0079 * z_s**3 + 0.00065 * z_s**4


def empty_beam_kappa(Omega_m: float, h: float, z_s: np.ndarray, n_chi: int = 256) -> np.ndarray:
    """|kappa_min|, the convergence of an empty beam to sources at ``z_s`` in flat LCDM (no radiation):
    (3 H0^2 Omega_m / 2 c^2) int_0^chi_s chi (chi_s - chi) / chi_s (1 + z) dchi (REFERENCES.md, "Lognormal
    convergence": its upper bound on the shift; Hilbert et al. 2011, Sec. 4). Proportional to Omega_m at fixed
    distances."""
    zs = np.atleast_1d(np.asarray(z_s, dtype=np.float64))
    hubble = 2997.92458 / h  # c / H0 [Mpc]
    out = np.zeros_like(zs)
    for i, z_top in enumerate(zs):
        if z_top <= 0:
            continue
        z = np.linspace(0.0, z_top, n_chi)
        inv_e = 1.0 / np.sqrt(Omega_m * (1 + z) ** 3 + 1.0 - Omega_m)
        chi = hubble * np.concatenate([[0.0], np.cumsum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(z))])
        integrand = chi * (chi[-1] - chi) / chi[-1] * (1 + z)
        out[i] = 1.5 * Omega_m / hubble**2 * _trapezoid(integrand, chi)
    return out.reshape(np.shape(z_s))


def point_label(Omega_m: float, sigma8: float) -> str:
    """The name of a grid point in metric names (``by_cosmology_<label>_<metric>``), e.g. ``Om0.3_s8_0.8``."""
    return f"Om{Omega_m:g}_s8_{sigma8:g}"


class ParamGrid(_Strict):
    """The cosmologies of a conditional track: every (Omega_m, sigma8) pair of the two lists (Omega_m the outer
    loop). Object ``id`` of every split is at point ``id % n_points``: balanced and known from the id alone."""

    Omega_m: list[float] = Field(min_length=1)
    sigma8: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ParamGrid:
        for name, values in (("Omega_m", self.Omega_m), ("sigma8", self.sigma8)):
            if len(set(values)) != len(values):
                raise ValueError(f"population.grid.{name}: values must be distinct, got {values}")
        labels = [point_label(*p) for p in self.points()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"population.grid: points {labels} print alike (6 significant digits); use values "
                             "that differ there")
        return self

    def points(self) -> list[tuple[float, float]]:
        """(Omega_m, sigma8) of every grid point, in point order."""
        return [(om, s8) for om in self.Omega_m for s8 in self.sigma8]

    def labels(self) -> list[str]:
        return [point_label(*p) for p in self.points()]


class MapPopulation(_Strict):
    """A population of convergence maps: ``n_pix`` x ``n_pix`` pixels covering ``size_deg`` x ``size_deg``
    (periodic, flat sky)."""

    cosmology: Cosmology = Cosmology()
    sources: Sources
    n_pix: int = Field(128, ge=8, le=4096)
    size_deg: float = Field(3.5, gt=0, le=20)
    # None: Gaussian random field (no lognormal transform); "hilbert2011": kappa0_hilbert2011 averaged over the
    # sources' n(z) (the fit is for one source plane); a number: that shift.
    lognormal_shift: float | Literal["hilbert2011"] | None = "hilbert2011"
    sigma_e: float | None = Field(None, gt=0, description="shape noise per ellipticity component")
    n_gal: float | None = Field(None, gt=0, description="source galaxies per arcmin^2")
    smoothing_fwhm_arcmin: float | None = Field(None, gt=0, description="Gaussian smoothing after the noise")
    n_ell: int = Field(256, ge=16, description="log-spaced multipoles at which pyccl computes C_l")
    latent: Latent = Latent()
    # a conditional track: maps at every point of this grid (each valid with ``cosmology``'s other parameters)
    grid: ParamGrid | None = None

    @model_validator(mode="after")
    def _check(self) -> MapPopulation:
        if self.n_pix % 2:
            raise ValueError(f"n_pix={self.n_pix} must be even (the FFT's Nyquist mode)")
        if (self.sigma_e is None) != (self.n_gal is None):
            raise ValueError("shape noise needs both sigma_e and n_gal (or neither)")
        if isinstance(self.lognormal_shift, float) and self.lognormal_shift <= 0:
            raise ValueError(f"lognormal_shift={self.lognormal_shift} must be positive")
        if self.grid is not None:
            for om, s8 in self.grid.points():
                try:
                    self.cosmology.with_params(om, s8)
                except ValueError as exc:
                    raise ValueError(f"population.grid: the point Omega_m={om}, sigma8={s8} is no valid cosmology "
                                     f"with the other parameters of population.cosmology: {exc}") from exc
        return self

    @property
    def n_points(self) -> int:
        """Grid points (1 without a grid: the one cosmology)."""
        return 1 if self.grid is None else len(self.grid.points())

    def point_of(self, ids: np.ndarray) -> np.ndarray:
        """The grid point of each object id (``id % n_points``; 0 without a grid)."""
        return np.asarray(ids, dtype=np.int64) % self.n_points

    def at_point(self, k: int) -> MapPopulation:
        """The single-cosmology population of grid point ``k`` (no grid)."""
        if self.grid is None:
            return self
        om, s8 = self.grid.points()[k]
        cosmo = self.cosmology.with_params(om, s8)
        shift = self.lognormal_shift
        if shift == "hilbert2011":
            # The fit is for one cosmology, but the minimum convergence (empty beam) is proportional to Omega_m
            # (REFERENCES.md, "Lognormal convergence"); a shift fixed over the grid makes the maps' skewness grow
            # with Omega_m instead of staying about constant at fixed sigma8 (S3 ~ Omega_m^-0.8, Bernardeau, van
            # Waerbeke & Mellier 1997, A&A 322, 1). Scale it from the population's cosmology by the empty beam.
            def empty(c: Cosmology) -> float:
                return self.sources.average(lambda z: empty_beam_kappa(c.Omega_m, c.h, z))

            kappa0 = self.kappa0()
            assert kappa0 is not None
            shift = kappa0 * empty(cosmo) / empty(self.cosmology)
        return MapPopulation.model_validate({**self.model_dump(), "grid": None, "lognormal_shift": shift,
                                             "cosmology": cosmo.model_dump()})

    @property
    def pixel_rad(self) -> float:
        return float(np.deg2rad(self.size_deg) / self.n_pix)

    @property
    def pixel_arcmin(self) -> float:
        return self.size_deg * 60.0 / self.n_pix

    def kappa0(self) -> float | None:
        """The lognormal shift in use, or None for a Gaussian field."""
        if self.lognormal_shift is None:
            return None
        if self.lognormal_shift == "hilbert2011":
            # kappa of a source distribution is the n(z)-weighted kappa of its planes, so is its minimum: the fit's
            # n(z)-weighted mean (at the mean z it is 6% smaller for the tracks' Smail n(z))
            return self.sources.average(kappa0_hilbert2011)
        return float(self.lognormal_shift)

    def noise_sigma(self) -> float | None:
        """Per-pixel standard deviation of the shape noise on the convergence, or None."""
        if self.sigma_e is None or self.n_gal is None:
            return None
        # kappa noise per pixel = sigma_e / sqrt(n_gal * pixel area) (e.g. van Waerbeke 2000, MNRAS 313, 524)
        return float(self.sigma_e / np.sqrt(self.n_gal * self.pixel_arcmin**2))


class GenerateScoring(_Strict):
    """How generated maps are scored (``label:`` of a generate track; :mod:`skybench.tasks.generate.score`)."""

    # bins of the summary vector (C_l, peak counts, V0..V2); fewer when the truth set is too small to estimate the
    # covariance (the scorer keeps D <= (N_truth - 3) / 2)
    n_ell: int = Field(8, ge=2)
    n_peaks: int = Field(6, ge=2)
    n_thresholds: int = Field(6, ge=2)
    memorisation_alpha: float = Field(1e-3, gt=0, lt=1)
    collapse_min_ratio: float = Field(0.5, gt=0, lt=1)
    # a flagged generator (copies of the training maps, collapse) gets chi2_per_dof + flag_penalty: below any
    # honest generator, the Gaussian baseline included, whatever its chi^2
    flag_penalty: float = Field(1e6, gt=0)
    n_bootstrap: int = Field(200, ge=0)
    gallery: int = Field(6, ge=0)


class GenerateTrack(Track):
    task: Literal["generate"]
    population: MapPopulation
    label: GenerateScoring = GenerateScoring()
    inputs: list[Literal["images", "features", "latents", "params"]] = ["latents"]

    @model_validator(mode="after")
    def _check_generate(self) -> GenerateTrack:
        n = self.population.n_pix
        want: list[str | int] = ["N", 1, n, n]
        if self.output.kind != "maps" or list(self.output.shape) != want:
            raise ValueError(f"a generate track's output must be {{kind: maps, shape: {want}}} (population.n_pix "
                             f"{n}), got kind {self.output.kind!r}, shape {self.output.shape}")
        want_inputs = ["latents"] if self.population.grid is None else ["latents", "params"]
        if self.inputs != want_inputs:
            kind = "an unconditional" if self.population.grid is None else "a conditional (population.grid)"
            raise ValueError(f"{kind} generate track's inputs are [{', '.join(want_inputs)}], got {self.inputs}")
        if self.cutout is not None:
            raise ValueError("a generate track has no cutout: its map geometry is population.n_pix / size_deg")
        if self.population.grid is not None:
            self._check_points_per_part()
        return self

    def _check_points_per_part(self) -> None:
        """Each grid point needs MIN_MAPS_PER_POINT test maps in the whole set and, with a public-private split
        (each point's share drawn separately: ``score.split_groups``), in each part."""
        n_points, f = self.population.n_points, self.evaluation.public_fraction

        def smallest_part(test: int) -> int:  # a point holds test // P or test // P + 1 maps (id k at k % P)
            sizes = {test // n_points, -(-test // n_points)}
            if f is None:
                return min(sizes)
            return min(min(round(f * n), n - round(f * n)) for n in sizes)  # harness.score.public_mask's round

        if short := {k: p.test for k, p in self.profiles.items() if smallest_part(p.test) < MIN_MAPS_PER_POINT}:
            split = "" if f is None else f" in each part of the public_fraction {f} split"
            raise ValueError(f"profiles {short}: a conditional track's test split needs at least "
                             f"{MIN_MAPS_PER_POINT} maps per grid point{split} (for each point's chi^2 covariance)")

    def strata_columns(self) -> set[str]:
        """``strata:`` may name ``cosmology`` (the grid point's label) on a conditional track, nothing otherwise."""
        return set() if self.population.grid is None else {"cosmology"}

    def strata_metrics(self) -> set[str]:
        return set(POINT_METRICS)

    @model_validator(mode="after")
    def _check_cosmology_stratum(self) -> GenerateTrack:
        labels = [] if self.population.grid is None else self.population.grid.labels()
        for s in self.strata:
            if s.values is None or not set(s.values) <= set(labels):
                raise ValueError(f"strata: column {s.column!r}: give values, grid point labels among {labels}, "
                                 f"got {s.values or s.edges}")
        return self


# the smallest summary vector (2 C_l bins, 2 peak bins, 3 x 2 Minkowski thresholds) needs 2 D + 3 truth maps
MIN_MAPS_PER_POINT = 23
# what the scorer reports per grid point of a conditional track (``by_cosmology_<label>_<metric>``)
POINT_METRICS = ("chi2_per_dof", "chi2_cl", "chi2_peaks", "chi2_minkowski", "cl_rel_diff", "pdf_ks", "pdf_w1",
                 "memorised", "collapsed", "n_maps", "param_mean_Omega_m", "param_mean_sigma8")
