"""The truth process itself (shifted lognormal field with pyccl's C_l): the reference value of every metric.

    python baselines/generate/lognormal-oracle/train.py --track wl-maps --release releases/wl-maps \
        --out baselines/generate/lognormal-oracle/wl-maps

Reads no map: it builds the track's :class:`~skybench.tasks.generate.simulator.MapSimulator` (public physics: the
track YAML) and ships its filter, shift and variance in ``model.npz`` for the shared numpy ``predict.py``, which
then draws new maps of exactly the truth process (other seeds): a chi^2 per dof near 1. (Maps picked from a large
draw so that their mean and spread match would score lower: the evaluation's latents are drawn per submission and
re-run, so a generator cannot pick its set; skybench.tasks.generate.fresh.) On a conditional track
(``population.grid``): one filter and variance per grid point, and the grid.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from skybench.tasks.generate.config import GenerateTrack
from skybench.tasks.generate.simulator import MapSimulator
from skybench.tracks import load_track
from skybench.training import fresh_folder, run_cli, start, write_submission

NAME = "lognormal-oracle"
HERE = Path(__file__).resolve().parent


def train(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    args, params = start(NAME, __doc__, argv, seed=False)
    track = load_track(args.track)
    if not isinstance(track, GenerateTrack):
        raise SystemExit(f"{NAME}: track {args.track!r} is not a generate track")
    pop = track.population
    if pop.noise_sigma() is not None or pop.smoothing_fwhm_arcmin is not None:
        raise SystemExit(f"{NAME}: track {args.track!r} has shape noise or smoothing, which this oracle does not draw")
    sim = MapSimulator(pop.at_point(0), "numpy")
    kappa0 = np.nan if sim.kappa0 is None else sim.kappa0
    out = fresh_folder(args.out)
    if pop.grid is None:
        np.savez(out / "model.npz", amplitude=sim._amplitude, kappa0=kappa0, sigma_g2=sim.sigma_g2)
    else:
        sims = [MapSimulator(pop.at_point(k), "numpy") for k in range(pop.n_points)]
        # the shift of each grid point (it scales with the point's empty-beam convergence, MapPopulation.at_point)
        np.savez(out / "model.npz", amplitude=np.stack([s._amplitude for s in sims]),
                 kappa0=np.array([np.nan if s.kappa0 is None else s.kappa0 for s in sims]),
                 sigma_g2=np.array([s.sigma_g2 for s in sims]), grid=np.array(pop.grid.points(), np.float64))
    shutil.copy(HERE.parent / "predict.py", out / "predict.py")
    write_submission(out, NAME, args.track, "python", "predict.py",
                     f"the truth process: shifted lognormal field (kappa0 {kappa0:.4g}) with pyccl's C_l")
    print(f"wrote {out} (kappa0 {kappa0:.4g}, sigma_g^2 {sim.sigma_g2:.4g})")
    return {"kappa0": float(kappa0)}, out


if __name__ == "__main__":
    run_cli(train)
