"""MLflow logger and leaderboard, against a real sqlite MLflow store in tmp_path."""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import mlflow_store
from mlflow.tracking import MlflowClient

from skybench import tracking
from skybench.tracking.leaderboard import leaderboard, render, write_results
from skybench.tracks import Track, load_track

REL = "r" * 64


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's working tree
    return uri


@pytest.fixture(scope="module")
def track() -> Track:
    t = load_track("lens-space")  # whole-test-set ranking here; the public-private phases: test_public_private.py
    return t.model_copy(update={"evaluation": t.evaluation.model_copy(update={"public_fraction": None})})


def _metrics(auroc: float) -> dict[str, float]:
    return {
        "auroc": auroc,
        "auroc_ci_low": auroc - 0.02,
        "auroc_ci_high": auroc + 0.02,
        "tpr0": 0.1,
        "tpr0_ci_low": 0.05,
        "tpr0_ci_high": 0.25,
        "tpr10": 0.3,
        "tpr_fpr1e-3": float("nan"),  # skipped, not logged
        "average_precision": 0.8,
        "n_lens": 50,
        "n_nonlens": 50,
    }


def _log(track: Track, team: str, name: str, auroc: float | None, *, sub: str | None = None, **kw) -> str:
    time.sleep(0.005)  # distinct start times (ms resolution)
    return tracking.log_evaluation(
        track.name,
        team=team,
        name=name,
        fmt="onnx",
        status="FINISHED" if auroc is not None else "FAILED",
        metrics=_metrics(auroc) if auroc is not None else {},
        tags={"submission_sha256": sub or f"{team}-{name}".ljust(64, "0"), "release_sha256": REL, "device": "cpu"},
        reason="" if auroc is not None else "output has shape (3,), expected (100,)",
        **kw,
    )


def _evaluate_once(track: Track, sub: str, auroc: float) -> tuple[str, bool]:
    """What the evaluator does: skip an already evaluated (submission, release)."""
    if (run := tracking.find_evaluation(track.name, sub, REL)) is not None:
        return run.info.run_id, False
    return _log(track, "t", "n", auroc, sub=sub), True


def test_default_tracking_uri_is_absolute_sqlite_under_root(monkeypatch, root: Path, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:///")
    path = Path(uri.removeprefix("sqlite:///"))
    assert path.is_absolute() and path == root.resolve() / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"
    assert tracking.experiment_name("lens-space") == "skybench-lens-space"
    assert tracking.training_experiment("lens-space") == "skybench-training-lens-space"


def test_git_commit_is_the_head_of_the_project_repository(monkeypatch, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setenv("SKYBENCH_ROOT", str(repo))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above tmp_path
    assert tracking.git_commit() == "unknown"  # not a repository
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert tracking.git_commit() == "unknown"  # no commit yet
    (repo / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert len(head) == 40 and tracking.git_commit() == head


def test_log_and_find_is_idempotent(store: str, track: Track, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("{}")
    sub = "a" * 64
    assert tracking.find_evaluation(track.name, sub, REL) is None  # no experiment yet
    run_id, created = _evaluate_once(track, sub, 0.9)
    assert created
    again, created = _evaluate_once(track, sub, 0.9)
    assert (again, created) == (run_id, False)
    assert tracking.find_evaluation(track.name, sub, "b" * 64) is None  # new release: evaluate again

    # artifacts land next to the database, not in the working directory
    art_id = _log(track, "t", "art", 0.5, artifacts={"reports": report})
    run = MlflowClient(store).get_run(art_id)
    assert [a.path for a in MlflowClient(store).list_artifacts(art_id, "reports")] == ["reports/report.json"]
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()

    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "t/n"
    assert run.data.params == {"team": "t", "name": "n", "format": "onnx"}
    assert run.data.tags["status"] == "FINISHED" and run.data.tags["skybench.kind"] == "evaluation"
    assert run.data.metrics["auroc"] == 0.9 and "tpr_fpr1e-3" not in run.data.metrics
    exp = MlflowClient(store).get_experiment_by_name(tracking.experiment_name(track.name))
    assert len(MlflowClient(store).search_runs([exp.experiment_id])) == 2


def test_failed_submission_is_a_complete_record(store: str, track: Track) -> None:
    sub = "f" * 64
    run_id = _log(track, "t", "bad", None, sub=sub)
    assert tracking.find_evaluation(track.name, sub, REL).info.run_id == run_id  # unchanged: skipped
    assert tracking.find_evaluation(track.name, sub, REL, include_failed=False) is None  # opt-in retry


def test_crash_mid_logging_is_not_finished(store: str, track: Track, tmp_path: Path) -> None:
    sub = "c" * 64
    with pytest.raises(Exception):  # noqa: B017 - whatever the artifact store raises
        _log(track, "t", "crash", 0.7, sub=sub, artifacts=[tmp_path / "missing.bin"])
    assert tracking.find_evaluation(track.name, sub, REL) is None
    exp = MlflowClient(store).get_experiment_by_name(tracking.experiment_name(track.name))
    (run,) = MlflowClient(store).search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert leaderboard(track).empty


def test_leaderboard_ties_go_to_earliest_submission(store: str, track: Track, tmp_path: Path) -> None:
    _log(track, "zeta", "m1", 0.95)  # earliest
    _log(track, "bob", "bad", None)
    _log(track, "carol", "m", 0.80)
    _log(track, "alpha", "m1", 0.95)  # same score, later, alphabetically first
    _log(track, "carol", "m", 0.85, sub="c2".ljust(64, "0"))  # carol resubmits: latest evaluation counts

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(tracking.experiment_name(track.name))
    assert client.search_runs([exp.experiment_id])[0].data.params["team"] == "carol"  # MLflow: newest first

    df = leaderboard(track)
    assert list(df.columns) == [
        "rank", "rank_low", "rank_high", "group", "team", "name", "status", "auroc", "tpr0", "tpr0_ci_low",
        "tpr0_ci_high", "tpr10", "tpr10_ci_low", "tpr10_ci_high", "tpr_fpr1e-3", "tpr_fpr1e-3_ci_low",
        "tpr_fpr1e-3_ci_high", *track.metrics.report[4:], "auroc_ci_low", "auroc_ci_high", "format", "device",
        "submitted", "reason",
    ]  # fmt: skip; each bootstrapped TPR with its interval (Track.interval_metrics), the primary's last
    assert track.metrics.report[:5] == ["auroc", "tpr0", "tpr10", "tpr_fpr1e-3", "average_precision"]
    assert (df["tpr0_ci_low"].iloc[0], df["tpr0_ci_high"].iloc[0]) == (0.05, 0.25)  # the TPR0 interval on the board
    assert list(df["team"]) == ["zeta", "alpha", "carol", "bob"]
    assert df["rank"].tolist()[:3] == [1, 2, 3] and pd.isna(df["rank"].iloc[3])
    assert df["auroc"].iloc[2] == 0.85 and len(df) == 4
    assert df["status"].iloc[3] == "FAILED" and "expected (100,)" in df["reason"].iloc[3]
    assert df["reason"].iloc[0] == "" and df["device"].iloc[0] == "cpu" and df["format"].iloc[0] == "onnx"
    assert df["submitted"].iloc[0] < df["submitted"].iloc[1]
    assert leaderboard(track, release_sha256="x" * 64).empty

    write_results(track, tmp_path / "results")
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert list(metrics) == ["zeta/m1", "alpha/m1", "carol/m"] and metrics["carol/m"]["auroc"] == 0.85
    assert metrics["carol/m"]["tpr0_ci_high"] == 0.25
    assert "zeta" in (tmp_path / "results" / "leaderboard.md").read_text()


def test_lower_is_better(store: str, track: Track) -> None:
    loss = track.model_copy(update={"metrics": track.metrics.model_copy(update={"higher_is_better": False})})
    _log(loss, "a", "m", 0.9)
    _log(loss, "b", "m", 0.6)
    _log(loss, "c", "m", 0.75)
    assert list(leaderboard(loss)["team"]) == ["b", "c", "a"]
    assert list(leaderboard(track)["team"]) == ["a", "c", "b"]


def test_render_formats(store: str, track: Track) -> None:
    _log(track, "alpha", "m", 0.912345678)
    _log(track, "beta", "m", None)
    df = leaderboard(track, extra_columns=["real_lens_recall"])
    assert "real_lens_recall" in df.columns and df["real_lens_recall"].isna().all()

    csv = render(df, "csv")
    back = pd.read_csv(io.StringIO(csv))
    required = ["rank", "team", "name", "status", *track.metrics.report, "auroc_ci_low", "auroc_ci_high"]
    assert set(required) <= set(back.columns)
    assert back["auroc"].iloc[0] == 0.912345678 and back["rank"].iloc[0] == 1 and pd.isna(back["rank"].iloc[1])
    assert list(back["team"]) == ["alpha", "beta"]

    md = render(df, "markdown")
    assert md.startswith("| rank | rank_low | rank_high | group | team |")
    assert "0.9123" in md and "0.912345678" not in md
    for fmt in ("table", "markdown", "html"):
        text = render(df, fmt)
        assert "alpha" in text and "beta" in text
    with pytest.raises(ValueError):
        render(df, "xml")  # type: ignore[arg-type]
