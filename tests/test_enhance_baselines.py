"""The enhancement baselines (richardson-lucy, autoencoder, gan): a tiny run of each writes a valid submission
that runs in the sandbox and returns images of the input's shape; the exported models match the trained ones;
the evaluation scores them, on the simulated test set and on a real-truth set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import baseline_module, bwrap_works

from skybench.harness.submission import load_submission, sandboxed_predict
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tracks import load_track

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("richardson-lucy", "autoencoder", "gan")
TINY = {
    "richardson-lucy": ["--set", "num_iter=[2,4]", "--set", "pedestal_sigma=[2]"],
    "autoencoder": ["--epochs", "1", "--set", "filters=[4,8]"],
    "gan": ["--epochs", "1", "--set", "widths=[4,8,16]", "--set", "disc_widths=[4,8,16]"],
}
FORMAT = {"richardson-lucy": "python", "autoencoder": "keras", "gan": "onnx"}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return simulate_release("enhance", tmp_path_factory.mktemp("enh") / "rel", profile="demo", seed=5, size=12,
                            progress=False, workers=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, release) -> dict:
    out = tmp_path_factory.mktemp("enh-baselines")
    runs = {}
    for name in BASELINES:
        argv = ["--track", "enhance", "--release", str(release), "--out", str(out / name), "--max-train", "16",
                "--no-mlflow", *TINY[name]]
        runs[name] = baseline_module(name).train(argv)
    return runs


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or cannot create namespaces")
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.slow
def test_baseline_submission_runs_in_the_sandbox(name, trained, release, tmp_path):
    _, folder = trained[name]
    sub = load_submission(folder)
    assert (sub.spec.team, sub.spec.name, sub.spec.track, sub.spec.format) == ("baselines", name, "enhance",
                                                                                FORMAT[name])
    res = sandboxed_predict(sub, release, scratch=tmp_path / "scratch", track=load_track("enhance"), limit=5)
    assert res.ok, f"{res.reason}\n{res.log}"
    assert res.predictions.shape == (5, 3, 64, 64) and np.all(np.isfinite(res.predictions))
    x = np.asarray(open_release(release).images("test")[:5])
    assert np.abs(res.predictions - x).max() > 0  # it changed the image ...
    # ... and kept its units: the total flux moves by far less than the flux itself
    np.testing.assert_allclose(res.predictions.sum(axis=(2, 3)), x.sum(axis=(2, 3)), rtol=0.5)


@pytest.mark.slow
def test_exported_models_match_the_trained_ones(trained, release):
    import keras
    import onnxruntime as ort
    import torch

    x = np.asarray(open_release(release).images("test")[:4], dtype=np.float32)
    model, folder = trained["gan"]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):
        np.testing.assert_allclose(sess.run(None, {"images": batch})[0], expected[:len(batch)], rtol=1e-4,
                                   atol=1e-3)
    model, folder = trained["autoencoder"]
    loaded = keras.saving.load_model(folder / "model.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), np.asarray(model.predict_on_batch(x)),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_richardson_lucy_uses_the_known_psf(trained, release):
    import json

    cfg, folder = trained["richardson-lucy"]
    k = np.asarray(open_release(release).manifest["degradation"]["psf_kernel_1d"])
    np.testing.assert_allclose(np.load(folder / "psf.npy"), np.outer(k, k))
    assert json.loads((folder / "rl.json").read_text())["num_iter"] in (2, 4)


@pytest.mark.slow
def test_scoring_of_enhanced_images(release, tmp_path):
    """The track's scorer on the truth itself and on the degraded input: the truth wins every metric."""
    from skybench.harness.score import score

    track = load_track("enhance")
    rel = open_release(release)
    ids = rel.meta("test")["id"].to_numpy()
    hidden = release / "hidden" / "test"
    truth = rel.hidden("test").array("truth")[:]
    noisy = truth + np.random.default_rng(0).normal(0, 0.05, truth.shape).astype(np.float32)
    good = score(track, ids, noisy, hidden, tmp_path / "good")
    bad = score(track, ids, np.asarray(rel.images("test")), hidden, tmp_path / "bad")
    assert good["psnr"] > bad["psnr"] and good["ssim"] > bad["ssim"] and good["chi2"] < bad["chi2"]
    assert good["psnr_ci_low"] <= good["psnr"] <= good["psnr_ci_high"]
    assert (tmp_path / "good" / "gallery.png").is_file() and (tmp_path / "good" / "per_object.csv").is_file()
    real = track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": None})})
    from skybench.harness.score import score_real

    extra = score_real(real, ids, noisy, hidden, ids, noisy, hidden, tmp_path / "good")
    assert extra["real_psnr"] == pytest.approx(good["psnr"]) and "real_chi2" in extra
    assert (tmp_path / "good" / "gallery_real.png").is_file()
