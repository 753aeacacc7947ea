"""The shared evaluation stage end to end: sandboxed inference, scoring, MLflow, leaderboard, faults."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import HIDDEN_TEST_META, mlflow_store, python_submission
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.evaluate import evaluate, record_dir
from skybench.harness.visibility import private_dir
from skybench.release import ReleaseError, layout, open_release
from skybench.tasks.lens.metrics import lens_metrics
from skybench.tracking import leaderboard as lb
from skybench.tracks import load_track

PREDICT_OK = """
import numpy as np
def load(model_dir):
    return None
def predict(model, batch):
    # Central flux against the outer ring: a weak but real lens score.
    centre = batch[:, :, 35:66, 35:66].sum(axis=(1, 2, 3))
    return (centre / (np.abs(batch).sum(axis=(1, 2, 3)) + 1e-9)).astype("float32")
"""
PREDICT_NAN = "import numpy as np\ndef load(d): return None\ndef predict(m, b): return np.full(len(b), np.nan)\n"
PREDICT_CRASH = "def load(d): return None\ndef predict(m, b): raise RuntimeError('kaboom in predict')\n"
PREDICT_HIDDEN = f"""
def load(d):
    return open('/inputs/../{HIDDEN_TEST_META}', 'rb').read()
def predict(m, b): return b.sum(axis=(1, 2, 3))
"""


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    return tmp_path


@pytest.fixture
def subs(tmp_path):
    root = tmp_path / "subs"
    return {name: python_submission(root, name, code) for name, code in
            [("ok", PREDICT_OK), ("nan", PREDICT_NAN), ("crash", PREDICT_CRASH), ("hidden", PREDICT_HIDDEN)]}


@pytest.mark.slow
def test_evaluate_scores_good_submissions_and_fails_bad_ones_without_stopping(store, subs, tiny_space_release):
    out = store / "evals"
    outcomes = {o.name: o for o in evaluate(list(subs.values()), "lens-space", tiny_space_release, out=out)}
    assert outcomes["ok"].status == "FINISHED"
    assert outcomes["nan"].status == "FAILED" and "non-finite" in outcomes["nan"].reason
    assert outcomes["crash"].status == "FAILED" and "kaboom" in outcomes["crash"].reason
    assert outcomes["hidden"].status == "FAILED"
    # The scores are the metric module's on the hidden labels, recomputed here independently.
    hidden = open_release(tiny_space_release).hidden("test").meta().set_index("id")
    pred = pd.read_csv(private_dir(record_dir(out, "tests", "ok")) / "predictions.csv")  # organiser folder only
    expected = lens_metrics(hidden.loc[pred.id, "is_lens"].to_numpy(), pred.score.to_numpy(), seed=0)
    assert outcomes["ok"].metrics["auroc"] == pytest.approx(expected["auroc"], abs=1e-12)
    for f in ("roc.png", "completeness.png", "metrics.json", "roc.csv", "evaluation.json", "predictions.csv"):
        assert (private_dir(record_dir(out, "tests", "ok")) / f).is_file(), f
    assert sorted(p.name for p in record_dir(out, "tests", "ok").iterdir()) == \
        ["evaluation.json", "metrics.json", "roc_public.csv", "roc_public.png", "run.json"]
    board = lb.leaderboard(load_track("lens-space"))
    assert list(board.loc[board["rank"].notna(), "name"]) == ["ok"]
    failed = board[board.status == "FAILED"]
    assert set(failed.name) == {"nan", "crash", "hidden"} and failed["rank"].isna().all()


@pytest.mark.slow
def test_re_evaluating_an_unchanged_submission_adds_no_run(store, subs, tiny_space_release):
    from skybench.tracking import client, experiment_name

    evaluate([subs["ok"]], "lens-space", tiny_space_release, out=store / "evals")
    again = evaluate([subs["ok"]], "lens-space", tiny_space_release, out=store / "evals")
    assert again[0].status == "SKIPPED"
    shutil.rmtree(store / "evals")  # even without the local record, MLflow knows it
    third = evaluate([subs["ok"]], "lens-space", tiny_space_release, out=store / "evals")
    assert third[0].status == "SKIPPED"
    exp = client().get_experiment_by_name(experiment_name("lens-space"))
    assert len(client().search_runs([exp.experiment_id])) == 1


def test_a_corrupt_shard_stops_evaluation_naming_the_file_and_leaves_the_leaderboard(store, subs, tmp_path,
                                                                                     tiny_space_release):
    evaluate([subs["ok"]], "lens-space", tiny_space_release, out=store / "evals")
    before = lb.leaderboard(load_track("lens-space"))
    bad = tmp_path / "bad-release"
    shutil.copytree(tiny_space_release, bad)
    shard = layout.shard_paths(layout.public_dir(bad, "test"), "images")[0]  # corrupted on purpose
    data = np.load(shard)
    data[0, 0, 0, 0] += 1
    np.save(shard, data)
    with pytest.raises(ReleaseError, match=layout.relpath(shard, bad)):
        evaluate([subs["nan"]], "lens-space", bad, out=store / "evals")
    pd.testing.assert_frame_equal(lb.leaderboard(load_track("lens-space")), before)


@pytest.mark.slow
def test_evaluate_runs_without_mlflow_installed_and_keeps_the_record(subs, tiny_space_release, tmp_path):
    """A bare GPU image has no MLflow: the evaluation runs, its record is kept for `skybench log`, and the reason
    says why it was not logged (``import mlflow`` fails in the child, as where it is not installed)."""
    code = ("import json, sys; sys.modules['mlflow'] = None\n"
            "from skybench.harness.evaluate import evaluate\n"
            "(o,) = evaluate([sys.argv[1]], 'lens-space', sys.argv[2], out=sys.argv[3])\n"
            "print(json.dumps({'status': o.status, 'reason': o.reason}))")
    out = tmp_path / "evals"
    got = subprocess.run([sys.executable, "-c", code, str(subs["ok"]), str(tiny_space_release), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-2000:]
    result = json.loads(got.stdout.strip().splitlines()[-1])
    assert result["status"] == "FINISHED" and "MLflow cannot be imported" in result["reason"], result
    assert "skybench log" in result["reason"]
    assert json.loads((record_dir(out, "tests", "ok") / "evaluation.json").read_text())["status"] == "FINISHED"


def test_unreachable_tracking_server_keeps_the_record_for_skybench_log(store, subs, tiny_space_release, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    out = store / "evals"
    res = evaluate([subs["ok"]], "lens-space", tiny_space_release, out=out)
    assert "not logged to MLflow" in res[0].reason and "skybench log" in res[0].reason
    assert json.loads((record_dir(out, "tests", "ok") / "evaluation.json").read_text())["status"] == "FINISHED"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    result = CliRunner().invoke(app, ["log", str(out), "--track", "lens-space"])
    assert result.exit_code == 0 and "1 run(s) logged" in result.output
    assert list(lb.leaderboard(load_track("lens-space")).name) == ["ok"]


def test_cli_leaderboard_csv_has_the_documented_columns(store, subs, tiny_space_release):
    evaluate([subs["ok"], subs["crash"]], "lens-space", tiny_space_release, out=store / "evals")
    result = CliRunner().invoke(app, ["leaderboard", "lens-space", "--format", "csv", "--all-releases"])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split(",")
    for col in ("rank", "team", "name", "status", "auroc", "tpr0", "tpr10", "auroc_ci_low", "auroc_ci_high"):
        assert col in header


def test_cli_validate_accepts_a_good_submission_and_explains_a_bad_one(subs, tiny_space_release):
    ok = CliRunner().invoke(app, ["validate", str(subs["ok"]), "--release", str(tiny_space_release)])
    assert ok.exit_code == 0 and "OK" in ok.output
    bad = CliRunner().invoke(app, ["validate", str(subs["nan"]), "--release", str(tiny_space_release)])
    assert bad.exit_code != 0 and "non-finite" in bad.output


ATTACKS = {
    "socket": """
import socket
def load(d):
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"stolen")
def predict(m, b): return b.sum(axis=(1, 2, 3))
""",
    "write-outside": """
def load(d):
    open("{target}", "w").write("pwned")
def predict(m, b): return b.sum(axis=(1, 2, 3))
""",
    "alloc-10gb": """
import numpy as np
def load(d):
    return np.ones(10 * 1024**3 // 8)
def predict(m, b): return b.sum(axis=(1, 2, 3))
""",
    "loop-forever": """
def load(d):
    while True:
        pass
def predict(m, b): return b.sum(axis=(1, 2, 3))
""",
    "background": """
import subprocess, sys
def load(d):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"], start_new_session=True)
def predict(m, b): return b.sum(axis=(1, 2, 3))
""",
    "wrong-shape": "def load(d): return None\ndef predict(m, b): return b[:, 0, :2, 0]\n",
}


@pytest.mark.slow
def test_every_attack_is_failed_with_a_reason_and_the_honest_submission_still_scores(store, tmp_path,
                                                                                    tiny_space_release):
    import socket
    import uuid

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    target = tmp_path / "outside.txt"
    marker = f"skybench-marker-{uuid.uuid4().hex}"
    root = tmp_path / "attacks"
    folders = [python_submission(root, name, code.replace("{port}", str(server.getsockname()[1]))
                           .replace("{target}", str(target)).replace("{marker}", marker))
               for name, code in ATTACKS.items()]
    folders.insert(3, python_submission(root, "honest", PREDICT_OK))
    track = load_track("lens-space")
    track = track.model_copy(update={"sandbox": track.sandbox.model_copy(
        update={"memory_mb": 2048, "wall_seconds": 20, "cpu_seconds": 5})})  # loop-forever burns only 5 CPU s
    outcomes = {o.name: o for o in evaluate(folders, track, tiny_space_release, out=tmp_path / "evals")}
    assert outcomes["honest"].status == "FINISHED" and outcomes["honest"].metrics["auroc"] > 0
    expected = {"socket": "", "write-outside": "", "alloc-10gb": "memory", "loop-forever": "limit",
                "background": "background", "wrong-shape": "shape"}
    for name, word in expected.items():
        assert outcomes[name].status == "FAILED", name
        assert word in outcomes[name].reason and "\n" not in outcomes[name].reason, (name, outcomes[name].reason)
    with pytest.raises(TimeoutError):
        server.accept()  # nothing ever connected
    assert not target.exists()
    procs = [p for p in __import__("pathlib").Path("/proc").glob("[0-9]*/cmdline")]
    assert not any(marker.encode() in p.read_bytes() for p in procs if p.exists())
    board = lb.leaderboard(load_track("lens-space"))
    assert list(board.loc[board["rank"].notna(), "name"]) == ["honest"]


def test_real_lens_recall_is_the_fraction_above_the_1_percent_fpr_threshold(store, subs, tmp_path,
                                                                             tiny_space_release):
    from skybench.simulate import simulate_release
    from skybench.tasks.lens.metrics import threshold_at_fpr

    # seed 12: each part of this 8-object stand-in holds lenses and non-lenses (the board shows the public part's)
    real = simulate_release("lens-space", tmp_path / "real", seed=12, size=8, progress=False, real_set=False)
    track = load_track("lens-space")
    track = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": str(real)})})
    # The real set is folded into the release's test stream when it is made (skybench.release.mixing).
    release = simulate_release(track, tmp_path / "rel", seed=3, size=64, progress=False, real_set=True)
    (o,) = evaluate([subs["ok"]], track, release, out=tmp_path / "evals")
    pred = pd.read_csv(private_dir(record_dir(tmp_path / "evals", "tests", "ok")) / "predictions.csv")
    real_scores = pd.read_csv(private_dir(record_dir(tmp_path / "evals", "tests", "ok")) / "real_predictions.csv")
    hidden = open_release(release).hidden("test").meta().set_index("id")
    cut = threshold_at_fpr(hidden.loc[pred.id, "is_lens"].to_numpy(), pred.score.to_numpy(), 0.01)
    assert len(real_scores) == 8
    # The stand-in real set is simulated: its lenses give real_lens_recall, its non-lenses real_fpr.
    is_lens = open_release(real).hidden("test").meta().set_index("id").loc[real_scores.id, "is_lens"].to_numpy() == 1
    above = real_scores.score.to_numpy() >= cut
    assert 0 < is_lens.sum() < 8
    assert o.metrics["real_lens_recall"] == pytest.approx(np.mean(above[is_lens]))
    assert o.metrics["real_fpr"] == pytest.approx(np.mean(above[~is_lens]))
    board = lb.leaderboard(track)
    assert "real_lens_recall" in board.columns and board["real_lens_recall"].notna().all()


def test_cli_evaluate_of_a_mistyped_folder_is_refused_and_records_nothing(store, subs, tiny_space_release):
    """`skybench evaluate submissions/lensfnders/resnet --track ...`: a typo was evaluated as a FAILED entry of a
    team named by the path, kept on the leaderboard; now nothing runs and nothing is written."""
    out = store / "evals"
    r = CliRunner().invoke(app, ["evaluate", str(subs["ok"]), str(store / "nothere"), "--track", "lens-space",
                                 "--release", str(tiny_space_release), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"error: no such submission folder: {store / 'nothere'}; nothing evaluated"
    assert not out.exists() or not any(out.iterdir())
    board = CliRunner().invoke(app, ["leaderboard", "lens-space", "--format", "csv", "--all-releases"])
    assert board.exit_code == 0 and len(board.output.strip().splitlines()) == 1, board.output  # the header only
