"""Simulator throughput: skybench against lenstronomy's SimAPI on the same objects, one CPU thread.

Both render the same lens-space objects (SIE + shear, Sersic lens light, clumpy Sersic source and the
look-alike components, 101x101, supersampling 2, the same pixel PSF kernel, background + Poisson noise).
Prints images/s of each and the ratio; then the peak RSS of writing a lens-ground release of
``--rss-objects`` test cut-outs, extrapolated to the challenge profile's 122,000 objects.

    python perf/sim_throughput.py [--objects 256] [--rss-objects 10000] [--backend numpy|torch-cuda]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from skybench.lens_simulator import LensSimulator, lenstronomy_kwargs  # noqa: E402
from skybench.physics.backend import get_backend  # noqa: E402
from skybench.physics.psf import gaussian_kernel_2d  # noqa: E402
from skybench.tracks import load_track  # noqa: E402


def ours(track, n: int, backend: str) -> float:
    sim = LensSimulator(track, get_backend(backend))
    sim.simulate(0, "test", 0, 8)  # warm-up
    t = time.perf_counter()
    for start in range(0, n, 16):  # the chunk size `skybench simulate` uses
        sim.simulate(0, "test", start, min(n, start + 16))
    return n / (time.perf_counter() - t)


def lenstronomy_rate(track, n: int) -> float:
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    sim = LensSimulator(track, get_backend("numpy"))
    _, meta = sim.simulate(0, "test", 0, n)  # the same objects, re-rendered by lenstronomy below
    band = track.survey.bands[0]
    single_band = dict(pixel_scale=track.survey.pixel_scale, exposure_time=band.exposure_time,
                       num_exposures=band.num_exposures, magnitude_zero_point=band.zero_point,
                       read_noise=band.read_noise, ccd_gain=band.ccd_gain, sky_brightness=band.sky_brightness,
                       seeing=band.seeing, psf_type="PIXEL", data_count_unit="e-",
                       kernel_point_source=gaussian_kernel_2d(band.seeing, track.survey.pixel_scale))
    models: dict = {}  # one SimAPI per list of components, built once (not timed per image)
    jobs = []
    for _, row in meta.iterrows():
        kw = lenstronomy_kwargs(row, track, band.name)
        key = tuple(map(tuple, kw["kwargs_model"].values()))
        if key not in models:
            api = SimAPI(track.cutout.size, single_band, kw["kwargs_model"])
            models[key] = (api, api.image_model_class(kw["kwargs_numerics"]))
        jobs.append((key, kw))
    t = time.perf_counter()
    for key, kw in jobs:
        api, image_model = models[key]
        img = image_model.image(kw["kwargs_lens"], kw["kwargs_source"], kw["kwargs_lens_light"])
        img = img + api.noise_for_model(img)
    return n / (time.perf_counter() - t)


def peak_rss(n_objects: int) -> float:
    """Peak RSS [MB] of `skybench simulate lens-ground` (parent + workers) for ``n_objects`` test cut-outs."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import resource,sys; from skybench.simulate import simulate_release;"
                f"simulate_release('lens-ground', sys.argv[1], profile='challenge', size={n_objects},"
                " progress=False);"
                "r=resource.getrusage; print(max(r(resource.RUSAGE_SELF).ru_maxrss,"
                " r(resource.RUSAGE_CHILDREN).ru_maxrss))")
        out = subprocess.run([sys.executable, "-c", code, f"{tmp}/rel"], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=256)
    ap.add_argument("--rss-objects", type=int, default=2000, help="0 to skip the memory measurement")
    ap.add_argument("--backend", default="numpy")
    args = ap.parse_args()
    track = load_track("lens-space")
    a = ours(track, args.objects, args.backend)
    b = lenstronomy_rate(track, min(args.objects, 128))
    print(pd.DataFrame({"images_per_s": [a, b]}, index=[f"skybench ({args.backend}, 1 thread)",
                                                        "lenstronomy SimAPI (numpy, 1 thread)"]).round(1))
    print(f"ratio skybench / lenstronomy: {a / b:.1f}x  (target >= 5x on the CPU)")
    if args.rss_objects:
        rss = peak_rss(args.rss_objects)
        print(f"peak RSS writing {args.rss_objects} lens-ground test cut-outs (challenge profile sizes scale"
              f" train/val with it): {rss:.0f} MB; memory does not grow with N (streamed shards) - "
              f"see the ratio at two sizes with --rss-objects")
    print(f"self peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
