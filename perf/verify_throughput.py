"""Release hashing throughput, on a noise release of lens-ground shape, each against one thread in the same run:
``verify_release`` (shards hashed on several threads) against hashing the same files one after another; and
``write_release`` (``perf/eval_ray.py``'s noise set; each shard hashed as it is written) against the same write
followed by reading every file back to hash it on several threads, as the writer did before.

    python perf/verify_throughput.py [--size 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from eval_ray import noise_release  # noqa: E402

from skybench.release import verify_release  # noqa: E402
from skybench.release.verify import read_manifest, sha256_file, sha256_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=5000, help="test cut-outs (4 x 101 x 101 float32 each)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rel = noise_release(Path(tmp) / "rel", "lens-ground", args.size)
        files = [rel / f for f in sorted(read_manifest(rel)["files"])]
        gb = sum(f.stat().st_size for f in files) / 1e9
        ours, ref = [], []
        for _ in range(args.rounds):  # alternating, so that other load falls on both alike
            t = time.perf_counter()
            assert verify_release(rel) == []
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                sha256_file(f)
            ref.append(time.perf_counter() - t)
        wrote: list[float] = []
        wrote_ref: list[float] = []
        for i in range(args.rounds):  # ours hashes each shard as it writes it; the reference reads them all back
            t = time.perf_counter()
            noise_release(Path(tmp) / f"w{i}", "lens-ground", args.size)
            wrote.append(time.perf_counter() - t)
            t = time.perf_counter()
            again = noise_release(Path(tmp) / f"r{i}", "lens-ground", args.size)
            sha256_files([again / f for f in sorted(read_manifest(again)["files"])])
            wrote_ref.append(time.perf_counter() - t)
    a, b = min(ours), min(ref)
    print(f"{gb:.2f} GB in {len(files)} files, {os.cpu_count()} CPUs, best of {args.rounds}: verify_release "
          f"{gb / a:.2f} GB/s, one thread {gb / b:.2f} GB/s; ratio {b / a:.2f}x")
    a, b = min(wrote), min(wrote_ref)
    print(f"write_release of the same set: {args.size / a:.0f} cut-outs/s; followed by a re-read of every file to "
          f"hash it on several threads (the writer of session 24) {args.size / b:.0f} cut-outs/s; ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()
