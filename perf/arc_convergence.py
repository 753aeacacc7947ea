"""Convergence of the lensed light (simulator.py: ARC_LEVELS, arc_levels: the arcs' adaptive refinement) and its cost.

Over the lensed objects among the first --n objects of lens-space and lens-ground (train split, seed 3): the
PSF-convolved lensed source of the tracks' render (supersampling 2) without the adaptive refinement of the arcs
(no levels, the old renderer) and with it, against a converged render of the same objects (supersampling
--ref, no refinement). Prints per track the worst pixel of each object's source image (in sigma_bkg and as a
fraction of the source's peak; median, 90th percentile and max over objects), the `magnification` label's
relative error, the number of objects whose is_lens flips, and the cost of `simulate` (best of 3, interleaved).

    python perf/arc_convergence.py [--n 500] [--ref 16] [--levels 128x8,8x32 (default: each track's arc_levels)]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skybench.physics.backend import get_backend
from skybench.tasks.lens import simulator as S
from skybench.tracks import load_track


def render(sim: S.LensSimulator, cols: dict[str, np.ndarray], levels: tuple[tuple[int, int], ...], chunk: int = 16
           ) -> tuple[np.ndarray, ...]:
    """Source images (B, bands, n, n), magnification and is_lens of ``cols`` with arc_levels = levels."""
    saved, sim.arc_levels = sim.arc_levels, levels
    try:
        src, mag, lens = [], [], []
        for a in range(0, len(cols["seed"]), chunk):
            c = {k: v[a:a + chunk] for k, v in cols.items()}
            model, source = sim.render(c)
            lab = sim._label(c, model, source)
            src.append(sim.backend.to_numpy(source, np.float64))
            mag.append(lab["magnification"])
            lens.append(lab["is_lens"])
        return np.concatenate(src), np.concatenate(mag), np.concatenate(lens)
    finally:
        sim.arc_levels = saved


def stats(v: np.ndarray) -> str:
    return f"{np.median(v):8.3g} {np.percentile(v, 90):8.3g} {v.max():8.3g}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--ref", type=int, default=16)
    ap.add_argument("--levels", default="")
    ap.add_argument("--tracks", default="lens-space,lens-ground")
    args = ap.parse_args()
    given = tuple((int(k), int(f)) for k, f in (lv.split("x") for lv in args.levels.split(",") if lv))
    be = get_backend("numpy")
    print(f"reference: supersampling {args.ref}")
    print("track        objs | worst px / sigma_bkg (median p90 max) | worst px / source peak (median p90 max) "
          "| |magnification err| (median p90 max) | is_lens flips")
    for name in args.tracks.split(","):
        track = load_track(name)
        sim = S.LensSimulator(track, be)
        levels = given or sim.arc_levels
        print(f"{name}: arc_levels {levels} (pixels, factor)")
        assert track.cutout is not None
        ref_track = track.model_copy(update={"cutout": track.cutout.model_copy(update={"supersampling": args.ref})})
        ref_sim = S.LensSimulator(ref_track, be)
        ref_sim.antialias = sim.antialias  # a real stamp's smoothing is the track's, whatever the sampling
        cols = sim._sample([int(s) for s in np.random.default_rng(3).integers(0, 2**62, args.n)])
        keep = np.flatnonzero(cols["has_source"])
        cols = {k: v[keep] for k, v in cols.items()}
        ref, ref_mag, ref_lens = render(ref_sim, cols, (), chunk=max(1, 64 // args.ref))
        sig = sim.renderer.sigma_bkg[None, :, None, None]
        for label, lv in (("before", ()), ("after", levels)):
            src, mag, lens = render(sim, cols, lv)
            err = np.abs(src - ref)
            worst_sig = (err / sig).max(axis=(1, 2, 3))
            worst_peak = err.max(axis=(1, 2, 3)) / np.abs(ref).max(axis=(1, 2, 3))
            mag_err = np.abs(mag / ref_mag - 1)
            print(f"{name:12s} {len(keep):4d} {label:6s} | {stats(worst_sig)} | {stats(worst_peak)} | "
                  f"{stats(mag_err)} | {int((lens != ref_lens).sum())}", flush=True)
        # the cost of simulate (whole chunks, lensed or not): best of 3, the two settings interleaved
        best = {(): np.inf, levels: np.inf}
        for _ in range(3):
            for lv in best:
                sim.arc_levels = lv
                t = time.perf_counter()
                sim.simulate(3, "train", 0, 256)
                best[lv] = min(best[lv], time.perf_counter() - t)
        print(f"{name:12s} simulate 256 objects: before {best[()]:.3f} s, after {best[levels]:.3f} s, "
              f"ratio {best[levels] / best[()]:.3f}", flush=True)


if __name__ == "__main__":
    main()
