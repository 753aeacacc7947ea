"""The typed configuration of a lens track: its ``population:``, its ``label:`` (the visibility rule) and the
track model that ``skybench.tracks.load_track`` validates a lens YAML against."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from skybench.common import Strict as _Strict
from skybench.tracks import Track

Range = tuple[float, float]
CONTAMINANT_TYPES = {"ring", "arclet", "companion", "several", "none"}


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


class RealSource(_Strict):
    """Where the real source stamps are and how they are prepared (``tasks/lens/sources.py``)."""

    folder: str = "data/galaxies/hst_stamps"  # relative to the project root
    bands: list[str] = ["F814W", "F115W"]  # each galaxy in the first of these it has (VIS-like: F814W)
    interpolation: Literal["linear", "cubic"] = "cubic"  # linear = lenstronomy 1.14's INTERPOL (bilinear)
    deconvolution_iterations: int = Field(20, ge=0)  # Richardson-Lucy iterations (0: no deconvolution)
    mask_sigma: float = Field(3.0, gt=0)  # mask threshold, in units of the smoothed stamp's noise
    # anti-aliasing: the stamp is smoothed to this FWHM in the source plane, in units of the supersampled pixel
    antialias: float = Field(1.0, ge=0)


class SourcePop(_Strict):
    """The background source. ``kind: sersic`` (default): Sersic + Gaussian clumps; ``kind: real``: a real galaxy
    stamp (``real:``) with a random rotation and flip, its half-light radius drawn from ``R_sersic`` and its
    magnitude from ``mag`` (``n_sersic`` and ``q`` are then drawn but unused)."""

    kind: Literal["sersic", "real"] = "sersic"
    real: RealSource | None = None
    mag: Range
    R_sersic: Range
    n_sersic: Range
    q: Range
    beta_max: float
    n_clumps: tuple[int, int]
    clump_flux_fraction: Range
    clump_sigma: Range
    colors: dict[str, float]

    @model_validator(mode="after")
    def _real_settings(self) -> SourcePop:
        if self.kind == "real" and self.real is None:
            object.__setattr__(self, "real", RealSource())
        if self.kind == "sersic" and self.real is not None:
            raise ValueError("population.source.real is for kind: real; remove it or set kind: real")
        return self


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


class Injection(_Strict):
    """An injected-arc track (``tasks/lens/injected.py``): the population's arcs added to the real non-lens cut-outs
    of the release ``cutouts`` (a real set, relative to the project root), its galaxies split by galaxy."""

    cutouts: str  # e.g. releases/real-lens-space (the is_lens = 0 objects are used)
    split_seed: int = 0  # the public shuffle of the galaxies into test, val and train
    test_fraction: float = Field(0.5, gt=0, lt=1)  # of the galaxies
    val_fraction: float = Field(0.2, ge=0, lt=1)
    p_arc: float = Field(0.5, gt=0, lt=1)  # fraction of the cut-outs given an arc (label 1 where it is visible)
    max_attempts: int = Field(8, ge=1)  # arcs drawn per cut-out until one passes the visibility rule
    theta_E_from: Literal["population", "flux"] = "population"  # flux: its quantile follows the galaxy's flux
    theta_E_scatter: float = Field(0.1, ge=0)  # flux: Gaussian scatter of that quantile


class LensTrack(Track):
    task: Literal["lens"]
    population: LensPopulation
    label: LensLabel
    injection: Injection | None = None

    def strata_columns(self) -> set[str]:
        """What ``strata:`` may name: parameters and labels of the simulated test table, and ``contaminant``
        (categories ring, arclet, companion: the one type an object has; ``several``, ``none``)."""
        per_band = [f"{c}_mag_{b}" for c in ("lens_light", "source") for b in self.band_names]
        return {"lens_theta_E", "arc_snr", "magnification", "n_pix_source", "n_clumps", "lens_light_R_sersic",
                "source_R_sersic", "contaminant", *per_band}

    def strata_metrics(self) -> set[str]:
        return {"tpr_fpr1", "tpr0", "fpr_fpr1", "n_lens", "n_nonlens"}

    @model_validator(mode="after")
    def _no_real_set_folded_into_injected(self) -> LensTrack:
        if self.injection is not None and self.evaluation.real_set:
            raise ValueError(f"evaluation.real_set ({self.evaluation.real_set}) with injection: an injected track's "
                             "test objects are real cut-outs already; folding a real set in would repeat their "
                             "pixels in one test stream. Remove evaluation.real_set")
        return self

    @model_validator(mode="after")
    def _check_contaminant(self) -> LensTrack:
        for i, s in enumerate(self.strata):
            if s.column == "contaminant" and (s.values is None or set(s.values) - CONTAMINANT_TYPES):
                raise ValueError(f"strata[{i}] (column 'contaminant'): give values, a subset of "
                                 f"{sorted(CONTAMINANT_TYPES)}, got {s.values or s.edges}")
        return self
