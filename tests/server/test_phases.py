"""Phases (open -> closed -> final), final entries, leaderboard snapshots, the admin API and the team's log,
on SQLite and PostgreSQL, with the leaderboard read from a real MLflow store."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py
from helpers import bwrap_works, mlflow_store  # noqa: E402
from test_api import pack  # noqa: E402

TRACK = "lens-space"  # split into a public and a private part (evaluation.public_fraction)
# (team, name, public auroc, private auroc): the public and the private rankings differ
ENTRIES = [("alpha", "a1", 0.91234, 0.61), ("alpha", "a2", 0.80111, 0.95), ("beta", "b1", 0.85555, 0.70)]
PRIVATE = {e[3] for e in ENTRIES}


def _sha(team: str, name: str, version: int = 1) -> str:
    """The sha256 of a version of an entry: its submission row's and its evaluation runs'."""
    return hashlib.sha256(f"{team}/{name}/{version}".encode()).hexdigest()


def _log(team: str, name: str, public: float, private: float, sha: str | None = None) -> None:
    from skybench import tracking

    time.sleep(0.005)  # distinct start times
    metrics = {f"{part}_{m}": v + d for part, v in (("public", public), ("private", private))
               for m, d in (("auroc", 0.0), ("auroc_ci_low", -0.01), ("auroc_ci_high", 0.01))}
    tracking.log_evaluation(TRACK, team=team, name=name, fmt="onnx", status="FINISHED", metrics=metrics,
                            tags={"submission_sha256": sha or _sha(team, name), "release_sha256": "r" * 64,
                                  "device": "cpu"}, experiment=tracking.organiser_experiment(TRACK))


@pytest.fixture
def challenge(cfg, engine, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A server with teams alpha and beta, an admin, their finished entries in the DB and in MLflow."""
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import Submission, sessions, utcnow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    Session = sessions(engine)
    ids: dict[str, str] = {}
    with Session() as s:
        teams = {n: add_team(s, n) for n in ("alpha", "beta")}
        tokens = {n: i.token for n, i in teams.items()} | {"admin": add_team(s, "org", admin=True).token}
        for team, name, pub, priv in ENTRIES:
            now = utcnow()
            sub = Submission(id=f"{name}".ljust(32, "0"), team_id=teams[team].team.id, track=TRACK, name=name,
                             sha256=_sha(team, name), phase="open", state="finished", received_at=now, queued_at=now,
                             finished_at=now, metrics={"public_auroc": pub, "private_auroc": priv})
            s.add(sub)
            ids[name] = sub.id
            _log(team, name, pub, priv)
        s.commit()
    with TestClient(create_app(cfg, engine)) as client:
        yield client, {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}, ids, Session


def _board(client, phase=None):  # type: ignore[no-untyped-def]
    r = client.get(f"/api/tracks/{TRACK}/leaderboard", params={"phase": phase} if phase else {})
    assert r.status_code == 200, r.text
    return r.json()


def _values(rows) -> set[float]:  # type: ignore[no-untyped-def]
    return {v for r in rows for v in r.values() if isinstance(v, float)}


def test_the_open_board_ranks_on_the_rounded_scores_it_shows(challenge, cfg):
    """While open, scores are shown rounded (anti-probing); the order of the rows must not give back the digits
    rounded away: two entries whose public scores round alike rank by submission time, not by the raw values
    (else a team learns which of two of its probes scored higher, e.g. whether one object is a lens)."""
    from skybench.server.web import public_board

    client, _, _, Session = challenge
    _log("beta", "probe1", 0.90012, 0.5)  # submitted first, lower raw score
    _log("beta", "probe2", 0.90049, 0.5)  # both show 0.900
    rows = _board(client)["rows"]
    names = [r["name"] for r in rows]
    assert names.index("probe1") < names.index("probe2"), names
    with Session() as s:
        ranked = [r["name"] for r in public_board(cfg, TRACK, "open", s)["ranked"]]
    assert ranked.index("probe1") < ranked.index("probe2"), ranked


def test_without_public_score_digits_the_open_board_shows_four_decimals(challenge, cfg):
    """The default (``public_score_digits`` unset) is 4 decimals everywhere while open: the JSON board returned
    float64 in full (every team's rows, ~50 bits of a mean per metric), where the HTML page showed 4."""
    from skybench.server.web import public_board

    client, _, _, Session = challenge
    digits = cfg.public_score_digits
    object.__setattr__(cfg, "public_score_digits", None)  # the config's default (the model validates assignments)
    try:
        _log("beta", "probe1", 0.912345678901234, 0.5)
        _log("beta", "probe2", 0.91231, 0.5)  # shows 0.9123 too: ranked by submission time, not the raw values
        rows = _board(client)["rows"]
        assert _values(rows) and all(v == round(v, 4) for v in _values(rows)), rows
        names = [r["name"] for r in rows]
        assert names.index("probe1") < names.index("probe2"), names
        with Session() as s:
            ranked = [r["name"] for r in public_board(cfg, TRACK, "open", s)["ranked"]]
        assert ranked.index("probe1") < ranked.index("probe2"), ranked
    finally:
        object.__setattr__(cfg, "public_score_digits", digits)


def test_the_projects_examples_are_not_on_the_challenge_board(challenge):
    """The organiser's `dvc repro` files the project's examples (one fails on purpose) in the same MLflow store: the
    server's boards leave them out before ranking; the CLI's board keeps them."""
    from skybench import tracking
    from skybench.tracking.leaderboard import leaderboard
    from skybench.tracks import load_track

    client, _, _, _ = challenge
    _log("examples", "onnx", 0.99, 0.99)
    tracking.log_evaluation(TRACK, team="examples", name="predictions-example", fmt="predictions", status="FAILED",
                            metrics={}, tags={"failure_reason": "on purpose"},
                            experiment=tracking.organiser_experiment(TRACK))
    rows = _board(client)["rows"]
    assert [(r["rank"], r["team"], r["name"]) for r in rows] == [(1, "alpha", "a1"), (2, "beta", "b1"),
                                                                 (3, "alpha", "a2")]
    assert "examples" in set(leaderboard(load_track(TRACK))["team"])


def test_open_closed_final_with_final_entries_and_snapshots(challenge, cfg):
    client, auth, ids, _ = challenge
    board = _board(client)
    assert board["phase"] == "open"
    assert [(r["team"], r["name"]) for r in board["rows"]] == [("alpha", "a1"), ("beta", "b1"), ("alpha", "a2")]
    assert board["rows"][0]["auroc"] == 0.912  # public part, rounded (public_score_digits: 3)
    assert not _values(board["rows"]) & PRIVATE  # nothing of the private part while open
    pick = f"/api/tracks/{TRACK}/final"
    assert client.post(pick, json={"submissions": [ids["a2"]]}, headers=auth["alpha"]).status_code == 409
    assert client.get(f"/api/tracks/{TRACK}/leaderboard", params={"phase": "open"}).status_code == 404

    # A team cannot change phases (the admin API does not exist for it); the admin can.
    phase = f"/api/admin/tracks/{TRACK}/phase"
    assert client.post(phase, json={"phase": "closed"}, headers=auth["alpha"]).status_code == 404
    r = client.post(phase, json={"phase": "closed"}, headers=auth["admin"])
    assert r.status_code == 200 and r.json()["was"] == "open", r.text
    snap = _board(client, "open")
    assert snap["snapshot"] and [r["name"] for r in snap["rows"]] == ["a1", "b1", "a2"]
    files = sorted(p.suffix for p in (cfg.storage / "leaderboards" / TRACK).iterdir())
    assert files == [".json", ".md"]
    assert "a1" in next((cfg.storage / "leaderboards" / TRACK).glob("open-*.md")).read_text()
    closed = _board(client)
    assert closed["phase"] == "closed" and not _values(closed["rows"]) & PRIVATE
    up = client.post("/api/submissions", headers=auth["alpha"], data={"track": TRACK, "name": "late"},
                     files={"file": ("s.tar.gz", pack("alpha", "late"), "application/gzip")})
    assert up.status_code == 409 and "closed" in up.json()["detail"]

    # Final entries: own finished ones only, at most K (1 here); another team's id is a missing one.
    assert client.post(pick, json={"submissions": [ids["a2"]]}, headers=auth["beta"]).status_code == 404
    assert client.post(pick, json={"submissions": ["f" * 32]}, headers=auth["beta"]).status_code == 404
    assert client.post(pick, json={"submissions": [ids["a1"], ids["a2"]]},
                       headers=auth["alpha"]).status_code == 422
    assert client.get(pick, headers=auth["beta"]).json()["chosen"] == []
    r = client.post(pick, json={"submissions": [ids["a2"]]}, headers=auth["alpha"])
    assert r.status_code == 200 and r.json()["chosen"] == [ids["a2"]], r.text
    assert client.post(pick, json={"submissions": [ids["a2"]]}).status_code == 401

    assert client.post(phase, json={"phase": "final"}, headers=auth["admin"]).json()["was"] == "closed"
    final = _board(client)
    # alpha ranks with its chosen a2 (private 0.95), beta with its default best public b1 (private 0.70); a1 not.
    assert final["phase"] == "final"
    assert [(r["rank"], r["team"], r["name"], r["auroc"]) for r in final["rows"]] == [
        (1, "alpha", "a2", 0.95), (2, "beta", "b1", 0.70)]
    assert _board(client, "closed")["snapshot"]
    assert client.post(pick, json={"submissions": [ids["a1"]]}, headers=auth["alpha"]).status_code == 409


def test_the_final_board_ranks_the_chosen_version_of_an_entry(challenge, cfg):
    """A final entry is chosen by submission id: a team that resubmitted an entry and chose its older version is
    ranked on that version's evaluation (its sha256), not on the entry's latest run, on the API and the page."""
    from skybench.server.db import Submission, utcnow
    from skybench.server.web import public_board

    client, auth, ids, Session = challenge
    with Session() as s:  # beta's b1, version 2: evaluated later, a better private score
        beta = s.get(Submission, ids["b1"]).team_id
        now = utcnow()
        s.add(Submission(id="b1v2".ljust(32, "0"), team_id=beta, track=TRACK, name="b1", sha256=_sha("beta", "b1", 2),
                         phase="open", state="finished", received_at=now, queued_at=now, finished_at=now,
                         metrics={"public_auroc": 0.5, "private_auroc": 0.99}))
        s.commit()
    _log("beta", "b1", 0.5, 0.99, sha=_sha("beta", "b1", 2))
    phase = f"/api/admin/tracks/{TRACK}/phase"
    assert client.post(phase, json={"phase": "closed"}, headers=auth["admin"]).status_code == 200
    pick = f"/api/tracks/{TRACK}/final"
    for team, sid in (("beta", ids["b1"]), ("alpha", ids["a2"])):  # beta: b1's first version (private 0.70)
        r = client.post(pick, json={"submissions": [sid]}, headers=auth[team])
        assert r.status_code == 200, r.text
    assert client.post(phase, json={"phase": "final"}, headers=auth["admin"]).status_code == 200
    rows = [(r["rank"], r["team"], r["name"], r["auroc"]) for r in _board(client)["rows"]]
    assert rows == [(1, "alpha", "a2", 0.95), (2, "beta", "b1", 0.70)], \
        f"the final board does not rank the chosen version of beta/b1 (private 0.70): {rows}"
    with Session() as s:
        shown = [(r["team"], r["name"], r["primary"]) for r in public_board(cfg, TRACK, "final", s)["ranked"]]
    assert shown == [("alpha", "a2", "0.9500"), ("beta", "b1", "0.7000")], shown


def test_dates_drive_the_phase_and_the_ended_phase_is_snapshotted(challenge, cfg, engine):
    from skybench.server import phases

    client, _, _, Session = challenge
    past = datetime.now(timezone.utc) - timedelta(days=2)
    tracks = dict(cfg.tracks)
    tracks[TRACK] = tracks[TRACK].model_copy(update={"phases": {"open": past, "closed": past + timedelta(days=1)}})
    dated = cfg.model_copy(update={"tracks": tracks})
    with Session() as s:
        assert phases.catch_up(s, dated, TRACK) == "closed"
        snap = phases.latest_snapshot(s, TRACK, "open")
        assert snap is not None and [r["name"] for r in snap.rows] == ["a1", "b1", "a2"]
        phases.catch_up(s, dated, TRACK)  # once only
        from sqlalchemy import func, select

        from skybench.server.db import LeaderboardSnapshot

        assert s.scalar(select(func.count()).select_from(LeaderboardSnapshot)) == 1
        assert Path(snap.path).is_file() and json.loads(Path(snap.path).read_text())["phase"] == "open"


def test_admin_api_adds_and_lists_teams(challenge):
    client, auth, _, _ = challenge
    r = client.post("/api/admin/teams", json={"name": "gamma", "members": ["g@x.org"]}, headers=auth["admin"])
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["team"] == "gamma" and me["members"] == ["g@x.org"] and not me["admin"]
    assert client.post("/api/admin/teams", json={"name": "gamma"}, headers=auth["admin"]).status_code == 409
    assert client.post("/api/admin/teams", json={"name": "../x"}, headers=auth["admin"]).status_code == 422
    listed = {t["team"]: t for t in client.get("/api/admin/teams", headers=auth["admin"]).json()}
    assert set(listed) == {"alpha", "beta", "org", "gamma"} and listed["alpha"]["submissions"] == 2
    assert "token" not in json.dumps(listed) and "hash" not in json.dumps(listed)
    for who in ("alpha", None):
        headers = auth[who] if who else {}
        assert client.get("/api/admin/teams", headers=headers).status_code in (404, 401)
        assert client.post("/api/admin/teams", json={"name": "evil"}, headers=headers).status_code in (404, 401)


NOISY = """
import sys
def load(model_dir):
    print("loading my model: shape mismatch ahead", file=sys.stderr)
    raise RuntimeError("my model is broken")
def predict(model, batch):
    return batch.sum(axis=(1, 2, 3))
"""


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_a_failed_run_shows_the_team_its_reason_and_sandbox_stderr(challenge, cfg, tmp_path, tiny_space_release):
    from skybench.server import worker

    client, auth, _, Session = challenge
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for arc, data in (("noisy/submission.yaml", f"team: alpha\nname: noisy\ntrack: {TRACK}\nformat: python\n"
                                                    "model: predict.py\n".encode()),
                          ("noisy/predict.py", NOISY.encode())):
            info = tarfile.TarInfo(arc)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = client.post("/api/submissions", headers=auth["alpha"], data={"track": TRACK, "name": "noisy"},
                    files={"file": ("s.tar.gz", buf.getvalue(), "application/gzip")})
    assert r.status_code == 202, r.text
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "failed"
    shown = client.get(r.json()["status_url"], headers=auth["alpha"]).json()
    assert shown["reason"] and "\n" not in shown["reason"]
    assert "shape mismatch ahead" in shown["log"] and "my model is broken" in shown["log"]
    assert client.get(r.json()["status_url"], headers=auth["beta"]).status_code == 404


@pytest.mark.slow
def test_concurrent_final_picks_never_500_never_more_than_k(challenge):
    """Teams' final-entry posts racing each other (alpha's two entries, K = 1): each answer is 200 or a clear
    4xx, and alpha ends with exactly one of the choices posted, never a mix of two."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from skybench.server.db import FinalChoice

    client, auth, ids, Session = challenge
    assert client.post(f"/api/admin/tracks/{TRACK}/phase", json={"phase": "closed"},
                       headers=auth["admin"]).status_code == 200
    picks = [[ids["a1"]], [ids["a2"]], [ids["a1"], ids["a2"]]] * 4
    gate = Barrier(len(picks))

    def post(pick: list[str]) -> tuple[int, str]:
        gate.wait()
        r = client.post(f"/api/tracks/{TRACK}/final", json={"submissions": pick}, headers=auth["alpha"])
        return r.status_code, r.text

    with ThreadPoolExecutor(len(picks)) as pool:
        answers = list(pool.map(post, picks))
    for (code, text), pick in zip(answers, picks, strict=True):
        assert code in ((422,) if len(pick) == 2 else (200, 409)), (code, text)
        assert "at most 1" in text if len(pick) == 2 else True
    with Session() as s:
        rows = s.scalars(select(FinalChoice.submission_id).where(FinalChoice.track == TRACK)).all()
    assert len(rows) == 1 and rows[0] in (ids["a1"], ids["a2"])


def test_final_choices_are_serialised_per_team(cfg, Session):  # noqa: N803
    """choose_finals itself from 8 threads at once (K = 2), on the real database: every call is saved whole or
    refused with FinalRefused 409, and the team ends with exactly one call's choice."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from skybench.server import phases, queue
    from skybench.server.auth import add_team
    from skybench.server.db import FinalChoice, Submission, utcnow

    cfg = cfg.model_copy(update={"final_entries": 2})
    with Session() as s:
        team = add_team(s, "alpha").team
        now = utcnow()
        subs = [Submission(id=f"s{i}".ljust(32, "0"), team_id=team.id, track=TRACK, name=f"e{i}", sha256="0" * 64,
                           phase="open", state="finished", received_at=now, queued_at=now, finished_at=now,
                           metrics={}) for i in range(8)]
        s.add_all(subs)
        s.commit()
        queue.set_phase(s, TRACK, "closed")
    choices = [[subs[i].id, subs[(i + 1) % 8].id] for i in range(8)]
    gate = Barrier(len(choices))

    def choose(pick: list[str]) -> str:
        gate.wait()
        with Session() as s:
            try:
                phases.choose_finals(s, cfg, team, TRACK, pick)
                return "saved"
            except phases.FinalRefused as exc:
                assert exc.status == 409 and "at the same time" in str(exc)
                return "refused"

    with ThreadPoolExecutor(len(choices)) as pool:
        outcomes = list(pool.map(choose, choices))
    assert "saved" in outcomes
    with Session() as s:
        final = set(s.scalars(select(FinalChoice.submission_id).where(FinalChoice.team_id == team.id)).all())
    assert final in [set(c) for c, o in zip(choices, outcomes, strict=True) if o == "saved"]


def _dated(cfg, **update):  # type: ignore[no-untyped-def]
    """``cfg`` with lens-space opened two days ago and closed one day ago (by date)."""
    past = datetime.now(timezone.utc) - timedelta(days=2)
    tracks = dict(cfg.tracks)
    tracks[TRACK] = tracks[TRACK].model_copy(update={"phases": {"open": past, "closed": past + timedelta(days=1)}})
    return cfg.model_copy(update={"tracks": tracks, **update})


@pytest.mark.slow
def test_a_snapshot_is_taken_once_under_concurrency(challenge, cfg):
    """Eight threads snapshotting the same ended phase at once: one row, one pair of files, one answer."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from skybench.server import phases
    from skybench.server.db import LeaderboardSnapshot

    _, _, _, Session = challenge
    gate = Barrier(8)

    def take(_: int) -> int:
        gate.wait()
        with Session() as s:
            return phases.snapshot(s, cfg, TRACK, "open").id

    with ThreadPoolExecutor(8) as pool:
        got = set(pool.map(take, range(8)))
    with Session() as s:
        rows = s.scalars(select(LeaderboardSnapshot)).all()
    assert len(rows) == 1 and got == {rows[0].id}
    files = sorted(p.name for p in (cfg.storage / "leaderboards" / TRACK).iterdir())
    assert files == [Path(rows[0].path).name, Path(rows[0].path).with_suffix(".md").name]


@pytest.mark.slow
def test_the_servers_tick_snapshots_an_ended_phase_without_a_request(challenge, cfg, engine):
    """No leaderboard request at all: the server's lifespan tick stores the snapshot of the phase that ended
    by date, and the worker's tick after it stores nothing more."""
    from skybench.server import worker
    from skybench.server.app import create_app
    from skybench.server.db import LeaderboardSnapshot

    _, _, _, Session = challenge
    dated = _dated(cfg, tick_seconds=0.2)
    with Session() as s:
        assert s.scalars(select(LeaderboardSnapshot)).all() == []
    with TestClient(create_app(dated, engine)):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Session() as s:
                snaps = s.scalars(select(LeaderboardSnapshot)).all()
            if snaps:
                break
            time.sleep(0.2)
    assert [(x.track, x.phase) for x in snaps] == [(TRACK, "open")]
    worker.tick(dated, Session)
    with Session() as s:
        assert len(s.scalars(select(LeaderboardSnapshot)).all()) == 1


@pytest.mark.slow
def test_a_track_whose_board_fails_does_not_stop_the_next_tracks_snapshot(challenge, cfg, monkeypatch, caplog):
    """Two tracks' phases ended; one track's board raises (its MLflow store, say): the tick still stores the
    other's snapshot, logs the failing track by name, and takes its snapshot at a later tick once it works."""
    from skybench.server import phases, worker
    from skybench.server.db import LeaderboardSnapshot

    _, _, _, Session = challenge
    past = datetime.now(timezone.utc) - timedelta(days=2)
    tracks = {t: c.model_copy(update={"phases": {"open": past, "closed": past + timedelta(days=1)}})
              for t, c in cfg.tracks.items()}
    dated = cfg.model_copy(update={"tracks": tracks})
    board = phases.live_board

    def broken_for_space(session, cfg, track, *args, **kwargs):  # type: ignore[no-untyped-def]
        if track == TRACK:  # the first track of the config: before, the tick stopped there
            raise OSError(5, "Input/output error", f"mlruns/{TRACK}")
        return board(session, cfg, track, *args, **kwargs)

    assert list(dated.tracks)[0] == TRACK
    monkeypatch.setattr(phases, "live_board", broken_for_space)
    with caplog.at_level("ERROR", logger="skybench.phases"):
        worker.tick(dated, Session)
    with Session() as s:
        assert sorted((x.track, x.phase) for x in s.scalars(select(LeaderboardSnapshot))) == [("lens-ground", "open")]
    assert any(f"phase tick of {TRACK} failed" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(phases, "live_board", board)  # mended
    worker.tick(dated, Session)
    with Session() as s:
        assert sorted((x.track, x.phase) for x in s.scalars(select(LeaderboardSnapshot))) == [
            ("lens-ground", "open"), (TRACK, "open")]


@pytest.mark.slow
def test_worker_tick_snapshots_an_ended_phase(challenge, cfg):
    from skybench.server import worker
    from skybench.server.db import LeaderboardSnapshot

    _, _, _, Session = challenge
    worker.tick(_dated(cfg), Session)
    with Session() as s:
        snaps = s.scalars(select(LeaderboardSnapshot)).all()
    assert [(x.track, x.phase) for x in snaps] == [(TRACK, "open")]
    assert [r["name"] for r in snaps[0].rows] == ["a1", "b1", "a2"]


def test_migration_0004_keeps_the_first_of_duplicate_snapshots(db_url):
    from sqlalchemy import text

    from skybench.server.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0003")
    with engine.begin() as conn:
        for taken, rows in (("2026-01-01 00:00:00", "[1]"), ("2026-01-02 00:00:00", "[2]"),
                            ("2026-01-03 00:00:00", "[3]")):
            conn.execute(text("INSERT INTO leaderboard_snapshots (track, phase, taken_at, rows, path) "
                              "VALUES ('t', 'open', :taken, :rows, '')"), {"taken": taken, "rows": rows})
    upgrade(engine)
    with engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(text("SELECT phase, rows FROM leaderboard_snapshots"))] == [
            ("open", [1])] or [r[1] for r in conn.execute(text("SELECT phase, rows FROM leaderboard_snapshots"))
                               ] == ["[1]"]
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            conn.execute(text("INSERT INTO leaderboard_snapshots (track, phase, taken_at, rows, path) "
                              "VALUES ('t', 'open', '2026-01-04 00:00:00', '[4]', '')"))
    engine.dispose()


@pytest.mark.slow
def test_leaderboard_cache_is_kept_briefly_and_dropped_when_a_job_ends(challenge, cfg, engine):
    """A run published to MLflow outside the queue shows after ``leaderboard_cache_seconds``; a job a worker
    finishes (queue.finish) shows at once; with the cache off every request reads MLflow."""
    from skybench.server import queue
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import Submission, utcnow

    _, _, _, Session = challenge
    names = lambda c: sorted(r["name"] for r in _board(c)["rows"])  # noqa: E731
    with TestClient(create_app(cfg.model_copy(update={"leaderboard_cache_seconds": 3600}), engine)) as c:
        assert names(c) == ["a1", "a2", "b1"]
        _log("beta", "b2", 0.5, 0.5)  # the organiser's own run, say: not through the queue
        assert names(c) == ["a1", "a2", "b1"]  # cached
        with Session() as s:  # a worker finishes a job: the cache is dropped
            team = add_team(s, "gamma").team
            now = utcnow()
            s.add(Submission(id="g" * 32, team_id=team.id, track=TRACK, name="g1", sha256="0" * 64, phase="open",
                             state="running", received_at=now, queued_at=now, running_at=now, lease_owner="w",
                             lease_expires=now + timedelta(minutes=5)))
            s.commit()
            _log("gamma", "g1", 0.6, 0.6)
            assert queue.finish(s, "g" * 32, "w", {"public_auroc": 0.6})
        assert names(c) == ["a1", "a2", "b1", "b2", "g1"]
        _log("beta", "b3", 0.4, 0.4)
        assert "b3" not in names(c)
    ttl = 4.0
    with TestClient(create_app(cfg.model_copy(update={"leaderboard_cache_seconds": ttl}), engine)) as c:
        t0 = time.monotonic()
        before = names(c)  # (the cache is per process: the entry the app above read may still serve)
        _log("beta", "b4", 0.3, 0.3)
        if time.monotonic() - t0 < ttl - 0.5:  # (a loaded machine may take longer than ttl to log a run)
            assert names(c) == before  # within the time
        time.sleep(max(0.0, ttl - (time.monotonic() - t0)) + 0.2)
        after = names(c)
        assert "b4" in after and "b3" in after
    with TestClient(create_app(cfg.model_copy(update={"leaderboard_cache_seconds": 0}), engine)) as c:
        names(c)
        _log("beta", "b5", 0.2, 0.2)
        assert "b5" in names(c)


def test_requests_that_miss_the_board_cache_together_read_mlflow_once(challenge, cfg, engine, monkeypatch):
    """The leaderboard needs no token: a burst of requests when the cached board is stale (every
    ``leaderboard_cache_seconds``, and after each job) each read every MLflow run of the track, all server
    threads at once; they wait for one read and share it."""
    import threading

    from skybench.server import phases
    from skybench.server.app import create_app

    reads = []
    real = phases._board

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(phases, "_board", counted)
    with TestClient(create_app(cfg.model_copy(update={"leaderboard_cache_seconds": 3600}), engine)) as c:
        assert _board(c)["rows"]
        phases.BOARDS._boards.clear()  # stale, and the answers built from it
        phases.SHOWN._items.clear()
        reads.clear()
        answers: list[int] = []
        burst = [threading.Thread(target=lambda: answers.append(_board(c)["rows"] != [])) for _ in range(12)]
        for t in burst:
            t.start()
        for t in burst:
            t.join()
    assert answers == [True] * 12
    assert len(reads) == 1, len(reads)


def test_tracks_sharing_test_objects_go_through_phases_together(cfg, Session, tmp_path, monkeypatch):  # noqa: N803
    """photoz-images and photoz-catalog score the same galaxies, split alike: one in ``final`` shows every
    submission's private scores (its probes' digits name the private z_spec) and one in ``closed`` every public
    score in full, while the other still takes submissions and ranks on those labels. Staggered dates are refused
    and an admin's phase change moves both."""
    from skybench.server import phases, queue
    from skybench.server.config import ChallengeConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    base = cfg.model_dump()
    with pytest.raises(ValueError, match="photoz-catalog, photoz-images share their test objects"):
        ChallengeConfig.model_validate({**base, "tracks": {
            "photoz-catalog": {"phases": {"open": "2027-01-01", "final": "2027-02-01"}},
            "photoz-images": {"phases": {"open": "2027-01-01", "final": "2027-04-01"}}}})
    twins = ChallengeConfig.model_validate({**base, "tracks": {"photoz-catalog": {}, "photoz-images": {},
                                                                "lens-space": {}}})
    with Session() as s:
        assert phases.change_phase(s, twins, "photoz-catalog", "closed") == "open"
        assert {t: queue.current_phase(s, twins, t) for t in twins.tracks} == {
            "photoz-catalog": "closed", "photoz-images": "closed", "lens-space": "open"}
        assert phases.latest_snapshot(s, "photoz-images", "open") is not None  # its open board kept, as ended


@pytest.mark.parametrize("linked", ["lens-space-realsrc", "lens-space-injected"])
def test_tracks_sharing_a_real_set_or_evaluating_the_same_entries_go_through_phases_together(
        cfg, Session, tmp_path, monkeypatch, linked):  # noqa: N803
    """lens-space and lens-space-realsrc score the same real set (releases/real-lens-space), split alike: one in
    ``closed`` or ``final`` shows every submission's ``private_real_*`` (probes that move one real object's score
    name its label) while the other, still open, shows those objects' ``public_real_*`` nowhere but takes
    submissions scored on them. lens-space-injected evaluates lens-space's submissions (evaluation.also_from): in
    ``final`` it showed their private scores at full precision while lens-space still took new versions (the git
    flow's check_linked_phases refused that, the server did not). Staggered dates are refused and an admin's phase
    change moves both; a track sharing nothing stays where it was."""
    from skybench.server import phases, queue
    from skybench.server.config import ChallengeConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    base = cfg.model_dump()
    with pytest.raises(ValueError, match=f"lens-space, {linked} share their test objects or real set"):
        ChallengeConfig.model_validate({**base, "tracks": {
            "lens-space": {"phases": {"open": "2027-01-01", "final": "2027-02-01"}},
            linked: {"phases": {"open": "2027-01-01", "final": "2027-04-01"}}}})
    twins = ChallengeConfig.model_validate({**base, "tracks": {"lens-space": {}, linked: {}, "lens-tiles": {}}})
    assert twins.twins(linked) == ["lens-space", linked]
    with Session() as s:
        assert phases.change_phase(s, twins, linked, "final") == "open"
        assert {t: queue.current_phase(s, twins, t) for t in twins.tracks} == {
            "lens-space": "final", linked: "final", "lens-tiles": "open"}
