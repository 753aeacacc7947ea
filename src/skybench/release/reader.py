"""One-line access to a release for teams: numpy memmaps, a torch ``Dataset`` and a ``tf.data.Dataset``.

    >>> rel = skybench.release.reader.open_release("releases/lens-space")
    >>> x, y = rel.images("train"), rel.labels("train")   # memory-mapped, (N, bands, H, W) float32
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skybench.release import read_manifest


class ShardedArray:
    """The image shards of one split seen as one read-only (N, bands, H, W) array, memory-mapped."""

    def __init__(self, paths: list[Path]):
        self.shards = [np.load(p, mmap_mode="r") for p in paths]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])
        first = self.shards[0] if self.shards else np.empty((0,), np.float32)
        self.shape = (int(self.offsets[-1]), *first.shape[1:])
        self.dtype = first.dtype

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


class HiddenSplit:
    """The organiser-only part of a split (``test``): full metadata with the labels, and the hidden arrays
    (answers such as the undegraded ``truth`` images). Only the scoring side ever opens one."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "meta.parquet").is_file():
            raise FileNotFoundError(f"{self.folder}: not a hidden split (no meta.parquet)")

    def __repr__(self) -> str:
        return f"HiddenSplit({self.folder})"

    def meta(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every object's metadata and labels, with its ``id``, in release order."""
        return pd.read_parquet(self.folder / "meta.parquet", columns=columns)

    def ids(self) -> np.ndarray:
        return self.meta(["id"])["id"].to_numpy()

    def truth(self, ids: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The metadata rows of ``ids``, in that order, indexed by id (KeyError for an unknown id)."""
        return self.meta(columns if columns is None or "id" in columns else ["id", *columns]) \
            .set_index("id").loc[np.asarray(ids)]

    def array(self, name: str) -> ShardedArray:
        """A hidden per-object array (release order), memory-mapped."""
        paths = sorted(self.folder.glob(f"{name}-*.npy"))
        if not paths:
            raise FileNotFoundError(f"{self.folder}: no hidden array {name!r}")
        return ShardedArray(paths)

    def inputs(self, name: str = "images") -> ShardedArray:
        """The public array ``name`` of the same split (the inputs teams were given), release order, memory-mapped:
        for a scorer that shows them beside its predictions (the enhance gallery)."""
        paths = sorted((self.folder.parent.parent / "public" / self.folder.name).glob(f"{name}-*.npy"))
        if not paths:
            raise FileNotFoundError(f"{self.folder}: no public array {name!r} beside this hidden split")
        return ShardedArray(paths)


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
        paths = sorted((self.root / "public" / split).glob(f"{name}-*.npy"))
        if not paths:
            raise FileNotFoundError(f"{self.root}: no {name} for split {split!r}")
        return ShardedArray(paths)

    def hidden(self, split: str = "test") -> HiddenSplit:
        """The organiser-only labels and arrays of ``split`` (a release folder teams never get)."""
        return HiddenSplit(self.root / "hidden" / split)

    def images(self, split: str) -> ShardedArray:
        return self.array(split, "images")

    def features(self, split: str) -> ShardedArray:
        """Catalogue features (N, F); their names are in the manifest's ``feature_names``."""
        return self.array(split, "features")

    def meta(self, split: str) -> pd.DataFrame:
        """Metadata of a public split (for ``test``: only the ids)."""
        name = "index.parquet" if split == "test" else "meta.parquet"
        return pd.read_parquet(self.root / "public" / split / name)

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
