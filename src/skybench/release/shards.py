"""Reading the sharded per-object arrays of a release folder, with numpy alone.

The sandboxed runner streams a submission's inputs with :func:`iter_batches`, so this module imports nothing
heavier than numpy (no pandas, no pyarrow). Two ways to read:

* :func:`iter_batches`: plain positioned reads, one batch resident at a time (the touched pages of a memory map
  would count towards a sandbox's RSS); batches restart at each shard file, as the runner feeds a model;
* :class:`ShardedArray`: every shard memory-mapped and seen as one read-only array (random access).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skybench.release import layout
from skybench.release.verify import ReleaseError

INPUT_ARRAYS = ("images", "features", "latents", "params")  # the per-object arrays a model may get, in this order
# (latents: the generate task's latent vectors, drawn per object from the test-set key; params: a conditional
# generate track's (Omega_m, sigma8) per object)


class ShardError(ReleaseError):
    """A shard file that is not a plain C-ordered float32 ``.npy`` array, or shards that do not fit together."""


@dataclass(frozen=True)
class Shard:
    """One shard file: where its rows start (the header's length in bytes) and its shape."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def read_shard(path: Path) -> Shard:
    """The header of one ``.npy`` shard; ShardError unless it is a C-ordered array of at least one axis."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except (ValueError, SyntaxError, RecursionError) as exc:  # the header is a Python literal, parsed
            raise ShardError(f"{path}: not a .npy array ({type(exc).__name__}: {exc})") from exc
        if fortran:
            raise ShardError(f"{path.name}: Fortran-ordered arrays are not supported")
        if not shape:
            raise ShardError(f"{path}: a 0-d array, expected one row per object")
        return Shard(Path(path), f.tell(), tuple(int(s) for s in shape), np.dtype(dtype))


def shards(folder: Path, name: str, *, float32: bool = False) -> list[Shard]:
    """The shards of the array ``name`` in ``folder``, in row order, checked to share one per-object shape.

    ``float32``: also require little-endian float32 (what the writer writes), so rows can be copied as bytes."""
    found = [read_shard(p) for p in layout.shard_paths(folder, name)]
    if float32:
        for s in found:
            if s.dtype != np.dtype("<f4"):
                raise ShardError(f"{s.path}: expected a C-ordered little-endian float32 array, got {s.dtype} "
                                 f"of shape {s.shape}")
    row_shapes = sorted({s.shape[1:] for s in found})
    if len(row_shapes) > 1:
        raise ShardError(f"{folder}: the {layout.shard_pattern(name)} files have per-object shapes {row_shapes}")
    return found


def input_arrays(folder: Path) -> list[str]:
    """Names of the per-object arrays in an input folder (a public test folder), in the order a model gets them."""
    names = [n for n in INPUT_ARRAYS if layout.shard_paths(folder, n)]
    if not names:
        raise ShardError(f"{folder}: no input arrays ({', '.join(layout.shard_pattern(n) for n in INPUT_ARRAYS)})")
    return names


def count_rows(folder: Path, name: str) -> int:
    return sum(s.rows for s in shards(folder, name))


def iter_batches(folder: Path, name: str, batch_size: int, limit: int | None = None, *,
                 prefetch: bool = False) -> Iterator[np.ndarray]:
    """float32 batches of ``name`` from its shards, in order, at most ``limit`` rows in all. A batch never spans
    two shard files (the last batch of each may be smaller); only one batch is resident at a time.

    ``prefetch`` (float32 shards): the next batch is read on a thread while the caller uses this one, into one of
    two buffers reused throughout (a fresh buffer per batch costs a page fault per 4 KiB, the larger part of
    reading from the page cache); so a batch is valid only until the next one is drawn: copy what you keep."""
    plan = _plan(folder, name, batch_size, limit)
    if not prefetch or any(s.dtype != np.dtype("<f4") for s, _, _ in plan):
        for shard, batches in itertools.groupby(plan, key=lambda b: b[0]):  # each shard opened once
            with open(shard.path, "rb") as f:
                for _, start, rows in batches:
                    yield np.ascontiguousarray(_read(f, shard, start, rows, None), dtype=np.float32)
        return
    yield from _prefetched(plan, batch_size)


def _plan(folder: Path, name: str, batch_size: int, limit: int | None) -> list[tuple[Shard, int, int]]:
    """(shard, first row, rows) of each batch."""
    plan: list[tuple[Shard, int, int]] = []
    left = limit
    for shard in shards(folder, name):
        for start in range(0, shard.rows, batch_size):
            if left is not None and left <= 0:
                return plan
            rows = min(shard.rows, start + batch_size) - start
            rows = rows if left is None else min(rows, left)
            plan.append((shard, start, rows))
            if left is not None:
                left -= rows
    return plan


def _read(f: Any, shard: Shard, start: int, rows: int, out: np.ndarray | None) -> np.ndarray:
    """Rows ``start`` .. ``start + rows`` of ``shard`` from its open file ``f``, into ``out`` when given."""
    f.seek(shard.offset + start * shard.row_bytes)
    if out is None:
        out = np.empty((rows, *shard.shape[1:]), shard.dtype)
    view = memoryview(out.data).cast("B")
    got = 0
    while got < view.nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise ShardError(f"{shard.path}: ends after {got} of the {view.nbytes} bytes of rows {start}.."
                             f"{start + rows - 1} (a truncated shard)")
        got += n
    return out


def _prefetched(plan: list[tuple[Shard, int, int]], batch_size: int) -> Iterator[np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    if not plan:
        return
    row_shape = plan[0][0].shape[1:]
    buffers = [np.empty((batch_size, *row_shape), np.float32) for _ in range(min(2, len(plan)))]
    files: dict[Path, Any] = {}

    def load(i: int) -> np.ndarray:
        shard, start, rows = plan[i]
        if shard.path not in files:  # one shard open at a time: the plan goes through them in order
            for f in files.values():
                f.close()
            files.clear()
            files[shard.path] = open(shard.path, "rb", buffering=0)  # noqa: SIM115 - closed above or below
        return _read(files[shard.path], shard, start, rows, buffers[i % 2][:rows])

    with ThreadPoolExecutor(1, thread_name_prefix="skybench-read") as pool:
        ahead = pool.submit(load, 0)
        try:
            for i in range(len(plan)):
                batch = ahead.result()
                if i + 1 < len(plan):  # the other buffer: the caller is done with the batch before this one
                    ahead = pool.submit(load, i + 1)
                yield batch
        finally:
            ahead.cancel()
            with contextlib.suppress(Exception):  # the caller stopped or failed first: that is what it sees
                ahead.result()
            for f in files.values():
                f.close()


def _mapped(path: Path) -> np.ndarray:
    """One shard, memory-mapped read-only; ShardError naming it when its header is not an array's or the file is
    shorter than its header says (numpy's own errors named neither)."""
    shard = read_shard(path)
    need = shard.offset + shard.rows * shard.row_bytes
    if (size := path.stat().st_size) < need:
        raise ShardError(f"{path}: {size} bytes, its header describes {need} (a truncated shard; check the release "
                         "with `skybench verify`)")
    if not shard.rows:
        return np.empty(shard.shape, shard.dtype)
    return np.memmap(path, dtype=shard.dtype, mode="r", offset=shard.offset, shape=shard.shape)


class ShardedArray:
    """The shards of one array seen as one read-only (N, ...) array, memory-mapped."""

    def __init__(self, paths: list[Path]):
        self.shards = [_mapped(Path(p)) for p in paths]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        first = self.shards[0] if self.shards else np.empty((0,), np.float32)
        self.shape = (int(self.offsets[-1]), *first.shape[1:])
        self.dtype = first.dtype

    @classmethod
    def open(cls, folder: Path, name: str) -> ShardedArray:
        """The array ``name`` of a release folder; FileNotFoundError when it has no shard of it."""
        paths = layout.shard_paths(folder, name)
        if not paths:
            raise FileNotFoundError(f"{folder}: no {name} ({layout.shard_pattern(name)})")
        return cls(paths)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            s = int(np.searchsorted(self.offsets, k, side="right") - 1)
            return np.asarray(self.shards[s][k - self.offsets[s]])
        idx = np.arange(len(self))[key]
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        shard_of = np.searchsorted(self.offsets, idx, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self.shards[s][idx[sel] - self.offsets[s]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive batches, streamed from the shards (never more than one batch in memory)."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]
