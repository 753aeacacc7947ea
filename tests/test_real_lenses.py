"""Real-lens evaluation set: flux-conserving resampling, PSF matching, and the importer on the HST lenses."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import erf

from skybench.common import robust_sigma
from skybench.physics.noise import magnitude2cps
from skybench.real_hst import (
    discrete_gaussian_kernel,
    fit_psf_fwhm,
    light_centre,
    overlap_matrix,
    process_lens,
    resample_flux,
)
from skybench.release import open_release, read_manifest, verify_release
from skybench.tasks.lens.real import import_real_lenses, main
from skybench.tracks import load_track


# ------------------------------------------------------------------------------------------ resampling
def _blob(n: int, scale: float, sigma: float = 0.4, x0: float = 0.13, y0: float = -0.21) -> np.ndarray:
    c = (np.arange(n) - (n - 1) / 2) * scale
    return 1e3 * np.exp(-((c[None, :] - x0) ** 2 + (c[:, None] - y0) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("scale", [(0.08, 0.08), (0.05, 0.06)])
def test_light_centre_finds_the_central_galaxy_not_a_brighter_neighbour(scale):
    """The DESI cut-outs have the deflector up to 1" off their centre and brighter sources further out."""
    ny, nx = 151, 141
    y, x = (np.arange(ny) - 75) * scale[0], (np.arange(nx) - 70) * scale[1]

    def galaxy(y0: float, x0: float, amp: float) -> np.ndarray:
        return amp * np.exp(-np.hypot(y[:, None] - y0, x[None, :] - x0) / 0.12)

    image = galaxy(0.53, -0.87, 1.0) + galaxy(3.1, 2.0, 5.0) + galaxy(1.2, 0.9, 0.4)
    image += np.random.default_rng(0).normal(0, 0.002, image.shape)
    cy, cx = light_centre(image, scale)
    assert abs((cy - 75) * scale[0] - 0.53) < 0.005 and abs((cx - 70) * scale[1] + 0.87) < 0.005


@pytest.mark.parametrize("scale_in", [0.08, 0.05])
@pytest.mark.parametrize("shape", [(100, 100), (99, 99), (94, 120), (37, 63)])
def test_resampling_conserves_flux_when_the_image_is_inside_the_frame(scale_in, shape):
    rng = np.random.default_rng(1)
    assert shape[0] * scale_in <= 10.1 and shape[1] * scale_in <= 10.1
    for image in (_blob(max(shape), scale_in)[: shape[0], : shape[1]], rng.random(shape),
                  rng.standard_normal(shape) + 5.0):
        out = resample_flux(image, scale_in, 0.1, (101, 101))
        assert out.shape == (101, 101)
        np.testing.assert_allclose(out.sum(), image.sum(), rtol=1e-6)


def test_resampling_a_constant_image_keeps_the_surface_brightness():
    # 2 e-/s per 0.08" pixel = 312.5 e-/s/arcsec^2 -> 3.125 e-/s per 0.1" pixel where the frame is covered.
    for scale_in, n_in in [(0.08, 250), (0.05, 301)]:
        out = resample_flux(np.full((n_in, n_in), 2.0), scale_in, 0.1, (101, 101))
        np.testing.assert_allclose(out, 2.0 * (0.1 / scale_in) ** 2, rtol=1e-12)
    # A smaller image: constant inside its footprint, zero outside, partial pixels at its edges.
    out = resample_flux(np.full((99, 99), 1.0), 0.05, 0.1, (101, 101))
    np.testing.assert_allclose(out[40:61, 40:61], 4.0, rtol=1e-12)
    assert out[0, 0] == 0.0 and out[50, 0] == 0.0
    np.testing.assert_allclose(out.sum(), 99 * 99)


def test_overlap_matrix_columns_and_rows():
    a = overlap_matrix(94, 0.08, 101, 0.1)
    np.testing.assert_allclose(a.sum(axis=0), 1.0)  # every old pixel's flux lands in the new row once
    inside = a.sum(axis=1)
    np.testing.assert_allclose(inside[inside > 1.2], 1.25)  # fully covered new pixels: 0.1 / 0.08
    # Non-square pixels: separate scales for y (axis 0) and x (axis 1).
    img = _blob(80, 0.08)
    out = resample_flux(img, (0.08, 0.06), 0.1, (101, 101))
    np.testing.assert_allclose(out.sum(), img.sum(), rtol=1e-10)


# ------------------------------------------------------------------------------------------ PSF
@pytest.mark.parametrize("t", [0.05, 0.3, 1.8, 7.0])
def test_discrete_gaussian_kernel_has_exact_variance(t):
    k = discrete_gaussian_kernel(t)
    n = np.arange(len(k)) - len(k) // 2
    assert (k >= 0).all() and abs(k.sum() - 1) < 1e-12
    np.testing.assert_allclose((k * n**2).sum(), t, rtol=1e-9)
    assert discrete_gaussian_kernel(0.0).tolist() == [1.0]


@pytest.mark.parametrize("fwhm, scale", [(0.106, 0.08), (0.08, 0.0495), (0.18, 0.1)])
def test_psf_fit_recovers_a_pixel_integrated_gaussian(fwhm, scale):
    s = fwhm / 2.3548 / scale
    idx = np.arange(-30, 31)
    e = 0.5 * (erf((idx + 0.5 - 0.2) / (np.sqrt(2) * s)) - erf((idx - 0.5 - 0.2) / (np.sqrt(2) * s)))
    assert fit_psf_fwhm(np.outer(e, e), scale) == pytest.approx(fwhm, rel=1e-3)


def test_track_must_be_single_band_and_target_magnitude_in_range(tmp_path):
    with pytest.raises(ValueError, match="one band"):
        import_real_lenses(tmp_path, load_track("lens-ground"), tmp_path / "out")
    with pytest.raises(ValueError, match="outside"):
        import_real_lenses(tmp_path, load_track("lens-space"), tmp_path / "out", target_mag=25.0)


# ------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def hst_dir(root):
    d = root / "data" / "lenses_hst"
    if not (d / "catalog.csv").is_file():
        pytest.skip(f"real data missing: {d} (run `dvc pull` to fetch the HST lenses)")
    return d


@pytest.fixture(scope="module")
def real_release(hst_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "real-hst-lenses"
    main(["--data", str(hst_dir.parent), "--out", str(out), "--seed", "0"])  # the CLI entry point
    return out


def test_importer_writes_a_verifiable_release_of_27_lenses(real_release):
    assert verify_release(real_release) == []
    m = read_manifest(real_release)
    assert m["track"] == "lens-space" and m["profile"] == "real-hst" and m["task"] == "lens"
    assert m["bands"] == ["VIS"] and m["pixel_scale"] == 0.1 and m["units"] == "e-/s per pixel"
    assert m["counts"] == {"train": 0, "val": 0, "test": 27} and m["image_shape"] == [1, 101, 101]
    assert "rebinning" in m["processing"] and "BKG_RMS" in m["processing"] and "20.25" in m["processing"]
    json.dumps(m)
    images = open_release(real_release).images("test")[:]
    assert images.dtype == np.float32 and images.shape == (27, 1, 101, 101) and np.isfinite(images).all()
    index = open_release(real_release).meta("test")
    assert list(index.columns) == ["id"] and index.id.tolist() == list(range(27))


def test_background_noise_matches_the_track(real_release):
    meta = open_release(real_release).hidden("test").meta()
    images = open_release(real_release).images("test")[:][:, 0]
    border = np.ones((101, 101), dtype=bool)
    border[10:-10, 10:-10] = False
    sigma = np.array([robust_sigma(im[border]) for im in images])
    target = meta.sigma_bkg_target.iloc[0]
    assert target == pytest.approx(0.005834, rel=1e-3)
    close = np.abs(sigma / target - 1) < 0.10
    assert close.mean() >= 0.85, dict(zip(meta.name, sigma / target, strict=True))
    # The existing HST noise, rescaled, is far below the target: most of the noise is added.
    assert (meta.existing_sigma_processed < 0.3 * target).all()
    # The lens + arc flux within 2" is at the target magnitude (PSF spill and noise: a few per cent).
    c = np.arange(101) - 50
    aperture = np.hypot(c[:, None], c[None, :]) * 0.1 <= 2.0
    flux = images[:, aperture].sum(axis=1)
    assert np.median(flux) == pytest.approx(magnitude2cps(20.25, 24.0), rel=0.05)


def test_metadata_records_the_processing_of_every_object(real_release, hst_dir):
    meta = open_release(real_release).hidden("test").meta()
    catalog = pd.read_csv(hst_dir / "catalog.csv")
    assert len(meta) == 27 and sorted(meta.file) == sorted(catalog.file)
    assert (meta.is_lens == 1).all() and (meta.split == "test").all()
    desi, slacs = meta[meta.band == "F140W"], meta[meta.band == "F814W"]
    assert len(desi) == 20 and len(slacs) == 7
    np.testing.assert_allclose(desi.orig_pixel_scale_y, 0.08, rtol=1e-6)
    np.testing.assert_allclose(slacs.orig_pixel_scale_x, 0.05, rtol=1e-3)
    np.testing.assert_allclose(desi.resample_factor_x, 0.8, rtol=1e-6)
    assert (desi.existing_noise_from == "BKG_RMS header").all()
    assert slacs.existing_noise_from.str.contains("MAD").all()
    assert (slacs.z_source > 0.4).all() and desi.z_source.isna().all()
    assert ((meta.psf_fwhm_hst > 0.05) & (meta.psf_fwhm_hst < 0.18)).all()
    assert (meta.psf_diff_sigma_arcsec > 0).all() and (meta.flux_scale > 0).all()
    np.testing.assert_allclose(meta.flux_scale * meta.aperture_flux_orig, magnitude2cps(20.25, 24.0))
    # White noise at the track's level, or at the carried noise's largest eigenvalue where that is above it.
    np.testing.assert_allclose(meta.added_bkg_sigma**2 + meta.existing_sigma_processed**2,
                               meta.white_noise_sigma**2, rtol=1e-9)
    np.testing.assert_allclose(meta.white_noise_sigma, np.maximum(meta.sigma_bkg_target,
                                                                  meta.existing_sigma_processed_eig_max), rtol=1e-9)
    assert (slacs.footprint_fraction < 0.3).all() and (meta.source_sha256.str.len() == 64).all()
    for col in ("name", "instrument", "band", "z_lens", "target_mag", "poisson_exposure_time", "noise_seed"):
        assert col in meta.columns


def test_one_object_is_reproducible_from_its_seed(hst_dir):
    from skybench.real_hst import Target

    target = Target.from_track(load_track("lens-space"), 20.25)
    path = hst_dir / "SDSSJ0737+3216_F814W.fits"
    a, na = process_lens(path, target, np.random.default_rng([0, 21]))
    b, nb = process_lens(path, target, np.random.default_rng([0, 21]))
    c, _ = process_lens(path, target, np.random.default_rng([1, 21]))
    assert np.array_equal(a, b) and na == nb and not np.array_equal(a, c)
