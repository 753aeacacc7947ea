"""skybench.release.reader: the one-line access teams use, in numpy, torch and TensorFlow."""

import numpy as np
import pytest

from skybench.release import layout
from skybench.release.reader import ShardedArray, open_release


def test_numpy_access_is_memory_mapped_and_labelled(tiny_space_release):
    rel = open_release(tiny_space_release)
    x, y = rel.images("train"), rel.labels("train")
    assert x.shape == (64, 1, 101, 101) and len(y) == 64
    assert isinstance(x.shards[0], np.memmap)
    first = layout.shard_paths(layout.public_dir(tiny_space_release, "train"), "images")[0]
    np.testing.assert_array_equal(x[3], np.load(first)[3])
    with pytest.raises(PermissionError):
        rel.labels("test")


def test_sharded_array_indexes_across_shards(tmp_path):
    for k, n in enumerate((3, 4)):
        np.save(tmp_path / layout.shard_name("images", k), np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * k)
    arr = ShardedArray(sorted(tmp_path.glob("*.npy")))
    assert arr.shape == (7, 2)
    np.testing.assert_array_equal(arr[[0, 3, 6]], [[0, 1], [100, 101], [106, 107]])
    np.testing.assert_array_equal(arr[-1], [106, 107])
    assert sum(len(b) for b in arr.batches(3)) == 7


def test_torch_dataset_yields_images_and_labels(tiny_space_release):
    torch = pytest.importorskip("torch")
    rel = open_release(tiny_space_release)
    ds = rel.torch_dataset("train")
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=64)))
    assert tuple(x.shape) == (64, 1, 101, 101) and tuple(y.shape) == (64,)
    np.testing.assert_array_equal(x.numpy(), rel.images("train")[:])  # the release's own cut-outs, in order
    np.testing.assert_array_equal(y.numpy(), rel.labels("train"))  # each with its own label
    assert 0 < y.sum() < len(y)  # both classes: a constant label would not pass


@pytest.mark.slow
def test_tf_dataset_yields_images_and_labels(tiny_space_release):
    pytest.importorskip("tensorflow")
    rel = open_release(tiny_space_release)
    n = len(rel.labels("val"))
    x, y = next(iter(rel.tf_dataset("val").batch(n)))
    assert tuple(x.shape) == (n, 1, 101, 101) and tuple(y.shape) == (n,)
    np.testing.assert_array_equal(x.numpy(), rel.images("val")[:])  # the release's own cut-outs, in order
    np.testing.assert_array_equal(y.numpy(), rel.labels("val"))  # each with its own label
    assert 0 < y.numpy().sum() < n  # both classes: a constant label would not pass
