"""The Ladder (Blum & Hardt 2015, ICML, arXiv:1502.04585): what teams learn of their scores while a track is
open, when ``challenge.yaml`` says ``open_board: ladder``.

Each team has one ladder per track. Its submissions that finished in the open phase are taken in the order they
finished. The first with a primary score becomes the team's leader; a later one replaces the leader only when its
public primary score is better by more than ``eta``:

* ``ladder_step`` when set (the fixed-step Ladder);
* else the standard deviation of the paired bootstrap difference between the two, on the public part, with the
  leaderboard's own resamples (:func:`skybench.tracking.ranks.primary_resamples`). This is the parameter-free
  Ladder's one-sided paired test (``mrtzh/Ladder.jl``: improve by more than s/sqrt(n)), for primary metrics such
  as AUROC that are not a mean of per-object losses.

A team sees, of each submission, only whether it became the leader and the ladder score after it (the leader's
public primary score, rounded to ``public_score_digits``); the open board shows each team's leader with that score
and no other metric. A submission that is not a real improvement so tells its team one bit, whatever it encodes
in its predictions (Whitehill 2017's attack reads labels off the digits of a score)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from skybench.server.config import ChallengeConfig
from skybench.server.db import LadderRung, Submission, Team

log = logging.getLogger("skybench.server")


@dataclass(frozen=True)
class Rung:
    """A submission's place on its team's ladder."""

    team: str
    leader: bool  # it became the team's leader
    score: float | None  # the team's ladder score after it (None: no leader yet)
    leader_id: str | None  # the leader after it


@functools.lru_cache(maxsize=64)
def _open_track(name: str) -> Any:  # loaded once per process (~50 ms: a board or a poll must not pay it each step)
    from skybench.tracks import load_track

    t = load_track(name)
    return t.model_copy(update={"evaluation": t.evaluation.model_copy(update={"phase": "open"})})


def score_key(track: str) -> str:
    """The metric the ladder climbs: the primary metric of the public part (of the whole set without a split)."""
    from skybench.tracking.leaderboard import metric_prefix

    t = _open_track(track)
    return metric_prefix(t) + t.metrics.primary


def _value(sub: Submission, key: str) -> float | None:
    v = (sub.metrics or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _run_id(track: str, team: str, name: str, sha256: str, release_sha256: str) -> str:
    """The organiser evaluation run of one submission on this release (its saved predictions)."""
    from skybench.tracking import find_evaluation, organiser_experiment

    run = find_evaluation(track, sha256, release_sha256, include_failed=False, team=team, name=name,
                          experiment=organiser_experiment(track))
    if run is None:
        raise LookupError(f"no organiser evaluation run of {team}/{name} ({sha256[:12]}) on release "
                          f"{release_sha256[:12]}")
    return str(run.info.run_id)


@functools.lru_cache(maxsize=8)
def _hidden(release: str, digest: str) -> Any:
    from skybench.release.reader import open_release

    del digest  # part of the key only: a re-made release is read again
    return open_release(Path(release)).hidden("test")


@functools.lru_cache(maxsize=4096)
def _resamples(store: str, release_sha256: str, digest: str, track: str, team: str, name: str,
               sha256: str) -> np.ndarray:
    """One submission's public primary score on each of the leaderboard's bootstrap resamples (the same resampled
    objects for every submission: paired), from its saved predictions; computed once and kept (about 8 KB) under
    ``store``/ladder/, so a restarted server reads it back instead of computing it again. ``digest``: of the
    release (``release_sha256``) and the track's definition (a re-made release or a new split is computed again)."""
    from skybench.tracking import client, ranks
    from skybench.tracks import default_release

    # raw little-endian float64 (np.load would parse a header with ast, which CPython 3.11.7 cannot do in two
    # threads at once: "AST constructor recursion depth mismatch")
    path = Path(store) / "ladder" / track / f"{digest[:32]}-{team}-{name}-{sha256}.f64"  # slugs and hex only
    t = _open_track(track)
    with contextlib.suppress(OSError, ValueError):
        kept = np.frombuffer(path.read_bytes(), dtype="<f8")
        if kept.shape == (t.evaluation.rank_resamples,):
            return kept
    hidden = _hidden(str(default_release(t)), digest)
    predictions = {f"{team}/{name}": ranks.load_predictions(client(), _run_id(track, team, name, sha256,
                                                                                   release_sha256))}
    values = ranks.primary_resamples(t, hidden, predictions)[1][0]
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(np.asarray(values, dtype="<f8").tobytes())
        os.replace(tmp, path)  # whole or absent: a reader never sees half a file
    except OSError:  # a read-only or full store: computed again next time
        tmp.unlink(missing_ok=True)
    return values


def _paired_sd(cfg: ChallengeConfig, track: str, team: str, a: Submission, b: Submission) -> float:
    """Standard deviation over the paired bootstrap resamples of submission ``a``'s public primary score minus
    ``b``'s (both of ``team``)."""
    from skybench.release import release_digest
    from skybench.tracks import default_release

    t = _open_track(track)
    release = release_digest(default_release(t))
    key = (str(cfg.storage), release, hashlib.sha256(f"{release}{t.model_dump_json()}".encode()).hexdigest(), track,
           team)
    d = _resamples(*key, a.name, a.sha256 or "") - _resamples(*key, b.name, b.sha256 or "")
    d = d[np.isfinite(d)]  # a resample with one class has no AUROC
    if d.size < 2:
        raise ValueError(f"{track}: too few resamples with a defined primary metric to compare")
    return float(np.std(d, ddof=1))


class _Later(Exception):
    """A comparison that failed for a reason that may pass (a store or tracking read): decided at a later climb."""


def _eta(cfg: ChallengeConfig, track: str, team: str, sub: Submission, leader: Submission) -> float | None:
    if cfg.ladder_step is not None:
        return cfg.ladder_step
    from mlflow.exceptions import MlflowException

    try:
        return _paired_sd(cfg, track, team, sub, leader)
    except (OSError, MlflowException) as exc:  # the release's disk, the tracking server: may be back soon
        raise _Later(str(exc)) from exc
    except (ValueError, LookupError) as exc:  # no saved predictions, a metric undefined: no step is taken
        log.warning("ladder of %s on %s: submission %s not compared with its leader: %s", team, track, sub.id, exc)
        return None


_CLIMBS: dict[str, tuple[tuple[object, ...], dict[str, Rung]]] = {}  # per track: (what it depends on, rungs)
_LOCKS: dict[str, threading.Lock] = {}


def climb(session: Session, cfg: ChallengeConfig, track: str) -> dict[str, Rung]:
    """{submission id: its rung} for every decided finished open-phase submission of ``track``, every team. Each
    verdict is decided once and kept (:class:`~skybench.server.db.LadderRung`); the new ones are decided after a
    job finished or failed, or at the next call while one of a team's comparisons waits (:class:`_Later`)."""
    from skybench.server.phases import results_version
    from skybench.tracking import tracking_uri

    key = (str(session.get_bind().engine.url), tracking_uri(), track, cfg.ladder_step, cfg.public_score_digits,
           results_version(session))
    lock = _LOCKS.setdefault(track, threading.Lock())
    if not lock.acquire(blocking=False):  # new verdicts being decided (the tick): the kept ones, without waiting
        return _climb(session, cfg, track, decide=False)[0]
    try:
        hit = _CLIMBS.get(track)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            rungs, complete = _climb(session, cfg, track)
        except IntegrityError:  # another server process decided some of them first: theirs are kept
            session.rollback()
            rungs, complete = _climb(session, cfg, track)
        if complete:
            _CLIMBS[track] = (key, rungs)
        return rungs
    finally:
        lock.release()


def _climb(session: Session, cfg: ChallengeConfig, track: str, decide: bool = True
           ) -> tuple[dict[str, Rung], bool]:
    """The kept verdicts, then (``decide``) the new ones decided in finishing order and kept; and whether none had
    to wait."""
    higher = _open_track(track).metrics.higher_is_better
    key = score_key(track)
    # The undecided jobs first, then the kept verdicts: each read is its own snapshot (SQLite outside a write,
    # PostgreSQL's read committed), and a verdict another server process keeps in between must be among those
    # read here (its job is then skipped below, or its insert conflicts and the climb starts again), never
    # missing from both: a later job of that team would be judged against the leader before it.
    rows = session.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id)
                           .where(Submission.track == track, Submission.state == "finished",
                                  Submission.phase == "open", Submission.id.not_in(select(LadderRung.submission_id)))
                           .order_by(Submission.finished_at, Submission.id)).all() if decide else []
    decided = session.execute(select(LadderRung, Team.name).join(Submission, Submission.id == LadderRung.submission_id)
                              .join(Team, Team.id == Submission.team_id).where(LadderRung.track == track)
                              .order_by(LadderRung.id)).all()
    leaders: dict[str, tuple[str, float]] = {}  # team: (its leader's id, that leader's score)
    out: dict[str, Rung] = {}
    quantum = cfg.ladder_step if cfg.ladder_step is not None else _one_over_n(track)
    for r, team in decided:
        if r.leader_id is not None and r.score is not None:
            leaders[team] = (r.leader_id, r.score)
        out[r.submission_id] = Rung(team, r.leader, _shown(cfg, quantum, r.score), r.leader_id)
    if not decide:
        return out, False
    waiting: set[str] = set()  # teams whose next verdict must wait: their later ones wait too (order matters)
    with session.no_autoflush:  # the verdicts are written at the commit: no write lock held while comparing
        for sub, team in rows:
            if team in waiting or sub.id in out:  # waiting behind an earlier one; decided meanwhile elsewhere
                continue
            value, best = _value(sub, key), leaders.get(team)
            try:
                up = value is not None and (best is None or (
                    (eta := _eta(cfg, track, team, sub, _submission(session, best[0]))) is not None
                    and (value - best[1] if higher else best[1] - value) > eta))
            except _Later as exc:
                log.warning("ladder of %s on %s: submission %s decided later: %s", team, track, sub.id, exc)
                waiting.add(team)
                continue
            if up:
                assert value is not None
                leaders[team] = best = (sub.id, value)
            session.add(LadderRung(submission_id=sub.id, track=track, leader=up, leader_id=best and best[0],
                                   score=best and best[1]))
            out[sub.id] = Rung(team, up, _shown(cfg, quantum, best and best[1]), best and best[0])
    if rows:
        session.commit()
    return out, not waiting and quantum is not None  # scores not shown for want of n: shown once it is read


def _submission(session: Session, sub_id: str) -> Submission:
    sub = session.get(Submission, sub_id)
    if sub is None:
        raise LookupError(f"no submission {sub_id}")
    return sub


def _shown(cfg: ChallengeConfig, quantum: float | None, score: float | None) -> float | None:
    """A ladder score as teams see it: a multiple of ``quantum``, the step (Blum & Hardt 2015, Algorithm 1:
    [R]_eta) with ``ladder_step``, else 1/n for the public part's n objects (Algorithm 2: [R]_{1/n}); then rounded
    to ``public_score_digits``. None when ``quantum`` is unknown (no step, and the release that gives n cannot
    be read here: a server host without ``releases/TRACK``, its disk away): a raw score would show every digit."""
    if score is None or not quantum:
        return None
    score = round(score / quantum) * quantum
    return round(score, cfg.open_digits)


def _one_over_n(track: str) -> float | None:
    """1 / the number of objects in the public part of the release ``track`` serves (None without a release)."""
    from skybench.release import release_digest
    from skybench.tracks import default_release

    try:
        release = default_release(_open_track(track))
        return _one_over_n_of(track, str(release), release_digest(release))
    except (OSError, ValueError, LookupError, ZeroDivisionError):
        return None


@functools.lru_cache(maxsize=64)
def _one_over_n_of(track: str, release: str, digest: str) -> float:
    from skybench.tracking import ranks

    return 1.0 / len(ranks.part_ids(_open_track(track), _hidden(release, digest)))


def leaders(session: Session, cfg: ChallengeConfig, track: str) -> set[str]:
    """Ids of each team's leader now (its last rung's)."""
    return {r.leader_id for r in {r.team: r for r in climb(session, cfg, track).values()}.values()
            if r.leader_id is not None}


def shown(session: Session, cfg: ChallengeConfig, sub: Submission, memo: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """What a team sees of one submission's scores while the track is open: the ladder score after it and
    whether it became the leader (empty for a submission not on the ladder: another phase, not finished).
    ``memo``: one request's rungs per track (a list of N submissions climbs once: each climb reads the whole
    submissions table to tell whether a job ended)."""
    memo = {} if memo is None else memo
    rungs = memo.get(f"ladder:{sub.track}")
    if rungs is None:
        rungs = memo[f"ladder:{sub.track}"] = climb(session, cfg, sub.track)
    rung = rungs.get(sub.id)
    if rung is None or rung.score is None:
        return {}
    return {score_key(sub.track): rung.score, "ladder": "new best" if rung.leader else "kept the previous best"}


def board(session: Session, cfg: ChallengeConfig, track: str, public: pd.DataFrame) -> pd.DataFrame:
    """The open board: one row per team, its leader with the ladder score only (columns as ``public``, the
    leaderboard read from MLflow, whose unranked rows, failures, are kept)."""
    from skybench.tracking.leaderboard import _metric_columns

    t = _open_track(track)
    rungs = climb(session, cfg, track)
    now = {r.leader_id for r in {r.team: r for r in rungs.values()}.values()
           if r.leader_id is not None and r.score is not None}  # a score that cannot be shown: not ranked
    subs = session.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id)
                           .where(Submission.id.in_(now))).all() if now else []
    rows = []
    for sub, team in subs:
        row: dict[str, Any] = {c: pd.NA for c in public.columns}
        row.update(team=team, name=sub.name, status="FINISHED", format="", device="", reason="", group="",
                   submitted=sub.received_at.isoformat(timespec="milliseconds"))
        row[t.metrics.primary] = rungs[sub.id].score
        rows.append(row)
    ladder = pd.DataFrame(rows, columns=public.columns)
    ladder = ladder.sort_values([t.metrics.primary, "submitted", "team"], kind="stable",
                                ascending=[not t.metrics.higher_is_better, True, True])
    ladder["rank"] = pd.array(range(1, len(ladder) + 1), dtype="Int64")
    unranked = public[public["rank"].isna()]
    unranked = unranked[~unranked["team"].isin(ladder["team"])]  # a team with a leader shows only its leader
    # listed like a failure: a finished run without a public primary keeps no number the Ladder hides
    unranked = unranked.assign(**{c: pd.NA for c in _metric_columns(t) if c in unranked.columns})
    return pd.concat([ladder, unranked], ignore_index=True) if len(unranked) else ladder.reset_index(drop=True)
