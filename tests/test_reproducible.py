"""Reproducible to the byte: the same inputs give the same output files, whoever runs the pipeline, wherever.

What differs from one run to the next by nature (wall time, the code's git commit) lives in ``run.json`` beside
each evaluation record; ``.dvcignore`` keeps exactly those files out of DVC's hashes, and every other output file
must come out identical. The environment itself is pinned by ``requirements/lock.txt`` (``make setup``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import tomllib
from helpers import bwrap_works, mlflow_store
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from skybench.harness import evaluate as ev
from skybench.harness import record as rec_mod

ROOT = Path(__file__).resolve().parents[1]
TRACK = "lens-ground"  # no real set folded in: the release depends on nothing the project has built
EXAMPLE = ROOT / "submissions" / "examples" / TRACK / "sklearn"  # one cheap sandboxed model


def _dvcignore() -> pathspec.GitIgnoreSpec:
    """The project's .dvcignore, matched as DVC matches it (gitignore syntax, paths from the project root)."""
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".dvcignore").read_text().splitlines())


def _hashes(top: Path) -> dict[str, str]:
    """sha256 of every file under ``top`` by its path relative to ``top`` (a stand-in for the project root)."""
    return {p.relative_to(top).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(top.rglob("*")) if p.is_file()}


def _differences(a: dict[str, str], b: dict[str, str], ignored: pathspec.GitIgnoreSpec) -> list[str]:
    """The output files of two runs that DVC would see differ: missing on one side, or other bytes."""
    return [f"{rel}: {'only in one run' if rel not in a or rel not in b else 'differs'}"
            for rel in sorted(a.keys() | b.keys())
            if not ignored.match_file(rel) and a.get(rel) != b.get(rel)]


def _pipeline(run: Path, store: Path) -> None:
    """simulate -> evaluate -> leaderboard of one track into ``run`` (laid out like the project: releases/,
    results/) with its own MLflow store in ``store``: the commands of dvc.yaml, as DVC runs them."""
    store.mkdir()
    env = {**os.environ, "SKYBENCH_ROOT": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store(store),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    release, results = run / "releases" / TRACK, run / "results" / TRACK
    for args in (["simulate", TRACK, "--profile", "demo", "--seed", "3", "--size", "64", "--out", str(release)],
                 ["evaluate", "--track", TRACK, "--release", str(release), "--out", str(results / "evaluations"),
                  "--no-log", str(EXAMPLE)],
                 ["leaderboard", TRACK, "--publish", str(results / "evaluations"), "--release", str(release),
                  "--write", str(results), "--format", "markdown"]):
        res = subprocess.run([sys.executable, "-m", "skybench", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, f"skybench {args[0]} failed:\n{res.stdout}\n{res.stderr}"


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="needs bubblewrap (the sandbox)")
def test_a_tiny_pipeline_run_twice_gives_the_same_files(tmp_path):
    if ev._git_time(EXAMPLE) == "":
        pytest.skip(f"{EXAMPLE} has uncommitted changes: its submission time would be the time of the run")
    a, b = tmp_path / "a", tmp_path / "b"
    _pipeline(a, tmp_path / "mlflow-a")  # a tracking store holds run ids and times: not a pipeline output
    _pipeline(b, tmp_path / "mlflow-b")
    ha, hb = _hashes(a), _hashes(b)
    ignored = _dvcignore()
    assert ha.keys() == hb.keys()
    records = [rel for rel in ha if rel.endswith("/evaluation.json")]
    assert len(records) == 2 and any("/evaluations/" in r for r in records) and any("/private/" in r for r in records)
    assert any(rel.endswith("leaderboard.md") for rel in ha) and any(rel.startswith("releases/") for rel in ha)
    assert _differences(ha, hb, ignored) == []

    # What DVC leaves out is exactly the run facts beside each record, and they are there (MLflow gets them).
    left_out = sorted(rel for rel in ha if ignored.match_file(rel))
    assert left_out == sorted(r.replace("evaluation.json", rec_mod.RUN_FILE) for r in records)
    for rel in left_out:
        facts = json.loads((a / rel).read_text())
        assert set(facts) == set(rec_mod.RUN_FIELDS) and facts["seconds"] > 0 and len(facts["git_commit"]) == 40

    # The comparison sees a changed byte (so the assertion above can fail).
    (b / records[0]).write_text((b / records[0]).read_text().replace("FINISHED", "FINISHED "))
    assert _differences(ha, _hashes(b), ignored) == [f"{records[0]}: differs"]


def test_run_specific_facts_stay_out_of_the_record(tmp_path):
    """Two records of the same evaluation, written at different times with different wall times, have the same
    evaluation.json; the wall time and the git commit go to run.json."""
    fields = dict(team="t", name="n", fmt="predictions", status="FINISHED", reason="", sub_sha="s" * 64,
                  release_sha="r" * 64, device="cpu", metrics={"auroc": 0.75},
                  submitted="2030-01-01T00:00:00.000+00:00")
    one = rec_mod._write_record(tmp_path / "one", seconds=1.5, n=10, **fields)  # type: ignore[arg-type]
    two = rec_mod._write_record(tmp_path / "two", seconds=99.25, n=10, **fields)  # type: ignore[arg-type]
    assert (one / ev.RECORD).read_bytes() == (two / ev.RECORD).read_bytes()
    assert not set(rec_mod.RUN_FIELDS) & set(json.loads((one / ev.RECORD).read_text()))
    assert json.loads((two / rec_mod.RUN_FILE).read_text())["seconds"] == 99.25
    assert [p.name for p in sorted(one.iterdir())] == [ev.RECORD, rec_mod.RUN_FILE]


def test_the_mlflow_record_still_has_the_run_facts(tmp_path):
    from skybench.harness.record import _run_facts

    (tmp_path / rec_mod.RUN_FILE).write_text(json.dumps({"seconds": 3.0, "git_commit": "c" * 40, "team": "other"}))
    assert _run_facts(tmp_path) == {"seconds": 3.0, "git_commit": "c" * 40}  # nothing but the run facts
    (tmp_path / rec_mod.RUN_FILE).write_text("[1]")
    assert _run_facts(tmp_path) == {} and _run_facts(tmp_path / "absent") == {}


def _git(repo: Path, *args: str, date: str = "2029-05-06T07:08:09+00:00") -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date, "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def test_a_trained_baseline_is_submitted_at_its_codes_commit_time(tmp_path, monkeypatch):
    """A folder the pipeline builds (git-ignored, as DVC leaves a trained baseline) gets the same submission time
    in every clean clone: the commit time of its code, not the time it was first evaluated."""
    repo = tmp_path / "repo"
    monkeypatch.setenv("SKYBENCH_ROOT", str(repo))
    code = repo / "baselines" / "knn"
    code.mkdir(parents=True)
    (code / "train.py").write_text("print('train')\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "knn")
    built = code / TRACK
    built.mkdir()
    (built / "submission.yaml").write_text("team: baselines\n")
    (code / ".gitignore").write_text(f"/{TRACK}\n")  # what DVC writes for an output, committed with dvc.lock
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "dvc.lock", date="2029-06-01T00:00:00+00:00")
    rdir = tmp_path / "record"
    assert ev.submission_time(built, "sha", rdir) == "2029-05-06T07:08:09.000+00:00"

    (code / "train.py").write_text("print('train better')\n")  # the code changed, not committed: no known time
    assert ev._built_time(built) == ""
    _git(repo, "commit", "-qam", "better", date="2029-07-01T00:00:00+00:00")
    assert ev.submission_time(built, "sha", rdir) == "2029-07-01T00:00:00.000+00:00"

    team = repo / "submissions" / "t" / "n"  # an untracked folder that is not ignored is no build output
    team.mkdir(parents=True)
    assert ev._built_time(team) == ""


def _lock() -> dict[str, tuple[Version, int]]:
    """{name: (pinned version, number of hashes)} of requirements/lock.txt."""
    text = (ROOT / "requirements" / "lock.txt").read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#") or not block.strip():
            continue
        head = block.split()[0]
        name, _, version = head.partition("==")
        assert version, f"requirements/lock.txt: {head} is not pinned with =="
        pins[canonicalize_name(name)] = (Version(version), block.count("--hash=sha256:"))
    return pins


def test_the_lock_pins_every_dependency_with_hashes():
    """Every requirement of pyproject's [all,dev] extras is in the lock, at a version it allows, with hashes:
    after editing pyproject's dependencies, `make lock`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs, todo, seen = list(project["dependencies"]), ["all", "dev"], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in extras[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == "skybench":
                todo += sorted(req.extras)
            else:
                reqs.append(line)
    pins = _lock()
    assert all(n >= 1 for _, n in pins.values()), "requirements/lock.txt: a pin without --hash"
    for line in reqs:
        req = Requirement(line)
        assert canonicalize_name(req.name) in pins, f"{req.name} is not in requirements/lock.txt: run `make lock`"
        version, _ = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements/lock.txt pins {req.name}=={version}, but pyproject.toml asks for {line}: run `make lock`"
