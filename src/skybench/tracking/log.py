"""The ``log`` stage: publish evaluation records to MLflow, idempotently.

Run after every ``evaluate`` (DVC may restore evaluation records from its run-cache without running any
code, so this stage always runs) and by hand after a tracking-server outage (``skybench log DIR``)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

from skybench.tracking import find_evaluation, log_evaluation
from skybench.tracks import Track, load_track

RECORD = "evaluation.json"
TAGS = ("submission_sha256", "release_sha256", "real_release_sha256", "track_sha256", "scorer_sha256",
        "skybench_version", "git_commit", "device", "failure_kind", "submitted")
KEY = ("real_release_sha256", "track_sha256", "scorer_sha256", "skybench_version")  # with the two shas: one result


def publish_record(rdir: Path, track: str | Track | None = None) -> str | None:
    """Log one record unless MLflow already has it (same key, identity and outcome); return the new run id,
    or None if it was there.

    The organiser's full record (``private/<record>/``, :mod:`skybench.harness.visibility`) goes to the organiser
    experiment first, then the participant view to ``skybench-<track>``: only the metrics of
    :func:`participant_view` and the files of :func:`participant_artifacts`, whatever else the folder holds."""
    from skybench.harness.visibility import participant_artifacts, participant_view

    rec = json.loads((Path(rdir) / RECORD).read_text()) | _run_facts(Path(rdir))
    t = track if isinstance(track, Track) else load_track(track or _track_of(Path(rdir)))
    track = t.name
    tags = {k: str(rec.get(k, "")) for k in TAGS}
    new_org = _publish_organiser(track, Path(rdir), rec, tags)
    if _logged(track, rec, None):
        return new_org
    shown = participant_view(t, rec["metrics"])
    allowed = set(participant_artifacts(t)) - {RECORD, "metrics.json"}
    with tempfile.TemporaryDirectory(prefix="skybench-view-") as tmp:
        # the record and metrics files rewritten from the participant view, whatever the folder's copies hold
        (Path(tmp) / RECORD).write_text(json.dumps(rec | {"metrics": shown}, indent=2, sort_keys=True) + "\n")
        (Path(tmp) / "metrics.json").write_text(json.dumps(shown, indent=2, sort_keys=True) + "\n")
        artifacts = [*sorted(Path(tmp).iterdir()),
                     *[p for p in sorted(Path(rdir).iterdir()) if p.is_file() and p.name in allowed]]
        return log_evaluation(track, team=rec["team"], name=rec["name"], fmt=rec["format"], status=rec["status"],
                              metrics=shown, tags=tags, artifacts=artifacts, reason=rec.get("reason", ""))


def _run_facts(rdir: Path) -> dict:
    """The record's run-specific facts (wall time, git commit) from its ``run.json``; {} when there is none
    (e.g. a record restored from DVC's cache, which leaves it out)."""
    from skybench.harness.evaluate import RUN_FIELDS, RUN_FILE

    try:
        facts = json.loads((rdir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: facts[k] for k in RUN_FIELDS if k in facts} if isinstance(facts, dict) else {}


def _logged(track: str, rec: dict, experiment: str | None) -> bool:
    """Whether ``experiment`` (default: the participant one) has this record: same key, identity and outcome."""
    run = find_evaluation(track, rec["submission_sha256"], rec["release_sha256"], experiment=experiment,
                          match={k: str(rec.get(k, "")) for k in (*KEY, "status", "failure_kind")})
    return run is not None and (run.data.params.get("team"), run.data.params.get("name")) == (rec["team"], rec["name"])


def _publish_organiser(track: str, rdir: Path, rec: dict, tags: dict[str, str]) -> str | None:
    """Log the full record to the organiser experiment unless it is there; its folder's record when it is of
    the same submission, release and outcome as ``rec`` (else a stale one: the participant record is used)."""
    from skybench.harness.visibility import private_dir
    from skybench.tracking import ensure_organiser_experiment, organiser_experiment

    if _logged(track, rec, organiser_experiment(track)):
        return None
    priv, full, folder = private_dir(rdir), rec, rdir
    try:
        org = json.loads((priv / RECORD).read_text())
    except (OSError, ValueError):
        org = None
    same = ("submission_sha256", "release_sha256", *KEY, "status", "team", "name")
    if org is not None and all(org.get(k, "") == rec.get(k, "") for k in same):
        full, folder = org, priv
    ensure_organiser_experiment(track)
    artifacts = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return log_evaluation(track, team=full["team"], name=full["name"], fmt=full["format"], status=full["status"],
                          metrics=full["metrics"], tags=tags, artifacts=artifacts, reason=full.get("reason", ""),
                          experiment=organiser_experiment(track))


def publish_all(evaluations: Path, track: str | None = None) -> tuple[int, int]:
    """Publish every record under ``evaluations``; return (newly logged, already there).

    A record is published only from its own folder (:func:`skybench.harness.evaluate.record_dir` of its team and
    name): not from evaluate's staging folders, nor from a folder of the layout before percent-encoding
    (``<team>__<name>``), which would otherwise come after, and override, the current record."""
    from skybench.harness.evaluate import record_dir

    new = old = 0
    for rec in sorted(Path(evaluations).glob(f"*/{RECORD}")):
        if rec.parent.name.startswith("."):  # a record being written
            continue
        try:
            head = json.loads(rec.read_text())
            own = record_dir(rec.parent.parent, str(head["team"]), str(head["name"]))
        except (OSError, ValueError, KeyError, TypeError):
            own = None
        if own != rec.parent:
            warnings.warn(f"{rec.parent}: not the record folder of the team and name in its {RECORD} (a stale "
                          f"record of an older layout, or moved by hand); not published, remove it", stacklevel=2)
            continue
        if publish_record(rec.parent, track):
            new += 1
        else:
            old += 1
    return new, old


def _track_of(rdir: Path) -> str:
    # results/<track>/evaluations/<team>+<name>
    return rdir.resolve().parent.parent.name
