"""The typed configuration of a photo-z track: its ``population:`` (simulated galaxies, or a real catalogue), its
``label:`` and the track model that ``skybench.tracks.load_track`` validates a photo-z YAML against."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from skybench.common import Strict as _Strict
from skybench.tracks import Track


class SizeRelation(_Strict):
    """log10 R_half[kpc] = log10(R0) - 0.4 slope (M_r - M0) + N(0, scatter) (R ~ L^slope, Shen et al. 2003)."""

    R0_kpc: float = Field(gt=0)
    M0: float = -21.0
    slope: float
    scatter_dex: float = Field(ge=0)


class GalaxyPopulation(_Strict):
    """Simulated SDSS-MGS-like galaxies (:mod:`skybench.tasks.photoz.simulator`)."""

    z_range: tuple[float, float] = (0.005, 0.4)
    r_limit: float = 17.8                       # MGS: Petrosian r < 17.77
    H0: float = 70.0
    Om0: float = 0.3
    M_star: float = -21.21                      # Blanton et al. 2003: M* - 5 log10 h = -20.44, h = 0.7
    alpha: float = -1.05
    M_range: tuple[float, float] = (-24.0, -16.0)
    bulge_fraction: tuple[float, float] = (0.0, 1.0)  # uniform share of rest-frame r-band light in the bulge
    disk_type: tuple[float, float] = (0.0, 2.0)  # 0 = Sbc, 1 = Scd, 2 = Im, linear mixtures in between
    # share of the bulge's rest-frame r light from a younger (Sbc) population: the scatter of early-type colours
    bulge_young_fraction: tuple[float, float] = (0.0, 0.3)
    ebv_internal: tuple[float, float] = (0.0, 0.3)  # Calzetti E(B-V) of the disk, uniform
    ebv_galactic_mean: float = Field(0.03, ge=0)     # exponential, clipped at ebv_galactic_max
    ebv_galactic_max: float = 0.2
    bulge_size: SizeRelation
    disk_size: SizeRelation
    disk_q: tuple[float, float] = (0.2, 1.0)
    bulge_q: tuple[float, float] = (0.6, 1.0)
    center_sigma: float = Field(0.2, ge=0)       # arcsec
    # photometric calibration (zero-point) error [mag]: one Gaussian offset per object and band, in the images and
    # the catalogue alike (both are measured from the same calibrated frames); added to the catalogue errors
    mag_error_floor: float = Field(0.01, ge=0)
    features: list[str] = Field(min_length=1)    # metadata columns given to models as ``features``


class PhotozLabel(_Strict):
    name: str = "z"


class CataloguePopulation(_Strict):
    """A real catalogue imported as it is (``photoz-sdss-mgs``: :mod:`skybench.tasks.photoz.real`), not simulated."""

    source: str  # the data folder, relative to the project root
    features: list[str] = Field(min_length=1)


class PhotozTrack(Track):
    task: Literal["photoz"]
    population: GalaxyPopulation | CataloguePopulation
    label: PhotozLabel

    def strata_columns(self) -> set[str]:
        """What ``strata:`` may name: the label (z_spec), the magnitudes, and for simulated galaxies their
        true magnitudes and parameters; a real catalogue's hidden table has its features and the label."""
        base = {self.label.name, *self.population.features}
        if isinstance(self.population, CataloguePopulation):
            return base
        bands = ("u", "g", "r", "i", "z")
        return base | {f"mag_{b}" for b in bands} | {f"mag_true_{b}" for b in bands} | {
            "M_r", "ebv_galactic", "ebv_internal", "bulge_fraction", "disk_type"}

    def strata_metrics(self) -> set[str]:
        return {"sigma_mad", "bias_mean", "bias_median", "sigma_iqr", "outlier_frac", "rail_outlier_frac", "pit_ks",
                "crps", "cde_loss", "n_objects"}
