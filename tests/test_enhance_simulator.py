"""The enhancement track's data: the degradation recipe (PSF FWHM and noise sigma measured on the output), the
simulated release (truth hidden on test, degradation in the manifest), and the real-truth set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TORCH_BACKEND

from skybench.physics.backend import get_backend
from skybench.physics.degrade import degrade
from skybench.release import layout, read_manifest
from skybench.release.reader import open_release
from skybench.simulate import simulate_release
from skybench.tasks.enhance.simulator import EnhanceSimulator, degradation_info
from skybench.tracks import load_track

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def track():
    return load_track("enhance")


def test_degradation_psf_fwhm_measured(track) -> None:
    """A point source (one bright pixel, noise-free) comes out with the stated FWHM: its second moment is
    sigma = FWHM / 2.3548 / 0.396 pixels (Schawinski et al. 2017 Sec. 2), no pixel box added."""
    info = degradation_info(track)
    pix = track.survey.pixel_scale
    truth = np.zeros((1, 3, 64, 64))
    truth[0, :, 32, 32] = 1000.0
    out = degrade(truth, np.zeros(3), info["psf_fwhm_arcsec"], pix, info["noise_factor"], np.zeros(truth.shape))
    x = np.arange(64) - 32.0
    for b in range(3):
        img = out[0, b] / out[0, b].sum()
        fwhm = np.sqrt(np.sum(img.sum(axis=0) * x**2)) * 2.0 * np.sqrt(2.0 * np.log(2.0)) * pix
        assert fwhm == pytest.approx(1.4, rel=1e-4)
    assert out.sum() == pytest.approx(truth.sum(), rel=1e-6)  # the blur conserves flux


def test_degradation_is_astropys_gaussian_kernel_convolution(track) -> None:
    """The blur equals astropy's convolution with a Gaussian2DKernel (sampled at pixel centres, as cv2.GaussianBlur
    in Schawinski et al.'s roou.py) of the paper's sigma, zero outside the frame."""
    from astropy.convolution import Gaussian2DKernel, convolve

    pix = track.survey.pixel_scale
    sigma = 1.4 / pix / 2.355  # the paper's sigma_pix (their 2.355)
    truth = np.random.default_rng(2).gamma(0.3, 10.0, size=(1, 1, 48, 48))
    fwhm = sigma * pix * 2.0 * np.sqrt(2.0 * np.log(2.0))  # the FWHM whose exact sigma is the paper's
    ours = degrade(truth, np.zeros(1), fwhm, pix, 1.2, np.zeros(truth.shape))
    size = 2 * int(np.ceil(5.0 * sigma)) + 1
    ref = convolve(truth[0, 0], Gaussian2DKernel(sigma, x_size=size, y_size=size, mode="center"),
                   boundary="fill", fill_value=0.0, normalize_kernel=True)
    np.testing.assert_allclose(ours[0, 0], ref, rtol=1e-9, atol=1e-9 * truth.max())


def test_degradation_noise_sigma_measured(track) -> None:
    """A pure-noise truth of sigma_b comes out with background sigma noise_factor x sigma_b."""
    info = degradation_info(track)
    sigma = np.array([info["sigma_truth"][b] for b in track.band_names])
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 3, 64, 64)) * sigma[None, :, None, None]
    out = degrade(truth, sigma, info["psf_fwhm_arcsec"], track.survey.pixel_scale, info["noise_factor"],
                  rng.normal(size=truth.shape))
    inner = out[:, :, 8:-8, 8:-8]  # away from the zero-padded edge
    measured = inner.std(axis=(0, 2, 3)) / truth[:, :, 8:-8, 8:-8].std(axis=(0, 2, 3))
    np.testing.assert_allclose(measured, 1.2, rtol=0.02)
    with pytest.raises(ValueError, match="noise_factor"):
        degrade(truth, sigma, 1.4, 0.396, 0.1, rng.normal(size=truth.shape))


def test_simulator_objects(track) -> None:
    sim = EnhanceSimulator(track, get_backend("numpy"))
    arrays, meta = sim.simulate(7, "train", 0, 6)
    assert set(arrays) == {"images", "truth"} and arrays["images"].shape == (6, 3, 64, 64)
    assert arrays["truth"].dtype == np.float32
    # the degraded image is the blurred truth plus noise of the recorded added sigma
    info = degradation_info(track)
    blurred = degrade(arrays["truth"].astype(np.float64), np.zeros(3), 1.4, 0.396, 1.2, np.zeros((6, 3, 64, 64)))
    resid = (arrays["images"] - blurred)[:, :, 8:-8, 8:-8].std(axis=(0, 2, 3))
    np.testing.assert_allclose(resid, [info["sigma_added"][b] for b in track.band_names], rtol=0.05)
    assert (meta["psf_fwhm"] == 1.4).all() and (meta["noise_factor"] == 1.2).all()
    np.testing.assert_allclose(meta["sigma_degraded_r"], 1.2 * meta["sigma_truth_r"])
    # the truth's noise-free flux is what the components were given (minus what falls outside the frame)
    total = sum(meta[f"{c}_flux_r"] for c in ["bulge", "disk", "arms"] + [f"clump{k}" for k in range(10)])
    assert np.all(meta["model_flux_r"] <= total * 1.001) and np.all(meta["model_flux_r"] > 0.8 * total)
    again, _ = sim.simulate(7, "train", 3, 6)  # objects do not depend on their chunk
    np.testing.assert_array_equal(again["images"], arrays["images"][3:])


def test_release_layout(track, tmp_path) -> None:
    out = simulate_release(track, tmp_path / "rel", profile="demo", seed=3, size=6, progress=False, workers=1)
    rel = open_release(out)
    manifest = read_manifest(out)
    assert manifest["degradation"]["psf_fwhm_arcsec"] == 1.4 and manifest["hidden_arrays"] == ["truth"]
    assert len(manifest["degradation"]["psf_kernel_1d"]) % 2 == 1
    assert rel.array("train", "truth").shape[1:] == (3, 64, 64)  # training pairs are public
    assert not layout.shard_paths(layout.public_dir(out, "test"), "truth")  # the test truth is hidden
    assert len(layout.shard_paths(layout.hidden_dir(out, "test"), "truth")) == 1
    assert list(rel.meta("test").columns) == ["id"]


def test_real_truth_set(track, tmp_path) -> None:
    """Two real HST images through the importer: truth and degraded copy in the track's format."""
    lens_dir = ROOT / "data" / "lenses_hst"
    if not (lens_dir / "catalog.csv").is_file():
        pytest.skip("real data not pulled (data/lenses_hst)")
    from skybench.tasks.enhance.real import import_real_truth

    sub = tmp_path / "lenses_hst"
    sub.mkdir()
    cat = pd.read_csv(lens_dir / "catalog.csv").sort_values("file")
    cat = pd.concat([cat[cat.file.str.startswith("DESI")].head(1), cat[cat.file.str.startswith("SDSS")].head(1)])
    cat.to_csv(sub / "catalog.csv", index=False)
    for f in cat["file"]:
        (sub / f).symlink_to(lens_dir / f)
    out = import_real_truth(tmp_path, track, tmp_path / "real", seed=1)
    hidden = open_release(out).hidden("test")
    meta = hidden.meta()
    truth = hidden.array("truth")[:]
    images = open_release(out).images("test")[:]
    assert truth.shape == images.shape == (2, 3, 64, 64)
    assert np.all(truth.sum(axis=(2, 3)) > 0)
    np.testing.assert_allclose(meta["sigma_degraded_g"], 1.2 * meta["sigma_truth_g"])
    blurred = degrade(truth.astype(np.float64), np.zeros(3), 1.4, 0.396, 1.2, np.zeros(truth.shape))
    resid = (images - blurred)[:, :, 8:-8, 8:-8].std(axis=(2, 3))
    gain = 1.0 / (2.0 * np.sqrt(np.pi) * (1.4 / 0.396 / 2.3548))  # sum of a sampled unit Gaussian's squares
    expected = np.sqrt(1.2**2 - gain**2) * meta[[f"sigma_truth_{b}" for b in "gri"]].to_numpy()
    np.testing.assert_allclose(resid, expected, rtol=0.1)
    # The truth holds the track's white background noise, as a simulated truth does: the HST noise it carries is
    # dimmed below it (it was up to 9x the track's at mag_r = 15, and the recorded sigma its median diagonal, so the
    # "degraded" copy was 0.4x as noisy as its truth), and the degraded copy 1.2x that.
    from skybench.common import robust_sigma
    from skybench.tasks.enhance.simulator import degradation_info

    track_sigma = np.array([degradation_info(track)["sigma_truth"][b] for b in "gri"])
    recorded = meta[[f"sigma_truth_{b}" for b in "gri"]].to_numpy()
    np.testing.assert_allclose(recorded, np.tile(track_sigma, (2, 1)), rtol=1e-6)
    ends = (slice(0, 12), slice(-12, None))
    corners = np.concatenate([truth[..., y, x].reshape(*truth.shape[:2], -1) for y in ends for x in ends], axis=-1)
    noise = np.array([[robust_sigma(c) for c in obj] for obj in corners])
    np.testing.assert_allclose(noise, np.broadcast_to(track_sigma, noise.shape), rtol=0.2)


def test_torch_backend_matches_numpy(track) -> None:
    """The renderer's torch path (what a GPU runs) gives the numpy images to float32 precision."""
    pytest.importorskip("torch")
    a, _ = EnhanceSimulator(track, get_backend("numpy")).simulate(1, "val", 0, 3)
    b, _ = EnhanceSimulator(track, get_backend(TORCH_BACKEND)).simulate(1, "val", 0, 3)
    for name in ("images", "truth"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-3)
