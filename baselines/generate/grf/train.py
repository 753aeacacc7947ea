"""Gaussian random field baseline: the right power spectrum, the wrong PDF and peaks.

    python baselines/generate/grf/train.py --track wl-maps --release releases/wl-maps \
        --out baselines/generate/grf/wl-maps [--max-train N]

Nothing is learned but the training maps' mean power on the rfft2 grid (the 2-D power spectrum, so the C_l of
the generated maps is the training maps' in every l bin); on a conditional track (``population.grid``), that of
each grid point's training maps (``--max-train``: per point). The submission is ``predict.py`` (format
``python``, shared with ``lognormal-oracle``) + ``model.npz``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from skybench.release.reader import open_release
from skybench.tasks.generate.config import GenerateTrack
from skybench.tracks import load_track
from skybench.training import fresh_folder, run_cli, start, write_submission

NAME = "grf"
HERE = Path(__file__).resolve().parent


def grid_amplitude(maps: np.ndarray) -> np.ndarray:
    """The filter whose white-noise image has the maps' mean power: sqrt(<|rfft2(map)|^2> / n_pixels)."""
    m = np.asarray(maps, np.float64).reshape(len(maps), maps.shape[-2], maps.shape[-1])
    power = np.mean(np.abs(np.fft.rfft2(m)) ** 2, axis=0)
    return np.sqrt(power / (m.shape[-1] * m.shape[-2]))


def train(argv: list[str] | None = None) -> tuple[dict[str, Any], Path]:
    args, params = start(NAME, __doc__, argv, seed=False)
    track = load_track(args.track)
    rel = open_release(args.release)
    maps = rel.array("train", "maps")
    grid = track.population.grid if isinstance(track, GenerateTrack) else None
    out = fresh_folder(args.out)
    if grid is None:
        n = len(maps) if args.max_train is None else min(args.max_train, len(maps))
        amp = grid_amplitude(np.asarray(maps[:n]))
        np.savez(out / "model.npz", amplitude=amp, kappa0=np.nan, sigma_g2=0.0)
    else:
        point = rel.meta("train")["grid_point"].to_numpy()
        rows = [np.flatnonzero(point == k)[:args.max_train] for k in range(len(grid.points()))]
        if empty := [grid.labels()[k] for k, r in enumerate(rows) if not len(r)]:
            raise SystemExit(f"{NAME}: no training maps at grid points {empty}")
        amp = np.stack([grid_amplitude(np.asarray(maps[r])) for r in rows])
        n = sum(len(r) for r in rows)
        np.savez(out / "model.npz", amplitude=amp, kappa0=np.nan, sigma_g2=np.zeros(len(rows)),
                 grid=np.array(grid.points(), np.float64))
    shutil.copy(HERE.parent / "predict.py", out / "predict.py")
    write_submission(out, NAME, args.track, "python", "predict.py",
                     f"Gaussian random field with the mean 2-D power spectrum of {n} training maps")
    print(f"wrote {out} ({n} training maps)")
    return {"n_train": n}, out


if __name__ == "__main__":
    run_cli(train)
