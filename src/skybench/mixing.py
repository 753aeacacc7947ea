"""One input stream for the simulated test set and a track's real set, in a secret order, with opaque ids.

A model that could tell the real objects (``evaluation.real_set``) from the simulated ones by where they come
from (a second folder, their ids, their file, their batch or position) could score them high and game the
real-set metric. So the organiser writes ONE public-test-like folder holding both sets' per-object arrays
interleaved in a uniformly random order drawn from a secret key, with ids ``x000000 ... x{N-1}`` in stream
order. The mapping back (stream position -> set, row) stays in this process (:class:`MixedInputs`); the
predictions, which come back in stream order, are split with it into the test set's and the real set's, each
in its own ``index.parquet`` order, so the scorers are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .release import ReleaseError
from .submission import PredictResult

SHARD_SIZE = 10_000  # rows per array file, as release.write_release
_BLOCK = 256  # rows gathered per write


@dataclass(frozen=True)
class _Rows:
    """The rows of one per-object array spread over a folder's shard files, read with plain positioned reads
    (no memory map: only one block of rows is ever resident)."""

    files: list[tuple[Path, int, int]]  # (path, header bytes, rows)
    row_shape: tuple[int, ...]

    @property
    def n(self) -> int:
        return sum(rows for _, _, rows in self.files)


def _array_rows(folder: Path, name: str) -> _Rows:
    files, shapes = [], set()
    for path in sorted(folder.glob(f"{name}-*.npy")):
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if fortran or dtype != np.dtype("<f4") or not shape:
                raise ReleaseError(f"{path}: expected a C-ordered little-endian float32 array, got {dtype} "
                                   f"{'Fortran' if fortran else 'C'}-ordered of shape {shape}")
            files.append((path, f.tell(), int(shape[0])))
            shapes.add(tuple(int(s) for s in shape[1:]))
    if len(shapes) != 1:
        raise ReleaseError(f"{folder}: the {name}-*.npy files have per-object shapes {sorted(shapes)}")
    return _Rows(files, shapes.pop())


def _inputs(folder: Path) -> tuple[dict[str, _Rows], np.ndarray]:
    """({array name: rows}, ids) of a public test folder, checked for one row per id in every array."""
    from .runner import RunnerError, input_arrays

    try:
        names = input_arrays(folder)
    except RunnerError as exc:
        raise ReleaseError(str(exc)) from exc
    arrays = {name: _array_rows(folder, name) for name in names}
    ids = pd.read_parquet(folder / "index.parquet", columns=["id"])["id"].to_numpy()
    for name, rows in arrays.items():
        if rows.n != len(ids):
            raise ReleaseError(f"{folder}: {rows.n} rows of {name} but {len(ids)} ids in index.parquet")
    return arrays, ids


def secret_order(n: int, key: bytes) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` keyed by ``key``: positions sorted by a keyed hash
    (BLAKE2b as a PRF), so it cannot be derived without the key."""
    tags = np.fromiter((int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), key=key, digest_size=8).digest(),
                                       "little") for i in range(n)), dtype=np.uint64, count=n)
    return np.argsort(tags, kind="stable")


@dataclass
class MixedInputs:
    """A mixed input folder and the parent-side mapping of its stream back to the two sets."""

    folder: Path  # what the sandbox sees: <array>-*.npy and index.parquet (opaque ids only)
    stream_ids: np.ndarray  # the opaque ids, in stream order
    is_real: np.ndarray  # bool per stream position
    row: np.ndarray  # per stream position: the row in its own set's index.parquet
    test_ids: np.ndarray  # ids of the (possibly limited) simulated test set, in its index order
    real_ids: np.ndarray  # ids of the real set, in its index order
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def mapping(self) -> pd.DataFrame:
        """opaque id -> (source ``test``/``real``, original id); for the organiser only, never written to the folder."""
        original = np.empty(len(self.row), dtype=object)
        original[self.is_real] = self.real_ids[self.row[self.is_real]]
        original[~self.is_real] = self.test_ids[self.row[~self.is_real]]
        return pd.DataFrame({"id": self.stream_ids, "source": np.where(self.is_real, "real", "test"),
                             "original_id": original})

    def split(self, res: PredictResult) -> PredictResult:
        """The stream's result as the test set's (ids and predictions in its index order), with the real set's
        as ``.extra``. A failed result stays failed, with the test ids."""
        if not res.ok or res.predictions is None:
            return replace(res, ids=self.test_ids, predictions=None)
        if len(res.ids) != len(self.stream_ids) or not np.array_equal(res.ids, self.stream_ids):
            return replace(res, ok=False, reason="the predictions came back out of stream order (an executor bug)",
                           ids=self.test_ids, predictions=None)
        pred = np.asarray(res.predictions)
        test = np.empty((len(self.test_ids), *pred.shape[1:]), pred.dtype)
        real = np.empty((len(self.real_ids), *pred.shape[1:]), pred.dtype)
        test[self.row[~self.is_real]] = pred[~self.is_real]
        real[self.row[self.is_real]] = pred[self.is_real]
        extra = PredictResult(True, "", real, self.real_ids, res.device, 0.0)
        return replace(res, predictions=test, ids=self.test_ids, extra=extra)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def mix_inputs(test_dir: Path, real_dir: Path, dest: Path | None = None, *, key: bytes | None = None,
               limit: int | None = None, shard_size: int = SHARD_SIZE) -> MixedInputs:
    """Write the public test folder ``test_dir`` and the real set's public test folder ``real_dir`` as one
    folder of interleaved inputs, in an order drawn from ``key`` (default: 32 fresh random bytes).

    ``dest``: the folder to create (default: a new temporary folder, removed by :meth:`MixedInputs.cleanup` or
    when the object is collected). ``limit``: only the first ``limit`` test objects (and every real one).
    Raises ``ReleaseError`` when the two sets do not give a model the same arrays of the same shapes."""
    test_dir, real_dir = Path(test_dir), Path(real_dir)
    test, test_ids = _inputs(test_dir)
    real, real_ids = _inputs(real_dir)
    want = {k: v.row_shape for k, v in test.items()}
    got = {k: v.row_shape for k, v in real.items()}
    if want != got:
        def show(d: dict) -> str:
            return ", ".join(f"{k} {tuple(v)}" for k, v in d.items())

        raise ReleaseError(f"{real_dir}: the real set's per-object inputs ({show(got)}) differ from the test set's "
                           f"in {test_dir} ({show(want)}), so they cannot be mixed into one input stream; "
                           f"re-import the real set for this track (same arrays, bands and cut-out size)")
    n_test = len(test_ids) if limit is None else min(limit, len(test_ids))
    test_ids = test_ids[:n_test]
    n = n_test + len(real_ids)
    order = secret_order(n, key if key is not None else secrets.token_bytes(32))
    # Stream position p holds object order[p] of the concatenation (test rows, then real rows).
    is_real = order >= n_test
    row = np.where(is_real, order - n_test, order)
    tmp = None
    if dest is None:
        tmp = tempfile.TemporaryDirectory(prefix="skybench-mixed-")
        dest = Path(tmp.name) / "inputs"
    dest = Path(dest)
    try:
        dest.mkdir(parents=True)
        for name in want:
            _write_array(dest, name, [test[name], real[name]], is_real, row, shard_size)
        width = max(6, len(str(n - 1)))
        stream_ids = np.array([f"x{i:0{width}d}" for i in range(n)], dtype=object)
        pq.write_table(pa.table({"id": pa.array(stream_ids, pa.string())}), dest / "index.parquet")
        if tmp is not None:
            Path(tmp.name).chmod(0o755)  # mkdtemp makes it 0700
        for p in [dest, *dest.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)  # readable by the sandbox's unprivileged uid
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return MixedInputs(dest, stream_ids, is_real, row, test_ids, real_ids, tmp)


def _write_array(dest: Path, name: str, sources: list[_Rows], is_real: np.ndarray, row: np.ndarray,
                 shard_size: int) -> None:
    """``dest/<name>-00000.npy ...``: the stream's rows of one array, appended a block at a time."""
    shape = sources[0].row_shape
    row_bytes = int(np.prod(shape, dtype=np.int64)) * 4
    locate = [_locator(s) for s in sources]
    fds: dict[Path, int] = {}
    try:
        for k, a in enumerate(range(0, len(row), shard_size)):
            b = min(len(row), a + shard_size)
            with open(dest / f"{name}-{k:05d}.npy", "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (b - a, *shape)})
                for c in range(a, b, _BLOCK):
                    block = bytearray()
                    for p in range(c, min(b, c + _BLOCK)):
                        path, offset = locate[int(is_real[p])](int(row[p]), row_bytes)
                        fd = fds.get(path)
                        if fd is None:
                            fd = fds[path] = os.open(path, os.O_RDONLY)
                        data = os.pread(fd, row_bytes, offset)
                        if len(data) != row_bytes:
                            raise ReleaseError(f"{path}: truncated (row at byte {offset})")
                        block += data
                    f.write(block)
    finally:
        for fd in fds.values():
            os.close(fd)


def _locator(rows: _Rows) -> Callable[[int, int], tuple[Path, int]]:
    """row -> (file, byte offset) of that row in a set's shard files."""
    starts = np.cumsum([0] + [r for _, _, r in rows.files])

    def locate(i: int, row_bytes: int) -> tuple[Path, int]:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        path, header, _ = rows.files[k]
        return path, header + (i - int(starts[k])) * row_bytes

    return locate
