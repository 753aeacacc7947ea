"""Entries cannot be hijacked, records are never half-written, infrastructure failures and stale scores do not
stick, and ties go to the earliest submission of the scored version (issue 13, "Entries can be hijacked")."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, bwrap_works, csv_submission, mlflow_store, python_submission
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from skybench.harness import evaluate as ev
from skybench.harness import record as rec_io
from skybench.harness.evaluate import evaluate, identity, record_dir, submission_time
from skybench.harness.submission import load_submission
from skybench.harness.visibility import private_dir
from skybench.release import open_release
from skybench.tracking import experiment_name
from skybench.tracking.leaderboard import leaderboard
from skybench.tracks import load_track

# Sandboxed end-to-end runs of the trust model's attacks: the full suite (`make test`), not the fast lane.
pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root of its own (a copy of benchmarks/, an empty submissions/) and an MLflow store."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "benchmarks", root / "benchmarks")
    (root / "submissions").mkdir()
    monkeypatch.setenv("SKYBENCH_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return root


def _ids(release: Path) -> np.ndarray:
    return open_release(release).meta("test")["id"].to_numpy()


def _labels(release: Path, ids: np.ndarray) -> np.ndarray:
    meta = open_release(release).hidden("test").meta().set_index("id")
    return meta.loc[ids, "is_lens"].to_numpy(float)


def _snapshot(rdir: Path) -> dict[str, bytes]:
    return {p.relative_to(rdir).as_posix(): p.read_bytes() for p in sorted(rdir.rglob("*")) if p.is_file()}


def _run(folders: list[Path], release: Path, out: Path, **kw: object) -> dict[tuple[str, str], ev.Outcome]:
    return {(o.team, o.name): o for o in evaluate(folders, "lens-space", release, out=out, **kw)}


# --- identity: the path decides whose entry it is -----------------------------------------------------------

def test_a_verbatim_copy_of_another_teams_folder_does_not_delete_its_run(project, tiny_space_release):
    """A team copies another team's entry byte for byte into its own folder: it is refused (the yaml names the
    other team) and its FAILED record carries the same submission sha256. MLflow's clean-up of runs of one
    evaluation (``drop_duplicates``) must not take that for the same evaluation and delete the victim's run, nor
    the reuse of results (``find_evaluation``) for the victim's result and evaluate it again."""
    out = project / "results/lens-space/evaluations"
    ids = _ids(tiny_space_release)
    good = csv_submission(project / "submissions/a/finder", "finder", ids, _labels(tiny_space_release, ids),
                          team="a")
    copy = project / "submissions/zz/finder"  # sorted after a: its failure is published last
    shutil.copytree(good, copy)
    for i in range(2):  # and at the next pipeline run, which reuses a's result: the copy's run is not a's
        got = _run([good, copy], tiny_space_release, out)
        assert got[("a", "finder")].status == ("FINISHED", "SKIPPED")[i] and got[("zz", "finder")].status == "FAILED"
        if i == 0:  # the next run is on another evaluator's disk: only MLflow knows a's result
            shutil.rmtree(record_dir(out, "a", "finder"))
        board = leaderboard(load_track("lens-space"))
        a_row = board[(board.team == "a") & (board.name == "finder")]
        assert a_row["status"].tolist() == ["FINISHED"] and a_row["rank"].tolist() == [1], board[["team", "status"]]


@pytest.mark.parametrize("where, claim", [
    ("submissions/b/x", "team: a\nname: finder"),  # another team's name
    ("submissions/b/finder", "team: a\nname: finder"),  # same folder name, other team
    ("submissions/b/x/deeper", "team: b\nname: x"),  # not exactly submissions/<team>/<name>/
    ("submissions/baselines/finder", "team: baselines\nname: finder"),  # a reserved team
    ("submissions/Baselines/finder", "team: Baselines\nname: finder"),  # one in another case
    ("submissions/examples/lens-space/python", "team: a\nname: finder"),
])
def test_a_folder_cannot_file_its_record_under_another_identity(project, tiny_space_release, where, claim):
    out = project / "results/lens-space/evaluations"
    ids = _ids(tiny_space_release)
    good = csv_submission(project / "submissions/a/finder", "finder", ids, _labels(tiny_space_release, ids),
                          team="a")
    first = _run([good], tiny_space_release, out)[("a", "finder")]
    assert first.status == "FINISHED"
    before = _snapshot(first.record)
    board_before = leaderboard(load_track("lens-space"))

    folder = project / where
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ids[:3], "score": 0.0}).to_csv(folder / "scores.csv", index=False)  # a failing entry
    (folder / "submission.yaml").write_text(f"{claim}\ntrack: lens-space\nformat: predictions\nmodel: scores.csv\n")
    (outcome,) = evaluate([folder], "lens-space", tiny_space_release, out=out)

    assert outcome.status == "FAILED" and (outcome.team, outcome.name) != ("a", "finder")
    assert "\n" not in outcome.reason and ("submission.yaml says" in outcome.reason or "must be" in outcome.reason
                                           or "reserved" in outcome.reason)
    rec = json.loads((outcome.record / "evaluation.json").read_text())
    assert (rec["team"], rec["name"], rec["status"]) == (outcome.team, outcome.name, "FAILED")
    assert outcome.record != first.record and _snapshot(first.record) == before  # A's record and predictions
    board = leaderboard(load_track("lens-space"))
    a_row = board[(board.team == "a") & (board.name == "finder")]
    pd.testing.assert_frame_equal(a_row.reset_index(drop=True), board_before.reset_index(drop=True))
    intruder = board[(board.team == outcome.team) & (board.name == outcome.name)]
    assert intruder["status"].tolist() == ["FAILED"] and intruder["rank"].isna().all()


def test_path_identity_rules(project):
    from skybench.training import write_submission

    def ident(rel: str, text: str) -> tuple[str, str, str]:
        folder = project / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.skops").write_text("")
        (folder / "submission.yaml").write_text(text)
        return identity(folder, load_submission(folder).spec)

    base = project / "baselines/lens/knn/lens-space"
    base.mkdir(parents=True)
    write_submission(base, "knn", "lens-space", "sklearn", "model.skops", "k nearest neighbours")
    (base / "model.skops").write_text("")
    assert identity(base, load_submission(base).spec) == ("baselines", "knn", "")  # as train.py writes it
    spec = "track: lens-space\nformat: sklearn\nmodel: model.skops\n"
    assert ident("submissions/examples/lens-space/sklearn", f"team: examples\nname: sklearn-example\n{spec}") == \
        ("examples", "sklearn-example", "")
    team, name, why = ident("submissions/examples/lens-ground/sklearn", f"team: examples\nname: sklearn-example\n"
                                                                        f"{spec}")
    assert (team, name) == ("examples", "sklearn-example") and "track" in why  # the path says lens-ground
    assert ident("baselines/lens/knn/lens-ground", f"team: baselines\nname: knn\n{spec}")[2]
    assert ident("submissions/t/n", f"team: t\nname: n\n{spec}") == ("t", "n", "")
    team, name, why = ident("submissions/y/z", f"team: x\nname: z\n{spec}")
    assert (team, name) == ("y", "z")
    assert why == "submission.yaml says team 'x', but the folder submissions/y/z/ belongs to team 'y'"
    deep = Path("submissions/b", *["d"] * 1100)  # a folder nested deep: still b's, with a bounded name
    team, name, _, why = ev._path_identity(deep)
    assert team == "b" and len(name) < 200 and "must be submissions/<team>/<name>/" in why
    assert name != ev._path_identity(Path("submissions/b", *["d"] * 1101))[1]
    # Outside the project's submission roots: the identity given by the caller (e.g. an upload server).
    outside = project.parent / "upload"
    outside.mkdir()
    (outside / "model.skops").write_text("")
    (outside / "submission.yaml").write_text(f"team: x\nname: z\n{spec}")
    s = load_submission(outside).spec
    assert identity(outside, s) == ("x", "z", "")
    assert identity(outside, s, ("x", "z")) == ("x", "z", "")
    assert identity(outside, s, ("u", "z"))[:2] == ("u", "z") and "team 'x'" in identity(outside, s, ("u", "z"))[2]


def test_given_identity_files_an_upload_under_its_uploader(project, tiny_space_release, tmp_path):
    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "upload", "finder", ids, np.zeros(len(ids)), team="a")  # claims a/finder
    out = tmp_path / "evals"
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out, identities={sub: ("mallory", "finder")})
    assert (o.team, o.name, o.status) == ("mallory", "finder", "FAILED") and "team 'a'" in o.reason
    assert o.record == record_dir(out, "mallory", "finder")


# --- record folders: one per identity ---------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.tuples(st.text(), st.text()), st.tuples(st.text(), st.text()))
@example(("lens finders", "m"), ("lens/finders", "m"))
@example(("lens finders", "m"), ("lens-finders", "m"))
@example(("x__y", "z"), ("x", "y__z"))
@example(("x__y,z", "n"), ("x,y__z", "n"))
@example(("x", "y+z"), ("x+y", "z"))
@example(("a" * 300, "b"), ("a" * 300, "c"))
@example((".", ""), ("..", ""))
def test_record_dir_is_injective_and_a_valid_folder_name(a, b):
    da, db = record_dir(Path("out"), *a), record_dir(Path("out"), *b)
    assert (da == db) == (a == b)
    for d in (da, db):
        assert d.parent == Path("out") and d.name not in ("", ".", "..") and not d.name.startswith(".")
        assert "/" not in d.name and "\0" not in d.name and len(os.fsencode(d.name)) <= 255


# --- records are written aside and swapped in whole ---------------------------------------------------------

def test_an_interrupted_record_write_leaves_the_old_record_whole(project, tiny_space_release, monkeypatch):
    out = project / "evals"
    ids = _ids(tiny_space_release)
    folder = csv_submission(project / "submissions/a/finder", "finder", ids, _labels(tiny_space_release, ids),
                            team="a")
    first = _run([folder], tiny_space_release, out)[("a", "finder")]
    before, before_private = _snapshot(first.record), _snapshot(private_dir(first.record))
    assert {"evaluation.json", "metrics.json"} <= set(before)
    assert {"evaluation.json", "predictions.csv", "metrics.json"} <= set(before_private)

    # A new version whose record cannot be swapped in (e.g. the disk fills at that moment).
    pd.DataFrame({"id": ids, "score": np.linspace(0, 1, len(ids))}).to_csv(folder / "scores.csv", index=False)

    def full_disk(a, b):
        raise OSError(errno.ENOSPC, "No space left on device", str(b))

    exchange = rec_io._exchange
    monkeypatch.setattr(rec_io, "_exchange", full_disk)
    [failed] = evaluate([folder], "lens-space", tiny_space_release, out=out)
    assert failed.status == "FAILED" and "No space left" in failed.reason and "previous record is kept" in failed.reason
    assert failed.failure_kind == "infrastructure"  # the machine's failure: retried at the next evaluation
    assert _snapshot(first.record) == before and _snapshot(private_dir(first.record)) == before_private
    for folder_ in (out, private_dir(first.record).parent):  # no half-written record left behind
        assert not [p for p in folder_.iterdir() if p.name.startswith(".")]

    # A crash while the new record is being scored, after files were written into it.
    monkeypatch.setattr(rec_io, "_exchange", exchange)

    def crash(track, ids, predictions, hidden, rdir):
        (rdir / "metrics.json").write_text("{}")
        raise MemoryError("killed while scoring")

    monkeypatch.setattr(ev, "score", crash)
    [crashed] = evaluate([folder], "lens-space", tiny_space_release, out=out)
    # The failure boundary files a complete FAILED record of the new version; nothing half-written survives.
    assert crashed.status == "FAILED" and "MemoryError: killed while scoring" in crashed.reason
    rec = json.loads((first.record / "evaluation.json").read_text())
    assert rec["status"] == "FAILED" and set(_snapshot(first.record)) == {"evaluation.json", "run.json"}
    for folder_ in (out, private_dir(first.record).parent):
        assert not [p for p in folder_.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("atomic", [True, False])
def test_swap_replaces_a_record_whole(tmp_path, monkeypatch, atomic):
    if not atomic:  # a system without renameat2(RENAME_EXCHANGE): old aside, new in, old removed
        monkeypatch.setattr(rec_io, "_exchange", lambda a, b: False)
    rdir = tmp_path / "r"
    rdir.mkdir()
    (rdir / "old.csv").write_text("old")
    new = rec_io._stage(rdir)
    (new / "new.csv").write_text("new")
    rec_io._swap(new, rdir)
    assert sorted(p.name for p in rdir.iterdir()) == ["new.csv"]
    assert (new / "old.csv").read_text() == "old"  # the caller removes it


# --- infrastructure failures are retried; a changed scorer or track re-scores --------------------------------

PREDICT = """
import numpy as np
def load(model_dir):
    return None
def predict(model, batch):
    return batch.sum(axis=(1, 2, 3)).astype("float32")
"""


@pytest.mark.skipif(not bwrap_works(), reason="needs a working bubblewrap")
def test_an_infrastructure_failure_is_retried_until_it_finishes(project, tiny_space_release, tmp_path,
                                                                 monkeypatch):
    sub = python_submission(tmp_path / "subs", "model", PREDICT, team="t")
    out = tmp_path / "evals"
    path = os.environ["PATH"]
    no_bwrap = tmp_path / "bin"
    no_bwrap.mkdir()
    monkeypatch.setenv("PATH", str(no_bwrap))  # the host lost bubblewrap: not the submission's fault
    assert shutil.which("bwrap") is None
    for _ in range(2):  # never taken from the cache: tried again every time
        (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out)
        assert o.status == "FAILED" and o.failure_kind == "infrastructure" and "bubblewrap" in o.reason
        assert json.loads((o.record / "evaluation.json").read_text())["failure_kind"] == "infrastructure"
    c = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = c.search_runs([c.get_experiment_by_name(experiment_name("lens-space")).experiment_id])
    assert run.data.tags["failure_kind"] == "infrastructure" and run.data.tags["status"] == "FAILED"
    board = leaderboard(load_track("lens-space"))
    assert board["status"].tolist() == ["FAILED"] and "infrastructure" in board["reason"].iloc[0]

    monkeypatch.setenv("PATH", path)  # bubblewrap is back
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out)
    assert o.status == "FINISHED" and o.failure_kind == ""
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out)
    assert o.status == "SKIPPED"  # a real result is cached
    board = leaderboard(load_track("lens-space"))
    assert board["status"].tolist() == ["FINISHED"] and board["rank"].tolist() == [1]

    before = _snapshot(o.record)  # a forced re-run that the machine cannot do keeps the good record
    monkeypatch.setenv("PATH", str(no_bwrap))
    (f,) = evaluate([sub], "lens-space", tiny_space_release, out=out, force=True)
    assert f.status == "FAILED" and f.failure_kind == "infrastructure" and f.record is None
    assert _snapshot(o.record) == before
    assert leaderboard(load_track("lens-space"))["status"].tolist() == ["FINISHED"]


def _edit_track(project: Path) -> None:
    path = project / "benchmarks/lens-space.yaml"
    path.write_text(path.read_text().replace("find galaxy-galaxy strong lenses.",
                                             "find galaxy-galaxy strong lenses (v2)."))


def _bump_scorer(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    monkeypatch.setattr(ev, "scorer_sha256", lambda: "f" * 64)


def _bump_version(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    monkeypatch.setattr(ev, "__version__", "999.0")


@pytest.mark.parametrize("change", ["track", "scorer", "version"])
@pytest.mark.slow
def test_a_changed_track_scorer_or_version_rescores(project, tiny_space_release, tmp_path, monkeypatch, change):
    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "sub", "m", ids, _labels(tiny_space_release, ids))
    out, fresh = tmp_path / "evals", tmp_path / "fresh"
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out)
    assert o.status == "FINISHED"
    old = json.loads((o.record / "evaluation.json").read_text())
    assert evaluate([sub], "lens-space", tiny_space_release, out=out)[0].status == "SKIPPED"  # the record
    assert evaluate([sub], "lens-space", tiny_space_release, out=fresh)[0].status == "SKIPPED"  # MLflow

    if change == "track":
        _edit_track(project)
    elif change == "scorer":
        _bump_scorer(monkeypatch, project)
    else:
        _bump_version(monkeypatch, project)
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out, publish=False)  # not from the old record
    assert o.status == "FINISHED"
    new = json.loads((o.record / "evaluation.json").read_text())
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=tmp_path / "other")  # not taken from MLflow
    assert o.status == "FINISHED"
    key = {"track": "track_sha256", "scorer": "scorer_sha256", "version": "skybench_version"}[change]
    assert new[key] != old[key] and new["submitted"] == old["submitted"]  # the same version: same time
    c = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = c.search_runs([c.get_experiment_by_name(experiment_name("lens-space")).experiment_id])
    assert sorted(r.data.tags[key] for r in runs) == sorted({old[key], new[key]})  # one run per key


def test_scorer_hash_covers_the_scoring_modules_and_their_imports():
    pkg = Path(ev.__file__).resolve().parents[1]
    names = {p.relative_to(pkg).as_posix() for p in ev.scorer_files()}
    assert {"harness/score.py", "harness/visibility.py", "tasks/lens/score.py", "tasks/photoz/score.py",
            "tasks/enhance/score.py",
            "tasks/lens/metrics.py", "tasks/photoz/metrics.py", "tasks/enhance/metrics.py", "common.py",
            "tasks/generate/score.py", "tasks/generate/metrics.py",
            "tasks/__init__.py", "tasks/base.py", "release/reader.py", "tracks.py"} <= names
    assert "harness/evaluate.py" not in names and "cli.py" not in names


# --- ties: the submission time of the scored version, FINISHED runs only --------------------------------------

@pytest.mark.slow
def test_a_failed_placeholder_does_not_reserve_an_earlier_time(project, tiny_space_release, tmp_path):
    ids = _ids(tiny_space_release)
    labels = _labels(tiny_space_release, ids)
    out = tmp_path / "evals"
    t = [datetime(2030, 1, d, tzinfo=timezone.utc) for d in (1, 2, 3, 4)]
    p = csv_submission(tmp_path / "p", "m", ids[:5], np.zeros(5), team="p")  # a placeholder: FAILED
    q = csv_submission(tmp_path / "q", "m", ids, labels, team="q")
    lone = csv_submission(tmp_path / "lone", "m", ids[:5], np.zeros(5), team="lone")  # only ever fails
    _run([p, lone], tiny_space_release, out, received={p: t[0], lone: t[0]})
    assert _run([q], tiny_space_release, out, received={q: t[1]})[("q", "m")].status == "FINISHED"
    pd.DataFrame({"id": ids, "score": labels}).to_csv(p / "scores.csv", index=False)  # p: the same scores now
    assert _run([p], tiny_space_release, out, received={p: t[2]})[("p", "m")].status == "FINISHED"

    board = leaderboard(load_track("lens-space"))
    assert board["team"].tolist() == ["q", "p", "lone"]  # equal scores: q's scored version came first
    assert board["auroc"].iloc[0] == board["auroc"].iloc[1]
    assert board["rank"].tolist()[:2] == [1, 2] and pd.isna(board["rank"].iloc[2])
    assert board["submitted"].tolist()[:2] == [t[1].isoformat(timespec="milliseconds"),
                                               t[2].isoformat(timespec="milliseconds")]

    # p breaks its entry again: its row stays its latest FINISHED run, still ranked.
    pd.DataFrame({"id": ids[:2], "score": 0.0}).to_csv(p / "scores.csv", index=False)
    assert _run([p], tiny_space_release, out, received={p: t[3]})[("p", "m")].status == "FAILED"
    board = leaderboard(load_track("lens-space"))
    assert board["team"].tolist() == ["q", "p", "lone"] and board["status"].tolist()[:2] == ["FINISHED"] * 2


def test_submission_time_is_the_commit_time_of_a_clean_folder(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setenv("SKYBENCH_ROOT", str(repo))
    folder = repo / "submissions/t/n"
    folder.mkdir(parents=True)
    (folder / "submission.yaml").write_text("team: t\n")
    env = {**os.environ, "GIT_COMMITTER_DATE": "2029-05-06T07:08:09+02:00", "GIT_AUTHOR_DATE": "2001-01-01T00:00:00",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "entry"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    rdir = tmp_path / "record"
    received = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert submission_time(folder, "sha", rdir, received) == "2029-05-06T05:08:09.000+00:00"
    (folder / "extra.txt").write_text("not committed")  # the evaluated bytes are not the commit's
    assert submission_time(folder, "sha", rdir, received) == "2030-01-01T00:00:00.000+00:00"
    upload = tmp_path / "upload"  # outside the project: never a git time (its own .git is not trusted)
    shutil.copytree(repo, upload)
    (upload / "submissions/t/n/extra.txt").unlink()
    assert submission_time(upload / "submissions/t/n", "sha", rdir, received) == "2030-01-01T00:00:00.000+00:00"


def test_only_a_record_in_its_own_folder_is_published(project, tiny_space_release, tmp_path):
    from skybench.tracking.log import publish_all

    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "sub", "m", ids, _labels(tiny_space_release, ids), team="t")
    out = tmp_path / "evals"
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out, publish=False)
    shutil.copytree(o.record, out / "t__m")  # the folder layout before percent-encoding
    shutil.copytree(o.record, out / ".staged-t+m.x")  # a record being written
    with pytest.warns(UserWarning, match="t__m"):
        assert publish_all(out, "lens-space") == (1, 0)
    c = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert len(c.search_runs([c.get_experiment_by_name(experiment_name("lens-space")).experiment_id])) == 1


def test_which_exceptions_are_the_machines_fault():
    from skybench.harness.executors import infrastructure_failure, is_infrastructure

    assert is_infrastructure(OSError(errno.ENOSPC, "No space left on device"))
    assert is_infrastructure(RuntimeError("bubblewrap (bwrap) is required"))
    assert not is_infrastructure(RecursionError("a hostile output nested too deep"))
    assert not is_infrastructure(ValueError("a bad value"))
    res = infrastructure_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert not res.ok and res.infrastructure and res.reason.startswith("OSError: ") and "\n" not in res.reason


def test_a_record_left_aside_by_a_crashed_swap_is_put_back(tmp_path):
    rdir = tmp_path / "t+m"
    aside = tmp_path / ".staged-t+m.old.abc" / "record"  # where a non-atomic swap parks the old record
    aside.mkdir(parents=True)
    (aside / "evaluation.json").write_text("{}")
    stage = rec_io._stage(rdir)
    assert (rdir / "evaluation.json").read_text() == "{}" and stage.is_dir() and not aside.exists()


STAGE_AND = """
import os, signal, sys, time
from pathlib import Path
from skybench.harness import record
staged = record._stage(Path(sys.argv[1]))
print(staged, flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)  # an evaluation SIGKILLed while it writes the record
time.sleep(120)  # a concurrent evaluation still writing it
"""


def test_staged_folders_of_killed_evaluations_go_at_the_next_evaluate_and_live_ones_stay(project, tiny_space_release,
                                                                                          tmp_path):
    import sys
    import time

    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "sub", "m", ids, _labels(tiny_space_release, ids), team="t")
    out = tmp_path / "evals"
    staged = {}
    live = subprocess.Popen([sys.executable, "-c", STAGE_AND, str(out / "t+m"), "live"], stdout=subprocess.PIPE,
                            text=True)
    try:
        staged["live"] = Path(live.stdout.readline().strip())
        for what, rdir in (("dead", out / "t+m"), ("dead-elsewhere", out / "u+other")):
            res = subprocess.run([sys.executable, "-c", STAGE_AND, str(rdir), "die"], capture_output=True, text=True)
            assert res.returncode == -9, res.stderr
            staged[what] = Path(res.stdout.strip())
        aside = out / ".staged-u+kept.old.abc" / "record"  # an old record a crashed non-atomic swap left aside
        aside.mkdir(parents=True)
        (aside / "evaluation.json").write_text("{}")
        old = time.time() - 300  # five minutes ago: not a folder being made right now
        os.utime(aside.parent, (old, old))
        for path in staged.values():
            (path / "evaluation.json").write_text("{}")  # half-written
            os.utime(path, (old, old))
        (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out, publish=False)
        assert o.status == "FINISHED"
        assert not staged["dead"].exists() and not staged["dead-elsewhere"].exists()  # the writers are gone
        assert staged["live"].is_dir()  # still being written: never removed under its writer
        assert (out / "u+kept" / "evaluation.json").read_text() == "{}"  # put back, never removed
        assert {"t+m", staged["live"].name, "u+kept"} <= {p.name for p in out.iterdir()}
        assert not [p for p in out.glob(".staged-*") if p.name != staged["live"].name and any(p.iterdir())]
    finally:
        live.kill()
        live.wait()


HOLD_OUT = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)  # a third evaluation writing a record in this folder right now
print("held", flush=True)
sys.stdin.readline()
"""
EVALUATE_ONE = """
import sys
from skybench.harness.evaluate import evaluate
(o,) = evaluate([sys.argv[1]], "lens-space", sys.argv[2], out=sys.argv[3], publish=False)
print(o.status, o.reason, flush=True)
"""


def test_two_evaluations_of_one_entry_at_once_write_its_record_once(project, tiny_space_release, tmp_path):
    """A `dvc repro` evaluate stage and a server worker (or two workers) evaluating one entry at once: the records
    are written one evaluation at a time, and the later one sees the other's record (the same evaluation) and keeps
    it, rather than both writing and either winning."""
    import sys
    import time

    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "sub", "m", ids, _labels(tiny_space_release, ids), team="t")
    out = tmp_path / "evals"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUT, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    args = [sys.executable, "-c", EVALUATE_ONE, str(sub), str(tiny_space_release), str(out)]
    evals = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        while (len(list(out.glob(".staged-t+m.*"))) < 2 and any(p.poll() is None for p in evals)
               and time.monotonic() < deadline):  # both scored, both about to write
            time.sleep(0.2)
        time.sleep(1)
    finally:
        holder.communicate("go\n", timeout=30)
        said = [p.communicate(timeout=240) for p in evals]
    assert all(p.returncode == 0 for p in evals), said
    statuses = sorted(o.split(" ", 1)[0] for o, _ in said)
    assert statuses == ["FINISHED", "SKIPPED"], said  # the later writer kept the other's record
    assert any("evaluated meanwhile by another evaluation" in o for o, _ in said), said
    assert sorted(p.name for p in out.iterdir()) == ["t+m"]  # no staged folder left
    rec = json.loads((out / "t+m" / "evaluation.json").read_text())
    assert rec["status"] == "FINISHED" and rec["metrics"]


def test_failed_records_wait_for_the_writer_of_the_entry_too(project, tiny_space_release, tmp_path):
    """A FAILED record written while planning (an invalid submission.yaml) takes the records folder's lock like a
    finished one: it is not written over a record another evaluation is writing meanwhile."""
    import sys
    import threading

    bad = tmp_path / "sub" / "m"
    bad.mkdir(parents=True)
    (bad / "submission.yaml").write_text("team: t\nname: m\ntrack: lens-space\nformat: [\n")  # not YAML
    out = tmp_path / "evals"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUT, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    got: list = []
    worker = threading.Thread(target=lambda: got.extend(evaluate([bad], "lens-space", tiny_space_release, out=out,
                                                                 publish=False)))
    try:
        worker.start()
        worker.join(8)
        assert worker.is_alive() and not got  # waits for the other writer
        assert not [p for p in out.iterdir() if not p.name.startswith(".")]
    finally:
        holder.communicate("go\n", timeout=30)
        worker.join(60)
    (o,) = got
    assert o.status == "FAILED" and o.record is not None and (o.record / "evaluation.json").is_file()


def test_a_failure_making_the_private_stage_leaves_no_locked_stage_behind(project, tiny_space_release, tmp_path):
    """The participant record's staged folder is made (and flocked by this process) first; when making the
    organiser's one then fails (a full disk, a file where the folder goes), the first is removed and unlocked too,
    not left for the life of a long-running worker (a descriptor and a folder per failed job, never swept: this
    process holds its lock)."""
    from skybench.harness.visibility import private_root

    ids = _ids(tiny_space_release)
    sub = csv_submission(tmp_path / "sub", "m", ids, _labels(tiny_space_release, ids), team="t")
    out = tmp_path / "evals"
    rdir = record_dir(out, "t", "m")
    root = private_root(out)
    (root / ".staged-t+m.old.x" / "record").mkdir(parents=True)  # an old record set aside by a crashed swap ...
    private_dir(rdir).symlink_to(tmp_path / "gone")  # ... that cannot be put back: making the stage fails
    before = dict(rec_io._WRITERS)
    (o,) = evaluate([sub], "lens-space", tiny_space_release, out=out, publish=False)
    assert o.status == "FAILED" and o.failure_kind == "infrastructure", o.reason
    assert rec_io._WRITERS == before  # every descriptor closed
    assert not list(out.glob(".staged-*"))  # and its folder gone


def test_a_folder_name_that_is_not_utf8_cannot_stop_publishing(project, tiny_space_release, tmp_path):
    """git and Linux allow any bytes in a folder name; Python gives them as lone surrogates, which MLflow cannot
    store. The path is the identity, so such a folder's FAILED record is filed under a name a store holds; the
    publishing of every record (`skybench log`, the pipeline's `leaderboard --publish`) goes on. A record written
    with such a name (by an older skybench) is refused with a reason, the others published."""
    from skybench.tracking.log import publish_all

    ids = _ids(tiny_space_release)
    out = project / "results/lens-space/evaluations"
    bad = Path(os.fsdecode(os.fsencode(project / "submissions/mallory") + b"/fin\xffder"))
    csv_submission(bad, "finder", ids, np.zeros(len(ids)), team="mallory")
    good = csv_submission(project / "submissions/zed/finder", "finder", ids, _labels(tiny_space_release, ids),
                          team="zed")
    got = evaluate([bad, good], "lens-space", tiny_space_release, out=out, publish=False)
    assert [o.status for o in got] == ["FAILED", "FINISHED"]
    assert got[0].team == "mallory" and got[0].name.encode("utf-8") and got[0].name.startswith("fin")
    assert publish_all(out, "lens-space") == (2, 0)
    board = leaderboard(load_track("lens-space"))
    assert board.set_index(["team"])["status"].to_dict() == {"zed": "FINISHED", "mallory": "FAILED"}

    old = out / "mallory+fin%ED%B3%BFder"  # as an older skybench wrote it
    shutil.copytree(got[0].record, old)
    rec = json.loads((old / "evaluation.json").read_text()) | {"name": "fin\udcffder"}
    (old / "evaluation.json").write_text(json.dumps(rec))
    with pytest.raises(rec_io.RecordError, match=r"0 newly logged, 2 already in MLflow(.|\n)*not UTF-8"):
        publish_all(out, "lens-space")


def test_a_folder_set_back_to_an_earlier_version_is_what_the_board_shows(project, tiny_space_release):
    """A team goes X -> Y -> X (a revert). MLflow holds X's result, but the entry's latest run is Y's: reusing
    X's old run (or finding it "already logged") left the board on Y, a version the folder no longer holds (a
    team could keep the score of an entry it took back before the deadline's review)."""
    ids = _ids(tiny_space_release)
    out = project / "results/lens-space/evaluations"
    folder = project / "submissions/t/e"
    for version, scores, auroc in (("X", np.zeros(len(ids)), 0.5), ("Y", _labels(tiny_space_release, ids), 1.0),
                                   ("X", np.zeros(len(ids)), 0.5)):
        shutil.rmtree(folder, ignore_errors=True)
        csv_submission(folder, "e", ids, scores, team="t")
        (o,) = evaluate([folder], "lens-space", tiny_space_release, out=out)
        assert o.status == "FINISHED", (version, o.reason)
        assert leaderboard(load_track("lens-space"))["auroc"].tolist() == [auroc], version
    (o,) = evaluate([folder], "lens-space", tiny_space_release, out=out)  # unchanged now: reused, nothing added
    assert o.status == "SKIPPED" and leaderboard(load_track("lens-space"))["auroc"].tolist() == [0.5]


def test_an_older_version_published_last_does_not_take_the_board_back(project, tiny_space_release, tmp_path):
    """Two workers of the challenge server: version X's record is written first, Y's after it (the records lock
    orders them), but X's worker publishes last (slow MLflow, an outage then `skybench log`). The board must stay
    on Y: an entry's runs are ordered by when their records were written, not by when they reached MLflow."""
    from skybench.tracking.log import publish_all

    ids = _ids(tiny_space_release)
    folder = project / "submissions/t/e"
    outs = {}
    for version, scores in (("X", np.zeros(len(ids))), ("Y", _labels(tiny_space_release, ids))):
        shutil.rmtree(folder, ignore_errors=True)
        csv_submission(folder, "e", ids, scores, team="t")
        outs[version] = tmp_path / f"worker-{version}"
        (o,) = evaluate([folder], "lens-space", tiny_space_release, out=outs[version], publish=False)
        assert o.status == "FINISHED", (version, o.reason)
    assert publish_all(outs["Y"], "lens-space") == (1, 0)
    assert publish_all(outs["X"], "lens-space") == (1, 0)
    board = leaderboard(load_track("lens-space"))
    assert board["auroc"].tolist() == [1.0], board[["team", "name", "auroc"]]
    # X's stale record, logged again from its folder, is there already: logging it again would add a run to the
    # entry each time, and a stale record without a time would take the board back
    runs = len(MlflowClient().search_runs([MlflowClient().get_experiment_by_name(
        experiment_name("lens-space")).experiment_id]))
    assert publish_all(outs["X"], "lens-space") == (0, 1) and publish_all(outs["Y"], "lens-space") == (0, 1)
    assert len(MlflowClient().search_runs([MlflowClient().get_experiment_by_name(
        experiment_name("lens-space")).experiment_id])) == runs
