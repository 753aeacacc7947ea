"""Fixtures of the challenge-server tests: every database test runs on SQLite and on a throwaway PostgreSQL.

The PostgreSQL cluster is started once per session with the distribution's binaries (``initdb`` into a
temporary folder, ``pg_ctl start`` listening only on a unix socket in it) and stopped at the end; as root,
the cluster runs as the ``postgres`` user (PostgreSQL refuses root). Each test gets a fresh database."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BINS = [Path(p) for p in ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                             "/usr/lib/postgresql/15/bin")]


def _pg_bin() -> Path | None:
    for b in PG_BINS:
        if (b / "initdb").exists() and (b / "pg_ctl").exists():
            return b
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


class Postgres:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="skybench-pg-"))
        self.data, self.sock = self.dir / "data", self.dir
        self.port = 5432
        self._n = itertools.count()

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        r = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        opts = f"-c listen_addresses='' -c unix_socket_directories={self.sock} -p {self.port} -c fsync=off"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-2000:]}\n{(self.dir / 'log').read_text()[-2000:]}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@/{db}?host={self.sock}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(host=str(self.sock), port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | None]:
    bindir = _pg_bin()
    if bindir is None:
        yield None
        return
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            yield None
            return
    pg = Postgres(bindir)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


# Every database test runs on both; the fast lane (`make check`) keeps SQLite, `make test` adds PostgreSQL.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    pg = request.getfixturevalue("postgres")
    if pg is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl; Debian's 'postgresql' package) or the 'postgres' user "
                    "are absent: the PostgreSQL run of this test is skipped")
    return pg.new_database()


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    from skybench.server.db import make_engine, upgrade

    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def Session(engine):  # type: ignore[no-untyped-def]  # noqa: N802 - a sessionmaker
    from skybench.server.db import sessions

    return sessions(engine)


@pytest.fixture
def cfg(tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    from skybench.server.config import ChallengeConfig

    return ChallengeConfig.model_validate({
        "tracks": {"lens-space": {"quota": {"per_day": 3, "per_phase": 5}},
                   "lens-ground": {"open": False}},
        "storage": str(tmp_path / "store"), "database_url": db_url, "public_score_digits": 3, "open_board": "scores",
        "upload": {"max_bytes": 2_000_000, "max_files": 50, "max_unpacked_bytes": 4_000_000, "max_depth": 8},
        "auth": {"max_failures": 3, "window_seconds": 60}, "lease_seconds": 30,
        "project_root": str(tmp_path / "project"), "public_test_sets": True})  # the tests' releases are demo ones
