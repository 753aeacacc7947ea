"""Writing a release: one writer for every track, atomic, hashed, streamed in chunks.

A track may have other per-object arrays besides ``images`` (e.g. ``features``: catalogue magnitudes, or
``truth``: the undegraded image), each sharded the same way. Arrays named in ``hidden_arrays`` go to the hidden
folder of the test split (they are answers), and to the public folders otherwise. A task may also have
``tables``: per-split tables with any number of rows per object (the truth table of the objects in each tile of the
``detect`` task), public for train and val and hidden for test, like the metadata. Where each file goes is
:mod:`skybench.release.layout`'s business.

Each shard file is hashed as it is written (with a GPU backend, while the next chunk is simulated on a thread), so
the manifest needs no second read of it; a file changed after it was written (``finish`` rewrites the test
shards) is hashed again.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from skybench import __version__
from skybench.common import swap_in
from skybench.release import layout
from skybench.release.verify import FORMAT, sha256_files

SPLITS = ("train", "val", "test")
# (split, [(start, stop), ...]) -> the chunks in that order: (arrays, metadata with ``id``), where arrays is
# the float32 images (B, ...) or a dict {array name: float32 (B, ...)}; with ``tables``, a third element
# {table name: DataFrame of the chunk's rows}
Chunk = tuple[Any, ...]  # arrays, metadata[, tables]
ChunksFn = Callable[[str, list[tuple[int, int]]], Iterator[Chunk]]


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    # No pandas index, fixed writer settings: the same table always gives the same bytes.
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="zstd")


def write_release(out: Path, *, info: dict[str, Any], counts: dict[str, int],
                  image_shape: tuple[int, ...] | None = None, make_chunks: ChunksFn,
                  arrays: dict[str, tuple[int, ...]] | None = None, hidden_arrays: tuple[str, ...] = (),
                  chunk_size: int = 128, shard_size: int = 10_000,
                  public_test_columns: tuple[str, ...] = ("id",), label_columns: tuple[str, ...] = (),
                  progress: bool = True, finish: Callable[[Path], dict[str, Any]] | None = None,
                  tables: tuple[str, ...] = ()) -> Path:
    """Write a release to ``out`` atomically: build it in a sibling temporary folder, then rename.

    A failure (including a full disk) removes the temporary folder and leaves any previous release intact.
    ``arrays``: per-object array shapes by name (default ``{"images": image_shape}``).
    ``label_columns`` are kept out of the public test split; everything but ``public_test_columns`` is hidden.
    ``finish(folder)``: run on the written splits before they are hashed (e.g. folding the real set into the
    test split, :func:`skybench.release.mixing.fold_in`); its result is added to the manifest. It replaces a file
    it changes (a new file renamed over it), never rewrites one in place within the same clock tick.
    ``tables``: names of the per-split tables each chunk brings as its third element (hidden for test); each
    table's chunks must have the same columns and dtypes, so that the file does not depend on the chunks."""
    arrays = dict(arrays) if arrays is not None else {"images": tuple(image_shape or ())}
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_temps(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()  # also for a release without objects (an empty real set: `make run` without data/)
        written: dict[Path, tuple[str, tuple[int, ...]]] = {}  # shard -> (sha256, its stat when written)
        with _progress(progress) as bar:
            for split in SPLITS:
                n = counts.get(split, 0)
                if n:
                    _write_split(tmp, split, n, arrays, hidden_arrays, make_chunks, chunk_size, shard_size,
                                 public_test_columns, bar, tables, written)
        info = {**info, **(finish(tmp) if finish is not None else {})}
        paths = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
        # fold_in writes new files (a new inode); an in-place rewrite changes the size or the times
        known = {p: written[p][0] for p in paths if p in written and written[p][1] == _stat(p)}
        again = [p for p in paths if p not in known]
        known.update(zip(again, sha256_files(again), strict=True))
        files = {layout.relpath(p, tmp): {"sha256": known[p], "bytes": p.stat().st_size} for p in paths}
        manifest = {"format": FORMAT, **info, "skybench_version": __version__,
                    "counts": {s: counts.get(s, 0) for s in SPLITS},
                    **({"image_shape": list(arrays["images"])} if "images" in arrays else {}),
                    "arrays": {k: list(v) for k, v in arrays.items()}, "hidden_arrays": list(hidden_arrays),
                    "image_dtype": "float32", "label_columns": list(label_columns),
                    **({"tables": list(tables)} if tables else {}), "files": files}
        layout.manifest_path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def sweep_dead_temps(out: Path) -> None:
    """Remove the temporary folders of ``out`` that a killed writer left (``.<name>.tmp-<pid>``, ``.old-<pid>``):
    those whose process is gone from this machine."""
    for folder in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, pid = folder.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its writer is gone
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _stat(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _write_split(root: Path, split: str, n: int, arrays: dict[str, tuple[int, ...]], hidden_arrays: tuple[str, ...],
                 make_chunks: ChunksFn, chunk_size: int, shard_size: int, public_test_columns: tuple[str, ...],
                 bar: Any, tables: tuple[str, ...], written: dict[Path, tuple[str, tuple[int, ...]]]) -> None:
    pub = layout.public_dir(root, split)
    pub.mkdir(parents=True)
    hid = layout.hidden_dir(root, split)
    if split == "test":
        hid.mkdir(parents=True)
    task = bar.add_task(f"{split:5s}", total=n) if bar else None
    metas = []
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in tables}
    for shard_no, shard_start in enumerate(range(0, n, shard_size)):
        shard_stop = min(n, shard_start + shard_size)
        ranges = [(a, min(shard_stop, a + chunk_size)) for a in range(shard_start, shard_stop, chunk_size)]
        files, hashes = {}, {}
        with contextlib.ExitStack() as stack:
            for name, shape in arrays.items():
                folder = hid if split == "test" and name in hidden_arrays else pub
                files[name] = stack.enter_context(open(folder / layout.shard_name(name, shard_no), "wb"))
                hashes[name] = hashlib.sha256()
                # Plain appends, not a memory map: the pages of a written memory map would stay in the RSS.
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                              "fortran_order": False,
                                                              "shape": (shard_stop - shard_start, *shape)})
                _append(files[name], hashes[name], header.getvalue())
            for (start, stop), got in zip(ranges, make_chunks(split, ranges), strict=True):
                chunk, meta = got[0], got[1]
                chunk = chunk if isinstance(chunk, dict) else {"images": chunk}
                _add_tables(parts, got[2] if len(got) > 2 else {}, f"chunk {split}[{start}:{stop}]")
                if set(chunk) != set(arrays):
                    raise ValueError(f"chunk {split}[{start}:{stop}] has arrays {sorted(chunk)}, expected "
                                     f"{sorted(arrays)}")
                for name, shape in arrays.items():
                    if chunk[name].shape != (stop - start, *shape):
                        raise ValueError(f"chunk {split}[{start}:{stop}]: {name} has shape {chunk[name].shape}")
                    _append(files[name], hashes[name], np.ascontiguousarray(chunk[name], dtype="<f4").data)
                # Columns, joined into one table per split: a DataFrame per chunk costs more than the chunk.
                metas.append(meta if isinstance(meta, dict) else {k: meta[k].to_numpy() for k in meta.columns})
                if bar:
                    bar.advance(task, stop - start)
            for name, f in files.items():
                f.close()
                written[Path(f.name)] = (hashes[name].hexdigest(), _stat(Path(f.name)))
    meta = pd.DataFrame({k: np.concatenate([m[k] for m in metas]) for k in metas[0]})
    if split == "test":
        _write_parquet(meta[list(public_test_columns)], layout.index_path(pub))
        _write_parquet(meta, layout.meta_path(hid))
    else:
        _write_parquet(meta, layout.meta_path(pub))
    for name, frames in parts.items():  # per-object truth: hidden for test, like the labels
        _write_parquet(pd.concat(frames, ignore_index=True), layout.table_path(hid if split == "test" else pub, name))


def _append(f: Any, h: Any, data: Any) -> None:
    """Write ``data`` (bytes or a buffer: no bytes copy) to ``f`` and hash it with ``h``."""
    f.write(data)
    h.update(data)


def _add_tables(parts: dict[str, list[pd.DataFrame]], got: dict[str, pd.DataFrame], where: str) -> None:
    """Append a chunk's tables to ``parts``, checking they are the declared ones with the first chunk's schema."""
    if set(got) != set(parts):
        raise ValueError(f"{where} has tables {sorted(got)}, expected {sorted(parts)}")
    for name, frame in got.items():
        frame = pd.DataFrame(frame)
        if parts[name] and not frame.dtypes.equals(parts[name][0].dtypes):
            raise ValueError(f"{where}: table {name!r} has columns {dict(frame.dtypes.astype(str))}, the first chunk "
                             f"{dict(parts[name][0].dtypes.astype(str))}; give every chunk the same schema")
        parts[name].append(frame)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


