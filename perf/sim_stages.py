"""Where a chunk of the lens simulator's time goes, stage by stage (each stage synchronised on a GPU): parameter
sampling, Philox noise draws, rendering, labels, adding noise, the copy to the host, against the whole
``simulate`` call of the next chunk in the same run (the reference).

    python perf/sim_stages.py [--backend torch-cuda] [--chunk 2048] [--tracks lens-space lens-ground]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from skybench.physics.backend import get_backend
from skybench.physics.philox import normal32
from skybench.tasks.lens.simulator import LensSimulator
from skybench.testkey import as_object_seeds
from skybench.tracks import load_track


def stages(sim: LensSimulator, start: int, chunk: int, sync: Callable[[], None]) -> dict[str, float]:
    """Seconds per stage of ``sim.simulate(0, "test", start, start + chunk)``, as its code runs them."""
    t: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        sync()
        t[name] = time.perf_counter() - t0
        return out

    seeds = timed("seeds", lambda: as_object_seeds(0).many("test", start, start + chunk))
    samples = timed("sample", lambda: sim._sample(seeds))
    shape = (len(sim.bands), sim.renderer.size, sim.renderer.size)
    normal = timed("normal", lambda: normal32(sim.backend, np.asarray(seeds, dtype=np.int64), shape))
    cols = {"id": np.arange(start, start + chunk, dtype=np.int64), **samples}
    model, source = timed("render", lambda: sim.render(cols))
    timed("label", lambda: sim._label(cols, model, source))
    xp = sim.backend.xp
    images = timed("noise", lambda: sim.renderer.add_noise(xp.astype(model, xp.float64), normal))
    timed("to host", lambda: sim.backend.to_numpy(images, np.float32))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="torch-cuda")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--tracks", nargs="+", default=["lens-space", "lens-ground"])
    args = ap.parse_args()
    be = get_backend(args.backend, "philox")
    if be.device == "cuda":
        import torch

        sync: Callable[[], None] = torch.cuda.synchronize
    else:
        def sync() -> None:
            return None
    for name in args.tracks:
        sim = LensSimulator(load_track(name), be)
        sim.simulate(0, "test", 0, args.chunk)  # warm-up: kernels, caches, pinned host blocks
        t = stages(sim, args.chunk, args.chunk, sync)  # its arrays are freed on return, as simulate_release's are
        t0 = time.perf_counter()
        sim.simulate(0, "test", 2 * args.chunk, 3 * args.chunk)
        sync()
        whole = time.perf_counter() - t0
        total = sum(t.values())
        parts = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in t.items())
        print(f"{name}, {args.chunk} objects on {args.backend}: {parts}; stages {total * 1e3:.0f} ms "
              f"({args.chunk / total:.0f}/s); whole simulate {whole * 1e3:.0f} ms ({args.chunk / whole:.0f}/s); "
              f"ratio stages / whole {total / whole:.2f}", flush=True)


if __name__ == "__main__":
    main()
