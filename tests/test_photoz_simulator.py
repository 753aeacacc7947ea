"""The galaxy simulator of the photo-z tracks: selection, photometry, sizes, images, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skybench.physics.backend import get_backend
from skybench.physics.sed import SDSS_BANDS, Photometry
from skybench.tasks.photoz.simulator import GalaxySimulator, magnitude_table
from skybench.tracks import load_track


@pytest.fixture(scope="module")
def sims() -> dict[str, GalaxySimulator]:
    be = get_backend("numpy")
    return {t: GalaxySimulator(load_track(t), be) for t in ("photoz-images", "photoz-catalog")}


@pytest.fixture(scope="module")
def chunk(sims) -> tuple[dict, pd.DataFrame]:
    return sims["photoz-images"].simulate(7, "train", 0, 24)


@pytest.fixture(scope="module")
def population(sims) -> pd.DataFrame:
    return sims["photoz-catalog"].simulate(11, "train", 0, 600)[1]


def test_tracks_share_the_population_and_differ_in_inputs():
    images, catalog = load_track("photoz-images"), load_track("photoz-catalog")
    pop_i, pop_c = dict(images.population), dict(catalog.population)
    assert pop_i.pop("features") == ["ebv_galactic"]
    assert pop_c.pop("features")[:5] == [f"mag_{b}" for b in SDSS_BANDS]
    assert pop_i == pop_c and images.survey == catalog.survey and images.profiles == catalog.profiles
    assert images.output == catalog.output and images.output.grid == (0.0011111, 0.3988889, 180)


def test_same_galaxies_in_both_tracks(sims, chunk):
    arrays, meta = chunk
    cat_arrays, cat_meta = sims["photoz-catalog"].simulate(7, "train", 0, 24)
    pd.testing.assert_frame_equal(meta, cat_meta)
    assert set(arrays) == {"images", "features"} and set(cat_arrays) == {"features"}
    assert arrays["images"].shape == (24, 5, 64, 64) and arrays["images"].dtype == np.float32
    np.testing.assert_array_equal(arrays["features"][:, 0], meta["ebv_galactic"].to_numpy(np.float32))
    np.testing.assert_array_equal(cat_arrays["features"][:, 2], meta["mag_r"].to_numpy(np.float32))


def test_objects_do_not_depend_on_the_chunking(sims, chunk):
    arrays, meta = chunk
    a1, m1 = sims["photoz-images"].simulate(7, "train", 0, 10)
    a2, m2 = sims["photoz-images"].simulate(7, "train", 10, 24)
    np.testing.assert_array_equal(np.concatenate([a1["images"], a2["images"]]), arrays["images"])
    pd.testing.assert_frame_equal(pd.concat([m1, m2], ignore_index=True), meta)


def test_petrosian_aperture_misses_what_the_literature_says():
    """Graham et al. 2005 (AJ 130, 1535): inside 2 R_P (1/eta = 0.2) a de Vaucouleurs profile misses 0.20 mag;
    Blanton et al. 2001 (AJ 121, 2358): the Petrosian flux is ~80% of a de Vaucouleurs, ~99% of an exponential."""
    from skybench.tasks.photoz.simulator import petrosian_deficit, petrosian_fraction

    assert -2.5 * np.log10(petrosian_fraction(4.0)) == pytest.approx(0.20, abs=0.006)
    assert petrosian_fraction(4.0) == pytest.approx(0.80, abs=0.035) and 0.985 < petrosian_fraction(1.0) < 1.0
    assert petrosian_fraction(2.0) < petrosian_fraction(1.0)  # more concentrated, more light outside
    np.testing.assert_allclose(petrosian_deficit(np.array([0.0, 1.0])),
                               -2.5 * np.log10([petrosian_fraction(1.0), petrosian_fraction(4.0)]))


def test_the_luminosity_function_is_blantons_in_the_band_shifted_r(sims):
    """Blanton et al. 2003 give the Schechter function in ^{0.1}r (r shifted to z = 0.1: M* = -20.44 + 5 log10 h,
    alpha = -1.05). A volume-limited subsample (z < 0.06, complete to M_0.1r < -19.6 whatever the SED: the cut is
    at M_0.1r ~ -19.2 there) follows it; and M_0.1r is, by its definition, the object's observed r at z = 0.1 less
    the distance modulus plus 2.5 log10(1.1) (its rest-frame band's own K-correction)."""
    from scipy.stats import kstest

    sim = sims["photoz-catalog"]
    m = sim.simulate(5, "train", 0, 6000)[1]
    p = sim.pop
    assert p.M_star == pytest.approx(-20.44 + 5 * np.log10(0.7), abs=0.005)
    vol = m[(m["z"] < 0.06) & (m["M_01r"] < -19.6)]["M_01r"].to_numpy()
    assert len(vol) > 300

    def cdf(M: np.ndarray) -> np.ndarray:  # the Schechter function in magnitudes, truncated to [-24, -19.6]
        grid = np.linspace(-24.0, -19.6, 4001)
        x = 10 ** (-0.4 * (grid - p.M_star))
        phi = x ** (p.alpha + 1) * np.exp(-x)
        c = np.concatenate([[0.0], np.cumsum((phi[1:] + phi[:-1]) / 2 * np.diff(grid))])
        return np.interp(M, grid, c / c[-1])

    assert kstest(vol, cdf).pvalue > 0.01
    shift = m["M_01r"] - m["M_r"]
    assert 0.1 < shift.median() < 0.4 and (shift >= 2.5 * np.log10(1.1) - 0.05).all()  # K_r(0.1) > 0 here
    one = m.iloc[:40]
    at01 = sim.photometry(one.assign(z=0.1, **{f"calib_{b}": 0.0 for b in SDSS_BANDS}, ebv_galactic=0.0))
    dm01 = float(np.interp(0.1, sim.z_grid, sim.dm_grid))
    np.testing.assert_allclose(at01["mag_true_r"] - at01["M_r"] - dm01 + 2.5 * np.log10(1.1),
                               at01["M_01r"] - at01["M_r"], atol=1e-9)


def test_mgs_like_selection(population):
    m = population
    petro = m["mag_true_r"] + m["petrosian_deficit_r"]
    assert np.all(petro <= 17.77 + 1e-6)  # the MGS cut, Petrosian r < 17.77, holds for the true magnitudes
    assert petro.max() > 17.7 and m["mag_true_r"].max() < 17.77 - 0.006  # catalogue (model) mags are brighter
    red = m["red_sequence"] == 1
    assert m.loc[red, "petrosian_deficit_r"].median() > m.loc[~red, "petrosian_deficit_r"].median() + 0.08
    assert np.all((m["z"] > 0) & (m["z"] < 0.4))
    assert 0.06 < np.median(m["z"]) < 0.13  # MGS: median z ~ 0.1
    assert np.mean(m["z"] > 0.25) < 0.05
    assert np.all((m["M_r"] >= -24) & (m["M_r"] <= -16))
    # realistic errors: the real MGS's median err_r is 0.005 mag (photon statistics), err_u ~10x larger
    assert 0.003 < np.median(m["err_r"]) < 0.01 and np.median(m["err_u"]) > 5 * np.median(m["err_r"])


def test_quoted_errors_come_from_the_measured_flux(sims, population):
    """A catalogue's errors are estimated from the flux it measured; from the noise-free flux they would hand a model
    the true magnitudes the noise hides. The noise itself has the true error model's sd (err_meas)."""
    m, sim = population, sims["photoz-catalog"]
    t = sim.total_time
    for i, b in enumerate(SDSS_BANDS):
        flux, sd = m[f"flux_{b}"].to_numpy(), m[f"err_meas_{b}"].to_numpy()
        offset = m[f"mag_{b}"] - m[f"mag_true_{b}"] - m[f"calib_{b}"] - sim.pop.sdss_minus_ab[i]  # the noise drawn
        sky = (sd * flux / (2.5 / np.log(10))) ** 2 - flux / t[i]  # sigma_m = 1.0857 sigma_F / F, less Poisson
        measured = flux * 10 ** (-0.4 * offset.to_numpy())
        quoted = 2.5 / np.log(10) * np.sqrt(measured / t[i] + sky) / measured
        np.testing.assert_allclose(m[f"err_{b}"], quoted, rtol=1e-9)  # photon statistics only, as SDSS quotes
        pull = offset / sd
        assert abs(pull.mean()) < 0.15 and abs(pull.std() - 1) < 0.1, (b, pull.mean(), pull.std())
    # where the noise matters (u), a galaxy measured fainter than it is quotes a larger error
    u_offset = m["mag_u"] - m["mag_true_u"] - m["calib_u"] - sim.pop.sdss_minus_ab[0]
    assert np.corrcoef(u_offset, m["err_u"] / m["err_meas_u"])[0, 1] > 0.5


def test_every_parameter_is_in_the_metadata(chunk):
    meta = chunk[1]
    for col in ("seed", "z", "M_r", "bulge_fraction", "disk_type", "ebv_internal", "ebv_galactic", "bulge_R_kpc",
                "disk_R_kpc", "bulge_R_sersic", "disk_R_sersic", "bulge_e1", "disk_e2", "center_x", "D_A_kpc", "u_M",
                "bulge_young_fraction", "metal_rich", "burst", "uv_repair", "red_sequence",
                *(f"{k}_{b}" for k in ("mag", "mag_true", "mag_obs_true", "err", "err_meas", "calib", "flux",
                                       "bulge_share") for b in SDSS_BANDS)):
        assert col in meta, col


def test_a_colour_magnitude_relation_makes_brighter_galaxies_redder(population):
    """Component.luminosity_slope: a parameter moves by its slope per magnitude brighter than M_r = -21. Without one a
    population's colours do not depend on luminosity, where the real MGS's do: its red galaxies at z 0.06-0.10 have
    g-r 0.83 at M_r ~ -20.2 and 0.89 at -22.2 (the simulated ones, before: 0.82 and 0.85)."""
    from skybench.tasks.photoz.config import Component

    t = load_track("photoz-catalog")
    red_seq = t.population.red_sequence.model_copy(update={"luminosity_slope": {"metal_rich": 0.1}})
    steep = t.model_copy(update={"population": t.population.model_copy(update={"red_sequence": red_seq})})
    m = GalaxySimulator(steep, get_backend("numpy")).simulate(11, "train", 0, 600)[1]
    red = m["red_sequence"].to_numpy() == 1
    np.testing.assert_array_equal(red, population["red_sequence"].to_numpy() == 1)  # the same galaxies
    shift = (m["metal_rich"] - population["metal_rich"]).to_numpy()
    assert np.all(shift[~red] == 0) and np.corrcoef(shift[red], -m["M_r"][red])[0, 1] > 0.9
    g_r = (m["mag_true_g"] - m["mag_true_r"] - population["mag_true_g"] + population["mag_true_r"]).to_numpy()
    bright = red & (m["M_r"].to_numpy() < -21.5)
    assert np.median(g_r[bright]) > 0.01 and np.corrcoef(g_r[red], -m["M_r"][red])[0, 1] > 0.8
    with pytest.raises(ValueError, match="unknown parameters"):
        Component.model_validate({**red_seq.model_dump(), "luminosity_slope": {"colour": 0.1}})


def test_magnitudes_follow_the_sed(sims, chunk):
    """Re-derive one galaxy's magnitudes from the direct integral (no table) and its recorded parameters."""
    meta = chunk[1]
    sim = sims["photoz-images"]
    phot = Photometry()
    row = meta.iloc[3]
    w_disk = sim._disk_weights(np.array([row["disk_type"]]), np.array([row["burst"]]))
    fb = row["bulge_fraction"]
    w_bulge = sim._bulge_weights(np.array([row["bulge_young_fraction"]]), np.array([row["metal_rich"]]),
                                 np.array([row["uv_repair"]]))
    bulge = phot.maggies([row["z"]], w_bulge)[0] / phot.maggies([0.0], w_bulge)[0][2]
    disk = (phot.maggies([row["z"]], w_disk, [row["ebv_internal"]])[0]
            / phot.maggies([0.0], w_disk, [row["ebv_internal"]])[0][2])
    mags = row["M_r"] + row["distmod"] - 2.5 * np.log10(fb * bulge + (1 - fb) * disk)
    np.testing.assert_allclose([row[f"mag_true_{b}"] for b in SDSS_BANDS], mags, atol=1e-3)
    assert magnitude_table() is sim.phot


def test_sizes_shrink_with_distance(population):
    m = population
    # angle = physical size / angular-diameter distance
    np.testing.assert_allclose(m["disk_R_sersic"], m["disk_R_kpc"] / m["D_A_kpc"] * 206264.806, rtol=1e-9)
    near, far = m["z"] < np.percentile(m["z"], 25), m["z"] > np.percentile(m["z"], 75)
    assert np.median(m["disk_R_sersic"][near]) > 1.5 * np.median(m["disk_R_sersic"][far])
    # the angular size carries redshift information beyond the magnitude: at fixed r, larger -> closer
    bright = m[(m["mag_r"] > 16.8) & (m["mag_r"] < 17.6)]  # the last 0.8 mag before the cut (model mags)
    rho = np.corrcoef(np.log(bright["disk_R_sersic"]), bright["z"])[0, 1]
    assert rho < -0.3


def test_images_hold_the_catalogue_flux_and_dimming(sims, chunk):
    arrays, meta = chunk
    sim = sims["photoz-images"]
    model = sim.backend.to_numpy(sim.render(meta))
    total = model.sum(axis=(2, 3))
    flux = meta[[f"flux_{b}" for b in SDSS_BANDS]].to_numpy()
    # galaxies well inside the 25" frame (an n = 4 bulge has ~5% of its light beyond 12 R_e)
    small = ((meta["disk_R_sersic"] < 3.0) & (meta["bulge_R_sersic"] < 1.0)).to_numpy()
    assert small.sum() >= 2  # 2 of the 24 with the two-population sizes (issue 20)
    np.testing.assert_allclose(total[small], flux[small], rtol=0.08)
    # the noise: background + Poisson, as the renderer adds it
    resid = arrays["images"] - model
    corner = resid[:, :, :8, :8].std(axis=(0, 2, 3))
    np.testing.assert_allclose(corner, sim.renderer.sigma_bkg, rtol=0.1)
    # surface brightness = flux / area with flux ~ 10^(-0.4 (M + DM)) = L / D_L^2 (before K-correction and
    # extinction) and area ~ (R / D_A)^2: the (1+z)^-4 dimming at fixed luminosity and physical size
    sb = 10 ** (-0.4 * (meta["M_r"] + meta["distmod"])) / meta["disk_R_sersic"] ** 2
    lum_size = 10 ** (-0.4 * meta["M_r"]) / meta["disk_R_kpc"] ** 2
    ratio = np.log10(sb / lum_size) + 4 * np.log10(1 + meta["z"])
    assert np.ptp(ratio) < 1e-3  # constant (up to the interpolation of the distance tables)
