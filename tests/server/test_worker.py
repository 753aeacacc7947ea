"""The worker: claim -> place under submissions/<team>/<name>/ -> the project's evaluate -> finished | failed."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py
from helpers import bwrap_works, mlflow_store  # noqa: E402
from test_api import pack  # noqa: E402


@pytest.fixture
def server(cfg, engine):  # type: ignore[no-untyped-def]
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {token}"}, sessions(engine)


def _upload(client, headers, name="m1", **packed):  # type: ignore[no-untyped-def]
    r = client.post("/api/submissions", headers=headers, data={"track": "lens-space", "name": name},
                    files={"file": ("s.tar.gz", pack("alpha", name, **packed), "application/gzip")})
    assert r.status_code == 202, r.text
    return r.json()


def test_a_worker_takes_only_jobs_of_tracks_whose_release_its_machine_holds(server, cfg, tmp_path, monkeypatch,
                                                                          tiny_space_release):
    """A worker on a host without a track's release leaves that track's jobs queued for one that has it, rather
    than failing them and making them wait to be retried."""
    from skybench.server import worker
    from skybench.server.db import Submission
    from skybench.tracks import project_root

    client, headers, Session = server
    sub = _upload(client, headers)
    root = tmp_path / "host"
    (root / "releases").mkdir(parents=True)
    (root / "benchmarks").symlink_to(project_root() / "benchmarks")
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    mine, missing = worker.runnable_tracks(cfg)
    assert mine == [] and set(missing) == {"lens-space", "lens-ground"} and "no manifest.json" in missing["lens-space"]
    worker.run(cfg, Session, poll_seconds=0.01, once=True)  # nothing it can run: returns at once
    with Session() as s:
        job = s.get(Submission, sub["id"])
        assert (job.state, job.attempt, job.reason) == ("queued", 0, "")  # never claimed: no failed attempt

    (root / "releases" / "lens-ground").symlink_to(tiny_space_release)  # a release of another track is not one
    (root / "releases" / "lens-space").symlink_to(tiny_space_release)
    mine, missing = worker.runnable_tracks(cfg)
    assert mine == ["lens-space"] and "not a release of lens-ground" in missing["lens-ground"]


def test_a_corrupt_release_is_not_runnable_and_fails_no_job(server, cfg, tmp_path, monkeypatch, tiny_space_release):
    """A truncated or bit-flipped shard of a host's release: that host takes no job of the track (each would fail
    `max_attempts` times as the machine's failure and end failed, for every team), and names the file; mended, it
    takes them again."""
    import shutil

    from skybench.release import layout
    from skybench.server import worker
    from skybench.server.db import Submission
    from skybench.tracks import project_root

    client, headers, Session = server
    sub = _upload(client, headers)
    root = tmp_path / "host"
    (root / "releases").mkdir(parents=True)
    (root / "benchmarks").symlink_to(project_root() / "benchmarks")
    release = root / "releases" / "lens-space"
    shutil.copytree(tiny_space_release, release)
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    shard = layout.shard_paths(layout.public_dir(release, "test"), "images")[0]
    good = shard.read_bytes()
    shard.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit: only the hash tells
    mine, missing = worker.runnable_tracks(cfg)
    assert "lens-space" not in mine and layout.relpath(shard, release) in missing["lens-space"]
    assert "sha256" in missing["lens-space"]
    worker.run(cfg, Session, poll_seconds=0.01, once=True)
    with Session() as s:
        job = s.get(Submission, sub["id"])
        assert (job.state, job.attempt, job.reason) == ("queued", 0, "")  # never claimed: no failed attempt
    shard.write_bytes(good)  # mended
    assert "lens-space" in worker.runnable_tracks(cfg)[0]


def test_a_release_made_with_the_public_key_is_not_scored(server, cfg, tmp_path, monkeypatch, tiny_space_release):
    """A release of the public test-set key (the demo profile, what `dvc repro` and `skybench simulate` make by
    default) publishes its profile and seed, from which any team makes its hidden labels again: a challenge's
    workers neither claim its jobs nor score one on it, unless challenge.yaml says the challenge is a trial."""
    from skybench.physics.backend import get_backend
    from skybench.release import open_release
    from skybench.server import worker
    from skybench.server.publish import public_manifest
    from skybench.simulate import simulator_class
    from skybench.testkey import ObjectSeeds
    from skybench.tracks import load_track, project_root

    shown = public_manifest(tiny_space_release)  # what teams get with the data
    track = load_track(shown["track"])
    _, remade = simulator_class(track)(track, get_backend("numpy")).simulate(ObjectSeeds(shown["seed"]), "test", 0, 8)
    labels = open_release(tiny_space_release).hidden("test").meta()["is_lens"].to_numpy()[:8]
    assert (remade["is_lens"] == labels).all()  # the hidden labels, made again from public information

    strict = cfg.model_copy(update={"public_test_sets": False})  # the default
    client, headers, Session = server
    sub = _upload(client, headers)
    done = worker.run_one(strict, Session, "w", release=tiny_space_release, out=tmp_path / "evals", publish=False)
    assert done.id == sub["id"] and done.state == "queued" and not done.metrics
    assert "public test-set key" in done.reason and not (tmp_path / "evals").exists()
    root = tmp_path / "host"
    (root / "releases").mkdir(parents=True)
    (root / "benchmarks").symlink_to(project_root() / "benchmarks")
    (root / "releases" / "lens-space").symlink_to(tiny_space_release)
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    mine, missing = worker.runnable_tracks(strict)
    assert "lens-space" not in mine and "public test-set key" in missing["lens-space"]
    assert "lens-space" in worker.runnable_tracks(cfg)[0]  # public_test_sets: true, a trial


def test_claims_of_a_track_list(Session, cfg):
    from skybench.server import queue
    from skybench.server.auth import add_team

    with Session() as s:
        job = queue.enqueue(s, cfg, add_team(s, "gamma").team, "lens-space", "m", "a" * 64).id
        assert queue.claim(s, "w", 60, tracks=["lens-ground"]) is None
        assert queue.claim(s, "w", 60, tracks=[]) is None
        assert queue.claim(s, "w", 60, tracks=["lens-ground", "lens-space"]).id == job


def test_infrastructure_failure_is_retried_then_given_back(server, cfg, tmp_path):
    from sqlalchemy import update

    from skybench.server import queue, worker
    from skybench.server.db import Submission, utcnow

    client, headers, Session = server
    sub = _upload(client, headers)
    missing = tmp_path / "no-release"  # the machine's fault: the release is not there
    for attempt, delay in ((1, 60), (2, 120)):
        done = worker.run_one(cfg, Session, "w", release=missing, out=tmp_path / "evals", publish=False)
        assert done.state == "queued" and done.attempt == attempt and "infrastructure failure" in done.reason
        assert f"tried again in {delay} s" in done.reason
        # not at once: three claims took milliseconds, before anyone could mend the machine
        assert worker.run_one(cfg, Session, "w", release=missing, publish=False) is None
        with Session() as s:  # the delay passes
            assert queue.claim(s, "w", 60, now=done.queued_at - timedelta(seconds=1)) is None
            s.execute(update(Submission).where(Submission.id == done.id).values(queued_at=utcnow()))
            s.commit()
    done = worker.run_one(cfg, Session, "w", release=missing, out=tmp_path / "evals", publish=False)
    assert done.state == "failed" and "after 3 attempts; not counted" in done.reason and not done.counted
    with Session() as s:
        from skybench.server.db import Team

        assert queue.quota_left(s, cfg, s.get(Team, done.team_id), "lens-space")["today"] == 3
    assert worker.run_one(cfg, Session, "w", release=missing, publish=False) is None  # the queue is empty
    assert client.get(sub["status_url"], headers=headers).json()["state"] == "failed"
    placed = Path(cfg.project_root) / "submissions" / "alpha" / "m1"
    assert (placed / "submission.yaml").is_file() and (placed / "model.onnx").is_file()
    assert list((Path(cfg.project_root) / ".skybench-staging").iterdir()) == []


def test_place_replaces_the_entry_folder_atomically(tmp_path):
    from skybench.server.worker import place

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, text in ((a, "v1"), (b, "v2")):
        folder.mkdir()
        (folder / "submission.yaml").write_text(text)
        (folder / "submission.yaml").chmod(0o444)
        folder.chmod(0o555)  # like the store's read-only objects
    dest = tmp_path / "project" / "submissions" / "alpha" / "m1"
    place(a, dest)
    place(b, dest)
    assert (dest / "submission.yaml").read_text() == "v2"
    assert dest.stat().st_mode & 0o777 == 0o755 and (dest / "submission.yaml").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "project" / "submissions" / "alpha").iterdir()) == ["m1"]
    assert list((tmp_path / "project" / ".skybench-staging").iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_upload_evaluate_finish_end_to_end(server, cfg, tmp_path, tiny_space_release, monkeypatch):
    from skybench.server import worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    sub = _upload(client, headers)
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "finished", done.reason if done else None
    assert done.finished_at >= done.running_at >= done.queued_at >= done.received_at
    assert {"public_auroc", "private_auroc"} <= set(done.metrics)  # the server keeps them all ...
    shown = client.get(sub["status_url"], headers=headers).json()
    assert shown["state"] == "finished" and shown["metrics"]
    assert all(k.startswith("public_") for k in shown["metrics"])  # ... a team sees the public part
    assert shown["metrics"]["public_auroc"] == round(done.metrics["public_auroc"], 3)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")
    assert [(r.data.params.get("team"), r.data.params.get("name")) for r in runs] == [("alpha", "m1")]
    # The same folder again (a worker died after evaluating, say): finished from the record, no second run.
    second = _upload(client, headers)
    again = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert again.id == second["id"] and again.state == "finished" and again.metrics == done.metrics
    assert len(mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")) == 1


@pytest.mark.parametrize("other_worker", [False, True])  # True: the second job on a worker without the record
def test_a_failed_submission_sent_again_stays_failed(server, cfg, tmp_path, tiny_space_release, monkeypatch,
                                                     other_worker):
    """The same bytes again are not run again (the record is reused), and their outcome is the record's: a
    failure resubmitted is failed with its reason, never "finished" with no metrics (a finished entry is a
    candidate final entry and looks like a success)."""
    from skybench.server import worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    archive = pack("alpha", "broken", model=b"not an onnx model")
    for attempt in range(2):
        r = client.post("/api/submissions", headers=headers, data={"track": "lens-space", "name": "broken"},
                        files={"file": ("s.tar.gz", archive, "application/gzip")})
        assert r.status_code == 202, r.text
        out = tmp_path / ("evals2" if other_worker and attempt else "evals")
        done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=out)
        assert done is not None and done.id == r.json()["id"]
        assert done.state == "failed" and done.reason and not done.metrics, (attempt, done.state, done.reason)


SLOW_PREDICT = """
import time
import numpy as np
def load(model_dir):
    time.sleep(6)  # long enough for the test to kill the worker mid-run
def predict(model, batch):
    return batch.sum(axis=(1, 2, 3)).astype("float32")
"""

WORKER = """
import sys
from pathlib import Path
from skybench.server.config import load_config
from skybench.server.db import make_engine, sessions
from skybench.server.worker import run_one
cfg = load_config(sys.argv[1])
run_one(cfg, sessions(make_engine(cfg.db_url)), "doomed", release=Path(sys.argv[2]), out=Path(sys.argv[3]))
"""


def _enqueue_slow(cfg, Session, tmp_path: Path) -> int:  # type: ignore[no-untyped-def]  # noqa: N803
    """Store team alpha's ``slow`` entry (:data:`SLOW_PREDICT`) as an upload would and queue it; its job id."""
    import io
    import tarfile

    from helpers import python_submission

    from skybench.server import queue, worker
    from skybench.server.auth import add_team

    folder = python_submission(tmp_path / "src", "slow", SLOW_PREDICT, team="alpha")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="slow")
    store = worker.Store(cfg.storage, cfg.upload)
    loaded, _ = store.store(store.unpack(store.receive([buf.getvalue()])))
    with Session() as s:
        return queue.enqueue(s, cfg, add_team(s, "alpha").team, "lens-space", "slow", loaded.sha256).id


def _descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for p in Path("/proc").iterdir():
        try:
            stat = (p / "stat").read_text() if p.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            names[int(p.name)] = name
            children.setdefault(int(rest[1]), []).append(int(p.name))
    found, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found[c] = names[c]
            todo.append(c)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_a_worker_killed_mid_run_leaves_a_job_another_worker_finishes_once(cfg, engine, tmp_path,
                                                                          tiny_space_release, monkeypatch):
    import contextlib
    import os
    import signal
    import subprocess
    import time

    import mlflow
    import yaml

    from skybench.server import queue, worker
    from skybench.server.db import Submission, sessions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    mlflow.search_experiments()  # create the MLflow store first: MLflow's own set-up is not what is tested
    cfg = cfg.model_copy(update={"lease_seconds": 5})
    config = tmp_path / "challenge.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    Session = sessions(engine)
    jid = _enqueue_slow(cfg, Session, tmp_path)
    out = tmp_path / "evals"
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(config), str(tiny_space_release), str(out)],
                            start_new_session=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "bwrap" not in _descendants(proc.pid).values():
            time.sleep(0.2)
        time.sleep(1)  # inside the sandbox's load() now
        assert proc.poll() is None and "bwrap" in _descendants(proc.pid).values(), "no sandbox to kill"
    finally:
        for pid in [proc.pid, *_descendants(proc.pid)]:  # the machine dies: the worker and all it started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)
    with Session() as s:
        sub = s.get(Submission, jid)
        assert sub.state == "running" and sub.lease_owner == "doomed"
        expires = sub.lease_expires
        assert queue.claim(s, "B", 5) is None  # its lease still holds (the heartbeat renewed it)
    time.sleep(max(0.0, (expires - queue.utcnow()).total_seconds()) + 0.5)
    done = worker.run_one(cfg, Session, "B", release=tiny_space_release, out=out)
    assert done is not None and done.id == jid and done.state == "finished" and done.attempt == 2, done.reason
    runs = mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")
    assert [(r.data.params.get("team"), r.data.params.get("name")) for r in runs] == [("alpha", "slow")]


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_a_result_mlflow_could_not_take_is_not_finished_until_it_is_on_the_board(server, cfg, tmp_path,
                                                                                 tiny_space_release, monkeypatch):
    """The server's leaderboard is MLflow: a job whose record could not be logged there (the tracking server
    away) is the machine's failure, retried, not "finished" with scores that no board ever shows."""
    import socket

    import mlflow

    from skybench.server import worker

    cfg = cfg.model_copy(update={"retry_seconds": 0})
    client, headers, Session = server
    _upload(client, headers)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    down = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert down is not None and down.state == "queued" and "not logged to MLflow" in down.reason, down.state
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "finished" and done.metrics, (done.state, done.reason)
    runs = mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")
    assert [(r.data.params.get("team"), r.data.params.get("name")) for r in runs] == [("alpha", "m1")]


PLACE_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from skybench.server.worker import place
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
for _ in range(3):  # the job retried
    try:
        place(Path(sys.argv[1]), Path(sys.argv[2]))
    except OSError as exc:
        print(type(exc).__name__)
"""


def test_a_copy_that_fills_the_disk_leaves_no_partial_folder(tmp_path):
    """Each retry of a job whose copy failed on a full disk left its partial copy in .skybench-staging/: the disk
    stayed full, and every other team's evaluation on that machine failed too."""
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    (src / "submission.yaml").write_text("team: a\n")
    (src / "weights.bin").write_bytes(bytes(300_000))
    dest = tmp_path / "project" / "submissions" / "alpha" / "m1"
    res = subprocess.run([sys.executable, "-c", PLACE_ON_A_FULL_DISK, str(src), str(dest)], capture_output=True,
                         text=True, timeout=60)
    assert res.stdout.split() == ["Error"] * 3, res.stdout + res.stderr
    assert list((tmp_path / "project" / ".skybench-staging").iterdir()) == [] and not dest.exists()


PLACE_A_BIG_FOLDER = """
import sys
from pathlib import Path
from skybench.server.worker import place
place(Path(sys.argv[1]), Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_a_worker_killed_mid_copy_leaves_nothing_the_next_place_keeps(tmp_path):
    """A worker SIGKILLed (the host's OOM killer, a restart) while it copied a job's folder left the partial copy in
    .skybench-staging/ for good: one more for every kill, until the disk was full."""
    import signal
    import subprocess
    import time

    src = tmp_path / "src"
    src.mkdir()
    (src / "submission.yaml").write_text("team: a\n")
    for i in range(400):
        (src / f"w{i:03d}.bin").write_bytes(bytes(256_000))
    dest = tmp_path / "project" / "submissions" / "alpha" / "m1"
    staging = tmp_path / "project" / ".skybench-staging"
    proc = subprocess.Popen([sys.executable, "-c", PLACE_A_BIG_FOLDER, str(src), str(dest)])
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not (
            staging.is_dir() and any(p.name.endswith(".tmp") for p in staging.iterdir())):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(staging.iterdir())
    assert len(left) == 1 and left[0].name.endswith(".tmp") and not dest.exists()  # killed mid-copy
    from skybench.server.worker import place

    place(src, dest)  # the job's retry, by a worker on the same host
    assert list(staging.iterdir()) == []
    assert len(list(dest.iterdir())) == 401


NUL_LOG = """
import sys
def load(d):
    print("a NUL byte:\\0 and on", file=sys.stderr, flush=True)
def predict(m, b):
    return b.sum(axis=(1, 2, 3))
"""


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_nul_in_the_sandbox_log_does_not_stop_the_job_being_recorded(server, cfg, tmp_path, tiny_space_release,
                                                                       monkeypatch):
    # PostgreSQL's text holds no NUL: storing the stderr tail raised, the job was re-run after each lease and at
    # last failed "its worker died or lost its lease each time" (the machine blamed), its score on the board
    import io
    import tarfile

    from skybench.server import worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("submission.yaml", "team: alpha\nname: nul\ntrack: lens-space\nformat: python\n"
                                               "model: predict.py\n"), ("predict.py", NUL_LOG)):
            info = tarfile.TarInfo(f"nul/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    r = client.post("/api/submissions", headers=headers, data={"track": "lens-space", "name": "nul"},
                    files={"file": ("s.tar.gz", buf.getvalue(), "application/gzip")})
    assert r.status_code == 202, r.text
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "finished", done.reason if done else None
    assert "a NUL byte:\\x00 and on" in done.log, done.log


def _entry_now(cfg, out, client) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Which version entry alpha/m1 is now: the sha256 of its folder in the project (where `dvc repro` finds it), of
    its evaluation record, and when the version its leaderboard row ranks (MLflow's latest run) was received."""
    from datetime import datetime

    from skybench.harness.record import RECORD, read_record, record_dir
    from skybench.harness.submission import folder_sha256

    [row] = [r for r in client.get("/api/tracks/lens-space/leaderboard").json()["rows"]
             if (r["team"], r["name"]) == ("alpha", "m1")]
    return {"placed": folder_sha256(Path(cfg.project_root) / "submissions" / "alpha" / "m1"),
            "recorded": read_record(record_dir(out, "alpha", "m1") / RECORD).submission_sha256,
            "ranked": datetime.fromisoformat(row["submitted"])}


def _version(sub: dict) -> dict[str, object]:  # type: ignore[type-arg]
    """What :func:`_entry_now` is when ``sub`` (an upload's API view) is the entry's version."""
    from datetime import datetime

    received = datetime.fromisoformat(sub["received_at"])
    return {"placed": sub["sha256"], "recorded": sub["sha256"],
            "ranked": received.replace(microsecond=received.microsecond // 1000 * 1000)}  # MLflow keeps ms


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_an_older_version_retried_after_a_newer_one_finished_is_superseded(server, cfg, tmp_path, tiny_space_release,
                                                                          monkeypatch):
    """Version 1 fails for the machine's reason and waits to be retried; version 2 of the same entry is uploaded,
    runs and finishes. Version 1's retry was then placed over version 2's folder, recorded over its record and logged
    to MLflow after it: the board ranked the older version. It is superseded instead, never run, its unit given
    back (it was never evaluated)."""
    from sqlalchemy import update

    from skybench.server import worker
    from skybench.server.db import Submission, utcnow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    out = tmp_path / "evals"
    v1 = _upload(client, headers)
    down = worker.run_one(cfg, Session, "w", release=tmp_path / "no-release", out=out)
    assert down is not None and down.id == v1["id"] and down.state == "queued", down.reason  # again in 60 s
    v2 = client.get(_upload(client, headers, pad=16)["status_url"], headers=headers).json()
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=out)
    assert done is not None and done.id == v2["id"] and done.state == "finished", done.reason if done else None
    assert _entry_now(cfg, out, client) == _version(v2)
    with Session() as s:  # version 1's delay passes
        s.execute(update(Submission).where(Submission.id == v1["id"]).values(queued_at=utcnow()))
        s.commit()
    late = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=out)
    assert _entry_now(cfg, out, client) == _version(v2)
    assert late is None  # nothing left to run
    old = client.get(v1["status_url"], headers=headers).json()
    assert old["state"] == "superseded" and old["superseded_at"] and not old["counted"] and not old["metrics"]
    assert old["reason"].startswith(f"superseded by a newer submission of this entry ({v2['id']}, received at ")
    assert "not counted in your quota" in old["reason"]
    assert client.get("/api/me", headers=headers).json()["tracks"]["lens-space"]["quota_left"]["today"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_two_workers_do_not_run_two_versions_of_one_entry_at_once(server, cfg, tmp_path, tiny_space_release,
                                                                  monkeypatch):
    """Worker A takes version 1; worker B took version 2 meanwhile and finished it first, then A recorded the older
    version last and the board ranked it. B now leaves version 2 waiting while A runs version 1."""
    from skybench.server import queue, worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    out = tmp_path / "evals"
    v1 = _upload(client, headers)
    v2 = client.get(_upload(client, headers, pad=16)["status_url"], headers=headers).json()
    with Session() as s:
        a = queue.claim(s, "A", cfg.lease_seconds)
    assert a is not None and a.id == v1["id"]
    meanwhile = worker.run_one(cfg, Session, "B", release=tiny_space_release, out=out)
    older = worker.run_claimed(cfg, Session, a, "A", release=tiny_space_release, out=out)
    after = worker.run_one(cfg, Session, "B", release=tiny_space_release, out=out)
    assert _entry_now(cfg, out, client) == _version(v2)
    assert meanwhile is None and older is not None and older.state == "finished", older
    assert after is not None and after.id == v2["id"] and after.state == "finished"


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_a_worker_that_lost_its_lease_records_nothing(server, cfg, tmp_path, tiny_space_release, monkeypatch):
    """Worker A stalls past its lease; B takes the job over and finishes it, then version 2 of the entry runs and
    finishes. When A wakes up, its evaluation of version 1 must not be placed, recorded or logged to MLflow (it
    was, last, and the board ranked the older version)."""
    from datetime import timedelta

    from skybench.server import queue, worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    out = tmp_path / "evals"
    v1 = _upload(client, headers)
    with Session() as s:
        a = queue.claim(s, "A", cfg.lease_seconds)
        assert a is not None and a.lease_expires is not None
        b = queue.claim(s, "B", cfg.lease_seconds, now=a.lease_expires + timedelta(seconds=1))
    assert b is not None and b.id == a.id == v1["id"] and b.attempt == 2
    assert worker.run_claimed(cfg, Session, b, "B", release=tiny_space_release, out=out).state == "finished"
    v2 = client.get(_upload(client, headers, pad=16)["status_url"], headers=headers).json()
    assert worker.run_one(cfg, Session, "B", release=tiny_space_release, out=out).id == v2["id"]
    late = worker.run_claimed(cfg, Session, a, "A", release=tiny_space_release, out=out)
    assert _entry_now(cfg, out, client) == _version(v2)
    assert late is not None and late.state == "finished" and late.lease_owner is None  # B's outcome stands


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_an_evaluation_taken_over_while_it_ran_writes_no_record(server, cfg, tmp_path, tiny_space_release,
                                                                monkeypatch):
    """Worker A's lease runs out while its job is in the sandbox and worker B takes the job over. When A's run ends
    it must write no record and log nothing to MLflow (the job is B's now: had a newer version of the entry run
    after B, A's older result would have replaced it); it is asked right before the record is written."""
    import io
    import os
    import tarfile
    import threading
    import time

    import mlflow
    from helpers import python_submission

    from skybench.harness.record import RECORD, record_dir
    from skybench.server import queue, worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    mlflow.search_experiments()  # create the MLflow store first: MLflow's own set-up is not what is tested
    client, headers, Session = server
    out = tmp_path / "evals"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(python_submission(tmp_path / "src", "m1", SLOW_PREDICT, team="alpha"), arcname="m1")
    r = client.post("/api/submissions", headers=headers, data={"track": "lens-space", "name": "m1"},
                    files={"file": ("s.tar.gz", buf.getvalue(), "application/gzip")})
    assert r.status_code == 202, r.text
    with Session() as s:
        a = queue.claim(s, "A", cfg.lease_seconds)
    assert a is not None and a.lease_expires is not None
    ended: dict[str, object] = {}
    runner = threading.Thread(target=lambda: ended.update(
        a=worker.run_claimed(cfg, Session, a, "A", release=tiny_space_release, out=out)))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "bwrap" not in _descendants(os.getpid()).values():
            time.sleep(0.2)
        assert "bwrap" in _descendants(os.getpid()).values(), "worker A's sandbox did not start"
        with Session() as s:  # inside the sandbox's load() (6 s): A stalls past its lease, B takes the job over
            b = queue.claim(s, "B", cfg.lease_seconds, now=a.lease_expires + timedelta(seconds=1))
    finally:
        runner.join(120)
    assert b is not None and b.id == a.id
    assert not (record_dir(out, "alpha", "m1") / RECORD).exists()
    exp = mlflow.get_experiment_by_name("skybench-lens-space")
    assert exp is None or mlflow.search_runs([exp.experiment_id], output_format="list") == []
    left = ended["a"]
    assert isinstance(left, worker.Submission) and (left.state, left.lease_owner) == ("running", "B")
    done = worker.run_claimed(cfg, Session, b, "B", release=tiny_space_release, out=out)
    assert done is not None and done.state == "finished", done.reason if done else None
    assert (record_dir(out, "alpha", "m1") / RECORD).is_file()


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_a_result_reused_for_the_same_bytes_is_that_evaluation_s(server, cfg, tmp_path, tiny_space_release,
                                                                 monkeypatch):
    """The release is made again (another test set) and the organiser's `dvc repro` evaluates the entry on it. The
    same bytes uploaded again are not run (the record on this release is reused); their scores were those of the
    latest finished job of the same bytes, which ran on the old release: the team saw, and the Ladder climbed,
    scores of another test set."""
    import math

    from skybench.harness.evaluate import evaluate
    from skybench.server import worker
    from skybench.simulate import simulate_release

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    client, headers, Session = server
    out = tmp_path / "evals"
    _upload(client, headers)
    first = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=out)
    assert first is not None and first.state == "finished", first.reason if first else None
    remade = simulate_release("lens-space", tmp_path / "remade" / "lens-space", profile="demo", seed=4, size=64,
                              progress=False)
    placed = worker.project_folder(cfg, "alpha", "m1")
    [organiser] = evaluate([placed], "lens-space", remade, out=out, identities={placed: ("alpha", "m1")})
    scores = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in organiser.metrics.items()}
    assert organiser.status == "FINISHED" and scores != first.metrics
    again = _upload(client, headers)
    done = worker.run_one(cfg, Session, "w", release=remade, out=out)
    assert done is not None and done.id == again["id"] and done.state == "finished", done.reason if done else None
    assert done.metrics == scores


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_the_database_killed_mid_run_costs_an_attempt_not_a_record_nor_a_second_unit(tmp_path, postgres,
                                                                                     tiny_space_release, monkeypatch):
    """PostgreSQL killed while a job's sandbox runs, and back later: the worker writes no record it cannot confirm
    is current, publishes nothing, and stops on the database error (the job stays its, running); once the lease
    runs out another worker evaluates it once: one MLflow run, one quota unit."""
    import os
    import threading
    import time

    import mlflow

    from skybench.harness.evaluate import record_dir
    from skybench.server import queue, worker
    from skybench.server.config import ChallengeConfig
    from skybench.server.db import Submission, Team, make_engine, sessions, upgrade

    if postgres is None:
        pytest.skip("PostgreSQL binaries or the 'postgres' user are absent")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    mlflow.search_experiments()
    pg = type(postgres)(postgres.bindir)  # a cluster of its own, to kill
    pg.start()
    try:
        url = pg.new_database()
        cfg = ChallengeConfig.model_validate({
            "tracks": {"lens-space": {"quota": {"per_day": 3, "per_phase": 5}}}, "storage": str(tmp_path / "store"),
            "database_url": url, "project_root": str(tmp_path / "project"), "lease_seconds": 5,
            "public_test_sets": True})
        engine = make_engine(url)
        upgrade(engine)
        Session = sessions(engine)
        jid = _enqueue_slow(cfg, Session, tmp_path)
        out = tmp_path / "evals"
        raised: list[BaseException] = []

        def first() -> None:
            try:
                worker.run_one(cfg, Session, "A", release=tiny_space_release, out=out)
            except BaseException as exc:  # noqa: BLE001 - what the worker loop would log
                raised.append(exc)

        t = threading.Thread(target=first)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "bwrap" not in _descendants(os.getpid()).values():
            time.sleep(0.1)
        assert "bwrap" in _descendants(os.getpid()).values(), "no sandbox ran"
        r = pg._run("pg_ctl", "-D", str(pg.data), "-m", "immediate", "-w", "stop")  # killed, no clean shutdown
        assert r.returncode == 0, r.stderr
        t.join(120)
        assert not t.is_alive() and raised, "the worker recorded a job without its database"
        assert not (record_dir(out, "alpha", "slow") / "evaluation.json").exists()
        assert mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list") == []
        opts = f"-c listen_addresses='' -c unix_socket_directories={pg.sock} -p {pg.port} -c fsync=off"
        r = pg._run("pg_ctl", "-D", str(pg.data), "-o", opts, "-l", str(pg.dir / "log"), "-w", "start")
        assert r.returncode == 0, r.stderr
        with Session() as s:
            sub = s.get(Submission, jid)
            assert (sub.state, sub.lease_owner, sub.attempt) == ("running", "A", 1)
            expires = sub.lease_expires
        time.sleep(max(0.0, (expires - queue.utcnow()).total_seconds()) + 0.5)
        done = worker.run_one(cfg, Session, "B", release=tiny_space_release, out=out)
        assert done is not None and done.id == jid and done.state == "finished" and done.attempt == 2, done.reason
        runs = mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")
        assert [(r.data.params.get("team"), r.info.status) for r in runs] == [("alpha", "FINISHED")]
        with Session() as s:
            assert queue.quota_left(s, cfg, s.get(Team, done.team_id), "lens-space")["today"] == 2
        engine.dispose()
    finally:
        pg.stop()
