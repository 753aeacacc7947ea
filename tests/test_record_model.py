"""The evaluation record is one typed model (harness/record.py): what ``evaluate`` writes validates and reads
back byte for byte, in the format records always had; a record that does not validate is refused by ``log``
with one line naming its file, and every other record is still published."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import csv_submission, mlflow_store
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness import evaluate as ev
from skybench.harness.record import RECORD, RUN_FIELDS, RUN_FILE, EvaluationRecord, RecordError, read_record, record_dir
from skybench.harness.submission import load_submission
from skybench.harness.visibility import private_dir
from skybench.release.reader import open_release
from skybench.tracking import experiment_name, organiser_experiment
from skybench.tracking.log import publish_all, publish_record

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow

TRACK = "lens-space"
HOSTILE = ("t\udcff\u202e%+.", "../n~ ü")  # a lone surrogate (undecodable path byte), bidi override, separators
# The keys each path of evaluate writes, as before the model existed (evaluate._finish, _plan, _crashed).
FINISHED_KEYS = {"team", "name", "format", "status", "reason", "submission_sha256", "release_sha256", "device",
                 "skybench_version", "git_commit", "metrics", "seconds", "n", "real_release_sha256", "failure_kind",
                 "submitted", "track_sha256", "scorer_sha256", "evaluated"}
REFUSED_KEYS = FINISHED_KEYS - {"seconds", "n", "real_release_sha256", "failure_kind"}
CRASHED_KEYS = REFUSED_KEYS - {"submitted", "track_sha256", "scorer_sha256"}


@pytest.fixture(scope="module")
def evaluations(tiny_space_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``evaluations/`` (and its ``private/``) with records of every kind: two finished, two refused (a
    submission.yaml that cannot be read; a hostile identity it disagrees with) and one whose scoring crashed."""
    tmp = tmp_path_factory.mktemp("records")
    release = open_release(tiny_space_release)
    ids = release.meta("test")["id"].to_numpy()
    labels = release.hidden().truth(ids, ["is_lens"])["is_lens"].to_numpy(float)
    good = csv_submission(tmp / "subs/good", "good", ids, labels)
    other = csv_submission(tmp / "subs/other", "other", ids, labels[::-1])
    hostile = csv_submission(tmp / "subs/hostile", "hostile", ids, labels)
    refused = tmp / "subs/refused"
    refused.mkdir(parents=True)
    (refused / "submission.yaml").write_text("team: tests\nname: refused\ntrack: lens-space\nformat: nonsense\n")
    crashed = csv_submission(tmp / "subs/crashed", "crashed", ids, labels)
    out = tmp / "evaluations"

    def crash(*args: object) -> None:
        raise MemoryError("killed while scoring")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        done = ev.evaluate([good, other, hostile, refused], TRACK, tiny_space_release, out=out, publish=False,
                           identities={hostile: HOSTILE})
        mp.setattr(ev, "score", crash)
        done += ev.evaluate([crashed], TRACK, tiny_space_release, out=out, publish=False)
    assert [o.status for o in done] == ["FINISHED", "FINISHED", "FAILED", "FAILED", "FAILED"], done
    return out


def _copy(evaluations: Path, dest: Path, names: list[str]) -> Path:
    """A fresh ``evaluations/`` holding the records of ``names`` (and their organiser's records)."""
    out = dest / "evaluations"
    for name in names:
        shutil.copytree(record_dir(evaluations, "tests", name), record_dir(out, "tests", name))
        priv = private_dir(record_dir(evaluations, "tests", name))
        if priv.is_dir():
            shutil.copytree(priv, private_dir(record_dir(out, "tests", name)))
    return out


def test_records_written_by_evaluate_validate_and_round_trip_byte_identically(evaluations):
    stored = tuple(ev._storable(part) for part in HOSTILE)  # the lone surrogate filed under prefix and sha256
    assert stored[0] != HOSTILE[0] and stored[1] == HOSTILE[1]
    cases = {("tests", "good"): FINISHED_KEYS, stored: REFUSED_KEYS, ("invalid", "refused"): REFUSED_KEYS,
             ("tests", "crashed"): CRASHED_KEYS}
    assert (private_dir(record_dir(evaluations, "tests", "good")) / RECORD).is_file()
    for (team, name), keys in cases.items():
        rdir = record_dir(evaluations, team, name)
        for path in (rdir / RECORD, private_dir(rdir) / RECORD):
            if path.parent != rdir and not path.exists():  # a new failure has no organiser's record
                continue
            text = path.read_text()
            rec = read_record(path)  # with the run facts of run.json
            assert rec.to_json() == text, path  # byte for byte
            assert (rec.team, rec.name) == (team, name)
            raw, run = json.loads(text), json.loads((path.parent / RUN_FILE).read_text())
            assert set(raw) | set(run) == keys, (path, (set(raw) | set(run)) ^ keys)  # no key added nor lost
            assert set(run) <= set(RUN_FIELDS) and not set(raw) & set(RUN_FIELDS)  # run facts beside the record
            assert rec.run_json() == (path.parent / RUN_FILE).read_text()
            # the format of every record so far: sorted keys, indent 2, a final newline
            assert json.dumps(raw, indent=2, sort_keys=True, default=float) + "\n" == text
    finished = read_record(record_dir(evaluations, "tests", "good") / RECORD)
    assert finished.status == "FINISHED" and finished.n == 64 and finished.metrics
    refused = read_record(record_dir(evaluations, "invalid", "refused") / RECORD)  # no yaml: no team
    assert refused.status == "FAILED" and refused.format == "?" and "nonsense" in refused.reason
    assert "MemoryError" in read_record(record_dir(evaluations, "tests", "crashed") / RECORD).reason


def test_metrics_are_written_as_json_dumps_default_float_wrote_them():
    """numpy scalars from a scorer: the same text as the writer before the model (``default=float``)."""
    metrics = {"f32": np.float32(0.1), "f64": np.float64(1 / 3), "i64": np.int64(3), "int": 7, "float": 0.5,
               "nan": float("nan"), "inf": float("inf")}
    fields = {"team": "t", "name": "n", "format": "onnx", "status": "FINISHED", "reason": "",
              "submission_sha256": "a" * 64, "release_sha256": "b" * 64, "metrics": metrics, "n": 3, "seconds": 1.5}
    old = json.dumps(fields, indent=2, sort_keys=True, default=float) + "\n"
    assert EvaluationRecord.model_validate(fields).to_json(with_run=True) == old


def _set(raw: dict, key: str, value: object) -> dict:
    return raw | {key: value}


def _drop(raw: dict, key: str) -> dict:
    return {k: v for k, v in raw.items() if k != key}


BROKEN = {  # how a record goes wrong -> the field the one-line reason must name
    "missing team": (lambda r: _drop(r, "team"), "team"),
    "missing metrics": (lambda r: _drop(r, "metrics"), "metrics"),
    "extra field": (lambda r: _set(r, "rank", 1), "rank"),
    "metric as text": (lambda r: _set(r, "metrics", {**r["metrics"], "auroc": "0.99"}), "metrics.auroc"),
    "status unknown": (lambda r: _set(r, "status", "WON"), "status"),
    "count as float": (lambda r: _set(r, "n", 64.0), "n"),
    "sha as null": (lambda r: _set(r, "release_sha256", None), "release_sha256"),
    "not an object": (lambda r: [r], "the record"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_an_invalid_record_is_refused_in_one_line_naming_the_file_and_field(evaluations, tmp_path, case):
    out = _copy(evaluations, tmp_path, ["good"])
    rdir = record_dir(out, "tests", "good")
    breaking, field = BROKEN[case]
    (rdir / RECORD).write_text(json.dumps(breaking(json.loads((rdir / RECORD).read_text()))))
    with pytest.raises(RecordError) as refused:
        read_record(rdir / RECORD)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{rdir / RECORD}: ") and f"{field}: " in message, message
    with pytest.raises(RecordError) as refused:  # before anything reaches MLflow
        publish_record(rdir, TRACK)
    assert str(refused.value) == message


def test_the_leaderboard_stage_writes_the_board_of_the_others_then_fails_for_a_record_left_out(
        evaluations, tmp_path, monkeypatch, tiny_space_release):
    """One entry's record that cannot be published does not hold back the board (every other row is current),
    and the stage still exits 2, as evaluate does for unlogged records: `dvc repro` must not lock a board that
    lacks it, or nothing would publish it again."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    out = _copy(evaluations, tmp_path / "p", ["good", "other"])
    bad = record_dir(out, "tests", "good") / RECORD
    bad.write_text(json.dumps(json.loads(bad.read_text()) | {"rank": 1}))
    board = tmp_path / "board"
    res = CliRunner().invoke(app, ["leaderboard", TRACK, "--publish", str(out), "--release", str(tiny_space_release),
                                   "--write", str(board), "--format", "csv"])
    assert res.exit_code == 2 and f"{bad}: not a valid evaluation record" in res.output, res.output
    assert "the board was written without them" in res.output
    rows = json.loads((board / "metrics.json").read_text())
    assert "other" in json.dumps(rows) and "good" not in json.dumps(rows), rows


@pytest.mark.parametrize("where", ["participant", "organiser"])
def test_an_invalid_record_is_left_out_and_the_others_are_published(evaluations, tmp_path, monkeypatch, where):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    out = _copy(evaluations, tmp_path / "p", ["good", "other"])
    rdir = record_dir(out, "tests", "good")
    bad = rdir / RECORD if where == "participant" else private_dir(rdir) / RECORD
    bad.write_text(json.dumps(json.loads(bad.read_text()) | {"rank": 1}))
    before = {p: p.read_bytes() for p in sorted(out.parent.rglob("*")) if p.is_file()}

    with pytest.raises(RecordError) as every:
        publish_all(out, TRACK)
    header, *lines = str(every.value).splitlines()
    assert "1 evaluation record(s) not published (1 newly logged" in header
    assert len(lines) == 1 and lines[0].startswith(f"{bad}: not a valid evaluation record (rank: "), lines
    c = MlflowClient()
    runs = [r for exp in (experiment_name(TRACK), organiser_experiment(TRACK))
            for r in c.search_runs([c.get_experiment_by_name(exp).experiment_id])]
    # the other record was published to both experiments; the bad one to neither
    assert sorted(r.data.params["name"] for r in runs) == ["other", "other"]
    after = {p: p.read_bytes() for p in sorted(out.parent.rglob("*")) if p.is_file()}
    assert after == before  # nothing on disk was changed or removed


@pytest.mark.parametrize("how", ["cut short", "nested too deeply", "run facts nested too deeply"])
def test_skybench_log_reports_an_invalid_record_without_a_traceback(evaluations, tmp_path, monkeypatch, how):
    """A record cut short, or arrays nested past Python's recursion limit (json raised RecursionError, which
    stopped `skybench log` before the other records, and made `evaluate` blame the submission)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    out = _copy(evaluations, tmp_path / "p", ["good", "other"])
    bad = record_dir(out, "tests", "good") / RECORD
    deep = "[" * 200_000 + "]" * 200_000
    if how == "run facts nested too deeply":  # no run facts: the record itself is read and published
        (bad.parent / RUN_FILE).write_text(deep)
        assert read_record(bad).team == "tests"
        assert CliRunner().invoke(app, ["log", str(out), "--track", TRACK]).exit_code == 0
        return
    bad.write_text(bad.read_text()[:-20] if how == "cut short" else deep)
    result = CliRunner().invoke(app, ["log", str(out), "--track", TRACK])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and f"{bad}: not an evaluation record, invalid JSON" in result.output
    c = MlflowClient()
    [run] = c.search_runs([c.get_experiment_by_name(experiment_name(TRACK)).experiment_id])
    assert run.data.params["name"] == "other"  # the valid record was published


def test_an_invalid_record_is_evaluated_again_not_reused(evaluations, tmp_path):
    out = _copy(evaluations, tmp_path, ["good"])
    rdir = record_dir(out, "tests", "good")
    rec = read_record(rdir / RECORD)
    sub = load_submission(evaluations.parent / "subs/good")
    key = {k: getattr(rec, k) for k in ("track_sha256", "scorer_sha256", "skybench_version")}
    assert ev._same_record(rdir, sub, rec.release_sha256, rec.real_release_sha256, key)
    (rdir / RECORD).write_text(json.dumps(json.loads((rdir / RECORD).read_text()) | {"rank": 1}))
    assert not ev._same_record(rdir, sub, rec.release_sha256, rec.real_release_sha256, key)
