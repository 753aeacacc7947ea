"""The photo-z baselines: a tiny training run of each writes a valid submission that runs in the sandbox and
returns a valid output (a point estimate, or a PDF on the track's grid); the real SDSS MGS release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import baseline_module, bwrap_works

from skybench.harness.submission import load_submission, sandboxed_predict, validate_predictions
from skybench.release import layout, open_release
from skybench.tracks import load_track

ROOT = Path(__file__).resolve().parents[1]
MGS = ROOT / "data" / "photoz_sdss_mgs"
CATALOGUE = ("photoz-knn", "photoz-linear", "photoz-mlp")
TINY = {"photoz-knn": ["--set", "n_neighbors=5"], "photoz-linear": [],
        "photoz-mlp": ["--epochs", "5", "--set", "hidden=[8]"],
        "photoz-cnn": ["--epochs", "1", "--set", "filters=[4,8]", "--set", "dense=16", "--set", "batch_size=16"]}
TRACK_OF = {"photoz-knn": "photoz-catalog", "photoz-linear": "photoz-catalog", "photoz-mlp": "photoz-catalog",
            "photoz-cnn": "photoz-images"}


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    from skybench.simulate import simulate_release

    base = tmp_path_factory.mktemp("photoz")
    return {t: simulate_release(t, base / t, profile="demo", seed=5, size=20, progress=False, workers=1)
            for t in ("photoz-catalog", "photoz-images")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, releases) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("photoz-baselines")
    folders = {}
    for name, track in TRACK_OF.items():
        argv = ["--track", track, "--release", str(releases[track]), "--out", str(out / name), "--no-mlflow",
                *TINY[name]]
        folders[name] = baseline_module(name).train(argv)[1]
    return folders


def test_simulated_releases_name_their_features(releases):
    from skybench.release import read_manifest, verify_release

    for track, names in (("photoz-catalog", 11), ("photoz-images", 1)):
        man = read_manifest(releases[track])
        assert len(man["feature_names"]) == names and man["label_columns"] == ["z"]
        assert verify_release(releases[track]) == []
        assert "z" not in open_release(releases[track]).meta("test")
    assert set(read_manifest(releases["photoz-images"])["arrays"]) == {"images", "features"}


@pytest.mark.parametrize("name", list(TRACK_OF))
@pytest.mark.slow
def test_tiny_training_writes_a_valid_submission(name, trained, releases, tmp_path):
    folder = trained[name]
    sub = load_submission(folder)
    track = load_track(TRACK_OF[name])
    assert (sub.spec.team, sub.spec.name, sub.spec.track) == ("baselines", name, track.name)
    assert sub.spec.format == ("keras" if name == "photoz-cnn" else "sklearn")
    if not bwrap_works():
        pytest.skip("bubblewrap missing or cannot create namespaces")
    res = sandboxed_predict(sub, releases[track.name], scratch=tmp_path / "scratch", track=track)
    assert res.ok, f"{res.reason}\n{res.log}"
    n = len(res.ids)
    assert validate_predictions(res.predictions, n, track.output) == ""
    want = (n, 180) if name == "photoz-cnn" else (n,)  # the CNN returns a PDF, the others a point estimate
    assert res.predictions.shape == want
    if name == "photoz-cnn":
        np.testing.assert_allclose(res.predictions.sum(axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_scoring_writes_metrics_and_plots(trained, releases, tmp_path):
    from skybench.harness.score import score

    track = load_track("photoz-images")
    rel = releases["photoz-images"]
    ids = open_release(rel).meta("test")["id"].to_numpy()
    pdf = np.full((len(ids), 180), 1 / 180, dtype=np.float32)
    metrics = score(track, ids, pdf, open_release(rel).hidden(), tmp_path)
    assert {"sigma_mad", "sigma_mad_ci_low", "sigma_mad_ci_high", "pit_ks", "crps", "cde_loss"} <= set(metrics)
    for f in ("metrics.json", "zphot.csv", "zphot_vs_zspec.png", "dz_vs_zspec.png", "pit.png", "pit.csv"):
        assert (tmp_path / f).is_file(), f
    with pytest.raises(ValueError, match="sum to 1"):
        score(track, ids, pdf * 3, open_release(rel).hidden(), tmp_path / "bad")


def test_photoz_entries_in_params_and_dvc():
    from dvc.repo import Repo

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with Repo(str(ROOT)) as repo:
        stages = {s.name: s for s in repo.index.stages if s.cmd}
    group = {"photoz-cnn": "train-photoz-images"}
    wanted = [(name, track) for name, track in TRACK_OF.items()] + [(n, "photoz-sdss-mgs") for n in CATALOGUE]
    for name, track in wanted:
        assert name in params["train"]
        stage = stages[f"{group.get(name, 'train-photoz')}@{name}-{track}"]
        assert stage.cmd.split()[:2] == ["python", f"baselines/photoz/{name}/train.py"]
        assert f"--track {track}" in stage.cmd
        assert [o.def_path for o in stage.outs] == [f"baselines/photoz/{name}/{track}"]
    assert [o.def_path for o in stages["import-sdss-mgs"].outs] == ["releases/photoz-sdss-mgs"]
    for name in TRACK_OF:  # trained submissions are DVC outputs, not in git
        ignored = (ROOT / "baselines" / "photoz" / name / ".gitignore").read_text().split()
        assert f"/{TRACK_OF[name]}" in ignored


@pytest.mark.skipif(not (MGS / "train.csv").is_file(), reason="real data not pulled (make data)")
@pytest.mark.slow
def test_sdss_mgs_release_and_knn(tmp_path):
    from skybench.release import read_manifest, verify_release
    from skybench.release.reader import open_release
    from skybench.tasks.photoz.metrics import sigma_mad
    from skybench.tasks.photoz.real import FEATURES, import_sdss_mgs

    out = import_sdss_mgs(ROOT / "data", "photoz-sdss-mgs", tmp_path / "mgs", progress=False)
    assert verify_release(out) == []
    man = read_manifest(out)
    assert man["counts"] == {"train": 4500, "val": 500, "test": 5000}
    assert man["feature_names"] == list(FEATURES)
    assert list(open_release(out).meta("test").columns) == ["id"]
    hidden = open_release(out).hidden("test").meta()
    src = pd.read_csv(MGS / "test.csv")
    np.testing.assert_allclose(hidden["z"], src.iloc[:, 0])
    rel = open_release(out)
    np.testing.assert_allclose(np.asarray(rel.features("val"))[:, 0], pd.read_csv(MGS / "train.csv")["mag_u"][4500:],
                               rtol=1e-6)
    # the k-NN baseline on this split matches the reference k-NN (sigma_MAD ~ 0.0144)
    model, _ = baseline_module("photoz-knn").train(["--track", "photoz-sdss-mgs", "--release", str(out), "--out",
                                                    str(tmp_path / "knn"), "--no-mlflow"])
    x = np.concatenate([np.load(p) for p in layout.shard_paths(layout.public_dir(out, "test"), "features")])
    assert sigma_mad(model.predict(x.astype(np.float64)), hidden["z"].to_numpy()) < 0.0150
