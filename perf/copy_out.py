"""Copy-out of a sandbox's outputs: ``sandbox._copy_sparse`` (data regions only, holes kept) against
``shutil.copyfileobj`` (what it replaced) on the same files, in one run: a dense predictions file (the usual
case) and a sparse one of the same size (a hostile output that is all hole).

    python perf/copy_out.py [--mb 256] [--repeats 3]

Prints seconds per copy, MB/s, the ratio to the reference and the bytes the copy occupies on disk."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from skybench.harness.sandbox import _copy_sparse


def _sparse_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        _copy_sparse(f.fileno(), out.fileno(), os.fstat(f.fileno()).st_size)


def _reference(src: Path, dst: Path) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out)


def _best(copy: Callable[[Path, Path], None], src: Path, dst: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        dst.unlink(missing_ok=True)
        t = time.perf_counter()
        copy(src, dst)
        os.sync()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="skybench-copy-") as tmp:
        dense, sparse = Path(tmp) / "dense.npy", Path(tmp) / "sparse.npy"
        dense.write_bytes(os.urandom(size))
        with open(sparse, "wb") as f:
            f.truncate(size)
        print(f"{'file':<8} {'copy':<14} {'seconds':>8} {'MB/s':>8} {'ratio':>6} {'on disk':>10}")
        for label, src in (("dense", dense), ("sparse", sparse)):
            ref = _best(_reference, src, Path(tmp) / "ref", args.repeats)
            ref_disk = (Path(tmp) / "ref").stat().st_blocks * 512
            new = _best(_sparse_copy, src, Path(tmp) / "new", args.repeats)
            new_disk = (Path(tmp) / "new").stat().st_blocks * 512
            for name, sec, disk in (("copyfileobj", ref, ref_disk), ("_copy_sparse", new, new_disk)):
                print(f"{label:<8} {name:<14} {sec:8.3f} {args.mb / sec:8.0f} {ref / sec:6.2f} "
                      f"{disk / 2**20:8.1f} MB")


if __name__ == "__main__":
    main()
