"""Scene-simulator throughput (issue 18): survey tiles per second against the lens simulator's cut-outs, per pixel.

The reference is measured in the same run: the lens-space simulator (``LensSimulator.simulate``, chunks of 32)
rendering as many 101x101 cut-outs as cover the same number of pixels as the tiles. The two are timed in
alternating rounds, so that load from other jobs falls on both alike, with one CPU thread each. The scene's time
is split into its parts: the field (drawing and rendering galaxies and stars, one PSF convolution of the tile),
the lens population (drawing lens-track objects, rendering their stamps, the visibility rule, placement) and the
observation (noise and saturation).

    python perf/detect_tiles.py [--tile 1024] [--tiles 8] [--rounds 4] [--backend numpy]

``--evaluate N``: instead, the evaluator's time per tile on a challenge-profile lens-tiles release of N test tiles
(1024 x 1024, made in a temporary folder): a streaming detector (the brightest 8x8-pixel blocks) evaluated through
the harness in the sandbox, with the local executor and with the Ray executor (2 shards), under the track's memory
limit; the sandboxed run's own clock (``run.json`` seconds) and the scoring time per tile.

    python perf/detect_tiles.py --evaluate 32
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

from skybench.physics.backend import get_backend  # noqa: E402
from skybench.tasks.detect.config import DetectTrack, load_detect_track  # noqa: E402
from skybench.tasks.detect.simulator import DetectSimulator  # noqa: E402
from skybench.tasks.lens.simulator import LensSimulator  # noqa: E402
from skybench.testkey import public_object_seed  # noqa: E402
from skybench.tracks import load_track  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "tests" / "detect" / "lens-tiles-small.yaml"
CHUNK = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tile", type=int, default=1024, help="tile side in pixels")
    ap.add_argument("--tiles", type=int, default=8, help="tiles per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--evaluate", type=int, default=0, metavar="N", help="time the evaluator on N challenge tiles")
    args = ap.parse_args()
    if args.evaluate:
        return evaluate_tiles(args.evaluate)

    d = load_detect_track(YAML).model_dump()
    d["tile"]["size"] = args.tile
    track = DetectTrack.model_validate(d)
    backend = get_backend(args.backend)
    scenes = DetectSimulator(track, backend)
    cutouts = LensSimulator(load_track("lens-space"), backend)
    n_cut = int(round(args.tiles * args.tile**2 / cutouts.renderer.size**2))  # the same number of pixels
    scenes.simulate_tiles(0, "test", 0, 1)  # warm-up
    cutouts.simulate(0, "test", 0, 8)

    t_scene = t_cut = 0.0
    parts = {"field": 0.0, "lens population": 0.0, "noise + saturation": 0.0}
    objects = {"galaxy": 0, "star": 0, "lens": 0, "lookalike": 0, "deflector": 0}
    for r in range(args.rounds):
        first = 1 + r * args.tiles
        t0 = time.perf_counter()
        scenes.simulate_tiles(0, "test", first, first + args.tiles)
        t_scene += time.perf_counter() - t0
        t0 = time.perf_counter()
        for a in range(r * n_cut, (r + 1) * n_cut, CHUNK):
            cutouts.simulate(0, "test", a, min(a + CHUNK, (r + 1) * n_cut))
        t_cut += time.perf_counter() - t0
    # the split of the scene's time, on the same tiles again, part by part
    for i in range(1, 1 + args.tiles):
        seed = public_object_seed(0, "test", i)
        t0 = time.perf_counter()
        gal, stars = scenes.draw_field(seed)
        tile = np.zeros((1, args.tile, args.tile))
        scenes._add_galaxies(tile, gal)
        scenes._add_stars(tile, stars)
        scenes.tile_renderer.convolve(tile[None].astype(np.float32))
        t1 = time.perf_counter()
        sc = scenes.scene(seed)
        t2 = time.perf_counter()
        scenes.observe(sc)
        t3 = time.perf_counter()
        parts["field"] += t1 - t0
        parts["lens population"] += (t2 - t1) - (t1 - t0)  # scene() = field + lens population
        parts["noise + saturation"] += t3 - t2
        for k in objects:
            objects[k] += int(np.sum(sc.truth["kind"] == k))

    n_tiles = args.rounds * args.tiles
    px = n_tiles * args.tile**2
    px_cut = args.rounds * n_cut * cutouts.renderer.size**2
    print(f"tiles {args.tile}x{args.tile} ({track.tile_area_deg2 * 3600:.2f} arcmin^2), backend {args.backend}, "
          f"one thread; per tile: " + ", ".join(f"{v / args.tiles:.1f} {k}" for k, v in objects.items()))
    print(f"scene simulator: {n_tiles / t_scene:.2f} tiles/s, {px / t_scene / 1e6:.2f} Mpixel/s")
    print(f"lens cut-outs  : {args.rounds * n_cut / t_cut:.1f} cut-outs/s, {px_cut / t_cut / 1e6:.2f} Mpixel/s "
          f"({n_cut} per round, the pixels of {args.tiles} tiles)")
    print(f"ratio (pixels per second, scene / cut-outs): {(px / t_scene) / (px_cut / t_cut):.2f}")
    total = sum(parts.values())
    print("scene time: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts.items()))


BLOCKS = (Path(__file__).parent / "blocks_predict.py").read_text()  # the timed python detector


def evaluate_tiles(n: int) -> None:
    """The evaluator's seconds per tile on ``n`` challenge tiles, local and Ray (see the module docstring)."""
    import json
    import tempfile

    import yaml

    from skybench.harness.evaluate import evaluate, record_dir
    from skybench.simulate import simulate_release
    from skybench.tracks import benchmarks_dir

    raw = yaml.safe_load((benchmarks_dir() / "lens-tiles.yaml").read_text())
    raw["profiles"]["challenge"] = {"train": 0, "val": 0, "test": n}
    track = DetectTrack.model_validate(raw)
    with tempfile.TemporaryDirectory(prefix="skybench-perf-") as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # never used: publish=False
        t0 = time.perf_counter()
        release = simulate_release(track, root / "rel", profile="challenge", seed=8, progress=False, workers=1,
                                   backend="numpy", key_file=root / "challenge.key")
        print(f"{n} challenge tiles of 1024 x 1024 simulated in {time.perf_counter() - t0:.1f} s; sandbox "
              f"{track.sandbox.memory_mb} MB, batches of {track.evaluation.batch_size}")
        sub = root / "subs" / "perf" / "blocks"
        sub.mkdir(parents=True)
        (sub / "predict.py").write_text(BLOCKS)
        (sub / "submission.yaml").write_text(yaml.safe_dump({"team": "perf", "name": "blocks", "track": "lens-tiles",
                                                             "format": "python", "model": "predict.py"}))
        for p in (root, root / "subs", root / "subs" / "perf", sub, *sub.iterdir()):
            p.chmod(0o755)
        for executor, options in (("local", {}), ("ray", {"shards": 2})):
            t0 = time.perf_counter()
            (o,) = evaluate([sub], track, release, out=root / executor, publish=False, executor=executor,
                            executor_options=options)
            wall = time.perf_counter() - t0
            run = json.loads((record_dir(root / executor, "perf", "blocks") / "run.json").read_text())
            print(f"{executor:5s}: {o.status}, sandboxed run {run['seconds']:.1f} s ({run['seconds'] / n:.3f} s per "
                  f"tile), whole evaluation {wall:.1f} s ({wall / n:.2f} s per tile, scoring and records included)")


if __name__ == "__main__":
    main()
