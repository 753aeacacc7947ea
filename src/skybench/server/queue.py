"""The submission queue: enqueue with quota accounting, claim with a lease, heartbeat, finish, fail.

Teams take turns (:func:`_next_jobs`): a team that queues many jobs at once does not hold every worker while
another team's job waits. A claim is atomic on both databases: one conditional ``UPDATE ... WHERE id = ? AND
<still claimable>`` per candidate, in turn order, and a check of the row count (a worker that lost the race to
another tries the next candidate).
A job is claimable when queued, or running with an expired lease (its worker died): it is re-run, and the
evaluation stage's own idempotency (the submission's sha256 in the records and MLflow) keeps it from being
published twice.

Versions of one entry (a team's uploads of one name) are evaluated in the order they were received, since the last
one recorded is the one placed in ``submissions/<team>/<name>/`` and ranked (MLflow's latest run): a job waits
while another version of its entry runs (a claim takes the entry's row lock first, so two claims at once see each
other), and a job that a newer version has replaced (:func:`_replaced`) is never run: it is ``superseded``.
``current`` asks again before a job is placed and before its record is written.

Quotas (``challenge.yaml``: per team, track and UTC day, and per phase) are reserved when a submission is
queued, with one conditional ``UPDATE quota_use SET used = used + 1 WHERE used < limit`` per period, so
concurrent uploads cannot overrun them. A submission that runs and fails in the sandbox keeps its unit (free
failures would be an oracle); a schema rejection never reaches the queue; an infrastructure failure (the
evaluating machine's fault) is queued again without a new unit, and given back if it fails for good. A job
superseded while it waits in the queue gives its unit back too (it was never evaluated: at most its earlier tries
failed for the machine's fault); one superseded once a worker has taken it keeps it, as a job whose worker died."""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from skybench.server.config import ChallengeConfig, Phase
from skybench.server.db import EntryName, PhaseState, QuotaUse, Submission, Team, utcnow

RECEIVED_STALE_SECONDS = 3600  # a row still ``received`` this long after its upload was left by a stopped server


class Refused(Exception):
    """A submission the server does not queue; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def current_phase(session: Session, cfg: ChallengeConfig, track: str, now: datetime | None = None) -> Phase:
    """An admin's override of the track's phase, else what the dates in ``challenge.yaml`` give; ``pending`` (shown
    as a paused track) for a track of earlier submissions that ``challenge.yaml`` no longer names."""
    override = session.get(PhaseState, track)
    if override is not None:
        return override.phase  # type: ignore[return-value]
    return cfg.tracks[track].phase_at(now or utcnow()) if track in cfg.tracks else "pending"


def set_phase(session: Session, track: str, phase: Phase, by: str = "") -> None:
    """Override the phase of ``track`` (``skybench admin phase``); commits."""
    row = session.get(PhaseState, track) or PhaseState(track=track)
    row.phase, row.changed_at, row.changed_by = phase, utcnow(), by
    session.add(row)
    session.commit()


def _periods(phase: str, when: datetime) -> tuple[str, str]:
    return f"day:{when.date().isoformat()}", f"phase:{phase}"


def _insert(session: Session) -> Any:
    """The dialect's INSERT (with ``on_conflict_do_nothing``)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _claim_name(session: Session, team_id: int, name: str, track: str) -> str:
    """The track the team's entry ``name`` belongs to, claimed for ``track`` if it had none, in the caller's
    transaction: a concurrent claim of the same new name waits for this one to end (the key's lock on PostgreSQL,
    the write lock on SQLite), then reads the track it claimed."""
    session.execute(_insert(session)(EntryName).values(team_id=team_id, name=name, track=track)
                    .on_conflict_do_nothing())
    owner = session.scalar(select(EntryName.track).where(EntryName.team_id == team_id, EntryName.name == name))
    assert owner is not None
    return owner


def _reserve(session: Session, team_id: int, track: str, period: str, limit: int) -> bool:
    session.execute(_insert(session)(QuotaUse).values(team_id=team_id, track=track, period=period, used=0)
                    .on_conflict_do_nothing())
    res = session.execute(update(QuotaUse)
                          .where(QuotaUse.team_id == team_id, QuotaUse.track == track, QuotaUse.period == period,
                                 QuotaUse.used < limit)
                          .values(used=QuotaUse.used + 1))
    return res.rowcount == 1  # type: ignore[attr-defined]


def _release(session: Session, sub: Submission) -> None:
    for period in _periods(sub.phase, sub.received_at):
        session.execute(update(QuotaUse)
                        .where(QuotaUse.team_id == sub.team_id, QuotaUse.track == sub.track,
                               QuotaUse.period == period, QuotaUse.used > 0)
                        .values(used=QuotaUse.used - 1))
    sub.counted = False


def quota_left(session: Session, cfg: ChallengeConfig, team: Team, track: str, now: datetime | None = None
               ) -> dict[str, int]:
    """Counted submissions still allowed today (UTC) and in the current phase."""
    now = now or utcnow()
    phase = current_phase(session, cfg, track, now)
    q = cfg.track(track).quota
    left = {}
    for key, period, limit in zip(("today", "phase"), _periods(phase, now), (q.per_day, q.per_phase), strict=True):
        used = session.scalar(select(QuotaUse.used).where(QuotaUse.team_id == team.id, QuotaUse.track == track,
                                                          QuotaUse.period == period)) or 0
        left[key] = max(0, limit - used)
    return left


def receive(session: Session, cfg: ChallengeConfig, team: Team, track: str, name: str,
            received_at: datetime | None = None) -> Submission:
    """The row of an upload that is on disk and not yet checked (state ``received``); commits.

    :func:`enqueue` moves it to ``queued``; a refused upload's row is removed (:func:`abandon`): it was never
    acknowledged and costs no quota."""
    received_at = received_at or utcnow()
    _refuse_early(session, cfg, team, track, name, received_at)
    sub = Submission(id=secrets.token_hex(16), team_id=team.id, track=track, name=name, sha256=None,
                     phase=current_phase(session, cfg, track, received_at), state="received",
                     received_at=received_at, counted=False, reason="", log="", metrics={}, attempt=0)
    session.add(sub)
    session.commit()
    return sub


def _open_phase(session: Session, cfg: ChallengeConfig, track: str, when: datetime) -> str:
    """The track's phase at ``when``; :class:`Refused` unless the track is served and open."""
    if track not in cfg.tracks or not cfg.tracks[track].open:
        raise Refused(f"track {track!r} takes no submissions on this server (open: "
                      f"{', '.join(t for t, c in cfg.tracks.items() if c.open) or 'none'})", 404)
    phase = current_phase(session, cfg, track, when)
    if phase != "open":
        starts = cfg.tracks[track].phases.get("open")
        at = f"; it opens at {starts.isoformat()}" if phase == "pending" and starts else ""
        raise Refused(f"track {track!r} is in phase {phase!r} and takes no new submissions{at}", 409)
    return phase


def _name_taken(name: str, other: str | None) -> Refused:
    return Refused(f"your entry name {name!r} is taken by your submissions to track {other!r}; "
                   "use another name for this track", 409)


def _quota_used(cfg: ChallengeConfig, track: str, period: Literal["day", "phase"], which: str) -> Refused:
    q = cfg.track(track).quota
    if period == "day":
        return Refused(f"daily quota of {q.per_day} submissions on {track!r} used up for {which} (UTC); it resets "
                       "at 00:00 UTC", 429)
    return Refused(f"quota of {q.per_phase} submissions on {track!r} in phase {which!r} used up", 429)


_ALL_TRACKS = "*"  # the quota_use track of a team's refused-upload count


def _refused_period(when: datetime) -> str:
    return f"refused:{when.strftime('%Y-%m-%dT%H')}"


def count_refused(session: Session, team_id: int, when: datetime) -> None:
    """Count one upload of ``team_id`` refused after it was unpacked, in the UTC hour of ``when``; commits."""
    _reserve(session, team_id, _ALL_TRACKS, _refused_period(when), 2**31 - 1)  # INTEGER
    session.commit()


def _refuse_early(session: Session, cfg: ChallengeConfig, team: Team, track: str, name: str,
                  received_at: datetime) -> None:
    """Raise what :func:`enqueue` would (track closed, name taken, quota used up) before an upload is unpacked
    and stored: a refused upload costs no quota, so it must not cost the store's disk either (a team out of
    quota could fill it with valid uploads). :func:`enqueue` checks again, atomically. Also refuse (429) a team
    whose uploads were refused after unpacking ``upload.max_refused_per_hour`` times this hour: refusals are
    free, unpacking and checking up to ``max_unpacked_bytes`` is not."""
    refused = session.scalar(select(QuotaUse.used).where(QuotaUse.team_id == team.id, QuotaUse.track == _ALL_TRACKS,
                                                         QuotaUse.period == _refused_period(received_at))) or 0
    if refused >= cfg.upload.max_refused_per_hour:
        until = received_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        raise Refused(f"{refused} uploads of this team were refused this hour after unpacking (upload."
                      f"max_refused_per_hour); check the folder with `skybench validate` and upload again after "
                      f"{until.strftime('%H:%M')} UTC", 429)
    phase = _open_phase(session, cfg, track, received_at)
    other = session.scalar(select(EntryName.track).where(EntryName.team_id == team.id, EntryName.name == name))
    if other is not None and other != track:
        raise _name_taken(name, other)
    left = quota_left(session, cfg, team, track, received_at)
    if not left["today"]:
        raise _quota_used(cfg, track, "day", received_at.date().isoformat())
    if not left["phase"]:
        raise _quota_used(cfg, track, "phase", phase)


def stored_for(session: Session, sha256: str) -> bool:
    """Whether a queued (or later) submission uses the stored folder ``sha256``."""
    return session.scalar(select(Submission.id).where(Submission.sha256 == sha256).limit(1)) is not None


def waiting_elsewhere(session: Session, cfg: ChallengeConfig) -> dict[str, int]:
    """{track: submissions queued or running} of tracks ``challenge.yaml`` no longer names (no worker takes them)."""
    rows = session.execute(select(Submission.track, func.count()).where(
        Submission.state.in_(("queued", "running")), Submission.track.not_in(list(cfg.tracks)))
        .group_by(Submission.track))
    return {track: int(n) for track, n in rows}


def abandon(session: Session, sub_id: str) -> None:
    """Remove the row of an upload refused before it was queued (a no-op once it is queued); commits."""
    session.execute(delete(Submission).where(Submission.id == sub_id, Submission.state == "received"))
    session.commit()


def expire_received(session: Session, older_than: float = RECEIVED_STALE_SECONDS) -> int:
    """Fail the ``received`` rows a stopped server, or an upload whose database went away, left (older than
    ``older_than`` seconds: a live upload of another server sharing the database is younger); they were never
    acknowledged nor counted. Commits."""
    res = session.execute(update(Submission)
                          .where(Submission.state == "received",
                                 Submission.received_at < utcnow() - timedelta(seconds=older_than))
                          .values(state="failed", failed_at=utcnow(), counted=False,
                                  reason="the server stopped or lost its database while checking this upload; it "
                                         "was not queued and costs no quota: submit it again"))
    session.commit()
    return res.rowcount  # type: ignore[attr-defined]


def enqueue(session: Session, cfg: ChallengeConfig, team: Team, track: str, name: str, sha256: str,
            received_at: datetime | None = None, sub_id: str | None = None) -> Submission:
    """Queue a schema-valid, stored submission and reserve one unit of each quota; commits.

    ``sub_id``: the ``received`` row of this upload (:func:`receive`), moved to ``queued``; without it a new
    row is written. Raises :class:`Refused` when the track takes no submissions now or a quota is used up
    (nothing kept: the received row is removed)."""
    try:
        return _enqueue(session, cfg, team, track, name, sha256, received_at, sub_id)
    except Refused:
        if sub_id is not None:
            abandon(session, sub_id)
        raise


def _enqueue(session: Session, cfg: ChallengeConfig, team: Team, track: str, name: str, sha256: str,
             received_at: datetime | None, sub_id: str | None) -> Submission:
    now = utcnow()
    received_at = received_at or now
    phase = _open_phase(session, cfg, track, now)
    q = cfg.track(track).quota
    day, per_phase = _periods(phase, received_at)
    try:
        if (other := _claim_name(session, team.id, name, track)) != track:  # one entry, of one track
            raise _name_taken(name, other)
        if not _reserve(session, team.id, track, day, q.per_day):
            raise _quota_used(cfg, track, "day", received_at.date().isoformat())
        if not _reserve(session, team.id, track, per_phase, q.per_phase):
            raise _quota_used(cfg, track, "phase", phase)
        queued = dict(sha256=sha256, phase=phase, state="queued", queued_at=now, counted=True,
                      quota_day=day.removeprefix("day:"))
        if sub_id is None:
            sub = Submission(id=secrets.token_hex(16), team_id=team.id, track=track, name=name,
                             received_at=received_at, reason="", log="", metrics={}, attempt=0, **queued)
            session.add(sub)
        else:  # received -> queued, only from received (expire_received may have failed it meanwhile)
            res = session.execute(update(Submission).where(Submission.id == sub_id, Submission.team_id == team.id,
                                                           Submission.state == "received").values(**queued))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise Refused(f"upload {sub_id} is no longer waiting to be queued (the server restarted?); "
                              "submit it again", 409)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if sub_id is not None:
        moved = session.get(Submission, sub_id, populate_existing=True)
        assert moved is not None
        return moved
    return sub


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Queued and due (a job put back after the machine failed it waits until its ``queued_at``), or running
    with an expired lease; and no other version of its entry running (:func:`_version_running`) nor replacing it
    (:func:`_replaced`)."""
    return and_(or_(and_(Submission.state == "queued",
                         or_(Submission.queued_at.is_(None), Submission.queued_at <= now)),
                    and_(Submission.state == "running", Submission.lease_expires < now)),
                ~_version_running(Submission, now), ~_replaced(Submission))


_Job = type[Submission] | Submission  # the table (in a statement, correlated) or one row's values


def _other_version(other: type[Submission], job: _Job) -> ColumnElement[bool]:
    """``other`` is another submission of ``job``'s entry (team, track, name)."""
    return and_(other.team_id == job.team_id, other.track == job.track, other.name == job.name,
                other.id != job.id)


def _newer(other: type[Submission], job: _Job) -> ColumnElement[bool]:
    """``other`` was received after ``job`` (the same time: the larger id, so one of two is the newer)."""
    return or_(other.received_at > job.received_at, and_(other.received_at == job.received_at, other.id > job.id))


def _done(other: type[Submission]) -> ColumnElement[bool]:
    """``other`` was evaluated, its outcome the team's own: finished, or failed and counted (not the machine's
    failure given back, nor an upload that was never queued)."""
    return or_(other.state == "finished", and_(other.state == "failed", other.counted.is_(True)))


def _version_running(job: _Job, now: datetime) -> ColumnElement[bool]:
    """Another version of ``job``'s entry is running, its lease held."""
    other = aliased(Submission)
    return select(other.id).where(_other_version(other, job), other.state == "running",
                                  other.lease_expires >= now).exists()


def _replaced(job: _Job) -> ColumnElement[bool]:
    """A newer version of ``job``'s entry is done (:func:`_done`): the entry's version now, whatever ``job`` would
    give, so ``job`` is not run. A newer one that failed for the machine's fault does not replace it, nor does one
    that is queued or running (that one waits, or is waited for: :func:`_version_running`)."""
    other = aliased(Submission)
    return select(other.id).where(_other_version(other, job), _newer(other, job), _done(other)).exists()


def _newest(session: Session, job: Submission, running: bool = False) -> Submission | None:
    """The newest version of ``job``'s entry received after it that is done (:func:`_done`), or (``running``)
    running."""
    other = aliased(Submission)
    state = or_(_done(other), other.state == "running") if running else _done(other)
    return session.scalars(select(other).where(_other_version(other, job), _newer(other, job), state)
                           .order_by(other.received_at.desc(), other.id.desc()).limit(1)).first()


def _superseded_by(newer: Submission) -> str:
    return (f"superseded by a newer submission of this entry ({newer.id}, received at "
            f"{newer.received_at.strftime('%Y-%m-%d %H:%M:%S')} UTC)")


def _give_up_dead(session: Session, now: datetime, max_attempts: int) -> None:
    """Fail the jobs whose lease expired ``max_attempts`` times (each claim killed its worker)."""
    session.execute(update(Submission)
                    .where(Submission.state == "running", Submission.lease_expires < now,
                           Submission.attempt >= max_attempts)
                    .values(state="failed", failed_at=now, lease_owner=None, lease_expires=None,
                            reason=f"the evaluation stopped without a result {max_attempts} times (its worker "
                                   "died or lost its lease each time); not retried"))
    session.commit()


def _supersede_replaced(session: Session, now: datetime) -> None:
    """Mark ``superseded`` the jobs waiting to run that a newer version replaced (:func:`_replaced`): a queued one
    gives its quota unit back (never evaluated), one left running by a dead worker keeps it (as
    :func:`_give_up_dead`). Each move is conditional on the row as read, so concurrent claims move it once."""
    states = {"queued": Submission.state == "queued",
              "running": and_(Submission.state == "running", Submission.lease_expires < now)}
    for job in session.scalars(select(Submission).where(or_(*states.values()), _replaced(Submission))
                               .execution_options(populate_existing=True)).all():
        newer = _newest(session, job)
        if newer is None:  # gone meanwhile (a database restored from a backup?): the update below moves nothing
            continue
        waiting = job.state == "queued"
        why = _superseded_by(newer) + ("; not evaluated, and not counted in your quota" if waiting
                                       else "; not evaluated again")
        res = session.execute(update(Submission)
                              .where(Submission.id == job.id, states[job.state], _replaced(Submission))
                              .values(state="superseded", superseded_at=now, reason=why, lease_owner=None,
                                      lease_expires=None))
        if res.rowcount == 1 and waiting and job.counted:  # type: ignore[attr-defined]
            _release(session, job)
        session.commit()


def claim(session: Session, owner: str, lease_seconds: float, max_attempts: int = 3,
          now: datetime | None = None, tracks: Collection[str] | None = None) -> Submission | None:
    """Claim the next claimable job (:func:`_next_jobs`) for ``owner`` with a lease of ``lease_seconds``, of
    ``tracks`` only when given (those whose release the worker's machine holds); None when there is none."""
    now = now or utcnow()
    ok = _claimable(now) if tracks is None else and_(_claimable(now), Submission.track.in_(list(tracks)))
    _give_up_dead(session, now, max_attempts)
    _supersede_replaced(session, now)
    moved = dict(state="running", running_at=now, lease_owner=owner,
                 lease_expires=now + timedelta(seconds=lease_seconds))
    for _ in range(100):  # lost races only; each loop either claims or sees another worker's claim
        jobs = _next_jobs(session, now, ok)
        if not jobs:
            session.rollback()
            return None
        for cid, team_id, name in jobs:
            # The entry's row lock (PostgreSQL; SQLite's write lock is the database's): a concurrent claim of another
            # version of the entry waits for this one to commit, then its update sees this claim.
            session.execute(select(EntryName.team_id).where(EntryName.team_id == team_id, EntryName.name == name)
                            .with_for_update())
            res = session.execute(update(Submission).where(Submission.id == cid, ok)
                                  .values(attempt=Submission.attempt + 1, **moved))
            session.commit()
            if res.rowcount == 1:  # type: ignore[attr-defined]
                return session.get(Submission, cid, populate_existing=True)
    return None


def _next_jobs(session: Session, now: datetime, claimable: ColumnElement[bool], limit: int = 8
               ) -> list[tuple[str, int, str]]:
    """(id, team id, entry name) of the ``claimable`` jobs in the order teams take turns: a job's turn is its team's
    jobs running now plus its place among the team's waiting ones, then the oldest first. A team that queues many
    jobs at once takes one worker at a time while other teams wait, not all of them (round-robin, as a fair-share
    batch scheduler)."""
    running = (select(Submission.team_id, func.count().label("n"))
               .where(Submission.state == "running", Submission.lease_expires >= now)
               .group_by(Submission.team_id).subquery())
    place = func.row_number().over(partition_by=Submission.team_id, order_by=(Submission.queued_at, Submission.id))
    waiting = (select(Submission.id, Submission.team_id, Submission.name, Submission.queued_at,
                      (place + func.coalesce(running.c.n, 0)).label("turn"))
               .outerjoin(running, running.c.team_id == Submission.team_id)
               .where(claimable).subquery())
    rows = session.execute(select(waiting.c.id, waiting.c.team_id, waiting.c.name)
                           .order_by(waiting.c.turn, waiting.c.queued_at, waiting.c.id).limit(limit)).all()
    return [(r.id, r.team_id, r.name) for r in rows]


def _mine(sub_id: str, owner: str) -> ColumnElement[bool]:
    return and_(Submission.id == sub_id, Submission.state == "running", Submission.lease_owner == owner)


def heartbeat(session: Session, sub_id: str, owner: str, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease; False when the lease was lost (expired and claimed by another worker)."""
    res = session.execute(update(Submission).where(_mine(sub_id, owner))
                          .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds)))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def _text(value: str) -> str:
    """``value`` as a text column holds it: PostgreSQL's refuses NUL, which a sandbox's stderr tail may hold (the
    write raised, and the job waited for its lease to expire and another claim)."""
    return value.replace("\0", "\\x00")


def finish(session: Session, sub_id: str, owner: str, metrics: dict[str, float], log: str = "") -> bool:
    """Mark ``owner``'s job finished; False (nothing changed) when it no longer holds the lease. A NaN or infinite
    metric is kept as null: JSON (PostgreSQL's) has neither, and the job must still be recorded."""
    kept = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    res = session.execute(update(Submission).where(_mine(sub_id, owner))
                          .values(state="finished", finished_at=utcnow(), metrics=kept, log=_text(log), reason="",
                                  lease_owner=None, lease_expires=None))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def fail(session: Session, sub_id: str, owner: str, reason: str, log: str = "", *, counts: bool = True) -> bool:
    """Mark ``owner``'s job failed with a one-line ``reason``; ``counts=False`` gives its quota unit back."""
    sub = session.scalars(select(Submission).where(_mine(sub_id, owner)).with_for_update()).first()
    if sub is None:
        session.rollback()
        return False
    sub.state, sub.failed_at, sub.reason, sub.log = "failed", utcnow(), _text(reason), _text(log)
    sub.lease_owner = sub.lease_expires = None
    if not counts and sub.counted:
        _release(session, sub)
    session.commit()
    return True


def requeue(session: Session, sub_id: str, owner: str, reason: str, delay_seconds: float = 0) -> bool:
    """Put ``owner``'s job back in the queue (an infrastructure failure: the machine's, not the submission's), due
    in ``delay_seconds``."""
    res = session.execute(update(Submission).where(_mine(sub_id, owner))
                          .values(state="queued", queued_at=utcnow() + timedelta(seconds=delay_seconds),
                                  reason=_text(reason), lease_owner=None, lease_expires=None))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def current(session: Session, sub_id: str, owner: str) -> str:
    """Why job ``sub_id`` must not be placed, recorded or published now: ``owner`` no longer holds it, or a newer
    version of its entry is running or done (taken while this job's lease had run out: workers' clocks apart by
    more than a lease, say); "" when it may. Asked by the worker before it places the job's folder and by
    ``evaluate`` right before it writes the record, holding the records folder's lock: a newer version claimed
    after that writes its record after this one."""
    job = session.scalars(select(Submission).where(Submission.id == sub_id)
                          .execution_options(populate_existing=True)).first()
    if job is None or job.state != "running" or job.lease_owner != owner:
        return (f"this worker no longer holds job {sub_id} (its lease ran out and another worker took it over, or "
                f"it ended: {job.state if job is not None else 'gone'}); its outcome is that worker's")
    newer = _newest(session, job, running=True)
    return f"{_superseded_by(newer)}; this evaluation of it is not recorded" if newer is not None else ""


def supersede(session: Session, sub_id: str, owner: str, reason: str) -> bool:
    """Mark ``owner``'s job superseded with ``reason`` (from :func:`current`); it keeps its quota unit (a worker
    took it); False (nothing changed) when ``owner`` no longer holds it."""
    res = session.execute(update(Submission).where(_mine(sub_id, owner))
                          .values(state="superseded", superseded_at=utcnow(), reason=_text(reason), lease_owner=None,
                                  lease_expires=None))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]
