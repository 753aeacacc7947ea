"""The generate task end to end: a tiny wl-maps release, the grf and lognormal-oracle baselines and two cheating
generators (training maps returned, one map repeated) run in the real sandbox by ``skybench.harness.evaluate``,
scored and ranked: the cheaters must rank below the Gaussian baseline, the oracle above it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import bwrap_works

from skybench.harness.evaluate import evaluate
from skybench.harness.visibility import private_dir
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tracks import benchmarks_dir, load_track

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "baselines" / "generate"

COPY_TRAIN = """import numpy as np
def load(d): return {"maps": np.load(d + "/train_maps.npy"), "next": 0}
def predict(m, z):
    i = m["next"] + np.arange(len(z)); m["next"] += len(z)
    return m["maps"][i % len(m["maps"])]
"""
# one map, repeated: the truth process at a fixed latent (not a training map, so only the collapse check applies)
REPEAT_ONE = """import numpy as np
import predict_base as base
def load(d): return base.load(d)
def predict(m, z): return base.predict(m, np.zeros_like(z))
"""


def _train(name: str, release: Path, out: Path) -> Path:
    spec = importlib.util.spec_from_file_location(f"train_{name}", BASELINES / name / "train.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.train(["--track", "wl-maps", "--release", str(release), "--out", str(out), "--params",
               str(ROOT / "params.yaml"), "--no-mlflow"])
    return out


def _as_test_submission(folder: Path, name: str) -> Path:
    spec = yaml.safe_load((folder / "submission.yaml").read_text()) | {"team": "tests", "name": name}
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    for p in (folder, *folder.iterdir()):  # the sandbox runs as an unprivileged uid
        p.chmod(0o755)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_cheating_generators_rank_below_the_gaussian_baseline(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(benchmarks_dir() / "wl-maps.yaml", project / "benchmarks" / "wl-maps.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # never used: publish=False
    track = load_track("wl-maps")
    release = simulate_release(track, project / "releases" / "wl-maps", seed=3, size=80, progress=False,
                               workers=1, backend="numpy")
    subs = project / "submissions" / "tests"
    grf = _as_test_submission(_train("grf", release, subs / "grf"), "grf")
    oracle = _as_test_submission(_train("lognormal-oracle", release, subs / "oracle"), "oracle")
    copier = _train("lognormal-oracle", release, subs / "copier")
    # public maps, val ones first: copying the validation split must be caught as well
    np.save(copier / "train_maps.npy", np.concatenate([np.asarray(open_release(release).array(s, "maps")[:])
                                                       for s in ("val", "train")]))
    (copier / "predict.py").write_text(COPY_TRAIN)
    copier = _as_test_submission(copier, "copier")
    repeat = _train("lognormal-oracle", release, subs / "repeat")
    shutil.copy(repeat / "predict.py", repeat / "predict_base.py")
    (repeat / "predict.py").write_text(REPEAT_ONE)
    repeat = _as_test_submission(repeat, "repeat")
    subs.chmod(0o755)

    out = project / "results" / "wl-maps" / "evaluations"
    outcomes = {o.name: o for o in evaluate([grf, oracle, copier, repeat], track, release, out=out, publish=False,
                                            force=True)}
    m = {}
    for name, o in outcomes.items():
        assert o.status == "FINISHED", f"{name}: {o.reason}"
        # the whole set's metrics are the organiser's; the participant's record has the public part's only
        m[name] = json.loads((private_dir(o.record) / "evaluation.json").read_text())["metrics"]
        shown = json.loads((o.record / "evaluation.json").read_text())["metrics"]
        assert "public_chi2_per_dof" in shown and all(k.startswith("public_") for k in shown), shown
    primary = {k: v["chi2_per_dof"] for k, v in m.items()}
    assert m["copier"]["memorised"] == 1 and m["repeat"]["collapsed"] == 1, m
    assert not (m["grf"]["memorised"] or m["grf"]["collapsed"] or m["oracle"]["memorised"]
                or m["oracle"]["collapsed"]), m
    assert primary["oracle"] < primary["grf"] < min(primary["copier"], primary["repeat"]), primary
    assert primary["oracle"] < 3, primary  # the truth process: chi^2 per dof near 1
    # the GRF has the right power spectrum but the wrong one-point PDF
    assert m["grf"]["pdf_ks"] > m["oracle"]["pdf_ks"], (m["grf"]["pdf_ks"], m["oracle"]["pdf_ks"])


def test_predictions_format_takes_a_npy_of_maps_on_a_maps_track(tmp_path: Path, monkeypatch) -> None:
    from skybench.harness.submission import load_submission, sandboxed_predict

    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(benchmarks_dir() / "wl-maps.yaml", project / "benchmarks" / "wl-maps.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    track = load_track("wl-maps")
    release = simulate_release(track, project / "releases" / "wl-maps", seed=3, size=20, progress=False,
                               workers=1, backend="numpy")
    sub = tmp_path / "sub"
    sub.mkdir()
    spec = {"team": "tests", "name": "npy", "track": "wl-maps", "format": "predictions", "model": "maps.npy"}
    (sub / "submission.yaml").write_text(yaml.safe_dump(spec))
    maps = np.random.default_rng(0).normal(0, 0.01, (20, 1, 64, 64)).astype(np.float32)

    def run(array: np.ndarray, name: str = "maps.npy") -> tuple[bool, str]:
        for f in sub.glob("maps.*"):
            f.unlink()
        np.save(sub / "maps.npy", array)
        if name != "maps.npy":
            (sub / "maps.npy").rename(sub / name)
        (sub / "submission.yaml").write_text(yaml.safe_dump(spec | {"model": name}))
        res = sandboxed_predict(load_submission(sub), release, scratch=tmp_path / "scratch", track=track)
        return res.ok, res.reason

    ok, reason = run(maps)
    assert ok, reason
    for bad, word in ((maps[:-1], "expected (20, 1, 64, 64)"), (maps[:, :, :32], "expected (20, 1, 64, 64)"),
                      (np.where(np.arange(64) == 3, np.nan, maps).astype(np.float32), "non-finite")):
        ok, reason = run(bad)
        assert not ok and word in reason and "\n" not in reason, reason
    (sub / "maps.csv").write_text("id,score\n")
    ok, reason = run(maps, "maps.csv")
    assert not ok and ".npy" in reason, reason


@pytest.mark.slow
def test_cosmogan_trains_and_exports_a_generator_of_maps(tmp_path: Path, monkeypatch) -> None:
    import onnxruntime as ort

    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(benchmarks_dir() / "wl-maps.yaml", project / "benchmarks" / "wl-maps.yaml")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    release = simulate_release(load_track("wl-maps"), project / "releases" / "wl-maps", seed=3, size=20,
                               progress=False, workers=1, backend="numpy")
    spec = importlib.util.spec_from_file_location("train_cosmogan", BASELINES / "cosmogan" / "train.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, out = mod.train(["--track", "wl-maps", "--release", str(release), "--out", str(tmp_path / "gan"),
                            "--params", str(ROOT / "params.yaml"), "--no-mlflow", "--epochs", "1",
                            "--max-train", "16", "--set", "widths=[16,8,8,4]", "--set", "disc_widths=[4,8,8,16]"])
    assert yaml.safe_load((out / "submission.yaml").read_text())["format"] == "onnx"
    z = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "model.onnx"))
    maps = sess.run(None, {sess.get_inputs()[0].name: z})[0]
    assert maps.shape == (5, 1, 64, 64) and np.isfinite(maps).all()
    # the log-pixel transform is inverted inside the model: kappa = exp(.) - shift > -shift, where the shift is
    # just beyond the training maps' minimum (raw standardised outputs would reach far below)
    train = np.asarray(open_release(release).array("train", "maps")[:16], np.float64)
    assert maps.min() > -(-train.min() + 0.1 * train.std()) - 1e-6
    assert maps.std(axis=(1, 2, 3)).min() > 0  # not a constant map
