"""Faults of the machine, not of a submission: the server restarted mid-upload, the store's disk full, the
database away. Nothing acknowledged is lost, nothing half-stored is queued, and the team's error says what
happened. (A worker killed mid-run: tests/server/test_worker.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_api import pack  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _objects(cfg) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.name for p in (Path(cfg.storage) / "objects").glob("*/*"))


def _upload(client, token: str, name: str, body: bytes | None = None):  # type: ignore[no-untyped-def]
    return client.post("/api/submissions", headers={"Authorization": f"Bearer {token}"},
                       data={"track": "lens-space", "name": name},
                       files={"file": ("s.tar.gz", body or pack("alpha", name), "application/gzip")})


def _big(name: str, nbytes: int) -> bytes:
    """The example submission plus ``nbytes`` of incompressible data (so it takes room on disk)."""
    import io
    import tarfile

    buf = io.BytesIO(pack("alpha", name))
    out = io.BytesIO()
    with tarfile.open(fileobj=buf) as src, tarfile.open(fileobj=out, mode="w:gz") as tar:
        for m in src:
            tar.addfile(m, src.extractfile(m))
        info = tarfile.TarInfo(f"{name}/weights.bin")
        info.size = nbytes
        tar.addfile(info, io.BytesIO(os.urandom(nbytes)))
    return out.getvalue()


# -- the server restarted mid-upload ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``skybench serve`` as a process (started and killed like a real one)."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.port, self.log = config, _free_port(), tmp / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, token: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen([sys.executable, "-m", "skybench", "serve", "--config", str(self.config),
                                      "--port", str(self.port)], env=env, stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"skybench serve did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the machine reboots: no graceful shutdown
        self.proc.wait(30)


@pytest.fixture
def served(cfg, engine, tmp_path) -> Iterator[tuple[Served, str]]:  # type: ignore[no-untyped-def]
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    config = tmp_path / "challenge.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    srv = Served(config, tmp_path)
    srv.start(token)
    try:
        yield srv, token
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()


@pytest.mark.slow
def test_server_restarted_mid_upload(served, cfg, engine):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from skybench.server.db import Submission, sessions

    srv, token = served
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = _upload(c, token, "acked")
        assert r.status_code == 202, r.text
        acked = r.json()
    # A second upload whose body stops half-way, then the server dies under it.
    body = _big("cut", 1_200_000)
    boundary = "skybenchfault"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"track\"\r\n\r\nlens-space\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ncut\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.tar.gz\"\r\n"
            "Content-Type: application/gzip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    half_sent, go_on = threading.Event(), threading.Event()

    def stream() -> Iterator[bytes]:
        yield head
        yield body[: len(body) // 2]
        half_sent.set()
        go_on.wait(30)
        yield body[len(body) // 2:]
        yield tail

    seen: list[object] = []

    def client() -> None:
        try:
            seen.append(httpx.post(f"{srv.url}/api/submissions", content=stream(), timeout=30,
                                   headers={"Authorization": f"Bearer {token}",
                                            "Content-Type": f"multipart/form-data; boundary={boundary}"}))
        except httpx.TransportError as exc:
            seen.append(exc)

    th = threading.Thread(target=client)
    th.start()
    assert half_sent.wait(30)
    time.sleep(0.5)  # the server is reading the body now
    srv.kill()
    go_on.set()
    th.join(60)
    # The team's client sees the connection fail (never a 202): it knows the upload was not taken.
    assert len(seen) == 1 and isinstance(seen[0], httpx.TransportError), seen
    srv.start(token)
    with sessions(engine)() as s:
        rows = s.scalars(select(Submission)).all()
    assert [(x.name, x.state) for x in rows] == [("acked", "queued")]  # acknowledged: kept; cut: not queued
    assert _objects(cfg) == [acked["sha256"]]
    assert _files(Path(cfg.storage) / "incoming") == []  # nothing half-stored in the store
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get(acked["status_url"], headers={"Authorization": f"Bearer {token}"}).json()["state"] == "queued"
        r = _upload(c, token, "cut", body)  # the retry succeeds
        assert r.status_code == 202, r.text
    with sessions(engine)() as s:
        assert sorted(x.name for x in s.scalars(select(Submission)).all()) == ["acked", "cut"]


# -- the store's disk full ----------------------------------------------------------------------------------------

@pytest.fixture
def small_store(tmp_path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) as the store; needs root (mount)."""
    mnt = tmp_path / "small-store"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs for the store (root needed): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave`` bytes free; return the filler file."""
    filler = folder / "filler"
    st = os.statvfs(folder)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_store_full(cfg, engine, small_store):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import Submission, sessions

    # a full store is the server's fault: it must not use up the team's budget of refused uploads (1 here)
    cfg = cfg.model_copy(update={"storage": small_store / "store",
                                 "upload": cfg.upload.model_copy(update={"max_refused_per_hour": 1})})
    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    with TestClient(app) as client:
        r = _upload(client, token, "acked")
        assert r.status_code == 202, r.text
        acked = r.json()
        filler = _fill(small_store, leave=300_000)
        body = _big("big", 1_000_000)  # room for neither the archive nor its unpacked folder
        r = _upload(client, token, "big", body)
        assert r.status_code == 507, r.text
        assert "store is full" in r.json()["detail"] and "costs no quota" in r.json()["detail"]
        assert _files(Path(cfg.storage) / "incoming") == []  # partial files removed
        assert _objects(cfg) == [acked["sha256"]]
        # Room for the archive but not for it and its unpacked copy: the unpacking runs out of space.
        filler.unlink()
        filler = _fill(small_store, leave=1_500_000)
        r = _upload(client, token, "big", body)
        assert r.status_code == 507 and "store is full" in r.json()["detail"], r.text
        assert _files(Path(cfg.storage) / "incoming") == []
        # Nothing acknowledged is lost; the quota is untouched; with room again the same upload goes through.
        assert client.get(acked["status_url"], headers={"Authorization": f"Bearer {token}"}).json()["state"] \
            == "queued"
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()[
            "tracks"]["lens-space"]["quota_left"]["today"] == 2
        filler.unlink()
        r = _upload(client, token, "big", body)
        assert r.status_code == 202, r.text
    with sessions(engine)() as s:
        assert sorted(x.name for x in s.scalars(select(Submission)).all()) == ["acked", "big"]
    stored = Path(cfg.storage) / "objects" / r.json()["sha256"][:2] / r.json()["sha256"]
    assert (stored / "weights.bin").stat().st_size == 1_000_000


def test_a_full_temporary_folder_is_the_servers_fault(cfg, engine, small_store, monkeypatch):  # type: ignore[no-untyped-def]
    """The web framework spools a body past 1 MiB to the system's temporary folder, not the store: that folder full
    answered a bare 500 to every team's upload (the store had room)."""
    import tempfile

    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    monkeypatch.setattr(tempfile, "tempdir", str(small_store))
    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    with TestClient(app) as client:
        filler = _fill(small_store, leave=300_000)
        r = _upload(client, token, "big", _big("big", 1_500_000))
        assert r.status_code == 507, r.text
        assert "temporary folder" in r.json()["detail"] and "costs no quota" in r.json()["detail"]
        assert _objects(cfg) == []
        filler.unlink()
        assert _upload(client, token, "big", _big("big", 1_500_000)).status_code == 202


def test_a_full_store_when_a_phase_ends_keeps_the_snapshot_and_the_board(cfg, engine, small_store, tmp_path,
                                                                         monkeypatch):  # type: ignore[no-untyped-def]
    """The store full as an admin closes a track: the phase changes, the board of the phase that ended is kept in
    the database and shown, no partial file is left, and the store's copy is written at a tick once there is room
    (the snapshot raised: a 500 for the admin, the track's boards and every tick, a partial file each time)."""
    import json

    from helpers import mlflow_store
    from test_phases import ENTRIES, TRACK, _log

    from skybench.server import phases
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = cfg.model_copy(update={"storage": small_store / "store", "tick_seconds": 3600})
    Session = sessions(engine)
    with Session() as s:
        for team in {e[0] for e in ENTRIES}:
            add_team(s, team)
        admin = {"Authorization": f"Bearer {add_team(s, 'org', admin=True).token}"}
    for team, name, public, private in ENTRIES:
        _log(team, name, public, private)
    folder = cfg.storage / "leaderboards" / TRACK
    with TestClient(create_app(cfg, engine)) as client:
        open_rows = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
        filler = _fill(small_store, leave=0)
        r = client.post(f"/api/admin/tracks/{TRACK}/phase", json={"phase": "closed"}, headers=admin)
        assert r.status_code == 200 and r.json()["was"] == "open", r.text
        snap = client.get(f"/api/tracks/{TRACK}/leaderboard", params={"phase": "open"})
        assert snap.status_code == 200, snap.text
        assert [row["name"] for row in snap.json()["rows"]] == [row["name"] for row in open_rows] == ["a1", "b1", "a2"]
        live = client.get(f"/api/tracks/{TRACK}/leaderboard")
        assert live.status_code == 200 and live.json()["phase"] == "closed", live.text
        assert _files(folder) == []  # nothing half-written
        filler.unlink()
        with Session() as s:
            phases.catch_up_all(s, cfg)  # the next tick
    assert sorted(p.suffix for p in _files(folder)) == [".json", ".md"]
    assert json.loads(next(folder.glob("open-*.json")).read_text())["rows"] == snap.json()["rows"]


# -- the database away ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_database_unreachable_answers_503_and_recovers(tmp_path, postgres):  # type: ignore[no-untyped-def]
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.config import ChallengeConfig
    from skybench.server.db import make_engine, sessions

    if postgres is None:
        pytest.skip("PostgreSQL binaries or the 'postgres' user are absent")
    pg = type(postgres)(postgres.bindir)  # a cluster of its own: the session's stays up for the other tests
    pg.start()
    try:
        url = pg.new_database()
        cfg = ChallengeConfig.model_validate({
            "tracks": {"lens-space": {"quota": {"per_day": 3, "per_phase": 5}}}, "storage": str(tmp_path / "store"),
            "database_url": url, "project_root": str(tmp_path / "project")})
        engine = make_engine(url)
        app = create_app(cfg, engine)
        with sessions(engine)() as s:
            token = add_team(s, "alpha").token
        auth = {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            r = _upload(client, token, "before")
            assert r.status_code == 202, r.text
            before = r.json()
            r = pg._run("pg_ctl", "-D", str(pg.data), "-m", "fast", "-w", "stop")
            assert r.returncode == 0, r.stderr
            for call in (lambda: client.get("/api/me", headers=auth),
                         lambda: client.get(before["status_url"], headers=auth),
                         lambda: _upload(client, token, "during")):
                r = call()
                assert r.status_code == 503, r.text
                assert "database is unreachable" in r.json()["detail"] and r.headers["retry-after"] == "30"
            assert _files(Path(cfg.storage) / "incoming") == []
            opts = f"-c listen_addresses='' -c unix_socket_directories={pg.sock} -p {pg.port} -c fsync=off"
            r = pg._run("pg_ctl", "-D", str(pg.data), "-o", opts, "-l", str(pg.dir / "log"), "-w", "start")
            assert r.returncode == 0, r.stderr
            assert client.get(before["status_url"], headers=auth).json()["state"] == "queued"
            r = _upload(client, token, "during")
            assert r.status_code == 202, r.text
            assert [x["name"] for x in client.get("/api/submissions", headers=auth).json()] == ["during", "before"]
        engine.dispose()
    finally:
        pg.stop()


def test_the_database_lost_between_storing_and_queueing_keeps_nothing(cfg, engine, monkeypatch):  # type: ignore[no-untyped-def]
    """The database away after an upload was stored and before it was queued: the answer said "this request changed
    nothing", yet its stored folder stayed in objects/ (never collected) and its ``received`` row in the team's list
    until a restart and an hour. Now the folder is dropped when the database answers again, else the next start's
    sweep takes it, and each tick fails the row."""
    from sqlalchemy.exc import OperationalError

    from skybench.server import queue
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions
    from skybench.server.storage import Store

    def away(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        acked = _upload(client, token, "acked").json()
        monkeypatch.setattr(queue, "enqueue", away)  # back at once: the folder is dropped
        r = _upload(client, token, "m1", _big("m1", 10_000))
        assert r.status_code == 503 and "changed nothing" in r.json()["detail"], r.text
        assert _objects(cfg) == [acked["sha256"]]
        assert [x["name"] for x in client.get("/api/submissions", headers=auth).json()] == ["acked"]
        for name in ("stored_for", "abandon"):  # away for the clean-up too
            monkeypatch.setattr(queue, name, away)
        assert _upload(client, token, "m2", _big("m2", 10_000)).status_code == 503
    monkeypatch.undo()
    assert len(_objects(cfg)) == 2
    with sessions(engine)() as s:
        assert queue.expire_received(s, older_than=0) == 1  # what each tick does (after an hour)
        gone = Store(cfg.storage, cfg.upload).sweep_objects(lambda sha: queue.stored_for(s, sha), older_than=0)
    assert _objects(cfg) == [acked["sha256"]] and len(gone) == 1
    with TestClient(create_app(cfg, engine)) as client:
        listed = {x["name"]: x for x in client.get("/api/submissions", headers=auth).json()}
        assert listed["m2"]["state"] == "failed" and not listed["m2"]["counted"]
        assert "lost its database" in listed["m2"]["reason"]


def test_a_track_taken_out_of_challenge_yaml_still_lists_its_submissions(cfg, engine, caplog):  # type: ignore[no-untyped-def]
    """An organiser removes a track after teams submitted to it: every listing of their submissions answered 500.
    They are listed without scores (no phase, no Ladder of its own), and the start says that they wait."""
    import logging

    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(cfg, engine)) as client:
        sub = _upload(client, token, "m1").json()
    fewer = cfg.model_copy(update={"tracks": {"lens-ground": cfg.tracks["lens-ground"]}})
    with caplog.at_level(logging.WARNING, logger="skybench.server"), TestClient(create_app(fewer, engine)) as client:
        for path in ("/api/submissions", sub["status_url"]):
            r = client.get(path, headers=auth)
            assert r.status_code == 200, (path, r.text)
        assert r.json()["state"] == "queued" and r.json()["metrics"] == {}
    assert "1 submissions wait on track 'lens-space'" in caplog.text


@pytest.mark.parametrize("when", ["mid-body", "before-answer"])
def test_submit_says_the_connection_broke_mid_upload(tmp_path, monkeypatch, when: str):
    """A server that dies while reading the body, or after it but before answering (here: a TCP listener that
    reads part or all of it, then resets the connection): `skybench submit` says what happened and what to do,
    with no traceback."""
    import shutil
    import struct

    from typer.testing import CliRunner

    from skybench.cli import app

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def die_mid_body() -> None:
        conn, _ = listener.accept()
        conn.recv(2048)  # the headers and the start of the body
        if when == "before-answer":  # the whole body (it ends with the multipart's closing boundary)
            got, conn_timeout = b"", time.monotonic() + 30
            while not got.endswith(b"--\r\n") and time.monotonic() < conn_timeout:
                got = got[-16:] + conn.recv(1 << 16)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, like a killed process
        conn.close()

    th = threading.Thread(target=die_mid_body, daemon=True)
    th.start()
    folder = tmp_path / "m1"
    shutil.copytree(ROOT / "submissions" / "examples" / "lens-space" / "onnx", folder)
    spec = (folder / "submission.yaml").read_text().replace("team: examples", "team: alpha")
    (folder / "submission.yaml").write_text(spec.replace("name: onnx-example", "name: m1"))
    (folder / "padding.bin").write_bytes(os.urandom(2_000_000))  # a body the listener does not read in full
    monkeypatch.setenv("SKYBENCH_TOKEN", "sbt_x")
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    r = CliRunner().invoke(app, ["submit", str(folder), "--server", url, "--skip-validate"])
    th.join(10)
    listener.close()
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no traceback
    assert "connection" in r.output and "broke" in r.output and "again" in r.output, r.output


def test_what_a_crash_left_in_incoming_is_swept_at_start(cfg, tmp_path):
    """A server killed while it unpacked leaves files in incoming/; the next start removes those untouched for
    hours, never a young one (a live upload of another server sharing the store)."""
    from skybench.server.storage import STALE_SECONDS, Store

    incoming = Path(cfg.storage) / "incoming"
    incoming.mkdir(parents=True)
    old_upload, old_stage, young = incoming / "a.upload", incoming / "b.d", incoming / "c.upload"
    old_upload.write_bytes(b"x" * 100)
    (old_stage / "sub").mkdir(parents=True)
    (old_stage / "sub" / "model.onnx").write_bytes(b"y")
    young.write_bytes(b"z")
    past = time.time() - STALE_SECONDS - 60
    for p in (old_upload, old_stage):
        os.utime(p, (past, past))
    Store(cfg.storage, cfg.upload)
    assert sorted(p.name for p in incoming.iterdir()) == ["c.upload"]


def test_what_a_dead_process_left_in_incoming_is_swept_at_once(cfg):
    """An upload file of a process of this host that is gone is removed at the next start, however young;
    one of a live process (this one) and one of another host are kept (until they are stale)."""
    from skybench.server import storage

    incoming = Path(cfg.storage) / "incoming"
    incoming.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = storage._HOST
    names = {"dead": f"{dead.pid}-{host}.aa.upload", "dead_stage": f"{dead.pid}-{host}.bb.d",
             "live": f"{os.getpid()}-{host}.cc.upload", "other_host": f"{dead.pid}-00000000.dd.upload"}
    for name in names.values():
        (incoming / name).mkdir() if name.endswith(".d") else (incoming / name).write_bytes(b"x")
    storage.Store(cfg.storage, cfg.upload)
    assert sorted(p.name for p in incoming.iterdir()) == sorted([names["live"], names["other_host"]])


@pytest.fixture
def graceful(cfg, engine, tmp_path) -> Iterator[tuple[Served, str, object]]:  # type: ignore[no-untyped-def]
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    cfg = cfg.model_copy(update={"shutdown_grace_seconds": 2})
    config = tmp_path / "challenge.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    srv = Served(config, tmp_path)
    srv.start(token)
    try:
        yield srv, token, cfg
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()


@pytest.mark.slow
def test_sigterm_does_not_wait_forever_on_a_stalled_upload(graceful, engine):  # type: ignore[no-untyped-def]
    """`skybench serve` gets SIGTERM while a team's upload has stalled half-way: it exits within
    ``shutdown_grace_seconds`` (plus start-up slack), the stalled upload is not acknowledged and leaves nothing
    in the store or the database, and the acknowledged one is kept."""
    from sqlalchemy import select

    from skybench.server.db import Submission, sessions

    srv, token, cfg = graceful
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = _upload(c, token, "acked")
        assert r.status_code == 202, r.text
        acked = r.json()
    body = _big("stalled", 1_200_000)
    boundary = "skybenchstall"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"track\"\r\n\r\nlens-space\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nstalled\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.tar.gz\"\r\n"
            "Content-Type: application/gzip\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port)) as conn:
        conn.sendall(f"POST /api/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                     f"Content-Length: {len(head) + len(body) + 64}\r\n\r\n".encode() + head + body[:len(body) // 2])
        time.sleep(1.0)  # the server is waiting for the rest of the body, which never comes
        assert srv.proc is not None
        t0 = time.monotonic()
        os.killpg(srv.proc.pid, signal.SIGTERM)
        srv.proc.wait(cfg.shutdown_grace_seconds + 20)  # TimeoutExpired: it waits on the stalled upload
        took = time.monotonic() - t0
        conn.settimeout(5)
        try:
            answer = conn.recv(4096)
        except OSError:
            answer = b""
    assert took < cfg.shutdown_grace_seconds + 15, took
    assert b" 202 " not in answer.split(b"\r\n", 1)[0], answer  # never acknowledged
    assert _files(Path(cfg.storage) / "incoming") == []
    assert _objects(cfg) == [acked["sha256"]]
    with sessions(engine)() as s:
        assert [(x.name, x.state) for x in s.scalars(select(Submission)).all()] == [("acked", "queued")]
    srv.start(token)  # and the acknowledged upload is there after the restart
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get(acked["status_url"], headers={"Authorization": f"Bearer {token}"}).json()["state"] == "queued"
