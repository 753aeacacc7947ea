import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SKYBENCH_ROOT", str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from skybench.cpu import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()  # before any test loads numpy: the code paths `skybench` itself runs (skybench.cpu)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh MLflow store (its URI) in the test's folder, which is also the working directory; test files
    that need another kind of store define their own ``store``."""
    from helpers import mlflow_store

    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def tiny_space_release(tmp_path_factory) -> Path:
    """A small lens-space release shared by the tests that only read it: the CPU path (numpy, PCG64) that the
    tests remake objects with, also on a GPU machine, where ``auto`` would take torch-cuda and Philox."""
    from skybench.simulate import simulate_release

    out = tmp_path_factory.mktemp("rel") / "lens-space"
    return simulate_release("lens-space", out, profile="demo", seed=3, size=64, progress=False, backend="numpy")


@pytest.fixture(scope="session")
def tiny_ground_release(tmp_path_factory) -> Path:
    from skybench.simulate import simulate_release

    out = tmp_path_factory.mktemp("rel") / "lens-ground"
    return simulate_release("lens-ground", out, profile="demo", seed=3, size=48, progress=False, backend="numpy")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data release (data/, DVC-tracked) with the galaxies and lenses the real-set tests read."""
    d = ROOT / "data"
    if not (d / "galaxies" / "kids_viking_field").is_dir() or not (d / "lenses_hst" / "catalog.csv").is_file():
        pytest.skip(f"real data missing: {d} (run `dvc pull`)")
    return d


# The files that take longest, collected first: `make test` hands whole files to its xdist workers in collection
# order (--dist loadfile), and the worker that gets the longest one last finishes last.
LONGEST_FIRST = ("test_notebooks.py", "test_reproducible.py", "test_mlflow_ui_browser.py", "test_mlflow_server.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
