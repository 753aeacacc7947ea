"""Evaluation throughput of the Ray executor (1 and 2 local workers) against the local executor, with peak memory.

    python perf/eval_ray.py --size 100000          # the challenge size: 16 GB of lens-ground cut-outs, a big machine
    python perf/eval_ray.py --size 5000            # what a shared 2-core box can do in a few minutes

The test set is written in the benchmark (never in CI) with the release writer: lens-ground-shaped cut-outs
(4 x 101 x 101 float32, shards of 10,000) of Gaussian noise with random labels, since throughput does not depend
on the pixels (``--simulate`` uses the physics simulator instead, much slower). The model is the ONNX CNN of
``perf/eval_throughput.py``. Every run evaluates the same submission on the same release (verify + sandboxed
inference + checks + scoring); the Ray runs include neither ``ray.init`` (reported apart) nor MLflow. Peak memory
is the largest summed RSS of this process and all its descendants (Ray's raylet, workers, the sandboxes),
sampled every 0.2 s. Predictions of all runs are checked to be identical."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))


class PeakRSS:
    """Largest summed RSS of this process tree while in the ``with`` block."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def noise_release(out: Path, track_name: str, n: int) -> Path:
    from skybench.release import write_release
    from skybench.tasks.lens.score import CONTAMINANTS
    from skybench.tracks import load_track

    track = load_track(track_name)
    shape = (len(track.band_names), track.cutout.size, track.cutout.size)

    # throughput does not depend on the pixels: each cut-out is a random pick from a pool drawn once (drawing every
    # cut-out afresh took 0.9 ms each, most of writing 100,000)
    pool = np.random.default_rng(n).standard_normal((min(n, 512), *shape), dtype=np.float32)

    def chunks(split: str, ranges: list[tuple[int, int]]):  # noqa: ANN202
        for a, b in ranges:
            rng = np.random.default_rng(a)
            meta: dict[str, np.ndarray] = {"id": np.arange(a, b), "is_lens": rng.integers(0, 2, b - a)}
            for s in track.strata:  # every column the scorer bins by, random within its bins
                if s.column == "contaminant":  # derived from has_<kind> (tasks/lens/score.py, contaminant_mask)
                    meta |= {f"has_{kind}": rng.random(b - a) < 0.1 for kind in CONTAMINANTS}
                elif s.edges is not None:
                    meta[s.column] = rng.uniform(s.edges[0], s.edges[-1], b - a)
                else:
                    meta[s.column] = rng.choice(np.asarray(s.values), b - a)
            yield pool[rng.integers(0, len(pool), b - a)], pd.DataFrame(meta)

    return write_release(out, info={"track": track.name, "task": "lens", "profile": "perf-noise", "seed": 0},
                         counts={"test": n}, image_shape=shape, make_chunks=chunks, chunk_size=256,
                         label_columns=("is_lens",), progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000, help="test cut-outs (challenge: 100,000)")
    ap.add_argument("--track", default="lens-ground")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to run")
    ap.add_argument("--simulate", action="store_true", help="simulate the release instead of noise cut-outs")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (needs ~170 kB per cut-out)")
    args = ap.parse_args()

    import ray
    from eval_throughput import cnn_submission

    from skybench.harness.evaluate import evaluate
    from skybench.harness.executors import RayExecutor
    from skybench.tracks import load_track

    track = load_track(args.track)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        t = time.perf_counter()
        if args.simulate:
            from skybench.simulate import simulate_release

            release = simulate_release(track, tmp / "release", size=args.size, progress=False)
        else:
            release = noise_release(tmp / "release", track.name, args.size)
        print(f"wrote the {args.size}-cut-out test set in {time.perf_counter() - t:.0f} s", flush=True)
        sub = cnn_submission(tmp, track)

        runs: list[tuple[str, object, int]] = [("local", "local", 0)]
        runs += [(f"ray, {k} worker{'s' if k > 1 else ''}", RayExecutor(), k) for k in args.workers]
        preds = []
        for label, executor, k in runs:
            init = 0.0
            if k:
                t = time.perf_counter()
                ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False)
                init = time.perf_counter() - t
            with PeakRSS() as mem:
                t = time.perf_counter()
                (o,) = evaluate([sub], track, release, out=tmp / f"evals-{k}", publish=False, executor=executor)
                wall = time.perf_counter() - t
            if k:
                ray.shutdown()
            assert o.status == "FINISHED", o.reason
            (csv,) = tmp.glob(f"evals-{k}-private/*/predictions.csv")  # the organiser's folder (evaluate.py)
            preds.append(pd.read_csv(csv, dtype=str))
            rows.append((label, args.size / wall, wall, init, mem.peak / 2**20))
            print(f"{label:16s} {args.size / wall:8.1f} cut-outs/s  ({wall:.1f} s; ray.init {init:.1f} s; "
                  f"peak RSS of the process tree {mem.peak / 2**20:.0f} MB)", flush=True)
        same = all(p.equals(preds[0]) for p in preds[1:])
        print(f"predictions identical across executors: {same}")
        assert same

    print("\n| executor | cut-outs/s | wall (s) | ray.init (s) | peak RSS, process tree (MB) |\n|---|---|---|---|---|")
    for label, rate, wall, init, peak in rows:
        print(f"| {label} | {rate:.1f} | {wall:.1f} | {init:.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
