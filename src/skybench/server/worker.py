"""``skybench worker``: claim a job, copy its folder where ``dvc repro`` finds it, evaluate it, record the outcome.

The evaluation is the project's own sandboxed :func:`skybench.harness.evaluate.evaluate` for that one folder,
published to MLflow as today; its idempotency (the folder's sha256 in the records and in MLflow) means a job
re-run after its worker died is not published twice. While it runs, a thread renews the job's lease."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from skybench.server import queue
from skybench.server.config import ChallengeConfig
from skybench.server.db import Submission, Team
from skybench.server.storage import Store

if TYPE_CHECKING:
    from skybench.tracks import Track

log = logging.getLogger("skybench.worker")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def project_folder(cfg: ChallengeConfig, team: str, name: str) -> Path:
    from skybench.tracks import project_root

    return Path(cfg.project_root or project_root()) / "submissions" / team / name


def place(src: Path, dest: Path) -> Path:
    """Copy the stored folder ``src`` to ``dest`` (``submissions/<team>/<name>/``), replacing what was there.

    Staged in ``<project>/.skybench-staging/`` (outside the folders ``dvc repro`` scans, on the same
    filesystem), then renamed into place, so a scan never sees a half-copied folder. Staged names start with
    their process (pid, host): what a worker killed mid-copy left there is removed by the next place on its host."""
    from skybench.server.storage import _owner, _owner_dead

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parents[2] / ".skybench-staging"
    staging.mkdir(exist_ok=True)
    for left in staging.iterdir():
        if _owner_dead(left.name):
            shutil.rmtree(left, ignore_errors=True)
    tmp = staging / f"{_owner()}.{dest.name}.{secrets.token_hex(4)}.tmp"
    try:
        shutil.copytree(src, tmp, copy_function=shutil.copyfile)
        for p in [tmp, *tmp.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    except BaseException:  # a full disk: no partial copy left (each retry would add one, keeping it full)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = staging / f"{_owner()}.{dest.name}.{secrets.token_hex(4)}.old"
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


class _Heartbeat(threading.Thread):
    def __init__(self, beat: Callable[[], bool], every: float) -> None:
        super().__init__(daemon=True, name="skybench-lease")
        self.beat, self.every, self.stopped, self.lost = beat, every, threading.Event(), False

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                if not self.beat():
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next beat
                log.exception("heartbeat failed")


def _previous_metrics(sessions: sessionmaker, sub: Submission) -> dict[str, float] | None:
    with sessions() as s:
        prev = s.scalars(select(Submission).where(
            Submission.team_id == sub.team_id, Submission.track == sub.track, Submission.name == sub.name,
            Submission.sha256 == sub.sha256, Submission.state == "finished").order_by(Submission.finished_at.desc())
        ).first()
        return dict(prev.metrics) if prev is not None else None


def _reused_metrics(sessions: sessionmaker, sub: Submission, record: Path | None) -> dict[str, float]:
    """The metrics of the result reused for ``sub`` (the same bytes of the same entry, evaluated before on this
    release): its organiser's record's (every metric of that very evaluation); else (no record on this worker's
    disk: MLflow had it) the latest finished job's of the same bytes, which may have run on another release; else
    the participant record's."""
    from skybench.harness.record import RECORD, RecordError, read_record
    from skybench.harness.visibility import private_dir

    try:
        rec = read_record(private_dir(record) / RECORD) if record is not None else None
    except RecordError:
        rec = None
    if rec is not None and rec.submission_sha256 == sub.sha256 and rec.status == "FINISHED":
        return dict(rec.metrics)
    metrics = _previous_metrics(sessions, sub)
    if metrics is None and record is not None and (record / "metrics.json").is_file():
        metrics = json.loads((record / "metrics.json").read_text())
    return metrics or {}


def _reused_failure(sessions: sessionmaker, sub: Submission, record: Path | None) -> str:
    """The reason when the result reused for ``sub`` (the same bytes of the same entry) is a failure, "" when
    not: its record's, else (no record on this worker's disk) the latest earlier job of the same bytes'."""
    from skybench.harness.record import RECORD, RecordError, read_record

    try:
        rec = read_record(record / RECORD) if record is not None else None
    except RecordError:
        rec = None
    if rec is not None:
        return (rec.reason or "failed without a reason") if rec.status == "FAILED" else ""
    with sessions() as s:
        prev = s.scalars(select(Submission).where(
            Submission.team_id == sub.team_id, Submission.track == sub.track, Submission.name == sub.name,
            Submission.sha256 == sub.sha256, Submission.id != sub.id, Submission.counted.is_(True),  # not given up
            Submission.state.in_(("finished", "failed"))).order_by(Submission.received_at.desc())).first()
        return (prev.reason or "failed without a reason") if prev is not None and prev.state == "failed" else ""


def run_one(cfg: ChallengeConfig, sessions: sessionmaker, owner: str, *, executor: str = "local",
            release: Path | None = None, out: Path | None = None, publish: bool = True,
            tracks: Collection[str] | None = None) -> Submission | None:
    """Claim and evaluate one job (of ``tracks`` only when given); return it as recorded (None when the queue had
    none)."""
    with sessions() as s:
        sub = queue.claim(s, owner, cfg.lease_seconds, cfg.max_attempts, tracks=tracks)
    if sub is None:
        return None
    return run_claimed(cfg, sessions, sub, owner, executor=executor, release=release, out=out, publish=publish)


def run_claimed(cfg: ChallengeConfig, sessions: sessionmaker, sub: Submission, owner: str, *,
                executor: str = "local", release: Path | None = None, out: Path | None = None,
                publish: bool = True) -> Submission | None:
    """Evaluate the job ``sub`` that ``owner`` claimed (:func:`queue.claim`); return it as recorded. Nothing is
    placed, recorded or published once :func:`queue.current` says no (a newer version of the entry running or
    done, or the job taken over by another worker after this one's lease ran out)."""
    from skybench.harness.evaluate import INFRASTRUCTURE, Outcome, evaluate, one_line

    with sessions() as s:
        team = s.get(Team, sub.team_id)
        assert team is not None
        team_name = team.name
    log.info("claimed %s (%s/%s on %s, attempt %d)", sub.id, team_name, sub.name, sub.track, sub.attempt)

    def beat() -> bool:
        with sessions() as s:
            return queue.heartbeat(s, sub.id, owner, cfg.lease_seconds)

    def current(_folder: Path) -> str:
        try:
            with sessions() as s:
                return queue.current(s, sub.id, owner)
        except SQLAlchemyError as exc:  # the machine's failure (the database away): the job is retried
            raise OSError(f"cannot ask the challenge database whether job {sub.id} is still current: "
                          f"{one_line(exc)}") from exc

    hb = _Heartbeat(beat, max(1.0, cfg.lease_seconds / 3))
    hb.start()
    try:
        assert sub.sha256 is not None  # only a queued (validated) submission is claimed
        stored = Store(cfg.storage, cfg.upload).object_dir(sub.sha256)
        if why := current(stored):
            outcome: Outcome | None = Outcome(stored, team_name, sub.name, "WITHHELD", why)
        else:
            # Where the organiser's `dvc repro` finds it; its record there is this one (same identity and sha256).
            place(stored, project_folder(cfg, team_name, sub.name))
            check_hidden_labels(cfg, sub.track, release)
            # Evaluated from the immutable, content-addressed copy: a newer upload of the same entry replacing
            # the project copy meanwhile cannot change what this job runs.
            outcome = evaluate([stored], sub.track, release, out=out, publish=publish, executor=executor,
                               identities={stored: (team_name, sub.name)}, received={stored: sub.received_at},
                               current=current)[0]
    except Exception as exc:  # noqa: BLE001 - the machine's fault (no release, a full disk...): retried
        outcome = None
        why = f"infrastructure failure, not the submission's: {one_line(exc)}"
    finally:
        hb.stopped.set()
        hb.join()
    if outcome is not None and outcome.unpublished:  # the board is MLflow: not there, not done; the retry
        why = (f"infrastructure failure, not the submission's: its record was not logged to MLflow "  # reuses
               f"({outcome.unpublished})")  # the record and logs it
        outcome = None
    with sessions() as s:
        if outcome is not None and outcome.status == "WITHHELD":
            log.info("%s: not recorded: %s", sub.id, outcome.reason)
            queue.supersede(s, sub.id, owner, outcome.reason)  # nothing when another worker holds it now
        elif outcome is not None and outcome.status == "FINISHED":
            queue.finish(s, sub.id, owner, outcome.metrics, log=outcome.log)
        elif outcome is not None and outcome.status == "SKIPPED" and (why := _reused_failure(sessions, sub,
                                                                                             outcome.record)):
            queue.fail(s, sub.id, owner, why, counts=True)  # the same bytes failed before: they fail again
        elif outcome is not None and outcome.status == "SKIPPED":
            queue.finish(s, sub.id, owner, _reused_metrics(sessions, sub, outcome.record))
        elif outcome is not None and outcome.failure_kind != INFRASTRUCTURE:
            queue.fail(s, sub.id, owner, outcome.reason or "failed without a reason", log=outcome.log, counts=True)
        else:
            why = outcome.reason if outcome is not None else why
            if sub.attempt >= cfg.max_attempts:
                queue.fail(s, sub.id, owner, f"{why} (after {sub.attempt} attempts; not counted in your quota)",
                           counts=False)
            else:
                delay = cfg.retry_seconds * 2 ** (sub.attempt - 1)
                queue.requeue(s, sub.id, owner, f"{why} (attempt {sub.attempt}; tried again in {delay:g} s)", delay)
        return s.get(Submission, sub.id, populate_existing=True)


def check_hidden_labels(cfg: ChallengeConfig, track: str, release: Path | None = None) -> None:
    """Raise ValueError when the release a job of ``track`` would be scored on (``release``, default
    ``releases/<track>``) was made with the public test-set key (the ``demo`` profile, :mod:`skybench.testkey`):
    its published manifest names the profile and seed, from which anyone makes the same test set, labels and all.
    A challenge needs a private key (``skybench simulate --profile challenge``); ``public_test_sets: true`` in
    challenge.yaml allows it for a trial. A release without a test key (real data imported from a public archive,
    whose labels are public there) passes."""
    from skybench.release.verify import read_manifest
    from skybench.tracks import default_release, load_track

    path = Path(release) if release is not None else default_release(load_track(track))
    manifest = read_manifest(path)
    if (manifest.get("test_key") or {}).get("kind") == "public" and not cfg.public_test_sets:
        raise ValueError(f"the release of {track} was made with the public test-set key (profile "
                         f"{manifest.get('profile')!r}): anyone can make its test labels again from its published "
                         "seed; simulate it with a private key (`skybench simulate --profile challenge`), or set "
                         f"`public_test_sets: true` in challenge.yaml for a trial run ({path})")


def tick(cfg: ChallengeConfig, sessions: sessionmaker) -> None:
    """Snapshot the phases that ended by date (each once, whichever server or worker comes first)."""
    from skybench.server import phases

    try:
        with sessions() as s:
            phases.catch_up_all(s, cfg)
    except Exception:  # noqa: BLE001 - the database or MLflow away: the next tick tries again
        log.exception("phase tick failed")


def runnable_tracks(cfg: ChallengeConfig) -> tuple[list[str], dict[str, str]]:
    """(the challenge's tracks whose release this machine holds, {track: why not} for the others). A worker claims
    jobs of the first only: on a host without a track's release a job would fail and wait to be retried, while a
    worker that has it could run it now."""
    from skybench.harness.evaluate import one_line
    from skybench.release.verify import read_manifest
    from skybench.tracks import default_release, load_track

    ok, missing = [], {}
    for name in cfg.tracks:
        try:
            track = load_track(name)
            release = default_release(track)
            if read_manifest(release).get("track") != name:
                raise ValueError(f"{release} is not a release of {name}")
            check_hidden_labels(cfg, name, release)
            verified_release(release, track)
            ok.append(name)
        except Exception as exc:  # noqa: BLE001 - any reason: not runnable here
            missing[name] = one_line(exc)
    return ok, missing


_VERIFIED: dict[Path, tuple[tuple[object, ...], str]] = {}  # release -> (what its check read, its problem or "")


def verified_release(release: Path, track: Track) -> None:
    """Raise ReleaseError unless ``release`` passes what every evaluation checks first
    (:func:`skybench.harness.evaluate.check_release`: its test split re-hashed against its manifest). Checked
    again only when a file of it changed (path, size, mtime): a worker's tick does not re-hash the release, and a
    corrupt or truncated one is not runnable here, instead of failing every job of its track ``max_attempts``
    times."""
    from skybench.harness.evaluate import check_release
    from skybench.release import ReleaseError, layout

    root = Path(release).resolve()
    files = [layout.manifest_path(root), *sorted(p for prefix in layout.split_prefixes("test")
                                                 for p in (root / prefix).rglob("*") if p.is_file())]
    seen: tuple[object, ...] = tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns, st.st_ino) for p in files)
    if (kept := _VERIFIED.get(root)) is None or kept[0] != seen:
        try:
            check_release(release, track)
            problem = ""
        except ReleaseError as exc:
            problem = str(exc)
        kept = _VERIFIED[root] = (seen, problem)
    if kept[1]:
        raise ReleaseError(kept[1])


def run(cfg: ChallengeConfig, sessions: sessionmaker, *, poll_seconds: float = 5.0, executor: str = "local",
        once: bool = False, tracks: Collection[str] | None = None) -> None:
    """The worker loop: evaluate jobs until interrupted (``once``: until the queue is empty). ``tracks``: the
    tracks it claims jobs of; default those whose release this machine holds, looked at again every tick."""
    owner = worker_id()
    log.info("worker %s polling every %.0f s", owner, poll_seconds)
    last_tick, mine, told = -math.inf, list(tracks or ()), ""
    while True:
        if time.monotonic() - last_tick >= cfg.tick_seconds:
            last_tick = time.monotonic()
            tick(cfg, sessions)
            if tracks is None:
                mine, missing = runnable_tracks(cfg)
                if (now := f"{mine}{missing}") != told:  # said once, and again when it changes
                    told = now
                    log.info("worker %s takes jobs of: %s", owner, ", ".join(mine) or "no track")
                    for name, why in missing.items():
                        log.warning("no release of %s on this machine (its jobs wait for a worker that has one): "
                                    "%s", name, why)
        try:
            done = run_one(cfg, sessions, owner, executor=executor, tracks=mine)
        except Exception:  # noqa: BLE001 - the database is away, say: its job (if any) is re-run after its lease
            log.exception("worker %s: could not claim or record a job; trying again in %.0f s", owner, poll_seconds)
            if once:
                raise
            time.sleep(poll_seconds)
            continue
        if done is not None:
            log.info("%s: %s %s", done.id, done.state, done.reason)
            continue
        if once:
            return
        time.sleep(poll_seconds)
