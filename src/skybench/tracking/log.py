"""The ``log`` stage: publish evaluation records to MLflow, idempotently.

Run after every ``evaluate`` (DVC may restore evaluation records from its run-cache without running any
code, so this stage always runs) and by hand after a tracking-server outage (``skybench log DIR``)."""

from __future__ import annotations

import json
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

from skybench.harness.record import RECORD, EvaluationRecord, RecordError, read_record, record_dir
from skybench.tracking import find_evaluation, latest_evaluation, log_evaluation
from skybench.tracks import Track, load_track

TAGS = ("submission_sha256", "release_sha256", "real_release_sha256", "track_sha256", "scorer_sha256",
        "skybench_version", "git_commit", "device", "failure_kind", "submitted")
KEY = ("real_release_sha256", "track_sha256", "scorer_sha256", "skybench_version")  # with the two shas: one result


def publish_record(rdir: Path, track: str | Track | None = None) -> str | None:
    """Log one record unless MLflow already has it (same key, identity and outcome); return the new run id,
    or None if it was there.

    The organiser's full record (``private/<record>/``, :mod:`skybench.harness.visibility`) goes to the organiser
    experiment first, then the participant view to ``skybench-<track>``: only the metrics of
    :func:`participant_view` and the files of :func:`participant_artifacts`, whatever else the folder holds.
    A record (or organiser's record) that does not validate raises :class:`RecordError` naming the file."""
    from skybench.harness.visibility import participant_artifacts, participant_view

    rec = read_record(Path(rdir) / RECORD)
    t = track if isinstance(track, Track) else load_track(track or _track_of(Path(rdir)))
    track = t.name
    tags = {k: str(getattr(rec, k)) for k in TAGS}
    new_org = _publish_organiser(track, Path(rdir), rec, tags)
    if _logged(track, rec, None):
        return new_org
    shown = participant_view(t, rec.metrics)
    allowed = set(participant_artifacts(t)) - {RECORD, "metrics.json"}
    with tempfile.TemporaryDirectory(prefix="skybench-view-") as tmp:
        # the record and metrics files rewritten from the participant view, whatever the folder's copies hold
        (Path(tmp) / RECORD).write_text(rec.model_copy(update={"metrics": shown}).to_json(with_run=True))
        (Path(tmp) / "metrics.json").write_text(json.dumps(shown, indent=2, sort_keys=True) + "\n")
        artifacts = [*sorted(Path(tmp).iterdir()),
                     *[p for p in sorted(Path(rdir).iterdir()) if p.is_file() and p.name in allowed]]
        return log_evaluation(track, team=rec.team, name=rec.name, fmt=rec.format, status=rec.status,
                              metrics=shown, tags=tags, artifacts=artifacts, reason=rec.reason,
                              start_time=_millis(rec.evaluated))


def _millis(when: str) -> int | None:
    """A record's ``evaluated`` time in ms since the epoch; None (now) when it has none (restored from DVC's cache,
    or written by an older skybench) or it is not a time with a zone."""
    try:
        t = datetime.fromisoformat(when)
    except ValueError:
        return None
    return round(t.timestamp() * 1000) if t.tzinfo is not None else None


def _logged(track: str, rec: EvaluationRecord, experiment: str | None) -> bool:
    """Whether ``experiment`` (default: the participant one) has this record (same key, identity and outcome)
    where logging it again changes nothing: as the entry's latest run, or with a later run of the entry than the
    record's own time (a stale copy of the record, from another records folder). A record of a folder set back
    to an earlier version is newer than the entry's latest run: it is logged again, and the board shows it."""
    run = find_evaluation(track, rec.submission_sha256, rec.release_sha256, experiment=experiment,
                          match={k: str(getattr(rec, k)) for k in (*KEY, "status", "failure_kind")},
                          team=rec.team, name=rec.name)
    if run is None:
        return False
    latest = latest_evaluation(track, rec.release_sha256, rec.team, rec.name, experiment=experiment)
    when = _millis(rec.evaluated)
    return latest is None or latest.info.run_id == run.info.run_id or (
        when is not None and when <= latest.info.start_time)


def _publish_organiser(track: str, rdir: Path, rec: EvaluationRecord, tags: dict[str, str]) -> str | None:
    """Log the full record to the organiser experiment unless it is there; its folder's record when it is of
    the same submission, release and outcome as ``rec`` (else a stale one, or none: the participant record is
    used). An organiser's record that is there but does not validate raises :class:`RecordError`."""
    from skybench.harness.visibility import private_dir
    from skybench.tracking import ensure_organiser_experiment, organiser_experiment

    if _logged(track, rec, organiser_experiment(track)):
        return None
    priv, full, folder = private_dir(rdir), rec, rdir
    org = read_record(priv / RECORD) if (priv / RECORD).exists() else None
    same = ("submission_sha256", "release_sha256", *KEY, "status", "team", "name")
    if org is not None and all(getattr(org, k) == getattr(rec, k) for k in same):
        full, folder = org, priv
    ensure_organiser_experiment(track)
    artifacts = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return log_evaluation(track, team=full.team, name=full.name, fmt=full.format, status=full.status,
                          metrics=full.metrics, tags=tags, artifacts=artifacts, reason=full.reason,
                          experiment=organiser_experiment(track), start_time=_millis(full.evaluated or rec.evaluated))


def publish_all(evaluations: Path, track: str | None = None) -> tuple[int, int]:
    """Publish every record under ``evaluations``; return (newly logged, already there).

    A record is published only from its own folder (:func:`skybench.harness.record.record_dir` of its team and
    name): not from evaluate's staging folders, nor from a folder of the layout before percent-encoding
    (``<team>__<name>``), which would otherwise come after, and override, the current record. A record that
    does not validate is left out and the others are published; then :class:`RecordError` says which were
    left out, one line each."""
    new = old = 0
    rejected: list[str] = []
    for path in sorted(Path(evaluations).glob(f"*/{RECORD}")):
        if path.parent.name.startswith("."):  # a record being written
            continue
        try:
            head = read_record(path)
        except RecordError as exc:
            rejected.append(str(exc))
            continue
        if record_dir(path.parent.parent, head.team, head.name) != path.parent:
            warnings.warn(f"{path.parent}: not the record folder of the team and name in its {RECORD} (a stale "
                          f"record of an older layout, or moved by hand); not published, remove it", stacklevel=2)
            continue
        try:
            logged = publish_record(path.parent, track)
        except RecordError as exc:  # its organiser's record
            rejected.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - what the store refused of this record: the others go on
            rejected.append(f"{path}: not logged to MLflow: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            continue
        if logged:
            new += 1
        else:
            old += 1
    if rejected:
        raise RecordError(f"{len(rejected)} evaluation record(s) not published ({new} newly logged, {old} already "
                          "in MLflow):\n" + "\n".join(rejected))
    return new, old


def _track_of(rdir: Path) -> str:
    # results/<track>/evaluations/<team>+<name>
    return rdir.resolve().parent.parent.name
