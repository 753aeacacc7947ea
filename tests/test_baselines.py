"""The four baselines: a tiny training run of each writes a valid submission that runs in the sandbox, its
exported model scores like the in-framework model, and its training curves reach MLflow."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import baseline_module, bwrap_works

from skybench.harness.submission import load_submission, sandboxed_predict
from skybench.release.reader import open_release
from skybench.tracks import load_track

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("knn", "mlp", "cnn", "resnet")
TINY = {  # small widths so that the whole file stays fast
    "knn": ["--set", "n_components=4", "--set", "n_neighbors=5"],
    "mlp": ["--epochs", "2", "--set", "n_components=8", "--set", "hidden=[16]"],
    "cnn": ["--epochs", "1", "--set", "filters=[4,8]", "--set", "dense=16"],
    "resnet": ["--epochs", "2", "--set", "stem=8", "--set", "widths=[8,16]", "--set", "units=[1,1]",
               "--set", "lr_step=1"],
}
FORMAT = {"knn": "sklearn", "mlp": "sklearn", "cnn": "keras", "resnet": "onnx"}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_space_release, mlflow_uri) -> dict:
    """Each baseline trained once on the tiny lens-space release: {name: (in-framework model, folder)}."""
    out = tmp_path_factory.mktemp("baselines")
    runs = {}
    for name in BASELINES:
        argv = ["--track", "lens-space", "--release", str(tiny_space_release), "--out", str(out / name),
                "--max-train", "64", *TINY[name]]
        model, folder = baseline_module(name).train(argv)
        runs[name] = (model, folder)
    return runs


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.slow
def test_tiny_training_writes_a_submission(name, trained):
    _, folder = trained[name]
    sub = load_submission(folder)
    assert (sub.spec.team, sub.spec.name, sub.spec.track, sub.spec.format) == (
        "baselines", name, "lens-space", FORMAT[name])
    assert sub.model_path.is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted(["submission.yaml", sub.spec.model])


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.slow
def test_submission_runs_in_the_sandbox(name, trained, tiny_space_release, tmp_path):
    _, folder = trained[name]
    res = sandboxed_predict(load_submission(folder), tiny_space_release, scratch=tmp_path / "scratch",
                            track=load_track("lens-space"), limit=8)
    assert res.ok, f"{res.reason}\n{res.log}"
    assert res.predictions.shape == (8,)
    assert np.all((res.predictions >= 0) & (res.predictions <= 1))


def _images(release: Path) -> np.ndarray:
    return np.asarray(open_release(release).images("test")[:16], dtype=np.float32)


@pytest.mark.slow
def test_knn_and_mlp_skops_files_score_like_the_pipelines(trained, tiny_space_release):
    import skops.io as sio

    from skybench.harness.runner import SKOPS_ALLOWED

    flat = _images(tiny_space_release).reshape(16, -1)
    for name in ("knn", "mlp"):
        model, folder = trained[name]
        untrusted = sio.get_untrusted_types(file=folder / "model.skops")
        assert all(t.startswith(SKOPS_ALLOWED) for t in untrusted), untrusted
        loaded = sio.load(folder / "model.skops", trusted=untrusted)
        np.testing.assert_allclose(loaded.predict_proba(flat)[:, 1], model.predict_proba(flat)[:, 1], atol=1e-4)


@pytest.mark.slow
def test_cnn_keras_file_scores_like_the_trained_model(trained, tiny_space_release):
    import keras

    model, folder = trained["cnn"]
    x = _images(tiny_space_release)
    loaded = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)).reshape(-1),
                               np.asarray(model.predict_on_batch(x)).reshape(-1), atol=1e-4)


@pytest.mark.slow
def test_resnet_onnx_scores_like_torch(trained, tiny_space_release):
    import onnxruntime as ort
    import torch

    model, folder = trained["resnet"]
    x = _images(tiny_space_release)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:3], x[:1]):  # dynamic batch axis
        got = sess.run(None, {sess.get_inputs()[0].name: batch})[0]
        np.testing.assert_allclose(got, expected[:len(batch)], atol=1e-4)


@pytest.mark.slow
def test_noise_normalisation_is_inside_every_model(trained, tiny_space_release):
    from skybench.training import baseline_params, noise_sigma

    x = np.asarray(open_release(tiny_space_release).images("train")[:64], dtype=np.float32)
    sigma = noise_sigma(x)
    resnet = trained["resnet"][0]
    np.testing.assert_allclose(resnet.net.pre.inv_sigma.reshape(-1).numpy(), 1 / sigma, rtol=1e-6)
    for name in ("knn", "mlp"):  # the stretch keeps its noise scale (it is not refitted per pixel)
        scale = trained[name][0].named_steps["stretch"].named_steps["noise"].scale_
        np.testing.assert_allclose(np.unique(scale), sigma, rtol=1e-6)
    norm = next(layer for layer in trained["cnn"][0].layers if layer.__class__.__name__ == "Normalization")
    clip = baseline_params("cnn", track="lens-space")["clip_sigma"]
    np.testing.assert_allclose(np.ravel(norm.variance), (sigma * clip) ** 2, rtol=1e-5)


@pytest.mark.slow
def test_training_curves_are_logged_apart_from_the_leaderboard(trained, mlflow_uri):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_uri)
    assert c.get_experiment_by_name("skybench-lens-space") is None  # the leaderboard experiment is untouched
    exp = c.get_experiment_by_name("skybench-training-lens-space")
    runs = c.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["baseline"] for r in runs) == sorted(BASELINES)
    for run in runs:
        assert run.info.status == "FINISHED"
        name = run.data.tags["baseline"]
        history = c.get_metric_history(run.info.run_id, "val_auroc")
        epochs = {"knn": 1, "mlp": 2, "cnn": 1, "resnet": 2}[name]
        assert [m.step for m in history] == list(range(1, epochs + 1))
        for key in ("loss", "val_loss"):
            assert all(math.isfinite(m.value) for m in c.get_metric_history(run.info.run_id, key))


def test_params_and_dvc_stages_cover_every_baseline_and_track():
    from dvc.repo import Repo

    from skybench.stagedeps import pipeline_files

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    groups = {k: v for f in pipeline_files(ROOT) for k, v in yaml.safe_load(f.read_text())["stages"].items()}
    with Repo(str(ROOT)) as repo:
        stages = {s.name: s for s in repo.index.stages if s.cmd and s.name.startswith("train-")}
    # every lens baseline is trained on every lens track
    assert {f"train-lens@{b}-{t}" for b in BASELINES for t in ("lens-space", "lens-ground")} <= set(stages)
    for key, stage in stages.items():  # each stage: a baseline of its task with parameters, on a track of that task
        group, _, _ = key.partition("@")
        task = group.removeprefix("train-").split("-")[0]
        script, track = stage.cmd.split()[1], stage.cmd.split("--track ")[1].split()[0]
        baseline = Path(script).parent.name
        # a mixture (--also) is its own stage and names its submission (--name): train-lens-mix -> resnet-mix
        name = stage.cmd.split("--name ")[1].split()[0] if "--also " in stage.cmd else baseline
        assert script == f"baselines/{task}/{baseline}/train.py" and (ROOT / script).is_file()
        assert key == (f"{group}@{baseline}-{track}" if name == baseline else group)
        assert baseline in params["train"] and track in params["tracks"][task]
        assert [o.def_path for o in stage.outs] == [f"baselines/{task}/{name}/{track}"]
        assert all("hidden" not in d.def_path and not d.def_path.rstrip("/").endswith("test") for d in stage.deps)
        assert ("train.${item.baseline}" if name == baseline else f"train.{baseline}") in groups[group]["params"]


def test_parameters_follow_the_profile(tmp_path):
    from skybench.training import baseline_params

    f = tmp_path / "params.yaml"
    f.write_text("profile: challenge\ntrain:\n  x:\n    seed: 1\n    epochs: {demo: 2, challenge: 9}\n")
    assert baseline_params("x", params_file=f)["epochs"] == 9
    assert baseline_params("x", params_file=f, profile="demo")["epochs"] == 2
    assert baseline_params("x", params_file=f, overrides=["epochs=3"])["epochs"] == 3
    with pytest.raises(KeyError):
        baseline_params("x", params_file=f, overrides=["nope=1"])


def test_training_threads_default_to_the_top_level_setting(tmp_path):
    from skybench.training import baseline_params

    f = tmp_path / "params.yaml"
    f.write_text("profile: demo\ncpu_threads: {demo: 1, challenge: 0}\ntrain:\n  x: {seed: 1}\n"
                 "  y: {seed: 1, cpu_threads: 3}\n")
    assert baseline_params("x", params_file=f)["cpu_threads"] == 1
    assert baseline_params("x", params_file=f, profile="challenge")["cpu_threads"] == 0
    assert baseline_params("y", params_file=f)["cpu_threads"] == 3
    assert baseline_params("x", params_file=f, overrides=["cpu_threads=2"])["cpu_threads"] == 2


def test_set_threads_limits_blas_and_torch():
    """In a fresh process (the limits last for the process): BLAS's pools and torch's intra-op threads."""
    code = ("import torch, numpy\nfrom threadpoolctl import threadpool_info\n"
            "from skybench.training import set_threads\nset_threads(1)\n"
            "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["1", "[1]"], out
