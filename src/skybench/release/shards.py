"""Reading the sharded per-object arrays of a release folder, with numpy alone.

The sandboxed runner streams a submission's inputs with :func:`iter_batches`, so this module imports nothing
heavier than numpy (no pandas, no pyarrow). Two ways to read:

* :func:`iter_batches`: plain positioned reads, one batch resident at a time (the touched pages of a memory map
  would count towards a sandbox's RSS); batches restart at each shard file, as the runner feeds a model;
* :class:`ShardedArray`: every shard memory-mapped and seen as one read-only array (random access).
"""

from __future__ import annotations

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
        except ValueError as exc:
            raise ShardError(f"{path}: not a .npy array ({exc})") from exc
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


def iter_batches(folder: Path, name: str, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """float32 batches of ``name`` from its shards, in order, at most ``limit`` rows in all. A batch never spans
    two shard files (the last batch of each may be smaller); only one batch is resident at a time."""
    left = limit
    for shard in shards(folder, name):
        with open(shard.path, "rb") as f:
            f.seek(shard.offset)
            per_row = int(np.prod(shard.shape[1:], dtype=np.int64))
            for start in range(0, shard.rows, batch_size):
                if left is not None and left <= 0:
                    return
                rows = min(shard.rows, start + batch_size) - start
                rows = rows if left is None else min(rows, left)
                batch = np.fromfile(f, dtype=shard.dtype, count=rows * per_row).reshape(rows, *shard.shape[1:])
                yield np.ascontiguousarray(batch, dtype=np.float32)
                if left is not None:
                    left -= rows


class ShardedArray:
    """The shards of one array seen as one read-only (N, ...) array, memory-mapped."""

    def __init__(self, paths: list[Path]):
        self.shards = [np.load(p, mmap_mode="r") for p in paths]
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
