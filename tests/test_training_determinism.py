"""Training a baseline twice with the same seed writes the same bytes: every output file has the same sha256.

Each training runs in its own process, as a DVC stage does (``python baselines/<task>/<name>/train.py``), so memory
addresses, start times and thread pools differ between the two runs. The cheap baselines run here; the ones that
import TensorFlow or torch, or train for long, are marked slow.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skybench.training import KeepBest, save_skops
from skybench.training.serialise import save_torch_export

ROOT = Path(__file__).resolve().parents[1]
# name: (task, track, tiny options)
CASES = {
    "knn": ("lens", "lens-space", ["--max-train", "64", "--set", "n_components=4", "--set", "n_neighbors=5"]),
    "mlp": ("lens", "lens-space", ["--max-train", "64", "--epochs", "1", "--set", "n_components=8",
                                   "--set", "hidden=[8]"]),
    "cnn": ("lens", "lens-space", ["--max-train", "64", "--epochs", "1", "--set", "filters=[4,8]",
                                   "--set", "dense=16"]),
    "resnet": ("lens", "lens-space", ["--max-train", "64", "--epochs", "1", "--set", "stem=8",
                                      "--set", "widths=[8,16]", "--set", "units=[1,1]"]),
    "photoz-knn": ("photoz", "photoz-catalog", ["--set", "n_neighbors=5"]),
    "photoz-linear": ("photoz", "photoz-catalog", []),
    "photoz-mlp": ("photoz", "photoz-catalog", ["--epochs", "5", "--set", "hidden=[8]"]),
    "photoz-cnn": ("photoz", "photoz-images", ["--epochs", "1", "--set", "filters=[4,8]", "--set", "dense=16",
                                               "--set", "batch_size=16"]),
    "richardson-lucy": ("enhance", "enhance", ["--max-train", "8", "--set", "num_iter=[2,4]"]),
    "autoencoder": ("enhance", "enhance", ["--max-train", "16", "--epochs", "1", "--set", "filters=[4,8]"]),
    "gan": ("enhance", "enhance", ["--max-train", "16", "--epochs", "1", "--set", "widths=[4,8,16]",
                                   "--set", "disc_widths=[4,8,16]"]),
}
FAST: set[str] = set()  # each trains in two processes (3-9 s): slow lane


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, tiny_space_release: Path) -> dict[str, Path]:
    """Tiny releases, made on first use."""
    from skybench.simulate import simulate_release

    base = tmp_path_factory.mktemp("determinism")
    made = {"lens-space": tiny_space_release}

    class Lazy(dict):
        def __missing__(self, track: str) -> Path:
            size = {"enhance": 12}.get(track, 20)
            self[track] = simulate_release(track, base / track, profile="demo", seed=5, size=size, progress=False,
                                           workers=1)
            return self[track]

    return Lazy(made)


def _train(name: str, release: Path, out: Path) -> dict[str, str]:
    """Train ``name`` in a fresh process into ``out``; {file relative to out: sha256}."""
    task, track, options = CASES[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "SKYBENCH_ROOT": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, str(ROOT / "baselines" / task / name / "train.py"), "--track", track, "--release",
           str(release), "--out", str(out), "--no-mlflow", *options]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in CASES])
def test_training_twice_writes_the_same_bytes(name: str, releases: dict[str, Path], tmp_path: Path) -> None:
    release = releases[CASES[name][1]]
    first = _train(name, release, tmp_path / "first")
    second = _train(name, release, tmp_path / "second")
    assert "submission.yaml" in first and len(first) >= 2, first  # the model file(s) too
    differ = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
    assert not differ, f"{name}: these files differ between two trainings with the same seed: {differ}"


def test_save_skops_writes_equal_models_to_equal_bytes(tmp_path: Path) -> None:
    """Two equal pipelines (different objects, so different ids) saved at different times: the same bytes, and the
    file loads back to the same predictions (skops.io.dump alone names members by id and stamps the time)."""
    import skops.io as sio
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    x = np.random.default_rng(0).normal(size=(30, 5))
    y = (x[:, 0] > 0).astype(int)

    def fitted() -> Pipeline:
        take = FunctionTransformer(np.take, kw_args={"indices": np.arange(4), "axis": 1})
        return Pipeline([("take", take), ("scale", StandardScaler()), ("knn", KNeighborsClassifier(3))]).fit(x, y)

    a, b = fitted(), fitted()
    save_skops(a, tmp_path / "a.skops")
    os.utime(tmp_path / "a.skops", (0, 0))
    save_skops(b, tmp_path / "b.skops")
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()
    path = tmp_path / "a.skops"
    loaded = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    np.testing.assert_array_equal(loaded.predict_proba(x), a.predict_proba(x))


def test_keep_best_modes() -> None:
    auroc = KeepBest("auroc", nan_is_best=True)
    assert auroc.update(1, {"auroc": 0.6}, lambda: "w1") and not auroc.update(2, {"auroc": 0.6}, lambda: "w2")
    assert auroc.update(3, {"auroc": math.nan}, lambda: "w3")  # one class in val: counts as an improvement
    assert (auroc.epoch, auroc.state) == (3, "w3")
    psnr = KeepBest("psnr")
    assert not psnr.update(1, {"psnr": math.nan}, lambda: "w")  # never kept: NaN is not better
    sigma = KeepBest("sigma_mad", "min")
    assert sigma.update(1, {"sigma_mad": 0.05}, lambda: 1) and not sigma.update(2, {"sigma_mad": 0.06}, lambda: 2)
    assert sigma.value == 0.05 and sigma.epoch == 1
    off = KeepBest("auroc", enabled=False)
    assert not off.update(1, {"auroc": 0.9}, lambda: "w") and off.state is None and off.epoch == 0
    with pytest.raises(ValueError, match="mode"):
        KeepBest("x", "best")


def test_save_torch_export_gives_the_same_bytes_in_any_checkout(tmp_path: Path) -> None:
    """The same module source in two checkouts at different paths, exported and saved: the same bytes (torch writes
    the source's absolute path and a random id), and the program loads and runs."""
    torch = pytest.importorskip("torch")
    import importlib.util

    source = "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return (x * 2).sum(1)\n"
    saved = []
    for checkout in ("one", "another/deeper"):
        root = tmp_path / checkout
        (root / "baselines").mkdir(parents=True)
        (root / "baselines" / "net.py").write_text(source)
        spec = importlib.util.spec_from_file_location("net", root / "baselines" / "net.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        program = torch.export.export(module.Net(), (torch.ones(2, 3),))
        torch.export.save(program, str(root / "plain.pt2"))  # torch's own writer: the checkout's path inside
        with zipfile.ZipFile(root / "plain.pt2") as z:
            assert any(str(root).encode() in z.read(n) for n in z.namelist())
        saved.append(save_torch_export(program, root / "model.pt2", root).read_bytes())
    assert saved[0] == saved[1]
    loaded = torch.export.load(str(tmp_path / "one" / "model.pt2"))
    assert loaded.module()(torch.ones(2, 3)).tolist() == [6.0, 6.0]
