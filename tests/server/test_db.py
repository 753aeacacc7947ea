"""Schema, migrations and tokens on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text


@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")  # sqlite
def test_migrations_match_the_models(engine):
    from skybench.server.db import Base

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"the models and migrations/ differ (write a new Alembic revision): {diff}"
    tables = set(inspect(engine).get_table_names())
    assert {"teams", "submissions", "phase_state", "quota_use", "alembic_version"} <= tables


def test_upgrade_is_idempotent(engine):
    from alembic.script import ScriptDirectory

    from skybench.server.db import MIGRATIONS, upgrade

    upgrade(engine)  # the server applies the migrations at every start
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None and int(head) >= 3  # 0003: the received state
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_sqlite_uses_wal(tmp_path):
    from skybench.server.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'server.db'}")  # its folder is created too
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_only_the_token_hash_is_stored(Session):
    from skybench.server.auth import FailureLimiter, add_team, verify
    from skybench.server.db import Team

    with Session() as s:
        issued = add_team(s, "lensfinders", ["ada", "bob"])
    token = issued.token
    secret = token.split("_", 2)[2]
    with Session() as s:
        row = s.scalar(select(Team).where(Team.name == "lensfinders"))
        stored = " ".join(str(getattr(row, c.key)) for c in Team.__table__.columns)
        assert secret not in stored and token not in stored
        assert row.token_hash.startswith("$argon2id$")
        assert row.members == ["ada", "bob"] and not row.is_admin
        lim = FailureLimiter(5, 60)
        assert verify(s, token, "c", lim).name == "lensfinders"


def test_wrong_tokens_are_refused(Session):
    from skybench.server.auth import AuthError, FailureLimiter, add_team, verify

    with Session() as s:
        a = add_team(s, "a").token
        b = add_team(s, "b").token
        lim = FailureLimiter(100, 60)
        tid_a, secret_b = a.split("_")[1], b.split("_", 2)[2]
        for bad in (None, "", "sbt_x_y", a[:-1] + ("A" if a[-1] != "A" else "B"), f"sbt_{tid_a}_{secret_b}"):
            with pytest.raises(AuthError):
                verify(s, bad, "c", lim)
        assert verify(s, b, "c", lim).name == "b"


def test_team_names(Session):
    from skybench.server.auth import add_team

    with Session() as s:
        for bad in ("../x", "examples", "Baselines", "INVALID", "a b", "", "x" * 65, "baselines\n", "ok\n"):
            with pytest.raises(ValueError):
                add_team(s, bad)
        add_team(s, "ok")
        for lookalike in ("ok", "OK", "oK"):  # one team on the board, whatever the case
            with pytest.raises(ValueError, match="'ok' exists already"):
                add_team(s, lookalike)


def test_the_database_keeps_team_names_unique_in_any_case(Session):
    """Two requests at once could both pass add_team's check; the unique index on lower(name) stops the second."""
    from sqlalchemy.exc import IntegrityError

    from skybench.server.auth import add_team, new_token
    from skybench.server.db import Team

    with Session() as s:
        add_team(s, "Lensfinders")
    with Session() as s:  # the second request's insert, made after its own check passed
        s.add(Team(name="lensFinders", token_id=new_token()[1], token_hash="x"))
        with pytest.raises(IntegrityError):
            s.commit()
    with Session() as s:
        assert s.scalars(select(Team.name)).all() == ["Lensfinders"]


def test_token_guessing_is_rate_limited(Session):
    from skybench.server.auth import AuthError, FailureLimiter, RateLimited, add_team, verify

    with Session() as s:
        good = add_team(s, "t").token
        lim = FailureLimiter(3, 60)
        for _ in range(3):
            with pytest.raises(AuthError):
                verify(s, "sbt_guess", "1.2.3.4", lim)
        with pytest.raises(RateLimited) as exc:  # even the right token: the client is refused first
            verify(s, good, "1.2.3.4", lim)
        assert 1 <= exc.value.retry_after <= 61
        assert verify(s, good, "5.6.7.8", lim).name == "t"  # another client is not affected


def test_guesses_from_one_ipv6_network_count_as_one_client(Session):
    """A host holds a whole /64: guessing from a new address each time was never limited."""
    from skybench.server.auth import AuthError, FailureLimiter, RateLimited, add_team, client_key, verify

    assert client_key("2001:db8:1:2::7") == client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::7") != client_key("2001:db8:1:2::7")
    assert client_key("::ffff:1.2.3.4") == client_key("1.2.3.4") == "1.2.3.4"
    assert client_key(None) == "unknown" and client_key("testclient") == "testclient"
    with Session() as s:
        good = add_team(s, "t").token
        lim = FailureLimiter(3, 60)
        for i in range(3):
            with pytest.raises(AuthError):
                verify(s, "sbt_guess", client_key(f"2001:db8:1:2::{i + 1:x}"), lim)
        with pytest.raises(RateLimited):
            verify(s, good, client_key("2001:db8:1:2::abcd"), lim)
        assert verify(s, good, client_key("2001:db8:9::1"), lim).name == "t"


def test_verified_token_cache_and_rotation(Session):
    from skybench.server.auth import AuthError, FailureLimiter, VerifiedCache, add_team, rotate_token, verify

    with Session() as s:
        old = add_team(s, "t").token
        lim, cache = FailureLimiter(10, 60), VerifiedCache()
        assert verify(s, old, "c", lim, cache).name == "t"
        assert cache.get(s, old) is not None and cache.get(s, old + "x") is None
        new = rotate_token(s, "t")
        assert cache.get(s, old) is None  # the stored hash changed: the cached check no longer holds
        with pytest.raises(AuthError):
            verify(s, old, "c", lim, cache)
        assert verify(s, new, "c", lim, cache).name == "t"


def test_a_burst_of_first_requests_runs_one_argon2_check(Session, monkeypatch):
    """Concurrent first requests with one token wait for one check (the load test's 25 uploads per team each ran
    argon2: ~0.8 s and 64 MiB apiece) and all get the team."""
    import threading

    from skybench.server import auth

    calls = []
    real = auth._HASHER

    class Counted:  # the real argon2 hasher, its checks counted
        def verify(self, stored: str, secret: str) -> bool:
            calls.append(1)
            return real.verify(stored, secret)

        def hash(self, secret: str) -> str:
            return real.hash(secret)

    with Session() as s:
        token = auth.add_team(s, "burst").token
    monkeypatch.setattr(auth, "_HASHER", Counted())
    lim, cache, names = auth.FailureLimiter(10, 60), auth.VerifiedCache(), []

    def one() -> None:
        with Session() as s:
            names.append(auth.verify(s, token, "c", lim, cache).name)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert names == ["burst"] * 8 and len(calls) == 1


def test_guesses_sent_at_once_run_no_more_hashes_than_the_limit(Session, monkeypatch):
    """Wrong tokens sent together from one client: each passed the limiter's check before the first had failed,
    so a burst ran one argon2 hash (64 MiB) per server thread instead of ``max_failures``; a right token is not
    counted as a failure once checked."""
    import threading
    import time

    from skybench.server import auth

    real, calls = auth._HASHER, []

    class Slow:  # the real hasher, its calls counted and slow enough that the burst's checks overlap
        def verify(self, stored: str, secret: str) -> bool:
            calls.append(1)
            time.sleep(0.3)
            return real.verify(stored, secret)

        def hash(self, secret: str) -> str:
            calls.append(1)
            time.sleep(0.3)
            return real.hash(secret)

    with Session() as s:
        good = auth.add_team(s, "t").token
    monkeypatch.setattr(auth, "_HASHER", Slow())
    lim, outcomes = auth.FailureLimiter(3, 60), []

    def guess(i: int) -> None:
        with Session() as s:
            try:
                auth.verify(s, good[:-4] + f"{i:04d}", "1.2.3.4", lim)  # the id is right: each costs a hash
            except (auth.AuthError, auth.RateLimited) as exc:
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(calls) == 3 and sorted(outcomes) == ["AuthError"] * 3 + ["RateLimited"] * 9
    lim2 = auth.FailureLimiter(2, 60)
    with Session() as s:
        for _ in range(4):  # a right token, checked again and again, uses up nothing
            assert auth.verify(s, good, "5.6.7.8", lim2).name == "t"


def test_failure_table_forgets_clients_whose_window_passed():
    import time

    from skybench.server.auth import FailureLimiter, RateLimited

    lim = FailureLimiter(2, 0.2, max_clients=10)
    for i in range(10):
        lim.failed(f"10.0.0.{i}")
    time.sleep(0.25)
    lim.failed("10.0.1.1")
    lim.failed("10.0.1.1")
    assert len(lim._fails) == 1
    with pytest.raises(RateLimited):
        lim.check("10.0.1.1")


def test_a_host_whose_clock_is_off_the_databases_refuses_to_serve_or_evaluate(engine, cfg, tmp_path):
    """Hosts order an entry's versions, leases and evaluations by their own clocks: on PostgreSQL (several hosts)
    a server or worker whose clock is more than ``max_clock_skew_seconds`` off the database server's refuses to
    start, and says by how much. SQLite has one host, one clock."""
    import time

    import yaml
    from typer.testing import CliRunner

    from skybench.cli import app
    from skybench.server.app import create_app
    from skybench.server.db import ClockSkewError, check_clock, clock_skew

    skew = clock_skew(engine)
    if engine.dialect.name == "sqlite":
        assert skew is None
        check_clock(engine, 1e-9, now=lambda: time.time() + 3600)  # nothing to compare with
        return
    assert skew is not None and abs(skew) < 0.5  # the same machine's clock, through a real round trip
    check_clock(engine, cfg.max_clock_skew_seconds)
    with pytest.raises(ClockSkewError, match=r"30\.\d s ahead of the database server's"):
        check_clock(engine, 2.0, now=lambda: time.time() + 30)
    with pytest.raises(ClockSkewError, match=r"30\.\d s behind"):
        check_clock(engine, 2.0, now=lambda: time.time() - 30)
    # a limit below any real round trip's skew: the server and the worker refuse, in one line
    strict = cfg.model_copy(update={"max_clock_skew_seconds": 1e-9})
    with pytest.raises(ClockSkewError, match="max_clock_skew_seconds"):
        create_app(strict, engine)
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict.model_dump(mode="json", exclude_none=True)))
    r = CliRunner().invoke(app, ["worker", "--config", str(path), "--once"])
    assert r.exit_code == 1 and "synchronise the clocks" in r.output, r.output
