"""How fast the sandboxed runner reads its inputs: lens-ground-shaped test shards (4 x 101 x 101 float32) through
the shard reader's plain mode (a fresh array per batch) and its read-ahead mode (two reused buffers, the next batch
read on a thread, what the runner uses), and `skybench evaluate` of a model that costs nothing (a python
submission returning one pixel per cut-out: verify + sandbox + reading + checks + scoring), each against one bulk
read of the same shard files into one buffer in the same run (the reference), as a ratio.

    python perf/runner_read.py [--size 20000] [--work-ms 40]

``--work-ms``: a stand-in model that holds the GIL-free CPU for that long per batch of 256 (a ``time.sleep``, as a
GPU kernel leaves the host free), to show what the read-ahead overlaps. The shards are read from the page cache
(written just before; a first pass warms it)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_ray import noise_release  # noqa: E402

PREDICT = """
def load(model_dir):
    return None
def predict(model, batch):
    return batch[:, 0, 50, 50]
"""


def bulk_read(files: list[Path]) -> float:
    """Seconds to read every file whole into one reused buffer (the reference: no per-batch work at all)."""
    size = max(f.stat().st_size for f in files)
    buf = bytearray(size)
    start = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            view, got = memoryview(buf), 0
            while n := fh.readinto(view[got:]):
                got += n
    return time.perf_counter() - start


def batches(folder: Path, prefetch: bool, work_s: float) -> float:
    from skybench.release.shards import iter_batches

    start = time.perf_counter()
    for b in iter_batches(folder, "images", 256, prefetch=prefetch):
        float(b[0, 0, 0, 0])
        if work_s:
            time.sleep(work_s * len(b) / 256)
    return time.perf_counter() - start


def evaluate_once(sub: Path, release: Path, out: Path) -> tuple[float, float]:
    """(wall seconds of `skybench evaluate`, wall seconds of its sandboxed run) for one fresh evaluation."""
    from skybench.harness.evaluate import evaluate

    start = time.perf_counter()
    (o,) = evaluate([sub], "lens-ground", release, out=out, publish=False, force=True)
    wall = time.perf_counter() - start
    if o.status != "FINISHED" or o.record is None:
        raise SystemExit(f"FAIL: evaluate: {o.status} {o.reason}")
    return wall, float(json.loads((o.record / "run.json").read_text())["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--work-ms", type=float, default=40.0)
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()
    from skybench.release import layout

    with tempfile.TemporaryDirectory(prefix="skybench-read-", dir=args.tmp) as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        release = noise_release(root / "release", "lens-ground", args.size)
        folder = layout.public_dir(release, "test")
        files = layout.shard_paths(folder, "images")
        gb = sum(f.stat().st_size for f in files) / 1e9
        bulk_read(files)  # warm the page cache
        ref = min(bulk_read(files) for _ in range(2))
        print(f"{args.size} cut-outs, {gb:.2f} GB in {len(files)} shards; reference bulk read {gb / ref:.2f} GB/s "
              f"({args.size / ref:,.0f} cut-outs/s)")
        rows: list[tuple[str, float]] = []
        runs: list[tuple[str, Callable[[], float]]] = [
            ("plain reader (fresh array per batch)", lambda: batches(folder, False, 0.0)),
            ("read-ahead reader (the runner's)", lambda: batches(folder, True, 0.0)),
        ]
        if args.work_ms:
            w = args.work_ms / 1000
            runs += [(f"plain reader + {args.work_ms:g} ms model per batch", lambda: batches(folder, False, w)),
                     (f"read-ahead reader + {args.work_ms:g} ms model per batch", lambda: batches(folder, True, w))]
        for name, fn in runs:
            rows.append((name, min(fn() for _ in range(2))))
        sub = root / "subs" / "pixel"
        sub.mkdir(parents=True)
        (sub / "predict.py").write_text(PREDICT)
        (sub / "submission.yaml").write_text("team: perf\nname: pixel\ntrack: lens-ground\nformat: python\n"
                                             "model: predict.py\n")
        for p in (root / "subs", sub, *sub.iterdir()):
            p.chmod(0o755)
        walls = [evaluate_once(sub, release, root / "evals") for _ in range(2)]
        wall, inside = min(walls)
        rows += [("`skybench evaluate`, zero-cost model (whole call)", wall),
                 ("  of which the sandboxed run", inside)]
        print(f"{'':58s} {'cut-outs/s':>11s} {'GB/s':>6s} {'ratio to bulk read':>19s}")
        for name, s in rows:
            print(f"{name:58s} {args.size / s:11,.0f} {gb / s:6.2f} {ref / s:19.2f}")


if __name__ == "__main__":
    main()
