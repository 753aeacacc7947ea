"""Our batched physics against lenstronomy, the independent reference (lenstronomy 1.14 conventions)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skybench.physics import light, noise, psf
from skybench.physics.lens_mass import shear_deflection, sie_deflection

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.LightModel.light_model import LightModel  # noqa: E402

coord = st.floats(-5, 5)


def _grid(n=25, scale=0.2):
    c = (np.arange(n) - (n - 1) / 2) * scale
    return np.meshgrid(c, c)


def test_sie_check_value_from_reference_sheet():
    ax, ay = sie_deflection(np.array([1.0]), np.array([0.5]), 1.0, 0.1, 0.0, 0.0, 0.0)
    assert ax[0] == pytest.approx(0.84976, abs=1e-5) and ay[0] == pytest.approx(0.48662, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(theta_E=st.floats(0.2, 3), e1=st.floats(-0.4, 0.4), e2=st.floats(-0.4, 0.4), cx=st.floats(-0.3, 0.3),
       cy=st.floats(-0.3, 0.3), g1=st.floats(-0.1, 0.1), g2=st.floats(-0.1, 0.1))
def test_sie_plus_shear_deflection_matches_lenstronomy_to_1e6(theta_E, e1, e2, cx, cy, g1, g2):
    x, y = _grid()
    lm = LensModel(["SIE", "SHEAR"])
    kw = [dict(theta_E=theta_E, e1=e1, e2=e2, center_x=cx, center_y=cy), dict(gamma1=g1, gamma2=g2)]
    ref_x, ref_y = lm.alpha(x, y, kw)
    ax, ay = sie_deflection(x, y, theta_E, e1, e2, cx, cy)
    sx, sy = shear_deflection(x, y, g1, g2)
    np.testing.assert_allclose(ax + sx, ref_x, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ay + sy, ref_y, atol=1e-6, rtol=0)


def test_sie_is_batched_over_objects():
    x, y = _grid()
    thetas = np.array([0.5, 1.0, 2.0])[:, None, None]
    ax, _ = sie_deflection(x[None], y[None], thetas, 0.1, -0.2, 0.0, 0.1)
    for k, t in enumerate(thetas.ravel()):
        one, _ = sie_deflection(x, y, t, 0.1, -0.2, 0.0, 0.1)
        np.testing.assert_allclose(ax[k], one, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(amp=st.floats(0.1, 10), R=st.floats(0.05, 2), n=st.floats(0.5, 6), e1=st.floats(-0.4, 0.4),
       e2=st.floats(-0.4, 0.4), cx=st.floats(-0.5, 0.5), cy=st.floats(-0.5, 0.5))
def test_sersic_ellipse_matches_lenstronomy(amp, R, n, e1, e2, cx, cy):
    x, y = _grid()
    ref = LightModel(["SERSIC_ELLIPSE"]).surface_brightness(
        x, y, [dict(amp=amp, R_sersic=R, n_sersic=n, e1=e1, e2=e2, center_x=cx, center_y=cy)])
    ours = light.sersic_ellipse(x, y, amp, R, n, e1, e2, cx, cy)
    np.testing.assert_allclose(ours, ref.reshape(x.shape), rtol=1e-9, atol=1e-12 * amp)


def test_sersic_total_flux_matches_lenstronomy():
    lm = LightModel(["SERSIC_ELLIPSE"])
    kw = dict(amp=3.0, R_sersic=0.7, n_sersic=3.2, e1=0.2, e2=-0.1, center_x=0, center_y=0)
    assert light.sersic_total_flux(3.0, 0.7, 3.2) == pytest.approx(lm.total_flux([kw])[0], rel=1e-12)


def test_gaussian_ellipse_matches_lenstronomy():
    x, y = _grid()
    kw = dict(amp=2.0, sigma=0.4, e1=0.3, e2=0.1, center_x=0.2, center_y=-0.1)
    ref = LightModel(["GAUSSIAN_ELLIPSE"]).surface_brightness(x, y, [kw])
    np.testing.assert_allclose(light.gaussian_ellipse(x, y, **kw), ref.reshape(x.shape), rtol=1e-10)


def test_background_sigma_matches_lenstronomy_data_util():
    from lenstronomy.Util import data_util

    ours = noise.background_sigma(10.0, 15.0, 46, 21.2, 28.13, 0.2)
    ref = data_util.bkg_noise(10.0, 15.0, data_util.magnitude2cps(21.2, 28.13), 0.2, num_exposures=46)
    assert ours == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize(("fwhm", "scale"), [(0.7, 0.05), (0.18, 0.1), (0.71, 0.2), (1.4, 0.396)])
def test_psf_kernel_is_lenstronomys_gaussian_kernel(fwhm, scale):
    """Sampled at pixel centres, as lenstronomy's GAUSSIAN PSF (a pixel-integrated kernel blurred VIS's 0.18" PSF
    to 0.189" on the pixel-averaged image: a second pixel box)."""
    from lenstronomy.Util import kernel_util

    k = psf.gaussian_kernel_1d(fwhm, scale)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(np.outer(k, k), kernel_util.kernel_gaussian(len(k), scale, fwhm), rtol=1e-9, atol=1e-15)
    x = np.arange(len(k)) - len(k) // 2
    if fwhm / scale > 3:  # well sampled: the discrete variance is the Gaussian's
        assert np.sqrt(np.sum(k * x**2)) * 2.3548 * scale == pytest.approx(fwhm, rel=1e-3)


def test_batched_ray_shooting_matches_lenstronomy():
    """The renderer's lens equation (quadratic form as a matrix product, outer sums, float32 arctan)."""
    from skybench.physics.lens_mass import sie_shear_ray_shoot

    rng = np.random.default_rng(3)
    xs = (np.arange(60) - 29.5) * 0.1
    kw = dict(theta_E=rng.uniform(0.3, 2.5, 4), e1=rng.uniform(-0.4, 0.4, 4), e2=rng.uniform(-0.4, 0.4, 4),
              center_x=rng.normal(0, 0.1, 4), center_y=rng.normal(0, 0.1, 4), gamma1=rng.uniform(-0.1, 0.1, 4),
              gamma2=rng.uniform(-0.1, 0.1, 4))
    ox, oy = rng.normal(0, 1, 4), rng.normal(0, 1, 4)
    x, y = np.meshgrid(xs, xs)
    lm = LensModel(["SIE", "SHEAR"])
    for dtype, tol in ((np.float64, 1e-6), (np.float32, 1e-5)):
        bx, by = sie_shear_ray_shoot(xs, xs, np.empty(1, dtype), **kw, origin_x=ox, origin_y=oy)
        assert bx.dtype == dtype
        for b in range(4):
            ref_x, ref_y = lm.ray_shooting(x, y, [{k: kw[k][b] for k in list(kw)[:5]},
                                                  dict(gamma1=kw["gamma1"][b], gamma2=kw["gamma2"][b])])
            np.testing.assert_allclose(bx[b], ref_x - ox[b], atol=tol, rtol=0)
            np.testing.assert_allclose(by[b], ref_y - oy[b], atol=tol, rtol=0)


def test_renderer_profiles_equal_the_light_functions():
    """Renderer.sersic and .gaussian (radius as one matrix product over the grid) against light.py; Renderer.bin."""
    from skybench.physics.backend import Backend
    from skybench.physics.render import Renderer
    from skybench.tracks import load_track

    bands = load_track("lens-space").survey.bands
    args = dict(e1=np.array([0.3, -0.2]), e2=np.array([0.1, 0.25]), center_x=np.array([0.03, 2.1]),
                center_y=np.array([-0.04, -1.3]))
    col = {k: v[:, None, None] for k, v in args.items()}
    for dtype, rtol in ((np.float64, 1e-9), (np.float32, 2e-5)):
        r = Renderer(21, 0.1, 2, bands, Backend("numpy", "cpu", dtype), 0)
        x, y = np.asarray(r.x, np.float64), np.asarray(r.y, np.float64)
        R, n, sigma = np.array([0.4, 0.15]), np.array([4.0, 0.8]), np.array([0.3, 0.05])
        ours = r.sersic(R, n, **args)
        ref = light.sersic_ellipse(x, y, 1.0, R[:, None, None], n[:, None, None], *col.values())
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * ref.max())
        ours = r.gaussian(sigma, **args)
        ref = light.gaussian_ellipse(x, y, 1.0, sigma[:, None, None], *col.values())
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * ref.max())
        sb = np.random.default_rng(0).random((3, 42, 42)).astype(dtype)
        ref = sb.reshape(3, 21, 2, 21, 2).mean(axis=(2, 4)) * 0.1**2
        np.testing.assert_allclose(r.bin(sb), ref, rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_renderer_integrates_steep_sersic_cores_to_1_percent(backend):
    """Renderer.image's peak pixel against the pixel integral of lenstronomy's SERSIC (scipy quadrature in polar
    coordinates over the pixel's 8 triangles, centre on a pixel centre): the supersampling-2 grid alone is 12-62%
    low for n = 4..8; the nested core grids bring it within 1% for n <= 8, R_sersic >= pixel / 4."""
    from scipy import integrate

    from skybench.physics.backend import get_backend
    from skybench.physics.render import Renderer
    from skybench.tracks import CORE_LEVELS, load_track

    if backend != "numpy":
        pytest.importorskip("torch")
    from lenstronomy.LightModel.Profiles.sersic import SersicElliptic

    def pixel_integral(R: float, n: float, pix: float) -> float:
        def f(r: float) -> float:
            return float(SersicElliptic().function(r, 0.0, 1.0, R, n, 0.0, 0.0))
        return 8 * integrate.quad(lambda t: integrate.quad(lambda r: f(r) * r, 0, pix / 2 / np.cos(t), limit=200,
                                                           points=[R * 1e-3, R * 1e-2, R * 0.1])[0],
                                  0, np.pi / 4, limit=200)[0]

    bands = load_track("lens-space").survey.bands
    for pix in (0.1, 0.2):
        r = Renderer(15, pix, 2, bands, get_backend(backend), CORE_LEVELS)
        R, n = np.array([pix / 4, 0.4, 1.0, pix / 4, 0.4, 1.0]), np.array([4.0, 4.0, 4.0, 8.0, 8.0, 8.0])
        zero = np.zeros(len(R))
        peak = r.backend.to_numpy(r.image("sersic", R, n, zero, zero, zero, zero))[:, 7, 7]
        ref = np.array([pixel_integral(a, b, pix) for a, b in zip(R, n, strict=True)])
        np.testing.assert_allclose(peak, ref, rtol=0.01)


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_cuspy_cores_through_the_psf_match_lenstronomys_supersampled_convolution(backend):
    """Sersic n = 4 cores (R 0.03-0.05", centred on a pixel and off-centre elliptical) through lens-space's PSF
    (0.18" at 0.1"/px) against lenstronomy's regular render at supersampling 128 convolved on that grid
    (supersampling_convolution=True, the kernel sampled there), binned. Within 0.5% of the peak: the rest is the
    2x grid outside the cores (~1% low in the wings of so compact a profile); the PSF sampled at pixel centres
    (the renderer before its cores were blurred from their cells) was 12-15% high."""
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.Util import kernel_util

    from skybench.physics.backend import get_backend
    from skybench.physics.render import Renderer
    from skybench.tracks import CORE_LEVELS, load_track

    n, pix, S, fwhm = 15, 0.1, 128, 0.18
    bands = load_track("lens-space").survey.bands
    assert [b.seeing for b in bands] == [fwhm]
    half = (n - 1) / 2 * pix
    # centred, off-centre elliptical, at the frame's edge (its patch clipped: the x and y tapers were swapped, 6.7e-3
    # of the peak off) and 1 px in at a corner (9.1e-3)
    cases = [dict(R_sersic=0.05, n_sersic=4.0, e1=0.0, e2=0.0, center_x=0.0, center_y=0.0),
             dict(R_sersic=0.03, n_sersic=4.0, e1=0.1, e2=-0.05, center_x=0.013, center_y=-0.021),
             dict(R_sersic=0.05, n_sersic=4.0, e1=0.0, e2=0.0, center_x=-half + 0.02, center_y=0.0),
             dict(R_sersic=0.05, n_sersic=4.0, e1=0.05, e2=0.0, center_x=-half + 0.1, center_y=half - 0.1)]
    r = Renderer(n, pix, 2, bands, get_backend(backend), CORE_LEVELS)
    img, cores = r.image_cores("sersic", *(np.array([c[k] for c in cases]) for k in cases[0]))
    ours = r.backend.to_numpy(r.convolve(img[:, None], [(cores, np.ones((len(cases), 1)),
                                                         np.arange(len(cases)))]))[:, 0]
    # a round core on row 7 blurs symmetrically about it, at the edge too
    assert np.abs(ours[2, :7] - ours[2, 8:][::-1]).max() < 5e-4 * ours[2].max()
    data = ImageData(image_data=np.zeros((n, n)), transform_pix2angle=np.eye(2) * pix, ra_at_xy_0=-half,
                     dec_at_xy_0=-half)
    size = 2 * int(np.ceil(5 * fwhm / 2.3548200450309493 / pix * S)) + 1  # 5 sigma, as psf.gaussian_kernel_1d
    kernel = kernel_util.kernel_gaussian(size, pix / S, fwhm)
    psf_ = PSF(psf_type="PIXEL", kernel_point_source=kernel, point_source_supersampling_factor=S)
    model = ImageModel(data, psf_, lens_light_model_class=LightModel(["SERSIC_ELLIPSE"]),
                       kwargs_numerics=dict(supersampling_factor=S, supersampling_convolution=True,
                                            supersampling_kernel_size=n))
    for k, kw in enumerate(cases):
        ref = model.image(kwargs_lens_light=[dict(amp=1.0, **kw)])
        assert np.abs(ours[k] - ref).max() < 5e-3 * ref.max(), k


def test_float32_kernels():
    from skybench.physics import kernels

    u = np.concatenate([np.linspace(-50, 50, 200001), np.logspace(-30, 17, 2001), -np.logspace(-30, 17, 2001),
                        [0.0, np.inf, -np.inf, 3e38]]).astype(np.float32)
    a = u.copy()
    kernels.atan_(a)
    ref = np.arctan(u.astype(np.float64))
    np.testing.assert_allclose(a, ref, rtol=5e-7, atol=1e-37)
    v = np.array([-np.inf, -3.0, -0.0, 0.0, 1e-40, 1e-9, 0.5, 2.0, np.inf], np.float32)[None]
    for low in (1e-8, 0.7):
        expected = np.maximum(v, low).astype(np.float32)
        np.testing.assert_array_equal(kernels.clamp_min_(v.copy(), np.array([[low]])), expected)
    out = np.empty((2, 3, 4), np.float32)
    cols, rows = np.arange(6.0).reshape(2, 3), np.arange(8.0).reshape(2, 4) * 10
    np.testing.assert_array_equal(kernels.outer_sum(cols, rows, out), cols[:, :, None] + rows[:, None, :])


def test_einstein_radius_is_the_area_inside_lenstronomys_critical_curve():
    """R_ein = sqrt(A_ein / pi) (Metcalf et al. 2019), the lens simulator's ``lens_r_ein``: the area inside the
    tangential critical curve that lenstronomy traces for the SIE + shear of sampled objects (theta_E differs from
    it by up to ~1.5% with the tracks' shear)."""
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LensModel.lens_model_extensions import LensModelExtensions

    from skybench.physics.backend import get_backend
    from skybench.tasks.lens.simulator import LensSimulator
    from skybench.tracks import load_track

    sim = LensSimulator(load_track("lens-space"), get_backend("numpy"))
    ext = LensModelExtensions(LensModel(["SIE", "SHEAR"]))
    for seed in range(5):
        row = sim.sample(seed)
        t = row["lens_theta_E"]
        kw = [dict(theta_E=t, e1=row["lens_e1"], e2=row["lens_e2"], center_x=0, center_y=0),
              dict(gamma1=row["shear_gamma1"], gamma2=row["shear_gamma2"], ra_0=0, dec_0=0)]
        ra, dec, _, _ = ext.critical_curve_caustics(kw, compute_window=8 * t, grid_scale=t / 200)
        area = max(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) for x, y in zip(ra, dec, strict=True))
        assert row["lens_r_ein"] == pytest.approx(np.sqrt(area / np.pi), rel=1e-5), seed
