"""The weak-lensing map simulator (generate task) against independent references: pyccl's C_l evaluated at the
map's own Fourier modes, a Limber integral written here from pyccl's distances and P(k), cosmic variance, and
the analytic shifted-lognormal one-point distribution."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TORCH_BACKEND
from pydantic import ValidationError
from scipy import stats
from scipy.integrate import quad, trapezoid

pytest.importorskip("pyccl")

from skybench.tasks.generate.config import MapPopulation, SourcePlane, kappa0_hilbert2011  # noqa: E402
from skybench.tasks.generate.metrics import bin_grid, ell_bins, ell_of_modes, power_spectrum  # noqa: E402
from skybench.tasks.generate.simulator import MapSimulator, ccl_cosmology, convergence_cl  # noqa: E402

N_PIX, SIZE = 64, 3.5
SMAIL = {"kind": "smail", "z0": 0.5, "alpha": 2.0, "beta": 1.5}


def population(**kw) -> MapPopulation:
    return MapPopulation.model_validate({"sources": SMAIL, "n_pix": N_PIX, "size_deg": SIZE, **kw})


@pytest.fixture(scope="module")
def cl_at_modes() -> np.ndarray:
    """pyccl's C_l at every |l| of the 64x64 map's rfft2 modes (not the simulator's interpolation table)."""
    pop = population()
    ell = ell_of_modes(N_PIX, SIZE)
    uniq, inv = np.unique(ell[ell > 0], return_inverse=True)
    out = np.zeros_like(ell)
    out[ell > 0] = convergence_cl(pop.cosmology, pop.sources, uniq)[inv]
    return out


def gaussian_cosmic_variance_chi2(maps: np.ndarray, power: np.ndarray) -> tuple[float, int]:
    """chi^2 of the maps' mean binned C_l against the binned expectation ``power`` (rfft2 grid), with the exact
    Gaussian variance: each bin's estimate is a mean of |kappa_l|^2 over pairs (l, -l), each C_l * Exp(1)."""
    edges = ell_bins(N_PIX, SIZE, 10)
    measured = power_spectrum(maps, SIZE, edges).cl
    expected, n_modes = bin_grid(power, N_PIX, SIZE, edges)
    mean_sq, _ = bin_grid(power**2, N_PIX, SIZE, edges)
    var_one_map = 2 * mean_sq / n_modes  # (4 / N^2) sum_pairs C^2 = (2 / N^2) sum_modes C^2
    chi2 = float(np.sum((measured.mean(0) - expected) ** 2 / (var_one_map / len(maps))))
    return chi2, len(expected)


def test_gaussian_maps_have_pyccl_cl_within_cosmic_variance(cl_at_modes):
    maps = MapSimulator(population(lognormal_shift=None), "numpy").simulate(range(32))
    chi2, dof = gaussian_cosmic_variance_chi2(maps, cl_at_modes)
    assert stats.chi2.sf(chi2, dof) > 1e-3, f"chi2 = {chi2:.1f} for {dof} bins"
    # the test has the power to see a 5% normalisation error
    chi2_off, _ = gaussian_cosmic_variance_chi2(maps * np.sqrt(1.05), cl_at_modes)
    assert stats.chi2.sf(chi2_off, dof) < 1e-3


def test_noise_and_smoothing_enter_the_power_spectrum_as_stated(cl_at_modes):
    pop = population(lognormal_shift=None, sigma_e=0.26, n_gal=30.0, smoothing_fwhm_arcmin=6.0)
    maps = MapSimulator(pop, "numpy").simulate(range(32))
    pix_arcmin = SIZE * 60 / N_PIX
    noise_var = 0.26**2 / (30.0 * pix_arcmin**2)
    sigma = np.deg2rad(6.0 / 60) / np.sqrt(8 * np.log(2))
    ell = ell_of_modes(N_PIX, SIZE)
    expected = (cl_at_modes + noise_var * (np.deg2rad(SIZE) / N_PIX) ** 2) * np.exp(-((ell * sigma) ** 2))
    chi2, dof = gaussian_cosmic_variance_chi2(maps, expected)
    assert stats.chi2.sf(chi2, dof) > 1e-3, f"chi2 = {chi2:.1f} for {dof} bins"


def test_lognormal_maps_have_the_target_cl(cl_at_modes):
    sim = MapSimulator(population(), "numpy")
    # the exact grid mapping loses almost nothing to clipping negative Gaussian power
    nz = cl_at_modes > 0
    assert np.max(np.abs(sim.expected_power[nz] / cl_at_modes[nz] - 1)) < 1e-3
    maps = sim.simulate(range(64))
    edges = ell_bins(N_PIX, SIZE, 10)
    cl = power_spectrum(maps, SIZE, edges).cl
    target, _ = bin_grid(cl_at_modes, N_PIX, SIZE, edges)
    # non-Gaussian field: the per-bin variance from the maps themselves
    z2 = (cl.mean(0) - target) ** 2 / (cl.var(0, ddof=1) / len(cl))
    assert stats.chi2.sf(z2.sum(), len(z2)) > 1e-3, f"z^2 per bin {np.round(z2, 1)}"
    # and the maps are not Gaussian: positive skewness, nothing below -kappa0
    assert stats.skew(maps.ravel()) > 0.5
    assert maps.min() > -sim.kappa0


def test_lognormal_one_point_pdf_is_the_shifted_lognormal(cl_at_modes):
    sim = MapSimulator(population(), "numpy")
    # the fit averaged over n(z) (kappa is linear in n(z)), by quadrature; above its value at the mean z
    src = population().sources
    nz = lambda z: z**src.alpha * np.exp(-((z / src.z0) ** src.beta))  # noqa: E731
    norm = quad(nz, 0, src.z_max)[0]
    kappa0 = quad(lambda z: nz(z) * kappa0_hilbert2011(z), 0, src.z_max)[0] / norm
    mean_z = quad(lambda z: z * nz(z), 0, src.z_max)[0] / norm
    assert sim.kappa0 == pytest.approx(kappa0, rel=1e-3) and kappa0 > kappa0_hilbert2011(mean_z) * 1.03
    # sigma_g^2 = ln(1 + sigma_kappa^2 / kappa0^2), sigma_kappa^2 = sum over modes C_l / area
    weights = np.where(np.arange(N_PIX // 2 + 1) % (N_PIX // 2) == 0, 1.0, 2.0)  # rfft2 columns
    var_kappa = float((cl_at_modes * weights).sum() / np.deg2rad(SIZE) ** 2)
    s2 = np.log1p(var_kappa / kappa0**2)
    law = stats.lognorm(s=np.sqrt(s2), loc=-kappa0, scale=kappa0 * np.exp(-s2 / 2))
    n = 1500
    maps = sim.simulate(range(1000, 1000 + n))[:, 0]
    # one pixel per map (pixels of one map are correlated), at varying places
    samples = maps[np.arange(n), np.arange(n) % N_PIX, (7 * np.arange(n)) % N_PIX].astype(float)
    assert stats.kstest(samples, law.cdf).pvalue > 1e-3
    assert stats.kstest(samples, sim.pixel_cdf).pvalue > 1e-3
    # the same test rejects a Gaussian of the same variance
    assert stats.kstest(samples, stats.norm(scale=np.sqrt(var_kappa)).cdf).pvalue < 1e-3


def limber_convergence_cl(pop: MapPopulation, ell: np.ndarray) -> np.ndarray:
    """C_l = int dchi q(chi)^2 / chi^2 P_nl((l + 1/2) / chi, z(chi)), with the lensing efficiency
    q(chi) = 3/2 Omega_m (H0/c)^2 chi / a int_chi dchi' n(chi') (chi' - chi) / chi' (e.g. Kilbinger 2015,
    Rep. Prog. Phys. 78, 086901, eqs. 4 and 6), from pyccl's distances and non-linear P(k) only."""
    import pyccl

    c = ccl_cosmology(pop.cosmology)
    z_max = pop.sources.z_s if isinstance(pop.sources, SourcePlane) else pop.sources.z_max
    z = np.linspace(1e-3, z_max, 600)
    a = 1 / (1 + z)
    chi = pyccl.comoving_radial_distance(c, a)
    h0_c = pop.cosmology.h * 100 / 299792.458  # Mpc^-1
    if isinstance(pop.sources, SourcePlane):
        chi_s = pyccl.comoving_radial_distance(c, 1 / (1 + pop.sources.z_s))
        eff = np.clip(1 - chi / chi_s, 0, None)
    else:
        z_src, n_src = pop.sources.table()
        chi_src = pyccl.comoving_radial_distance(c, 1 / (1 + z_src))
        ratio = np.clip(1 - chi[:, None] / np.where(chi_src > 0, chi_src, np.inf)[None, :], 0, None)
        eff = trapezoid(n_src[None, :] * ratio, z_src, axis=1)
    q = 1.5 * pop.cosmology.Omega_m * h0_c**2 * chi / a * eff
    dchi_dz = np.gradient(chi, z)
    pk = np.array([pyccl.nonlin_matter_power(c, (ell + 0.5) / x, ai) for x, ai in zip(chi, a, strict=True)])
    out = trapezoid((q**2 / chi**2 * dchi_dz)[:, None] * pk, z, axis=0)
    # pyccl's convergence carries l(l+1)/(l+1/2)^2 per tracer (its Limber k = (l + 1/2) / chi)
    return out * (ell * (ell + 1) / (ell + 0.5) ** 2) ** 2


def test_pyccl_cl_agrees_with_an_independent_limber_integral():
    pop = population()
    ell = np.array([60.0, 200.0, 600.0, 2000.0, 6000.0])
    ours, ref = convergence_cl(pop.cosmology, pop.sources, ell), limber_convergence_cl(pop, ell)
    np.testing.assert_allclose(ours, ref, rtol=2e-3)
    # a single source plane (pyccl's CMBLensingTracer): the same integral with n(z) a spike
    plane = population(sources={"kind": "plane", "z_s": 1.0})
    np.testing.assert_allclose(convergence_cl(plane.cosmology, plane.sources, ell), limber_convergence_cl(plane, ell),
                               rtol=2e-3)


@pytest.mark.slow
def test_torch_path_matches_the_numpy_reference():
    pytest.importorskip("torch")
    pop = population(sigma_e=0.26, n_gal=30.0, smoothing_fwhm_arcmin=2.0)
    ref = MapSimulator(pop, "numpy").simulate([5, 6, 7])
    got = MapSimulator(pop, TORCH_BACKEND).simulate([5, 6, 7])
    assert got.shape == ref.shape == (3, 1, N_PIX, N_PIX) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5 * float(ref.std()))


def test_a_map_depends_on_its_seed_only():
    sim = MapSimulator(population(sigma_e=0.26, n_gal=30.0), "numpy")
    a, b = sim.simulate([11, 12, 13]), sim.simulate([12])
    np.testing.assert_array_equal(a[1], b[0])
    assert not np.allclose(a[0], a[2])


def test_reference_sheet_values_of_the_convergence_cl_and_the_lognormal_shift():
    """REFERENCES.md ("Lognormal convergence"): pyccl's kappa C_l of one source plane at z_s = 1 (Omega_c 0.25,
    Omega_b 0.05, h 0.7, sigma8 0.8, n_s 0.96, Eisenstein-Hu + halofit) is 7.4e-9, 3.9e-10 and 9.7e-12 at l = 100,
    1000 and 10^4; the Hilbert et al. 2011 shift and the empty-beam |kappa_min| (Omega_m 0.3) at z_s = 0.5 .. 2,
    the latter also against a comoving-distance integral of astropy.cosmology."""
    from astropy.cosmology import FlatLambdaCDM

    from skybench.tasks.generate.config import Cosmology, empty_beam_kappa

    cl = convergence_cl(Cosmology(), SourcePlane(kind="plane", z_s=1.0), np.array([100.0, 1000.0, 1e4]))
    np.testing.assert_allclose(cl, [7.4e-9, 3.9e-10, 9.7e-12], rtol=0.01)
    zs = np.array([0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(kappa0_hilbert2011(zs), [0.010, 0.030, 0.054, 0.079], atol=5e-4)
    kmin = empty_beam_kappa(0.3, 0.7, zs)
    np.testing.assert_allclose(kmin, [0.018, 0.064, 0.126, 0.195], atol=5e-4)
    astro = FlatLambdaCDM(H0=70.0, Om0=0.3, Tcmb0=0.0)
    dh = 2997.92458 / 0.7  # c / H0 [Mpc]

    def chi(z: float) -> float:
        return float(astro.comoving_distance(z).value)

    # |kappa_min| = (3 Omega_m / 2 D_H^2) int_0^z_s chi (chi_s - chi) / chi_s (1 + z) dchi/dz dz, dchi/dz = D_H / E(z)
    ref = [1.5 * 0.3 / dh**2 * quad(lambda z, c=chi(z_s): chi(z) * (c - chi(z)) / c * (1 + z) * dh * astro.inv_efunc(z),
                                    0.0, z_s)[0] for z_s in zs]
    np.testing.assert_allclose(kmin, ref, rtol=2e-4)


def test_config_rejects_inconsistent_populations():
    with pytest.raises(ValidationError, match="both sigma_e and n_gal"):
        population(sigma_e=0.26)
    with pytest.raises(ValidationError, match="even"):
        population(n_pix=63)
    with pytest.raises(ValidationError, match="Omega_b"):
        population(cosmology={"Omega_m": 0.04, "Omega_b": 0.05})
    with pytest.raises(ValidationError):
        population(typo=1)
    assert float(kappa0_hilbert2011(np.asarray(1.0))) == pytest.approx(0.02975)
    with pytest.raises(ValueError, match="lognormal_shift"):
        MapSimulator(population(lognormal_shift=1e-4), "numpy")


@pytest.mark.slow
def test_scores_on_simulated_maps_oracle_near_one_gaussian_and_cheats_caught():
    """End to end on the truth process: an independent draw (the lognormal oracle) scores chi^2/dof ~ 1, a
    Gaussian field with the same C_l does not, copying the training maps passes the chi^2 but not the
    memorisation check, and one map repeated fails both the chi^2 and the collapse check."""
    from skybench.tasks.generate.metrics import SummaryBins, chi2_per_dof, collapse_check, memorisation_check

    truth_sim = MapSimulator(population(), "numpy")
    grf_sim = MapSimulator(population(lognormal_shift=None), "numpy")
    train, heldout = truth_sim.simulate(range(0, 200)), truth_sim.simulate(range(10_000, 10_200))
    bins = SummaryBins.from_truth(heldout, SIZE)
    ref = bins.vectors(heldout)
    oracle, grf = truth_sim.simulate(range(20_000, 20_100)), grf_sim.simulate(range(30_000, 30_100))
    assert 0.4 < chi2_per_dof(bins.vectors(oracle), ref).per_dof < 2.0
    assert chi2_per_dof(bins.vectors(grf), ref).per_dof > 50
    copies = train[:100]
    assert chi2_per_dof(bins.vectors(copies), ref).per_dof < 2.0  # the chi^2 alone cannot see copying
    assert memorisation_check(copies, train, heldout).flagged
    assert not memorisation_check(oracle, train, heldout).flagged
    # per statistic: the Gaussian field's mean C_l is right, its peaks and Minkowski functionals are not; nor is
    # its C_l's map-to-map spread at high l (0.6-0.9 of the truth's sd: no non-Gaussian covariance)
    sl = bins.slices
    assert sl["cl"].stop - sl["cl"].start == len(bins.ell_edges) - 1 and sl["v2"].stop == ref.shape[1]
    grf_cl = chi2_per_dof(bins.vectors(grf)[:, sl["cl"]], ref[:, sl["cl"]])
    assert grf_cl.chi2 / grf_cl.dof < 3 and grf_cl.spread / grf_cl.dof > 3
    for name in ("peaks", "v0", "v1", "v2"):
        assert chi2_per_dof(bins.vectors(grf)[:, sl[name]], ref[:, sl[name]]).per_dof > 10, name
    repeated = np.repeat(oracle[:1], 100, axis=0)
    assert chi2_per_dof(bins.vectors(repeated), ref).per_dof > 10
    assert collapse_check(repeated, heldout, SIZE, bins.ell_edges).flagged
    assert not collapse_check(oracle, heldout, SIZE, bins.ell_edges).flagged


def test_linear_cl_scales_as_sigma8_squared_and_latents_are_declared():
    pop = population(cosmology={"matter_power_spectrum": "linear"})
    ell = np.array([100.0, 1000.0])
    base = convergence_cl(pop.cosmology, pop.sources, ell)
    higher = convergence_cl(pop.cosmology.with_params(Omega_m=0.3, sigma8=0.9), pop.sources, ell)
    np.testing.assert_allclose(higher / base, (0.9 / 0.8) ** 2, rtol=1e-3)
    # more matter, more lensing (at fixed sigma8, C_l grows with Omega_m)
    more = convergence_cl(pop.cosmology.with_params(Omega_m=0.35, sigma8=0.8), pop.sources, ell)
    assert np.all(more > base)
    with pytest.raises(ValidationError):
        pop.cosmology.with_params(Omega_m=0.02, sigma8=0.8)  # below Omega_b
    rng = np.random.default_rng(0)
    z = population(latent={"dim": 16}).latent.draw(4000, rng)
    assert z.shape == (4000, 16) and z.dtype == np.float32
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    u = population(latent={"dim": 8, "distribution": "uniform"}).latent.draw(1000, rng)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.std() - 1 / np.sqrt(3)) < 0.02


def test_latents_are_not_raw_output_of_a_generator_seeded_by_the_map_seed():
    """The latents are published; the hidden map of the same object comes from ``noise_stream(seed, 1)``. Were the
    latents drawn from ``default_rng([seed, k])``, recovering that generator's state from them would lead back to
    the seed; they come from a one-way hash of it instead."""
    from skybench.physics.noise import noise_stream
    from skybench.tasks.generate.simulator import GenerateSimulator, latent_rng
    from skybench.tracks import load_track

    track = load_track("wl-maps")
    sim = GenerateSimulator(track, "numpy")
    arrays, meta = sim.simulate(1234, "test", 0, 3)
    latent = track.population.latent
    for row, seed in enumerate(meta["seed"]):
        np.testing.assert_array_equal(arrays["latents"][row], latent.draw(1, latent_rng(int(seed)))[0])
        for stream in range(8):
            assert not np.array_equal(arrays["latents"][row], latent.draw(1, noise_stream(int(seed), stream))[0])
        assert not np.array_equal(arrays["latents"][row], latent.draw(1, np.random.default_rng(int(seed)))[0])
