"""The toy task's track configuration: the shared :class:`~skybench.tracks.Track` with its own ``task``,
population and label models (validated once, when the track is loaded)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from skybench.tracks import Track


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToyPopulation(_Strict):
    mag: tuple[float, float] = Field(description="range of the star's magnitude in the band, drawn uniformly")
    center_sigma: float = Field(ge=0, description="arcsec, Gaussian offset of the star from the cut-out centre")

    @model_validator(mode="after")
    def _ordered(self) -> ToyPopulation:
        if self.mag[0] > self.mag[1]:
            raise ValueError(f"population.mag: [{self.mag[0]}, {self.mag[1]}] is not ordered; "
                             "give [low, high] with low <= high")
        return self


class ToyLabel(_Strict):
    name: Literal["flux"] = "flux"


class ToyTrack(Track):
    task: Literal["toy"]  # the discriminator: each task narrows it to its name
    population: ToyPopulation
    label: ToyLabel = ToyLabel()
