"""The ``evaluate`` stage: run submissions in the sandbox on a release's public test inputs and score them.

For each submission it writes an evaluation record, ``OUT/<team>+<name>/`` (:mod:`skybench.harness.record`: each
part percent-encoded, so different names never share a folder): ``evaluation.json``, ``metrics.json`` and the
aggregate plots a participant may see; and the organiser's full record in ``results/<track>/private/<record>/``
(``OUT-private/`` for another OUT): predictions, per-object tables, full ROC, truth plots, every metric (see
:mod:`skybench.harness.visibility`); then it publishes both to MLflow (``log.py``). Each record is written aside and
swapped in whole (``record._write_record``): a crash leaves the old or the new record, never a mix.

Who an entry belongs to is its folder's place in the project (:func:`identity`), not what its
``submission.yaml`` claims. A failure of the evaluating machine (``PredictResult.infrastructure``) is
recorded as such and retried by the next run; a result is reused only for the same submission, release,
track definition, scorer code and skybench version (:func:`cache_key`).
Records stay on disk, so an unreachable tracking server loses nothing: ``skybench log OUT`` publishes
them later. A bad submission becomes a FAILED record with a one-line reason; the others carry on.

The sandboxed inference runs on an executor (``--executor local|ray``, :mod:`skybench.harness.executors`); scoring,
records and logging always run here, so scores do not depend on the executor."""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from skybench import __version__
from skybench.escape import escaped_line
from skybench.harness.record import (
    INFRASTRUCTURE,
    RECORD,
    RecordError,
    _stage,
    _write_records,
    discard_stage,
    read_record,
    record_dir,
    record_stamp,
    sweep_stale,
    writing,
)
from skybench.harness.score import score, score_real
from skybench.harness.submission import (
    RESERVED_TEAMS,
    SPEC_FILE,
    PredictResult,
    Submission,
    SubmissionError,
    SubmissionSpec,
    clip,
    folder_sha256,
    load_submission,
    read_spec_file,
    reserved_team,
)
from skybench.harness.visibility import make_private_root, private_dir, write_participant_view
from skybench.release import ReleaseError, layout, read_manifest, release_digest, verify_release
from skybench.release.mixing import Stream
from skybench.release.reader import HiddenSplit, Release
from skybench.tasks import BUILTIN, get_task
from skybench.tracks import Track, default_release, for_release, list_tracks, load_track, project_root

if TYPE_CHECKING:
    from skybench.harness.executors import Executor, Job


@dataclass
class Outcome:
    folder: Path
    team: str
    name: str
    status: str  # FINISHED, FAILED, SKIPPED, or WITHHELD (``current`` said why not: nothing written or published)
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    record: Path | None = None
    unpublished: str = ""  # why the record could not be logged to MLflow ("" when logged or not asked to)
    failure_kind: str = ""  # "infrastructure" when the machine, not the submission, failed (retried next run)
    log: str = ""  # the sandbox's own stderr tail (PredictResult.log, bounded); never anything from the labels


def default_out(track: Track) -> Path:
    return project_root() / "results" / track.name / "evaluations"


def check_release(release: Path, track: Track) -> str:
    """Verify the release against its manifest before anything is scored; return its digest."""
    manifest = read_manifest(release)
    if manifest.get("track") != track.name:
        raise ReleaseError(f"{release}: release of track {manifest.get('track')!r}, not {track.name!r}")
    _refuse_unverified(release, "evaluate on a release")
    return release_digest(release)


def _refuse_unverified(release: Path, what: str) -> None:
    """Raise ``ReleaseError`` when the files scoring reads (the test split) do not match ``release``'s manifest,
    each file named within the release (a one-line reason keeps the name, not a long prefix)."""
    if problems := verify_release(release, only=layout.split_prefixes("test")):
        inside = (f"{Path(release)}{os.sep}", f"{Path(release).resolve()}{os.sep}")
        raise ReleaseError(f"{release}: refusing to {what} that fails verification:\n  "
                           + "\n  ".join(p.replace(inside[0], "").replace(inside[1], "") for p in problems))


def _spec_folders(root: str, examples: bool = True) -> list[Path]:
    """Every folder under ``root`` (relative to the project root) holding a ``submission.yaml``, sorted; without
    those under ``submissions/examples/`` when ``examples`` is false. Team folders are walked without recursion
    and not below 8 levels (submissions/examples/<track>/<format> is 4), never following symlinks."""
    from skybench.harness.files import FolderError, WalkLimits, iter_entries

    top = project_root() / root
    if not top.is_dir():
        return []
    limits, specs = WalkLimits(max_depth=7, max_entries=None, max_bytes=None), []
    with os.scandir(top) as entries:  # the project's own folder: an error here is the organiser's
        children = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    for name, is_dir in children:
        if not is_dir:
            specs += [top / name] if name == SPEC_FILE else []
            continue
        try:  # each team's folder on its own: one that cannot be listed is left out (logged), not every one
            specs += [e.path for e in iter_entries(top / name, limits, prune=True)
                      if e.path.name == SPEC_FILE and not e.is_dir]
        except FolderError as exc:
            print(escaped_line(f"skybench: {root}/{name} left out of the submissions: {exc}"), file=sys.stderr)
    specs.sort()
    examples_dir = project_root() / "submissions" / "examples"
    return [spec.parent for spec in specs if examples or not spec.is_relative_to(examples_dir)]


def discover_submissions(track: str, roots: tuple[str, ...] = ("submissions", "baselines"),
                         examples: bool = True) -> list[Path]:
    """Every submission folder under ``roots`` (:func:`_spec_folders`) declaring ``track`` (or a track of its
    ``evaluation.also_from``).

    A folder whose ``submission.yaml`` cannot be read is included when its path names the track, so that
    it is recorded as FAILED with its reason rather than silently left out."""
    accepted = {track, *_also_from(track)}
    found = []
    for root in roots:
        for folder in _spec_folders(root, examples):
            try:  # read as load_submission reads it (bounded)
                raw = read_spec_file(folder / SPEC_FILE)
                declared = raw.get("track") if isinstance(raw, dict) else None
                if not isinstance(declared, str):  # a list or mapping ("in" a set raised: every entry unevaluated)
                    raise TypeError(f"track: expected a string, got {type(declared).__name__}")
            except Exception:  # noqa: BLE001 - any unreadable spec: decided by its path, recorded as FAILED
                declared = next((t for t in sorted(accepted) if t in folder.parts), None)
            if declared in accepted:
                found.append(folder)
    return found


def submissions_index() -> dict[str, str]:
    """Every team folder ``evaluate`` may run (``submissions/``; the examples left out, as the pipeline leaves
    them), relative to the project root, and its :func:`folder_sha256`, or "unreadable". The pipeline's evaluate
    stages depend on this, not on ``submissions/``, which DVC would hash in the organiser's process following a
    team's symlinks (one to /dev/zero never ends) and compiling its ``.dvcignore`` patterns; the root ``.dvcignore``
    hides the folder from DVC. It reads no track: it needs no other stage's output."""
    root = project_root()
    return {os.fsdecode(f.relative_to(root)): _safe_sha(f) for f in _spec_folders("submissions", examples=False)}


def _also_from(track: str) -> list[str]:
    """The tracks whose submissions ``track`` evaluates too (its ``evaluation.also_from``; none if unknown)."""
    from skybench.tracks import list_tracks

    return load_track(track).evaluation.also_from if track in list_tracks() else []


def identity(folder: Path, spec: SubmissionSpec | None, given: tuple[str, str] | None = None
             ) -> tuple[str, str, str]:
    """(team, name, problem): whom ``folder``'s record is filed under, and why its ``submission.yaml`` is
    refused ("" when it agrees).

    In the project the path is the identity: ``submissions/<team>/<name>/``, ``submissions/examples/<track>/
    <format>/`` (team ``examples``, name ``<format>-example``) and ``baselines/<task>/<baseline>/<track>/``
    (team ``baselines``, name ``<baseline>``); the yaml must agree, so no folder can file a record under another
    team. A folder elsewhere (explicit paths: tests, an upload server) is ``given``'s, else the yaml's."""
    rel = _in_project(Path(folder))
    claim = (spec.team, spec.name) if spec is not None else None
    if rel is None:
        team, name = given or claim or ("invalid", Path(folder).name)
        where = "the identity it was submitted under"
        track = None
    else:
        team, name, track, problem = _path_identity(rel)
        if problem:
            return _storable(team), _storable(name), problem
        where = f"the folder {rel.as_posix()}/"
    team, name = _storable(team), _storable(name)
    if spec is None or claim == (team, name) and track in (None, spec.track):
        return team, name, ""
    if spec.team != team:
        return team, name, f"submission.yaml says team {spec.team!r}, but {where} belongs to team {team!r}"
    if spec.name != name:
        return team, name, f"submission.yaml says name {spec.name!r}, but {where} is named {name!r}"
    return team, name, f"submission.yaml says track {spec.track!r}, but {where} is for track {track!r}"


def _storable(part: str) -> str:
    """``part`` as records and MLflow can hold it: a folder name that is not UTF-8 (git and Linux allow any
    bytes; Python gives them as lone surrogates, which no UTF-8 store accepts) becomes its readable prefix, ``...``
    and the sha256 of its bytes, so different names stay different."""
    try:
        part.encode("utf-8")
        return part
    except UnicodeEncodeError:
        raw = part.encode("utf-8", "surrogatepass")  # injective over every str
        shown = part.encode("utf-8", "backslashreplace").decode("utf-8")  # \udcff for the byte 0xff
        return f"{shown[:40]}...{hashlib.sha256(raw).hexdigest()[:32]}"


def _relative(message: str, folder: Path) -> str:
    """``message`` with ``folder``'s absolute path (as given, and resolved) replaced by its place in the project
    (``submissions/<team>/<name>``), or by ``<submission>`` for a folder elsewhere (a server's upload store)."""
    shown = str(_in_project(folder) or "<submission>")
    for path in sorted({os.path.abspath(folder), str(folder.resolve())}, key=len, reverse=True):
        message = message.replace(path, shown)
    return message


def _in_project(folder: Path) -> Path | None:
    """``folder`` relative to the project root when it is under its submissions/ or baselines/, else None."""
    root = project_root()
    for base in {Path(os.path.abspath(root)), root.resolve()}:
        for f in (Path(os.path.abspath(folder)), folder.parent.resolve() / folder.name):
            if f.is_relative_to(base) and f.relative_to(base).parts[:1] in (("submissions",), ("baselines",)):
                return f.relative_to(base)
    return None


def _path_identity(rel: Path) -> tuple[str, str, str | None, str]:
    """(team, name, track or None, problem) of a folder ``rel`` under submissions/ or baselines/. A folder
    at the wrong depth is named by its whole path (a ``/`` no well-placed folder name has)."""
    parts, whole = rel.parts, rel.as_posix()
    if len(whole) > 100:  # a folder nested deep: a bounded name (MLflow caps parameters), still one per path
        whole = f"{whole[:60]}...{hashlib.sha256(whole.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}"
    if parts[0] == "baselines":
        if len(parts) == 4:
            return "baselines", parts[2], parts[3], ""
        return "baselines", whole, None, \
            f"a baseline folder must be baselines/<task>/<baseline>/<track>/, not {whole}/"
    if parts[1:2] == ("examples",):
        if len(parts) == 4:
            return "examples", f"{parts[3]}-example", parts[2], ""
        return "examples", whole, None, \
            f"an example folder must be submissions/examples/<track>/<format>/, not {whole}/"
    if len(parts) < 2 or reserved_team(parts[1]):
        return "invalid", whole, None, \
            f"{whole}/: team names {', '.join(RESERVED_TEAMS)} are reserved; use submissions/<team>/<name>/"
    if len(parts) != 3:
        return parts[1], whole, None, f"a submission folder must be submissions/<team>/<name>/, not {whole}/"
    return parts[1], parts[2], None, ""


def evaluate(folders: list[Path], track: str | Track, release: Path | None = None, *, out: Path | None = None,
             publish: bool = True, force: bool = False, executor: str | Executor = "local",
             executor_options: dict | None = None, identities: Mapping[Path, tuple[str, str]] | None = None,
             received: Mapping[Path, datetime | str] | None = None,
             current: Callable[[Path], str] | None = None) -> list[Outcome]:
    """Evaluate every submission folder meant for ``track``; return one outcome per folder.

    ``identities``: {folder: (team, name)} of folders outside the project's submissions/ and baselines/
    (e.g. uploads; inside them the path is the identity, :func:`identity`). ``received``: {folder: when the
    server received it}, the submission time of a folder that is not a clean git checkout. ``current``: asked
    with a folder right before its record is written (holding the records folder's lock): "" to write it, else
    why not (a challenge server's job that a newer version of its entry replaced meanwhile); its outcome is then
    WITHHELD with that reason, and nothing of it is written or published.

    ``executor``: where the sandboxed inference runs (``local`` or ``ray``, see :mod:`skybench.harness.executors`);
    scoring, records and MLflow logging happen here, one submission at a time, in the order of ``folders``."""
    from skybench.harness.executors import Job, get_executor
    from skybench.twins import check_linked_phases

    track = load_track(track) if isinstance(track, str) else track
    check_linked_phases(track)
    release = Path(release or default_release(track))
    out = Path(out or default_out(track))
    release_sha = check_release(release, track)
    check_twin_releases(release, track)
    track = for_release(track, release)  # the geometry of the release's profile (a detect track's tile size)
    for folder in (out, make_private_root(out)):  # always there (a DVC output), even when nothing finishes
        sweep_stale(folder)  # records half-written by an evaluation that was killed
    hidden = Release(release).hidden("test")
    real = _real_set(track, release)
    real_sha = release_digest(real) if real is not None else ""
    # The real set is folded into the release's test stream (mixing.fold_in): split every result back.
    stream = Stream.load(release, real)
    down = _tracking_down()  # a dead tracking server: evaluate anyway, keep the records, say so once per record
    ids = {Path(k): v for k, v in (identities or {}).items()}
    got = {Path(k): v for k, v in (received or {}).items()}
    # One boundary per submission: whatever it makes happen here (planning, its predictions, scoring, its
    # record, publication) becomes its FAILED record with a one-line reason, and the next one is evaluated.
    plans: list[Outcome | _Plan] = []
    for f in folders:
        try:
            plans.append(_plan(Path(f), track, real, real_sha, release_sha, out, force, not down,
                               ids.get(Path(f)), got.get(Path(f)), current))
        except Exception as exc:  # noqa: BLE001 - the boundary
            plans.append(_crashed(Path(f), None, exc, out, release_sha, track, current))
    manifest = read_manifest(release)
    challenge = manifest.get("profile") == "challenge"  # never run without cgroup limits
    task, public = get_task(track.task), layout.public_dir(release, "test")
    # inputs drawn per submission (generate tracks): in a folder flocked while this evaluation lives, never named by
    # its pid (evaluators in containers or on other hosts share the folder, not the pids); sweep_stale above
    # removes a killed one's
    from skybench.tasks.base import Task

    # hidden from every sandbox whatever folder a job's inputs are in (a Ray shard's view, drawn latents), and named
    # here: a Ray worker on another node has its own cwd and environment, so its project_root() may be another
    hide = tuple(Path(p).resolve() for p in (release, real, project_root()) if p is not None)
    draws = type(task).fresh_inputs is not Task.fresh_inputs  # a task that draws inputs per submission
    fresh = _stage(make_private_root(out) / "inputs") if draws else None
    try:
        jobs: list[Job] = []
        runs: dict[int, int] = {}  # plan's index -> its jobs: 2 with a re-run check
        for i, plan in enumerate(plans):
            if not isinstance(plan, _Plan):
                continue
            try:
                drawn = None if fresh is None else \
                    task.fresh_inputs(track, public, manifest, plan.sub.sha256, fresh / str(i))
            except Exception as exc:  # noqa: BLE001 - from the release and the machine alone: never the submission's
                why = exc if isinstance(exc, OSError) else OSError(f"drawing its inputs failed: {one_line(exc)}")
                plans[i] = _crashed(plan.folder, plan, why, out, release_sha, track, current)
                continue
            if drawn is None:
                jobs.append(Job(plan.sub, public, track, challenge, hide))
            else:  # the re-run at another batch size: a track of that evaluation batch size
                rerun_track = track.model_copy(update={"evaluation": track.evaluation.model_copy(
                    update={"batch_size": drawn[2]})})
                jobs += [Job(plan.sub, drawn[0], track, challenge, hide),
                         *(Job(plan.sub, part, rerun_track, challenge, hide) for part in drawn[1])]
            runs[i] = 1 if drawn is None else 1 + len(drawn[1])
        results = _results(get_executor(executor, **(executor_options or {})), jobs) if jobs else iter(())
        outcomes = []
        for i, plan in enumerate(plans):
            try:
                if isinstance(plan, Outcome):
                    outcome = plan
                else:
                    taken = [next(results) for _ in range(runs[i])]  # every job's result taken, in order
                    for r in taken:
                        if isinstance(r, BaseException):
                            raise r
                    res, *rerun = (r for r in taken if isinstance(r, PredictResult))
                    if rerun:
                        _check_rerun(task, res, rerun)
                    outcome = _finish(plan, stream.split(res) if stream is not None else res, track, release_sha,
                                      hidden, res, public, release)
            except Exception as exc:  # noqa: BLE001 - the boundary
                outcome = _crashed(plan.folder, plan if isinstance(plan, _Plan) else None, exc, out, release_sha,
                                   track, current)
            outcome.reason = clip(outcome.reason, 1000)
            if publish and outcome.record is not None:  # a skipped record too: it may be pending from an outage
                try:
                    # one look (no retries) before each record: MLflow retries a server that went away mid-run for
                    # about 4 minutes per request
                    if down or (down := _tracking_down()):
                        raise ConnectionError(down)
                    from skybench.tracking.log import publish_record

                    publish_record(outcome.record, track)
                except Exception as exc:  # noqa: BLE001 - the record stays on disk for `skybench log`
                    outcome.unpublished = one_line(exc)
                    if not down and not isinstance(exc, RecordError):  # gone mid-run: not minutes of retries each
                        down = _tracking_down()
                    outcome.reason = (f"{outcome.reason}; " if outcome.reason else "") + \
                        f"not logged to MLflow ({outcome.unpublished}); " \
                        f"the record is kept in {outcome.record}, publish it later with `skybench log {out}`"
            outcomes.append(outcome)
    finally:
        if fresh is not None:
            discard_stage(fresh)
    return outcomes


class RerunError(ValueError):
    """A generator's maps changed when some of its latents were given again (its own failure)."""


def _check_rerun(task: Any, first: PredictResult, parts: list[PredictResult]) -> None:
    """Raise :class:`RerunError` unless the re-run's outputs (``parts``: its sandboxes' results) are the first
    run's for the same objects."""
    if not first.ok or first.predictions is None:
        return  # the first run's failure is recorded as usual
    for again in parts:
        if not again.ok or again.predictions is None:
            if again.infrastructure:  # the machine's: retried, as any infrastructure failure
                raise OSError(f"the re-run of some latents failed for the machine's reason: {again.reason}")
            raise RerunError(f"the re-run of some latents in another order and batch size failed: {again.reason}")
    where = {obj: k for k, obj in enumerate(first.ids)}
    rows = [where[obj] for again in parts for obj in again.ids]
    if why := task.check_rerun(first.predictions[rows], np.concatenate([a.predictions for a in parts])):
        raise RerunError(why)


def _tracking_down() -> str:
    """"" when the tracking store answers, else why not; MLflow not installed is one such reason (a GPU host may
    evaluate without it: the records stay on disk for `skybench log`)."""
    try:
        from skybench.tracking import unreachable
    except ImportError as exc:
        return f"MLflow cannot be imported here ({one_line(exc)})"
    return unreachable()


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


def _crashed(folder: Path, plan: _Plan | None, exc: Exception, out: Path, release_sha: str,
             track: Track, current: Callable[[Path], str] | None = None) -> Outcome:
    """The FAILED outcome (with a record when one can be written) of a submission whose evaluation raised.

    An ``OSError`` (a full disk, an I/O error) is the machine's failure, not the submission's: a previous record
    is kept whole (its scores and predictions), else the FAILED record is marked ``infrastructure`` (retried)."""
    from skybench.harness.executors import is_ray_fault

    kind = INFRASTRUCTURE if isinstance(exc, OSError) or is_ray_fault(exc) else ""  # the machine's, retried
    reason = f"evaluation failed: {one_line(exc)}"
    if kind and not getattr(exc, "filename", None):  # ENOSPC from a write names no file: say where
        reason += f" (evaluating into {out})"
    if kind:
        reason = f"infrastructure failure, not the submission's (retried at the next evaluation): {reason}"
    team, name, record = "invalid", _storable(folder.name), None
    try:
        team, name = (plan.team, plan.name) if plan is not None else identity(folder, None, None)[:2]
        rdir = plan.rdir if plan is not None else record_dir(out, team, name)
        marked: dict[str, Any] = {"failure_kind": kind} if kind else {}  # else the key as before: absent
        with writing(rdir.parent):  # one writer of the entry's records at a time, as in _finish
            if (held := _withheld(current, folder, team, name)) is not None:
                return held
            if kind and (rdir / RECORD).is_file():
                return Outcome(folder, team, name, "FAILED", f"{reason}; the previous record is kept",
                               failure_kind=kind)
            record = _write_records(track, rdir, team=team, name=name, fmt=plan.sub.spec.format if plan else "?",
                                    status="FAILED", reason=reason, sub_sha=plan.sub.sha256 if plan else "unreadable",
                                    release_sha=release_sha, device="unknown", metrics={}, **marked)
    except Exception as err:  # noqa: BLE001 - not even a record: the outcome still says why
        reason += f"; no record written ({one_line(err)})"
    return Outcome(folder, team, name, "FAILED", reason, record=record, failure_kind=kind)


@dataclass
class _Plan:
    """A submission that is to be run: everything but its predictions."""

    folder: Path
    sub: Submission
    rdir: Path
    real: Path | None
    real_sha: str
    team: str
    name: str
    submitted: str
    seen: str = ""  # record_stamp of its record folder when planned
    current: Callable[[Path], str] | None = None  # evaluate's ``current``


def _withheld(current: Callable[[Path], str] | None, folder: Path, team: str, name: str) -> Outcome | None:
    """The WITHHELD outcome of ``folder`` when ``current`` (:func:`evaluate`'s) says why its record must not be
    written; None to write it."""
    why = current(folder) if current is not None else ""
    return Outcome(folder, team, name, "WITHHELD", why) if why else None


def _plan(folder: Path, track: Track, real: Path | None, real_sha: str, release_sha: str, out: Path, force: bool,
          ask_mlflow: bool, given: tuple[str, str] | None = None, received: datetime | str | None = None,
          current: Callable[[Path], str] | None = None) -> Outcome | _Plan:
    """The outcome when nothing needs to run (invalid, other track, unchanged), else a plan to run it."""
    try:
        sub: Submission | None = load_submission(folder)
        problem = ""
    except SubmissionError as exc:  # named as the team knows the folder, not by the organiser's paths
        sub, problem = None, _relative(str(exc).replace("\n", " "), folder)
    team, name, refused = identity(folder, sub.spec if sub is not None else None, given)
    if sub is not None and sub.spec.track not in (track.name, *track.evaluation.also_from):
        return Outcome(folder, team, name, "SKIPPED", f"submission is for track {sub.spec.track}")
    rdir = record_dir(out, team, name)
    key = cache_key(track)
    if problem or refused:  # recorded (and listed as FAILED) under the folder's identity, never the claimed one
        reason = problem or " ".join(refused.split())[:1000]
        sha = sub.sha256 if sub is not None else _safe_sha(folder)
        with writing(rdir.parent):  # one writer of the entry's records at a time, as in _finish
            if (held := _withheld(current, folder, team, name)) is not None:
                return held
            rec = _write_records(track, rdir, team=team, name=name, fmt=sub.spec.format if sub is not None else "?",
                                 status="FAILED", reason=reason, sub_sha=sha, release_sha=release_sha, device="none",
                                 metrics={}, submitted=submission_time(folder, sha, rdir, received),
                                 **key)  # type: ignore[arg-type]  # mypy: a str key could fill ``stage``; none does
        return Outcome(folder, team, name, "FAILED", reason, record=rec)
    assert sub is not None
    seen = record_stamp(rdir)  # another evaluation of the entry writing its record meanwhile changes it
    if not force and (_same_record(rdir, sub, release_sha, real_sha, key)
                      or (ask_mlflow and _in_mlflow(track.name, sub.sha256, release_sha, real_sha, key, team, name))):
        return Outcome(folder, team, name, "SKIPPED", "unchanged since its last evaluation",
                       record=rdir if (rdir / RECORD).is_file() else None)
    return _Plan(folder, sub, rdir, real, real_sha, team, name, submission_time(folder, sub.sha256, rdir, received),
                 seen, current)


def _finish(plan: _Plan, res: PredictResult, track: Track, release_sha: str, hidden: HiddenSplit,
            streamed: PredictResult, inputs: Path, release: Path | None = None) -> Outcome:
    """Score a submission's predictions into a new record folder, then swap it in for the old one. ``streamed``:
    the result in the published stream's order before the real set was split off (``res`` without a real set),
    ``inputs`` that stream's folder: what participants see of their outputs is drawn from these alone."""
    sub, rdir, real = plan.sub, plan.rdir, plan.real
    metrics: dict[str, float] = {}
    status, reason = ("FINISHED", "") if res.ok else ("FAILED", res.reason)
    kind = INFRASTRUCTURE if not res.ok and getattr(res, "infrastructure", False) else ""
    if kind:
        reason = f"infrastructure failure, not the submission's (retried at the next evaluation): {reason}"
        if _same_record(rdir, sub, release_sha, plan.real_sha, cache_key(track)):  # a forced re-run: keep it
            return Outcome(plan.folder, plan.team, plan.name, "FAILED", f"{reason}; the previous record is kept",
                           failure_kind=kind)
    # Scorers and predictions write to the organiser's folder; the record folder gets the participant view.
    make_private_root(rdir.parent)
    stage = _stage(rdir)
    try:  # flocked until discarded: never left behind by the second one failing (a descriptor per failed job)
        private_stage = _stage(private_dir(rdir))
    except BaseException:
        discard_stage(stage)
        raise
    try:
        if res.ok:
            assert res.predictions is not None  # a finished run has predictions
            save_predictions(private_stage, "predictions", res.ids, res.predictions)
            metrics = score(track, res.ids, res.predictions, hidden, private_stage)
            if res.extra is not None and real is not None:
                extra = res.extra
                assert extra.predictions is not None
                save_predictions(private_stage, "real_predictions", extra.ids, extra.predictions)
                metrics |= score_real(track, res.ids, res.predictions, hidden, extra.ids, extra.predictions,
                                      Release(real).hidden("test"), private_stage)
            assert streamed.predictions is not None
            get_task(track.task).stream_artifacts(track, streamed.ids, streamed.predictions, inputs, private_stage)
            write_participant_view(track, private_stage, stage, metrics)
        if release is not None and release_digest(release) != release_sha:  # re-made meanwhile (`dvc repro`)
            raise OSError(f"{release}: the release changed during the evaluation (its manifest is no longer sha256 "
                          f"{release_sha[:12]}...); what ran and was scored is not that release's")
        if _safe_sha(sub.folder) != sub.sha256:  # replaced under the sandbox (a worker's place(), a git pull)
            raise OSError(f"{sub.folder}: the submission folder changed during its evaluation (no longer sha256 "
                          f"{sub.sha256[:12]}...); what ran is not the version to be recorded")
        with writing(rdir.parent):  # one writer of the entry's records at a time (a worker, a `dvc repro`)
            if (held := _withheld(plan.current, plan.folder, plan.team, plan.name)) is not None:
                return held
            if record_stamp(rdir) != plan.seen and (kind or _same_record(rdir, sub, release_sha, plan.real_sha,
                                                                         cache_key(track))):
                if kind:  # never the machine's failure over the record another evaluation wrote meanwhile
                    return Outcome(plan.folder, plan.team, plan.name, "FAILED", f"{reason}; the record another "
                                   "evaluation wrote meanwhile is kept", failure_kind=kind)
                return Outcome(plan.folder, plan.team, plan.name, "SKIPPED", "evaluated meanwhile by another "
                               "evaluation; its record is kept", record=rdir)
            rec = _write_records(track, rdir, stage=stage,
                                 private_stage=private_stage if status == "FINISHED" else None, team=plan.team,
                                 name=plan.name, fmt=sub.spec.format, status=status, reason=reason,
                                 sub_sha=sub.sha256, release_sha=release_sha, device=res.device, metrics=metrics,
                                 seconds=res.seconds, n=len(streamed.ids), real_release_sha256=plan.real_sha,
                                 failure_kind=kind, submitted=plan.submitted, **cache_key(track))
    finally:
        for folder in (stage, private_stage):
            discard_stage(folder)  # gone after a swap; a half-written record otherwise
    return Outcome(plan.folder, plan.team, plan.name, status, reason, metrics, rec, failure_kind=kind, log=res.log)


def save_predictions(rdir: Path, stem: str, ids: pd.Series, predictions: object) -> None:
    """``<stem>.csv`` (id, score) for one value per object; else ``<stem>.npy`` plus ``<stem>_ids.csv``.

    Per-object, so written to the organiser's folder only (:func:`skybench.harness.visibility.private_dir`)."""
    import numpy as np

    pred = np.asarray(predictions)
    if pred.ndim == 1:
        pd.DataFrame({"id": ids, "score": pred}).to_csv(rdir / f"{stem}.csv", index=False)
    else:
        np.save(rdir / f"{stem}.npy", pred)
        pd.DataFrame({"id": ids}).to_csv(rdir / f"{stem}_ids.csv", index=False)


def check_twin_releases(release: Path, track: Track) -> None:
    """Refuse ``release`` when a track sharing its test objects (one ``simulate.object_domain``: photoz-images and
    photoz-catalog) has its release (``releases/<track>``) drawn from the same key and seed but with other test
    objects (another ``--size``): the public-private split is drawn from the whole test set, so the shared objects
    would split differently, and one track's public board would name objects private on the other. Only for
    releases of a private key: a public one (demo) anyone can re-make, so it has no private labels."""
    import numpy as np

    from skybench.simulate import object_domain

    mine = read_manifest(release)
    if (mine.get("test_key") or {}).get("kind") != "private":
        return
    ids: np.ndarray | None = None
    for name in list_tracks():
        try:
            other = load_track(name)
        except (ValueError, KeyError, OSError):
            continue
        theirs_at = default_release(other)
        if name == track.name or other.task != track.task or not layout.is_release(theirs_at) \
                or theirs_at.resolve() == Path(release).resolve():
            continue
        theirs = read_manifest(theirs_at)
        if any(theirs.get(k) != mine.get(k) for k in ("profile", "seed", "test_key")):
            continue  # other objects altogether (another key or seed): nothing shared
        try:  # only now: it imports the task's simulator
            if object_domain(other) != object_domain(track):
                continue
        except (ValueError, KeyError, OSError):  # not simulated (a real catalogue): its own objects
            continue
        ids = Release(release).hidden("test").ids() if ids is None else ids
        their_ids = Release(theirs_at).hidden("test").ids()
        if len(ids) != len(their_ids) or not np.array_equal(np.sort(ids), np.sort(their_ids)):
            raise ReleaseError(f"{release}: {len(ids)} test objects, but {theirs_at} (track {name}, the same "
                               f"objects: same key and seed) holds {len(their_ids)} others; tracks sharing test "
                               "objects must be simulated with the same --size, or their public-private splits "
                               "differ (one's public board names the other's private objects)")


def _real_set(track: Track, release: Path) -> Path | None:
    """The track's release of real objects (``evaluation.real_set``) when it is folded into ``release``'s test
    stream (``skybench simulate`` does that); raises ``ReleaseError`` when it is not the one folded in or its files
    do not match its manifest."""
    folded = read_manifest(release).get("real_set") or {}
    if not track.evaluation.real_set or not folded.get("folded_in"):
        return None
    real = project_root() / track.evaluation.real_set
    if not layout.is_release(real) or release_digest(real) != folded.get("release_sha256"):
        raise ReleaseError(f"{release} holds the real set {folded.get('path')} as it was when the release was made "
                           f"(sha256 {folded.get('release_sha256')}), but {real} is missing or has changed since; "
                           "re-make the release (`dvc repro`, or `skybench simulate`) so both agree")
    _refuse_unverified(real, "score on a real set")  # its labels score the real_* metrics
    return real


def _in_mlflow(track: str, sub_sha: str, release_sha: str, real_sha: str, key: Mapping[str, str] | None = None,
               team: str | None = None, name: str | None = None) -> bool:
    """Whether MLflow has a usable result of this submission: same key, same identity, no infrastructure
    failure (those are retried), and no later run of the entry (``find_evaluation(latest_only=...)``)."""
    try:
        from skybench.tracking import find_evaluation  # MLflow on first use: evaluation itself runs without it

        run = find_evaluation(track, sub_sha, release_sha, match={"real_release_sha256": real_sha, **(key or {})},
                              team=team, name=name, latest_only=bool(team and name))
    except Exception:  # noqa: BLE001 - an unreachable server must not stop evaluation; logging reports it
        return False
    return run is not None and run.data.tags.get("failure_kind", "") != INFRASTRUCTURE


def _safe_sha(folder: Path) -> str:
    try:
        return folder_sha256(folder)
    except (OSError, ValueError):  # ValueError: SubmissionError, e.g. a folder beyond the size limits
        return "unreadable"


def _same_record(rdir: Path, sub: Submission, release_sha: str, real_sha: str,
                 key: Mapping[str, str] | None = None) -> bool:
    """Whether ``rdir`` holds a result of this very evaluation that may be reused (not an infrastructure
    failure)."""
    try:
        rec = read_record(rdir / RECORD)
    except RecordError:  # unreadable or invalid: evaluated again, and rewritten
        return False
    if rec.failure_kind == INFRASTRUCTURE:
        return False
    want = {"submission_sha256": sub.sha256, "release_sha256": release_sha, "real_release_sha256": real_sha,
            **(key or {})}
    return all(getattr(rec, k, "") == v for k, v in want.items())


# the modules that turn predictions into scores, and the one that decides what of them participants see (a record
# reused after that changed would keep a view the new rule hides); every built-in task's scorer is covered
# each task's scorer and its Task class (its hooks: a generate track's fresh inputs and re-run check)
SCORERS = ("harness/score", "harness/visibility", *(f"tasks/{t}/{m}" for t in BUILTIN for m in ("score", "__init__")))


def cache_key(track: Track) -> dict[str, str]:
    """What, besides the submission and the releases, a score depends on; any change re-scores."""
    return {"track_sha256": hashlib.sha256(track.model_dump_json().encode()).hexdigest(),
            "scorer_sha256": scorer_sha256(), "skybench_version": __version__}


def scorer_sha256() -> str:
    """sha256 over the source of :data:`SCORERS` and of every skybench module they import, transitively."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in scorer_files():
        h.update(f"{path.relative_to(pkg).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@functools.cache
def scorer_files() -> tuple[Path, ...]:
    """The source files of skybench's scoring: :data:`SCORERS` and the skybench modules they import."""
    pkg = Path(__file__).resolve().parents[1]
    todo, seen = [pkg / f"{m}.py" for m in SCORERS], set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("skybench")):
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                if not node.level:
                    base, mod = pkg.parent, node.module or ""
                else:
                    mod = node.module or ""
                target = base.joinpath(*mod.split(".")) if mod else base
                todo += [target.with_suffix(".py"), target / "__init__.py",
                         *(target / f"{a.name}.py" for a in node.names)]
            elif isinstance(node, ast.Import):
                todo += [pkg.parent.joinpath(*a.name.split(".")).with_suffix(".py")
                         for a in node.names if a.name.startswith("skybench.")]
    return tuple(sorted(p for p in seen if p.is_relative_to(pkg)))


def submission_time(folder: Path, sub_sha: str, rdir: Path, received: datetime | str | None = None) -> str:
    """When the evaluated version of ``folder`` was submitted (UTC ISO, ms): the commit time of the last
    first-parent commit touching it when it is a clean git checkout; else ``received`` (a server's receipt
    time); else, for a folder the pipeline builds (a trained baseline), :func:`_built_time`; else the time this
    exact version (``sub_sha``) was first evaluated, kept in its record."""
    if when := _git_time(Path(folder)):
        return when
    if received is not None:
        return _utc(received)
    if when := _built_time(Path(folder)):
        return when
    try:
        rec = read_record(rdir / RECORD)
        if rec.submission_sha256 == sub_sha and rec.submitted:
            return _utc(rec.submitted)
    except ValueError:  # RecordError, or a time that is not ISO 8601
        pass
    return _utc(datetime.now(timezone.utc))


def _utc(when: datetime | str) -> str:
    t = datetime.fromisoformat(when) if isinstance(when, str) else when
    t = t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _git_time(folder: Path) -> str:
    """Commit time of ``folder``'s latest first-parent commit (on a merge workflow: when the organisers' branch
    took it) when it is in the project and every file in it is committed and unchanged; "" otherwise.

    git runs in the project root, never in the folder: a ``.git`` in an uploaded folder could configure
    commands (``core.fsmonitor``) that git would run."""
    rel = _in_project(folder)
    if rel is None or not folder.is_dir():
        return ""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(project_root()), *args, "--", rel.as_posix()],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    if not git("ls-files"):
        return ""
    if git("status", "--porcelain", "--ignored", "--untracked-files=all") != "":
        return ""  # changed, untracked or ignored files: the evaluated bytes are not the commit's
    when = git("log", "-1", "--first-parent", "--format=%cI")
    return _utc(when) if when else ""


def _built_time(folder: Path) -> str:
    """For a git-ignored folder in the project (an output of the pipeline, e.g. a baseline DVC trained into
    baselines/<baseline>/<track>/): the commit time of the latest first-parent commit touching its parent folder
    (the code that built it; .gitignore files aside, which DVC edits when it adds an output), when that is
    committed and unchanged; "" otherwise. Unlike the time of the first evaluation, a clean clone gets it again."""
    rel = _in_project(folder)
    if rel is None or len(rel.parts) < 2 or not folder.is_dir():
        return ""
    parent = rel.parent.as_posix()

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(["git", "-C", str(project_root()), *args], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None

    ignored = git("check-ignore", "-q", "--", rel.as_posix())
    status = git("status", "--porcelain", "--untracked-files=all", "--", parent)
    if ignored is None or ignored.returncode != 0 or status is None or status.returncode != 0 or status.stdout:
        return ""
    log = git("log", "-1", "--first-parent", "--format=%cI", "--", parent, f":(exclude,glob){parent}/**/.gitignore")
    when = log.stdout.strip() if log is not None and log.returncode == 0 else ""
    return _utc(when) if when else ""
