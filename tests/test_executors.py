"""Executors: the Ray executor (a real local Ray instance, 2 CPUs) gives the local executor's results bit for bit."""

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from helpers import HIDDEN_TEST_META, mlflow_store, python_submission

from skybench.harness.evaluate import evaluate, record_dir
from skybench.harness.executors import get_executor, shard_ranges, write_view
from skybench.harness.visibility import private_dir
from skybench.release import layout
from skybench.tracks import load_track

# Per-object arithmetic only: a deterministic model whose outputs do not depend on how the rows are batched.
PREDICT = """
import numpy as np
def load(d):
    return None
def predict(m, b):
    centre = b[:, :, 40:61, 40:61].astype("float64").sum(axis=(1, 2, 3))
    return (centre / (np.abs(b).astype("float64").sum(axis=(1, 2, 3)) + 1e-9)).astype("float32")
"""
PEEK = f"""
def load(d):
    return open('/inputs/../{HIDDEN_TEST_META}', 'rb').read()
def predict(m, b): return b.sum(axis=(1, 2, 3))
"""


@pytest.fixture(scope="module")
def ray_local():
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s")
    yield ray
    ray.shutdown()


def test_shards_cut_on_batch_boundaries_and_views_hold_the_rows(tiny_space_release, tmp_path):
    test = layout.public_dir(tiny_space_release, "test")
    assert shard_ranges(test, 16, 3) == [(0, 16), (16, 48), (48, 64)]
    assert shard_ranges(test, 256, 4) == [(0, 64)]  # one batch: one shard
    view = write_view(test, 16, 48, tmp_path / "view")
    first = layout.shard_name("images", 0)
    np.testing.assert_array_equal(np.load(view / first), np.load(test / first)[16:48])
    ids = pd.read_parquet(layout.index_path(test))["id"].to_numpy()
    np.testing.assert_array_equal(pd.read_parquet(layout.index_path(view))["id"].to_numpy(), ids[16:48])
    with pytest.raises(ValueError, match="unknown executor"):
        get_executor("dask")


def test_a_view_never_changes_the_mode_of_the_release_files_it_links(tiny_space_release, tmp_path):
    """Whole shards are hard-linked into a Ray task's view: setting the view's modes must not make the release's
    own file (a DVC cache file is 0444) writable, and a file the sandbox could not read is copied, not linked."""
    import shutil

    test = tmp_path / "test"
    shutil.copytree(layout.public_dir(tiny_space_release, "test"), test)
    shard = test / layout.shard_name("images", 0)
    for mode, linked in ((0o444, True), (0o600, False)):
        shard.chmod(mode)
        view = write_view(test, 0, 64, tmp_path / f"view-{mode:o}")
        assert shard.stat().st_mode & 0o777 == mode
        assert os.path.samefile(view / shard.name, shard) == linked
        assert all(p.stat().st_mode & 0o444 == 0o444 for p in view.iterdir())


@pytest.mark.slow
def test_ray_executor_matches_local_bit_for_bit_and_keeps_the_sandbox(ray_local, tiny_space_release, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    subs = [python_submission(tmp_path / "subs", "det", PREDICT, team="ray"),
            python_submission(tmp_path / "subs", "peek", PEEK, team="ray")]
    track = load_track("lens-space")
    # Batches of 16: the 64 test cut-outs go out as 3 shards, so the Ray run really is split across tasks.
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(
        update={"batch_size": 16, "real_set": None})})
    local = evaluate(subs[:1], track, tiny_space_release, out=tmp_path / "local", publish=False)
    start = time.perf_counter()
    remote = evaluate(subs, track, tiny_space_release, out=tmp_path / "ray", publish=False, executor="ray",
                      executor_options={"shards": 3})
    print(f"ray evaluate of 2 submissions x 3 shards: {time.perf_counter() - start:.1f} s")
    assert [o.status for o in local + remote] == ["FINISHED", "FINISHED", "FAILED"], [o.reason for o in local + remote]
    assert remote[0].metrics == local[0].metrics  # the same floats, not approximately
    a = pd.read_csv(private_dir(record_dir(tmp_path / "local", "ray", "det")) / "predictions.csv",
                    dtype={"score": str})
    b = pd.read_csv(private_dir(record_dir(tmp_path / "ray", "ray", "det")) / "predictions.csv",
                    dtype={"score": str})
    pd.testing.assert_frame_equal(a, b)  # the same text, so the same bits
    assert json.loads((record_dir(tmp_path / "ray", "ray", "det") / "evaluation.json").read_text())["n"] == 64
    # Inside the Ray worker the sandbox still hides the labels: the peeking submission fails in its shard.
    assert "shard 1/3" in remote[1].reason and ("No such file" in remote[1].reason or "denied" in remote[1].reason)


def test_a_ray_task_s_own_exception_is_judged_by_what_it_raised():
    """Ray wraps what a task raised in a RayTaskError; a ValueError from a submission's output is the submission's
    failure (FAILED, not retried), as under the LocalExecutor; a full disk in the task, or a lost worker, is the
    machine's (retried at the next evaluation)."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    from skybench.harness.executors import is_infrastructure

    own = RayTaskError("_predict_shard", "Traceback ...", ValueError("bad header")).as_instanceof_cause()
    assert not is_infrastructure(own)
    assert is_infrastructure(RayTaskError("_predict_shard", "Traceback ...", OSError(28, "No space left")))
    assert is_infrastructure(WorkerCrashedError())


MIXED_SHAPES = """
import numpy as np, pandas as pd
def load(d):
    return str(pd.read_parquet("/inputs/index.parquet")["id"].iloc[0])
def predict(first, b):
    if first == "0":  # point estimates on the first shard, PDFs on the other: each shape alone is accepted
        return np.full(len(b), 0.1, dtype="float32")
    return np.full((len(b), 180), 1 / 180, dtype="float32")
"""
PDF = """
import numpy as np
def load(d):
    return None
def predict(m, b):
    return np.full((len(b), 180), 1 / 180, dtype="float32")
"""


@pytest.mark.slow
def test_one_submission_s_shards_cannot_restart_the_other_jobs(ray_local, tmp_path, monkeypatch):
    """A photo-z entry whose shards return the two accepted shapes ((N,) and (N, bins)) used to make the merge
    raise, which ended the Ray run (ray.shutdown: every other job's tasks killed) and restarted it on the jobs
    after it: one entry could make everyone's evaluation run again from scratch, once per such entry."""
    from skybench.harness.executors import RayExecutor
    from skybench.simulate import simulate_release

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    tmp_path.chmod(0o755)
    release = simulate_release("photoz-catalog", tmp_path / "rel" / "photoz-catalog", profile="demo", seed=3, size=64,
                               progress=False)
    subs = [python_submission(tmp_path / "subs", "mixed", MIXED_SHAPES, team="a", track="photoz-catalog"),
            python_submission(tmp_path / "subs", "pdf", PDF, team="b", track="photoz-catalog")]
    track = load_track("photoz-catalog")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(
        update={"batch_size": 16, "real_set": None})})
    runs = []

    class Counting(RayExecutor):
        def run(self, jobs):
            runs.append(len(jobs))
            return super().run(jobs)

    out = evaluate(subs, track, release, out=tmp_path / "ray", publish=False, executor=Counting(shards=2))
    assert [o.status for o in out] == ["FAILED", "FINISHED"]
    assert "shard 2/2" in out[0].reason and "same shape" in out[0].reason
    assert runs == [2]  # one run for both: the honest entry's tasks were never thrown away


@pytest.mark.slow
def test_a_predictions_csv_read_in_the_driver_cannot_restart_the_other_jobs(ray_local, tiny_space_release, tmp_path,
                                                                             monkeypatch):
    """A predictions-format entry is read in the driver, not in a task; a score of 400 nines made pandas raise
    OverflowError there (the other scores whole numbers), which ended the Ray run (every other job's tasks killed)
    and restarted it."""
    from helpers import csv_submission

    from skybench.harness.executors import RayExecutor

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    tmp_path.chmod(0o755)
    ids = pd.read_parquet(layout.index_path(layout.public_dir(tiny_space_release, "test")))["id"].to_numpy()
    hostile = csv_submission(tmp_path / "subs" / "nines", "nines", ids, np.zeros(len(ids), int), team="a")  # "0"
    text = (hostile / "scores.csv").read_text().splitlines()
    text[1] = text[1].split(",")[0] + "," + "9" * 400
    (hostile / "scores.csv").write_text("\n".join(text) + "\n")
    honest = python_submission(tmp_path / "subs", "det", PREDICT, team="b")
    runs = []

    class Counting(RayExecutor):
        def run(self, jobs):
            runs.append(len(jobs))
            return super().run(jobs)

    out = evaluate([hostile, honest], "lens-space", tiny_space_release, out=tmp_path / "ray", publish=False,
                   executor=Counting(shards=2))
    assert [o.status for o in out] == ["FAILED", "FINISHED"], [o.reason for o in out]
    assert "float" in out[0].reason and "\n" not in out[0].reason, out[0].reason
    assert runs == [2]  # one run for both: the honest entry's tasks were never thrown away


SLEEPY = """
import sys, time
def load(d):
    print(f"start {time.time()}", file=sys.stderr, flush=True)
    time.sleep(3)
    print(f"end {time.time()}", file=sys.stderr, flush=True)
def predict(m, b):
    return b.sum(axis=(1, 2, 3)).astype("float32")
"""


@pytest.mark.slow
def test_ray_never_runs_more_sandbox_memory_than_a_node_holds(ray_local, tiny_space_release, tmp_path, monkeypatch):
    """Tasks reserve their sandbox's memory limit: two sandboxes whose limits add up to more than the node's memory
    run one after the other, not at once (else the kernel's OOM killer picks one, another team's run within its
    own limit, when the other fills its share)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    memory = ray_local.cluster_resources()["memory"]
    track = load_track("lens-space")
    track = track.model_copy(update={
        "evaluation": track.evaluation.model_copy(update={"batch_size": 64, "real_set": None}),
        "sandbox": track.sandbox.model_copy(update={"memory_mb": int(0.6 * memory) >> 20})})
    subs = [python_submission(tmp_path / "subs", name, SLEEPY, team=name) for name in ("a", "b")]
    out = evaluate(subs, track, tiny_space_release, out=tmp_path / "ray", publish=False, executor="ray",
                   executor_options={"shards": 1})
    assert [o.status for o in out] == ["FINISHED", "FINISHED"], [o.reason for o in out]
    spans = sorted([float(line.split()[1]) for line in o.log.splitlines() if line.startswith(("start ", "end "))]
                   for o in out)
    assert all(len(s) == 2 for s in spans), [o.log for o in out]
    assert spans[0][1] <= spans[1][0], spans  # the second sandbox started after the first had finished


@pytest.mark.slow
def test_a_ray_fault_while_sending_tasks_is_the_machine_s_not_the_first_team_s(ray_local, tiny_space_release,
                                                                            tmp_path, monkeypatch):
    """Ray's own errors while the executor read the cluster or sent a job's tasks left the generator, and were
    pinned on the first job as that team's failure (a server counted it against its quota, never retried)."""
    import ray.exceptions

    from skybench.harness import executors

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    subs = [python_submission(tmp_path / "subs", name, PREDICT, team=name) for name in ("alice", "bob")]
    track = load_track("lens-space")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": None})})

    def gcs_down():
        raise ray.exceptions.RaySystemError("GCS unavailable (a host fault)")

    with monkeypatch.context() as m:
        m.setattr(ray_local, "nodes", gcs_down)
        out = evaluate(subs, track, tiny_space_release, out=tmp_path / "a", publish=False, executor="ray")
    assert [(o.status, o.failure_kind) for o in out] == [("FAILED", "infrastructure")] * 2, [o.reason for o in out]
    calls = []
    real_ranges = executors.shard_ranges

    def second_fails(*args, **kwargs):  # bob's tasks cannot be sent; alice's went out
        calls.append(1)
        if len(calls) == 2:
            raise ray.exceptions.RaySystemError("failed to submit task: GCS connection lost (a host fault)")
        return real_ranges(*args, **kwargs)

    monkeypatch.setattr(executors, "shard_ranges", second_fails)
    out = evaluate(subs, track, tiny_space_release, out=tmp_path / "b", publish=False, executor="ray")
    assert [(o.status, o.failure_kind) for o in out] == [("FINISHED", ""), ("FAILED", "infrastructure")], \
        [o.reason for o in out]


def test_a_killed_shard_task_s_folder_is_swept_by_the_next(tiny_space_release, tmp_path):
    """A SIGKILLed Ray worker or evaluator left its shard folder (a view of up to half the test set: ~16 GB on a
    100,000-object lens-ground run) in /tmp for good; the next shard task on the node removes it, in a folder of
    this user's alone, whatever the killed run's scratch held (1,500 levels: shutil.rmtree's RecursionError failed
    every later shard on the node as the team's own failure)."""
    from skybench.harness.executors import Job, _predict_shard, private_temp
    from skybench.harness.record import _STAGE
    from skybench.harness.submission import load_submission

    root = private_temp()
    assert root.stat().st_mode & 0o777 == 0o700 and root.stat().st_uid == os.geteuid()
    dead = root / f"{_STAGE}shard.killed-test"
    (dead / "inputs").mkdir(parents=True)
    (dead / "inputs" / "images-00000.npy").write_bytes(bytes(1000))
    deep = dead / "scratch"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # relative to the last folder: deeper than PATH_MAX allows in one path
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    os.utime(dead, (time.time() - 120, time.time() - 120))
    before = set(root.glob(f"{_STAGE}shard.*")) - {dead}
    sub = load_submission(python_submission(tmp_path / "subs", "det", PREDICT, team="ray"))
    test_dir = layout.public_dir(tiny_space_release, "test")
    (a, b), *_ = shard_ranges(test_dir, 16, 2)
    res = _predict_shard(Job(sub, test_dir, load_track("lens-space")), a, b, 1)
    assert res.ok, res.reason
    assert not dead.exists() and set(root.glob(f"{_STAGE}shard.*")) == before  # and its own is gone
