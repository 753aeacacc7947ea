"""Synthetic SDSS photometry of the CWW and Blanton & Roweis 2007 templates against speclite's own AB magnitudes."""

from __future__ import annotations

import numpy as np
import pytest

from skybench.physics.sed import (
    BR07_TEMPLATES,
    CWW_TEMPLATES,
    SDSS_BANDS,
    TEMPLATES,
    UV_FIX_MAG,
    MagnitudeTable,
    Photometry,
    calzetti_k,
    load_template,
    one_hot,
    sdss_filters,
)


@pytest.fixture(scope="module")
def phot() -> Photometry:
    return Photometry()


def speclite_mags(template: str, z: float, ebv_internal: float = 0.0) -> np.ndarray:
    """speclite ``get_ab_magnitudes`` of the template redshifted to z: f_obs(lambda (1+z)) = f_rest(lambda) / (1+z),
    tabulated densely (0.5 A; speclite integrates the trapezoid on the nodes it is given)."""
    w, f = load_template(template)
    f = f * 10 ** (-0.4 * calzetti_k(w) * ebv_internal)
    wave = np.arange(2500.25, 12000.0, 0.5)
    flux = np.interp(wave, w * (1 + z), f / (1 + z))
    table = sdss_filters().get_ab_magnitudes(flux, wave)
    return np.array([table[f"sdss2010-{b}"][0] for b in SDSS_BANDS])


@pytest.mark.parametrize("template", CWW_TEMPLATES)
@pytest.mark.parametrize("z", [0.0, 0.07, 0.18, 0.33, 0.4])
def test_magnitudes_match_speclite(phot, template, z):
    ours = phot.magnitudes([z], one_hot(template))[0]
    assert np.max(np.abs(ours - speclite_mags(template, z))) < 1e-3


@pytest.mark.parametrize("template", BR07_TEMPLATES)
def test_kcorrect_templates_match_speclite(phot, template):
    """The Blanton & Roweis 2007 templates (read from the kcorrect package's data) through the same photometry."""
    for z in (0.0, 0.15):
        ours = phot.magnitudes([z], one_hot(template))[0]
        assert np.max(np.abs(ours - speclite_mags(template, z))) < 1e-3


def test_kcorrect_templates_are_what_their_file_says():
    """BR07_3 (old) is the red-sequence template, BR07_2 and BR07_4 (young) bluer, BR07_0 the reddest; BR07_1 (the
    burst) has strong emission lines: H-alpha + [NII] make r - i < -0.3 at z = 0 and leave r for i by z = 0.1 (r - i
    rises by > 0.4), while the old template's r - i moves by < 0.1."""
    phot = Photometry()
    m = {t: phot.magnitudes([0.0, 0.1], np.tile(one_hot(t), (2, 1))) for t in BR07_TEMPLATES}
    g_r = {t: m[t][0, 1] - m[t][0, 2] for t in BR07_TEMPLATES}
    assert g_r["BR07_0"] > g_r["BR07_3"] > 0.6 > g_r["BR07_2"] > g_r["BR07_4"]
    r_i = {t: m[t][:, 2] - m[t][:, 3] for t in BR07_TEMPLATES}
    assert r_i["BR07_1"][0] < -0.3 and r_i["BR07_1"][1] > r_i["BR07_1"][0] + 0.4
    assert abs(r_i["BR07_3"][1] - r_i["BR07_3"][0]) < 0.1
    wave, flux = load_template("BR07_3")
    assert wave[0] < 1000 and wave[-1] > 30000 and np.all(np.diff(wave) > 0) and np.all(flux >= 0)


def test_reddened_mixture_matches_speclite(phot):
    # a reddened single template (the internal attenuation is applied in the rest frame)
    ours = phot.magnitudes([0.12], one_hot("Sbc"), ebv_internal=[0.2])[0]
    assert np.max(np.abs(ours - speclite_mags("Sbc", 0.12, 0.2))) < 1e-3
    # a mixture is the sum of the fluxes: 10^(-0.4 m) adds
    w = 0.3 * one_hot("E") + 0.7 * one_hot("Sbc")
    mix = phot.maggies([0.2], w)[0]
    parts = 0.3 * 10 ** (-0.4 * speclite_mags("E", 0.2)) + 0.7 * 10 ** (-0.4 * speclite_mags("Sbc", 0.2))
    assert np.max(np.abs(-2.5 * np.log10(mix) + 2.5 * np.log10(parts))) < 1e-3


def test_colours_redden_with_redshift_and_type(phot):
    m = {t: phot.magnitudes([0.0, 0.3], np.tile(one_hot(t), (2, 1))) for t in CWW_TEMPLATES}
    g_r = {t: m[t][:, 1] - m[t][:, 2] for t in CWW_TEMPLATES}
    assert g_r["E"][0] > g_r["Sbc"][0] > g_r["Scd"][0] > g_r["Im"][0]  # early types are redder
    assert g_r["E"][1] > g_r["E"][0] + 0.3  # the 4000 A break moves from g into r


def test_galactic_extinction_is_r_times_ebv(phot):
    clean = phot.magnitudes([0.1], one_hot("E"))[0]
    dusty = phot.magnitudes([0.1], one_hot("E"), ebv_galactic=[0.1])[0]
    np.testing.assert_allclose(dusty - clean, [0.4239, 0.3303, 0.2285, 0.1698, 0.1263], atol=1e-9)


def test_calzetti_curve_values():
    # Calzetti et al. 2000: k(V = 5500 A) ~ R_V = 4.05 and k rises to the blue
    assert calzetti_k(np.array([5500.0]))[0] == pytest.approx(4.05, abs=0.02)
    assert calzetti_k(np.array([3000.0]))[0] > calzetti_k(np.array([8000.0]))[0]


def test_magnitude_table_matches_direct_integration(phot):
    table = MagnitudeTable(phot)
    rng = np.random.default_rng(1)
    z, w, e = rng.uniform(0, 0.44, 200), rng.dirichlet(np.ones(len(TEMPLATES)), 200), rng.uniform(0, 0.3, 200)
    assert np.max(np.abs(table.magnitudes(z, w, e) - phot.magnitudes(z, w, e))) < 1e-3
    with pytest.raises(ValueError, match="outside the table"):
        table.magnitudes([0.6], one_hot("E"), [0.0])


def test_uv_repaired_elliptical_is_dimmer_below_the_4000_break_only(phot):
    """E_uvfix: E dimmed by up to UV_FIX_MAG below 3900 A (rest); at z = 0 u is dimmed, g barely, r, i, z not."""
    e, fix = phot.magnitudes([0.0], one_hot("E"))[0], phot.magnitudes([0.0], one_hot("E_uvfix"))[0]
    assert 0.4 * UV_FIX_MAG < fix[0] - e[0] < UV_FIX_MAG
    assert 0 < fix[1] - e[1] < 1e-3
    np.testing.assert_allclose(fix[2:], e[2:], atol=1e-9)
