"""The generate task end to end: a tiny wl-maps release, the grf and lognormal-oracle baselines and two cheating
generators (training maps returned, one map repeated) run in the real sandbox by ``skybench.harness.evaluate``,
scored and ranked: the cheaters must rank below the Gaussian baseline, the oracle above it."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import bwrap_works, python_submission
from typer.testing import CliRunner

from skybench.cli import app
from skybench.harness.evaluate import INFRASTRUCTURE, evaluate
from skybench.harness.visibility import make_private_root, private_dir, private_root
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tracks import benchmarks_dir, load_track

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "baselines" / "generate"

COPY_TRAIN = """import numpy as np
def load(d): return {"maps": np.load(d + "/train_maps.npy")}
def predict(m, z):  # a public map chosen by each latent alone (no state: the re-run check would fail it)
    i = np.frombuffer(np.ascontiguousarray(z[:, :2]).tobytes(), np.uint64) % len(m["maps"])
    return m["maps"][i]
"""
# the online version of picking maps so that the set's statistics match: state across inputs (here: a counter)
STATEFUL = """import numpy as np
import predict_base as base
def load(d): return {"base": base.load(d), "seen": 0}
def predict(m, z):
    m["seen"] += len(z)
    return base.predict(m["base"], z + m["seen"])
"""
# herding: when it sees the whole set (80 objects, one batch of the first run), one map is chosen by the set's
# latents so that the set's statistics move; alone (a re-run of part of the set) every map is the truth process
HERD = """import numpy as np
import predict_base as base
def load(d): return base.load(d)
def predict(m, z):
    out = base.predict(m, z)
    if len(z) == 80:
        out[-1:] = base.predict(m, z[-1:] - z.mean(axis=0))
    return out
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
    stateful = _train("lognormal-oracle", release, subs / "stateful")
    shutil.copy(stateful / "predict.py", stateful / "predict_base.py")
    (stateful / "predict.py").write_text(STATEFUL)
    stateful = _as_test_submission(stateful, "stateful")
    herd = _train("lognormal-oracle", release, subs / "herd")
    shutil.copy(herd / "predict.py", herd / "predict_base.py")
    (herd / "predict.py").write_text(HERD)
    herd = _as_test_submission(herd, "herd")
    subs.chmod(0o755)

    # `skybench validate` runs the public inputs again in reverse order: the stateful one fails before it costs
    # quota, the oracle passes
    for sub, ok in ((stateful, False), (oracle, True)):
        res = CliRunner().invoke(app, ["validate", str(sub), "--release", str(release)])
        said = res.output.replace("\n", " ")
        assert (res.exit_code == 0) == ok and ("must be a function of its own latent alone" in said) != ok, said

    out = project / "results" / "wl-maps" / "evaluations"
    killed = private_root(out) / ".staged-inputs.killed"  # a killed evaluation's inputs: nobody holds their flock
    (killed / "0" / "inputs").mkdir(parents=True)
    os.utime(killed, (time.time() - 120, time.time() - 120))
    outcomes = {o.name: o for o in evaluate([grf, oracle, copier, repeat, stateful, herd], track, release,
                                            out=out, publish=False, force=True)}
    for name in ("stateful", "herd"):  # herd: its one set-chosen map is caught whichever row it is
        gone = outcomes.pop(name)
        assert gone.status == "FAILED" and "must be a function of its own latent alone" in gone.reason, gone.reason
    assert not list(private_root(out).glob(".staged-*")), "the drawn inputs are removed, a killed run's too"
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


def test_a_maps_track_refuses_a_file_of_maps_and_draws_fresh_latents_per_submission(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """A fixed set of maps picked from a large draw of the public physics so that its mean and spread match scored
    0.42-0.47 per dof, below the truth process (about 1): the predictions format is refused on a maps track, and
    the latents a generator gets are drawn for its submission, unknown before its bytes are fixed."""
    from skybench.harness.submission import load_submission, sandboxed_predict
    from skybench.release import layout, read_manifest
    from skybench.tasks.generate.fresh import check_rerun, latents_for, prepare, secret_of

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
    np.save(sub / "maps.npy", np.zeros((20, 1, 64, 64), np.float32))
    res = sandboxed_predict(load_submission(sub), release, scratch=tmp_path / "scratch", track=track)
    assert not res.ok and "takes a generator, not its maps" in res.reason, res.reason

    manifest, public = read_manifest(release), layout.public_dir(release, "test")
    published = np.load(layout.shard_paths(public, "latents")[0])
    ids = pd.read_parquet(layout.index_path(public))["id"].to_numpy()
    first, parts, batch = prepare(track, public, manifest, "a" * 64, tmp_path / "a")
    drawn = np.load(layout.shard_paths(first, "latents")[0])
    assert drawn.shape == published.shape and drawn.dtype == np.float32 and batch != track.evaluation.batch_size
    assert not np.allclose(drawn, published)  # not the published latents
    assert np.abs(drawn.mean()) < 0.1 and abs(drawn.std() - 1) < 0.05  # N(0, 1)
    other = latents_for(track, secret_of(manifest), "b" * 64, ids)
    assert not np.allclose(other, drawn)  # another submission, other latents
    np.testing.assert_array_equal(latents_for(track, secret_of(manifest), "a" * 64, ids), drawn)  # reproducible
    # every object again, in two sandboxes of half the set each (none sees the whole set), in another order
    assert len(parts) == 2
    seen = []
    for again in parts:
        rerun = pd.read_parquet(layout.index_path(again))["id"].to_numpy()
        where = [list(ids).index(i) for i in rerun]
        assert len(rerun) == len(ids) // 2 and where != sorted(where)
        np.testing.assert_array_equal(np.load(layout.shard_paths(again, "latents")[0]), drawn[where])
        seen += where
    assert sorted(seen) == list(range(len(ids)))
    public_only = {"files": {k: v for k, v in manifest["files"].items() if not k.startswith("hidden/")}}
    with pytest.raises(ValueError, match="organiser's release"):
        secret_of(public_only)  # a team's published manifest cannot give the secret
    maps = np.random.default_rng(0).normal(0, 0.01, (5, 1, 8, 8)).astype(np.float32)
    assert check_rerun(maps, maps + 1e-9) == ""
    assert "2 of 5 maps came back different" in check_rerun(maps, np.concatenate([maps[:3], maps[3:] * 1.1]))
    # one pixel of 2e19 in each map overflowed the float32 spread to inf: any difference divided by it passed
    other = np.random.default_rng(1).normal(0, 0.01, maps.shape).astype(np.float32)
    maps[:, 0, 0, 0] = other[:, 0, 0, 0] = 2e19
    assert "5 of 5 maps came back different" in check_rerun(maps, other)
    maps[0, 0, 0, 1] = other[0, 0, 0, 1] = np.inf
    assert "5 of 5 maps came back different" in check_rerun(maps, other)
    # drawing them depends on the release and the machine alone: a failure there is never the submission's
    import skybench.tasks.generate.fresh as fresh_module

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError("no memory for the latents")

    monkeypatch.setattr(fresh_module, "prepare", exhausted)
    gen = python_submission(tmp_path / "subs", "gen", "def load(d): return None\ndef predict(m, z): return z\n",
                            track="wl-maps")
    # another evaluator's inputs, alive (its flock held) in another pid namespace or host (its pid means nothing
    # here): an evaluation starting meanwhile must leave them alone
    out = project / "results"
    live = make_private_root(out) / ".staged-inputs.other"
    (live / "0" / "inputs").mkdir(parents=True)
    os.utime(live, (time.time() - 120, time.time() - 120))
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        [o] = evaluate([gen], track, release, out=out, publish=False, force=True)
        assert (live / "0" / "inputs").is_dir()
    finally:
        os.close(fd)
    assert o.status == "FAILED" and o.failure_kind == INFRASTRUCTURE and "MemoryError" in o.reason, o.reason
    assert [p.name for p in private_root(out).glob(".staged-inputs*")] == [live.name]
