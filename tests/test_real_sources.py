"""Real galaxy stamps as lensed sources (population.source.kind: real): lenstronomy's INTERPOL, flux, determinism,
variety, a release."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import TORCH_BACKEND, lenstronomy_image, lenstronomy_psf, mlflow_store

from skybench.physics.backend import get_backend
from skybench.tasks.lens import simulator
from skybench.tasks.lens.simulator import LensSimulator, lenstronomy_kwargs
from skybench.tasks.lens.sources import interpolate
from skybench.testkey import public_object_seed
from skybench.tracks import load_track, project_root

TRACK = "lens-space-realsrc"
pytestmark = pytest.mark.skipif(not any((project_root() / "data/galaxies/hst_stamps").glob("*.fits")),
                                reason="the real-data release (data/galaxies) is not pulled")


def _track(**real: object):
    """lens-space-realsrc with some ``population.source.real`` settings changed."""
    t = load_track(TRACK)
    pop = t.population
    src = pop.source.model_copy(update={"real": pop.source.real.model_copy(update=real)}) if real else pop.source
    return t.model_copy(update={"population": pop.model_copy(update={"source": src})})


def _lensed_rows(sim: LensSimulator, n: int = 12, seed: int = 11) -> pd.DataFrame:
    rows = pd.DataFrame([{"id": i, **sim.sample(public_object_seed(seed, "test", i))} for i in range(200)])
    rows = rows[rows.has_source]
    return rows.iloc[:n].reset_index(drop=True)


def _lenstronomy_image(row: pd.Series, track, band: str, source_only: bool = False) -> np.ndarray:
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    kw = lenstronomy_kwargs(row, track, band)
    g = kw["kwargs_pixel_grid"]
    data = ImageData(image_data=np.zeros((g["nx"],) * 2), transform_pix2angle=g["transform_pix2angle"],
                     ra_at_xy_0=g["ra_at_xy_0"], dec_at_xy_0=g["dec_at_xy_0"])
    psf = lenstronomy_psf(kw["psf_fwhm"], kw["pixel_scale"])
    m = kw["kwargs_model"]
    model = ImageModel(data, psf, LensModel(m["lens_model_list"]), LightModel(m["source_light_model_list"]),
                       LightModel(m["lens_light_model_list"]), kwargs_numerics=kw["kwargs_numerics"])
    return model.image(kw["kwargs_lens"], kw["kwargs_source"], kw["kwargs_lens_light"], lens_light_add=not source_only)


def test_bilinear_real_source_matches_lenstronomy_interpol(monkeypatch):
    """Same SIE + shear, same stamp, scale, rotation, flip and centre: our renderer with bilinear interpolation
    (the interpolation of lenstronomy 1.14's INTERPOL) equals lenstronomy's ImageModel far below the noise, both
    sampled on the track's grid (no refinement of the arcs: the next test)."""
    pytest.importorskip("lenstronomy")
    monkeypatch.setattr(simulator, "ARC_LEVELS", ())
    track = _track(interpolation="linear")
    sim = LensSimulator(track, get_backend("numpy"))
    rows = _lensed_rows(sim)
    assert rows.source_flip.any() and not rows.source_flip.all()
    _, source = sim.render(rows)  # the lensed source alone (the lens light's cores: tests/test_lens_simulator.py)
    sigma = sim.renderer.sigma_bkg[0]
    for i, row in rows.iterrows():
        ref = _lenstronomy_image(row, track, "VIS", source_only=True)
        assert np.max(np.abs(source[i, 0] - ref)) < 1e-3 * np.max(np.abs(ref)), i
        assert np.max(np.abs(source[i, 0] - ref)) < 0.01 * sigma, i


def test_refined_real_source_converges_to_lenstronomy_interpol_at_supersampling_16():
    """With the arcs' adaptive refinement (simulator.ARC_LEVELS), the bilinear source against lenstronomy's
    adaptive render at 16 of every pixel of it (tests/helpers.py): within 1.5% of the source's peak and 0.15
    sigma_bkg, and its flux within 0.5%. The track's supersampling 2 alone was up to 4% of the peak, 0.8 sigma."""
    pytest.importorskip("lenstronomy")
    track = _track(interpolation="linear")
    sim = LensSimulator(track, get_backend("numpy"))
    rows = _lensed_rows(sim)
    _, source = sim.render(rows)
    sigma = sim.renderer.sigma_bkg[0]
    for i, row in rows.iterrows():
        ref = lenstronomy_image(row, track, "VIS", source_only=True)
        err = np.max(np.abs(source[i, 0] - ref))
        assert err < 0.015 * np.max(np.abs(ref)) and err < 0.15 * sigma, (i, err / sigma)
        assert abs(source[i, 0].sum() / ref.sum() - 1) < 5e-3, i


def test_cubic_real_source_agrees_with_lenstronomy_interpol_within_the_noise():
    """The default bicubic (B-spline) interpolation against lenstronomy's bilinear INTERPOL on the lensed source
    alone: they differ by the interpolant only. Per pixel of the arc (where the source exceeds the background
    noise), the residual in units of the pixel's noise (background + Poisson) is small in RMS and below 1.5 sigma
    at worst (the peaks of compact, deconvolved knots, where bilinear interpolation flattens them)."""
    pytest.importorskip("lenstronomy")
    track = load_track(TRACK)
    sim = LensSimulator(track, get_backend("numpy"))
    rows = _lensed_rows(sim)
    _, source = sim.render(rows)
    sigma, t = sim.renderer.sigma_bkg[0], sim.renderer.total_time[0]
    for i, row in rows.iterrows():
        ref = _lenstronomy_image(row, track, "VIS", source_only=True)
        z = (source[i, 0] - ref) / np.sqrt(sigma**2 + np.abs(ref) / t)
        arc = ref > sigma
        assert arc.sum() > 0 and np.sqrt(np.mean(z[arc] ** 2)) < 0.3 and np.abs(z).max() < 1.5, i


def test_unlensed_real_source_conserves_its_drawn_flux():
    """With no lens mass (theta_E = 0, no shear) the rendered, PSF-convolved source holds the flux of its magnitude
    (the stamp has unit sum; interpolation, binning and the PSF conserve it)."""
    track = load_track(TRACK)
    sim = LensSimulator(track, get_backend("numpy"))
    rows = _lensed_rows(sim, n=30)
    rows[["lens_theta_E", "shear_gamma1", "shear_gamma2"]] = 0.0
    rows[["source_center_x", "source_center_y"]] = 0.0  # well inside the cut-out
    _, source = sim.render(rows)
    flux = source[:, 0].sum(axis=(1, 2))
    np.testing.assert_allclose(flux, rows.source_amp_VIS, rtol=0.01)
    # and the magnitude column is that flux: amp = 10^(-0.4 (mag - ZP))
    np.testing.assert_allclose(rows.source_amp_VIS, 10 ** (-0.4 * (rows.source_mag_VIS - 24.0)), rtol=1e-9)


def test_same_seed_same_image_and_another_seed_another():
    track = load_track(TRACK)
    a, meta_a = LensSimulator(track, get_backend("numpy")).simulate(5, "test", 0, 8)
    b, meta_b = LensSimulator(track, get_backend("numpy")).simulate(5, "test", 0, 8)
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(pd.DataFrame(meta_a), pd.DataFrame(meta_b))
    c, _ = LensSimulator(track, get_backend("numpy")).simulate(6, "test", 0, 8)
    assert not np.array_equal(a, c)
    # an object does not depend on its batch
    d, _ = LensSimulator(track, get_backend("numpy")).simulate(5, "test", 3, 5)
    np.testing.assert_array_equal(d, a[3:5])


def test_the_stamps_give_many_distinct_sources():
    """Every stamp is used, each with many rotations, flips and sizes, and no two rendered sources are the same
    image up to flux."""
    track = load_track(TRACK)
    sim = LensSimulator(track, get_backend("numpy"))
    assert len(sim.stamps) >= 18
    rows = pd.DataFrame([sim.sample(public_object_seed(2, "train", i)) for i in range(600)])
    assert set(rows.source_stamp) == set(range(len(sim.stamps)))
    per = rows.groupby("source_stamp")
    assert per.source_angle.nunique().min() >= 10 and per.source_scale.nunique().min() >= 10
    assert per.source_flip.nunique().min() == 2
    lo, hi = track.population.source.R_sersic
    assert np.all((rows.source_R_sersic >= lo) & (rows.source_R_sersic <= hi))
    # unlensed, centred renderings of 40 objects of the first 4 stamps: pairwise different images
    pick = rows[rows.source_stamp < 4].iloc[:40].reset_index(drop=True)
    pick[["lens_theta_E", "shear_gamma1", "shear_gamma2", "source_center_x", "source_center_y"]] = 0.0
    pick["has_source"] = True
    pick["source_amp_VIS"] = 1.0
    _, source = sim.render(pick)
    flat = source[:, 0].reshape(len(pick), -1).astype(np.float64)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / flat.std(axis=1, keepdims=True)
    corr = flat @ flat.T / flat.shape[1]
    np.fill_diagonal(corr, 0.0)
    assert corr.max() < 0.999, np.unravel_index(corr.argmax(), corr.shape)


def test_rotation_and_flip_follow_the_interpol_geometry():
    """A quarter turn of an asymmetric stamp moves its bright corner as lenstronomy's util.rotate does; a flip
    mirrors x."""
    stamp = np.zeros((9, 9))
    stamp[4, 6] = 1.0  # 2 pixels along +x (columns) from the centre
    for angle, (x, y) in ((0.0, (2.0, 0.0)), (np.pi / 2, (0.0, 2.0))):
        # pixel coordinates x' = dx cos + dy sin: the bright pixel is where x' = 2, y' = 0
        assert interpolate(stamp, np.array([x]), np.array([y]), 1.0, angle, False, order=1)[0] == pytest.approx(1.0)
    assert interpolate(stamp, np.array([-2.0]), np.array([0.0]), 1.0, 0.0, True, order=1)[0] == pytest.approx(1.0)
    assert interpolate(stamp, np.array([2.0]), np.array([0.0]), 1.0, 0.0, True, order=1)[0] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def tiny_realsrc_release(tmp_path_factory):
    from skybench.simulate import simulate_release

    return simulate_release(TRACK, tmp_path_factory.mktemp("realsrc") / "rel", profile="demo", seed=3, size=24,
                            progress=False)


def test_a_real_source_release_simulates_at_tiny_size(tiny_realsrc_release):
    from skybench.release import open_release

    rel = open_release(tiny_realsrc_release)
    meta = rel.meta("train")
    assert len(meta) > 0 and {"source_stamp", "source_angle", "source_flip", "source_scale"} <= set(meta.columns)
    assert meta.is_lens.any() and meta.source_n_sersic.isna().all()
    test = rel.hidden("test").meta()
    assert len(test) > 0 and "source_stamp" in test.columns
    images = np.concatenate(list(rel.images("train").batches(64)))
    assert images.shape == (len(meta), 1, 101, 101) and np.isfinite(images).all()


@pytest.mark.parametrize(("track", "other"), [(TRACK, "lens-space"), ("lens-ground-realsrc", "lens-ground")])
def test_also_from_tracks_take_the_same_inputs_and_output(track, other):
    """A realsrc track evaluates its Sersic track's submissions: same task, inputs, cut-out, survey and output."""
    t = load_track(track)
    assert t.evaluation.also_from == [other]
    o = load_track(other)
    assert (o.task, o.inputs, o.cutout, o.survey, o.output) == (t.task, t.inputs, t.cutout, t.survey, t.output)


def test_ground_real_sources_follow_the_colour_model():
    """lens-ground-realsrc: one morphology in every band, scaled by the source colours (the lensed source alone)."""
    track = load_track("lens-ground-realsrc")
    sim = LensSimulator(track, get_backend("numpy"))
    rows = _lensed_rows(sim, n=4)
    _, source = sim.render(rows)
    for i, row in rows.iterrows():
        flux = source[i].sum(axis=(1, 2))
        amps = np.array([row[f"source_amp_{b}"] for b in track.band_names])
        np.testing.assert_allclose(flux / flux[2], amps / amps[2], rtol=0.02)  # same lensing in every band
        assert np.corrcoef(source[i, 1].ravel(), source[i, 3].ravel())[0, 1] > 0.95  # g and i: one morphology


@pytest.mark.slow
def test_lens_space_submissions_are_evaluated_on_the_realsrc_track(tmp_path, monkeypatch, tiny_realsrc_release):
    """A lens-space submission runs and is scored on lens-space-realsrc (its ``also_from``); a lens-ground one is
    skipped; discovery finds lens-space's folders for it."""
    from helpers import bwrap_works, python_submission

    from skybench.harness.evaluate import discover_submissions, evaluate

    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store(tmp_path))
    code = ("import numpy as np\ndef load(d): return None\n"
            "def predict(m, b): return b[:, 0, 40:61, 40:61].sum(axis=(1, 2))\n")
    space = python_submission(tmp_path / "subs", "space", code, track="lens-space")
    ground = python_submission(tmp_path / "subs", "ground", code, track="lens-ground")
    outcomes = {o.name: o for o in evaluate([space, ground], TRACK, tiny_realsrc_release, out=tmp_path / "evals",
                                            publish=False)}
    assert outcomes["space"].status == "FINISHED" and 0.0 <= outcomes["space"].metrics["auroc"] <= 1.0
    assert outcomes["ground"].status == "SKIPPED"
    found = discover_submissions(TRACK)
    assert found and all("lens-space" in p.parts for p in found)


def test_sersic_tracks_are_unchanged_by_the_real_option():
    """lens-space keeps its Sersic source and its random stream (no extra draws, no stamp columns)."""
    sim = LensSimulator(load_track("lens-space"), get_backend("numpy"))
    assert sim.stamps == () and "source_stamp" not in sim.sample(1)
    assert load_track("lens-space").population.source.kind == "sersic"


def test_torch_backend_renders_the_same_real_sources_as_numpy():
    pytest.importorskip("torch")
    track = load_track(TRACK)
    img_np, _ = LensSimulator(track, get_backend("numpy")).simulate(1, "test", 0, 6)
    img_t, _ = LensSimulator(track, get_backend(TORCH_BACKEND)).simulate(1, "test", 0, 6)
    np.testing.assert_allclose(img_t, img_np, atol=1e-4 * np.abs(img_np).max())
