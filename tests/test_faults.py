"""Faults: `skybench evaluate` SIGKILLed mid-submission, a corrupt or mismatching shard, an unreachable MLflow
server, and a full disk while a release is written."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from helpers import csv_submission, mlflow_server, mlflow_store, python_submission
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.evaluate import record_dir
from skybench.harness.visibility import private_dir
from skybench.release import ReleaseError, layout, open_release, read_manifest, verify_release
from skybench.tracking import experiment_name
from skybench.tracking import leaderboard as lb
from skybench.tracks import load_track

ROOT = Path(__file__).resolve().parents[1]

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

SKYBENCH = str(Path(sys.executable).parent / "skybench")
SLOW = """
import time
import urllib.error
import urllib.request
import numpy as np
def load(d):
    time.sleep(3)
def predict(m, b):
    return b[:, :, 45:56, 45:56].sum(axis=(1, 2, 3)).astype(np.float32)
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _runs(uri):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment_name("lens-space"))
    return [] if exp is None else c.search_runs([exp.experiment_id])


def _linear_scores(root, name, release):
    ids = open_release(release).meta("test")["id"]
    return csv_submission(root / name, name, ids, np.linspace(0, 1, len(ids)), team="f")


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # a short-lived child (e.g. bwrap's setup) exited or is a zombie
        return ""


@pytest.mark.slow
def test_sigkill_mid_submission_then_rerun_leaves_one_finished_run(store, tmp_path, tiny_space_release):
    sub = python_submission(tmp_path / "subs", "slow", SLOW, team="f")
    out = tmp_path / "evals"
    cmd = [SKYBENCH, "evaluate", str(sub), "--track", "lens-space", "--release", str(tiny_space_release),
           "--out", str(out)]
    env = os.environ | {"MLFLOW_TRACKING_URI": store}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    runner = []
    while not runner and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # wait until the sandboxed model is running
        runner = [p for p in psutil.Process(proc.pid).children(recursive=True)
                  if "skybench.harness.runner" in _cmdline(p)]
    assert runner, "the sandboxed runner never started"
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(runner, timeout=15)
    assert not alive  # the sandbox dies with its parent
    assert not (record_dir(out, "f", "slow") / "evaluation.json").exists()
    assert [r for r in _runs(store) if r.info.status == "FINISHED"] == []
    # What a kill during MLflow logging leaves: a run created but never terminated. It must not count.
    c = MlflowClient(store)
    from skybench.tracking import ensure_experiment

    half = c.create_run(ensure_experiment(experiment_name("lens-space")), tags={"skybench.kind": "evaluation"})
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "FINISHED" in rerun.stdout
    finished = [r for r in _runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.tags["status"] == "FINISHED"
    assert c.get_run(half.info.run_id).info.status == "RUNNING"  # never promoted to FINISHED
    board = lb.leaderboard(load_track("lens-space"))
    assert list(board["name"]) == ["slow"] and board["auroc"].notna().all()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_or_mismatching_shard_stops_the_release_naming_the_file(store, tmp_path, tiny_space_release,
                                                                       damage):
    good = _linear_scores(tmp_path / "subs", "good", tiny_space_release)
    assert CliRunner().invoke(app, ["evaluate", str(good), "--track", "lens-space", "--release",
                                    str(tiny_space_release), "--out", str(tmp_path / "e1")]).exit_code == 0
    before = lb.leaderboard(load_track("lens-space"))
    bad = tmp_path / "bad"
    shutil.copytree(tiny_space_release, bad)
    shard = layout.shard_paths(layout.public_dir(bad, "test"), "images")[0]  # damaged on purpose
    data = shard.read_bytes()
    if damage == "truncate":  # a corrupt shard: cut short
        shard.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte changed: only the hash tells
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    other = _linear_scores(tmp_path / "subs", "other", tiny_space_release)
    result = CliRunner().invoke(app, ["evaluate", str(other), "--track", "lens-space", "--release", str(bad),
                                      "--out", str(tmp_path / "e2")])
    assert result.exit_code == 1 and layout.relpath(shard, bad) in result.output
    assert ("size" if damage == "truncate" else "sha256") in result.output
    assert not (tmp_path / "e2").exists()
    pd.testing.assert_frame_equal(lb.leaderboard(load_track("lens-space")), before)


def test_unreachable_mlflow_fails_clearly_and_log_publishes_later(store, tmp_path, tiny_space_release, monkeypatch):
    sub = _linear_scores(tmp_path / "subs", "offline", tiny_space_release)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    out = tmp_path / "evals"
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--track", "lens-space", "--release",
                                      str(tiny_space_release), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "NOT logged to MLflow" in result.output and "unreachable" in result.output
    assert "skybench log" in result.output
    kept = pd.read_csv(private_dir(record_dir(out, "f", "offline")) / "predictions.csv")  # nothing lost
    assert len(kept) == 64
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert "1 run(s) logged" in CliRunner().invoke(app, ["log", str(out), "--track", "lens-space"]).output
    assert "0 run(s) logged" in CliRunner().invoke(app, ["log", str(out), "--track", "lens-space"]).output
    assert list(lb.leaderboard(load_track("lens-space"))["name"]) == ["offline"]


WRITER = """
import resource, signal, sys
import numpy as np, pandas as pd
from skybench.release import write_release
# ignore: the write fails with EFBIG (Python's default); killed: SIGXFSZ kills the writer mid-write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[2] == "ignore" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # a 'disk' that is full after 200 kB per file
def chunks(split, ranges):
    for a, b in ranges:
        yield np.full((b - a, 1, 101, 101), 1.0, np.float32), pd.DataFrame({"id": range(a, b), "is_lens": 0})
write_release(sys.argv[1], info={"track": "lens-space", "seed": 1}, counts={"test": 40}, image_shape=(1, 101, 101),
              make_chunks=chunks, label_columns=("is_lens",), progress=False)
"""


@pytest.mark.parametrize("on_full", ["ignore", "killed"])
def test_disk_full_while_writing_a_release_never_leaves_it_half_written(tmp_path, tiny_space_release, on_full):
    out = tmp_path / "releases" / "lens-space"
    shutil.copytree(tiny_space_release, out)  # an earlier, complete release at the same place
    before = read_manifest(out)
    res = subprocess.run([sys.executable, "-c", WRITER, str(out), on_full], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    if on_full == "ignore":
        assert "File too large" in res.stderr  # EFBIG, a real failed write
        assert [p.name for p in out.parent.iterdir()] == ["lens-space"]  # temporary folder removed
    else:
        assert res.returncode == -signal.SIGXFSZ
        for leftover in out.parent.glob(".lens-space.tmp-*"):  # a hidden temporary folder with no manifest
            assert not layout.manifest_path(leftover).exists()
    assert read_manifest(out) == before and verify_release(out) == []  # the old release, whole
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-c", WRITER, str(fresh), on_full], capture_output=True, timeout=120)
    assert not fresh.exists()
    with pytest.raises(ReleaseError, match="no manifest"):
        read_manifest(fresh)


SIMULATE_IN_LITTLE_MEMORY = """
import resource, sys
from typer.testing import CliRunner
from skybench.cli import app
import skybench.simulate  # imported before the limit, like everything the simulation itself needs
from skybench.tasks import get_task
get_task("lens").simulator()
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 600 * 2**20, resource.RLIM_INFINITY))  # 600 MB more address space
res = CliRunner().invoke(app, ["simulate", "lens-space", "--out", sys.argv[1], "--size", sys.argv[2],
                               "--chunk-size", sys.argv[2], "--backend", "numpy"])
print(res.exit_code, res.output.strip())
"""


def test_running_out_of_memory_while_simulating_names_the_chunk_size_and_writes_nothing(tmp_path):
    """A real allocation failure (an address-space limit): one clear line that says what to change; no release, no
    temporary folder left."""
    out = tmp_path / "releases" / "lens-space"
    res = subprocess.run([sys.executable, "-c", SIMULATE_IN_LITTLE_MEMORY, str(out), "20000"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    code, _, said = res.stdout.strip().partition(" ")
    assert code == "1", res.stdout + res.stderr[-2000:]
    assert "out of host memory simulating 20000 objects at a time" in said and "--chunk-size (say 5000)" in said
    assert len(said.splitlines()) == 1, said
    assert not out.exists() and list(out.parent.iterdir()) == []


SIMULATE_AND_KILL_A_WORKER = """
import os, signal, sys, threading, time
import psutil
from typer.testing import CliRunner
from skybench.cli import app

def kill_a_worker():
    while True:
        children = psutil.Process().children()
        if children:
            time.sleep(0.5)  # the pool is working
            os.kill(children[0].pid, signal.SIGKILL)
            return
        time.sleep(0.05)

threading.Thread(target=kill_a_worker, daemon=True).start()
res = CliRunner().invoke(app, ["simulate", "lens-space", "--out", sys.argv[1], "--size", "4000", "--backend", "numpy"])
print(res.exit_code, res.output.strip())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: simulate runs in one process, with no pool")
def test_a_simulation_worker_killed_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "releases" / "lens-space"
    res = subprocess.run([sys.executable, "-c", SIMULATE_AND_KILL_A_WORKER, str(out)], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    code, _, said = res.stdout.strip().partition(" ")
    assert code == "1", res.stdout + res.stderr[-2000:]
    assert "a simulation worker process died" in said and len(said.splitlines()) == 1, said
    assert not out.exists() and list(out.parent.iterdir()) == []


A_WORKER_DIES_WHILE_THE_REST_ARE_CANCELLED = """
import multiprocessing, os, signal, time
from skybench.simulate import _Pool

def slow(i):
    time.sleep(2)
    return i

if __name__ == "__main__":
    try:
        with _Pool(2) as pool:
            futures = [pool.submit(slow, i) for i in range(10)]
            time.sleep(0.5)
            for f in futures[5:]:  # pending, as map's iterator cancels them when its consumer stops
                f.cancel()
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
            futures[0].result(), futures[1].result()
    except Exception as exc:
        print(type(exc).__name__, len(multiprocessing.active_children()))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: simulate runs in one process, with no pool")
def test_a_broken_simulation_pool_leaves_no_worker_behind(tmp_path):
    # CPython 3.11's pool manager dies on the cancelled futures (gh-107219) before it stops the other worker, which
    # then kept the interpreter from exiting: the flaky hang of the test above
    script = tmp_path / "pool.py"  # a file, so that the workers can import `slow`
    script.write_text(A_WORKER_DIES_WHILE_THE_REST_ARE_CANCELLED)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.split() == ["BrokenProcessPool", "0"], res.stdout + res.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: simulate runs in one process, with no pool")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_simulation_leaves_no_worker_and_its_next_run_no_temporary_folder(tmp_path, how):
    """`skybench simulate` killed (`kill -9`, or a stopped `dvc repro`'s SIGTERM): its pool workers were left
    blocked for ever, holding the deleted shard's disk space, and the next run left the temporary folder there."""
    out = tmp_path / "releases" / "lens-space"
    cmd = [sys.executable, "-m", "skybench", "simulate", "lens-space", "--backend", "numpy", "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--size", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # the split's folder is made before its first chunk starts the pool's workers
        while not (any((d / "public" / "train").is_dir() for d in out.parent.glob(".lens-space.tmp-*"))
                   and (workers := psutil.Process(proc.pid).children(recursive=True))):
            assert time.monotonic() < deadline and proc.poll() is None, "the simulation never started writing"
            time.sleep(0.2)
        proc.send_signal(how)
        proc.wait(60)
    finally:
        proc.kill()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running: {[p.pid for p in alive]}"
    if how == signal.SIGTERM:  # it cleaned up itself
        assert not list(out.parent.glob(".lens-space.*"))
    res = subprocess.run([*cmd, "--size", "8"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.name for p in out.parent.iterdir()] == ["lens-space"] and verify_release(out) == []


EVALUATE_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from skybench.harness.evaluate import evaluate
sub, release, out = (Path(a) for a in sys.argv[1:4])
first = evaluate([sub], "lens-space", release, out=out, publish=False)[0]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # too small for the predictions, large enough for a record
full = evaluate([sub], "lens-space", release, out=out, publish=False, force=True)[0]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
again = evaluate([sub], "lens-space", release, out=out, publish=False)[0]
for o in (first, full, again):
    print(o.status, o.failure_kind or "-", o.reason)
"""


def test_a_full_disk_while_scoring_keeps_the_previous_record_and_is_the_machines_failure(tmp_path,
                                                                                       tiny_space_release):
    sub = _linear_scores(tmp_path / "subs", "kept", tiny_space_release)
    out = tmp_path / "evals"
    res = subprocess.run([sys.executable, "-c", EVALUATE_ON_A_FULL_DISK, str(sub), str(tiny_space_release), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    first, full, again = res.stdout.strip().splitlines()
    assert first.startswith("FINISHED")
    assert full.startswith("FAILED infrastructure") and "File too large" in full and "previous record is kept" in full
    assert again.startswith("SKIPPED")  # the kept record is this evaluation's result
    record = record_dir(out, "f", "kept")
    assert (record / "evaluation.json").read_text().count('"FINISHED"') == 1
    assert len(pd.read_csv(private_dir(record) / "predictions.csv")) == 64  # the organiser's predictions too


@pytest.mark.parametrize("scheme", ["postgresql://u:secret@", "http://"])
def test_a_refusing_tracking_store_is_one_line_at_once_for_evaluate_log_and_leaderboard(store, tmp_path,
                                                                                       tiny_space_release,
                                                                                       monkeypatch, scheme):
    # MLflow retries a dead database with back-off (minutes per store), and an HTTP server for minutes in `log`
    sub = _linear_scores(tmp_path / "subs", "offline", tiny_space_release)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{scheme}127.0.0.1:{port}" + ("/db" if "sql" in scheme else ""))
    out = tmp_path / "evals"
    start = time.monotonic()
    result = CliRunner().invoke(app, ["evaluate", str(sub), "--track", "lens-space", "--release",
                                      str(tiny_space_release), "--out", str(out)])
    assert result.exit_code == 2 and "unreachable" in result.output, result.output
    assert (record_dir(out, "f", "offline") / "evaluation.json").is_file()  # kept for `skybench log`
    for command in (["log", str(out), "--track", "lens-space"], ["leaderboard", "lens-space"], ["ui", "--no-serve"],
                    ["compare", "lens-space", "a", "b", "--release", str(tiny_space_release)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1 and "unreachable" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "secret" not in result.output, result.output
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_a_tracking_server_gone_mid_run_costs_one_failed_publish_not_one_per_record(tmp_path, tiny_space_release,
                                                                                     monkeypatch):
    """MLflow retries a server that went away for minutes per request (about 4 with its defaults): a look at the
    server (no retries) before each record is logged keeps every record for `skybench log` at once. A real
    `mlflow server`, killed once every submission was planned (its look-ups answered) and before any was logged."""
    from skybench.harness import evaluate as ev
    from skybench.tracking import log

    subs = [_linear_scores(tmp_path / "subs", f"m{i}", tiny_space_release) for i in range(3)]
    folder = tmp_path / "mlflow"
    folder.mkdir()
    with mlflow_server(folder) as (uri, proc, _):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        finish, publish, tries = ev._finish, log.publish_record, []

        def kill_then_finish(*args, **kwargs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            return finish(*args, **kwargs)

        def counted(*args, **kwargs):
            tries.append(args[0])
            return publish(*args, **kwargs)

        monkeypatch.setattr(ev, "_finish", kill_then_finish)
        monkeypatch.setattr(log, "publish_record", counted)
        out = tmp_path / "evals"
        start = time.monotonic()
        result = CliRunner().invoke(app, ["evaluate", *map(str, subs), "--track", "lens-space", "--release",
                                          str(tiny_space_release), "--out", str(out)])
    assert result.exit_code == 2 and "NOT logged to MLflow" in result.output, result.output
    assert tries == [], tries  # a look at the server before each record: none tried (MLflow's retries took 250 s)
    assert time.monotonic() - start < 120
    for i in range(3):  # nothing lost
        assert (record_dir(out, "f", f"m{i}") / "evaluation.json").is_file()


@pytest.mark.slow
def test_a_tracking_server_whose_store_fails_is_unreachable_not_one_failure_per_record(tmp_path, tiny_space_release,
                                                                                       monkeypatch):
    """A real `mlflow server` whose SQLite store is corrupt: /health still answers OK (it does not touch the store)
    and every API call HTTP 400 ("file is not a database"), which skybench took for a server that answers: one
    look at the store now says why, and every record is kept for `skybench log`. (A PostgreSQL store that is gone
    answers 503: tests/server/test_mlflow_postgres.py.)"""
    subs = [_linear_scores(tmp_path / "subs", f"d{i}", tiny_space_release) for i in range(2)]
    folder = tmp_path / "mlflow"
    folder.mkdir()
    with mlflow_server(folder) as (uri, _, db):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        urllib.request.urlopen(f"{uri}/health", timeout=30).close()
        with contextlib.suppress(urllib.error.HTTPError):  # 404: the server's connection to its store is open
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=x", timeout=30)
        with open(db, "r+b") as f:  # the store's bytes overwritten in place: the server's open connection reads them
            f.write(bytes(db.stat().st_size))
        out = tmp_path / "evals"
        result = CliRunner().invoke(app, ["evaluate", *map(str, subs), "--track", "lens-space", "--release",
                                          str(tiny_space_release), "--out", str(out)])
        said = "answered HTTP 400 on /api/2.0/mlflow/experiments/get-by-name (BAD_REQUEST:"
        assert result.exit_code == 2 and said in result.output and "not a database" in result.output, result.output
        for i in range(2):  # nothing lost
            assert (record_dir(out, "f", f"d{i}") / "evaluation.json").is_file()
        for command in (["log", str(out), "--track", "lens-space"], ["leaderboard", "lens-space"], ["ui", "--no-serve"],
                        ["compare", "lens-space", "a", "b", "--release", str(tiny_space_release)]):
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 1 and said in result.output, (command, result.output)
            assert len(result.output.strip().splitlines()) == 1, (command, result.output)


def _wait_for_runner(proc: subprocess.Popen) -> None:
    """Wait until ``proc`` (a `skybench evaluate`) has its sandboxed model running."""
    deadline, runner = time.monotonic() + 120, []
    while not runner and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        runner = [p for p in psutil.Process(proc.pid).children(recursive=True)
                  if "skybench.harness.runner" in _cmdline(p)]
    assert runner, "the sandboxed runner never started"


def test_a_release_remade_while_it_is_evaluated_is_the_machines_failure(store, tmp_path, tiny_space_release):
    """`dvc repro` re-making a release while a worker evaluates on it: what ran (the sandbox's inputs were deleted
    under it) and the labels scored are not those of the sha256 the record would carry. Never the team's FAILED,
    never a score filed under the old release: the machine's failure, retried."""
    from skybench.simulate import simulate_release

    release = tmp_path / "releases" / "lens-space"
    shutil.copytree(tiny_space_release, release)
    sub = python_submission(tmp_path / "subs", "slow", SLOW, team="f")
    out = tmp_path / "evals"
    proc = subprocess.Popen([SKYBENCH, "evaluate", str(sub), "--track", "lens-space", "--release", str(release),
                             "--out", str(out)], env=os.environ | {"MLFLOW_TRACKING_URI": store},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_runner(proc)
    simulate_release("lens-space", release, profile="demo", seed=4, size=64, progress=False)  # re-made
    said = proc.communicate(timeout=300)[0]
    assert "infrastructure failure" in said and "the release changed during the evaluation" in said, said
    assert proc.returncode == 3 and "failed through this machine's fault" in said, said  # dvc repro retries it
    rec = json.loads((record_dir(out, "f", "slow") / "evaluation.json").read_text())
    assert rec["failure_kind"] == "infrastructure" and rec["metrics"] == {}


LAZY = """
import time
import urllib.error
import urllib.request
from pathlib import Path
import numpy as np
def load(d):
    time.sleep(3)  # a large model: loading takes a while
    return float((Path(d) / "weights.txt").read_text())
def predict(m, b):
    return m * b[:, :, 45:56, 45:56].sum(axis=(1, 2, 3)).astype(np.float32)
"""


def test_a_folder_replaced_while_it_is_evaluated_is_the_machines_failure(store, tmp_path, tiny_space_release):
    """The organiser's `dvc repro` runs submissions/<team>/<name>/ while a server worker puts a newer upload of the
    entry there (worker.place): the folder is deleted under the running sandbox. Not the team's FAILED (of the
    version it had hashed): the machine's failure, retried."""
    from skybench.server.worker import place

    v1, v2 = (python_submission(tmp_path / v, "m1", LAZY, team="alpha") for v in ("v1", "v2"))
    (v1 / "weights.txt").write_text("1.0")
    (v2 / "weights.txt").write_text("2.0")
    dest = place(v1, tmp_path / "project" / "submissions" / "alpha" / "m1")
    out = tmp_path / "evals"
    proc = subprocess.Popen([SKYBENCH, "evaluate", str(dest), "--track", "lens-space", "--release",
                             str(tiny_space_release), "--out", str(out)],
                            env=os.environ | {"MLFLOW_TRACKING_URI": store}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_runner(proc)
    time.sleep(1)
    place(v2, dest)
    said = proc.communicate(timeout=300)[0]
    assert "infrastructure failure" in said and "changed during its evaluation" in said, said
    assert proc.returncode == 3 and "alpha/m1" in said, said
    rec = json.loads((record_dir(out, "alpha", "m1") / "evaluation.json").read_text())
    assert rec["failure_kind"] == "infrastructure"


LEADERBOARD_ON_A_FULL_DISK = """
import resource, signal, sys
from typer.testing import CliRunner
from skybench.cli import app
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
res = CliRunner().invoke(app, ["leaderboard", "lens-space", "--release", sys.argv[1], "--write", sys.argv[2],
                               "--format", "csv"])
print(res.exit_code)
print(res.output.strip())
"""


def test_a_full_disk_while_writing_the_leaderboard_keeps_the_previous_one_whole(store, tmp_path, tiny_space_release):
    """`skybench leaderboard --write` (the leaderboard stage) on a disk too full for the new board: one line, and
    the previous leaderboard.md and metrics.json are kept whole (they were truncated to what fitted)."""
    for name in ("a", "b"):
        _linear_scores(tmp_path / "subs", name, tiny_space_release)
    ids = open_release(tiny_space_release).meta("test")["id"]
    evaluate = ["evaluate", "--track", "lens-space", "--release", str(tiny_space_release), "--out", str(tmp_path / "e")]
    assert CliRunner().invoke(app, [*evaluate, str(tmp_path / "subs" / "a"), str(tmp_path / "subs" / "b")]
                              ).exit_code == 0
    out = tmp_path / "results"
    assert CliRunner().invoke(app, ["leaderboard", "lens-space", "--release", str(tiny_space_release), "--write",
                                    str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    more = [csv_submission(tmp_path / "subs" / f"m{i}", f"m{i}", ids, np.random.default_rng(i).random(len(ids)),
                           team="f") for i in range(12)]  # a longer board than the disk has room for
    assert CliRunner().invoke(app, [*evaluate, *map(str, more)]).exit_code == 0
    limit = max(len(b) for b in before.values()) + 64
    res = subprocess.run([sys.executable, "-c", LEADERBOARD_ON_A_FULL_DISK, str(tiny_space_release), str(out),
                          str(limit)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    code, _, said = res.stdout.strip().partition("\n")
    assert code == "1", res.stdout + res.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after.keys() == before.keys()  # no temporary file left
    assert after == before, {k: len(v) for k, v in after.items()}  # nothing half-written
    assert len(said.splitlines()) == 1 and "File too large" in said and "the previous files are kept" in said, said


@pytest.mark.parametrize("damage", ["not json", "old format", "no such release"])
def test_a_release_that_is_not_one_stops_the_leaderboard_and_keeps_the_board(store, tmp_path, tiny_space_release,
                                                                              damage):
    """A corrupt or old manifest matched no run: `skybench leaderboard --write` wrote an empty board over the last
    one, and exited 0; a --release that is no release ranked every release's runs, unasked."""
    _linear_scores(tmp_path / "subs", "a", tiny_space_release)
    rel = tmp_path / "rel"
    shutil.copytree(tiny_space_release, rel)
    assert CliRunner().invoke(app, ["evaluate", "--track", "lens-space", "--release", str(rel), "--out",
                                    str(tmp_path / "e"), str(tmp_path / "subs" / "a")]).exit_code == 0
    out = tmp_path / "results"
    assert CliRunner().invoke(app, ["leaderboard", "lens-space", "--release", str(rel), "--write", str(out)]
                              ).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    manifest = layout.manifest_path(rel)
    if damage == "not json":
        manifest.write_text("{ not json")
    elif damage == "old format":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": "skybench-release/0"}))
    else:
        rel = tmp_path / "nowhere"
    for args in (["leaderboard", "lens-space", "--release", str(rel), "--write", str(out)],
                 ["compare", "lens-space", "a", "a", "--release", str(rel)]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1 and str(rel) in res.output and "Traceback" not in res.output, res.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("damage", ["shard cut short", "shard header cut", "table cut short"])
def test_a_damaged_release_is_one_line_naming_the_file_for_the_reader_and_a_baseline(tmp_path, tiny_space_release,
                                                                                     damage):
    """The reader maps shards and reads tables without hashing them: a truncated shard was numpy's "mmap length is
    greater than file size", a cut header "EOF: reading array header", a cut table pyarrow's "magic bytes not
    found", none naming its file, and a baseline's train.py printed the traceback."""
    rel = tmp_path / "rel"
    shutil.copytree(tiny_space_release, rel)
    shard = layout.shard_paths(layout.public_dir(rel, "train"), "images")[0]
    victim = {"shard cut short": shard, "shard header cut": shard,
              "table cut short": layout.meta_path(layout.public_dir(rel, "train"))}[damage]
    os.truncate(victim, 40 if damage == "shard header cut" else victim.stat().st_size // 2)
    with pytest.raises(ReleaseError, match=str(victim)):
        release = open_release(rel)
        np.asarray(release.images("train")[:4]).sum()
        release.labels("train")
    res = subprocess.run([sys.executable, str(ROOT / "baselines" / "lens" / "knn" / "train.py"), "--track",
                          "lens-space", "--release", str(rel), "--out", str(tmp_path / "model")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {victim}"), res.stderr[-2000:]


@pytest.fixture
def read_only_fs(tmp_path):
    """A real read-only filesystem (tmpfs mounted ro); needs root (mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs (root needed): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_evaluate_into_a_read_only_folder_is_one_line_and_touches_nothing(store, tmp_path, tiny_space_release,
                                                                          read_only_fs):
    sub = _linear_scores(tmp_path / "subs", "ro", tiny_space_release)
    res = subprocess.run([SKYBENCH, "evaluate", str(sub), "--track", "lens-space", "--release",
                          str(tiny_space_release), "--out", str(read_only_fs / "evals")],
                         capture_output=True, text=True, timeout=300, env=os.environ | {"MLFLOW_TRACKING_URI": store})
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stderr.strip()
    assert len(said.splitlines()) == 1 and "Read-only file system" in said and "nothing was evaluated" in said, said
    assert str(read_only_fs) in said  # where
    assert _runs(store) == []


def test_the_roc_folder_is_swapped_whole_or_kept(tmp_path, monkeypatch):
    """`leaderboard --write` removed roc/ first, then copied into it: a full disk left it half-written (a 0-byte
    curve), and the error named the source file."""
    import shutil

    from skybench.cli import _copy_roc_curves

    evaluations, out = tmp_path / "evaluations", tmp_path / "board" / "roc"
    for name in ("t+a", "t+b", "t+c"):
        (evaluations / name).mkdir(parents=True)
        (evaluations / name / "roc_public.csv").write_text(f"fpr,tpr\n0,{name}\n")
    _copy_roc_curves(evaluations, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["t+a.csv", "t+b.csv", "t+c.csv"]
    (evaluations / "t+d").mkdir()
    (evaluations / "t+d" / "roc_public.csv").write_text("fpr,tpr\n0,1\n")
    copy, calls = shutil.copyfile, []

    def full_disk(src, dst, *a, **k):  # the third copy finds the disk full
        calls.append(dst)
        if len(calls) == 3:
            open(dst, "w").close()
            raise OSError(28, "No space left on device", str(dst))
        return copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match=f"cannot write the ROC curves in {out}.*No space left.*previous ones are kept"):
        _copy_roc_curves(evaluations, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["roc"]  # nothing of the attempt is left


def test_a_command_s_unforeseen_os_error_is_one_line_naming_the_file(tmp_path, tiny_space_release):
    """Every command: a disk error it does not handle itself (here: export-bologna and index-submissions writing
    under a file) is one line with the file, not a traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in (["export-bologna", str(tiny_space_release), "--out", str(blocker / "export")],
                    ["index-submissions", "--out", str(blocker / "submissions.json")]):
        r = CliRunner().invoke(app, command)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (command, r.output)
        assert len(r.output.strip().splitlines()) == 1 and str(blocker) in r.output, (command, r.output)


POOL_WORKER_SIGTERM = """
import signal, sys
from skybench.simulate import _init_worker
from skybench.tracks import load_track

signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(SystemExit(143)))  # as `skybench simulate`'s
_init_worker(load_track("lens-space"), "numpy", "pcg64", True, __import__("os").getppid())
print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""


def test_a_pool_worker_dies_on_sigterm_instead_of_raising_the_callers_systemexit():
    """A forked worker inherited `skybench simulate`'s SIGTERM -> SystemExit handler: when one worker died the pool
    SIGTERMed the others, one caught the SystemExit inside its chunk and waited for work for ever (a 300 s hang)."""
    res = subprocess.run([sys.executable, "-c", POOL_WORKER_SIGTERM], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "True", res.stdout + res.stderr[-2000:]


@pytest.mark.parametrize("damage", ["missing", "changed", "no manifest"])
def test_damaged_real_data_is_refused_and_the_real_set_kept(tmp_path, damage):
    """One real-data file gone (or changed) was taken for "no data/": the import replaced the real set with an
    empty one and exited 0, so every real_* metric vanished without an error."""
    import hashlib

    data = tmp_path / "data"
    (data / "lenses_hst").mkdir(parents=True)
    files = {"lenses_hst/catalog.csv": b"name\nA\n", "lenses_hst/A_F814W.fits": b"SIMPLE  =" + bytes(100)}
    for rel, body in files.items():
        (data / rel).write_bytes(body)
    (data / "MANIFEST.sha256").write_text("".join(f"{hashlib.sha256(b).hexdigest()}  {rel}\n"
                                                  for rel, b in files.items()))
    target = {"missing": "lenses_hst/A_F814W.fits", "changed": "lenses_hst/catalog.csv",
              "no manifest": "MANIFEST.sha256"}[damage]
    if damage == "changed":
        (data / target).write_bytes(b"name\nB\n")
    else:
        (data / target).unlink()
    out = tmp_path / "releases" / "real-lens-space"
    out.mkdir(parents=True)
    (out / "kept").write_text("the good real set")
    for cmd in (["import-real-set", "lens-space"], ["import-real-lenses"], ["import-real-truth"]):
        res = CliRunner().invoke(app, [*cmd, "--data", str(data), "--out", str(out)])
        assert res.exit_code == 1, res.output
        assert target in res.output and "nothing was written" in res.output and "Traceback" not in res.output
        assert [p.name for p in out.iterdir()] == ["kept"]


def test_a_database_that_takes_connections_and_never_answers_is_reported_fast(monkeypatch):
    """A PostgreSQL tracking store behind a listener that accepts and never replies passed the TCP probe, then held
    `evaluate` and `leaderboard` in psycopg's and MLflow's retries for over 8 minutes, silently."""
    from skybench.tracking import unreachable

    hole = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    try:
        port = hole.getsockname()[1]
        import threading

        def take() -> None:
            with contextlib.suppress(OSError):
                while True:
                    held.append(hole.accept()[0])

        threading.Thread(target=take, daemon=True).start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg://mlflow:secret@127.0.0.1:{port}/mlflow")
        start = time.monotonic()
        why = unreachable(timeout=2.0)
        assert time.monotonic() - start < 30
        assert "does not answer" in why and f"127.0.0.1:{port}" in why and "secret" not in why, why
    finally:
        hole.close()
        for c in held:
            c.close()


@pytest.mark.parametrize("store", ["corrupt", "locked", "file"])
def test_an_unreadable_local_tracking_store_is_one_line(tmp_path, monkeypatch, store):
    """A damaged SQLite store, one held by an exclusive lock, or a file store (which MLflow refuses): `leaderboard`
    printed a 38-line traceback; it says what is wrong with which store, in one line."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    holder = None
    if store == "corrupt":
        db.write_bytes(b"garbage" * 100)
    elif store == "locked":
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
    uri = f"file://{tmp_path}/mlruns" if store == "file" else f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    try:  # the lock: the probe waits its 10 s for it
        res = CliRunner().invoke(app, ["leaderboard", "lens-space", "--all-releases"])
    finally:
        if holder is not None:
            holder.close()
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    said = {"corrupt": "not a database", "locked": "locked", "file": "file store"}[store]
    assert said in res.output and (str(db) in res.output or store == "file"), res.output


def test_real_data_manifests_as_sha256sum_writes_them_pass(tmp_path):
    """`sha256sum -b` writes "<digest> *<path>", and digests may be upper case: `sha256sum -c` accepts both."""
    import hashlib

    from skybench.release.verify import verify_real_data

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_bytes(b"1\n")
    digest = hashlib.sha256(b"1\n").hexdigest()
    for line in (f"{digest}  a/x.csv\n", f"{digest} *a/x.csv\n", f"{digest.upper()}  a/x.csv\r\n"):
        (tmp_path / "MANIFEST.sha256").write_text(line)
        assert verify_real_data(tmp_path) == [], line
    (tmp_path / "MANIFEST.sha256").write_text(f"{digest}  ../outside\n")
    assert "not a `sha256sum` line" in verify_real_data(tmp_path)[0]


@pytest.mark.parametrize("uri", ["databricks", "databricks-uc", "uc:databricks-uc"])
def test_hosted_tracking_uris_are_not_taken_for_file_stores(monkeypatch, uri):
    from skybench.tracking import unreachable

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert "file store" not in unreachable(timeout=1.0)
