"""Simulator throughput: skybench against lenstronomy's SimAPI on the same objects, one CPU thread.

Both render the same lens-space objects (SIE + shear, Sersic lens light, clumpy Sersic source and the
look-alike components, 101x101, supersampling 2, the same pixel PSF kernel, background + Poisson noise).
skybench's headline figure is the whole ``simulate`` call (parameter sampling, rendering, noise, label,
metadata); the second row times only the part that lenstronomy's figure covers (``ImageModel.image`` +
``SimAPI.noise_for_model`` per image): rendering and noise. They are timed in alternating rounds, so that
load from other jobs on a shared machine falls on all alike, and reported as images per second of wall-clock
time and of process CPU time (the CPU figure is the less noisy one when other jobs share the cores; on a GPU
backend only the wall-clock figure counts). Then the peak RSS of writing a lens-ground release of
``--rss-objects`` test cut-outs.

With ``--release-objects N``, also the whole ``simulate_release`` call (sampling, rendering, noise, labels, shard
writing) of N lens-space and N lens-ground test cut-outs (challenge profile, train and val scaled with it, a
throw-away key), as objects written per second of wall-clock time, against the same lenstronomy figure.

    python perf/sim_throughput.py [--objects 256] [--rounds 8] [--rss-objects 2000] [--backend numpy|torch-cuda]
                                  [--generator pcg64|philox] [--release-objects 100000]
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

from skybench.physics.backend import get_backend  # noqa: E402
from skybench.physics.philox import normal32  # noqa: E402
from skybench.physics.psf import gaussian_kernel_2d  # noqa: E402
from skybench.release import read_manifest  # noqa: E402
from skybench.simulate import CHUNK_SIZE, GPU_CHUNK_SIZE, simulate_release  # noqa: E402
from skybench.tasks.lens.simulator import LensSimulator, lenstronomy_kwargs  # noqa: E402
from skybench.testkey import public_object_seed  # noqa: E402
from skybench.tracks import load_track  # noqa: E402


def chunk_of(backend: str) -> int:
    return GPU_CHUNK_SIZE if get_backend(backend).device == "cuda" else CHUNK_SIZE


def ours(track, backend: str, generator: str):
    """A function that simulates the next ``k`` objects, in chunks as `skybench simulate` does."""
    sim, chunk = LensSimulator(track, get_backend(backend, generator)), chunk_of(backend)
    sim.simulate(0, "test", 0, 8)  # warm-up
    state = {"next": 0}

    def run(k: int) -> int:
        start = state["next"]
        for a in range(start, start + k, chunk):
            sim.simulate(0, "test", a, min(a + chunk, start + k))
        state["next"] += k
        return k

    return run


def ours_images_only(track, backend: str, generator: str, n: int):
    """Like ``ours``, but timing only what lenstronomy's figure covers: rendering the noise-free images (with
    the lensed source that the label needs) and drawing and adding the noise; parameters are drawn beforehand."""
    sim, chunk = LensSimulator(track, get_backend(backend, generator)), chunk_of(backend)
    chunks = []
    for a in range(0, n, chunk):
        chunks.append(sim._sample([public_object_seed(0, "test", i) for i in range(a, min(a + chunk, n))]))
    rng = np.random.default_rng(0)
    state = {"next": 0}

    def run(k: int) -> int:
        done = 0
        while done < k:
            cols = chunks[state["next"] % len(chunks)]
            model, _ = sim.render(cols)
            normal = normal32(sim.backend, cols["seed"], tuple(model.shape[1:])) if generator == "philox" else \
                rng.standard_normal(tuple(model.shape), dtype=np.float32)
            sim.backend.to_numpy(sim.renderer.add_noise(model, normal))
            done += len(cols["seed"])
            state["next"] += 1
        return done

    run(16)  # warm-up
    state["next"] = 0
    return run


def lenstronomy_runner(track, n: int):
    """A function that renders the next ``k`` of the same objects with lenstronomy, noise included."""
    from lenstronomy.SimulationAPI.sim_api import SimAPI

    sim = LensSimulator(track, get_backend("numpy"))
    meta = pd.DataFrame(sim.simulate(0, "test", 0, n)[1])  # the same objects, re-rendered by lenstronomy below
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
    state = {"next": 0}

    def run(k: int) -> int:
        for j in range(state["next"], state["next"] + k):
            key, kw = jobs[j % n]
            api, image_model = models[key]
            img = image_model.image(kw["kwargs_lens"], kw["kwargs_source"], kw["kwargs_lens_light"])
            img = img + api.noise_for_model(img)
        state["next"] += k
        return k

    run(2)  # warm-up
    state["next"] = 0
    return run


def interleaved(runners: list, per_round: list[int], rounds: int) -> list[dict[str, float]]:
    """Run each runner for its share in turn, ``rounds`` times; images/s by wall-clock and by CPU time."""
    wall, cpu, count = [0.0] * len(runners), [0.0] * len(runners), [0] * len(runners)
    for _ in range(rounds):
        for i, (run, k) in enumerate(zip(runners, per_round, strict=True)):
            t, c = time.perf_counter(), time.process_time()
            count[i] += run(k)
            wall[i] += time.perf_counter() - t
            cpu[i] += time.process_time() - c
    return [{"images": count[i], "wall images/s": count[i] / wall[i], "cpu images/s": count[i] / cpu[i]}
            for i in range(len(runners))]


def peak_rss(n_objects: int) -> float:
    """Peak RSS [MB] of `skybench simulate lens-ground` (parent + workers) for ``n_objects`` test cut-outs."""
    with tempfile.TemporaryDirectory() as tmp:
        code = ("import resource,sys; from skybench.simulate import simulate_release;"
                f"simulate_release('lens-ground', sys.argv[1], profile='challenge', size={n_objects},"
                " progress=False, key_file=sys.argv[2]);"  # a throw-away test-set key, not the organiser's
                "r=resource.getrusage; print(max(r(resource.RUSAGE_SELF).ru_maxrss,"
                " r(resource.RUSAGE_CHILDREN).ru_maxrss))")
        out = subprocess.run([sys.executable, "-c", code, f"{tmp}/rel", f"{tmp}/challenge.key"],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1]) / 1024


def release_rate(track: str, n_test: int, backend: str, generator: str) -> tuple[float, int]:
    """(objects written per second, objects) of one ``simulate_release`` call: N test cut-outs of the challenge
    profile (train and val scaled alike), with a throw-away key, after a small warm-up call."""
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(profile="challenge", backend=backend, generator=generator, progress=False,
                  key_file=f"{tmp}/challenge.key")
        simulate_release(track, f"{tmp}/warm", size=min(n_test, 64), **kw)  # imports, CUDA context, kernels
        t = time.perf_counter()
        out = simulate_release(track, f"{tmp}/rel", size=n_test, **kw)
        wall = time.perf_counter() - t
        total = sum(read_manifest(out)["counts"].values())
    return total / wall, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=256, help="skybench objects per row (lenstronomy renders half)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--rss-objects", type=int, default=2000, help="0 to skip the memory measurement")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--generator", default="pcg64", choices=("pcg64", "philox"))
    ap.add_argument("--release-objects", type=int, default=0, help="time whole simulate calls of this many test "
                                                                   "cut-outs per lens track (0: skip)")
    args = ap.parse_args()
    # Memory first: a child's peak RSS on Linux starts from its parent's RSS at the fork, which is small now
    # and large once lenstronomy is loaded.
    rss = peak_rss(args.rss_objects) if args.rss_objects else None
    track = load_track("lens-space")
    n_ref = max(16, args.objects // 2)
    runners = [ours(track, args.backend, args.generator),
               ours_images_only(track, args.backend, args.generator, args.objects),
               lenstronomy_runner(track, n_ref)]
    per_round = [args.objects // args.rounds, args.objects // args.rounds, n_ref // args.rounds]
    a, a_img, b = interleaved(runners, per_round, args.rounds)
    where = f"{args.backend}, {args.generator}, 1 thread"
    table = pd.DataFrame([a, a_img, b], index=[f"skybench simulate ({where})",
                                               f"skybench images + noise only ({where})",
                                               "lenstronomy image + noise (numpy, 1 thread)"])
    print(table.round(1).to_string())
    for what, x in (("simulate", a), ("images + noise only", a_img)):
        print(f"ratio skybench {what} / lenstronomy: {x['wall images/s'] / b['wall images/s']:.1f}x wall-clock, "
              f"{x['cpu images/s'] / b['cpu images/s']:.1f}x CPU time  (target >= 5x on the CPU)")
    for name in ("lens-space", "lens-ground") if args.release_objects else ():
        rate, total = release_rate(name, args.release_objects, args.backend, args.generator)
        print(f"simulate_release {name} ({args.backend}, {args.generator}): {total} objects written at "
              f"{rate:.0f} objects/s; ratio to lenstronomy (lens-space, 1 core): {rate / b['wall images/s']:.1f}x")
    if rss is not None:
        print(f"peak RSS writing {args.rss_objects} lens-ground test cut-outs (challenge profile sizes scale"
              f" train/val with it): {rss:.0f} MB; memory does not grow with N (streamed shards) - "
              f"see the ratio at two sizes with --rss-objects")
    print(f"self peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
