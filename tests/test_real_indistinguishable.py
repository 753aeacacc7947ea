"""Trust: a model must not be able to tell the real objects of a lens track's test stream from the simulated ones
(it could then push real non-lenses down, forging real_fpr, or real lenses up, forging real_lens_recall).

A gradient-boosted classifier, cross-validated, on a broad vector of public per-object statistics of the model
inputs (flux in apertures, peak, border level and noise, noise power at several scales and its pixel-to-pixel
correlation, size, concentration, colours, quantization, non-finite and zero pixels) separates real from
simulated objects, lenses and non-lenses separately where both exist. Its AUROC must lie within the null
distribution of a classifier that has nothing to learn: on all the statistics, on the noise statistics alone and on
the brightness alone. Where a real set still leaks (morphology of real galaxies, KiDS and HST stamps too shallow to
reach the simulated deflectors' brightness at the track's noise) the case is a strict xfail naming the cause, so a
fix shows up as an XPASS.

Measured (sim 400 objects, seed 11; real: 27 HST lenses, 26 of 30 HST non-lenses, 73 of 176 KiDS stamps: the
rest cannot reach any simulated flux at the track's noise), cross-validated AUROC, before the fix -> after:
lens-space lenses all 0.99 -> 0.86, noise 0.56 -> 0.70, flux 0.995 -> 0.66; lens-space non-lenses all 0.92 -> 0.94,
noise 0.63 -> 0.63, flux 0.70 -> 0.82; lens-ground non-lenses all 0.995 -> 0.997, noise 0.995 -> 0.66, flux
0.95 -> 0.98.

Lens placement (same sizes and seeds; features y, x, radius): the DESI F140W cut-outs have the deflector up to 1"
off their centre (peak up to 10.5 HST pixels) and were placed as stored; centred on the deflector's light centre
plus the simulated deflectors' N(0, center_sigma) offset, cross-validated AUROC before -> after: brightest pixel,
real vs simulated lenses 0.73 -> 0.44 (null bound 0.68), real lenses vs real non-lenses 0.65 -> 0.62 (0.74);
light centroid 0.58 -> 0.54 and 0.68 -> 0.61; the lens groups above: all 0.85 -> 0.81, noise 0.65 -> 0.51, flux
0.66 -> 0.58.

Real images blurred as the simulator blurs (the binned supersampled pixel plus the pixel-integrated PSF: two pixel
boxes, not one), lens-space lenses, noise statistics at real-set seeds 0-3: 0.68, 0.61, 0.72, 0.68 -> 0.73, 0.61, 0.66,
0.62 (means 0.671 -> 0.654): the sharpness cue is gone, and what is left there is the border's galaxy light."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, ttest_ind
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from skybench.release import open_release
from skybench.simulate import simulate_release
from skybench.tasks.lens.real import import_real_set
from skybench.tasks.lens.realism import GROUPS, NAMES, band_stats, features
from skybench.tracks import load_track

SIM_SIZE = {"lens-space": 400, "lens-ground": 400}
KIDS_LIMIT = 176  # all the KiDS stamps


CV_REPEATS = 5


def cv_auroc(x_sim: np.ndarray, x_real: np.ndarray, seed: int = 0, repeats: int = CV_REPEATS) -> float:
    """Cross-validated AUROC of real (1) against simulated (0), averaged over ``repeats`` shuffles of the 5 folds:
    one split's AUROC varies by a few hundredths with the fold assignment, the mean less; under the null the mean
    has at most one AUROC's variance, so :func:`null_upper` still bounds it."""
    x = np.concatenate([x_sim, x_real])
    y = np.r_[np.zeros(len(x_sim)), np.ones(len(x_real))]
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=8, min_samples_leaf=5,
                                         class_weight="balanced", random_state=seed)
    return float(np.mean([roc_auc_score(y, cross_val_predict(
        clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed + r), method="predict_proba")[:, 1])
        for r in range(repeats)]))


def null_upper(n_sim: int, n_real: int, z: float = 3.0) -> float:
    """Upper end (mean + z sd) of the AUROC of scores independent of the labels: Mann-Whitney U / (n0 n1),
    variance (n0 + n1 + 1) / (12 n0 n1) (Hanley & McNeil 1982, eq. 1 at AUROC 0.5)."""
    return 0.5 + z * float(np.sqrt((n_sim + n_real + 1) / (12.0 * n_sim * n_real)))


@pytest.fixture(scope="module")
def sets(real_data, tmp_path_factory):
    """Per track: (real images, real is_lens, simulated images, simulated is_lens, pixel scale)."""
    tmp = tmp_path_factory.mktemp("indist")
    out = {}
    for name in ("lens-space", "lens-ground"):
        real = open_release(import_real_set(real_data, name, tmp / f"real-{name}", limit=KIDS_LIMIT))
        sim = open_release(simulate_release(name, tmp / f"sim-{name}", seed=11, size=SIM_SIZE[name], progress=False,
                                            real_set=False))
        out[name] = (real.images("test")[:], real.hidden("test").meta().is_lens.to_numpy(), sim.images("test")[:],
                     sim.hidden("test").meta().is_lens.to_numpy(), load_track(name).survey.pixel_scale)
    return out


MORPHOLOGY = "real galaxies are not Sersic profiles (size, concentration, peak, wings and neighbours in the border)"
SHALLOW = ("the real stamps' own noise, whitened, caps how bright they can be made; most cannot reach the simulated"
           " deflectors' fluxes")
LEAKS = {("lens-space", "lens", "all"): MORPHOLOGY, ("lens-space", "nonlens", "all"): MORPHOLOGY,
         ("lens-ground", "nonlens", "all"): f"{MORPHOLOGY}; KiDS PSF broader than the track's; {SHALLOW}",
         ("lens-space", "nonlens", "flux"): SHALLOW, ("lens-ground", "nonlens", "flux"): SHALLOW,
         ("lens-ground", "nonlens", "noise"): "neighbours in the KiDS border and a residual the whitening misses",
         ("lens-space", "lens", "noise"): "galaxy light in the border of the HST lens cut-outs (lag1_corr KS p 3e-4,"
         " smooth1 KS p 6e-7): AUROC 0.73, 0.61, 0.66, 0.62 at real-set seeds 0-3 against a bound of 0.68"}
CASES = [(t, k, g) for t, k in (("lens-space", "lens"), ("lens-space", "nonlens"), ("lens-ground", "nonlens"))
         for g in GROUPS]


@pytest.mark.parametrize(("name", "kind", "group"), [
    pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=LEAKS[c])) if c in LEAKS else c for c in CASES])
def test_a_classifier_cannot_tell_real_from_simulated(name, kind, group, sets):
    real, yr, sim, ys, scale = sets[name]
    v = int(kind == "lens")
    xs, xr = features(sim[ys == v], scale, group), features(real[yr == v], scale, group)
    repeats = 1 if (name, kind, group) in LEAKS else CV_REPEATS  # a known leak is far above the bound: one shuffle
    auroc, upper = cv_auroc(xs, xr, repeats=repeats), null_upper(len(xs), len(xr))
    assert auroc <= upper, f"{name} {kind}s, {group} statistics: real told apart from simulated, " \
        f"cross-validated AUROC {auroc:.3f} > {upper:.3f} (null mean + 3 sd, {len(xs)} sim, {len(xr)} real)"


def test_real_lens_fluxes_follow_the_simulated_lenses(sets):
    """The real lenses' flux within 2" is drawn from the simulated lenses' (it was one magnitude, 20.25, for all:
    a spike a model could find)."""
    real, yr, sim, ys, scale = sets["lens-space"]
    n = real.shape[-1]
    c = (np.arange(n) - (n - 1) / 2.0) * scale
    aperture = np.hypot(c[:, None], c[None, :]) <= 2.0
    fr, fs = real[yr == 1][:, 0][:, aperture].sum(axis=1), sim[ys == 1][:, 0][:, aperture].sum(axis=1)
    assert np.unique(np.round(fr, 0)).size > len(fr) // 2
    assert ks_2samp(fr, fs).pvalue > 0.01, (np.quantile(fr, [0.1, 0.5, 0.9]), np.quantile(fs, [0.1, 0.5, 0.9]))


def test_pixel_values_and_centres_do_not_tell_real_from_simulated(sets):
    """Processing artifacts, not morphology: (1) the simulator added its noise in float32 arithmetic (round half to
    even) and the real set in float64 rounded once, so the share of float32 pixels with an odd last mantissa bit
    was ~0.40 simulated against 0.50 real (AUROC 1.0 on every track); (2) the KiDS stamps are 64 px with the
    galaxy on pixel 32, and the frame was centred on 31.5, half a KiDS pixel (0.85 px of lens-ground) off in both
    axes: the real centroids' mean was 0.11" off the simulated ones' (Welch t ~ 6; AUROC 0.77 on the r-band
    centroid). The centroids' spread still differs (the real galaxies are fainter, SHALLOW): the test is on the
    mean offset."""
    for name, (real, _, sim, _, scale) in sets.items():
        def stat(images: np.ndarray, s: str, scale: float = scale) -> np.ndarray:
            return np.array([[band_stats(b, scale)[NAMES.index(s)] for b in im] for im in images])

        xs, xr = stat(sim, "odd_mantissa"), stat(real, "odd_mantissa")
        auroc, upper = cv_auroc(xs, xr), null_upper(len(xs), len(xr))
        assert auroc <= upper, f"{name}: last mantissa bits tell real from simulated, AUROC {auroc:.3f} > {upper:.3f}"
        for axis in ("centroid_y", "centroid_x"):
            p = ttest_ind(stat(sim, axis), stat(real, axis), equal_var=False).pvalue
            assert np.all(p > 1e-3), f"{name}: the real objects' {axis} is offset from the simulated ones' (p {p})"


def _positions(images: np.ndarray, scale: float, kind: str) -> np.ndarray:
    """(N, 3) position of each object's first band, arcsec from the frame centre: y, x and radius of the brightest
    pixel (``peak``) or of :func:`band_stats`' light centroid (``centroid``)."""
    if kind == "peak":
        n = images.shape[-1]
        py, px = np.unravel_index(np.argmax(images[:, 0].reshape(len(images), -1), axis=1), (n, n))
        yx = (np.c_[py, px] - (n - 1) / 2.0) * scale
    else:
        yx = np.array([[band_stats(im[0], scale)[NAMES.index(a)] for a in ("centroid_y", "centroid_x")]
                       for im in images])
    return np.c_[yx, np.hypot(*yx.T)]


@pytest.mark.parametrize("kind", ["peak", "centroid"])
def test_lens_placement_does_not_tell_real_lenses_apart(kind, sets):
    """The DESI F140W cut-outs have the deflector up to 1" off their centre and were placed as stored: the brightest
    pixel's position told the real lenses from the simulated ones, and from the real non-lenses (centred), a cue
    that is not the science. Every real lens-space object is now centred on its galaxy's light centre offset as
    the simulated deflectors are (``skybench.real_hst.jittered_centre``)."""
    real, yr, sim, ys, scale = sets["lens-space"]
    lens = _positions(real[yr == 1], scale, kind)
    for other, what in ((_positions(sim[ys == 1], scale, kind), "simulated lenses"),
                        (_positions(real[yr == 0], scale, kind), "real non-lenses")):
        auroc, upper = cv_auroc(other, lens), null_upper(len(other), len(lens))
        assert auroc <= upper, f"the {kind} position tells real lenses from {what}: AUROC {auroc:.3f} > {upper:.3f}"
