"""The typed configuration of a lens-detection track (task ``detect``): survey tiles, the scene population (field
galaxies from a number-count and a size-magnitude relation, stars, look-alikes and strong lenses of a lens track)
and the matching rule of the detection metrics.

The lens population is not repeated here: ``population.lenses.track`` names a lens track (``lens-space``) whose
population, visibility rule and stamp renderer the scene simulator uses through the task registry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import Field, model_validator

from skybench.common import Strict as _Strict
from skybench.tracks import CORE_LEVELS, Output, Track, per_profile

Range = tuple[float, float]
KINDS = ("lens", "lookalike", "deflector", "galaxy", "star")  # the ``kind`` of a truth-table row
TABLE = "objects"  # the release table of every object of every tile (public for train/val, hidden for test)
ARCSEC2_PER_DEG2 = 3600.0**2


def _check_range(name: str, r: Range) -> None:
    if not (math.isfinite(r[0]) and math.isfinite(r[1]) and r[0] <= r[1]):
        raise ValueError(f"{name}: a range must be [low, high] with low <= high, got {list(r)}")


class NumberCounts(_Strict):
    """Cumulative counts log10 N(<m) = log10_n_ref + slope (m - m_ref), N per deg^2, in the reference band;
    objects are drawn with magnitudes in ``mag``."""

    mag: Range
    log10_n_ref: float
    m_ref: float
    slope: float = Field(gt=0)

    def log10_cumulative(self, m: np.ndarray | float) -> np.ndarray:
        return self.log10_n_ref + self.slope * (np.asarray(m, dtype=np.float64) - self.m_ref)

    def per_deg2(self) -> float:
        """Expected number per deg^2 with magnitudes in ``mag``."""
        lo, hi = self.log10_cumulative(np.array(self.mag))
        return float(10.0**hi - 10.0**lo)

    def cdf(self, m: np.ndarray) -> np.ndarray:
        """The magnitude distribution within ``mag``: (N(<m) - N(<lo)) / (N(<hi) - N(<lo)), clipped to [0, 1]."""
        lo, hi = self.mag
        m = np.clip(np.asarray(m, dtype=np.float64), lo, hi)
        return np.expm1(self.slope * np.log(10) * (m - lo)) / np.expm1(self.slope * np.log(10) * (hi - lo))

    def magnitudes(self, u: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`cdf` for uniforms ``u`` in [0, 1)."""
        lo, hi = self.mag
        k = self.slope * np.log(10)
        return lo + np.log1p(np.asarray(u) * np.expm1(k * (hi - lo))) / k

    @model_validator(mode="after")
    def _check(self) -> NumberCounts:
        _check_range("mag", self.mag)
        return self


class SizeMagnitude(_Strict):
    """Median exponential-disc scale length ln(r_d / arcsec) = ln_rd_ref + ln_rd_slope (m - m_ref), scale lengths
    drawn from p(r) ~ r exp(-(r / a)^alpha) with that median; half-light radius R_e = 1.678 r_d (exponential disc),
    capped at ``max_R_sersic`` arcsec."""

    ln_rd_ref: float
    ln_rd_slope: float
    m_ref: float
    alpha: float = Field(gt=0)
    max_R_sersic: float = Field(gt=0)


class GalaxyPop(NumberCounts):
    size: SizeMagnitude
    n_sersic: Range
    q: Range
    colors: dict[str, float]
    color_scatter: float = Field(0.0, ge=0)


class StarPop(NumberCounts):
    colors: dict[str, float]


class LensDraw(_Strict):
    """Strong lenses, look-alikes and plain deflectors per tile, drawn from a lens track's population (objects that
    pass its visibility rule are lenses; objects that fail it and carry a ring, arclet or companion are look-alikes;
    the rest, the same massive galaxies with no visible arc, are deflectors: without them a bright elliptical alone
    would mark a lens)."""

    track: str
    per_tile: tuple[int, int]  # number of lenses, uniform on low..high
    lookalikes_per_tile: tuple[int, int]
    deflectors_per_tile: tuple[int, int] = (0, 0)
    max_draws: int = Field(64, ge=1)  # lens-population objects tried per tile to fill all three

    @model_validator(mode="after")
    def _check(self) -> LensDraw:
        for name, (lo, hi) in (("per_tile", self.per_tile), ("lookalikes_per_tile", self.lookalikes_per_tile),
                               ("deflectors_per_tile", self.deflectors_per_tile)):
            if not 0 <= lo <= hi:
                raise ValueError(f"lenses.{name}: [low, high] with 0 <= low <= high, got {[lo, hi]}")
        most = self.per_tile[1] + self.lookalikes_per_tile[1] + self.deflectors_per_tile[1]
        if most > self.max_draws:
            raise ValueError(f"lenses.max_draws {self.max_draws} cannot fill up to {most} lenses, look-alikes and "
                             "deflectors in a tile (each draw gives at most one); raise it")
        return self


class Placement(_Strict):
    edge_margin: float = Field(ge=0)  # arcsec: lens-population objects are centred at least this far inside
    min_separation: float = Field(ge=0)  # arcsec between the centres of two lens-population objects
    max_tries: int = Field(100, ge=1)  # positions tried per object before it is left out of the tile


class Saturation(_Strict):
    full_well: float = Field(gt=0)  # electrons per exposure: a pixel holds at most this in each exposure


class DetectPopulation(_Strict):
    galaxies: GalaxyPop
    stars: StarPop
    lenses: LensDraw
    placement: Placement
    saturation: Saturation


PositiveInt = Annotated[int, Field(gt=0)]


class Tile(_Strict):
    # pixels per side; per profile ({demo: 512, challenge: 1024}), resolved by DetectTrack.for_profile
    size: PositiveInt | dict[str, PositiveInt]
    supersampling: int = Field(2, ge=1)  # of the stamps (field galaxies, lens-population objects' unlensed light)
    core_levels: int = Field(CORE_LEVELS, ge=0)  # of those stamps (Renderer.image)
    # the largest stamp (pixels) of a field galaxy or of a lens-population object's unlensed light; must hold the
    # largest galaxy (here) and the lens track's largest deflector (DetectSimulator)
    max_stamp: int = Field(512, ge=8)


STAMP_RADII = 5.0  # field-galaxy stamps reach at least this many half-light radii (plus the PSF) from the centre
STAMP_FLUX = 0.99  # ... and out to the isophote holding this share of the light (a cusp's wings: n = 4 holds 90% at 5)


def stamp_sizes(R: Any, pixel_scale: float, seeing: float, cap: int | None = None, radii: Any = STAMP_RADII) -> Any:
    """Field-galaxy stamp sides (pixels, powers of 2 from 16) for half-light radii ``R`` (arcsec): out to ``radii``
    of them (at least :data:`STAMP_RADII`) plus twice the PSF FWHM on each side; at most ``cap``."""
    need = 2 * (np.maximum(radii, STAMP_RADII) * np.asarray(R) / pixel_scale + 2 * seeing / pixel_scale) + 2
    size = 2 ** np.ceil(np.log2(np.maximum(need, 16)))
    return (size if cap is None else np.minimum(size, cap)).astype(int)


class Matching(_Strict):
    """A candidate matches a true lens within max(radius, theta_E_factor x theta_E) arcsec of its centre."""

    radius: float = Field(gt=0)
    theta_E_factor: float = Field(0.0, ge=0)
    fp_per_deg2: list[float] = Field(default_factory=lambda: [1.0, 10.0])  # operating points of completeness


class DetectLabel(_Strict):
    name: Literal["lenses"] = "lenses"
    matching: Matching


class DetectOutput(Output):
    """Per tile up to ``max_candidates`` (K) candidates (x, y, score), NaN-padded: (N, K, 3)."""

    kind: Literal["detections"]
    max_candidates: int = Field(gt=0)


class DetectTrack(Track):
    task: Literal["detect"]
    tile: Tile
    population: DetectPopulation
    label: DetectLabel
    output: DetectOutput

    @property
    def tile_size(self) -> int:
        """Pixels per tile side (ValueError while ``tile.size`` is per profile and not resolved)."""
        if isinstance(self.tile.size, dict):
            raise ValueError(f"track {self.name!r}: tile.size is per profile ({self.tile.size}); resolve it for a "
                             "release's profile with skybench.tracks.for_release(track, release) or "
                             "track.for_profile(profile)")
        return self.tile.size

    @property
    def tile_area_deg2(self) -> float:
        return (self.tile_size * self.survey.pixel_scale) ** 2 / ARCSEC2_PER_DEG2

    def image_shape(self) -> tuple[int, ...]:
        return (len(self.band_names), self.tile_size, self.tile_size)

    def for_profile(self, profile: str) -> DetectTrack:
        size = per_profile(self.tile.size, profile, f"track {self.name!r}: tile.size")
        return self.model_copy(update={"tile": self.tile.model_copy(update={"size": size})})

    def strata_columns(self) -> set[str]:
        per_band = [f"lens_light_mag_{b}" for b in self.band_names]
        return {"lens_theta_E", "arc_snr", "magnification", *per_band}

    def strata_metrics(self) -> set[str]:
        return {"completeness", *(f"completeness_fp{f:g}" for f in self.label.matching.fp_per_deg2)}

    @model_validator(mode="after")
    def _check(self) -> DetectTrack:
        self.check_per_profile(self.tile.size, "tile.size")
        p = self.population
        for name, colors in (("galaxies", p.galaxies.colors), ("stars", p.stars.colors)):
            if set(colors) != set(self.band_names) or 0.0 not in colors.values():
                raise ValueError(f"population.{name}.colors: one colour per band {self.band_names} with 0 for the "
                                 f"reference band, got {colors}")
        for name, r in (("galaxies.n_sersic", p.galaxies.n_sersic), ("galaxies.q", p.galaxies.q)):
            _check_range(f"population.{name}", r)
        if not 0 < p.galaxies.q[0] <= p.galaxies.q[1] <= 1:
            raise ValueError(f"population.galaxies.q: axis ratios in (0, 1], got {list(p.galaxies.q)}")
        largest = int(stamp_sizes(p.galaxies.size.max_R_sersic, self.survey.pixel_scale,
                                  max(b.seeing for b in self.survey.bands)))
        if self.tile.max_stamp < largest:  # a cut stamp: a square edge and missing flux (22% at R 3")
            raise ValueError(f"tile.max_stamp {self.tile.max_stamp} cuts the largest field galaxies (R_sersic "
                             f"{p.galaxies.size.max_R_sersic}\" needs a {largest}-pixel stamp): raise it to {largest}")
        if self.output.shape != ["N", self.output.max_candidates, 3]:
            raise ValueError(f"output.shape must be [N, {self.output.max_candidates}, 3] (candidates x, y, score), "
                             f"got {self.output.shape}")
        return self


def load_detect_track(path: str | Path) -> DetectTrack:
    """A detect track from its YAML file (until the task is registered, ``load_track`` does not know it)."""
    with open(path) as f:
        return DetectTrack.model_validate(yaml.safe_load(f))
