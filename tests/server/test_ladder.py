"""The Ladder on the open board (``open_board: ladder``, skybench.server.ladder; Blum & Hardt 2015): what a team
sees of each submission and on the board while a track is open, with the fixed step and with the parameter-free
step (the paired bootstrap's sd, checked against scikit-learn's AUROC on the same resamples), on SQLite and
PostgreSQL, the boards read from a real MLflow store and, for the paired step, a simulated release."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py
from helpers import mlflow_store  # noqa: E402

TRACK = "lens-space"


def _sha(team: str, name: str, version: int) -> str:
    return hashlib.sha256(f"{team}/{name}/{version}".encode()).hexdigest()


def _log(team: str, name: str, sha: str, public: float, private: float, predictions: Path | None = None,
         release_sha: str = "r" * 64) -> None:
    from skybench import tracking

    time.sleep(0.005)  # distinct start times
    metrics = {"public_auroc": public, "private_auroc": private, "public_tpr0": public / 2}
    tracking.log_evaluation(TRACK, team=team, name=name, fmt="csv", status="FINISHED", metrics=metrics,
                            tags={"submission_sha256": sha, "release_sha256": release_sha, "device": "cpu"},
                            artifacts=[predictions] if predictions else (),
                            experiment=tracking.organiser_experiment(TRACK))


class Server:
    """A challenge server on ``cfg`` whose teams' finished submissions are added one at a time, in order."""

    def __init__(self, cfg, engine) -> None:  # type: ignore[no-untyped-def]
        from skybench.server.auth import add_team
        from skybench.server.db import sessions, utcnow

        self.cfg, self.Session = cfg, sessions(engine)
        self.t0 = utcnow()
        self.n = 0
        with self.Session() as s:
            self.teams = {n: add_team(s, n) for n in ("alpha", "beta")}
            s.commit()
        self.auth = {n: {"Authorization": f"Bearer {i.token}"} for n, i in self.teams.items()}

    def finish(self, team: str, name: str, public: float, private: float, predictions: Path | None = None,
               release_sha: str = "r" * 64) -> str:
        from skybench.server.db import Submission

        self.n += 1
        sha = _sha(team, name, self.n)
        when = self.t0 + timedelta(seconds=self.n)
        with self.Session() as s:
            sub = Submission(id=f"s{self.n:02d}".ljust(32, "0"), team_id=self.teams[team].team.id, track=TRACK,
                             name=name, sha256=sha, phase="open", state="finished", received_at=when,
                             queued_at=when, finished_at=when,
                             metrics={"public_auroc": public, "private_auroc": private, "public_tpr0": public / 2})
            s.add(sub)
            s.commit()
            sid = sub.id
        _log(team, name, sha, public, private, predictions, release_sha)
        return sid


def _config(cfg, **update):  # type: ignore[no-untyped-def]
    return cfg.model_copy(update={"open_board": "ladder", "leaderboard_cache_seconds": 0, **update})


def test_fixed_step_ladder_shows_one_score_that_moves_only_on_a_real_improvement(cfg, engine, tmp_path,
                                                                                  monkeypatch):
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    a = [server.finish("alpha", "a", 0.80012, 0.6),  # the first: the leader
         server.finish("alpha", "probe", 0.80544, 0.9),  # better, by less than the step: kept
         server.finish("alpha", "b", 0.83333, 0.7),  # better by more: the new leader
         server.finish("alpha", "c", 0.5, 0.99)]  # worse: kept
    b = server.finish("beta", "x", 0.81, 0.5)
    with TestClient(create_app(cfg, engine)) as client:
        seen = [client.get(f"/api/submissions/{i}", headers=server.auth["alpha"]).json()["metrics"] for i in a]
        assert seen == [{"public_auroc": 0.8, "ladder": "new best"},
                        {"public_auroc": 0.8, "ladder": "kept the previous best"},
                        {"public_auroc": 0.83, "ladder": "new best"},  # a multiple of the step: [R]_eta
                        {"public_auroc": 0.83, "ladder": "kept the previous best"}]
        listed = {x["id"]: x["metrics"] for x in client.get("/api/submissions", headers=server.auth["alpha"]).json()}
        assert [listed[i] for i in a] == seen
        assert client.get(f"/api/submissions/{b}", headers=server.auth["beta"]).json()["metrics"] == {
            "public_auroc": 0.81, "ladder": "new best"}

        rows = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
        assert [(r["rank"], r["team"], r["name"], r["auroc"]) for r in rows] == [(1, "alpha", "b", 0.83),
                                                                                (2, "beta", "x", 0.81)]
        shown = {v for r in rows for k, v in r.items() if isinstance(v, float) and k != "auroc"}
        assert not shown, rows  # no other metric, no interval: the ladder score is all a team learns

        page = client.get(f"/tracks/{TRACK}")  # the web board: the same rows, no other score
        assert page.status_code == 200 and page.text.index("<td>b</td>") < page.text.index("<td>x</td>")
        assert "0.83" in page.text and "0.833" not in page.text and "0.805" not in page.text
        assert "0.416" not in page.text

        # Closed: the final entries default to each team's leader (not its latest or best raw entry).
        admin = {"Authorization": "Bearer " + _admin_token(server)}
        assert client.post(f"/api/admin/tracks/{TRACK}/phase", json={"phase": "final"},
                           headers=admin).status_code == 200
        final = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
        assert {(r["team"], r["name"]) for r in final} == {("alpha", "b"), ("beta", "x")}
        assert {r["auroc"] for r in final} == {0.7, 0.5}  # private part of the leaders' own runs


def _admin_token(server: Server) -> str:
    from skybench.server.auth import add_team

    with server.Session() as s:
        token = add_team(s, "org", admin=True).token
        s.commit()
    return token


def test_an_entry_without_a_ladder_score_shows_no_other_metric_on_the_board(cfg, engine, tmp_path, monkeypatch):
    """A finished run whose public part has no primary (an undefined AUROC on a part that lacks a class leaves the
    real set's public metrics in place) is unranked: on the open board it is listed like a failure, without a
    number, never with the metrics the Ladder hides."""
    from skybench import tracking
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    server.finish("alpha", "a", 0.8, 0.6)
    tracking.log_evaluation(TRACK, team="beta", name="odd", fmt="csv", status="FINISHED",
                            metrics={"public_tpr0": 0.4242, "public_real_auroc": 0.7171, "private_auroc": 0.9},
                            tags={"submission_sha256": _sha("beta", "odd", 99), "release_sha256": "r" * 64,
                                  "device": "cpu"}, experiment=tracking.organiser_experiment(TRACK))
    with TestClient(create_app(cfg, engine)) as client:
        rows = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
        odd = next(r for r in rows if r["team"] == "beta")
        assert odd["rank"] is None and odd["status"] == "FINISHED"
        assert not {k: v for k, v in odd.items() if isinstance(v, float)}, odd
        assert "0.424" not in client.get(f"/tracks/{TRACK}").text


def test_ladder_hides_plots_while_open(cfg, engine, tmp_path, monkeypatch):
    from skybench.server.web import plots_shown

    assert not plots_shown(_config(cfg), "open")
    assert plots_shown(_config(cfg), "final") and plots_shown(cfg, "open")


@pytest.fixture
def project(tmp_path: Path, tiny_space_release: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose ``releases/lens-space`` is the tiny simulated release (where the server finds it)."""
    root = tmp_path / "project"
    (root / "releases").mkdir(parents=True)
    (root / "benchmarks").symlink_to(Path(__file__).resolve().parents[2] / "benchmarks")
    (root / "releases" / TRACK).symlink_to(tiny_space_release)
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    return root


def test_parameter_free_step_is_the_paired_bootstrap_sd(cfg, engine, tmp_path, monkeypatch, project):
    """No ``ladder_step``: a submission becomes the leader only when it beats the leader's public AUROC by more
    than the sd of their paired bootstrap difference (the leaderboard's resamples of the public part)."""
    from sqlalchemy import select

    from skybench.release import release_digest
    from skybench.release.reader import open_release
    from skybench.server import ladder
    from skybench.server.db import Submission
    from skybench.tracking import ranks

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg)
    server = Server(cfg, engine)
    hidden = open_release(project / "releases" / TRACK).hidden("test")
    truth = hidden.meta(["id", "is_lens"]).sort_values("id")
    y = truth["is_lens"].to_numpy().astype(float)
    rng = np.random.default_rng(1)
    base = y + rng.normal(0, 1.0, y.size)
    scores = {"first": base, "nudge": base + rng.normal(0, 0.02, y.size), "clear": y + rng.normal(0, 0.1, y.size)}
    track = ladder._open_track(TRACK)
    public = ranks.part_ids(track, hidden)
    pos = pd.Series(np.arange(len(truth)), index=truth["id"].to_numpy())[public].to_numpy()
    idx = ranks.resample_indices(len(public), track.evaluation.rank_resamples, track.evaluation.rank_seed)

    def auc(s: np.ndarray, rows: np.ndarray) -> np.ndarray:  # scikit-learn on each resample (the reference)
        return np.array([roc_auc_score(y[pos][r], s[pos][r]) if len(set(y[pos][r])) == 2 else np.nan for r in rows])

    ids = {}
    release_sha = release_digest(project / "releases" / TRACK)
    decoy = tmp_path / "decoy"  # the same entries evaluated later on another release: never the ladder's
    decoy.mkdir()
    pd.DataFrame({"id": truth["id"], "score": -y}).to_csv(decoy / "predictions.csv", index=False)
    for name, s in scores.items():
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"id": truth["id"], "score": s}).to_csv(folder / "predictions.csv", index=False)
        point = float(roc_auc_score(y[pos], s[pos]))
        ids[name] = server.finish("alpha", name, point, 0.5, folder / "predictions.csv", release_sha)
    with server.Session() as s:
        for sub in s.scalars(select(Submission)):
            _log("alpha", sub.name, sub.sha256, 0.0, 0.0, decoy / "predictions.csv")
    with server.Session() as s:  # closed: an unclosed session's connection is finalised by the GC, anywhere
        rungs = ladder.climb(s, cfg, TRACK)
    first = float(roc_auc_score(y[pos], scores["first"][pos]))
    for name in ("nudge", "clear"):
        gain = float(roc_auc_score(y[pos], scores[name][pos])) - first
        sd = float(np.nanstd(auc(scores[name], idx) - auc(scores["first"], idx), ddof=1))
        assert rungs[ids[name]].leader == (gain > sd), (name, gain, sd)
    assert [rungs[ids[n]].leader for n in scores] == [True, False, True]  # the data make both cases
    assert rungs[ids["clear"]].score == round(float(roc_auc_score(y[pos], scores["clear"][pos])), 3)

    # Each submission's resamples are kept in the store: a restarted server (no cache in memory) climbs the same
    # ladder without reading a prediction again (here from an MLflow store that has none).
    kept = sorted((cfg.storage / "ladder" / TRACK).glob("*.f64"))
    assert len(kept) == 3 and not list((cfg.storage / "ladder" / TRACK).glob(".*")), kept
    ladder._resamples.cache_clear()
    ladder._CLIMBS.clear()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path / "empty"))
    with server.Session() as s:
        assert ladder.climb(s, cfg, TRACK) == rungs


def test_a_teams_list_climbs_the_ladder_once_not_once_per_submission(cfg, engine, tmp_path, monkeypatch):
    """``GET /api/submissions`` with the Ladder: each climb first reads the whole submissions table (has a job
    ended?), so climbing once per listed submission made a team's list cost N x M (0.5 s for 100 of 10,000
    submissions), and a few teams polling their lists held every server thread."""
    from sqlalchemy import event

    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    for i in range(12):
        server.finish("alpha", f"e{i}", 0.7 + i / 50, 0.5)
    scans: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if "max(submissions.finished_at)" in statement:
            scans.append(statement)

    with TestClient(create_app(cfg, engine)) as client:
        event.listen(engine, "before_cursor_execute", seen)
        try:
            listed = client.get("/api/submissions", headers=server.auth["alpha"]).json()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert [x["metrics"]["ladder"] for x in listed] == ["new best"] * 12
    assert len(scans) <= 3, len(scans)  # this request's one (and the server's tick's, at its start)


def test_a_track_paused_back_to_pending_shows_what_open_shows(cfg, engine, tmp_path, monkeypatch):
    """``phase set TRACK pending`` (an admin pausing an open track) must not show what the Ladder hid while open:
    pending showed every public metric of each submission, unrounded, and the plain public board."""
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    a = server.finish("alpha", "a", 0.80012, 0.6)
    probe = server.finish("alpha", "probe", 0.80544, 0.9)
    with TestClient(create_app(cfg, engine)) as client:
        admin = {"Authorization": "Bearer " + _admin_token(server)}
        before = [client.get(f"/api/submissions/{i}", headers=server.auth["alpha"]).json()["metrics"]
                  for i in (a, probe)]
        board = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
        assert client.post(f"/api/admin/tracks/{TRACK}/phase", json={"phase": "pending"},
                           headers=admin).status_code == 200
        after = [client.get(f"/api/submissions/{i}", headers=server.auth["alpha"]).json()["metrics"]
                 for i in (a, probe)]
        paused = client.get(f"/api/tracks/{TRACK}/leaderboard").json()
        page = client.get(f"/tracks/{TRACK}").text
    assert paused["phase"] == "pending"
    assert after == before == [{"public_auroc": 0.8, "ladder": "new best"},
                               {"public_auroc": 0.8, "ladder": "kept the previous best"}]
    assert paused["rows"] == board and [r["name"] for r in board] == ["a"]
    assert "0.805" not in page and "0.4" not in page and "probe" not in page


def test_a_verdict_once_shown_never_changes(cfg, engine, tmp_path, monkeypatch):
    """Each verdict is kept once decided (LadderRung): a job whose finish is stamped before one the team has
    already seen (a worker's clock behind, two commits in the other order) joins the ladder after it, and does not
    rewrite its history (srv18: "new best" became "kept the previous best", one more comparison for the team)."""
    from skybench.server.app import create_app
    from skybench.server.db import Submission

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    server.finish("alpha", "a", 0.80, 0.5)
    b = server.finish("alpha", "b", 0.85, 0.5)
    with TestClient(create_app(cfg, engine)) as client:
        seen = client.get(f"/api/submissions/{b}", headers=server.auth["alpha"]).json()["metrics"]
        assert seen == {"public_auroc": 0.85, "ladder": "new best"}
        c = server.finish("alpha", "c", 0.90, 0.5)
        with server.Session() as s:  # c's worker clock is behind: it "finished" before b
            sub = s.get(Submission, c)
            sub.finished_at = s.get(Submission, b).finished_at - timedelta(milliseconds=500)
            s.commit()
        again = client.get(f"/api/submissions/{b}", headers=server.auth["alpha"]).json()["metrics"]
        after_c = client.get(f"/api/submissions/{c}", headers=server.auth["alpha"]).json()["metrics"]
    assert again == seen
    assert after_c == {"public_auroc": 0.9, "ladder": "new best"}  # judged against b, the leader it followed


def test_a_comparison_that_cannot_be_made_yet_waits_and_keeps_the_order(cfg, engine, tmp_path, monkeypatch, project):
    """The parameter-free step reads the release and saved predictions; when that read fails for a reason that may
    pass (the release or the tracking store away: an OSError), the submission is not decided as "kept" for good:
    it and its team's later ones wait, shown nothing, and are decided in order once the read works."""
    from skybench.release import release_digest
    from skybench.release.reader import open_release
    from skybench.server import ladder

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg)
    server = Server(cfg, engine)
    release = project / "releases" / TRACK
    truth = open_release(release).hidden("test").meta(["id", "is_lens"]).sort_values("id")
    y = truth["is_lens"].to_numpy().astype(float)
    ids = []
    for k, (name, noise) in enumerate((("first", 1.0), ("clear", 0.1), ("later", 1.0))):
        folder = tmp_path / name
        folder.mkdir()
        scores = y + np.random.default_rng(k).normal(0, noise, y.size)
        pd.DataFrame({"id": truth["id"], "score": scores}).to_csv(folder / "predictions.csv", index=False)
        ids.append(server.finish("alpha", name, float(roc_auc_score(y, scores)), 0.5, folder / "predictions.csv",
                                 release_digest(release)))
    away = release.with_name("away")
    release.rename(away)  # the release's disk gone for a while
    try:
        with server.Session() as s:
            assert set(ladder.climb(s, cfg, TRACK)) == {ids[0]}  # "clear" waits, and "later" behind it
    finally:
        away.rename(release)
    with server.Session() as s:
        rungs = ladder.climb(s, cfg, TRACK)
    assert [rungs[i].leader for i in ids] == [True, True, False]


def test_a_score_is_never_shown_unquantised_when_the_release_cannot_be_read(cfg, engine, tmp_path, monkeypatch,
                                                                            project):
    """The parameter-free Ladder shows multiples of 1/n, n read from the release; on a server host without
    ``releases/TRACK`` (the workers hold it) or with its disk away, each team's first score (it needs no comparison)
    and every kept leader's were shown raw, every digit, to the team and on the public board: a Whitehill probe
    read in full."""
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, public_score_digits=None)
    server = Server(cfg, engine)
    release = project / "releases" / TRACK
    away = release.with_name("away")
    release.rename(away)
    try:
        a = server.finish("alpha", "a", 0.8123456789, 0.5)
        with TestClient(create_app(cfg, engine)) as client:
            seen = client.get(f"/api/submissions/{a}", headers=server.auth["alpha"]).json()["metrics"]
            rows = client.get(f"/api/tracks/{TRACK}/leaderboard").json()["rows"]
            page = client.get(f"/tracks/{TRACK}").text
    finally:
        away.rename(release)
    assert seen == {}
    assert all(r["auroc"] is None for r in rows), rows
    assert "0.812" not in page
    with TestClient(create_app(cfg, engine)) as client:  # the release back: the score, a multiple of 1/n
        shown = client.get(f"/api/submissions/{a}", headers=server.auth["alpha"]).json()["metrics"]["public_auroc"]
    n = round(1 / ladder_quantum())
    assert shown != 0.8123456789 and shown == round(round(shown * n) / n, 4), (shown, n)  # k/n, at 4 decimals


def ladder_quantum() -> float:
    from skybench.server import ladder

    q = ladder._one_over_n(TRACK)
    assert q is not None
    return q


def test_a_verdict_kept_by_another_server_process_meanwhile_is_the_leader_a_later_job_follows(cfg, engine, tmp_path,
                                                                                              monkeypatch):
    """Several server processes climb one ladder (each its own lock). A climb read the kept verdicts, then the
    undecided jobs, each read its own snapshot: a verdict another process kept in between (x: new best) was in
    neither, and a job finished meanwhile (y) was judged against the leader before x, shown "new best" and its own
    score although it is worse than x (one more score for the team, and its leader set back)."""
    from skybench.server import ladder

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    server.finish("alpha", "a", 0.80, 0.5)
    with server.Session() as s:
        ladder._climb(s, cfg, TRACK)  # a: the leader
    server.finish("alpha", "x", 0.85, 0.5)  # a real improvement
    ys: list[str] = []
    with server.Session() as b:  # server process B starts its climb
        real = b.execute
        calls: list[int] = []

        def execute(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 2:  # between B's two reads (the kept verdicts, the undecided jobs):
                with server.Session() as a:  # process A decides x and commits
                    ladder._climb(a, cfg, TRACK)
                ys.append(server.finish("alpha", "y", 0.83, 0.5))  # then y finishes
            return real(*args, **kwargs)

        b.execute = execute  # type: ignore[method-assign]
        rungs, _ = ladder._climb(b, cfg, TRACK)
    with server.Session() as s:
        kept = ladder._climb(s, cfg, TRACK)[0]  # y decided now (by B, or at the next climb)
    assert rungs.get(ys[0]) in (None, kept[ys[0]])
    assert not kept[ys[0]].leader, kept[ys[0]]  # y (0.83) is worse than x (0.85), the leader it followed


def test_a_request_does_not_wait_while_new_verdicts_are_decided(cfg, engine, tmp_path, monkeypatch):
    """Deciding verdicts can take a while (the paired step reads predictions, scores 1,000 resamples; more on the
    heavier tracks) and holds the track's lock; a team's request meanwhile gets the verdicts already kept, at once,
    and the new one once it is decided."""
    from skybench.server import ladder
    from skybench.server.app import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    a = server.finish("alpha", "a", 0.80, 0.5)
    with TestClient(create_app(cfg, engine)) as client:
        def seen(i: str) -> dict:  # type: ignore[type-arg]
            return client.get(f"/api/submissions/{i}", headers=server.auth["alpha"]).json()["metrics"]

        assert seen(a) == {"public_auroc": 0.8, "ladder": "new best"}
        b = server.finish("alpha", "b", 0.85, 0.5)
        lock = ladder._LOCKS[TRACK]
        assert lock.acquire(timeout=30)  # as the tick does while it decides
        answers: list[dict] = []  # type: ignore[type-arg]
        try:  # before: each request waited for the lock, here for ever
            asking = threading.Thread(target=lambda: answers.extend([seen(a), seen(b)]), daemon=True)
            asking.start()
            asking.join(120)
            assert not asking.is_alive(), "the requests waited for the verdicts being decided"
        finally:
            lock.release()
        assert answers == [{"public_auroc": 0.8, "ladder": "new best"}, {}]
        assert seen(b) == {"public_auroc": 0.85, "ladder": "new best"}


def test_no_write_lock_is_held_while_verdicts_are_compared(cfg, engine, tmp_path, monkeypatch):
    """Each comparison can take a while (1,000 paired resamples); the verdicts decided before it were flushed by
    the next query's autoflush (a leader kept earlier, read back), which on SQLite held the database's one write
    lock through every later comparison: uploads and workers waited. They are written at the commit now."""
    from sqlalchemy import text

    from skybench.server import ladder
    from skybench.server.db import sessions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    cfg = _config(cfg, ladder_step=0.01)
    server = Server(cfg, engine)
    server.finish("alpha", "a", 0.80, 0.5)
    server.finish("beta", "x", 0.70, 0.5)
    with sessions(engine)() as s:
        ladder.climb(s, cfg, TRACK)  # a and x: kept, the teams' leaders
    for team, name, score in (("alpha", "b", 0.85), ("beta", "y", 0.75), ("alpha", "c", 0.9)):
        server.finish(team, name, score, 0.5)
    writes: list[str] = []
    eta = ladder._eta

    def eta_and_a_write_meanwhile(*args):  # type: ignore[no-untyped-def]
        with engine.connect() as conn:  # another request's write, e.g. an upload's row
            if engine.dialect.name == "sqlite":
                conn.execute(text("PRAGMA busy_timeout=200"))
            try:
                conn.execute(text("UPDATE teams SET members = members WHERE name = 'beta'"))
                conn.commit()
                writes.append("written")
            except Exception as exc:  # noqa: BLE001 - "database is locked"
                writes.append(str(exc).splitlines()[0])
            finally:
                if engine.dialect.name == "sqlite":
                    conn.execute(text("PRAGMA busy_timeout=30000"))
        return eta(*args)

    monkeypatch.setattr(ladder, "_eta", eta_and_a_write_meanwhile)
    with sessions(engine)() as s:
        rungs = ladder.climb(s, cfg, TRACK)
    assert len(writes) == 3 and set(writes) == {"written"}, writes
    assert sum(r.leader for r in rungs.values()) == 5  # every one better by more than the step
