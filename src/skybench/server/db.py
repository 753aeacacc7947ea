"""The server's state in a SQL database through SQLAlchemy 2: teams, submissions (the queue), phases, quotas,
web sessions, the Ladder's verdicts.

SQLite (the default; WAL mode so readers never wait for the writer) or PostgreSQL (``postgresql+psycopg://``).
The schema is created and upgraded by the Alembic migrations in ``skybench/server/migrations`` only."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator

STATES = ("received", "queued", "running", "finished", "failed", "superseded")  # each has its ``<state>_at``
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTC(TypeDecorator):
    """An aware UTC datetime stored as a naive UTC one, so SQLite's text and PostgreSQL compare alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware one (skybench.server.db.utcnow)")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    members: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)  # public lookup part of the token
    token_hash: Mapped[str] = mapped_column(String(256))  # argon2id of the secret part; the token is never stored
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    submissions: Mapped[list[Submission]] = relationship(back_populates="team")


# One team per name whatever its case (board rows and folders submissions/<team>/ would collide): the database
# enforces it, so two admin requests at once cannot both insert a name.
Index("uq_teams_name_lower", func.lower(Team.name), unique=True)


class Submission(Base):
    """One upload, and the queue's job for it: received -> queued -> running -> finished | failed, or superseded
    (a newer version of its entry took its place before it was recorded: :func:`skybench.server.queue.current`)."""

    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex: ids reveal nothing
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    track: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    # Of the validated folder (storage.Store.store); None while ``received`` (its schema not yet checked).
    sha256: Mapped[str | None] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16))  # the phase it was submitted in
    state: Mapped[str] = mapped_column(String(16), default="received")
    received_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTC)
    running_at: Mapped[datetime | None] = mapped_column(UTC)  # the latest claim
    finished_at: Mapped[datetime | None] = mapped_column(UTC)
    failed_at: Mapped[datetime | None] = mapped_column(UTC)
    superseded_at: Mapped[datetime | None] = mapped_column(UTC)
    reason: Mapped[str] = mapped_column(Text, default="")  # one line; "" when finished
    log: Mapped[str] = mapped_column(Text, default="")  # the sandbox's stderr tail
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # all of them; shown filtered by phase
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UTC)
    counted: Mapped[bool] = mapped_column(Boolean, default=False)  # holds one unit of the team's quotas
    quota_day: Mapped[str | None] = mapped_column(String(10))  # the UTC day whose quota it holds
    team: Mapped[Team] = relationship(back_populates="submissions")

    __table_args__ = (Index("ix_submissions_state_queued", "state", "queued_at"),
                      Index("ix_submissions_team_track", "team_id", "track"))


class PhaseState(Base):
    """An admin's override of the phase the dates in challenge.yaml give a track."""

    __tablename__ = "phase_state"
    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(64), default="")


class QuotaUse(Base):
    """Counted submissions of a team on a track in one period (``day:YYYY-MM-DD`` or ``phase:<phase>``).

    Reserved with one conditional UPDATE (``used < limit``), so concurrent uploads cannot overrun a quota."""

    __tablename__ = "quota_use"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class EntryName(Base):
    """The track of each entry name of a team (``submissions/<team>/<name>/`` is one entry of one track), written
    in the transaction that queues the name's first submission: its key makes two uploads of one new name to two
    tracks, racing each other, queue one only."""

    __tablename__ = "entry_names"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    track: Mapped[str] = mapped_column(String(64))


class FinalChoice(Base):
    """A submission a team picked as one of its final entries on a track (at most K; none: its best public)."""

    __tablename__ = "final_choices"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    track: Mapped[str] = mapped_column(String(64), primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    chosen_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class WebSession(Base):
    """A logged-in session of the web pages (its id is in the signed cookie); log-out deletes it, so a copy of
    the cookie stops working at once. Rows older than the cookie's lifetime are removed at log-in."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # random; in the cookie only
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow, index=True)


class LadderRung(Base):
    """A finished open-phase submission's verdict on its team's ladder (:mod:`skybench.server.ladder`): written once,
    when first decided, and never computed again, so what a team was shown cannot change (a finish stamped earlier
    by a slow clock, or a comparison that failed for a while, cannot rewrite its history). ``id`` orders them."""

    __tablename__ = "ladder_rungs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), unique=True)
    track: Mapped[str] = mapped_column(String(64), index=True)
    leader: Mapped[bool] = mapped_column(Boolean)  # it became its team's leader
    leader_id: Mapped[str | None] = mapped_column(String(32))  # the team's leader after it
    score: Mapped[float | None] = mapped_column(Float)  # that leader's public primary score (unrounded)
    decided_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class LeaderboardSnapshot(Base):
    """The leaderboard of a track as a phase ended (also written as JSON and markdown in the store); one per
    track and phase (the first taken)."""

    __tablename__ = "leaderboard_snapshots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    track: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16))  # the phase that ended
    taken_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    path: Mapped[str] = mapped_column(Text, default="")  # the JSON file in the store

    __table_args__ = (Index("uq_snapshots_track_phase", "track", "phase", unique=True),)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, a busy timeout and foreign keys on every connection."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash in WAL mode
            cur.close()

        return engine
    # a database host that does not answer: an error in 10 s, not the driver's minutes
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **kwargs)


def unreachable(engine: Engine, exc: BaseException) -> str:
    """One line for a database that cannot be reached: its address (no password) and the driver's first line."""
    first = str(getattr(exc, "orig", exc) or type(exc).__name__).strip().splitlines()
    return (f"cannot reach the challenge database {engine.url.render_as_string(hide_password=True)}: "
            f"{first[0] if first else type(exc).__name__}; check database_url in challenge.yaml and that the server "
            "is up")


def clock_skew(engine: Engine, now: Callable[[], float] = time.time) -> float | None:
    """This host's clock less the database server's, in seconds (the middle of the round trip against PostgreSQL's
    ``clock_timestamp()``); None for SQLite, whose only clock is this host's."""
    if engine.dialect.name == "sqlite":
        return None
    with engine.connect() as conn:
        sent = now()
        theirs = float(conn.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
        back = now()
    return (sent + back) / 2 - theirs


class ClockSkewError(RuntimeError):
    pass


def check_clock(engine: Engine, limit: float, now: Callable[[], float] = time.time) -> None:
    """Refuse to serve or evaluate on a host whose clock is more than ``limit`` seconds off the database server's:
    hosts compare each other's times (receipt order of an entry's versions, leases, the evaluation time that picks an
    entry's newest run, the per-day quotas), so one clock off by more than that reorders them."""
    skew = clock_skew(engine, now)
    if skew is not None and abs(skew) > limit:
        raise ClockSkewError(f"this host's clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the "
                             f"database server's ({engine.url.host or engine.url.query.get('host', '?')}); more than "
                             f"max_clock_skew_seconds ({limit:g}) in challenge.yaml: synchronise the clocks (NTP) "
                             "and start again")


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations to ``engine``'s database (``skybench admin db upgrade``; the server at start)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
