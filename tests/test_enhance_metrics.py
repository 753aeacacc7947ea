"""Image metrics of the enhancement track on known cases: identical images, a pure shift, added noise of known
sigma, and a model that invents structure (penalised by the flux, shape and chi^2 metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from skybench.tasks.enhance.metrics import (
    chi2_per_pixel,
    display_stretch,
    flux_rel_error,
    image_metrics,
    psnr,
    second_moments,
    shape_errors,
    ssim,
    stretched_psnr,
    truth_variance,
)

PIX = 0.396
R = np.array([200.0, 300.0, 300.0])
LOW, HIGH = np.array([-2.2, -1.9, -1.3]), np.array([89.0, 75.0, 54.0])


def galaxy(n: int = 6, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) smooth elliptical Gaussian galaxies with different shapes, well inside the frame."""
    rng = np.random.default_rng(seed)
    c = (np.arange(size) - (size - 1) / 2) * PIX
    x, y = np.meshgrid(c, c)
    out = np.empty((n, 3, size, size))
    for i in range(n):
        s, q, phi = rng.uniform(1.5, 2.5), rng.uniform(0.4, 0.9), rng.uniform(0, np.pi)
        xr, yr = x * np.cos(phi) + y * np.sin(phi), -x * np.sin(phi) + y * np.cos(phi)
        prof = np.exp(-0.5 * ((xr / s) ** 2 + (yr / (q * s)) ** 2))
        out[i] = prof[None] * np.array([80.0, 150.0, 200.0])[:, None, None]
    return out


def test_identical_images() -> None:
    t = galaxy()
    assert np.all(np.isinf(psnr(t, t, R)))
    np.testing.assert_allclose(ssim(t, t, R), 1.0)
    np.testing.assert_allclose(flux_rel_error(t, t), 0.0)
    errs = shape_errors(t, t, PIX, 3.0)
    np.testing.assert_allclose(errs["size_rel_error"], 0.0, atol=1e-12)
    np.testing.assert_allclose(errs["ellipticity_error"], 0.0, atol=1e-12)
    np.testing.assert_allclose(chi2_per_pixel(t, t, 1.0), 0.0)
    metrics, _ = image_metrics(t, t, stretch_low=LOW, stretch_high=HIGH, flux_range=R, variance=1.0,
                               pixel_scale=PIX, weight_sigma=3.0, n_resamples=50)
    assert np.isinf(metrics["psnr"]) and np.isinf(metrics["psnr_flux"]) and metrics["ssim"] == pytest.approx(1.0)


def test_psnr_equals_skimage_per_image_and_band_range() -> None:
    """PSNR = 10 log10(R^2 / MSE) against skimage.metrics.peak_signal_noise_ratio, one band's range at a time."""
    from skimage.metrics import peak_signal_noise_ratio

    t = galaxy(3)
    p = t + np.random.default_rng(1).normal(0.0, 3.0, t.shape)
    for b in range(3):
        want = [peak_signal_noise_ratio(t[i, b], p[i, b], data_range=R[b]) for i in range(3)]
        np.testing.assert_allclose(psnr(p[:, b : b + 1], t[:, b : b + 1], R[b]), want, rtol=1e-12)


def test_pure_shift() -> None:
    """A shift by whole pixels: PSNR and SSIM drop as the formula says; flux and shape are unchanged."""
    t = galaxy()
    p = np.roll(t, (2, -3), axis=(2, 3))  # the galaxies are far from the edge: nothing wraps around
    expected = -10 * np.log10(np.mean(((p - t) / R[None, :, None, None]) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(psnr(p, t, R), expected)
    assert np.all(psnr(p, t, R) < 40) and np.all(ssim(p, t, R) < 0.99)
    np.testing.assert_allclose(flux_rel_error(p, t), 0.0, atol=1e-9)
    errs = shape_errors(p, t, PIX, 3.0)  # the weight follows each image's centroid
    assert np.all(errs["size_rel_error"] < 1e-3) and np.all(errs["ellipticity_error"] < 1e-3)
    mt, mp = second_moments(t, PIX, 3.0), second_moments(p, PIX, 3.0)
    np.testing.assert_allclose(mp["x"] - mt["x"], -3 * PIX, atol=1e-3)
    np.testing.assert_allclose(mp["y"] - mt["y"], 2 * PIX, atol=1e-3)


def test_added_noise_of_known_sigma() -> None:
    t = np.repeat(galaxy(2), 20, axis=0)
    sigma = 0.5
    p = t + np.random.default_rng(1).normal(0.0, sigma, t.shape)
    # PSNR of white noise: 10 log10(R^2 / sigma^2) per band, averaged in MSE
    expected = -10 * np.log10(np.mean((sigma / R) ** 2))
    assert np.mean(psnr(p, t, R)) == pytest.approx(expected, abs=0.05)
    assert np.mean(chi2_per_pixel(p, t, sigma**2)) == pytest.approx(1.0, abs=0.01)
    assert np.mean(chi2_per_pixel(p, t, (2 * sigma) ** 2)) == pytest.approx(0.25, abs=0.01)
    assert np.all(ssim(p, t, R) < 1.0)
    assert np.all(flux_rel_error(p, t) < 0.01)


def test_invented_structure_is_penalised() -> None:
    """An output with fake clumps (a hallucinating model) scores worse than an honest, slightly blurry one in
    flux, size, ellipticity and chi^2 — even where its PSNR is not worse."""
    t = galaxy(8)
    sigma = 0.5
    rng = np.random.default_rng(2)
    noisy_truth = t + rng.normal(0, sigma, t.shape)
    honest = t.copy()
    c = (np.arange(64) - 31.5) * PIX
    x, y = np.meshgrid(c, c)
    fake = t.copy()
    for i in range(len(t)):
        for _ in range(3):  # three bright compact clumps off-centre
            cx, cy = rng.uniform(-4, 4, 2)
            fake[i] += 25.0 * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / 0.4**2)[None]
    kw = dict(stretch_low=LOW, stretch_high=HIGH, flux_range=R, variance=sigma**2, pixel_scale=PIX,
              weight_sigma=3.0, n_resamples=100)
    good, _ = image_metrics(honest, noisy_truth, **kw)
    bad, _ = image_metrics(fake, noisy_truth, **kw)
    for name in ("flux_rel_error", "size_rel_error", "ellipticity_error", "chi2"):
        assert bad[name] > 3 * good[name], name
    assert bad["chi2"] > 5 and good["chi2"] == pytest.approx(1.0, abs=0.05)
    assert bad["chi2_ci_low"] > good["chi2_ci_high"]


def test_stretched_psnr() -> None:
    """PSNR of the display-stretched images: saturated cores do not count, faint residuals do."""
    t = galaxy(4)
    above = t > HIGH[None, :, None, None]
    core = np.where(above, 1.5 * t, t)  # only pixels above the stretch's upper limit change
    assert above.sum() > 100
    assert np.all(np.isinf(stretched_psnr(core, t, LOW, HIGH))) and np.all(np.isfinite(psnr(core, t, R)))
    faint = t + 0.5  # a small pedestal everywhere
    assert np.all(stretched_psnr(faint, t, LOW, HIGH) < psnr(faint, t, R))
    with pytest.raises(ValueError, match="high > low"):
        stretched_psnr(t, t, HIGH, LOW)


def test_display_stretch_by_hand() -> None:
    """Schawinski et al. 2017: clip to [low, high], rescale to [0, 1], asinh(10 x) / 3."""
    img = np.array([[[[-1.0, 1.0, 2.0, 5.0]], [[0.0, -1.0, 3.0, 1.0]]]])  # (1 image, 2 bands, 1, 4)
    got = display_stretch(img, [0.0, -1.0], [2.0, 3.0])
    top = 0.9994076500993233  # asinh(10) / 3
    # band 0: x = -0.5 -> 0, 0.5 -> asinh(5)/3, 1 -> top, 2.5 -> 1; band 1: x = 0.25 -> asinh(2.5)/3, 0, 1, 0.5
    assert got[0, 0, 0] == pytest.approx([0.0, 0.7708127804242508, top, top], rel=1e-12)
    assert got[0, 1, 0] == pytest.approx([0.5490770487903652, 0.0, top, 0.7708127804242508], rel=1e-12)


def test_truth_variance_by_hand() -> None:
    """sigma_bkg^2 + max(truth, 0) / T per band: background plus the Poisson variance of the (positive) truth."""
    t = np.array([[[[-3.0, 40.0]], [[8.0, 0.0]]]])  # (1 image, 2 bands, 1, 2)
    got = truth_variance(t, [0.5, 2.0], [100.0, 4.0])
    assert got[0, :, 0] == pytest.approx(np.array([[0.25, 0.25 + 0.4], [4.0 + 2.0, 4.0]]), rel=1e-12)
    per_object = truth_variance(np.concatenate([t, t]), [[0.5, 2.0], [1.0, 3.0]], [100.0, 4.0])  # (N, bands) sigma
    assert per_object[1, :, 0] == pytest.approx(np.array([[1.0, 1.4], [11.0, 9.0]]), rel=1e-12)


def test_bad_inputs() -> None:
    t = galaxy(2)
    with pytest.raises(ValueError, match="shape"):
        psnr(t[:, :2], t, R)
    with pytest.raises(ValueError, match="finite"):
        psnr(np.where(t > 100, np.nan, t), t, R)
    with pytest.raises(ValueError, match="data_range"):
        psnr(t, t, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="variance"):
        chi2_per_pixel(t, t, 0.0)
    with pytest.raises(ValueError, match="flux"):
        flux_rel_error(t, -t)


def test_an_empty_output_image_scores_badly_instead_of_failing_the_submission() -> None:
    """A denoiser that sees nothing in one faint input returns zeros (or slightly negative flux) for it: its moments
    are undefined. That image gets size 0 (size error 1) and no ellipticity; the others are scored as before, and
    only the truth must have light."""
    t = galaxy()
    errs_before = shape_errors(1.01 * t, t, PIX, 3.0)
    for dark in (0.0, -0.01):
        p = 1.01 * t
        p[2] = dark * t[2]
        errs = shape_errors(p, t, PIX, 3.0)
        assert errs["size_rel_error"][2] == 1.0
        e_truth = second_moments(t[2:3], PIX, 3.0)
        assert errs["ellipticity_error"][2] == pytest.approx(float(np.hypot(e_truth["e1"][0], e_truth["e2"][0])))
        keep = np.arange(len(t)) != 2
        np.testing.assert_allclose(errs["size_rel_error"][keep], errs_before["size_rel_error"][keep], atol=1e-12)
        metrics, _ = image_metrics(p, t, stretch_low=LOW, stretch_high=HIGH, flux_range=R, variance=1.0,
                                   pixel_scale=PIX, weight_sigma=3.0, n_resamples=0)
        assert np.isfinite(metrics["psnr"]) and np.isfinite(metrics["size_rel_error"])
    with pytest.raises(ValueError, match="positive weighted flux"):
        shape_errors(t, np.zeros_like(t), PIX, 3.0)


def test_ssim_is_wang_et_al_2004_with_its_gaussian_window():
    """Wang et al. 2004, eqs. 13 and 15-16, Sec. III-C: local means, variances and covariance under an 11x11
    Gaussian window of sd 1.5 (the paper's, not skimage's default 7x7 uniform one), C1 = (0.01 R)^2,
    C2 = (0.03 R)^2, the map's mean over the window positions inside the image."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    t = rng.random((2, 3, 48, 48))
    p = t + 0.1 * rng.normal(size=t.shape)
    R = np.array([2.0, 1.5, 3.0])

    def reference(x: np.ndarray, y: np.ndarray, r: float) -> float:
        c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
        w = lambda a: gaussian_filter(a, 1.5, truncate=3.5)  # noqa: E731 - radius 5: the 11x11 window
        mx, my = w(x), w(y)
        sxx, syy, sxy = w(x * x) - mx**2, w(y * y) - my**2, w(x * y) - mx * my
        s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        return float(s[5:-5, 5:-5].mean())

    want = [np.mean([reference(t[i, b], p[i, b], R[b]) for b in range(3)]) for i in range(2)]
    np.testing.assert_allclose(ssim(p, t, R), want, rtol=1e-10)


def test_a_track_too_small_for_the_ssim_window_is_refused():
    import yaml

    from skybench.tasks.enhance.config import EnhanceTrack
    from skybench.tracks import benchmarks_dir

    raw = yaml.safe_load((benchmarks_dir() / "enhance.yaml").read_text())
    with pytest.raises(ValueError, match="cutout.size 9: SSIM's 11x11 window"):
        EnhanceTrack.model_validate({**raw, "cutout": {**raw["cutout"], "size": 9}})


def test_image_metrics_in_chunks_are_the_metrics_of_the_whole_set(monkeypatch) -> None:
    """Scored a chunk at a time (the temporaries of a whole challenge set were ~6 GB outside any sandbox): the same
    per-image values and means, with per-pixel variances sliced with their images."""
    from skybench.tasks.enhance import metrics

    t = galaxy(7)
    p = t + np.random.default_rng(2).normal(0.0, 0.5, t.shape)
    kw = dict(stretch_low=LOW, stretch_high=HIGH, flux_range=R, pixel_scale=PIX, weight_sigma=1.0, n_resamples=50)
    variance = truth_variance(t, np.full((7, 3), 0.5), [1.0, 2.0, 3.0])
    whole, per = image_metrics(p, t, variance=variance, **kw)
    monkeypatch.setattr(metrics, "CHUNK", 3)
    chunked, per3 = image_metrics(p, t, variance=variance, **kw)
    assert whole == chunked
    for name, values in per.items():
        np.testing.assert_array_equal(per3[name], values)
    np.testing.assert_array_equal(per3["chi2"], chi2_per_pixel(p, t, variance))
