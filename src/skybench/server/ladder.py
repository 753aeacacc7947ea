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
from sqlalchemy.orm import Session

from skybench.server.config import ChallengeConfig
from skybench.server.db import Submission, Team

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


def _eta(cfg: ChallengeConfig, track: str, team: str, sub: Submission, leader: Submission) -> float | None:
    if cfg.ladder_step is not None:
        return cfg.ladder_step
    try:
        return _paired_sd(cfg, track, team, sub, leader)
    except (OSError, ValueError, LookupError) as exc:  # predictions or the release missing: no step is taken
        log.warning("ladder of %s on %s: submission %s not compared with its leader: %s", team, track, sub.id, exc)
        return None


_CLIMBS: dict[str, tuple[tuple[object, ...], dict[str, Rung]]] = {}  # per track: (what it depends on, rungs)
_LOCKS: dict[str, threading.Lock] = {}


def climb(session: Session, cfg: ChallengeConfig, track: str) -> dict[str, Rung]:
    """{submission id: its rung} for every finished open-phase submission of ``track``, every team; computed again
    only after a job finished or failed (a team's list of submissions asks once per submission)."""
    from skybench.server.phases import results_version
    from skybench.tracking import tracking_uri

    key = (str(session.get_bind().engine.url), tracking_uri(), track, cfg.ladder_step, cfg.public_score_digits,
           results_version(session))
    with _LOCKS.setdefault(track, threading.Lock()):  # concurrent requests wait for one computation
        hit = _CLIMBS.get(track)
        if hit is not None and hit[0] == key:
            return hit[1]
        rungs = _climb(session, cfg, track)
        _CLIMBS[track] = (key, rungs)
        return rungs


def _climb(session: Session, cfg: ChallengeConfig, track: str) -> dict[str, Rung]:
    higher = _open_track(track).metrics.higher_is_better
    key = score_key(track)
    digits = cfg.public_score_digits
    rows = session.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id)
                           .where(Submission.track == track, Submission.state == "finished",
                                  Submission.phase == "open")
                           .order_by(Submission.finished_at, Submission.id)).all()
    leaders: dict[str, tuple[Submission, float]] = {}
    out: dict[str, Rung] = {}
    for sub, team in rows:
        value, best = _value(sub, key), leaders.get(team)
        up = value is not None and (best is None or (
            (eta := _eta(cfg, track, team, sub, best[0])) is not None
            and (value - best[1] if higher else best[1] - value) > eta))
        if up:
            assert value is not None
            leaders[team] = best = (sub, value)
        shown = None if best is None else (round(best[1], digits) if digits is not None else best[1])
        out[sub.id] = Rung(team=team, leader=up, score=shown, leader_id=None if best is None else best[0].id)
    return out


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
    t = _open_track(track)
    rungs = climb(session, cfg, track)
    now = {r.leader_id for r in {r.team: r for r in rungs.values()}.values() if r.leader_id is not None}
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
    return pd.concat([ladder, unranked], ignore_index=True) if len(unranked) else ladder.reset_index(drop=True)
