"""skybench against a real `mlflow server` (SQLite backend, proxied artifacts) on 127.0.0.1, and 8 evaluations
writing to it at once."""

import multiprocessing

import numpy as np
import pytest
from helpers import csv_submission, mlflow_server
from mlflow.tracking import MlflowClient

from skybench.harness.evaluate import evaluate
from skybench.release import open_release
from skybench.tracking import experiment_name, organiser_experiment
from skybench.tracking.leaderboard import leaderboard
from skybench.tracks import load_track


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (uri, _, _):
        yield uri


def _evaluate(folder, release, out):
    (o,) = evaluate([folder], "lens-space", release, out=out)
    return o.status, o.unpublished


@pytest.mark.slow
def test_eight_concurrent_evaluations_lose_no_run_and_duplicate_none(server, tiny_space_release, tmp_path,
                                                                     monkeypatch):
    ids = open_release(tiny_space_release).meta("test")["id"]
    subs = [csv_submission(tmp_path / "subs" / f"s{i}", f"s{i}", ids, np.random.default_rng(i).random(len(ids)),
                           team="load") for i in range(4)]
    # 8 evaluator processes at once (forked, so they skip the imports): each of the 4 submissions is evaluated
    # by two of them (a race on the same run), each writing its own records folder.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    jobs = [(subs[k % 4], tiny_space_release, tmp_path / f"out{k}") for k in range(8)]
    with multiprocessing.get_context("fork").Pool(8) as pool:
        outcomes = pool.starmap(_evaluate, jobs)
    # The later evaluator of a pair may find the earlier one's run and skip; none fails to log.
    assert all(status in ("FINISHED", "SKIPPED") and not unpublished for status, unpublished in outcomes), outcomes
    c = MlflowClient(server)
    exp = c.get_experiment_by_name(experiment_name("lens-space"))
    runs = c.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    assert sorted(r.data.params["name"] for r in runs) == ["s0", "s1", "s2", "s3"]  # none lost, none twice
    assert {r.info.status for r in c.search_runs([exp.experiment_id])} == {"FINISHED"}
    # Artifacts went through the server to its artifact store.
    assert "roc_public.csv" in {a.path for a in c.list_artifacts(runs[0].info.run_id)}
    org = c.get_experiment_by_name(organiser_experiment("lens-space"))
    org_runs = c.search_runs([org.experiment_id], "attributes.status = 'FINISHED'")
    assert sorted(r.data.params["name"] for r in org_runs) == ["s0", "s1", "s2", "s3"]
    assert "roc.csv" in {a.path for a in c.list_artifacts(org_runs[0].info.run_id)}
    board = leaderboard(load_track("lens-space"))
    assert sorted(board["name"]) == ["s0", "s1", "s2", "s3"] and board["rank"].notna().all()
