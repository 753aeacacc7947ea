"""The toy task's simulator: one star per cut-out, a circular Gaussian PSF of the band's seeing, on a
sky-subtracted background with Gaussian noise of the survey's background sigma. Every object is drawn from
its own seed, so a release does not depend on how its objects are chunked or spread over processes."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from skybench.physics.noise import background_sigma, magnitude2cps
from skybench.testkey import ObjectSeeds, as_object_seeds

from .config import ToyTrack

FWHM_TO_SIGMA = 1 / (2 * np.sqrt(2 * np.log(2)))  # Gaussian: FWHM = 2 sqrt(2 ln 2) sigma


class ToySimulator:
    hidden_arrays: ClassVar[tuple[str, ...]] = ()  # the answer is a metadata column, no per-object array
    label_columns: ClassVar[list[str]] = ["flux"]

    def __init__(self, track: ToyTrack, backend: Any = None):
        if len(track.survey.bands) != 1 or track.cutout is None:
            raise ValueError(f"track {track.name!r}: the toy task needs one band and a cutout")
        self.track = track
        band = track.survey.bands[0]
        self.size = track.cutout.size
        self.sigma_bkg = self.release_info(track)["sigma_bkg"]
        self.psf_sigma_px = band.seeing * FWHM_TO_SIGMA / track.survey.pixel_scale
        c = (self.size - 1) / 2
        self.yy, self.xx = np.mgrid[:self.size, :self.size] - c

    @classmethod
    def arrays(cls, track: ToyTrack) -> dict[str, tuple[int, ...]]:
        assert track.cutout is not None
        return {"images": (1, track.cutout.size, track.cutout.size)}

    @classmethod
    def release_info(cls, track: ToyTrack) -> dict[str, Any]:
        b, s = track.survey.bands[0], track.survey
        return {"sigma_bkg": background_sigma(b.read_noise, b.exposure_time, b.num_exposures, b.sky_brightness,
                                              b.zero_point, s.pixel_scale)}

    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[np.ndarray, pd.DataFrame]:
        """Objects ``start..stop`` of ``split``: images (B, 1, size, size) in e-/s per pixel, and metadata."""
        seeds = as_object_seeds(seeds)
        pop, band, scale = self.track.population, self.track.survey.bands[0], self.track.survey.pixel_scale
        images = np.empty((stop - start, 1, self.size, self.size), np.float32)
        rows = []
        for k, index in enumerate(range(start, stop)):
            s = seeds(split, index)
            rng = np.random.default_rng([s, 0])
            mag = rng.uniform(*pop.mag)
            x, y = rng.normal(0.0, pop.center_sigma, 2)  # arcsec
            flux = float(magnitude2cps(mag, band.zero_point))
            r2 = (self.xx - x / scale) ** 2 + (self.yy - y / scale) ** 2
            psf = np.exp(-r2 / (2 * self.psf_sigma_px**2)) / (2 * np.pi * self.psf_sigma_px**2)
            noise = np.random.default_rng([s, 1]).standard_normal((self.size, self.size))
            images[k, 0] = flux * psf + self.sigma_bkg * noise
            rows.append({"id": index, "split": split, "seed": s, "mag": mag, "flux": flux, "center_x": x,
                         "center_y": y})
        return images, pd.DataFrame(rows)
