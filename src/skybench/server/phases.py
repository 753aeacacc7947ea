"""Phases of a track (``open`` -> ``closed`` -> ``final``), final entries and leaderboard snapshots.

    GET  /api/tracks/{track}/leaderboard[?phase=P]  public part while open/closed, the private part of each
                                                     team's final entries once final; ``phase=``: the snapshot
                                                     kept when phase P ended (no token needed)
    GET  /api/tracks/{track}/final                   the team's final entries (its choice, else its best public)
    POST /api/tracks/{track}/final                   {"submissions": [id, ...]}: pick up to K while closed

The ranking itself is :func:`skybench.tracking.leaderboard.leaderboard` (MLflow stays the source of truth);
this module only chooses which part of the test set it shows and which entries rank in the final phase. A
final entry is a submission (a version of an entry): the final board ranks that submission's own evaluation,
found by its sha256 (``leaderboard(versions=...)``), not the entry's latest one.
A phase change (``skybench admin phase``, the admin API, or the dates in ``challenge.yaml``, noticed at the
first server or worker tick (``tick_seconds``) or leaderboard request after the date) first stores the
leaderboard of the phase that ends, once: one snapshot per track and phase (a unique index; insert if absent)."""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from skybench.server import queue
from skybench.server.config import PHASES, ChallengeConfig, Phase, shown_as_open
from skybench.server.db import FinalChoice, LeaderboardSnapshot, Submission, Team, utcnow

log = logging.getLogger("skybench.phases")

ENDED_BEFORE: dict[str, tuple[str, ...]] = {"pending": (), "open": (), "closed": ("open",),
                                            "final": ("open", "closed")}


def _track(name: str) -> Any:
    from skybench.tracks import load_track

    return load_track(name)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN/NA as None, numbers as Python numbers."""
    out = []
    for rec in df.astype(object).to_dict(orient="records"):
        out.append({k: (None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                        else int(v) if k == "rank" else v) for k, v in rec.items()})
    return out


Versions = frozenset[tuple[str, str, str | None]]  # (team, name, submission sha256 or None: the entry's latest)


def _board(track_name: str, part: str, versions: Versions | None = None) -> pd.DataFrame:
    """The MLflow leaderboard ranked on the ``public`` or ``private`` part of the test set, of ``versions`` only
    when given (the final entries)."""
    from skybench.tracking.leaderboard import leaderboard

    track = _track(track_name)
    ev = track.evaluation.model_copy(update={"phase": "open" if part == "public" else "closed"})
    # the project's examples (one fails on purpose) are not the challenge's entries; baselines stay as reference rows
    return leaderboard(track.model_copy(update={"evaluation": ev}), versions=versions, exclude_teams=("examples",))


class _BoardCache:
    """Leaderboards read from MLflow, kept ``leaderboard_cache_seconds`` and only while no job has finished
    or failed since (the queue's latest end time, read from the database: a worker on any host invalidates)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boards: dict[tuple[str, str, str, str, Versions | None], tuple[object, float, pd.DataFrame]] = {}
        self._flights: dict[tuple[str, str, str, str, Versions | None], threading.Lock] = {}

    def get(self, session: Session, cfg: ChallengeConfig, track: str, part: str,
            versions: Versions | None = None) -> pd.DataFrame:
        from skybench.tracking import tracking_uri

        if cfg.leaderboard_cache_seconds <= 0:
            return _board(track, part, versions)
        key = (str(session.get_bind().engine.url), tracking_uri(), track, part, versions)
        version = results_version(session)
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        # One read of MLflow per board at a time: requests that miss together (anyone may ask, no token) wait
        # for it and share it instead of each reading every run of the track.
        with flight:
            now = time.monotonic()
            with self._lock:
                hit = self._boards.get(key)
            if hit is not None and hit[0] == version and now - hit[1] < cfg.leaderboard_cache_seconds:
                return hit[2].copy()
            board = _board(track, part, versions)
            with self._lock:
                self._boards[key] = (version, now, board)
        return board.copy()


def results_version(session: Session) -> tuple[object, ...]:
    """Changes whenever a worker finishes or fails a job (the leaderboard cache's key)."""
    row = session.execute(select(func.max(Submission.finished_at), func.max(Submission.failed_at),
                                 func.count(Submission.finished_at))).one()
    return tuple(row)


BOARDS = _BoardCache()


class _Shown:
    """What a board request answers (the API's encoded rows, the track page's table) per (what, track, phase, results
    version, display settings), kept ``leaderboard_cache_seconds``: anyone may ask (no token), and building it from
    the cached board (a copy, the Ladder, ranking, rounding, rows) took ~60 ms of a core per request at 1,000 runs,
    so 45 anonymous clients held every thread while a team's requests waited seconds. Callers do not mutate it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[object, ...], tuple[float, Any]] = {}

    def get(self, session: Session, cfg: ChallengeConfig, what: str, track: str, phase: str,
            build: Callable[[], Any]) -> Any:
        from skybench.tracking import tracking_uri

        if cfg.leaderboard_cache_seconds <= 0:
            return build()
        key = (what, str(session.get_bind().engine.url), tracking_uri(), track, phase, results_version(session),
               cfg.open_board, cfg.open_digits, cfg.ladder_step)
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and now - hit[0] < cfg.leaderboard_cache_seconds:
            return hit[1]
        value = build()
        with self._lock:
            if len(self._items) >= 256:  # tracks x phases x versions: the stale ones go
                self._items.clear()
            self._items[key] = (now, value)
        return value


SHOWN = _Shown()


def board(session: Session, cfg: ChallengeConfig, track: str, part: str, *, fresh: bool = False,
          versions: Versions | None = None) -> pd.DataFrame:
    """The leaderboard of ``track`` on the ``public`` or ``private`` part (of ``versions`` only when given), from
    the cache unless ``fresh``."""
    return _board(track, part, versions) if fresh else BOARDS.get(session, cfg, track, part, versions)


def _round(cfg: ChallengeConfig, track_name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    digits = cfg.open_digits  # never every digit: a mean's digits carry many labels (Whitehill 2017)
    from skybench.tracking.leaderboard import _metric_columns

    metrics = set(_metric_columns(_track(track_name)))
    return [{k: round(v, digits) if k in metrics and isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


def ranked_as_shown(board: pd.DataFrame, track_name: str, digits: int | None) -> pd.DataFrame:
    """``board`` ranked on its primary metric rounded to ``digits``, as it is shown (ties as the leaderboard breaks
    them: the earlier submitted, then team and name): an order on the raw values would give back the digits
    rounded away (which of two probes scored higher). Unchanged when ``digits`` is None."""
    ranked = board[board["rank"].notna()]
    if digits is None or ranked.empty:
        return board
    track = _track(track_name)
    shown = ranked[track.metrics.primary].map(lambda v: round(float(v), digits))
    order = ranked.assign(_shown=shown).sort_values(["_shown", "submitted", "team", "name"], kind="stable",
                                                    ascending=[not track.metrics.higher_is_better, True, True, True])
    order = order.drop(columns="_shown").assign(rank=pd.array(range(1, len(order) + 1), dtype="Int64"))
    return pd.concat([order, board[board["rank"].isna()]], ignore_index=True)


def open_board(session: Session, cfg: ChallengeConfig, track: str, public: pd.DataFrame) -> pd.DataFrame:
    """The board teams see while ``track`` is open: ``public`` (the leaderboard of the public part), or each team's
    Ladder leader with its ladder score only (``open_board: ladder``: :mod:`skybench.server.ladder`)."""
    if cfg.open_board != "ladder":
        return public
    from skybench.server import ladder

    return ladder.board(session, cfg, track, public)


def best_public(public: pd.DataFrame) -> dict[str, str]:
    """{team: name of its best-ranked entry on the public board}."""
    ranked = public[public["rank"].notna()].sort_values("rank")
    return dict(ranked.drop_duplicates("team")[["team", "name"]].itertuples(index=False, name=None))


def final_entries(session: Session, cfg: ChallengeConfig, track: str, public: pd.DataFrame) -> Versions:
    """(team, name, sha256) of the submissions that rank in the final phase: each team's chosen ones (a version of
    an entry: its sha256 identifies its evaluation), else its best public entry (sha256 None: the version the
    public board ranks, the entry's latest; with ``open_board: ladder``, the team's leader)."""
    rows = session.execute(select(Team.name, Submission.name, Submission.sha256)
                           .join(FinalChoice, FinalChoice.team_id == Team.id)
                           .join(Submission, Submission.id == FinalChoice.submission_id)
                           .where(FinalChoice.track == track)).all()
    out: set[tuple[str, str, str | None]] = {(t, n, sha) for t, n, sha in rows}
    chosen = {t for t, _, _ in out}
    if cfg.open_board == "ladder":
        from skybench.server import ladder

        leaders = ladder.leaders(session, cfg, track)
        rows = session.execute(select(Team.name, Submission.name, Submission.sha256).join(Team)
                               .where(Submission.id.in_(leaders))).all() if leaders else []
        return frozenset(out | {(t, n, sha) for t, n, sha in rows if t not in chosen})
    out |= {(t, n, None) for t, n in best_public(public).items() if t not in chosen}
    return frozenset(out)


def final_board(session: Session, cfg: ChallengeConfig, track: str, *, fresh: bool = False) -> pd.DataFrame:
    """The board of the final phase: the final entries (:func:`final_entries`) ranked on the private part, each
    on its chosen version's own evaluation (two chosen versions of one entry: the later evaluated)."""
    public = board(session, cfg, track, "public", fresh=fresh)
    private = board(session, cfg, track, "private", fresh=fresh, versions=final_entries(session, cfg, track, public))
    return private[private["rank"].notna()].reset_index(drop=True)


def live_board(session: Session, cfg: ChallengeConfig, track: str, phase: str, *, fresh: bool = False
               ) -> list[dict[str, Any]]:
    """The leaderboard a phase shows: the public part (rounded while open), or the final private ranking
    (``fresh``: read from MLflow now, not from the few-seconds cache)."""
    if phase in ("pending", "open", "closed"):
        public = board(session, cfg, track, "public", fresh=fresh)
        if not shown_as_open(phase):
            return _rows(public)
        return _round(cfg, track, _rows(ranked_as_shown(open_board(session, cfg, track, public), track,
                                                        cfg.open_digits)))
    return _rows(final_board(session, cfg, track, fresh=fresh))


def _markdown(rows: list[dict[str, Any]]) -> str:
    from skybench.tracking.leaderboard import render

    return render(pd.DataFrame(rows), "markdown") if rows else "(no entries)\n"


def snapshot(session: Session, cfg: ChallengeConfig, track: str, phase: str) -> LeaderboardSnapshot:
    """The snapshot of ``phase`` of ``track``: the one stored, else the leaderboard ``phase`` shows now, stored
    (a row, then JSON + markdown under ``<storage>/leaderboards/``: :func:`write_snapshot_files`). Idempotent
    across processes: the row is inserted only if absent (unique per track and phase)."""
    if (have := latest_snapshot(session, track, phase)) is not None:
        return have
    rows = json.loads(json.dumps(live_board(session, cfg, track, phase, fresh=True), default=str))
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(LeaderboardSnapshot).values(track=track, phase=phase, taken_at=utcnow(), rows=rows,
                                                       path="")
                    .on_conflict_do_nothing(index_elements=["track", "phase"]))
    session.commit()
    have = latest_snapshot(session, track, phase)
    assert have is not None
    write_snapshot_files(session, cfg, have)
    return have


def write_snapshot_files(session: Session, cfg: ChallengeConfig, snap: LeaderboardSnapshot) -> None:
    """Copy the stored snapshot ``snap`` (its row is the record) to JSON + markdown in the store, unless a copy is
    there. A full or read-only store leaves no partial file and stops nothing (the board, the phase change, the
    other tracks): logged, and written at a later tick; concurrent writers keep the first copy recorded."""
    if snap.path:
        return
    taken = snap.taken_at
    folder = cfg.storage / "leaderboards" / snap.track
    stem = folder / f"{snap.phase}-{taken.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"
    files = (stem.with_suffix(".json"), stem.with_suffix(".md"))
    doc = {"track": snap.track, "phase": snap.phase, "taken_at": taken.isoformat(), "rows": snap.rows}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files[0].write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        files[1].write_text(f"# {snap.track}: leaderboard at the end of phase {snap.phase} "
                            f"({taken.isoformat(timespec='seconds')})\n\n{_markdown(snap.rows)}", encoding="utf-8")
    except OSError as exc:
        for f in files:
            f.unlink(missing_ok=True)
        log.warning("the leaderboard of phase %s of %s is kept in the database, but not yet in %s (%s); "
                    "written at a later tick", snap.phase, snap.track, folder, exc)
        return
    res = session.execute(update(LeaderboardSnapshot).where(LeaderboardSnapshot.id == snap.id,
                                                            LeaderboardSnapshot.path == "").values(path=str(files[0])))
    session.commit()
    if res.rowcount != 1:  # type: ignore[attr-defined]  # another process recorded its copy first: keep that one
        for f in files:
            f.unlink(missing_ok=True)
    session.refresh(snap)


def latest_snapshot(session: Session, track: str, phase: str) -> LeaderboardSnapshot | None:
    """The snapshot of ``phase`` of ``track`` (there is at most one), or None."""
    return session.scalars(select(LeaderboardSnapshot).where(LeaderboardSnapshot.track == track,
                                                             LeaderboardSnapshot.phase == phase)
                           .execution_options(populate_existing=True)).first()


def catch_up(session: Session, cfg: ChallengeConfig, track: str, now: datetime | None = None) -> Phase:
    """The track's phase now, after snapshotting every phase that ended (by date) without one."""
    phase = queue.current_phase(session, cfg, track, now)
    for ended in ENDED_BEFORE[phase]:
        if (snap := latest_snapshot(session, track, ended)) is None:
            snapshot(session, cfg, track, ended)
        else:
            write_snapshot_files(session, cfg, snap)  # one the store had no room for when it was taken
    return phase


def catch_up_all(session: Session, cfg: ChallengeConfig, now: datetime | None = None) -> dict[str, Phase]:
    """:func:`catch_up` for every track (the server's and the worker's tick). A track that fails is logged and
    left out (tried again at the next tick): it stops neither the other tracks' snapshots nor their Ladder."""
    phases: dict[str, Phase] = {}
    for track in cfg.tracks:
        try:
            phases[track] = catch_up(session, cfg, track, now)
        except Exception:  # noqa: BLE001 - whatever one track's board raised
            session.rollback()
            log.exception("phase tick of %s failed; trying again at the next tick", track)
    return phases


def change_phase(session: Session, cfg: ChallengeConfig, track: str, phase: str, by: str = "") -> Phase:
    """Move ``track`` to ``phase``, storing the leaderboard of the phase that ends first (unless one is stored:
    a phase reopened and ended again keeps its first snapshot); returns the old one."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: one of {', '.join(PHASES)}")
    cfg.track(track)  # KeyError naming the tracks
    old = catch_up(session, cfg, track)
    for t in cfg.twins(track):  # tracks sharing test objects move together: one's scores are the other's labels
        was = catch_up(session, cfg, t)
        if was != phase and was in ("open", "closed"):
            snapshot(session, cfg, t, was)
        queue.set_phase(session, t, phase, by=by)
    return old


class FinalRefused(Exception):
    """A choice of final entries not saved; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def choose_finals(session: Session, cfg: ChallengeConfig, team: Team, track: str, ids: list[str]) -> list[str]:
    """Replace ``team``'s final entries on ``track`` by ``ids`` (at most K), atomically; commits.

    The transaction starts by writing the team's row, which serialises a team's concurrent choices on both
    databases (PostgreSQL: a row lock; SQLite: the write lock, taken before anything is read, so the busy
    timeout waits instead of failing on a stale snapshot): the last one saved wins, and no mix of two ever
    exceeds K. Raises :class:`FinalRefused` (nothing changed)."""
    ids = list(dict.fromkeys(ids))
    k = cfg.k(track)
    if len(ids) > k:
        raise FinalRefused(f"{len(ids)} final entries chosen on {track!r}; at most {k}", 422)
    try:
        # a non-key column: PostgreSQL then does not wait for the team's concurrent uploads (their FK locks)
        session.execute(update(Team).where(Team.id == team.id).values(is_admin=Team.is_admin))
        phase = queue.current_phase(session, cfg, track)
        if phase != "closed":
            raise FinalRefused(f"final entries are chosen while {track!r} is closed; it is {phase!r}", 409)
        for sid in ids:
            sub = session.get(Submission, sid)
            if sub is None or sub.team_id != team.id:  # another team's id looks like a missing one
                raise FinalRefused(f"no submission {sid!r} of team {team.name!r}", 404)
            if sub.track != track or sub.state != "finished":
                raise FinalRefused(f"submission {sid!r} is {sub.state} on {sub.track!r}: only finished "
                                   f"submissions on {track!r} can be final entries", 422)
        session.execute(delete(FinalChoice).where(FinalChoice.team_id == team.id, FinalChoice.track == track))
        session.add_all(FinalChoice(team_id=team.id, track=track, submission_id=sid) for sid in ids)
        session.commit()
    except (OperationalError, IntegrityError) as exc:  # a lock wait that timed out, say
        session.rollback()
        raise FinalRefused(f"another choice of final entries of team {team.name!r} on {track!r} was being saved "
                           f"at the same time and this one was not saved ({type(exc.orig).__name__}); "
                           f"look at GET /api/tracks/{track}/final and choose again if needed", 409) from exc
    except BaseException:
        session.rollback()
        raise
    return ids


class FinalPick(BaseModel):
    submissions: list[str] = Field(..., description="ids of the team's own finished submissions on this track")


def router(cfg: ChallengeConfig, sessions: sessionmaker, team: Callable[..., Team],
           board_read: Callable[..., None]) -> APIRouter:
    api = APIRouter(prefix="/api/tracks", tags=["phases"])

    def known(track: str) -> None:
        if track not in cfg.tracks:
            raise HTTPException(404, f"no track {track!r} in this challenge (tracks: {', '.join(cfg.tracks)})")

    @api.get("/{track}/leaderboard", dependencies=[Depends(board_read)])
    def leaderboard(track: str, phase: str | None = None) -> Any:
        known(track)
        with sessions() as s:
            now = catch_up(s, cfg, track)
            if phase is not None:
                snap = latest_snapshot(s, track, phase)
                if snap is None:
                    raise HTTPException(404, f"no snapshot of phase {phase!r} of {track!r}: it is kept when the "
                                             f"phase ends (now {now!r})")
                return {"track": track, "phase": snap.phase, "snapshot": True,
                        "taken_at": snap.taken_at.isoformat(), "rows": snap.rows}

            def answer() -> bytes:  # encoded once per cached board: 1,000 rows took ~85 ms to encode
                part = "private (final entries)" if now == "final" else "public"
                rows = live_board(s, cfg, track, now)
                return bytes(JSONResponse(jsonable_encoder({"track": track, "phase": now, "snapshot": False,
                                                            "part": part, "rows": rows})).body)

            body = SHOWN.get(s, cfg, "json", track, now, answer)
        return Response(body, media_type="application/json")

    def _view(s: Session, t: Team, track: str) -> dict[str, Any]:
        ids = s.scalars(select(FinalChoice.submission_id).where(FinalChoice.team_id == t.id,
                                                                 FinalChoice.track == track)).all()
        return {"track": track, "k": cfg.k(track), "chosen": sorted(ids),
                "default": "" if ids else "your best-ranked public entry"}

    @api.get("/{track}/final")
    def mine(track: str, t: Team = Depends(team)) -> dict[str, Any]:
        known(track)
        with sessions() as s:
            return _view(s, t, track)

    @api.post("/{track}/final")
    def pick(track: str, body: FinalPick, t: Team = Depends(team)) -> dict[str, Any]:
        known(track)
        with sessions() as s:
            catch_up(s, cfg, track)  # may store a snapshot: before the team's lock below
        with sessions() as s:
            try:
                choose_finals(s, cfg, t, track, body.submissions)
            except FinalRefused as exc:
                raise HTTPException(exc.status, str(exc)) from None
            return _view(s, t, track)

    return api
