"""The typed configuration of an enhancement track: its galaxy ``population:``, its ``label:`` (the degradation and
how the images are scored) and the track model that ``skybench.tracks.load_track`` validates an enhance YAML
against."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from skybench.common import Strict as _Strict
from skybench.tracks import Track

TYPES = ("elliptical", "spiral", "irregular")
MAX_CLUMPS = 10
Range = tuple[float, float]


SSIM_WINDOW = 11  # the Gaussian window of sd 1.5 that tasks/enhance/metrics.py's SSIM uses


class Component(_Strict):
    R_sersic: Range
    n_sersic: Range = (1.0, 1.0)
    q: Range
    colors: dict[str, float]


class Arms(_Strict):
    n_arms: tuple[int, int]
    pitch_deg: Range
    sharpness: Range
    fraction: Range  # of the disk's flux moved into the arms


class Clumps(_Strict):
    n: dict[str, tuple[int, int]]
    sigma: Range
    flux_fraction: Range
    radius: Range
    colors: dict[str, float]


class EnhancePopulation(_Strict):
    types: dict[str, float]
    mag: Range
    center_sigma: float = Field(ge=0)
    color_scatter: float = Field(ge=0)
    bulge: Component
    bulge_fraction: dict[str, Range]
    disk: Component
    arms: Arms
    clumps: Clumps

    @model_validator(mode="after")
    def _check(self) -> EnhancePopulation:
        for name, table in (("types", self.types), ("bulge_fraction", self.bulge_fraction),
                            ("clumps.n", self.clumps.n)):
            if set(table) != set(TYPES):
                raise ValueError(f"population.{name} must have exactly the keys {list(TYPES)}, got {sorted(table)}")
        if not np.isclose(sum(self.types.values()), 1.0):
            raise ValueError(f"population.types probabilities sum to {sum(self.types.values())}, not 1")
        if max(hi for _, hi in self.clumps.n.values()) > MAX_CLUMPS:
            raise ValueError(f"population.clumps.n: at most {MAX_CLUMPS} clumps")
        return self


class Degradation(_Strict):
    psf_fwhm: float = Field(gt=0, description="arcsec, Gaussian FWHM of the degradation")
    noise_factor: float = Field(gt=0, description="background sigma of the input / that of the truth")
    display_stretch: dict[str, dict[str, float]]  # {low: {band: flux}, high: {band: flux}}
    flux_data_range: dict[str, float]
    moments_sigma: float = Field(gt=0)
    gallery: int = Field(6, ge=0)


class EnhanceTrack(Track):
    task: Literal["enhance"]
    population: EnhancePopulation
    label: Degradation

    @model_validator(mode="after")
    def _fits_the_ssim_window(self) -> EnhanceTrack:
        if self.cutout is not None and self.cutout.size < SSIM_WINDOW:
            raise ValueError(f"cutout.size {self.cutout.size}: SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window (Wang et al. "
                             f"2004) needs images of at least {SSIM_WINDOW} pixels")
        return self

    def strata_columns(self) -> set[str]:
        """What ``strata:`` may name: parameters of the simulated galaxies (sizes in arcsec, r magnitude, model
        flux per band) and their ``type``."""
        return {"mag_r", "type", "bulge_fraction", "bulge_R_sersic", "disk_R_sersic", "n_clumps",
                *(f"model_flux_{b}" for b in self.band_names)}

    def strata_metrics(self) -> set[str]:
        return {"psnr", "ssim", "psnr_flux", "flux_rel_error", "flux_bias", "size_rel_error", "ellipticity_error",
                "chi2", "n_objects"}
