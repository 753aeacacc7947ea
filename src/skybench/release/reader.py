"""The one reader of a release: numpy memmaps, streamed batches, a torch ``Dataset`` and a ``tf.data.Dataset``
for teams; the hidden split (:class:`HiddenSplit`) for the scorers.

    >>> rel = skybench.release.reader.open_release("releases/lens-space")
    >>> x, y = rel.images("train"), rel.labels("train")   # memory-mapped, (N, bands, H, W) float32
    >>> for batch in rel.public_batches("test", 256):     # {"images": (B, bands, H, W)}, one batch in memory
    ...     ...
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skybench.release import layout
from skybench.release.shards import INPUT_ARRAYS, ShardedArray, iter_batches
from skybench.release.verify import ReleaseError, read_manifest

__all__ = ["HiddenSplit", "Release", "ShardedArray", "open_release"]


def _table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A release's table; ReleaseError naming the file when it cannot be read (pyarrow's errors name none)."""
    import pyarrow as pa

    try:
        return pd.read_parquet(path, columns=columns)
    except pa.ArrowException as exc:  # a missing file stays FileNotFoundError
        raise ReleaseError(f"{path}: not a readable table ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                           "check the release with `skybench verify`") from exc


class HiddenSplit:
    """The organiser-only part of a split (``test``): full metadata with the labels, and the hidden arrays
    (answers such as the undegraded ``truth`` images). Only the scoring side ever opens one.

    ``folder``: the hidden split folder (:meth:`Release.hidden` gives it); ``public``: the public folder of the
    same split (default: the one beside it in the release), for :meth:`inputs`."""

    def __init__(self, folder: str | Path, public: str | Path | None = None):
        self.folder = Path(folder)
        if not layout.meta_path(self.folder).is_file():
            raise FileNotFoundError(f"{self.folder}: not a hidden split (no {layout.META})")
        self._public = Path(public) if public is not None else None

    def __repr__(self) -> str:
        return f"HiddenSplit({self.folder})"

    def meta(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every object's metadata and labels, with its ``id``, in release order."""
        return _table(layout.meta_path(self.folder), columns=columns)

    def ids(self) -> np.ndarray:
        return self.meta(["id"])["id"].to_numpy()

    def truth(self, ids: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The metadata rows of ``ids``, in that order, indexed by id (KeyError for an unknown id)."""
        return self.meta(columns if columns is None or "id" in columns else ["id", *columns]) \
            .set_index("id").loc[np.asarray(ids)]

    def table(self, name: str) -> pd.DataFrame:
        """A task's hidden table ``name`` (e.g. the objects of every detection tile), several rows per object."""
        path = layout.table_path(self.folder, name)
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder}: no table {name!r}")
        return _table(path)

    def array(self, name: str) -> ShardedArray:
        """A hidden per-object array (release order), memory-mapped."""
        paths = layout.shard_paths(self.folder, name)
        if not paths:
            raise FileNotFoundError(f"{self.folder}: no hidden array {name!r}")
        return ShardedArray(paths)

    def inputs(self, name: str = "images", ids: np.ndarray | None = None) -> np.ndarray:
        """The public input rows (what a model was given) of this split's objects: of ``ids`` in that order, else
        of all in release order (KeyError for an unknown id). With a real set folded into the test stream
        (:mod:`skybench.release.mixing`) the public rows are in stream order: this undoes it."""
        public = self._public
        if public is None:
            root, _, split = layout.release_of(self.folder)
            public = layout.public_dir(root, split)
        sources = layout.sources_path(self.folder)
        if sources.is_file():  # stream position of every simulated object, in release order
            src = _table(sources, columns=["source", "row"])
            sim = (src["source"] == "sim").to_numpy()
            rows = np.empty(int(sim.sum()), dtype=np.int64)
            rows[src["row"].to_numpy()[sim]] = np.flatnonzero(sim)
        else:
            rows = np.arange(len(self.ids()))
        if ids is not None:
            rows = rows[pd.Series(np.arange(len(rows)), index=self.ids()).loc[np.asarray(ids)].to_numpy()]
        return ShardedArray.open(public, name)[rows]


class Release:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.label_columns: list[str] = self.manifest.get("label_columns", [])

    def __repr__(self) -> str:
        m = self.manifest
        return f"Release({self.root}, track={m['track']}, profile={m['profile']}, counts={m['counts']})"

    def array(self, split: str, name: str = "images") -> ShardedArray:
        """A public per-object array of a split: ``images``, ``features`` (catalogue tracks), ``truth`` ..."""
        paths = layout.shard_paths(layout.public_dir(self.root, split), name)
        if not paths:
            raise FileNotFoundError(f"{self.root}: no {name} for split {split!r}")
        return ShardedArray(paths)

    def table(self, split: str, name: str) -> pd.DataFrame:
        """A task's table ``name`` of a public split (``train``/``val``; the test split's are hidden)."""
        if split == "test":
            raise PermissionError(f"the test split's table {name!r} is hidden; it is used only by `skybench evaluate`")
        path = layout.table_path(layout.public_dir(self.root, split), name)
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no table {name!r} for split {split!r}")
        return _table(path)

    def public_arrays(self, split: str) -> list[str]:
        """Names of the per-object arrays teams get for ``split`` (the test split's answers are hidden): the model
        inputs first, in the order the runner passes them, then the others by name."""
        hidden = set(self.manifest.get("hidden_arrays", [])) if split == "test" else set()
        names = [n for n in self.manifest.get("arrays", {"images": None}) if n not in hidden]
        return sorted(names, key=lambda n: (INPUT_ARRAYS.index(n) if n in INPUT_ARRAYS else len(INPUT_ARRAYS), n))

    def public_batches(self, split: str, batch_size: int, names: list[str] | None = None,
                       limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """``{name: float32 (B, ...)}`` batch by batch, in release order, streamed from the shards with plain
        reads: one batch in memory, whatever the split's size. Batches restart at each shard file (the last
        of each may be smaller), exactly as the sandboxed runner feeds a submission. ``names``: default
        :meth:`public_arrays`; ``limit``: at most that many objects."""
        names = list(names) if names is not None else self.public_arrays(split)
        folder = layout.public_dir(self.root, split)
        for name in names:
            if not layout.shard_paths(folder, name):
                raise FileNotFoundError(f"{self.root}: no {name} for split {split!r}")
        streams = [iter_batches(folder, name, batch_size, limit) for name in names]
        for parts in zip(*streams, strict=True):
            yield dict(zip(names, parts, strict=True))

    def hidden(self, split: str = "test") -> HiddenSplit:
        """The organiser-only labels and arrays of ``split`` (a release folder teams never get)."""
        return HiddenSplit(layout.hidden_dir(self.root, split), layout.public_dir(self.root, split))

    def split_truth(self, split: str = "val") -> HiddenSplit:
        """A public split with labels (``train``/``val``) as a truth source with the :class:`HiddenSplit`
        interface, so a task's scorer can score predictions on it locally (``skybench validate --score``)."""
        if split == "test":
            raise PermissionError("test labels are hidden; score locally on 'val' instead")
        folder = layout.public_dir(self.root, split)
        return HiddenSplit(folder, folder)

    def images(self, split: str) -> ShardedArray:
        return self.array(split, "images")

    def features(self, split: str) -> ShardedArray:
        """Catalogue features (N, F); their names are in the manifest's ``feature_names``."""
        return self.array(split, "features")

    def meta(self, split: str) -> pd.DataFrame:
        """Metadata of a public split (for ``test``: only the ids)."""
        return _table(layout.public_meta_path(self.root, split))

    def labels(self, split: str) -> np.ndarray:
        if split == "test":
            raise PermissionError("test labels are hidden; they are used only by `skybench evaluate`")
        return self.meta(split)[self.label_columns[0]].to_numpy()

    def torch_dataset(self, split: str, transform: Any = None) -> Any:
        """A ``torch.utils.data.Dataset`` of (image, label) float32 tensors (label -1 on ``test``)."""
        import torch

        images = self.images(split)
        labels = self.labels(split) if split != "test" else np.full(len(images), -1)

        class _DS(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(images)

            def __getitem__(self, i: int) -> tuple[Any, Any]:
                x = torch.from_numpy(np.array(images[i]))
                return (transform(x) if transform else x), torch.tensor(float(labels[i]))

        return _DS()

    def tf_dataset(self, split: str) -> Any:
        """A ``tf.data.Dataset`` of (image, label) pairs streamed from the memory-mapped shards."""
        import tensorflow as tf

        images = self.images(split)
        labels = self.labels(split) if split != "test" else np.full(len(images), -1)

        def gen() -> Iterator[tuple[np.ndarray, np.float32]]:
            for i in range(len(images)):
                yield images[i], np.float32(labels[i])

        spec = (tf.TensorSpec(images.shape[1:], tf.float32), tf.TensorSpec((), tf.float32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec)


def open_release(root: str | Path) -> Release:
    return Release(root)
