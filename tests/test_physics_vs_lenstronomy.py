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


def test_psf_kernel_is_normalised_and_has_the_requested_fwhm():
    k = psf.gaussian_kernel_1d(0.7, 0.05)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    x = np.arange(len(k)) - len(k) // 2
    sigma_pix = np.sqrt(np.sum(k * x**2) - (1 / 12))  # pixel integration adds a 1/12 variance
    assert sigma_pix * 2.3548 * 0.05 == pytest.approx(0.7, rel=1e-3)
