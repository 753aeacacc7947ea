"""The typed configuration of a lens track: its ``population:``, its ``label:`` (the visibility rule) and the
track model that ``skybench.tracks.load_track`` validates a lens YAML against."""

from __future__ import annotations

from typing import Literal

from skybench.common import Strict as _Strict
from skybench.tracks import Track

Range = tuple[float, float]


class LensPop(_Strict):
    theta_E: Range
    q: Range
    gamma_ext: Range
    center_sigma: float
    mag: Range
    R_sersic: Range
    n_sersic: Range
    light_q: Range
    colors: dict[str, float]


class SourcePop(_Strict):
    mag: Range
    R_sersic: Range
    n_sersic: Range
    q: Range
    beta_max: float
    n_clumps: tuple[int, int]
    clump_flux_fraction: Range
    clump_sigma: Range
    colors: dict[str, float]


class ContaminantPop(_Strict):
    companion: float
    ring: float
    arclet: float
    mag: Range
    colors: dict[str, float]


class LensPopulation(_Strict):
    p_source: float
    color_scatter: float
    lens: LensPop
    source: SourcePop
    contaminants: ContaminantPop


class LensLabel(_Strict):
    name: str = "is_lens"
    min_magnification: float
    min_source_pixels: int
    pixel_sigma: float


class LensTrack(Track):
    task: Literal["lens"]
    population: LensPopulation
    label: LensLabel
