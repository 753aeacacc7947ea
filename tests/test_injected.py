"""Injected-arc tracks (tasks/lens/injected.py): the population's arcs added to real galaxy cut-outs.

Most tests use a small cut-out release in the real set's format (tasks/lens/real.py writes it) whose galaxies are
Gaussian blobs in the track's noise, so they run in seconds; the slow ones use the real KiDS stamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import mlflow_store

from skybench.physics.backend import get_backend
from skybench.physics.light import sersic_total_flux
from skybench.real_hst import Target
from skybench.release import open_release, verify_release
from skybench.tasks.lens.config import LensTrack
from skybench.tasks.lens.injected import (
    TRANSFORMS,
    InjectedSimulator,
    assign_splits,
    galaxy_groups,
    library,
    transform,
)
from skybench.tasks.lens.real_nonlens import Item
from skybench.tasks.lens.simulator import LensSimulator
from skybench.tracks import load_track

TRACK = "lens-ground-injected"
N_GAL = 20  # cut-outs of the stand-in real set (about 8 end up in test)


def _cutout_release(out: Path, track: LensTrack, extra: dict | None = None) -> Path:
    """A real-set release (tasks/lens/real.py's writer) of ``N_GAL`` KiDS-like cut-outs (Gaussian galaxies in the
    track's white noise; stamps 0-1 and 2-3 overlap in the parent frame) and one real lens, which must be left out."""
    from skybench.tasks.lens.real import _write

    rng = np.random.default_rng(0)
    n = track.cutout.size
    c = (np.arange(n) - (n - 1) / 2.0) * track.survey.pixel_scale
    r2 = c[:, None] ** 2 + c[None] ** 2
    sigma = np.array([Target.for_band(track, b, 0.0).sigma_bkg for b in range(len(track.band_names))])
    items = []
    for k in range(N_GAL + 1):
        galaxy = 50.0 * (1 + k) * np.exp(-r2 / (2 * (0.5 + 0.1 * k) ** 2))
        image = galaxy[None] + sigma[:, None, None] * rng.standard_normal((len(sigma), n, n))
        x0 = [0, 30, 500, 540][k] if k < 4 else 1000 + 100 * k  # stamps are 64 px: 0-1 and 2-3 overlap
        meta = {"real_kind": "nonlens" if k < N_GAL else "lens", "source_kind": "kids_stamp", "stamp": k,
                "file": "kids_viking_field/KiDS_field_stamps_{band}.fits", "cat_x0": x0, "cat_y0": 100,
                **(extra or {})}
        items.append((int(k == N_GAL), Item(image.astype(np.float32), meta)))
    return _write(out, track, items, {"track": track.name, "task": "lens", "profile": "real", "seed": 0,
                                      "bands": track.band_names, "pixel_scale": track.survey.pixel_scale,
                                      "units": "e-/s per pixel"}, progress=False)


@pytest.fixture(scope="module")
def track(tmp_path_factory) -> LensTrack:
    base = load_track(TRACK)
    assert isinstance(base, LensTrack) and base.injection is not None
    tmp = tmp_path_factory.mktemp("injected")
    release = _cutout_release(tmp / "cutouts", base)
    inj = base.injection.model_copy(update={"cutouts": str(release)})
    return base.model_copy(update={"injection": inj})


@pytest.fixture(scope="module")
def release(track, tmp_path_factory) -> Path:
    from skybench.simulate import simulate_release

    return simulate_release(track, tmp_path_factory.mktemp("rel") / TRACK, profile="demo", seed=5, size=40,
                            progress=False, workers=1)


def _splits(path: Path) -> dict[str, pd.DataFrame]:
    rel = open_release(path)
    return {"train": rel.meta("train"), "val": rel.meta("val"), "test": rel.hidden("test").meta()}


def test_the_injected_image_minus_the_cutout_is_the_rendered_arc(track):
    """Before noise the image is cut-out + arc (re-rendered from the recorded parameters) to float32 rounding; the
    arc's Poisson noise then has variance |arc| / T; objects without an arc are the cut-out as it is."""
    sim = LensSimulator(track, get_backend("numpy"))
    assert isinstance(sim, InjectedSimulator)
    lib = library(track)
    sim.poisson = False
    exact, meta = sim.simulate(7, "train", 0, 24)
    sim.poisson = True
    images, meta2 = sim.simulate(7, "train", 0, 24)
    rows = pd.Series(np.arange(len(lib.meta)), index=lib.meta["cutout_id"]).loc[meta["cutout_id"]].to_numpy()
    cutouts = np.stack([transform(lib.images[r], int(k)) for r, k in zip(rows, meta["transform"], strict=True)])
    cols = {k: np.asarray(v) for k, v in meta.items()}
    arc, _ = sim.arcs(cols)  # objects without an arc (has_source False) render none
    assert cols["has_source"].any() and not cols["has_source"].all()
    assert np.all(arc[~cols["has_source"]] == 0)
    rounding = 1e-6 * (np.abs(cutouts) + arc)  # float32: 2^-24 relative
    assert np.all(np.abs(exact.astype(np.float64) - cutouts - arc) <= rounding)
    np.testing.assert_array_equal(exact[~cols["has_source"]], cutouts[~cols["has_source"]])
    np.testing.assert_array_equal(meta2["arc_flux_r"], meta["arc_flux_r"])  # the noise comes after the arc
    total_time = np.broadcast_to(sim.renderer.total_time[None, :, None, None], arc.shape)
    bright = arc > 1e-3 * arc.max()
    pull = (images.astype(np.float64) - exact)[bright] / np.sqrt(arc[bright] / total_time[bright])
    assert abs(pull.std() - 1.0) < 0.05 and abs(pull.mean()) < 0.05


def test_the_arcs_take_the_cutouts_psf_where_it_is_broader(tmp_path, monkeypatch):
    """KiDS cut-outs keep their broader PSF (0.93-1.12", nothing can sharpen them): arcs drawn at the track's
    0.71-0.81" were 1.3-1.6x too peaked, a cue no real lens has. Real injections convolve the arc with the image's
    PSF; a band whose cut-outs are sharper than the track's keeps the track's."""
    base = load_track(TRACK)
    assert isinstance(base, LensTrack) and base.injection is not None
    psf = {"u": 1.03, "g": 1.12, "r": 0.93, "i": 0.5}  # i sharper than the track's 0.71": the track's
    release = _cutout_release(tmp_path / "cutouts", base, {f"psf_fwhm_result_{b}": v for b, v in psf.items()})
    track = base.model_copy(update={"injection": base.injection.model_copy(update={"cutouts": str(release)})})
    sim = LensSimulator(track, get_backend("numpy"))
    want = {b.name: max(b.seeing, psf[b.name]) for b in track.survey.bands}
    assert library(track).info["arc_psf_fwhm"] == want
    mats = np.asarray(sim.renderer._conv)[0]  # (bands, n, n): each row a 1-D kernel of the separable PSF
    x = np.arange(mats.shape[-1]) - mats.shape[-1] // 2
    for k, b in enumerate(track.band_names):
        row = mats[k, mats.shape[-1] // 2]
        fwhm = np.sqrt((row * x**2).sum() / row.sum()) * 2.3548 * track.survey.pixel_scale
        assert fwhm == pytest.approx(want[b], rel=0.02), b
    # the README's recipe re-renders an arc with lenstronomy from its metadata row alone (its arc_psf_fwhm_<band>)
    pytest.importorskip("lenstronomy")
    from helpers import lenstronomy_psf
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    from skybench.tasks.lens.simulator import lenstronomy_kwargs

    _, meta = sim.simulate(3, "train", 0, 8)
    cols = {k: np.asarray(v) for k, v in meta.items()}
    monkeypatch.setattr(sim.sim, "arc_levels", ())  # both sampled on the track's grid (no refined arcs)
    arcs, _ = sim.arcs(cols)
    i = int(np.flatnonzero(cols["has_source"])[0])
    row = pd.Series({k: v[i] for k, v in meta.items()})  # as the release's table has it: no absent components
    for k, b in enumerate(track.band_names):
        kw = lenstronomy_kwargs(row, track, b)
        assert kw["psf_fwhm"] == want[b]
        g = kw["kwargs_pixel_grid"]
        data = ImageData(image_data=np.zeros((g["nx"], g["ny"])), transform_pix2angle=g["transform_pix2angle"],
                         ra_at_xy_0=g["ra_at_xy_0"], dec_at_xy_0=g["dec_at_xy_0"])
        m = kw["kwargs_model"]
        ref = ImageModel(data, lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"]), LensModel(m["lens_model_list"]),
                         LightModel(m["source_light_model_list"]), LightModel(m["lens_light_model_list"]),
                         kwargs_numerics=kw["kwargs_numerics"]).image(kw["kwargs_lens"], kw["kwargs_source"],
                                                                     kw["kwargs_lens_light"])
        assert np.max(np.abs(arcs[i, k] - ref)) < 1e-3 * np.max(np.abs(ref)), b


def test_arc_flux_is_conserved(track):
    """The arc's flux is the recorded ``arc_flux``; without lensing (theta_E -> 0) it is the source's total flux
    (Sersic + clumps) to 1%, and lensed it is the magnification times that."""
    sim = LensSimulator(track, get_backend("numpy"))
    images, meta = sim.simulate(11, "train", 0, 16)
    cols = {k: np.asarray(v) for k, v in meta.items()}
    arc, labels = sim.arcs(cols)
    lensed = cols["has_source"]
    np.testing.assert_allclose(arc[lensed, 2].sum(axis=(1, 2)), cols["arc_flux_r"][lensed], rtol=1e-9)
    intrinsic = sersic_total_flux(cols["source_amp_r"], cols["source_R_sersic"], cols["source_n_sersic"]) + \
        sum(cols[f"clump{k}_amp_r"] for k in range(3))
    np.testing.assert_allclose(cols["arc_flux_r"][lensed], (cols["magnification"] * intrinsic)[lensed], rtol=1e-5)
    assert np.all(cols["magnification"][lensed] > track.label.min_magnification)
    # unlensed, a source resolved by the supersampled grid (the renderer samples pixel centres: sub-pixel clumps
    # and cusps are not integrated exactly, which is the simulator's business, not the injection's)
    tiny = sim.params([int(s) for s in cols["arc_seed"]], np.zeros(16), np.zeros(16), np.full(16, 1e-5))
    tiny["source_R_sersic"] = np.full(16, 0.4)
    tiny |= {f"clump{k}_amp_{b}": np.zeros(16) for k in range(3) for b in track.band_names}
    unlensed, _ = sim.arcs(tiny)
    flux = unlensed.sum(axis=(2, 3))
    ref = np.stack([sersic_total_flux(tiny[f"source_amp_{b}"], 0.4, tiny["source_n_sersic"])
                    for b in track.band_names], axis=1)
    np.testing.assert_allclose(flux, ref, rtol=0.01)


def test_no_galaxy_is_in_two_splits(release, track):
    """By galaxy id and by the real set's cut-out id: train, val and test share none; overlapping KiDS stamps are
    one galaxy; the real lens is never used."""
    splits = _splits(release)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(splits[a].galaxy) & set(splits[b].galaxy), (a, b)
        assert not set(splits[a].cutout_id) & set(splits[b].cutout_id), (a, b)
    used = pd.concat(splits.values())
    assert N_GAL not in set(used.cutout_id)  # the real lens (id N_GAL) is left out
    manifest = open_release(release).manifest["injection"]
    assert manifest["real_lenses_left_out"] == 1
    assert sum(manifest["galaxies_used"].values()) == N_GAL - 2  # 0-1 and 2-3 are one galaxy each
    for s, df in splits.items():
        assert set(df.galaxy) <= set(manifest["galaxies"][s])
    groups = galaxy_groups(open_release(Path(track.injection.cutouts)).hidden("test").meta())
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[1] != groups[2]


def test_labels_are_balanced_and_only_the_arc_makes_a_lens(release, track):
    splits = _splits(release)
    both = pd.concat(splits.values())
    assert 0.35 < both.is_lens.mean() < 0.65
    assert (both.is_lens.astype(bool) == both.has_source).all()
    lens = both[both.is_lens == 1]
    assert (lens.magnification > track.label.min_magnification).all()
    assert (lens.n_pix_source > track.label.min_source_pixels).all()
    assert (both[both.is_lens == 0].arc_flux_r == 0).all()


def test_arcs_are_redrawn_until_visible(track):
    """With a strict visibility rule many first arcs fail it: they are redrawn, and an object whose draws all fail
    gets no arc (label 0), so every label 1 passes the rule and every label 0 is the bare cut-out."""
    strict = track.model_copy(update={"label": track.label.model_copy(update={"min_source_pixels": 600})})
    images, meta = LensSimulator(strict, get_backend("numpy")).simulate(3, "train", 0, 48)
    lens = meta["is_lens"] == 1
    assert lens.any() and (meta["arc_attempts"][lens] > 1).any()
    assert np.all(meta["n_pix_source"][lens] > 600) and np.all(meta["magnification"][lens] > 1.6)
    assert np.all(meta["arc_flux_r"][~lens] == 0) and np.all(np.isnan(meta["magnification"][~lens]))
    gave_up = meta["wants_arc"] & ~lens
    assert np.all(meta["arc_attempts"][gave_up] == strict.injection.max_attempts)


def test_the_release_validates_and_keeps_the_standard_layout(release):
    assert verify_release(release) == []
    rel = open_release(release)
    assert rel.label_columns == ["is_lens"] and set(rel.meta("test").columns) == {"id"}
    assert rel.manifest["counts"]["train"] > 0 and rel.meta("train").is_lens.nunique() == 2
    images = rel.images("train")[:4]
    assert images.shape == (4, 4, 101, 101) and np.isfinite(images).all()


@pytest.mark.parametrize(("seed", "fractions"), [(0, (0.5, 0.2)), (3, (0.4, 0.15)), (9, (0.3, 0.0))])
def test_galaxies_are_split_whole(seed, fractions):
    groups = np.repeat([f"g{i}" for i in range(15)], np.arange(1, 16))
    split = assign_splits(groups, seed, *fractions)
    assert set(split) == set(groups) and set(split.values()) <= {"train", "val", "test"}
    share = {s: np.mean([split[g] == s for g in groups]) for s in ("test", "val")}
    assert fractions[0] <= share["test"] < fractions[0] + 15 / len(groups)
    assert share["val"] >= fractions[1] and (share["val"] == 0) == (fractions[1] == 0)


def test_hst_bands_of_one_galaxy_and_scene_cutouts_group_together():
    meta = pd.DataFrame({"source_kind": ["hst_stamp", "hst_stamp", "hst_scene", "hst_scene", "hst_stamp"],
                         "file": ["hst_stamps/AEGIS_1_F814W.fits", "hst_stamps/AEGIS_1_F606W.fits",
                                  "hst_fields/A.fits", "hst_fields/A.fits", "hst_stamps/AEGIS_2_F814W.fits"],
                         "name": ["a", "b", "A peak (1, 2)", "A peak (50, 60)", "c"]})
    with pytest.raises(ValueError, match="re-import"):  # imported before sky positions were recorded
        galaxy_groups(meta)
    g = galaxy_groups(meta.assign(ra=np.nan, dec=np.nan))  # no WCS: by file and name alone
    assert g[0] == g[1] and g[2] == g[3] and len(set(g)) == 3
    # scene B overlaps A's cut-out on the sky (one mosaic), scene C and the stamps are elsewhere: A and B are one
    sky = pd.DataFrame({"source_kind": ["hst_scene", "hst_scene", "hst_scene", "hst_stamp"],
                        "file": ["hst_fields/A.fits", "hst_fields/B.fits", "hst_fields/C.fits",
                                 "hst_stamps/AEGIS_1_F814W.fits"],
                        "name": ["A", "B", "C", "a"], "ra": [3.59, 3.59 + 8 / 3600 / np.cos(np.radians(-30)), 3.59,
                                                           np.nan],
                        "dec": [-30.0, -30.0, -30.0 + 11 / 3600, -30.0], "footprint_arcsec_x": [10.0, 10.0, 10.0, 4.0],
                        "footprint_arcsec_y": [10.0, 10.0, 10.0, 4.0]})
    g = galaxy_groups(sky)
    assert g[0] == g[1] and len(set(g)) == 3, g


@pytest.mark.slow
def test_a_base_track_submission_is_evaluated_on_the_injected_track(tmp_path, monkeypatch, release, track):
    """A lens-ground submission runs and is scored on the injected release (``evaluation.also_from``)."""
    from helpers import bwrap_works, python_submission

    from skybench.harness.evaluate import evaluate

    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    code = ("import numpy as np\ndef load(d): return None\n"  # flux in an annulus: where arcs are
            "def predict(m, b): return b[:, 2, 30:71, 30:71].sum(axis=(1, 2)) - b[:, 2, 45:56, 45:56].sum((1, 2))\n")
    sub = python_submission(tmp_path / "subs", "ground", code, track="lens-ground")
    (outcome,) = evaluate([sub], TRACK, release, out=tmp_path / "evals", publish=False)
    assert outcome.status == "FINISHED", outcome.reason
    assert 0.0 <= outcome.metrics["auroc"] <= 1.0


def test_the_injected_tracks_take_their_base_tracks_inputs():
    for name, base in (("lens-space-injected", "lens-space"), ("lens-ground-injected", "lens-ground")):
        t, o = load_track(name), load_track(base)
        assert t.evaluation.also_from == [base] and t.evaluation.real_set is None
        assert (o.task, o.inputs, o.cutout, o.survey, o.output) == (t.task, t.inputs, t.cutout, t.survey, t.output)
        assert t.population == o.population and t.label == o.label


def test_theta_E_can_follow_the_galaxy_flux(track):
    """theta_E_from: flux puts theta_E at the galaxy's flux quantile (plus the scatter) within the population's range;
    the lens sits on the galaxy (the cut-outs' blobs are centred)."""
    inj = track.injection.model_copy(update={"theta_E_from": "flux", "theta_E_scatter": 0.05})
    flux_track = track.model_copy(update={"injection": inj})
    _, meta = LensSimulator(flux_track, get_backend("numpy")).simulate(4, "train", 0, 40)
    lo, hi = track.population.lens.theta_E
    expect = lo + (hi - lo) * meta["galaxy_flux_quantile"]
    assert np.all((meta["lens_theta_E"] >= lo) & (meta["lens_theta_E"] <= hi))
    assert np.all(np.abs(meta["lens_theta_E"] - expect) <= (hi - lo) * 0.05 * np.sqrt(3) + 1e-9)
    assert np.corrcoef(meta["lens_theta_E"], meta["galaxy_flux_2arcsec"])[0, 1] > 0.5
    assert np.all(np.hypot(meta["lens_center_x"], meta["lens_center_y"]) < 0.1)


def copy_fraction(image: np.ndarray, others: np.ndarray) -> np.ndarray:
    """An attacker's copy finder, from pixels alone: per image of ``others``, the largest fraction (over the 8
    rotations and flips of ``image``) of pixels equal to it within 1e-3 of its noise sigma (MAD, per band). A copy of
    one cut-out matches everywhere but where an arc is (~1); independent noise matches ~0.1% of pixels."""
    med = np.median(others, axis=(-2, -1), keepdims=True)
    tol = 1e-3 * 1.4826 * np.median(np.abs(others - med), axis=(-2, -1), keepdims=True)
    return np.max([(np.abs(transform(image, k)[None] - others) <= tol).mean(axis=(1, 2, 3))
                   for k in range(TRANSFORMS)], axis=0)


def test_each_test_cutout_is_used_once_and_the_test_size_is_their_number(release, track):
    """Test objects derive from distinct cut-outs (hidden provenance), all of the test split's; arcs go to a keyed
    round(p_arc * n) of them; the manifest records the cap and why."""
    rel = open_release(release)
    test, m = rel.hidden("test").meta(), rel.manifest
    lib = library(track)
    n = int((lib.meta["split"] == "test").sum())
    assert n >= 6 and test.cutout_id.is_unique and len(test) == n
    assert set(test.cutout_id) == set(lib.meta.cutout_id[lib.meta.split == "test"])
    assert test.wants_arc.sum() == int(np.floor(track.injection.p_arc * n + 0.5))
    assert m["counts"]["test"] == n == m["injection"]["test_objects"]["cutouts"]
    assert n == m["injection"]["cutouts_used"]["test"]
    assert m["counts_requested"]["test"] == 40 and m["split_limits"] == {"test": n}
    assert m["counts"]["train"] == m["counts_requested"]["train"] > n  # train and val repeat their cut-outs
    assert "upper bound" in m["injection"]["test_objects"]["rule"]
    with pytest.raises(ValueError, match="holds each once"):
        LensSimulator(track, get_backend("numpy")).simulate(5, "test", n - 1, n + 1)


def test_no_test_image_is_a_transformed_copy_of_another_or_of_a_training_image(release):
    """The differencing attack (find the copies of a cut-out among the test images, subtract their median, read off
    the arc) has nothing to work on: no test image matches another test, train or val image under any rotation or
    flip. The train split (public) does repeat its cut-outs, which the same finder sees: it works."""
    rel = open_release(release)
    test = np.asarray(rel.images("test")[:], dtype=np.float64)
    public = np.concatenate([rel.images("train")[:], rel.images("val")[:]]).astype(np.float64)
    for i in range(len(test)):
        others = np.concatenate([np.delete(test, i, axis=0), public])
        assert copy_fraction(test[i], others).max() < 0.01, f"test object {i} has a copy"
    assert copy_fraction(public[0], public[1:]).max() > 0.5  # the finder finds train's repeats


def test_an_injected_track_folds_in_no_real_set(track, tmp_path):
    from skybench.simulate import simulate_release

    with pytest.raises(ValueError, match="real_set"):
        LensTrack.model_validate(track.model_dump() | {"evaluation": track.evaluation.model_dump() |
                                                       {"real_set": "releases/real-lens-ground"}})
    with pytest.raises(ValueError, match="no real set may be folded"):
        simulate_release(track, tmp_path / "r", size=4, progress=False, workers=1, real_set="releases/real-lens-ground")


@pytest.mark.slow
def test_a_real_set_built_on_the_fly_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """Without a release at ``injection.cutouts`` the real set is built from data/galaxies into a temporary folder
    and read into memory; the folder went on existing after the process (one per test run and track)."""
    import tempfile

    from skybench.tasks.lens import injected

    base = load_track(TRACK)
    assert isinstance(base, LensTrack) and base.injection is not None
    inj = base.injection.model_copy(update={"cutouts": str(tmp_path / "absent"), "split_seed": 987})
    track = base.model_copy(update={"injection": inj})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(injected, "_LIBRARIES", {})
    lib = library(track)
    assert lib.info["cutouts"].startswith("built on the fly") and len(lib.images) > 0
    assert list(scratch.iterdir()) == []
