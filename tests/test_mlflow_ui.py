"""The MLflow UI as a leaderboard: experiment kind, run names and tags, the sorted runs URL (real sqlite store).
The browser check of the same is tests/test_mlflow_ui_browser.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import mlflow_store
from mlflow.tracking import MlflowClient

from skybench import tracking
from skybench.tracking import leaderboard as lb
from skybench.tracking import ui
from skybench.tracks import Track, load_track

REL = "r" * 64


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    uri = mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return MlflowClient(uri)


@pytest.fixture(scope="module")
def track() -> Track:
    t = load_track("lens-space")
    return t.model_copy(update={"evaluation": t.evaluation.model_copy(update={"public_fraction": None})})


def _log(track: Track, name: str, auroc: float | None, sub: str, release: str = REL) -> str:
    time.sleep(0.005)
    metrics = {} if auroc is None else {"auroc": auroc, "auroc_ci_low": auroc - 0.01, "auroc_ci_high": auroc + 0.01}
    return tracking.log_evaluation(track.name, team="t", name=name, fmt="onnx",
                                   status="FAILED" if auroc is None else "FINISHED", metrics=metrics,
                                   tags={"submission_sha256": sub.ljust(64, "0"), "release_sha256": release},
                                   reason="" if auroc is not None else "boom")


def test_experiments_are_model_training_experiments(store: MlflowClient, track: Track) -> None:
    _log(track, "a", 0.9, "a")
    exp = store.get_experiment_by_name(tracking.experiment_name(track.name))
    assert exp.tags[ui.EXPERIMENT_KIND_TAG] == ui.MODEL_TRAINING == "custom_model_development"
    old = store.create_experiment("skybench-old-track")  # made before this change: no kind tag
    other = store.create_experiment("not-ours")
    assert ui.mark_model_training(store) == ["skybench-old-track"]
    assert store.get_experiment(old).tags[ui.EXPERIMENT_KIND_TAG] == ui.MODEL_TRAINING
    assert ui.EXPERIMENT_KIND_TAG not in store.get_experiment(other).tags
    assert ui.mark_model_training(store) == []


def test_runs_are_named_and_tagged_by_rank_and_untagged_when_superseded(store: MlflowClient, track: Track) -> None:
    first_a = _log(track, "a", 0.9, "a1")
    b = _log(track, "b", 0.8, "b")
    a = _log(track, "a", 0.7, "a2")  # a's resubmission: the one on the leaderboard
    c = _log(track, "c", None, "c")
    other_release = _log(track, "d", 0.99, "d", release="s" * 64)
    board = lb.leaderboard(track, release_sha256=REL)
    assert ui.annotate_runs(track, board, release_sha256=REL) == 3  # the others keep their plain names

    def seen(run_id: str) -> tuple[str, dict[str, str]]:
        r = store.get_run(run_id)
        return r.info.run_name, {k: v for k, v in r.data.tags.items() if (k.startswith("skybench.") or k in (
            ui.RANK_TAG, ui.GROUP_TAG)) and k not in (tracking.KIND_TAG, "skybench.track")}

    on = {"skybench.leaderboard": "yes", "group": ""}
    assert seen(b) == ("1 auroc=0.8000 t/b", {**on, "rank": "1"})
    assert seen(a) == ("2 auroc=0.7000 t/a", {**on, "rank": "2"})
    assert seen(c) == ("FAILED t/c", {**on, "rank": ""})
    assert seen(first_a) == ("t/a", {}) and seen(other_release) == ("t/d", {})
    assert ui.annotate_runs(track, board, release_sha256=REL) == 0  # idempotent

    # with a group column (the rank-interval helper's), it follows the rank; a run leaving the board is undone
    board = lb.leaderboard(track).assign(group=lambda d: ["A" if r == 1 else "B" for r in d["rank"].fillna(0)])
    ui.annotate_runs(track, board)
    assert seen(other_release) == ("1 A auroc=0.9900 t/d", {**on, "rank": "1", "group": "A"})
    ui.annotate_runs(track, lb.leaderboard(track, release_sha256=REL), release_sha256=REL)
    assert seen(other_release) == ("t/d", {})
    assert seen(b)[0] == "1 auroc=0.8000 t/b"


def test_runs_url_sorts_by_the_ranked_metric(store: MlflowClient) -> None:
    open_track = load_track("lens-space")  # public/private split, phase open: ranks on public_auroc
    _log(open_track, "a", None, "a")
    exp = store.get_experiment_by_name("skybench-lens-space")
    ((name, url),) = ui.track_urls(open_track, "http://127.0.0.1:5000/", store)
    assert name == "skybench-lens-space"
    assert url == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=skybench-leaderboard"
    view = json.loads(store.get_experiment(exp.experiment_id).tags["mlflow.sharedViewState.skybench-leaderboard"])
    assert view["orderByKey"] == "metrics.`public_auroc`" and view["orderByAsc"] is False
    assert view["searchFilter"] == "tags.`skybench.leaderboard` = 'yes'"
    assert view["selectedColumns"] == ["metrics.`public_auroc`", "metrics.`public_auroc_ci_low`",
                                       "metrics.`public_auroc_ci_high`", "metrics.`public_tpr0`",
                                       "metrics.`public_tpr0_ci_low`", "metrics.`public_tpr0_ci_high`",
                                       "metrics.`public_real_lens_recall`", "metrics.`public_real_lens_recall_ci_low`",
                                       "metrics.`public_real_lens_recall_ci_high`", "metrics.`public_real_fpr`",
                                       "metrics.`public_real_fpr_ci_low`", "metrics.`public_real_fpr_ci_high`",
                                       "tags.`rank`", "tags.`group`"]
    photoz = load_track("photoz-catalog")  # lower is better; split too
    _log(photoz, "a", None, "a")
    ui.track_urls(photoz, "http://h", store)
    view = json.loads(store.get_experiment_by_name("skybench-photoz-catalog").tags[
        "mlflow.sharedViewState.skybench-leaderboard"])
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`public_sigma_total`", True)
