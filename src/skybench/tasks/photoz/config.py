"""The typed configuration of a photo-z track: its ``population:`` (simulated galaxies, or a real catalogue), its
``label:`` and the track model that ``skybench.tracks.load_track`` validates a photo-z YAML against."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from skybench.common import Strict as _Strict
from skybench.tracks import Track, project_root


class SizeRelation(_Strict):
    """log10 R_half[kpc] = log10(R0) - 0.4 slope (M_r - M0) + N(0, scatter) (R ~ L^slope, Shen et al. 2003)."""

    R0_kpc: float = Field(gt=0)
    M0: float = -21.0
    slope: float
    scatter_dex: float = Field(ge=0)


class Component(_Strict):
    """One colour population: uniform ranges of its galaxies' parameters (drawn from per-object quantiles). The SEDs
    are mixtures of the Blanton & Roweis 2007 templates (``BR07_*``, :mod:`skybench.physics.sed`)."""

    bulge_fraction: tuple[float, float]  # share of rest-frame r-band light in the bulge (Sersic n = 4)
    # share of the bulge's rest-frame r light from a young population (BR07_2): the colour scatter of early types
    bulge_young_fraction: tuple[float, float]
    disk_type: tuple[float, float]  # 0 = old (BR07_3), 1 = young (BR07_2), 2 = young metal-poor (BR07_4), mixtures
    ebv_internal: tuple[float, float]  # Calzetti E(B-V) of the disk
    # share of the bulge's old light from the reddest, metal-rich template (BR07_0) instead of BR07_3
    metal_rich: tuple[float, float] = (0.0, 0.0)
    # share of the bulge's BR07_3 light from its UV-repaired version (BR07_3_uvfix, skybench.physics.sed)
    uv_repair: tuple[float, float] = (0.0, 0.0)
    # share of the disk's rest-frame r light from the starburst template (BR07_1, strong emission lines)
    burst: tuple[float, float] = (0.0, 0.0)
    # colour-magnitude relation: per parameter, its change per magnitude brighter than M_r = -21 (added to the
    # drawn value, clipped to the parameter's physical range), so that brighter galaxies are redder within a population
    luminosity_slope: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_slopes(self) -> Component:
        if unknown := sorted(set(self.luminosity_slope) - (set(type(self).model_fields) - {"luminosity_slope"})):
            raise ValueError(f"luminosity_slope: unknown parameters {unknown}")
        return self


class RedFraction(_Strict):
    """f_red(M_r) = low + (high - low) (1 + tanh((M_mid - M_r) / width)) / 2: the red share rises with luminosity
    (the form of Baldry et al. 2004, ApJ 600, 681, fig. 8 / Baldry et al. 2006, MNRAS 373, 469, eq. 9)."""

    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    M_mid: float
    width: float = Field(gt=0)


class GalaxyPopulation(_Strict):
    """Simulated SDSS-MGS-like galaxies (:mod:`skybench.tasks.photoz.simulator`).

    ``calibration``: a YAML file (path relative to the project root) of further population fields, merged in before
    validation; the fitted ones (:mod:`skybench.tasks.photoz.calibrate` writes ``calibration/photoz-population.yaml``).
    A field may be set in the track or in that file, not both. A project root without the file (a test's folder of
    track YAMLs) takes the one of the source checkout."""

    calibration: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_calibration(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("calibration"):
            return data
        path = project_root() / data["calibration"]
        if not path.is_file():  # a project folder holding only benchmarks/ (tests): the checkout's file
            path = Path(__file__).resolve().parents[4] / data["calibration"]
        if not path.is_file():
            raise ValueError(f"population.calibration: no file {path}; make it with "
                             "`dvc repro pipelines/photoz/dvc.yaml:calibrate-photoz` "
                             "(python -m skybench.tasks.photoz.calibrate)")
        fitted = yaml.safe_load(path.read_text())
        if not isinstance(fitted, dict):
            raise ValueError(f"population.calibration: {path} is not a mapping of population fields")
        if both := sorted(set(fitted) & set(data)):
            raise ValueError(f"population: {', '.join(both)} set both in the track and in the calibration file "
                             f"{path}; remove them from one of the two")
        return {**data, **fitted}

    z_range: tuple[float, float] = (0.005, 0.4)
    r_limit: float = 17.77                      # MGS: Petrosian r < 17.77 (Strauss et al. 2002)
    H0: float = 70.0
    Om0: float = 0.3
    M_star: float = -21.21                      # Blanton et al. 2003: M* - 5 log10 h = -20.44, h = 0.7
    alpha: float = -1.05
    M_range: tuple[float, float] = (-24.0, -16.0)
    # Two populations (Strateva et al. 2001, AJ 122, 1861; Baldry et al. 2004, ApJ 600, 681): a red sequence and a
    # blue cloud, each with its own bulge share, template mixture and internal extinction; the red fraction rises
    # with luminosity. The fitted values are in the ``calibration`` file (skybench.tasks.photoz.calibrate).
    red_sequence: Component
    blue_cloud: Component
    red_fraction: RedFraction
    # SDSS magnitudes are not exactly AB: u_AB = u_SDSS - 0.04, z_AB = z_SDSS + 0.02 (SDSS DR7 photometry docs,
    # Abazajian et al. 2009); the catalogue (like the real one) is in the SDSS system.
    sdss_minus_ab: tuple[float, float, float, float, float] = (0.04, 0.0, 0.0, 0.0, -0.02)
    ebv_galactic_mean: float = Field(0.03, ge=0)     # exponential, clipped at ebv_galactic_max
    ebv_galactic_max: float = 0.2
    bulge_size: SizeRelation
    disk_size: SizeRelation
    disk_q: tuple[float, float] = (0.2, 1.0)
    bulge_q: tuple[float, float] = (0.6, 1.0)
    center_sigma: float = Field(0.2, ge=0)       # arcsec
    # photometric calibration (zero-point) error [mag]: one Gaussian offset per object and band, in the images and
    # the catalogue alike (both are measured from the same calibrated frames); not in the quoted errors (as SDSS's)
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
            "M_r", "ebv_galactic", "ebv_internal", "bulge_fraction", "disk_type", "red_sequence"}

    def strata_metrics(self) -> set[str]:
        return {"sigma_total", "sigma_mad", "bias_mean", "bias_median", "sigma_iqr", "outlier_frac",
                "rail_outlier_frac", "pit_ks", "crps", "cde_loss", "n_objects"}
