"""Philox4x32-10 (physics/philox.py) against Random123's known answers, its streams' statistics, and the GPU path of
``simulate_release`` (Philox, chunking, the thread that simulates ahead) run on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TORCH_BACKEND
from scipy import stats

from skybench.physics.backend import get_backend
from skybench.physics.philox import normal32, normal64, philox4x32, uniform64
from skybench.release import open_release, read_manifest, release_digest
from skybench.simulate import simulate_release

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter[4] key[2] -> output[4].
KAT = [("00000000 00000000 00000000 00000000 00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
       ("ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
       ("243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1")]
NAMES = ["numpy", pytest.param(TORCH_BACKEND, marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="torch not installed"))]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("given", "expected"), KAT)
def test_philox_matches_random123_known_answers(name, given, expected):
    be = get_backend(name)
    words = [be.index(np.array([int(w, 16)], dtype=np.int64)) for w in given.split()]
    out = [int(be.to_numpy(w)[0]) for w in philox4x32(*words)]
    assert out == [int(w, 16) for w in expected.split()]


@pytest.mark.parametrize("name", NAMES)
def test_streams_have_the_right_distributions_and_do_not_depend_on_the_batch(name):
    be = get_backend(name)
    keys = np.arange(2000, dtype=np.int64) * 7919 + 2**61
    u = be.to_numpy(uniform64(be, keys, 9))
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    z = be.to_numpy(normal64(be, keys, 9))
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    z32 = be.to_numpy(normal32(be, keys[:200], (3, 11, 11)))
    assert z32.dtype == np.float32 and stats.kstest(z32.ravel(), "norm").pvalue > 1e-3
    # neighbouring draws of an object, and the same draw of neighbouring objects, are uncorrelated
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.08 and abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.08
    np.testing.assert_array_equal(be.to_numpy(uniform64(be, keys[5:7], 9)), u[5:7])
    assert not np.array_equal(be.to_numpy(uniform64(be, keys[:3], 9, stream="noise")), u[:3])


def test_numpy_and_torch_draw_the_same_bits():
    pytest.importorskip("torch")
    keys = np.array([0, 1, 2**62 + 12345, 987654321987], dtype=np.int64)
    a, b = get_backend("numpy"), get_backend(TORCH_BACKEND)
    np.testing.assert_array_equal(a.to_numpy(uniform64(a, keys, 13)), b.to_numpy(uniform64(b, keys, 13)))
    np.testing.assert_allclose(a.to_numpy(normal32(a, keys, (2, 5))), b.to_numpy(normal32(b, keys, (2, 5))), atol=1e-5)


def test_the_gpu_path_on_the_cpu_writes_the_same_release_whatever_the_chunks(tmp_path):
    """torch + Philox, in process with the simulate-ahead thread: chunk sizes 3 and 64 give the same bytes, the
    manifest names the generator, and numpy + Philox gives the same labels."""
    pytest.importorskip("torch")
    kw = dict(profile="demo", seed=3, size=7, progress=False, workers=1, generator="philox")
    a = simulate_release("lens-space", tmp_path / "a", backend=TORCH_BACKEND, chunk_size=3, **kw)
    b = simulate_release("lens-space", tmp_path / "b", backend=TORCH_BACKEND, chunk_size=64, **kw)
    c = simulate_release("lens-space", tmp_path / "c", backend="numpy", **kw)
    if TORCH_BACKEND == "torch-cuda":  # cuBLAS picks its kernels, so its summation order, by the batch's size
        for split in ("train", "val", "test"):
            ia, ib = (np.asarray(open_release(r).images(split)) for r in (a, b))
            diff = np.abs(ia - ib).max(axis=(1, 2, 3)) / np.abs(ia).max(axis=(1, 2, 3))
            print(f"{split}: largest |chunks 3 - chunks 64| / peak {diff.max():.1e}")
            assert (diff <= 1e-5).all(), split
        again = simulate_release("lens-space", tmp_path / "a2", backend=TORCH_BACKEND, chunk_size=3, **kw)
        assert release_digest(a) == release_digest(again)  # the same chunks: the same bytes
    else:
        assert release_digest(a) == release_digest(b)
    manifest = read_manifest(a)
    assert manifest["generator"] == "philox" and manifest["backend"] == TORCH_BACKEND
    assert "generator" not in read_manifest(simulate_release("lens-space", tmp_path / "d", **{
        **kw, "generator": "pcg64", "size": 2}))  # PCG64 releases are unchanged (no new manifest field)
    ta, tc = open_release(a).meta("train"), open_release(c).meta("train")
    assert ta["seed"].tolist() == tc["seed"].tolist() and (ta["is_lens"] == tc["is_lens"]).all()
    np.testing.assert_allclose(ta["lens_theta_E"], tc["lens_theta_E"], rtol=0, atol=0)


@pytest.mark.parametrize("track", ["photoz-catalog", "lens-space-injected"])
def test_a_simulator_without_philox_says_so(tmp_path, track):
    with pytest.raises(ValueError, match="draws with pcg64"):
        simulate_release(track, tmp_path / "r", size=2, progress=False, workers=1, generator="philox")


@pytest.mark.skipif(any(Path("/dev").glob("nvidia[0-9]*")), reason="an NVIDIA device node: `auto` asks torch")
def test_auto_is_numpy_without_importing_torch_where_no_nvidia_device_is():
    """`skybench simulate` asks for the `auto` backend: on a machine without an NVIDIA device node it is numpy,
    decided without importing torch (seconds of every simulate on a CPU machine)."""
    code = "import sys\nfrom skybench.physics.backend import get_backend\nprint(get_backend('auto').name, " \
           "'torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={
        **os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["numpy", "False"], done.stdout
