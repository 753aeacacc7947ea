"""The queue on SQLite and PostgreSQL: exclusive claims, leases, quotas, phases."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

SHA = "ab" * 32


@pytest.fixture
def team(Session):  # type: ignore[no-untyped-def]
    from skybench.server.auth import add_team

    with Session() as s:
        return add_team(s, "lensfinders").team


def _enqueue(Session, cfg, team, n: int, when=None, first: int = 0) -> list[str]:  # noqa: N803
    """``n`` jobs of entries m<first>, m<first + 1>, ... of ``team``."""
    from skybench.server import queue

    ids = []
    with Session() as s:
        for i in range(first, first + n):
            ids.append(queue.enqueue(s, cfg, team, "lens-space", f"m{i}", SHA, when).id)
    return ids


def _open_cfg(cfg, per_day: int = 1000, per_phase: int = 1000):  # type: ignore[no-untyped-def]
    tracks = dict(cfg.tracks)
    tracks["lens-space"] = tracks["lens-space"].model_copy(
        update={"quota": tracks["lens-space"].quota.model_copy(update={"per_day": per_day, "per_phase": per_phase})})
    return cfg.model_copy(update={"tracks": tracks})


def test_claims_are_exclusive_under_concurrency(Session, cfg, team):
    from skybench.server import queue

    cfg = _open_cfg(cfg)
    ids = _enqueue(Session, cfg, team, 24)
    got: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(owner: str) -> None:
        try:
            start.wait()
            with Session() as s:
                while (sub := queue.claim(s, owner, 60)) is not None:
                    got.append((sub.id, owner))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    claimed = [i for i, _ in got]
    assert sorted(claimed) == sorted(ids), "every job claimed exactly once"
    from skybench.server.db import Submission

    with Session() as s:
        rows = s.scalars(select(Submission)).all()
        assert {r.state for r in rows} == {"running"} and {r.attempt for r in rows} == {1}
        assert all(r.lease_owner == dict(got)[r.id] for r in rows)


def test_teams_take_turns_so_a_burst_of_one_team_does_not_hold_every_worker(Session, cfg, team):
    """Team A queues four jobs, then B one and C one: the workers take A, B, C, then A's others (FIFO took all of
    A's first). With one of A's jobs running, B's later job still goes before A's second."""
    from skybench.server import queue
    from skybench.server.auth import add_team
    from skybench.server.db import utcnow

    cfg = _open_cfg(cfg)
    with Session() as s:
        b, c = add_team(s, "team-b").team, add_team(s, "team-c").team
    a_ids = _enqueue(Session, cfg, team, 4)
    [b_id], [c_id] = _enqueue(Session, cfg, b, 1), _enqueue(Session, cfg, c, 1)
    t0 = utcnow()
    with Session() as s:
        order = [queue.claim(s, f"w{i}", 600, now=t0 + timedelta(seconds=i)).id for i in range(6)]
    assert order == [a_ids[0], b_id, c_id, *a_ids[1:]]

    later = _enqueue(Session, cfg, team, 1, first=4) + _enqueue(Session, cfg, b, 1, first=1)  # A's four still run
    with Session() as s:
        assert queue.claim(s, "w9", 600, now=t0 + timedelta(seconds=10)).id == later[1]


def test_expired_lease_is_reclaimed_and_the_old_owner_is_shut_out(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.db import utcnow

    [jid] = _enqueue(Session, cfg, team, 1)
    t0 = utcnow()
    with Session() as s:
        a = queue.claim(s, "A", 30, now=t0)
        assert a is not None and a.id == jid and a.attempt == 1
        assert queue.claim(s, "B", 30, now=t0 + timedelta(seconds=29)) is None  # the lease still holds
        b = queue.claim(s, "B", 30, now=t0 + timedelta(seconds=31))  # A died: its lease ran out
        assert b is not None and b.id == jid and b.attempt == 2 and b.lease_owner == "B"
        assert not queue.heartbeat(s, jid, "A", 30)
        assert not queue.finish(s, jid, "A", {"auroc": 0.9})
        assert queue.heartbeat(s, jid, "B", 30)
        assert queue.finish(s, jid, "B", {"auroc": 0.8})
        from skybench.server.db import Submission

        sub = s.get(Submission, jid, populate_existing=True)
        assert sub.state == "finished" and sub.metrics == {"auroc": 0.8} and sub.finished_at is not None
        assert sub.received_at <= sub.queued_at <= sub.running_at  # (finished_at is real time; claims were faked)


def test_a_job_that_kills_its_worker_every_time_fails_for_good(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    [jid] = _enqueue(Session, cfg, team, 1)
    t = utcnow()
    with Session() as s:
        for i in range(3):
            assert queue.claim(s, f"w{i}", 10, max_attempts=3, now=t + timedelta(seconds=11 * i)).id == jid
        assert queue.claim(s, "w9", 10, max_attempts=3, now=t + timedelta(seconds=40)) is None
        sub = s.get(Submission, jid, populate_existing=True)
        assert sub.state == "failed" and "3 times" in sub.reason


def test_quota_per_day_and_per_phase(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.db import utcnow

    today = utcnow()
    _enqueue(Session, cfg, team, 3, today)  # per_day 3
    with Session() as s, pytest.raises(queue.Refused, match="daily quota of 3") as exc:
        queue.enqueue(s, cfg, team, "lens-space", "x", SHA, today)
    assert exc.value.status == 429
    tomorrow = today + timedelta(days=1)
    _enqueue(Session, cfg, team, 2, tomorrow)  # per_phase 5: 3 + 2
    with Session() as s:
        with pytest.raises(queue.Refused, match="quota of 5 submissions .* in phase 'open'"):
            queue.enqueue(s, cfg, team, "lens-space", "y", SHA, tomorrow)
        assert queue.quota_left(s, cfg, team, "lens-space", tomorrow) == {"today": 1, "phase": 0}


def test_sandbox_failures_count_and_infrastructure_failures_do_not(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    now = utcnow()
    ids = _enqueue(Session, cfg, team, 3, now)
    with Session() as s:
        for jid in ids:
            assert queue.claim(s, "w", 60).id == jid
        assert queue.fail(s, ids[0], "w", "exited with status 1: boom", counts=True)
        assert queue.fail(s, ids[1], "w", "infrastructure failure", counts=False)
        assert queue.requeue(s, ids[2], "w", "infrastructure failure: retried")
        rows = {r.id: r for r in s.scalars(select(Submission)).all()}
        assert rows[ids[0]].counted and not rows[ids[1]].counted and rows[ids[2]].counted
        assert rows[ids[2]].state == "queued" and rows[ids[2]].lease_owner is None
        assert queue.quota_left(s, cfg, team, "lens-space", now) == {"today": 1, "phase": 3}
        queue.enqueue(s, cfg, team, "lens-space", "again", SHA, now)  # the unit given back can be used
        with pytest.raises(queue.Refused):
            queue.enqueue(s, cfg, team, "lens-space", "again2", SHA, now)


def test_concurrent_uploads_cannot_overrun_the_quota(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.db import Submission

    results: list[str] = []
    start = threading.Barrier(8)

    def up(i: int) -> None:
        start.wait()
        with Session() as s:
            try:
                queue.enqueue(s, cfg, team, "lens-space", f"c{i}", SHA)
                results.append("ok")
            except queue.Refused:
                results.append("refused")

    threads = [threading.Thread(target=up, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == ["ok"] * 3 + ["refused"] * 5
    with Session() as s:
        assert len(s.scalars(select(Submission)).all()) == 3


def test_one_new_entry_name_sent_to_two_tracks_at_once_is_queued_once(Session, cfg, team):
    """submissions/<team>/<name>/ is one entry of one track: two uploads of one new name to two tracks racing each
    other (both checks made before either is saved) must not both be queued. Several rounds, two threads each."""
    from skybench.server import queue
    from skybench.server.db import Submission

    cfg = _open_cfg(cfg)
    tracks = dict(cfg.tracks)
    tracks["lens-ground"] = tracks["lens-space"].model_copy()  # open, the same large quotas
    cfg = cfg.model_copy(update={"tracks": tracks})
    for r in range(6):
        results: dict[str, str] = {}
        start = threading.Barrier(2)

        def up(track: str, name: str, start: threading.Barrier = start, results: dict[str, str] = results) -> None:
            start.wait()
            with Session() as s:
                try:
                    queue.enqueue(s, cfg, team, track, name, SHA)
                    results[track] = "ok"
                except queue.Refused as exc:
                    results[track] = f"{exc.status} {exc}"

        threads = [threading.Thread(target=up, args=(t, f"race{r}")) for t in ("lens-space", "lens-ground")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(results.values())[1] == "ok", results
        assert sorted(results.values())[0].startswith(f"409 your entry name 'race{r}' is taken by your submissions "
                                                      "to track"), f"round {r}: both tracks queued it: {results}"
        with Session() as s:
            assert len(set(s.scalars(select(Submission.track).where(Submission.name == f"race{r}")).all())) == 1


def test_phases_gate_submissions(Session, cfg, team):
    from skybench.server import queue
    from skybench.server.config import TrackConfig
    from skybench.server.db import utcnow

    with Session() as s:
        with pytest.raises(queue.Refused, match="takes no submissions") as exc:
            queue.enqueue(s, cfg, team, "lens-ground", "x", SHA)  # open: false in challenge.yaml
        assert exc.value.status == 404
        queue.set_phase(s, "lens-space", "closed", by="admin")
        assert queue.current_phase(s, cfg, "lens-space") == "closed"
        with pytest.raises(queue.Refused, match="phase 'closed'") as exc:
            queue.enqueue(s, cfg, team, "lens-space", "x", SHA)
        assert exc.value.status == 409
    now = utcnow()
    tc = TrackConfig.model_validate({"phases": {"open": now + timedelta(days=1), "closed": now + timedelta(days=9)}})
    assert tc.phase_at(now) == "pending"
    assert tc.phase_at(now + timedelta(days=2)) == "open"
    assert tc.phase_at(now + timedelta(days=10)) == "closed"
    with pytest.raises(ValueError, match="order"):
        TrackConfig.model_validate({"phases": {"open": now, "closed": now - timedelta(days=1)}})


def test_an_entry_name_belongs_to_one_track(Session, cfg, team):
    from skybench.server import queue

    tracks = dict(cfg.tracks)
    tracks["lens-ground"] = tracks["lens-ground"].model_copy(update={"open": True})
    cfg = cfg.model_copy(update={"tracks": tracks})
    with Session() as s:
        queue.enqueue(s, cfg, team, "lens-ground", "resnet", SHA)
        with pytest.raises(queue.Refused, match="taken by your submissions to track 'lens-ground'") as exc:
            queue.enqueue(s, cfg, team, "lens-space", "resnet", SHA)
        assert exc.value.status == 409
        queue.enqueue(s, cfg, team, "lens-ground", "resnet", SHA)  # the same track: a new version of the entry


def test_migration_0006_gives_each_queued_name_the_track_of_its_first_upload(db_url):
    """Existing names are claimed by the migration: by the track of their first queued upload (an older server
    may have let one onto two tracks); an upload never queued (no sha256) claims nothing."""
    from sqlalchemy import text

    from skybench.server.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO teams (id, name, members, token_id, token_hash, is_admin, created_at) "
                          "VALUES (1, 't', '[]', 'x', 'y', false, '2026-01-01 00:00:00')"))
        for sid, track, name, sha, day in (("a", "lens-ground", "dup", SHA, 2), ("b", "lens-space", "dup", SHA, 1),
                                           ("c", "lens-space", "one", SHA, 3), ("d", "lens-ground", "new", None, 1)):
            conn.execute(text("INSERT INTO submissions (id, team_id, track, name, sha256, phase, state, received_at, "
                              "reason, log, metrics, attempt, counted) VALUES (:id, 1, :track, :name, :sha, 'open', "
                              "'finished', :at, '', '', '{}', 0, true)"),
                         {"id": sid, "track": track, "name": name, "sha": sha, "at": f"2026-01-0{day} 00:00:00"})
    upgrade(engine)
    with engine.begin() as conn:
        rows = sorted(tuple(r) for r in conn.execute(text("SELECT team_id, name, track FROM entry_names")))
    assert rows == [(1, "dup", "lens-space"), (1, "one", "lens-space")]
    engine.dispose()


def _versions(Session, cfg, team, name: str, n: int, t0) -> list[str]:  # noqa: N803
    """``n`` versions of entry ``name``, received one second apart from ``t0``."""
    from skybench.server import queue

    with Session() as s:
        return [queue.enqueue(s, cfg, team, "lens-space", name, f"{i:02x}" * 32, t0 + timedelta(seconds=i)).id
                for i in range(n)]


def test_one_entry_runs_one_version_at_a_time(Session, cfg, team):
    """Two workers took two versions of one entry at once, and the older one, finishing last, was the one recorded
    and ranked: a version now waits while another version of its entry runs, and other entries go first."""
    from skybench.server import queue
    from skybench.server.db import utcnow

    cfg = _open_cfg(cfg)
    t0 = utcnow()
    v1, v2 = _versions(Session, cfg, team, "m", 2, t0)
    [other] = _versions(Session, cfg, team, "n", 1, t0 + timedelta(seconds=5))
    with Session() as s:
        assert queue.claim(s, "A", 60).id == v1
        assert queue.claim(s, "B", 60).id == other  # not v2, which waits for v1
        assert queue.claim(s, "C", 60) is None
        assert queue.finish(s, v1, "A", {"auroc": 0.7})
        assert queue.claim(s, "C", 60).id == v2


def test_a_version_left_behind_by_a_newer_one_is_superseded_and_given_back(Session, cfg, team):
    """A version waiting to be retried (the machine failed it) when a newer version of its entry finished, or
    failed for its own fault, is never run: superseded, its unit given back. A newer one that failed for the
    machine's fault and was given up is not the entry's version: the older one still runs."""
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    cfg = _open_cfg(cfg)
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)  # received: one UTC day's quota
    entries = {name: _versions(Session, cfg, team, name, 2, noon + timedelta(minutes=i))
               for i, name in enumerate(("finished", "own-fault", "machine"))}
    t0 = utcnow()
    with Session() as s:
        for i, (name, (old, new)) in enumerate(entries.items()):
            now = t0 + timedelta(seconds=10 * i)
            assert queue.claim(s, "w", 60, now=now).id == old
            assert queue.requeue(s, old, "w", "infrastructure failure: retried", delay_seconds=600)
            assert queue.claim(s, "w", 60, now=now + timedelta(seconds=1)).id == new  # old: not due yet
            if name == "finished":
                assert queue.finish(s, new, "w", {"auroc": 0.8})
            else:
                assert queue.fail(s, new, "w", "failed", counts=name == "own-fault")
        later = t0 + timedelta(seconds=700)  # every old one is due
        assert queue.claim(s, "w", 60, now=later).id == entries["machine"][0]
        assert queue.claim(s, "w", 60, now=later) is None
        for name in ("finished", "own-fault"):
            old, new = entries[name]
            row = s.get(Submission, old, populate_existing=True)
            assert (row.state, row.counted, row.lease_owner, row.metrics) == ("superseded", False, None, {})
            assert row.superseded_at is not None and row.failed_at is None and row.finished_at is None
            assert row.reason.startswith(f"superseded by a newer submission of this entry ({new}, received at ")
            assert row.reason.endswith("not evaluated, and not counted in your quota")
        # 6 queued, 2 given back (superseded), 1 given back (the machine's failure given up)
        assert queue.quota_left(s, cfg, team, "lens-space", noon)["today"] == 1000 - 3


def test_versions_of_one_entry_claimed_at_once_run_one_at_a_time(Session, cfg, team):
    """Four workers claim at once from 4 entries of 5 versions each: one version of each entry runs (PostgreSQL's
    claims of different rows do not see each other's uncommitted claim; each takes its entry's row lock first)."""
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    cfg = _open_cfg(cfg)
    t0 = utcnow() - timedelta(hours=1)
    for e in range(4):
        _versions(Session, cfg, team, f"e{e}", 5, t0 + timedelta(minutes=e))
    for _ in range(3):
        got: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def work(owner: str, got: list[str] = got, errors: list[BaseException] = errors,
                 start: threading.Barrier = start) -> None:
            try:
                start.wait()
                with Session() as s:
                    while (sub := queue.claim(s, owner, 60)) is not None:
                        got.append(sub.name)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
        assert sorted(got) == ["e0", "e1", "e2", "e3"], got
        with Session() as s:  # the versions running now end; the next round takes each entry's next one
            for sub in s.scalars(select(Submission).where(Submission.state == "running")).all():
                assert queue.finish(s, sub.id, sub.lease_owner, {})


def test_a_version_still_held_when_a_newer_one_finished_is_not_recorded_and_keeps_its_unit(Session, cfg, team):
    """Workers whose clocks differ by more than a lease: B (ahead) sees A's lease of version 1 run out while A
    still runs it, and takes version 2 (queued before version 1's retry). Once version 2 finished, A must not
    record version 1 (``current`` says why); had A died instead, the next claim retires version 1. Either way it
    keeps its unit: a worker took it."""
    from skybench.server import queue
    from skybench.server.db import Submission, utcnow

    with Session() as s:
        v1 = queue.enqueue(s, cfg, team, "lens-space", "m", SHA).id
        assert queue.claim(s, "C", 30).id == v1
        assert queue.requeue(s, v1, "C", "infrastructure failure: retried", delay_seconds=100)
        t = utcnow()
        a = queue.claim(s, "A", 30, now=t + timedelta(seconds=200))  # A's clock: 200 s ahead
        assert a is not None and a.id == v1 and queue.current(s, v1, "A") == ""
        v2 = queue.enqueue(s, cfg, team, "lens-space", "m", "cd" * 32).id
        b = queue.claim(s, "B", 30, now=t + timedelta(seconds=300))  # B's: 300 s ahead
        assert b is not None and b.id == v2
        assert queue.current(s, v1, "A").startswith(f"superseded by a newer submission of this entry ({v2}, ")
        assert queue.finish(s, v2, "B", {"auroc": 0.8})
        why = queue.current(s, v1, "A")
        assert why.startswith(f"superseded by a newer submission of this entry ({v2}, ")
        assert why.endswith("this evaluation of it is not recorded")
        assert queue.claim(s, "B", 30, now=t + timedelta(seconds=300)) is None  # A seems dead: v1 is retired
        row = s.get(Submission, v1, populate_existing=True)
        assert (row.state, row.counted, row.lease_owner) == ("superseded", True, None)
        assert row.reason.endswith("not evaluated again")
        assert queue.current(s, v1, "A").startswith(f"this worker no longer holds job {v1}")
        assert not queue.supersede(s, v1, "A", why)  # no longer A's: nothing changes
        assert queue.quota_left(s, cfg, team, "lens-space")["today"] == 3 - 2
