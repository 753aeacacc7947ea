"""The conditional weak-lensing track (``wl-maps-conditional``): maps on a grid of (Omega_m, sigma8), the
``params`` input array, and the per-cosmology scorer with its parameter read-back.

Against independent references: pyccl's C_l of each grid point's cosmology at the map's own Fourier modes, the exact
hypergeometric law of the memorisation test and its sum over grid points, and generators whose answer is known: the
truth process (chi^2 per dof ~ 1 per point), the fiducial cosmology at every point (wrong: a large chi^2 and
parameter bias), copies of the public maps of the requested point and one map repeated (flagged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from scipy import stats

pytest.importorskip("pyccl")

from skybench.harness import runner  # noqa: E402
from skybench.release import layout  # noqa: E402
from skybench.release.reader import open_release  # noqa: E402
from skybench.simulate import simulate_release  # noqa: E402
from skybench.tasks.generate import score as S  # noqa: E402
from skybench.tasks.generate.config import GenerateTrack  # noqa: E402
from skybench.tasks.generate.metrics import (  # noqa: E402
    bin_grid,
    combined_p_value,
    ell_bins,
    ell_of_modes,
    power_spectrum,
)
from skybench.tasks.generate.simulator import GenerateSimulator, MapSimulator, convergence_cl  # noqa: E402
from skybench.tracks import benchmarks_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((benchmarks_dir() / "wl-maps-conditional.yaml").read_text())


def conditional_track(**population) -> GenerateTrack:
    raw = {**RAW, "population": {**RAW["population"], **population}}
    return GenerateTrack.model_validate(raw)


TRACK = conditional_track()
POP = TRACK.population
GRID = np.array(POP.grid.points()) if POP.grid is not None else np.zeros((0, 2))


# ------------------------------------------------------------------------------------------------ the simulator


def cl_at_modes(point: int) -> np.ndarray:
    """pyccl's C_l of grid point ``point``'s cosmology at every |l| of the map's rfft2 modes."""
    pop = POP.at_point(point)
    ell = ell_of_modes(pop.n_pix, pop.size_deg)
    uniq, inv = np.unique(ell[ell > 0], return_inverse=True)
    out = np.zeros_like(ell)
    out[ell > 0] = convergence_cl(pop.cosmology, pop.sources, uniq)[inv]
    return out


def cl_chi2(maps: np.ndarray, target: np.ndarray) -> float:
    """The p-value of the maps' mean binned C_l against the binned ``target`` (variance from the maps)."""
    edges = ell_bins(POP.n_pix, POP.size_deg, 8)
    cl = power_spectrum(maps, POP.size_deg, edges).cl
    want, _ = bin_grid(target, POP.n_pix, POP.size_deg, edges)
    z2 = (cl.mean(0) - want) ** 2 / (cl.var(0, ddof=1) / len(cl))
    return float(stats.chi2.sf(z2.sum(), len(z2)))


def test_each_grid_point_has_its_own_cosmologys_pyccl_cl():
    sim = GenerateSimulator(TRACK, "numpy")
    arrays, meta = sim.simulate(7, "train", 0, 9 * 64)
    points = meta["grid_point"].to_numpy()
    assert np.array_equal(points, np.arange(9 * 64) % 9)  # id % n_points: balanced
    np.testing.assert_array_equal(arrays["params"], GRID[points].astype(np.float32))
    assert list(meta["cosmology"][:2]) == ["Om0.25_s8_0.7", "Om0.25_s8_0.8"]
    low, high = 0, 8  # (0.25, 0.7) and (0.35, 0.9): C_l differ by a factor ~3
    target = {p: cl_at_modes(p) for p in (low, high)}
    for p in (low, high):
        maps = arrays["maps"][points == p]
        assert cl_chi2(maps, target[p]) > 1e-3, f"point {p}: maps do not have its cosmology's C_l"
        assert cl_chi2(maps, target[high if p == low else low]) < 1e-6, "the test cannot tell the two apart"
    # a map depends on its seed and grid point only: the same object simulated alone is the same map
    again, _ = sim.simulate(7, "train", 8, 9)
    np.testing.assert_array_equal(again["maps"][0], arrays["maps"][8])
    np.testing.assert_array_equal(again["latents"][0], arrays["latents"][8])


def test_config_checks_grid_inputs_profiles_and_strata():
    with pytest.raises(ValidationError, match=r"inputs are \[latents, params\]"):
        GenerateTrack.model_validate({**RAW, "inputs": ["latents"]})
    with pytest.raises(ValidationError, match=r"inputs are \[latents\]"):
        GenerateTrack.model_validate({**RAW, "population": {**RAW["population"], "grid": None}, "strata": []})
    with pytest.raises(ValidationError, match="Omega_m=0.04"):
        conditional_track(grid={"Omega_m": [0.04, 0.3], "sigma8": [0.8]})  # below Omega_b
    with pytest.raises(ValidationError, match="distinct"):
        conditional_track(grid={"Omega_m": [0.3, 0.3], "sigma8": [0.8]})
    with pytest.raises(ValidationError, match="23 maps per grid point"):
        GenerateTrack.model_validate({**RAW, "profiles": {"demo": {"train": 90, "val": 9, "test": 200}}})
    with pytest.raises(ValidationError, match="grid point labels"):
        GenerateTrack.model_validate({**RAW, "strata": [{"column": "cosmology", "values": ["Om0.3_s8_0.75"],
                                                         "metric": "chi2_per_dof"}]})
    with pytest.raises(ValidationError, match="unknown column"):  # an unconditional track has no strata
        GenerateTrack.model_validate({**yaml.safe_load((benchmarks_dir() / "wl-maps.yaml").read_text()),
                                      "strata": RAW["strata"]})
    assert TRACK.inputs == ["latents", "params"] and POP.n_points == 9


# --------------------------------------------------------------------------------- the release and the runner


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo-size release: 46 hidden test maps and 60 public maps per grid point."""
    return simulate_release(TRACK, tmp_path_factory.mktemp("wlc") / "wl-maps-conditional", seed=4, progress=False,
                            workers=2, backend="numpy")


def test_params_are_public_inputs_on_every_split_and_reach_the_runner(release: Path, tmp_path: Path):
    rel = open_release(release)
    assert rel.public_arrays("test") == ["latents", "params"]
    for split in ("train", "val", "test"):
        n = rel.manifest["counts"][split]
        ids = np.arange(n)
        np.testing.assert_array_equal(np.asarray(rel.array(split, "params")[:]), GRID[ids % 9].astype(np.float32))
    assert set(rel.meta("test").columns) == {"id"}  # the public test index holds ids only
    with pytest.raises(FileNotFoundError):
        rel.array("test", "maps")
    info = rel.manifest["maps"]
    assert [g["label"] for g in info["grid"]] == POP.grid.labels() and info["params"] == ["Omega_m", "sigma8"]

    # the runner feeds (latents, params) batches, aligned, restarting per shard like the images of other tracks
    test = layout.public_dir(release, "test")
    batches = [tuple(a.copy() for a in b) for b in runner.iter_inputs(test, 50, None)]  # reused buffers: copy
    assert all(isinstance(b, tuple) and len(b) == 2 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.asarray(rel.array("test", "params")))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), np.asarray(rel.array("test", "latents")))

    # an ONNX generator with two inputs: maps = params[:, 1] * ones + 0 * latents[:, 0]
    import onnx
    from onnx import TensorProto, helper

    n_pix = POP.n_pix
    w_p = np.zeros((2, n_pix * n_pix), np.float32)
    w_p[1] = 1.0
    w_z = np.zeros((POP.latent.dim, n_pix * n_pix), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["latents", "wz"], ["a"]), helper.make_node("MatMul", ["params", "wp"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Reshape", ["c", "shape"], ["maps"])],
        "cond", [helper.make_tensor_value_info("latents", TensorProto.FLOAT, ["N", POP.latent.dim]),
                 helper.make_tensor_value_info("params", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["N", 1, n_pix, n_pix])],
        [helper.make_tensor("wz", TensorProto.FLOAT, w_z.shape, w_z.ravel()),
         helper.make_tensor("wp", TensorProto.FLOAT, w_p.shape, w_p.ravel()),
         helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 1, n_pix, n_pix])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sub = tmp_path / "onnx"
    sub.mkdir()
    onnx.save(model, sub / "model.onnx")
    (sub / "submission.yaml").write_text("team: t\nname: onnx\ntrack: wl-maps-conditional\nformat: onnx\n"
                                         "model: model.onnx\n")
    (tmp_path / "out").mkdir()
    runner.run(sub, test, tmp_path / "out" / "pred.npy", batch_size=64, device="cpu")
    maps = np.load(tmp_path / "out" / "pred.npy")
    assert maps.shape == (rel.manifest["counts"]["test"], 1, n_pix, n_pix)
    np.testing.assert_allclose(maps[:, 0, 0, 0], np.asarray(rel.array("test", "params"))[:, 1])


# --------------------------------------------------------------------------------------------------- the scorer


def per_point(ids: np.ndarray, simulate) -> np.ndarray:  # noqa: ANN001
    """Maps (N, 1, H, W) for ``ids``: ``simulate(point, rows)`` fills the rows of each grid point."""
    out = np.empty((len(ids), 1, POP.n_pix, POP.n_pix), np.float32)
    points = POP.point_of(ids)
    for p in range(POP.n_points):
        rows = np.flatnonzero(points == p)
        out[rows] = simulate(p, rows)
    return out


class Scored:
    """The test set's generators (made and scored on first use): ``gens[name]``, ``[name]`` its metrics."""

    def __init__(self, release: Path, out: Path):
        rel = open_release(release)
        self.truth, self.out = rel.hidden("test"), out
        self.ids = ids = rel.meta("test")["id"].to_numpy()
        sims = [MapSimulator(POP.at_point(p), "numpy") for p in range(POP.n_points)]
        fiducial = MapSimulator(POP.model_copy(update={"grid": None}), "numpy")
        train_maps = np.asarray(rel.array("train", "maps")[:])
        train_points = rel.meta("train")["grid_point"].to_numpy()
        self.makers = {
            "oracle": lambda: per_point(ids, lambda p, rows: sims[p].simulate(list(10**6 + ids[rows]))),
            # the fiducial cosmology whatever the parameters asked for
            "fiducial": lambda: per_point(ids, lambda p, rows: fiducial.simulate(list(2 * 10**6 + ids[rows]))),
            # the public training maps of the point asked for, each once
            "copier": lambda: per_point(ids, lambda p, rows: train_maps[train_points == p][: len(rows)]),
            # two fifths of them copies (18 of 46 maps per point), the rest the truth process: caught by the test
            # over all points together, while each point's test alone is weak (at half, 23 copies, most points reject)
            "part-copier": lambda: per_point(ids, lambda p, rows: np.concatenate([
                train_maps[train_points == p][: len(rows) * 2 // 5],
                sims[p].simulate(list(4 * 10**6 + ids[rows[len(rows) * 2 // 5:]]))])),
            # one map of the right cosmology per point, repeated
            "one-map": lambda: per_point(ids, lambda p, rows: np.repeat(sims[p].simulate([3 * 10**6 + p]),
                                                                        len(rows), 0)),
        }
        self.gens: dict[str, np.ndarray] = {}
        self.metrics: dict[str, dict[str, float]] = {}

    def gen(self, name: str) -> np.ndarray:
        if name not in self.gens:
            self.gens[name] = self.makers[name]()
        return self.gens[name]

    def __getitem__(self, name: str) -> dict[str, float]:
        if name not in self.metrics:
            self.metrics[name] = S.score(TRACK, self.ids, self.gen(name), self.truth, self.out / name)
        return self.metrics[name]


@pytest.fixture(scope="module")
def scored(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    return Scored(release, tmp_path_factory.mktemp("scores"))


def point_values(m: dict[str, float], metric: str) -> np.ndarray:
    return np.array([m[f"by_cosmology_{label}_{metric}"] for label in POP.grid.labels()])


def test_the_truth_process_scores_near_one_at_every_grid_point(scored):
    m = scored["oracle"]
    assert m["n_points_scored"] == 9 and m["n_maps"] == 414
    chi2 = point_values(m, "chi2_per_dof")
    assert 0.5 < m["chi2_per_dof"] < 2.0 and chi2.max() < 4, chi2
    assert m["chi2_per_dof"] == pytest.approx(chi2.mean())
    assert not (m["memorised"] or m["collapsed"]), m
    assert (point_values(m, "n_maps") == 46).all()
    assert (point_values(m, "chi2_per_dof_ci_low") < point_values(m, "chi2_per_dof_ci_high")).all()
    # bias-corrected, as on an unconditional track: resampling maps inflates a chi^2 (the plain percentile interval
    # of the truth process lay above its own value)
    assert m["chi2_per_dof_ci_low"] <= m["chi2_per_dof"] <= m["chi2_per_dof_ci_high"], m
    # the regressor reads the parameters back from the oracle's maps as well as from the truth's
    for p in ("Omega_m", "sigma8"):
        assert m[f"param_bias_{p}"] < m[f"param_bias_{p}_truth"] + 0.01, m
    assert m["param_bias_sigma8_truth"] < 0.05  # the regressor works: the grid spacing is 0.1
    # its per-point means follow the grid (sigma8: increasing along each row of the grid)
    s8 = point_values(m, "param_mean_sigma8").reshape(3, 3)
    assert (np.diff(s8, axis=1) > 0.03).all(), s8


@pytest.mark.slow
def test_a_generator_that_ignores_the_parameters_scores_much_worse(scored):
    m, oracle = scored["fiducial"], scored["oracle"]
    assert m["chi2_per_dof"] > 20 * oracle["chi2_per_dof"], (m["chi2_per_dof"], oracle["chi2_per_dof"])
    assert not (m["memorised"] or m["collapsed"]), m  # wrong, not cheating
    # right at the fiducial point only
    chi2 = dict(zip(POP.grid.labels(), point_values(m, "chi2_per_dof"), strict=True))
    assert chi2["Om0.3_s8_0.8"] < 4 and min(chi2[k] for k in ("Om0.25_s8_0.7", "Om0.35_s8_0.9")) > 50, chi2
    # sigma8 read back ~0.8 everywhere: a bias of ~|0.8 - sigma8| averaged over the grid (0.067)
    assert m["param_bias_sigma8"] > 0.05 and m["param_bias_sigma8"] > 1.5 * oracle["param_bias_sigma8"], m
    assert m["param_bias_Omega_m"] > oracle["param_bias_Omega_m"] + 0.005, m


@pytest.mark.slow
def test_copies_of_the_public_maps_and_one_map_repeated_are_flagged(scored):
    copier, one, oracle = scored["copier"], scored["one-map"], scored["oracle"]
    assert copier["memorised"] == 1 and copier["chi2_per_dof"] >= 1e6, copier
    assert copier["chi2_per_dof_raw"] < 3  # the chi^2 alone cannot see copies of the right cosmology
    assert one["collapsed"] == 1 and one["chi2_per_dof"] >= 1e6, one
    assert point_values(one, "collapsed").all()
    part = scored["part-copier"]
    assert part["memorised"] == 1 and part["memorisation_p_value_combined"] < 1e-6, part
    # the summed counts are the stronger evidence: at most a few points reject alone
    assert point_values(part, "memorised").sum() <= 3, point_values(part, "memorised")
    assert max(copier["chi2_per_dof"], one["chi2_per_dof"]) > scored["fiducial"]["chi2_per_dof"] > oracle[
        "chi2_per_dof"]


@pytest.mark.slow
def test_score_resamples_regroups_each_resample_by_grid_point(scored, release: Path):
    rel = open_release(release)
    truth = rel.hidden("test")
    ids = rel.meta("test")["id"].to_numpy()
    gen = scored.gen("fiducial")
    rng = np.random.default_rng(3)
    indices = np.vstack([np.arange(len(ids)), rng.integers(0, len(ids), (1, len(ids)))])
    got = S.score_resamples(TRACK, ids, gen, truth, indices)
    assert got[0] == pytest.approx(scored["fiducial"]["chi2_per_dof"], rel=1e-9)
    # the resample's maps against the reference of all of ids (the part ranked), not of the resample's own ids
    again = S.score_grid(TRACK, ids[indices[1]], gen[indices[1]], truth, S.grid_reference(TRACK, truth, ids))[
        "chi2_per_dof"]
    assert got[1] == pytest.approx(again, rel=1e-9)
    # a resample that leaves out a grid point averages over the others
    rows = np.flatnonzero(POP.point_of(ids) != 0)
    partial = S.score_resamples(TRACK, ids, gen, truth, rows[None])[0]
    assert partial == pytest.approx(point_values(scored["fiducial"], "chi2_per_dof")[1:].mean(), rel=1e-9)


def test_public_artifacts_use_no_hidden_map(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rel = open_release(release)
    truth = rel.hidden("test")
    ids = rel.meta("test")["id"].to_numpy()
    opened: list[str] = []
    original = truth.array
    monkeypatch.setattr(truth, "array", lambda name: opened.append(name) or original(name))
    S.public_artifacts(TRACK, ids, np.zeros((len(ids), 1, 64, 64), np.float32) + 0.01, truth, tmp_path)
    assert (tmp_path / "summary_stats.png").is_file() and opened == []


# ------------------------------------------------------------------------- the memorisation test over points


def test_combined_p_value_is_the_tail_of_the_summed_independent_counts():
    coin = np.array([0.5, 0.5])
    assert combined_p_value([(1, coin), (1, coin)]) == pytest.approx(0.25, rel=1e-12)
    assert combined_p_value([(0, coin), (1, coin)]) == pytest.approx(0.75, rel=1e-12)
    # two points of 20 distinct neighbours each (60 of 100 maps public): the sum of two hypergeometric counts
    law = stats.hypergeom.pmf(np.arange(21), 100, 60, 20)
    both = sum(law[a] * law[b] for a in range(21) for b in range(21) if a + b >= 30)
    assert combined_p_value([(15, law), (15, law)]) == pytest.approx(both, rel=1e-9)


# ------------------------------------------------------------------------------------ end to end, in the sandbox

COPY_POINT = """import numpy as np
def load(d):
    return {"maps": np.load(d + "/train_maps.npy"), "params": np.load(d + "/train_params.npy")}
def predict(m, batch):
    z, params = batch
    out = []
    for latent, row in zip(z, params):  # a public map of the cosmology asked for, chosen by the latent alone
        same = np.flatnonzero(np.all(np.isclose(m["params"], row), axis=1))
        k = int(np.frombuffer(np.ascontiguousarray(latent[:2]).tobytes(), np.uint64)[0] % len(same))
        out.append(m["maps"][same[k]])
    return np.stack(out)
"""
REPEAT_ONE = """import numpy as np
import predict_base as base
def load(d): return base.load(d)
def predict(m, batch): return base.predict(m, (np.zeros_like(batch[0]), batch[1]))
"""


@pytest.mark.slow
def test_conditional_baselines_and_cheats_in_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import json
    import shutil

    from helpers import baseline_module, bwrap_works

    from skybench.harness.evaluate import evaluate
    from skybench.harness.visibility import private_dir
    from skybench.tracks import load_track

    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    project = tmp_path / "project"
    (project / "benchmarks").mkdir(parents=True)
    shutil.copy(benchmarks_dir() / "wl-maps-conditional.yaml", project / "benchmarks")
    monkeypatch.setenv("SKYBENCH_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # never used: publish=False
    track = load_track("wl-maps-conditional")
    release = simulate_release(track, project / "releases" / "wl-maps-conditional", seed=3, size=9 * 23,
                               progress=False, workers=1, backend="numpy")
    subs = project / "submissions" / "tests"

    def trained(baseline: str, name: str) -> Path:
        out = subs / name
        baseline_module(baseline).train(["--track", "wl-maps-conditional", "--release", str(release), "--out",
                                         str(out), "--params", str(ROOT / "params.yaml"), "--no-mlflow"])
        spec = yaml.safe_load((out / "submission.yaml").read_text()) | {"team": "tests", "name": name}
        (out / "submission.yaml").write_text(yaml.safe_dump(spec))
        return out

    grf, oracle = trained("grf", "grf"), trained("lognormal-oracle", "oracle")
    copier = trained("lognormal-oracle", "copier")
    rel = open_release(release)
    np.save(copier / "train_maps.npy", np.asarray(rel.array("train", "maps")[:]))
    np.save(copier / "train_params.npy", np.asarray(rel.array("train", "params")[:]))
    (copier / "predict.py").write_text(COPY_POINT)
    repeat = trained("lognormal-oracle", "repeat")
    shutil.copy(repeat / "predict.py", repeat / "predict_base.py")
    (repeat / "predict.py").write_text(REPEAT_ONE)
    for p in (subs.parent, subs, *subs.rglob("*")):  # the sandbox runs as an unprivileged uid
        p.chmod(0o755)

    out = project / "results" / "wl-maps-conditional" / "evaluations"
    outcomes = evaluate([grf, oracle, copier, repeat], track, release, out=out, publish=False, force=True)
    m = {}
    for o in outcomes:
        assert o.status == "FINISHED", f"{o.name}: {o.reason}"
        m[o.name] = json.loads((private_dir(o.record) / "evaluation.json").read_text())["metrics"]  # the whole set
    primary = {k: v["chi2_per_dof"] for k, v in m.items()}
    assert m["copier"]["memorised"] == 1 and m["repeat"]["collapsed"] == 1, m
    for name in ("grf", "oracle"):
        assert not (m[name]["memorised"] or m[name]["collapsed"]), m[name]
        assert m[name]["n_points_scored"] == 9
    assert primary["oracle"] < primary["grf"] < min(primary["copier"], primary["repeat"]), primary
    assert primary["oracle"] < 3, primary
    # the per-point baselines get the cosmology right: the parameters read back as well as from the truth
    assert m["oracle"]["param_bias_sigma8"] < m["oracle"]["param_bias_sigma8_truth"] + 0.02, m["oracle"]
    assert "by_cosmology_Om0.3_s8_0.8_chi2_per_dof" in m["grf"]


def test_a_shared_nearest_neighbour_is_no_memorisation():
    """A near-empty public map is the nearest neighbour of every faint generated map (a hub): one distinct
    neighbour is no evidence of copying; real copies are caught, and the test's laws are hypergeometric."""
    from skybench.tasks.generate.metrics import memorisation_check

    rng = np.random.default_rng(0)
    train, heldout = rng.normal(0, 1, (60, 16, 16)), rng.normal(0, 1, (40, 16, 16))
    train[7] *= 1e-3  # the hub
    faint = rng.normal(0, 0.3, (40, 16, 16))  # independent of the training maps
    check = memorisation_check(faint, train, heldout)
    assert not check.flagged and check.p_value > 0.1, check
    copies = np.roll(train[20:60], 3, axis=2)  # shifted copies
    check = memorisation_check(copies, train, heldout)
    assert check.flagged
    k, law = min(check.laws, key=lambda kl: stats.hypergeom.sf(kl[0] - 1, 100, 60, len(kl[1]) - 1))
    assert law == pytest.approx(stats.hypergeom.pmf(np.arange(len(law)), 100, 60, len(law) - 1))
    assert k == 40


def test_lognormal_shift_scales_with_the_empty_beam_convergence_of_each_grid_point():
    """The minimum convergence (empty beam) is proportional to Omega_m (REFERENCES.md, "Lognormal convergence"), so
    the shift of each grid point is the population's scaled by it, computed here from pyccl's distances; the
    fiducial point keeps the population's shift, and at fixed sigma8 the maps' skewness stays about constant
    (S3 ~ Omega_m^-0.8 at tree level, Bernardeau, van Waerbeke & Mellier 1997) instead of growing with Omega_m."""
    import pyccl
    from scipy.stats import skew

    from skybench.tasks.generate.simulator import ccl_cosmology

    z_nz, nz = POP.sources.table()

    def empty_beam(cosmo) -> float:
        c = ccl_cosmology(cosmo)
        k = []
        for zs in z_nz[1:]:
            chi = pyccl.comoving_radial_distance(c, 1 / (1 + np.linspace(0, zs, 400)))
            z = np.linspace(0, zs, 400)
            k.append(1.5 * cosmo.Omega_m * (cosmo.h / 2997.92458) ** 2
                     * np.trapezoid(chi * (chi[-1] - chi) / chi[-1] * (1 + z), chi))
        return float(np.trapezoid(np.array([0.0, *k]) * nz, z_nz))

    fid = empty_beam(POP.cosmology)
    skews = {}
    for k, (om, s8) in enumerate(POP.grid.points()):
        pop = POP.at_point(k)
        want = POP.kappa0() * empty_beam(pop.cosmology) / fid
        assert pop.kappa0() == pytest.approx(want, rel=2e-3), (om, s8)
        if s8 == 0.8:
            maps = MapSimulator(pop, "numpy").simulate(list(range(200)))
            skews[om] = skew(maps.astype(np.float64).ravel())
    assert POP.at_point(4).kappa0() == pytest.approx(POP.kappa0(), rel=1e-12)  # (0.30, 0.8): the population's own
    assert abs(skews[0.35] / skews[0.25] - 1) < 0.15, skews  # a shift fixed over the grid: +35%
