"""The real set folded into a release's test split: one stream, a keyed order, opaque ids; split back in the parent.

A model that could tell the real objects (``evaluation.real_set``) from the simulated ones could score them
high and game the real-set metric: by where they come from (a second folder, their ids, their file, their batch
or position), or by not having seen them: the public test inputs are published, so a model can carry a
fingerprint of every published image and flag any other. So the real objects are part of the published test
inputs: at release time (:func:`fold_in`, called by ``skybench simulate``) ``public/test`` is rewritten as ONE
stream holding the simulated test objects and the real set's, interleaved in an order drawn from the release's
test-set key (:func:`order_key`), with ids ``t000000 ... t{N-1}`` in stream order. The mapping (stream id ->
source ``sim``/``real``, original id, row) is kept in ``hidden/test/sources.parquet``; the evaluator runs the
sandbox on ``public/test`` as it is and splits the predictions with it (:class:`Stream`) into the simulated
test set's and the real set's, each in its original order, so the scorers are unchanged.

A real set imported with public randomness could be rebuilt by a team and found in the stream by matching, so
:func:`fold_in` takes only a real set imported under the release's own test-set key (:func:`check_real_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from skybench.release import layout
from skybench.release.shards import input_arrays, shards
from skybench.release.verify import ReleaseError, read_manifest
from skybench.testkey import ReleaseKey

if TYPE_CHECKING:  # annotations only: the release package does not import the sandbox
    from skybench.harness.submission import PredictResult

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
    found = shards(folder, name, float32=True)  # ShardError (a ReleaseError) for anything but C-ordered <f4
    if not found:
        raise ReleaseError(f"{folder}: no {layout.shard_pattern(name)} files")
    return _Rows([(s.path, s.offset, s.rows) for s in found], found[0].shape[1:])


def _inputs(folder: Path) -> tuple[dict[str, _Rows], np.ndarray]:
    """({array name: rows}, ids) of a public test folder, checked for one row per id in every array."""
    names = input_arrays(folder)  # ShardError, a ReleaseError, when there is none
    arrays = {name: _array_rows(folder, name) for name in names}
    ids = pd.read_parquet(layout.index_path(folder), columns=["id"])["id"].to_numpy()
    for name, rows in arrays.items():
        if rows.n != len(ids):
            raise ReleaseError(f"{folder}: {rows.n} rows of {name} but {len(ids)} ids in {layout.INDEX}")
    return arrays, ids


def secret_order(n: int, key: bytes) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` keyed by ``key``: positions sorted by a keyed hash
    (BLAKE2b as a PRF), so it cannot be derived without the key."""
    tags = np.fromiter((int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), key=key, digest_size=8).digest(),
                                       "little") for i in range(n)), dtype=np.uint64, count=n)
    return np.argsort(tags, kind="stable")


SOURCES = layout.SOURCES  # in the hidden test folder: the stream's mapping back to the two sets
_ORDER_MSG = b"skybench real-set stream order/1"


def order_key(key: ReleaseKey, seed: int, track: str) -> bytes:
    """The key of a release's stream order: an HMAC under the private test-set key; for a public key (the
    ``demo`` profile, public by design) a hash of the release seed, which anyone can recompute. Keyed by the track
    too: tracks sharing a key, a seed and a real set would otherwise hold its objects in the same order (real object
    r of one track at the place of real object r of the other), so a label found in one names its twin's."""
    msg = _ORDER_MSG + b"\0" + str(int(seed)).encode() + b"\0" + track.encode()
    if key.secret is None:
        return hashlib.sha256(msg).digest()
    return hmac.new(key.secret, msg, hashlib.sha256).digest()


def check_shapes(test_dir: Path, real_dir: Path) -> tuple[dict[str, _Rows], np.ndarray, dict[str, _Rows], np.ndarray]:
    """Both sets' rows and ids; raises ``ReleaseError`` when they do not give a model the same arrays of the
    same shapes."""
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
    return test, test_ids, real, real_ids


def stream_ids(n: int) -> np.ndarray:
    width = max(6, len(str(n - 1)))
    return np.array([f"t{i:0{width}d}" for i in range(n)], dtype=object)


def check_real_key(real: Path, key: ReleaseKey) -> None:
    """Raise ``ReleaseError`` unless the real release ``real`` was imported under ``key`` (its manifest's
    ``test_key``; none: public, as every real set imported before keys were recorded)."""
    entry = read_manifest(Path(real)).get("test_key") or {"kind": "public"}
    ours = {"kind": "public"} if key.secret is None else {"kind": "private", "fingerprint": key.fingerprint}
    if {k: entry.get(k) for k in ours} != ours:
        theirs = "public" if entry.get("kind") == "public" else f"private (fingerprint {entry.get('fingerprint')})"
        raise ReleaseError(f"{real}: the real set was imported under the {theirs} test-set key but this release is "
                           f"made under the {key.describe()} one; re-import it with the release's key "
                           "(`skybench import-real-set` / `import-real-truth` with the same --profile, --key-file)")


def fold_in(root: Path, real: Path, order: bytes, *, key: ReleaseKey, shard_size: int = SHARD_SIZE
            ) -> dict[str, object]:
    """Rewrite the test split of the release being written in ``root`` (``public/test``, ``hidden/test``) as one
    stream of its simulated objects and the real release ``real``'s test objects, in the order drawn from
    ``order`` (:func:`order_key`); write the mapping to ``hidden/test/sources.parquet``. Hidden labels and arrays
    of the simulated objects keep their original ids and order. Reads and writes a block of rows at a time.
    ``key``: the release's test-set key, which the real set must have been imported under (:func:`check_real_key`).

    Returns the counts for the manifest. Raises ``ReleaseError`` when the sets' arrays or keys differ."""
    root, real = Path(root), Path(real)
    check_real_key(real, key)
    test_dir, hidden = layout.public_dir(root, "test"), layout.hidden_dir(root, "test")
    test, test_ids, real_rows, real_ids = check_shapes(test_dir, layout.public_dir(real, "test"))
    n_test, n = len(test_ids), len(test_ids) + len(real_ids)
    perm = secret_order(n, order)
    # Stream position p holds object perm[p] of the concatenation (test rows, then real rows).
    is_real = perm >= n_test
    row = np.where(is_real, perm - n_test, perm)
    ids = stream_ids(n)
    new = test_dir.with_name(".test-stream")
    new.mkdir()
    for name in test:
        _write_array(new, name, [test[name], real_rows[name]], is_real, row, shard_size)
    _write_table({"id": pa.array(ids, pa.string())}, layout.index_path(new))
    original = np.empty(n, dtype=object)
    original[is_real] = real_ids[row[is_real]]
    original[~is_real] = test_ids[row[~is_real]]
    _write_table({"id": pa.array(ids, pa.string()),
                  "source": pa.array(np.where(is_real, "real", "sim"), pa.string()),
                  "source_id": pa.array([str(x) for x in original], pa.string()),
                  "row": pa.array(row, pa.int64())}, layout.sources_path(hidden))
    for p in test_dir.iterdir():
        p.unlink()
    test_dir.rmdir()
    new.rename(test_dir)
    return {"simulated": int(n_test), "real": int(len(real_ids)), "stream": int(n)}


def _write_table(columns: dict[str, pa.Array], path: Path) -> None:
    # No pandas metadata, fixed writer settings: the same table always gives the same bytes.
    pq.write_table(pa.table(columns), path, compression="zstd")


@dataclass
class Stream:
    """The mapping of a release's test stream back to the two sets (from ``hidden/test/sources.parquet``)."""

    stream_ids: np.ndarray  # the opaque ids, in stream order
    is_real: np.ndarray  # bool per stream position
    row: np.ndarray  # per stream position: the row in its own set's order
    test_ids: np.ndarray  # ids of the simulated test set, in hidden/test/meta.parquet order
    real_ids: np.ndarray  # ids of the real set, in its index.parquet order

    @classmethod
    def load(cls, release: Path, real: Path | None = None) -> Stream | None:
        """The stream of ``release``, or None when nothing was folded into it. ``real``: the real release, for
        its ids in their original type (else the ids as written in the mapping)."""
        hidden = layout.hidden_dir(release, "test")
        if not layout.sources_path(hidden).is_file():
            return None
        src = pd.read_parquet(layout.sources_path(hidden))
        test_ids = pd.read_parquet(layout.meta_path(hidden), columns=["id"])["id"].to_numpy()
        is_real = (src["source"] == "real").to_numpy()
        row = src["row"].to_numpy()
        names = src["source_id"].to_numpy()
        n_real = int(is_real.sum())
        real_ids = np.empty(n_real, dtype=object)
        real_ids[row[is_real]] = names[is_real]
        if real is not None:
            ids = pd.read_parquet(layout.index_path(layout.public_dir(real, "test")), columns=["id"])["id"].to_numpy()
            if len(ids) != n_real or [str(x) for x in ids] != list(real_ids):
                raise ReleaseError(f"{real}: its test ids are not those folded into {release}; re-make the release "
                                   "(`skybench simulate`, or `dvc repro`) with this real set")
            real_ids = ids
        if len(test_ids) != int((~is_real).sum()) or \
                [str(x) for x in test_ids[row[~is_real]]] != list(names[~is_real]):
            raise ReleaseError(f"{layout.sources_path(hidden)}: does not match {layout.meta_path(hidden)}; the "
                               "release is inconsistent, re-make it")
        return cls(src["id"].to_numpy(), is_real, row, test_ids, real_ids)

    def mapping(self) -> pd.DataFrame:
        """opaque id -> (source ``sim``/``real``, original id); for the organiser only."""
        original = np.empty(len(self.row), dtype=object)
        original[self.is_real] = self.real_ids[self.row[self.is_real]]
        original[~self.is_real] = self.test_ids[self.row[~self.is_real]]
        return pd.DataFrame({"id": self.stream_ids, "source": np.where(self.is_real, "real", "sim"),
                             "original_id": original})

    def split(self, res: PredictResult) -> PredictResult:
        """The stream's result as the simulated test set's (ids and predictions in its original order), with
        the real set's as ``.extra``. A failed result stays failed, with the simulated test ids."""
        if not res.ok or res.predictions is None:
            return replace(res, ids=self.test_ids, predictions=None)
        if len(res.ids) != len(self.stream_ids) or not np.array_equal(res.ids, self.stream_ids):
            return replace(res, ok=False, reason="the predictions do not cover the test stream in its order "
                           "(an executor bug, or --limit on a release with a real set)",
                           ids=self.test_ids, predictions=None)
        pred = np.asarray(res.predictions)
        test = np.empty((len(self.test_ids), *pred.shape[1:]), pred.dtype)
        real = np.empty((len(self.real_ids), *pred.shape[1:]), pred.dtype)
        test[self.row[~self.is_real]] = pred[~self.is_real]
        real[self.row[self.is_real]] = pred[self.is_real]
        extra = replace(res, ok=True, reason="", predictions=real, ids=self.real_ids, seconds=0.0, log="", extra=None,
                        infrastructure=False)
        return replace(res, predictions=test, ids=self.test_ids, extra=extra)


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
            with open(dest / layout.shard_name(name, k), "wb") as f:
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
