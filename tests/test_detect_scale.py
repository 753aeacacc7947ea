"""Evaluation of lens-tiles at scale, through the real harness and sandbox: a challenge-profile release whose test
tiles (1024 x 1024 float32, 4 MiB each) hold more than the sandbox's memory limit is evaluated because the runner
streams tiles a batch at a time (a model that keeps every batch it is given exceeds the limit), and the Ray executor
shards tiles as it shards cut-outs: the same candidates, the same metrics, as the local executor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ROOT, bwrap_works, mlflow_store, python_submission

from skybench.harness import cgroups
from skybench.harness.evaluate import evaluate, record_dir
from skybench.harness.executors import shard_ranges
from skybench.harness.visibility import private_dir
from skybench.release import layout
from skybench.simulate import simulate_release
from skybench.tasks.detect.config import DetectTrack
from skybench.tracks import benchmarks_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here"),
              pytest.mark.skipif(bool(cgroups.unavailable_reason()), reason="no usable cgroup controllers")]

TILES, MEMORY_MB, BATCH = 72, 256, 4  # 72 x 4 MiB = 288 MiB of test inputs > 256 MB
# The brightest 8x8-pixel blocks of the tile, the best K: per-tile arithmetic, so batching cannot change a bit.
BLOCKS = (ROOT / "perf" / "blocks_predict.py").read_text()
# Keeps a copy of every batch: the whole test set in memory, as a runner that loaded it at once would.
HOARD = """
import numpy as np
KEPT = []
def load(d):
    return None
def predict(m, batch):
    KEPT.append(np.array(batch, copy=True))
    return np.full((len(batch), 100, 3), np.nan, np.float32)
"""


@pytest.fixture(scope="module")
def track() -> DetectTrack:
    """lens-tiles with a challenge profile of TILES test tiles only, a tight memory limit and batches of BATCH."""
    raw = yaml.safe_load((benchmarks_dir() / "lens-tiles.yaml").read_text())
    raw["profiles"]["challenge"] = {"train": 0, "val": 0, "test": TILES}
    raw["population"]["galaxies"]["log10_n_ref"] -= 1.5  # a sparse field: the test is the streaming, not the scene
    raw["sandbox"] |= {"memory_mb": MEMORY_MB}
    raw["evaluation"] |= {"batch_size": BATCH}
    return DetectTrack.model_validate(raw)


@pytest.fixture(scope="module")
def release(track: DetectTrack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    start = time.perf_counter()
    out = simulate_release(track, root / "rel", profile="challenge", seed=8, progress=False, workers=2,
                           backend="numpy", key_file=root / "challenge.key")
    print(f"{TILES} tiles of 1024 x 1024: {time.perf_counter() - start:.1f} s")
    return out


def _subs(root: Path) -> list[Path]:
    return [python_submission(root, "blocks", BLOCKS, track="lens-tiles"),
            python_submission(root, "hoard", HOARD, track="lens-tiles")]


@pytest.fixture(scope="module")
def local(track: DetectTrack, release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """Both submissions evaluated once by the local executor, into ``out/local``: (out, their outcomes)."""
    out = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db")  # never used: publish=False
        return out, evaluate(_subs(out / "subs"), track, release, out=out / "local", publish=False)


def test_tiles_stream_a_batch_at_a_time_under_a_memory_limit_smaller_than_the_test_set(
        track: DetectTrack, release: Path, local: tuple[Path, list]) -> None:
    test = layout.public_dir(release, "test")
    inputs = sum(p.stat().st_size for p in layout.shard_paths(test, "images"))
    assert inputs > MEMORY_MB * 2**20 and track.for_profile("challenge").image_shape() == (1, 1024, 1024)
    blocks, hoard = local[1]
    assert blocks.status == "FINISHED", blocks.reason
    assert blocks.metrics["n_tiles"] == TILES and blocks.metrics["n_lens"] > 0, blocks.metrics
    assert hoard.status == "FAILED" and f"memory limit of {MEMORY_MB} MB" in hoard.reason, hoard.reason


@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_the_ray_executor_shards_tiles_and_gives_the_local_candidates_and_metrics(
        ray_local, track: DetectTrack, release: Path, local: tuple[Path, list], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    assert len(shard_ranges(layout.public_dir(release, "test"), BATCH, 3)) == 3  # really split across tasks
    sub = _subs(tmp_path / "subs")[:1]
    here = local[1][:1]  # blocks, by the local executor
    remote = evaluate(sub, track, release, out=tmp_path / "ray", publish=False, executor="ray",
                      executor_options={"shards": 3})
    assert [o.status for o in here + remote] == ["FINISHED", "FINISHED"], [o.reason for o in here + remote]
    assert remote[0].metrics == here[0].metrics  # the same floats, not approximately
    assert np.isfinite(here[0].metrics["average_precision"])
    files = [private_dir(record_dir(where, "tests", "blocks")) for where in (local[0] / "local", tmp_path / "ray")]
    a, b = (np.load(f / "predictions.npy") for f in files)
    assert a.shape == (TILES, 100, 3)
    np.testing.assert_array_equal(a, b)  # the same candidates, bit for bit
    names = sorted(p.name for p in files[0].iterdir() if p.suffix == ".csv")
    assert {"predictions_ids.csv", "lenses.csv", "completeness_purity.csv"} <= set(names), names
    for name in names:  # the tile ids, the lenses with their matched scores, the curve: the same text
        pd.testing.assert_frame_equal(pd.read_csv(files[0] / name, dtype=str), pd.read_csv(files[1] / name, dtype=str))
    assert json.loads((record_dir(tmp_path / "ray", "tests", "blocks") / "evaluation.json").read_text())["n"] == TILES
