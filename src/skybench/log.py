"""The ``log`` stage: publish evaluation records to MLflow, idempotently.

Run after every ``evaluate`` (DVC may restore evaluation records from its run-cache without running any
code, so this stage always runs) and by hand after a tracking-server outage (``skybench log DIR``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .tracking import find_evaluation, log_evaluation

RECORD = "evaluation.json"
TAGS = ("submission_sha256", "release_sha256", "real_release_sha256", "track_sha256", "scorer_sha256",
        "skybench_version", "git_commit", "device", "failure_kind", "submitted")
KEY = ("real_release_sha256", "track_sha256", "scorer_sha256", "skybench_version")  # with the two shas: one result


def publish_record(rdir: Path, track: str | None = None) -> str | None:
    """Log one record unless MLflow already has it (same key, identity and outcome); return the new run id,
    or None if it was there."""
    rec = json.loads((Path(rdir) / RECORD).read_text())
    track = track or _track_of(Path(rdir))
    run = find_evaluation(track, rec["submission_sha256"], rec["release_sha256"],
                          match={k: str(rec.get(k, "")) for k in (*KEY, "status", "failure_kind")})
    if run is not None and (run.data.params.get("team"), run.data.params.get("name")) == (rec["team"], rec["name"]):
        return None
    artifacts = [p for p in sorted(Path(rdir).iterdir()) if p.is_file() and not p.name.startswith(".")]
    return log_evaluation(track, team=rec["team"], name=rec["name"], fmt=rec["format"], status=rec["status"],
                          metrics=rec["metrics"], tags={k: str(rec.get(k, "")) for k in TAGS},
                          artifacts=artifacts, reason=rec.get("reason", ""))


def publish_all(evaluations: Path, track: str | None = None) -> tuple[int, int]:
    """Publish every record under ``evaluations``; return (newly logged, already there).

    A record is published only from its own folder (:func:`skybench.evaluate.record_dir` of its team and
    name): not from evaluate's staging folders, nor from a folder of the layout before percent-encoding
    (``<team>__<name>``), which would otherwise come after, and override, the current record."""
    from .evaluate import record_dir

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
