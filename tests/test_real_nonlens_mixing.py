"""The real non-lens sets (issue 19) in the test stream: folded in like the real lenses (mixing.fold_in), scored
back as real_fpr / real_auroc, and not told apart from the simulated non-lenses by their noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import PIXEL_SUM, bwrap_works, mlflow_store, python_submission
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from skybench.common import robust_sigma
from skybench.harness.evaluate import evaluate, record_dir
from skybench.harness.visibility import private_dir
from skybench.release import open_release, read_manifest
from skybench.release.mixing import Stream
from skybench.simulate import simulate_release
from skybench.tasks.lens.metrics import threshold_at_fpr
from skybench.tasks.lens.real import NO_REAL_LENSES, import_real_set
from skybench.tracks import load_track


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))


@pytest.fixture(scope="module")
def real_sets(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    return {"lens-space": import_real_set(real_data, "lens-space", out / "real-lens-space"),
            "lens-ground": import_real_set(real_data, "lens-ground", out / "real-lens-ground", limit=48)}


def _with_real(name: str, real) -> object:
    track = load_track(name)
    return track.model_copy(update={"evaluation": track.evaluation.model_copy(update={"real_set": str(real)})})


def test_the_real_sets_hold_lenses_and_nonlenses_or_say_why_not(real_sets):
    space = open_release(real_sets["lens-space"]).hidden("test").meta()
    assert (space.is_lens == 1).sum() == 27 and (space.is_lens == 0).sum() >= 25
    assert set(space.real_kind) == {"lens", "nonlens"} and space.id.tolist() == list(range(len(space)))
    ground = open_release(real_sets["lens-ground"]).hidden("test").meta()
    # Every stamp but those too shallow to reach their drawn flux at the track's noise (recorded).
    assert (ground.is_lens == 0).all() and len(ground) + ground.stamps_dropped_unreachable_flux.iloc[0] == 48
    assert len(ground) >= 12
    m = read_manifest(real_sets["lens-ground"])
    assert m["real_lenses"] == 0 and m["real_lenses_why_none"] == NO_REAL_LENSES and "PNG" in NO_REAL_LENSES
    assert m["image_shape"] == [4, 101, 101] and read_manifest(real_sets["lens-space"])["real_lenses"] == 27
    # The public index of a real set names nothing but ids.
    assert list(open_release(real_sets["lens-ground"]).meta("test").columns) == ["id"]


def _border_stats(images: np.ndarray) -> np.ndarray:
    border = np.ones(images.shape[-2:], dtype=bool)
    border[10:-10, 10:-10] = False
    return np.array([[robust_sigma(band[border]) for band in im] for im in images])


@pytest.mark.parametrize("name", ["lens-space", "lens-ground"])
def test_a_classifier_on_the_noise_cannot_tell_real_from_simulated_nonlenses(name, real_sets, tmp_path):
    """Logistic regression on the per-band noise of the frame's border (robust sigma), cross-validated: real
    non-lenses against simulated non-lenses of the same track, no better than chance (AUROC < 0.7). On the noise
    without the dimming (KiDS i is 1.36 x the track's) it is above 0.99 on lens-ground."""
    sim = simulate_release(name, tmp_path / name, seed=3, size=256, progress=False, real_set=False)
    hidden = open_release(sim).hidden("test").meta()
    sim_images = open_release(sim).images("test")[:][hidden.is_lens.to_numpy() == 0]
    real_meta = open_release(real_sets[name]).hidden("test").meta()
    real_images = open_release(real_sets[name]).images("test")[:][real_meta.is_lens.to_numpy() == 0]
    assert real_images.shape[1:] == sim_images.shape[1:] and real_images.dtype == sim_images.dtype == np.float32
    x = np.concatenate([_border_stats(sim_images), _border_stats(real_images)])
    y = np.r_[np.zeros(len(sim_images)), np.ones(len(real_images))]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    p = cross_val_predict(LogisticRegression(), x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                          method="predict_proba")[:, 1]
    assert roc_auc_score(y, p) < 0.7, roc_auc_score(y, p)


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
@pytest.mark.parametrize("name", ["lens-space", "lens-ground"])
def test_real_nonlenses_are_folded_in_and_scored_as_real_fpr(name, real_sets, tmp_path):
    track = _with_real(name, real_sets[name])
    release = simulate_release(track, tmp_path / "rel", seed=3, size=64, progress=False, real_set=True)
    n_real = len(open_release(real_sets[name]).meta("test"))
    assert read_manifest(release)["real_set"]["real"] == n_real
    stream = Stream.load(release, real_sets[name])
    assert stream is not None and stream.is_real.sum() == n_real
    # One stream of opaque ids; the real objects spread over it.
    ids = open_release(release).meta("test").id.tolist()
    assert ids == [f"t{i:06d}" for i in range(64 + n_real)]
    pos = np.flatnonzero(stream.is_real)
    assert pos.min() < 64 and not np.array_equal(pos, np.arange(64, 64 + n_real))
    sub = python_submission(tmp_path / "subs", "sum", PIXEL_SUM, track=name)
    (o,) = evaluate([sub], track, release, out=tmp_path / "evals", publish=False)
    assert o.status == "FINISHED", o.reason
    priv = private_dir(record_dir(tmp_path / "evals", "tests", "sum"))
    pred, real = pd.read_csv(priv / "predictions.csv"), pd.read_csv(priv / "real_predictions.csv")
    labels = open_release(release).hidden("test").meta().set_index("id").loc[pred.id, "is_lens"].to_numpy()
    cut = threshold_at_fpr(labels, pred.score.to_numpy(), 0.01)
    real_lens = open_release(real_sets[name]).hidden("test").meta().set_index("id").loc[real.id, "is_lens"]
    is_lens = real_lens.to_numpy() == 1
    s = real.score.to_numpy()
    assert o.metrics["real_fpr"] == pytest.approx(np.mean(s[~is_lens] >= cut))
    assert o.metrics["real_fpr_ci_low"] <= o.metrics["real_fpr"] <= o.metrics["real_fpr_ci_high"]
    if name == "lens-space":
        assert o.metrics["real_auroc"] == pytest.approx(roc_auc_score(is_lens, s))
        assert o.metrics["real_lens_recall"] == pytest.approx(np.mean(s[is_lens] >= cut))
    else:
        assert math.isnan(o.metrics["real_auroc"]) and math.isnan(o.metrics["real_lens_recall"])
