"""Weak-lensing map simulator throughput (the generate task): maps per second beside references timed in the
same run, in alternating rounds so that load from other jobs falls on all alike.

- **skybench**: :class:`~skybench.tasks.generate.simulator.MapSimulator.simulate` in batches (per-map seeded
  normals, Gaussian field with pyccl's C_l, shifted lognormal transform; ``--noise`` adds shape noise and 1'
  smoothing);
- **white-noise FFT**: numpy draws white noise of the same size from one generator and does one rfft2 + irfft2
  per map: the floor of any FFT-based Gaussian field;
- **GalSim 2.x**: ``PowerSpectrum.buildGrid(get_convergence=True)`` with the same C_l (a Gaussian field, no
  lognormal), one map per call.

    python perf/wl_maps.py [--n-pix 128] [--batch 64] [--rounds 8] [--backend numpy|torch-cuda] [--noise]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

from skybench.tasks.generate.config import MapPopulation  # noqa: E402
from skybench.tasks.generate.simulator import MapSimulator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-pix", type=int, default=128)
    ap.add_argument("--size-deg", type=float, default=3.5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--galsim-maps", type=int, default=16, help="GalSim maps per round (it is slower)")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--noise", action="store_true", help="shape noise (0.26, 30 / arcmin^2) and 1' smoothing")
    args = ap.parse_args()

    extra = {"sigma_e": 0.26, "n_gal": 30.0, "smoothing_fwhm_arcmin": 1.0} if args.noise else {}
    pop = MapPopulation.model_validate({"sources": {"kind": "smail", "z0": 0.5}, "n_pix": args.n_pix,
                                        "size_deg": args.size_deg, **extra})
    t0 = time.perf_counter()
    sim = MapSimulator(pop, args.backend)
    setup = time.perf_counter() - t0
    n = args.n_pix
    rng = np.random.default_rng(0)

    def ours(r: int) -> int:
        sim.simulate(range(r * args.batch, (r + 1) * args.batch))
        return args.batch

    def white(r: int) -> int:
        w = rng.standard_normal((args.batch, n, n))
        np.fft.irfft2(np.fft.rfft2(w), s=(n, n))
        return args.batch

    runners = {"skybench": ours, "white-noise FFT": white}
    try:
        import galsim

        ps = galsim.PowerSpectrum(e_power_function=galsim.LookupTable(sim.ell_table, sim.cl_table, x_log=True,
                                                                      f_log=True), units=galsim.radians)
        spacing = args.size_deg * 3600 / n

        def gs(r: int) -> int:
            for k in range(args.galsim_maps):
                ps.buildGrid(grid_spacing=spacing, ngrid=n, rng=galsim.BaseDeviate(r * 1000 + k + 1),
                             units=galsim.arcsec, get_convergence=True)
            return args.galsim_maps

        runners[f"GalSim {galsim.__version__}"] = gs
    except ImportError:
        print("galsim not installed: no GalSim reference")

    for f in runners.values():  # warm-up
        f(10_000)
    wall = dict.fromkeys(runners, 0.0)
    done = dict.fromkeys(runners, 0)
    for r in range(args.rounds):
        for name, f in runners.items():
            t = time.perf_counter()
            done[name] += f(r)
            wall[name] += time.perf_counter() - t
    rate = {k: done[k] / wall[k] for k in runners}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, backend {sim.backend.name}/"
          f"{sim.backend.device}, {n}x{n} maps, noise+smoothing {args.noise}, setup (pyccl C_l) {setup:.2f} s")
    for k, v in rate.items():
        print(f"{k:>20}: {v:9.1f} maps/s")
    for k, v in rate.items():
        if k != "skybench":
            print(f"ratio skybench / {k}: {rate['skybench'] / v:.2f}")


if __name__ == "__main__":
    main()
