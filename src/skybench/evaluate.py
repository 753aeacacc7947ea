"""The ``evaluate`` stage: run submissions in the sandbox on a release's public test inputs and score them.

For each submission it writes an evaluation record, ``OUT/<team>__<name>/`` (``evaluation.json``,
``metrics.json`` and the aggregate plots a participant may see), the organiser's full record in
``results/<track>/private/<team>__<name>/`` (``OUT-private/`` for another OUT): predictions, per-object
tables, full ROC, truth plots, every metric (see :mod:`skybench.visibility`); then it publishes both to MLflow
(``log.py``).
Records stay on disk, so an unreachable tracking server loses nothing: ``skybench log OUT`` publishes
them later. A bad submission becomes a FAILED record with a one-line reason; the others carry on.

The sandboxed inference runs on an executor (``--executor local|ray``, :mod:`skybench.executors`); scoring,
records and logging always run here, so scores do not depend on the executor."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import __version__
from .mixing import MixedInputs, mix_inputs
from .release import ReleaseError, read_manifest, release_digest, verify_release
from .score import score, score_real
from .submission import (
    SPEC_FILE,
    PredictResult,
    Submission,
    SubmissionError,
    clip,
    folder_sha256,
    load_submission,
    read_spec_file,
)
from .tracking import find_evaluation, git_commit
from .tracks import Track, load_track, project_root
from .visibility import make_private_dir, make_private_root, participant_view, private_dir, write_participant_view

if TYPE_CHECKING:
    from .executors import Executor, Job

RECORD = "evaluation.json"


@dataclass
class Outcome:
    folder: Path
    team: str
    name: str
    status: str  # FINISHED, FAILED or SKIPPED
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    record: Path | None = None
    unpublished: str = ""  # why the record could not be logged to MLflow ("" when logged or not asked to)


def default_release(track: Track) -> Path:
    return project_root() / "releases" / track.name


def default_out(track: Track) -> Path:
    return project_root() / "results" / track.name / "evaluations"


def check_release(release: Path, track: Track) -> str:
    """Verify the release against its manifest before anything is scored; return its digest."""
    manifest = read_manifest(release)
    if manifest.get("track") != track.name:
        raise ReleaseError(f"{release}: release of track {manifest.get('track')!r}, not {track.name!r}")
    problems = verify_release(release, only=("public/test/", "hidden/"))  # what scoring reads
    if problems:
        raise ReleaseError(f"{release}: refusing to evaluate on a release that fails verification:\n  "
                           + "\n  ".join(problems))
    return release_digest(release)


def discover_submissions(track: str, roots: tuple[str, ...] = ("submissions", "baselines"),
                         examples: bool = True) -> list[Path]:
    """Every submission folder under ``roots`` (relative to the project root) declaring ``track``;
    without those under ``submissions/examples/`` when ``examples`` is false.

    A folder whose ``submission.yaml`` cannot be read is included when its path names the track, so that
    it is recorded as FAILED with its reason rather than silently left out."""
    from .files import WalkLimits, iter_entries

    # Team folders are walked without recursion and not below 8 levels (submissions/examples/<track>/<format>
    # is 4), never following symlinks; each submission.yaml is read as load_submission reads it (bounded).
    limits = WalkLimits(max_depth=8, max_entries=None, max_bytes=None)
    found = []
    for root in roots:
        top = project_root() / root
        if not top.is_dir():
            continue
        specs = sorted(e.path for e in iter_entries(top, limits, prune=True)
                       if e.path.name == SPEC_FILE and not e.is_dir)
        for spec in specs:
            if not examples and spec.is_relative_to(project_root() / "submissions" / "examples"):
                continue
            try:
                raw = read_spec_file(spec)
                declared = raw.get("track") if isinstance(raw, dict) else None
            except Exception:  # noqa: BLE001 - any unreadable spec: decided by its path, recorded as FAILED
                declared = track if track in spec.parent.parts else None
            if declared == track:
                found.append(spec.parent)
    return found


def record_dir(out: Path, team: str, name: str) -> Path:
    return out / re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{team}__{name}")


def evaluate(folders: list[Path], track: str | Track, release: Path | None = None, *, out: Path | None = None,
             publish: bool = True, force: bool = False, executor: str | Executor = "local",
             executor_options: dict | None = None) -> list[Outcome]:
    """Evaluate every submission folder meant for ``track``; return one outcome per folder.

    ``executor``: where the sandboxed inference runs (``local`` or ``ray``, see :mod:`skybench.executors`);
    scoring, records and MLflow logging happen here, one submission at a time, in the order of ``folders``."""
    from .executors import Job, get_executor
    from .log import publish_record
    from .tracking import unreachable

    track = load_track(track) if isinstance(track, str) else track
    release = Path(release or default_release(track))
    out = Path(out or default_out(track))
    release_sha = check_release(release, track)
    make_private_root(out)  # always there (a DVC output), even when nothing finishes
    hidden = release / "hidden" / "test"
    real = _real_set(track)
    real_sha = release_digest(real) if real is not None else ""
    down = unreachable()  # a dead tracking server: evaluate anyway, keep the records, say so once per record
    # One boundary per submission: whatever it makes happen here (planning, its predictions, scoring, its
    # record, publication) becomes its FAILED record with a one-line reason, and the next one is evaluated.
    plans: list[Outcome | _Plan] = []
    for f in folders:
        try:
            plans.append(_plan(Path(f), track, real, real_sha, release_sha, out, force, not down))
        except Exception as exc:  # noqa: BLE001 - the boundary
            plans.append(_crashed(Path(f), None, exc, out, release_sha))
    todo = [p for p in plans if isinstance(p, _Plan)]
    # One mixed stream of test and real inputs for every submission that gets the real set (see mixing.py).
    mixed = mix_inputs(release / "public" / "test", real / "public" / "test") \
        if real is not None and any(p.real is not None for p in todo) else None
    challenge = read_manifest(release).get("profile") == "challenge"  # never run without cgroup limits
    jobs = [Job(p.sub, mixed.folder if mixed and p.real else release / "public" / "test", track, challenge)
            for p in todo]
    results = _results(get_executor(executor, **(executor_options or {})), jobs) if jobs else iter(())
    outcomes = []
    for plan in plans:
        try:
            if isinstance(plan, Outcome):
                outcome = plan
            else:
                res = next(results)
                if isinstance(res, BaseException):
                    raise res
                outcome = _finish(plan, _split(res, plan, mixed), track, release_sha, hidden)
        except Exception as exc:  # noqa: BLE001 - the boundary
            outcome = _crashed(plan.folder, plan if isinstance(plan, _Plan) else None, exc, out, release_sha)
        outcome.reason = clip(outcome.reason, 1000)
        if publish and outcome.record is not None:  # a skipped record too: it may be pending from an outage
            try:
                if down:
                    raise ConnectionError(down)
                publish_record(outcome.record, track)
            except Exception as exc:  # noqa: BLE001 - the record stays on disk for `skybench log`
                outcome.unpublished = one_line(exc)
                outcome.reason = (f"{outcome.reason}; " if outcome.reason else "") + \
                    f"not logged to MLflow ({outcome.unpublished}); " \
                    f"the record is kept in {outcome.record}, publish it later with `skybench log {out}`"
        outcomes.append(outcome)
    if mixed is not None:  # also removed when collected, should the loop raise
        mixed.cleanup()
    return outcomes


def _split(res: PredictResult, plan: _Plan, mixed: MixedInputs | None) -> PredictResult:
    """A mixed stream's predictions as the test set's, with the real set's as ``.extra``."""
    return mixed.split(res) if mixed is not None and plan.real is not None else res


def one_line(exc: BaseException) -> str:
    """``<ExceptionType>: <message>`` on one bounded line (never raises, whatever the message)."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a message that cannot even be printed
        message = "(unprintable message)"
    return clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _results(executor: Executor, jobs: list[Job]) -> Iterator[PredictResult | Exception]:
    """The executor's result for each job in order, or the exception that stopped it on that job.

    An executor whose iterator raises is finished, so the jobs after the failing one go to a new run."""
    done = 0
    while done < len(jobs):
        try:
            for res in executor.run(jobs[done:]):
                done += 1
                yield res
            if done == len(jobs):
                return
            exc: Exception = RuntimeError(f"executor {executor.name!r} returned no result for this submission")
        except Exception as err:  # noqa: BLE001 - blamed on the job it was running; the others carry on
            exc = err
        done += 1
        yield exc


def _crashed(folder: Path, plan: _Plan | None, exc: Exception, out: Path, release_sha: str) -> Outcome:
    """The FAILED outcome (with a record when one can be written) of a submission whose evaluation raised."""
    reason = f"evaluation failed: {one_line(exc)}"
    team, name = (plan.sub.spec.team, plan.sub.spec.name) if plan is not None else ("invalid", folder.name)
    record = None
    try:
        rdir = plan.rdir if plan is not None else record_dir(out, team, name)
        record = _write_record(rdir, team=team, name=name, fmt=plan.sub.spec.format if plan else "?",
                               status="FAILED", reason=reason, sub_sha=plan.sub.sha256 if plan else "unreadable",
                               release_sha=release_sha, device="unknown", metrics={})
    except Exception as err:  # noqa: BLE001 - not even a record: the outcome still says why
        reason += f"; no record written ({one_line(err)})"
    return Outcome(folder, team, name, "FAILED", reason, record=record)


@dataclass
class _Plan:
    """A submission that is to be run: everything but its predictions."""

    folder: Path
    sub: Submission
    rdir: Path
    real: Path | None
    real_sha: str


def _plan(folder: Path, track: Track, real: Path | None, real_sha: str, release_sha: str, out: Path, force: bool,
          ask_mlflow: bool) -> Outcome | _Plan:
    """The outcome when nothing needs to run (invalid, other track, unchanged), else a plan to run it."""
    try:
        sub = load_submission(folder)
    except SubmissionError as exc:
        # Still recorded (and ranked as FAILED) under the folder's name, so organisers see it.
        rec = _write_record(record_dir(out, "invalid", folder.name), team="invalid", name=folder.name, fmt="?",
                            status="FAILED", reason=str(exc).replace("\n", " "), sub_sha=_safe_sha(folder),
                            release_sha=release_sha, device="none", metrics={})
        return Outcome(folder, "invalid", folder.name, "FAILED", str(exc), record=rec)
    spec = sub.spec
    if spec.track != track.name:
        return Outcome(folder, spec.team, spec.name, "SKIPPED", f"submission is for track {spec.track}")
    rdir = record_dir(out, spec.team, spec.name)
    if spec.format == "predictions":  # its file covers the public test set only
        real, real_sha = None, ""
    if not force and (_same_record(rdir, sub, release_sha, real_sha)
                      or (ask_mlflow and _in_mlflow(track.name, sub.sha256, release_sha, real_sha))):
        return Outcome(folder, spec.team, spec.name, "SKIPPED", "unchanged since its last evaluation",
                       record=rdir if (rdir / RECORD).is_file() else None)
    return _Plan(folder, sub, rdir, real, real_sha)


def _finish(plan: _Plan, res: PredictResult, track: Track, release_sha: str, hidden: Path) -> Outcome:
    """Score a submission's predictions and write its record."""
    sub, rdir, real = plan.sub, plan.rdir, plan.real
    spec = sub.spec
    metrics: dict[str, float] = {}
    status, reason = ("FINISHED", "") if res.ok else ("FAILED", res.reason)
    if res.ok and res.extra is not None and not res.extra.ok:
        status, reason = "FAILED", f"on the real set {track.evaluation.real_set}: {res.extra.reason}"
    elif res.ok:
        # Scorers and predictions write to the organiser's folder; the record folder gets the participant view.
        priv = make_private_dir(rdir)
        save_predictions(priv, "predictions", res.ids, res.predictions)
        metrics = score(track, res.ids, res.predictions, hidden, priv)
        if res.extra is not None and real is not None:
            extra = res.extra
            save_predictions(priv, "real_predictions", extra.ids, extra.predictions)
            metrics |= score_real(track, res.ids, res.predictions, hidden, extra.ids, extra.predictions,
                                  real / "hidden" / "test", priv)
        write_participant_view(track, priv, rdir, metrics)
    fields = dict(team=spec.team, name=spec.name, fmt=spec.format, status=status, reason=reason,
                  sub_sha=sub.sha256, release_sha=release_sha, device=res.device,
                  seconds=res.seconds, n=len(res.ids), real_release_sha256=plan.real_sha)
    if status == "FINISHED" or private_dir(rdir).is_dir():  # the full record (a failure clears an old one)
        _write_record(make_private_dir(rdir), metrics=metrics, **fields)
    rec = _write_record(rdir, metrics=participant_view(track, metrics), **fields)
    return Outcome(plan.folder, spec.team, spec.name, status, reason, metrics, rec)


def save_predictions(rdir: Path, stem: str, ids: pd.Series, predictions: object) -> None:
    """``<stem>.csv`` (id, score) for one value per object; else ``<stem>.npy`` plus ``<stem>_ids.csv``.

    Per-object, so written to the organiser's folder only (:func:`skybench.visibility.private_dir`)."""
    import numpy as np

    pred = np.asarray(predictions)
    if pred.ndim == 1:
        pd.DataFrame({"id": ids, "score": pred}).to_csv(rdir / f"{stem}.csv", index=False)
    else:
        np.save(rdir / f"{stem}.npy", pred)
        pd.DataFrame({"id": ids}).to_csv(rdir / f"{stem}_ids.csv", index=False)


def _real_set(track: Track) -> Path | None:
    """The track's release of real objects, when it has one with objects in it."""
    if not track.evaluation.real_set:
        return None
    real = project_root() / track.evaluation.real_set
    if not (real / "manifest.json").is_file() or read_manifest(real)["counts"]["test"] == 0:
        return None
    return real


def _in_mlflow(track: str, sub_sha: str, release_sha: str, real_sha: str) -> bool:
    try:
        run = find_evaluation(track, sub_sha, release_sha)
        return run is not None and run.data.tags.get("real_release_sha256", "") == real_sha
    except Exception:  # noqa: BLE001 - an unreachable server must not stop evaluation; logging reports it
        return False


def _safe_sha(folder: Path) -> str:
    try:
        return folder_sha256(folder)
    except (OSError, ValueError):  # ValueError: SubmissionError, e.g. a folder beyond the size limits
        return "unreadable"


def _same_record(rdir: Path, sub: Submission, release_sha: str, real_sha: str) -> bool:
    try:
        rec = json.loads((rdir / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return (rec.get("submission_sha256"), rec.get("release_sha256"), rec.get("real_release_sha256", "")) == \
        (sub.sha256, release_sha, real_sha)


def _write_record(rdir: Path, *, team: str, name: str, fmt: str, status: str, reason: str, sub_sha: str,
                  release_sha: str, device: str, metrics: dict, **extra: object) -> Path:
    rdir.mkdir(parents=True, exist_ok=True)
    if status != "FINISHED":  # no stale predictions or plots from an earlier, successful version
        for p in rdir.iterdir():
            p.unlink()
    rec = {"team": team, "name": name, "format": fmt, "status": status, "reason": reason,
           "submission_sha256": sub_sha, "release_sha256": release_sha, "device": device,
           "skybench_version": __version__, "git_commit": git_commit(), "metrics": metrics, **extra}
    tmp = rdir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(rec, indent=2, sort_keys=True, default=float) + "\n")
    tmp.replace(rdir / RECORD)  # the record appears whole or not at all
    return rdir
