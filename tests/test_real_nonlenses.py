"""Real non-lens sets (issue 19): the processing conserves flux and matches the target PSF and noise; the metrics
real_fpr and real_auroc; the real sets of lens-space and lens-ground from data/galaxies."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import erf
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from skybench.common import robust_sigma
from skybench.physics.psf import FWHM_TO_SIGMA
from skybench.real_hst import Target, match_to_target
from skybench.tasks.lens.metrics import threshold_at_fpr
from skybench.tasks.lens.score import real_auroc, score_real
from skybench.tasks.lens.score import wilson_interval as score_wilson
from skybench.tracks import load_track


def _point(n: int, scale: float, fwhm: float, flux: float = 1e3) -> np.ndarray:
    """A pixel-integrated circular Gaussian of ``fwhm`` arcsec centred on an n x n grid of ``scale``."""
    s = fwhm * FWHM_TO_SIGMA / scale
    idx = np.arange(n) - (n - 1) / 2
    e = 0.5 * (erf((idx + 0.5) / (np.sqrt(2) * s)) - erf((idx - 0.5) / (np.sqrt(2) * s)))
    return flux * np.outer(e, e)


def _noiseless(pixel_scale: float, fwhm: float) -> Target:
    return Target(101, pixel_scale, fwhm, 24.0, 0.0, math.inf, 20.0, supersampling=2)  # no background, no Poisson


def _fwhm_of(image: np.ndarray, scale: float) -> float:
    """FWHM [arcsec] of the Gaussian with the image's second moment per axis, the output pixel (p^2/12) removed."""
    c = (np.arange(image.shape[0]) - (image.shape[0] - 1) / 2) * scale
    var = [(image.sum(axis=a) * c**2).sum() / image.sum() for a in (0, 1)]
    return float(np.sqrt(np.mean(var) - scale**2 / 12) / FWHM_TO_SIGMA)


# ------------------------------------------------------------------------------------------ processing
# (input pixel scale, input PSF FWHM, target pixel scale, target FWHM, input size): HST ACS and WFC3/IR to VIS;
# KiDS at 0.339" upsampled to the ground track's 0.2".
CASES = [(0.03, 0.12, 0.1, 0.18, 201), (0.06, 0.17, 0.1, 0.18, 101), (0.339, 0.5, 0.2, 0.9, 41)]


@pytest.mark.parametrize(("p_in", "f_in", "p_out", "f_out", "n"), CASES)
def test_resampled_images_conserve_flux(p_in, f_in, p_out, f_out, n):
    rng = np.random.default_rng(0)
    for image in (_point(n, p_in, f_in), _point(n, p_in, 4 * f_in) + 0.01 * rng.random((n, n))):
        out, num = match_to_target(image, (p_in, p_in), f_in, 0.0, _noiseless(p_out, f_out), rng, flux_scale=1.0)
        assert out.shape == (101, 101)
        assert out.sum() == pytest.approx(image.sum(), rel=1e-6)
        assert num["footprint_fraction"] > 0


@pytest.mark.parametrize(("p_in", "f_in", "p_out", "f_out", "n"), CASES)
def test_a_resampled_point_source_has_the_target_psf(p_in, f_in, p_out, f_out, n):
    """A point source seen through the input PSF comes out with the FWHM of the target's simulated images (the
    output pixel removed; their supersampled binning is p^2/12/S^2 short of a pixel box)."""
    target = _noiseless(p_out, f_out)
    want = math.sqrt((f_out * FWHM_TO_SIGMA) ** 2 + target.sim_pixel_variance) / FWHM_TO_SIGMA
    out, num = match_to_target(_point(n, p_in, f_in), (p_in, p_in), f_in, 0.0, target, np.random.default_rng(0),
                               flux_scale=1.0)
    assert _fwhm_of(out, p_out) == pytest.approx(want, rel=0.02)
    assert num["psf_fwhm_result"] == pytest.approx(want, rel=0.02)
    assert num["psf_diff_sigma_arcsec"] > 0 or num["psf_fwhm_result"] > want  # none when the input is broader


@pytest.mark.parametrize(("track_name", "band", "p_in", "f_in"),
                         [("lens-space", 0, 0.03, 0.08), ("lens-ground", 2, 0.05, 0.1), ("enhance", 1, 0.05, 0.1)])
def test_a_real_galaxy_is_blurred_as_the_simulator_blurs_the_same_galaxy(track_name, band, p_in, f_in):
    """The discrete second moments of one Gaussian galaxy, simulated by the track's Renderer and processed by
    match_to_target from a fine HST-like grid, agree to 7.5% of a pixel box (p^2/12), with what the Renderer's binning
    of S x S supersampled points falls short of one (p^2/12/S^2, Sheppard's correction) taken into account: otherwise
    the sharpness tells real from simulated."""
    import dataclasses

    from skybench.physics.backend import get_backend
    from skybench.physics.render import Renderer

    track = load_track(track_name)
    p, b = track.survey.pixel_scale, track.survey.bands[band]
    r = Renderer(track.cutout.size, p, track.cutout.supersampling, [b],
                 dataclasses.replace(get_backend("numpy"), dtype=np.float64), 0)
    zero = np.zeros(1)
    sim = np.asarray(r.convolve(r.bin(r.gaussian(np.array([1.5 * p]), zero, zero, zero, zero))[:, None]))[0, 0]
    n = int(round(track.cutout.size * p / p_in)) | 1
    hst = _point(n, p_in, math.hypot(1.5 * p, f_in * FWHM_TO_SIGMA) / FWHM_TO_SIGMA)  # the galaxy seen through f_in
    target = dataclasses.replace(Target.for_band(track, band, 20.0), sigma_bkg=0.0, total_time=math.inf)
    real, _ = match_to_target(hst, (p_in, p_in), f_in, 0.0, target, np.random.default_rng(0), flux_scale=1.0)

    def var(img: np.ndarray) -> float:
        c = (np.arange(img.shape[0]) - (img.shape[0] - 1) / 2) * p
        return float(np.mean([(img.sum(axis=a) * c**2).sum() / img.sum() for a in (0, 1)]))

    box = p**2 / 12
    assert abs(var(real) - var(sim)) < 0.075 * box
    assert target.sim_pixel_variance == pytest.approx(-box / track.cutout.supersampling**2)


def test_a_psf_broader_than_the_target_is_kept_and_recorded():
    """KiDS: its PSF (0.86-1.15") is broader than the ground track's: no convolution, psf_fwhm_result says so."""
    out, num = match_to_target(_point(41, 0.339, 0.9), (0.339, 0.339), 0.9, 0.0, _noiseless(0.2, 0.73),
                               np.random.default_rng(0), flux_scale=1.0)
    assert num["psf_diff_variance_arcsec2"] < 0 and num["psf_diff_sigma_arcsec"] == 0
    assert num["psf_fwhm_result"] > 0.9
    assert _fwhm_of(out, 0.2) == pytest.approx(num["psf_fwhm_result"], rel=0.03)


@pytest.mark.parametrize(("p_in", "sigma_in", "p_out"), [(0.03, 0.002, 0.1), (0.339, 0.5, 0.2), (0.339, 2.0, 0.2)])
def test_the_noise_is_brought_to_the_target_level(p_in, sigma_in, p_out):
    """Pure noise in: the output's sigma is the target's where the carried input noise is below it (the added
    noise fills the gap), and the carried input noise's largest eigenvalue (existing_sigma_processed_eig_max,
    propagated exactly through the linear map) where it is above it; either way the output noise is white (no
    pixel-to-pixel correlation, which upsampling gives the carried noise and a model could detect)."""
    rng = np.random.default_rng(1)
    n = int(np.ceil(101 * p_out / p_in)) + 2
    target = Target(101, p_out, 0.18 if p_out == 0.1 else 0.9, 24.0, 0.5, math.inf, 20.0)
    sigmas, carried, lag1 = [], [], []
    for _ in range(20):
        out, num = match_to_target(rng.normal(0, sigma_in, (n, n)), (p_in, p_in), 0.1, sigma_in, target, rng,
                                   flux_scale=1.0)
        inner = out[5:-5, 5:-5]
        sigmas.append(inner.std())
        carried.append(num["existing_sigma_processed"])
        lag1 += [np.corrcoef(inner[:, 1:].ravel(), inner[:, :-1].ravel())[0, 1],
                 np.corrcoef(inner[1:].ravel(), inner[:-1].ravel())[0, 1]]
    want = max(target.sigma_bkg, num["existing_sigma_processed_eig_max"])
    assert num["white_noise_sigma"] == pytest.approx(want)
    assert np.mean(sigmas) == pytest.approx(want, rel=0.03)
    assert abs(np.mean(lag1)) < 0.01, np.mean(lag1)
    assert num["added_bkg_sigma"] ** 2 == pytest.approx(max(want**2 - carried[0] ** 2, 0), abs=1e-12)


# ------------------------------------------------------------------------------------------ metrics
class _Hidden:
    """The HiddenSplit interface score_real uses: truth(ids)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)

    def truth(self, ids: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"is_lens": self.labels[ids]})


def test_real_fpr_is_the_fraction_of_real_nonlenses_at_or_above_the_1pc_threshold(tmp_path):
    # 100 simulated non-lenses scored 0..99 and 100 lenses scored 200..299: FPR 1% = one non-lens above the cut,
    # so the cut is 99. Real: 3 lenses (2 above), 8 non-lenses, 3 of them at or above 99 (99 itself counts).
    sim_labels = np.r_[np.zeros(100), np.ones(100)].astype(int)
    sim = np.r_[np.arange(100.0), np.arange(200.0, 300.0)]
    assert threshold_at_fpr(sim_labels, sim, 0.01) == 99.0
    real_labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    real = np.array([150.0, 98.0, 99.0, 99.0, 500.0, 120.0, 98.9, 0.0, 10.0, -3.0, 50.0])
    m = score_real(None, np.arange(200), sim, _Hidden(sim_labels), np.arange(11), real,  # type: ignore[arg-type]
                   _Hidden(real_labels), tmp_path)
    assert m["real_fpr"] == 3 / 8 and m["real_lens_recall"] == 2 / 3
    want = binomtest(3, 8).proportion_ci(confidence_level=0.95, method="wilson")
    assert (m["real_fpr_ci_low"], m["real_fpr_ci_high"]) == pytest.approx((want.low, want.high), abs=1e-12)
    # real_auroc: real lenses against real non-lenses, as sklearn computes it
    assert m["real_auroc"] == pytest.approx(roc_auc_score(real_labels, real), abs=1e-12)
    assert m["real_auroc_ci_low"] <= m["real_auroc"] <= m["real_auroc_ci_high"]


def test_without_real_lenses_recall_and_auroc_are_nan_and_fpr_is_not(tmp_path):
    """lens-ground: a real set of non-lenses only."""
    sim_labels = np.r_[np.zeros(100), np.ones(100)].astype(int)
    sim = np.r_[np.arange(100.0), np.arange(200.0, 300.0)]
    real = np.array([100.0, 0.0, 5.0, 300.0])
    m = score_real(None, np.arange(200), sim, _Hidden(sim_labels), np.arange(4), real,  # type: ignore[arg-type]
                   _Hidden(np.zeros(4, int)), tmp_path)
    assert m["real_fpr"] == 0.5 and 0 < m["real_fpr_ci_low"] < 0.5 < m["real_fpr_ci_high"] < 1
    for k in ("real_lens_recall", "real_lens_recall_ci_low", "real_auroc", "real_auroc_ci_low", "real_auroc_ci_high"):
        assert math.isnan(m[k]), k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_auroc_matches_sklearn_and_its_bootstrap_interval_is_the_stratified_percentile_one(seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(27), np.zeros(40)].astype(int)
    scores = rng.normal(labels * 0.8, 1.0).round(1)  # ties too
    auc, low, high = real_auroc(labels, scores, n_resamples=300, seed=5)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # the same resamples, scored one by one by sklearn
    draw = np.random.default_rng(5)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    idx = np.concatenate([draw.choice(pos, (300, 27)), draw.choice(neg, (300, 40))], axis=1)
    each = [roc_auc_score(labels[i], scores[i]) for i in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(each, [0.025, 0.975])), abs=1e-12)
    assert low < auc < high


@pytest.mark.parametrize("n", [8, 20, 48, 176, 1000])
def test_the_wilson_interval_ends_exactly_at_0_and_1(n):
    """With no real non-lens above the cut, real_fpr = 0 must lie inside its interval (rounding gave 6e-18 > 0)."""
    assert score_wilson(0, n)[0] == 0.0 and score_wilson(n, n)[1] == 1.0


def test_real_auroc_known_values():
    y = np.array([1, 1, 1, 0, 0, 0])
    assert real_auroc(y, np.array([3.0, 4, 5, 0, 1, 2]))[:1] == (1.0,)
    assert real_auroc(y, np.array([0.0, 1, 2, 3, 4, 5]))[:1] == (0.0,)
    assert real_auroc(y, np.ones(6))[0] == 0.5
    assert all(math.isnan(v) for v in real_auroc(np.zeros(5, int), np.arange(5.0)))


# ------------------------------------------------------------------------------------------ the real data
@pytest.fixture(scope="module")
def galaxies(root):
    d = root / "data" / "galaxies"
    if not (d / "hst_stamps").is_dir() or not (d / "kids_viking_field").is_dir():
        pytest.skip(f"real data missing: {d} (run `dvc pull`)")
    return d


def _border_sigma(images: np.ndarray) -> np.ndarray:
    border = np.ones(images.shape[-2:], dtype=bool)
    border[10:-10, 10:-10] = False
    return np.array([[robust_sigma(b[border]) for b in im] for im in images])


def test_lens_space_nonlenses_from_hst_stamps_and_scenes(galaxies):
    from skybench.tasks.lens.real_nonlens import nonlenses

    track = load_track("lens-space")
    items = nonlenses(galaxies.parent, track)
    meta = pd.DataFrame([it.meta for it in items])
    assert len(items) >= 25 and all(it.image.shape == (1, 101, 101) and it.image.dtype == np.float32 for it in items)
    # Every stamp is used but for those too shallow to reach any simulated non-lens's flux at the track's noise.
    kept = (meta.source_kind == "hst_stamp").sum()
    assert kept + meta.stamps_dropped_unreachable_flux.iloc[0] == 18 and kept >= 12
    assert (meta.source_kind == "hst_scene").sum() >= 7
    assert not meta.file.str.contains("COSMOSWeb|F606W|HDFN").any()
    # The PSF is matched to the simulated images' (VIS 0.18", their binning short of a pixel box; every HST PSF is
    # narrower than VIS; WFC3/IR's 0.17" with its 0.06" pixel comes out 3% broader) and the noise is the track's in
    # the frame's border.
    sim_fwhm = math.sqrt((0.18 * FWHM_TO_SIGMA) ** 2 + Target.for_band(track, 0, 20.0).sim_pixel_variance) \
        / FWHM_TO_SIGMA
    np.testing.assert_allclose(meta.psf_fwhm_result, sim_fwhm, rtol=0.035)
    assert (meta.psf_fwhm_hst < 0.18).all() and np.allclose(meta[meta.band == "F814W"].psf_fwhm_result, sim_fwhm,
                                                             rtol=1e-9)
    sigma = _border_sigma(np.stack([it.image for it in items]))[:, 0]
    assert np.median(sigma / meta.sigma_bkg_target) == pytest.approx(1.0, abs=0.03)
    # Each flux within 2" is drawn (below what the object reaches at the track's noise): no two alike.
    flux = meta.flux_scale * meta.aperture_flux_orig
    assert (flux <= meta.flux_reach * (1 + 1e-9)).all() and meta.target_mag.nunique() == len(meta)
    assert (meta.existing_sigma_processed_eig_max <= meta.sigma_bkg_target * (1 + 1e-9)).all()
    # Two HFF scenes are cut from one mosaic and share a galaxy, pixels and noise alike: the injected track's
    # train/val/test split (by galaxy group) keeps them together, by their cut-outs' places on the sky.
    from skybench.tasks.lens.injected import galaxy_groups

    assert np.isfinite(meta[meta.source_kind == "hst_scene"][["ra", "dec"]]).all().all()
    groups = pd.Series(galaxy_groups(meta), index=meta.file)
    hff = groups[groups.index.str.contains("HFF_A2744_F105W_(?:cd|dwarf)_galaxy")]
    assert hff.index.nunique() == 2 and hff.nunique() == 1, hff
    assert groups.nunique() == kept + 5  # each stamp, and the scenes: the mosaic, group, spiral, two COSMOS fields


def test_lens_ground_nonlenses_from_kids_stamps(galaxies):
    from skybench.tasks.lens.real_nonlens import nonlenses

    track = load_track("lens-ground")
    items = nonlenses(galaxies.parent, track, limit=12)
    meta = pd.DataFrame([it.meta for it in items])
    assert len(items) + meta.stamps_dropped_unreachable_flux.iloc[0] == 12 and len(items) >= 3
    assert all(it.image.shape == (4, 101, 101) and it.image.dtype == np.float32 for it in items)
    # No band is noisier than the track's: the largest dimming (flux_dim_factor_max) brings each stamp's noisiest
    # band (largest eigenvalue of its carried noise) to it; the drawn flux dims at least that much.
    ratios = meta[[f"noise_ratio_{b}" for b in "ugri"]]
    np.testing.assert_allclose(ratios.max(axis=1), meta.flux_dim_factor / meta.flux_dim_factor_max, rtol=1e-9)
    assert (meta.flux_dim_factor <= meta.flux_dim_factor_max * (1 + 1e-12)).all()
    assert (meta.flux_dim_mag > 0).all()
    sigma = _border_sigma(np.stack([it.image for it in items]))
    want = np.array([meta[f"sigma_bkg_target_{b}"].iloc[0] for b in "ugri"])
    assert np.median(sigma / want, axis=0) == pytest.approx(1.0, abs=0.04)
    # The PSF: KiDS's, broader than the track's, recorded; the colours kept (one factor for every band).
    assert (meta.psf_fwhm_input_g > 0.77).all() and (meta.psf_diff_sigma_arcsec_g == 0).all()
    np.testing.assert_allclose(meta.flux_scale_r / meta.flux_scale_i, 10 ** (0.4 * (28.13 - 27.79)))
    np.testing.assert_allclose(meta.flux_scale_r, 10 ** (0.4 * 28.13) * meta.flux_dim_factor)
