"""The worker: claim -> place under submissions/<team>/<name>/ -> the project's evaluate -> finished | failed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py
from helpers import bwrap_works  # noqa: E402
from test_api import pack  # noqa: E402


@pytest.fixture
def server(cfg, engine):  # type: ignore[no-untyped-def]
    from skybench.server.app import create_app
    from skybench.server.auth import add_team
    from skybench.server.db import sessions

    app = create_app(cfg, engine)
    with sessions(engine)() as s:
        token = add_team(s, "alpha").token
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {token}"}, sessions(engine)


def _upload(client, headers, name="m1"):  # type: ignore[no-untyped-def]
    r = client.post("/api/submissions", headers=headers, data={"track": "lens-space", "name": name},
                    files={"file": ("s.tar.gz", pack("alpha", name), "application/gzip")})
    assert r.status_code == 202, r.text
    return r.json()


def test_infrastructure_failure_is_retried_then_given_back(server, cfg, tmp_path):
    from skybench.server import queue, worker

    client, headers, Session = server
    sub = _upload(client, headers)
    missing = tmp_path / "no-release"  # the machine's fault: the release is not there
    for attempt in (1, 2):
        done = worker.run_one(cfg, Session, "w", release=missing, out=tmp_path / "evals", publish=False)
        assert done.state == "queued" and done.attempt == attempt and "infrastructure failure" in done.reason
    done = worker.run_one(cfg, Session, "w", release=missing, out=tmp_path / "evals", publish=False)
    assert done.state == "failed" and "after 3 attempts; not counted" in done.reason and not done.counted
    with Session() as s:
        from skybench.server.db import Team

        assert queue.quota_left(s, cfg, s.get(Team, done.team_id), "lens-space")["today"] == 3
    assert worker.run_one(cfg, Session, "w", release=missing, publish=False) is None  # the queue is empty
    assert client.get(sub["status_url"], headers=headers).json()["state"] == "failed"
    placed = Path(cfg.project_root) / "submissions" / "alpha" / "m1"
    assert (placed / "submission.yaml").is_file() and (placed / "model.onnx").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create the sandbox's namespaces here")
def test_upload_evaluate_finish_end_to_end(server, cfg, tmp_path, tiny_space_release, monkeypatch):
    from skybench.server import worker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client, headers, Session = server
    sub = _upload(client, headers)
    done = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert done is not None and done.state == "finished", done.reason if done else None
    assert done.finished_at >= done.running_at >= done.queued_at >= done.received_at
    assert {"public_auroc", "private_auroc"} <= set(done.metrics)  # the server keeps them all ...
    shown = client.get(sub["status_url"], headers=headers).json()
    assert shown["state"] == "finished" and shown["metrics"]
    assert all(k.startswith("public_") for k in shown["metrics"])  # ... a team sees the public part
    assert shown["metrics"]["public_auroc"] == round(done.metrics["public_auroc"], 3)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")
    assert [(r.data.params.get("team"), r.data.params.get("name")) for r in runs] == [("alpha", "m1")]
    # The same folder again (a worker died after evaluating, say): finished from the record, no second run.
    second = _upload(client, headers)
    again = worker.run_one(cfg, Session, "w", release=tiny_space_release, out=tmp_path / "evals")
    assert again.id == second["id"] and again.state == "finished" and again.metrics == done.metrics
    assert len(mlflow.search_runs(experiment_names=["skybench-lens-space"], output_format="list")) == 1
