"""Fit the free parameters of the photo-z galaxy population to the real SDSS MGS **train** split.

    skybench calibrate-photoz [photoz-catalog] [--out calibration/photoz-population.yaml] [--seed 0] [--n 8000]

(or ``python -m skybench.tasks.photoz.calibrate``; the DVC stage ``calibrate-photoz``). The population
(:mod:`skybench.tasks.photoz.simulator`) is the track ``photoz-catalog``'s, with its red sequence, blue cloud and
red fraction taken from :data:`START` (literature values, cited there) and the :data:`FREE` parameters fitted:
``n`` galaxies are simulated with fixed per-object seeds (common random numbers: the objective is a smooth function
of the parameters), reweighted to the real (r, z) distribution, and the loss ``sum x^2 + x^4`` over x = KS / 0.1
per colour and median g-r difference / twice the real median's bootstrap sd per z bin
(:mod:`skybench.tasks.photoz.realism`) is minimised by Nelder-Mead from :data:`START` (400 evaluations by default,
about 14 minutes on a busy 2-core machine, ~5 CPU minutes). Only
``data/photoz_sdss_mgs/train.csv`` is read (:func:`~skybench.tasks.photoz.realism.read_real_train`); the test split
stays unseen. The output is the ``calibration`` file the photo-z track YAMLs name (their population section's
fitted part), with the fit's realism table as comments."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from skybench.physics.backend import get_backend
from skybench.tasks.photoz.realism import KS_TARGET, compare, read_real_train
from skybench.tracks import project_root

TRACK = "photoz-catalog"
OUT = Path("calibration/photoz-population.yaml")
# The starting point (literature) of the fit; the FREE entries are fitted, the others are kept.
START: dict[str, Any] = {
    "red_sequence": {
        "bulge_fraction": [0.6, 1.0],  # early types: B/T > 0.6 (Allen et al. 2006, MNRAS 371, 2, fig. 13)
        "bulge_young_fraction": [0.0, 0.3],  # early-type colour scatter g-r ~0.03 (Bernardi et al. 2003, AJ 125, 1882)
        "disk_type": [0.0, 0.5],  # the disks of S0/Sa galaxies: mostly old light
        "ebv_internal": [0.0, 0.05],  # red sequence: nearly dust free (Kauffmann et al. 2003, MNRAS 341, 33)
        # metallicity spread of early types, ~0.2-0.3 dex at fixed mass (Gallazzi et al. 2005, MNRAS 362, 41): a
        # share of the metal-rich template BR07_0; fitted
        "metal_rich": [0.0, 0.2],
        # the near UV of early types: u-g spread ~0.5 mag in the MGS at g-r ~1 (Strateva et al. 2001, AJ 122, 1861,
        # fig. 2), repaired as Budavari et al. 2000 (AJ 120, 1588) repaired the CWW templates; fitted
        "uv_repair": [0.0, 0.5],
        "burst": [0.0, 0.0],  # red sequence: no ongoing star formation
        # the red sequence's colour-magnitude relation is one of metallicity (Kodama & Arimoto 1997, A&A 320, 41):
        # the metal-rich share per magnitude brighter than M_r = -21; fitted from none
        "luminosity_slope": {"metal_rich": 0.0},
    },
    "blue_cloud": {
        "bulge_fraction": [0.0, 0.4],  # late types: B/T < 0.4 (Allen et al. 2006)
        "bulge_young_fraction": [0.0, 0.3],
        "disk_type": [0.3, 2.0],  # old .. young .. young metal-poor (BR07_3, BR07_2, BR07_4); fitted
        "ebv_internal": [0.0, 0.3],  # star-forming SDSS galaxies: Calzetti E(B-V) 0-0.3 (Kauffmann et al. 2003)
        "metal_rich": [0.0, 0.0],
        "uv_repair": [0.0, 0.0],
        # bursts: ~10% of SDSS star-forming galaxies had a recent burst (Kauffmann et al. 2003, MNRAS 341, 33); fitted
        "burst": [0.0, 0.1],
        # dust rises with the luminosity of star-forming galaxies (Garn & Best 2010, MNRAS 409, 421): E(B-V) per
        # magnitude brighter than M_r = -21; fitted from none
        "luminosity_slope": {"ebv_internal": 0.0},
    },
    # red share vs M_r: ~0.15 .. 0.9, midpoint M_r ~ -20.5 .. -21 (h = 0.7) (Baldry et al. 2004, ApJ 600, 681, fig. 8)
    "red_fraction": {"low": 0.15, "high": 0.9, "M_mid": -20.8, "width": 1.0},
}
# (section, key, index) of each fitted number; index None for a scalar, a name for an entry of a mapping.
FREE: tuple[tuple[str, str, int | str | None], ...] = (
    ("red_sequence", "bulge_young_fraction", 1),
    ("red_sequence", "metal_rich", 1),
    ("red_sequence", "uv_repair", 0),
    ("red_sequence", "uv_repair", 1),
    ("red_sequence", "ebv_internal", 1),
    ("red_sequence", "luminosity_slope", "metal_rich"),
    ("blue_cloud", "disk_type", 0),
    ("blue_cloud", "disk_type", 1),
    ("blue_cloud", "ebv_internal", 1),
    ("blue_cloud", "burst", 1),
    ("blue_cloud", "luminosity_slope", "ebv_internal"),
    ("red_fraction", "M_mid", None),
    ("red_fraction", "low", None),
    ("red_fraction", "high", None),
    ("red_fraction", "width", None),
)
# initial Nelder-Mead steps of the FREE parameters
STEPS = (0.1, 0.1, 0.15, 0.15, 0.05, 0.05, 0.3, 0.3, 0.05, 0.05, 0.03, 0.5, 0.1, 0.05, 0.3)
BOUNDS = {"bulge_young_fraction": (0.0, 0.6), "metal_rich": (0.0, 1.0), "uv_repair": (0.0, 1.0), "burst": (0.0, 1.0),
          "disk_type": (0.0, 2.0),
          "ebv_internal": (0.0, 0.3), "M_mid": (-23.0, -18.0), "low": (0.0, 0.6), "high": (0.4, 1.0),
          "width": (0.3, 3.0), "luminosity_slope": (-0.2, 0.2)}


def with_values(values: np.ndarray | list[float], start: dict[str, Any] | None = None) -> dict[str, Any]:
    """START (or ``start``) with the FREE parameters set to ``values`` (clipped to BOUNDS, ranges kept ordered)."""
    pop = copy.deepcopy(start or START)
    for (section, key, idx), v in zip(FREE, values, strict=True):
        lo, hi = BOUNDS[key]
        v = float(np.clip(v, lo, hi))
        if idx is None:
            pop[section][key] = v
        else:
            pop[section][key][idx] = v
    for section in ("red_sequence", "blue_cloud"):
        for key, val in pop[section].items():
            if isinstance(val, list):
                pop[section][key] = sorted(val)
    return pop


def start_values(start: dict[str, Any] | None = None) -> np.ndarray:
    pop = start or START
    return np.array([pop[s][k] if i is None else pop[s][k][i] for s, k, i in FREE], dtype=np.float64)


def simulate(fitted: dict[str, Any], n: int, seed: int, track: str = TRACK) -> pd.DataFrame:
    """``n`` galaxies of ``track`` (split ``train``, release seed ``seed``) with the population part ``fitted``."""
    from skybench.tasks.photoz.config import GalaxyPopulation, PhotozTrack
    from skybench.tasks.photoz.simulator import GalaxySimulator

    raw = yaml.safe_load((project_root() / "benchmarks" / f"{track}.yaml").read_text())
    raw["population"].pop("calibration", None)
    raw["population"].update(copy.deepcopy(fitted))
    cfg = PhotozTrack.model_validate(raw)
    assert isinstance(cfg.population, GalaxyPopulation)
    return GalaxySimulator(cfg, get_backend("numpy")).simulate(seed, "train", 0, n)[1]


def loss(sim: pd.DataFrame, real: pd.DataFrame) -> float:
    """sum x^2 + x^4 over x = KS / 0.1 per colour and, per z bin, median g-r difference / twice the real median's
    bootstrap sd: the x^4 term pushes hardest on whatever is nearest its target. With / 0.03 alike the fit balanced
    the well-measured z 0.06-0.20 bins (sd 0.005-0.008, sim -0.013 .. -0.021) against the noisy end bins (sd 0.018
    and 0.039, sim +0.02), a mean difference of zero over the five; / min(0.03, 2 sd) leaves u-g at KS 0.115."""
    r = compare(sim, real)
    g_r = r.g_r_by_z
    x = np.concatenate([r.colours["ks"].to_numpy(np.float64) / KS_TARGET,
                        g_r["diff"].to_numpy(np.float64) / (2 * g_r["real_sd"].to_numpy(np.float64))])
    return float(np.sum(x**2 + x**4))


def fit(real: pd.DataFrame, n: int, seed: int, max_evals: int = 400, track: str = TRACK
        ) -> tuple[dict[str, Any], float]:
    """(the fitted population part, its loss): Nelder-Mead on the FREE parameters from START."""
    from scipy.optimize import minimize

    best = [np.inf, 0]

    def objective(values: np.ndarray) -> float:
        value = loss(simulate(with_values(values), n, seed, track), real)
        best[0], best[1] = min(best[0], value), best[1] + 1
        if best[1] % 50 == 0:
            print(f"evaluation {best[1]}: best loss {best[0]:.3f}", flush=True)
        return value

    x0 = start_values()
    simplex = np.vstack([x0, x0 + np.diag(STEPS)])
    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "maxfev": max_evals, "xatol": 0.005, "fatol": 0.01})
    return with_values(res.x), float(res.fun)


def write(fitted: dict[str, Any], path: Path, header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rounded = yaml.safe_load(yaml.safe_dump(_round(fitted)))
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(rounded, sort_keys=False, default_flow_style=None))


def _round(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return round(x, 4) if isinstance(x, float) else x


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--track", default=TRACK, help="the simulated track whose population is fitted")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0, help="release seed of the simulated fitting sample")
    ap.add_argument("--n", type=int, default=8000, help="simulated galaxies per evaluation")
    ap.add_argument("--max-evals", type=int, default=400)
    args = ap.parse_args(argv)
    real = read_real_train(project_root())
    fitted, value = fit(real, args.n, args.seed, args.max_evals, args.track)
    table = compare(simulate(fitted, args.n, args.seed, args.track), real).table()
    header = (f"Generated by `skybench calibrate-photoz {args.track} --seed {args.seed} --n {args.n}` (DVC stage\n"
              "calibrate-photoz): the photo-z population's red sequence, blue cloud and red fraction, fitted to\n"
              f"data/photoz_sdss_mgs/train.csv (never test.csv). Do not edit; rerun the stage. Loss {value:.3f}.\n\n"
              + table)
    out = args.out if args.out.is_absolute() else project_root() / args.out
    write(fitted, out, header)
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
