"""MLflow's tracking store on PostgreSQL, as a challenge on several machines runs it (docs/SCALE.md)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_an_entry_name_longer_than_a_run_name_is_logged_and_annotated(postgres, monkeypatch):
    """A folder's team and name may each be 255 characters; MLflow's run name is VARCHAR(250), which PostgreSQL
    enforces (SQLite does not): the run of such an entry failed to log, and the leaderboard stage with it, on every
    `dvc repro`, for every track after it. Run names are cut with a hash of the whole."""
    if postgres is None:
        pytest.skip("PostgreSQL binaries or the 'postgres' user are absent")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres.new_database())
    from mlflow.tracking import MlflowClient

    from skybench import tracking
    from skybench.tracking.leaderboard import leaderboard
    from skybench.tracking.ui import annotate_runs
    from skybench.tracks import load_track

    track = load_track("lens-space")
    names = ["ok", "x" * 250, "x" * 249 + "y"]  # two long names that differ only at the end
    for i, name in enumerate(names):
        tracking.log_evaluation(track.name, team="eve", name=name, fmt="csv", status="FINISHED" if i else "FAILED",
                                metrics={"auroc": 0.5 + i / 10}, tags={"submission_sha256": f"{i}" * 64,
                                                                       "release_sha256": "r" * 64, "device": "cpu"},
                                experiment=tracking.organiser_experiment(track.name))
    board = leaderboard(track)
    assert sorted(board["name"]) == sorted(names)
    assert annotate_runs(track, board) == 3  # named "<rank> auroc=... eve/xxx...": longer still
    c = MlflowClient()
    exp = c.get_experiment_by_name(tracking.organiser_experiment(track.name))
    runs = c.search_runs([exp.experiment_id])
    shown = sorted(r.info.run_name for r in runs)
    assert all(len(n) <= tracking.MAX_RUN_NAME for n in shown) and len(set(shown)) == 3, shown
    assert {r.data.params["name"] for r in runs} == set(names)  # the entry's own name is kept whole
