"""The evaluation record: one typed model (:class:`EvaluationRecord`), written by ``evaluate`` and read by ``log``.

A record folder is ``OUT/<team>+<name>/`` (:func:`record_dir`) holding :data:`RECORD` (this model as JSON:
``indent=2``, sorted keys, one trailing newline) beside the files of the evaluation. Each record is written
aside and swapped in whole (:func:`_write_record`): a crash leaves the old or the new record, never a mix.
A record that does not validate is never published: reading it raises :class:`RecordError`, one line naming
the file and what is wrong."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import numbers
import os
import shutil
import string
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError

from skybench import __version__
from skybench.escape import escaped_line
from skybench.tracks import git_commit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from skybench.tracks import Track

RECORD = "evaluation.json"  # the record's file name in a record folder (participant's and organiser's)
# What differs from one run of the same evaluation to the next (wall time, the code's commit): kept beside the
# record in RUN_FILE, out of RECORD, so records are reproducible to the byte; .dvcignore keeps it out of DVC's
# hashes, and read_record puts it back, so `skybench log` publishes it to MLflow with the record.
RUN_FILE = "run.json"
RUN_FIELDS = ("seconds", "git_commit", "evaluated")
INFRASTRUCTURE = "infrastructure"  # ``failure_kind`` of a failure of the evaluating machine, not the submission


def _metric(value: object) -> int | float:
    """A metric is a JSON number, an int or a float (NaN included), written as ``json.dumps(default=float)``
    always wrote it: a subclass of int or float as its value, a numpy (or other real) scalar as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"a metric must be a number, not {type(value).__name__}")
    return int(value) if isinstance(value, int) else float(value)


Metric = Annotated[int | float, PlainValidator(_metric)]


class EvaluationRecord(BaseModel):
    """What ``evaluation.json`` holds. A key is written only when the writer set it (:meth:`to_json`), so the
    records of every path (finished, refused, crashed) keep exactly the keys they always had; the defaults are
    what a reader sees for a key an older record lacks."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    team: str
    name: str
    format: str  # the submission format, "?" when its submission.yaml could not be read
    status: Literal["FINISHED", "FAILED"]
    reason: str = ""  # one line; "" when finished
    submission_sha256: str  # "unreadable" when the folder could not be hashed
    release_sha256: str
    real_release_sha256: str = ""  # the real set folded into the release ("" when none)
    device: str = ""  # "cuda", "cpu", "none" (predictions format) or "unknown"
    skybench_version: str = ""
    git_commit: str = ""
    track_sha256: str = ""  # with scorer_sha256 and skybench_version: evaluate.cache_key
    scorer_sha256: str = ""
    failure_kind: Literal["", "infrastructure"] = ""  # "infrastructure": the machine failed, retried next run
    submitted: str = ""  # UTC ISO time the evaluated version was submitted (evaluate.submission_time)
    seconds: float | None = None  # wall time of the sandboxed run; absent when nothing ran
    # UTC ISO time the record was written: its MLflow run's start time, so an entry's runs are in the order their
    # records were written (one at a time, under the records lock), whatever order they are published in
    evaluated: str = ""
    # objects predicted: the whole stream (its simulated count would give the real set's away); absent when
    # nothing ran
    n: int | None = None
    metrics: dict[str, Metric]

    def to_json(self, with_run: bool = False) -> str:
        """The record file's text: the keys that were set (but the run facts, unless ``with_run``), sorted,
        indented by 2, and a final newline."""
        return _dumps(self.model_dump(exclude_unset=True, exclude=None if with_run else set(RUN_FIELDS)))

    def run_json(self) -> str:
        """The run file's text: the run facts (:data:`RUN_FIELDS`) that were set."""
        return _dumps(self.model_dump(exclude_unset=True, include=set(RUN_FIELDS)))


def _dumps(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=float) + "\n"


class RecordError(ValueError):
    """Evaluation records that cannot be read or do not validate: one line per record, naming its file."""


def read_record(path: Path) -> EvaluationRecord:
    """The record in file ``path``, with the run facts of the :data:`RUN_FILE` beside it (none when it is
    missing or not an object, as in a record restored from DVC's cache); raises :class:`RecordError` (one line)
    when the record is unreadable or invalid."""
    try:
        raw = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise RecordError(f"{path}: cannot read the evaluation record ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; arrays nested too deeply
        raise RecordError(f"{path}: not an evaluation record, invalid JSON ({_clip(str(exc))}); "
                          "remove it, or re-run `skybench evaluate --force` to rewrite it") from exc
    try:  # a lone surrogate (JSON's "\udcff"): a name no UTF-8 store (MLflow) holds, which stopped `skybench log`
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise RecordError(f"{path}: not an evaluation record (nested too deeply); remove it, or re-run "
                          "`skybench evaluate --force` to rewrite it") from None
    except UnicodeEncodeError:
        raise RecordError(f"{path}: not a valid evaluation record (a text that is not UTF-8); remove it, or re-run "
                          "`skybench evaluate --force` to rewrite it") from None
    if isinstance(raw, dict):
        raw |= _run_facts(Path(path).parent)
    try:
        return EvaluationRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the record'}: {e['msg']}" for e in exc.errors())
        raise RecordError(f"{path}: not a valid evaluation record ({_clip(problems)}); remove it, or re-run "
                          "`skybench evaluate --force` to rewrite it") from None


def _run_facts(folder: Path) -> dict:
    try:
        facts = json.loads((folder / RUN_FILE).read_bytes())
    except (OSError, ValueError, RecursionError):  # unreadable: no run facts
        return {}
    return {k: facts[k] for k in RUN_FIELDS if k in facts} if isinstance(facts, dict) else {}


def _clip(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}..."


_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
_MAX_DIR = 200  # a record folder name stays well under NAME_MAX (255 bytes)


def _encode(part: str) -> str:
    """``part`` with every character but ``[A-Za-z0-9_-]`` percent-encoded (UTF-8): ``%``, ``+``, ``.``
    and ``~`` never appear unencoded, so the encoding is injective and never ``.`` or ``..``."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   for c in part)


def record_dir(out: Path, team: str, name: str) -> Path:
    """``out/<team>+<name>``, each part percent-encoded: different (team, name) pairs never share a folder.

    A name too long for one folder keeps a readable prefix and ends in ``~`` and the sha256 of the pair
    (``~`` is never in a short name)."""
    key = f"{_encode(team)}+{_encode(name)}"
    if len(key) > _MAX_DIR:
        digest = hashlib.sha256(json.dumps([team, name]).encode()).hexdigest()
        key = f"{key[:_MAX_DIR - 65]}~{digest}"
    return Path(out) / key


def _write_records(track: Track, rdir: Path, *, metrics: dict, stage: Path | None = None,
                   private_stage: Path | None = None, **fields: object) -> Path:
    """The organiser's full record (when there is a new one, or an old one a failure must replace), then the
    participant's record with the participant view of ``metrics``; return the participant record folder."""
    from skybench.harness.visibility import make_private_root, participant_view, private_dir

    priv = private_dir(rdir)
    if private_stage is not None or priv.is_dir():
        make_private_root(rdir.parent)
        _write_record(priv, metrics=metrics, staged=private_stage, **fields)  # type: ignore[arg-type]
    return _write_record(rdir, metrics=participant_view(track, metrics), staged=stage, **fields)  # type: ignore[arg-type]


def _write_record(rdir: Path, *, team: str, name: str, fmt: str, status: str, reason: str, sub_sha: str,
                  release_sha: str, device: str, metrics: dict, staged: Path | None = None,
                  **extra: object) -> Path:
    """Write ``evaluation.json`` into ``staged`` (a folder made by :func:`_stage` holding the rest of the new
    record; a new empty one when None), then swap that whole folder in for ``rdir``. Nothing of the old
    record is deleted before the new one is complete, and a crash leaves one or the other, whole."""
    own = staged is None
    staged = _stage(rdir) if staged is None else staged
    try:
        # a reason may quote a folder name that is not UTF-8 (lone surrogates): escaped, as a store can hold it;
        # or one holding "\r", "\x85" or "\u2028" (line breaks to a viewer) or terminal escapes: one printable line
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
        reason = escaped_line(reason)
        rec = EvaluationRecord.model_validate(
            {"team": team, "name": name, "format": fmt, "status": status, "reason": reason,
             "submission_sha256": sub_sha, "release_sha256": release_sha, "device": device,
             "skybench_version": __version__, "git_commit": git_commit(), "metrics": metrics,
             "evaluated": datetime.now(timezone.utc).isoformat(timespec="microseconds"), **extra})
        (staged / RECORD).write_text(rec.to_json())
        (staged / RUN_FILE).write_text(rec.run_json())
        _swap(staged, rdir)
    finally:
        if own:  # gone after a swap; a half-written record otherwise
            discard_stage(staged)
    return rdir


_STAGE = ".staged-"  # prefix of record folders being written (hidden: never published, never read back)


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Hold the flock of the records folder ``out`` (its directory, no file of its own): evaluations that would
    write a record there (processes, or threads with their own descriptors) take turns. Not reentrant."""
    import fcntl

    Path(out).mkdir(parents=True, exist_ok=True)  # the first record in it
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without flock: as before, the last writer wins
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
        yield
    finally:
        os.close(fd)


def record_stamp(rdir: Path) -> str:
    """The sha256 of ``rdir``'s record as it is now ("" when there is none or it is unreadable)."""
    try:
        return hashlib.sha256((rdir / RECORD).read_bytes()).hexdigest()
    except OSError:
        return ""


_WRITERS: dict[str, int] = {}  # staged folder -> this process's open descriptor of it, holding its flock
_STAGE_GRACE = 60.0  # seconds a new staged folder may stay unlocked (between mkdtemp and flock)


def _stage(rdir: Path) -> Path:
    """A new empty sibling folder of ``rdir`` to write a record into (same filesystem, so renames are atomic),
    flocked by this process until :func:`discard_stage`. An old record left aside by a crashed :func:`_swap` is
    put back; leftovers of writers that are gone (a SIGKILLed evaluation) are removed (:func:`sweep_stale`)."""
    import fcntl

    rdir.parent.mkdir(parents=True, exist_ok=True)
    for aside in rdir.parent.glob(f"{_STAGE}{rdir.name}.old.*/record"):  # a crash inside a non-atomic _swap
        if not rdir.exists():
            os.rename(aside, rdir)
    sweep_stale(rdir.parent, rdir.name)
    staged = Path(tempfile.mkdtemp(prefix=f"{_STAGE}{rdir.name}.", dir=rdir.parent))
    fd = os.open(staged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without flock: the day-old rule of sweep_stale alone
        pass
    _WRITERS[str(staged)] = fd
    return staged


def discard_stage(staged: Path) -> None:
    """Remove a folder made by :func:`_stage` (what a swap left there, or a half-written record) and unlock it."""
    shutil.rmtree(staged, ignore_errors=True)
    fd = _WRITERS.pop(str(staged), None)
    if fd is not None:
        os.close(fd)


def sweep_stale(folder: Path, name: str = "*") -> None:
    """Remove the staged folders in ``folder`` (of record folder ``name``) whose writer is gone: nobody holds their
    flock (a writer holds it until it is done, the kernel drops it when the writer dies) and they are older than a
    minute (a new one is flocked right after it is made); where flock is not supported, those older than a day.
    An old record a crashed non-atomic :func:`_swap` left aside is put back first, never removed."""
    import fcntl

    for aside in Path(folder).glob(f"{_STAGE}{name}.old.*/record"):
        rdir = Path(folder) / aside.parent.name[len(_STAGE):].split(".", 1)[0]  # record folder names have no "."
        try:
            if not rdir.exists() and time.time() - aside.parent.lstat().st_mtime > _STAGE_GRACE:
                os.rename(aside, rdir)
        except OSError:
            pass
    for old in Path(folder).glob(f"{_STAGE}{name}.*"):
        try:
            age = time.time() - old.lstat().st_mtime
            if str(old) in _WRITERS or age < _STAGE_GRACE or not old.is_dir() or old.is_symlink():
                continue
            fd = os.open(old, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or age <= 86400:
                    continue  # a live writer's
            _remove_quietly(old)
        finally:
            os.close(fd)


def _remove_quietly(folder: Path) -> None:
    """Remove a gone writer's folder, whatever it holds (a sandbox's scratch of any depth: ``shutil.rmtree``
    recursed into a RecursionError); a sweep never fails the evaluation that runs it."""
    from skybench.harness.files import remove_tree

    try:
        remove_tree(folder)
    except Exception:  # noqa: BLE001 - left for a later sweep (a mount still in place, a permission)
        pass


def _swap(new: Path, rdir: Path) -> None:
    """Put folder ``new`` at ``rdir``; the old ``rdir`` ends at ``new``'s path (the caller removes it)."""
    if not rdir.exists() and not rdir.is_symlink():
        os.rename(new, rdir)
    elif not _exchange(new, rdir):  # no atomic exchange here: the old record aside, the new one in
        aside = Path(tempfile.mkdtemp(prefix=f"{_STAGE}{rdir.name}.old.", dir=rdir.parent)) / "record"
        os.rename(rdir, aside)
        try:
            os.rename(new, rdir)
        except BaseException:
            os.rename(aside, rdir)
            raise
        os.rename(aside, new)
        aside.parent.rmdir()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unsupported."""
    import ctypes
    import errno

    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
