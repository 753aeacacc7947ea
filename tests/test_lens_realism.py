"""The lens sim-to-real report (``skybench realism lens-space``, :mod:`skybench.tasks.lens.realism`): its statistics
on hand-built images with known answers, the rank-correlation table on hand-built records, and the command on tiny
releases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter
from scipy.optimize import brentq
from typer.testing import CliRunner

from skybench.cli import app
from skybench.release import open_release, write_release
from skybench.tasks.lens import realism as rl
from skybench.tracks import load_track

N = 101


def _render(profile, cx: float = 0.0, cy: float = 0.0, sub: int = 8) -> np.ndarray:
    """A (N, N) frame of ``profile(radius in pixels)`` centred ``(cx, cy)`` pixels off the frame centre, each
    pixel the mean of sub x sub samples."""
    o = (np.arange(sub) + 0.5) / sub - 0.5
    c = np.arange(N) - (N - 1) / 2.0
    y = (c[:, None] + o[None, :]).ravel()
    yy, xx = np.meshgrid(y - cy, y - cx, indexing="ij")
    return profile(np.hypot(yy, xx)).reshape(N, sub, N, sub).mean(axis=(1, 3))


def gaussian(sigma: float, flux: float = 1.0):
    return lambda r: flux * np.exp(-0.5 * (r / sigma) ** 2) / (2 * np.pi * sigma**2)


def test_concentration_of_a_gaussian_and_an_exponential_disc():
    """C = 5 log10(r80/r20): a circular Gaussian 5 log10(sqrt(ln 5 / ln 1.25)) = 2.145; an exponential disc of
    scale h: the radii solve 1 - (1 + x) exp(-x) = f (x = r / h)."""
    g = rl.concentration(_render(gaussian(3.0))[None])[0]
    assert g == pytest.approx(5 * np.log10(np.sqrt(np.log(5) / np.log(1.25))), abs=0.02)
    x20, x80 = (brentq(lambda x, f=f: 1 - (1 + x) * np.exp(-x) - f, 1e-6, 50) for f in (0.2, 0.8))
    e = rl.concentration(_render(lambda r: np.exp(-r / 2.5))[None])[0]
    assert e == pytest.approx(5 * np.log10(x80 / x20), abs=0.03)
    assert e > g + 0.5  # the disc is more concentrated than the Gaussian
    r = rl.growth_radii(_render(gaussian(3.0))[None], (0.5,))[0, 0]
    assert r == pytest.approx(3.0 * np.sqrt(2 * np.log(2)), rel=0.01)  # half-light radius of a Gaussian


def test_asymmetry_of_symmetric_and_lopsided_objects_in_noise():
    """A symmetric Gaussian has A ~ 0 also in noise (the border's B_180 takes the noise out); adding a blob on
    one side makes it clearly asymmetric."""
    rng = np.random.default_rng(0)
    sym = _render(gaussian(3.0, 2000.0))
    noisy = sym[None] + rng.normal(0.0, 1.0, (40, N, N))
    a = rl.asymmetry(noisy)
    assert abs(np.mean(a)) < 0.02 and np.all(np.abs(a) < 0.08), a
    assert abs(rl.asymmetry(sym[None])[0]) < 1e-9
    lopsided = sym + _render(gaussian(2.0, 600.0), cx=7.0)
    assert rl.asymmetry(lopsided[None] + rng.normal(0.0, 1.0, (5, N, N))).min() > 0.25


def test_border_power_of_white_and_correlated_noise():
    rng = np.random.default_rng(1)
    white = rng.normal(0.0, 3.0, (50, N, N))
    freqs, p = rl.border_power(white + 100.0)  # a sky level is not noise
    assert freqs[0] == pytest.approx(1 / N) and freqs[-1] == pytest.approx((N // 2) / N)
    assert np.all(np.abs(p.mean(axis=0) - 1.0) < 0.15), p.mean(axis=0)  # flat at 1 (Parseval)
    assert np.median(rl.noise_lowk(white)) == pytest.approx(1.0, abs=0.1)
    smooth = np.stack([gaussian_filter(w, 1.5) for w in white[:10]])
    assert np.median(rl.noise_lowk(smooth)) > 10  # smoothing moves the power to the low frequencies


def test_object_statistics_flux_peak_and_colours():
    """A Gaussian of known flux per band (lens-ground: u, g, r, i at their zero points) in unit white noise:
    its 2" magnitudes, their colours, and its peak S/N."""
    track = load_track("lens-ground")
    mags = {"u": 20.0, "g": 19.0, "r": 18.5, "i": 18.2}
    zps = {b.name: b.zero_point for b in track.survey.bands}
    rng = np.random.default_rng(2)
    img = np.stack([_render(gaussian(2.0, 10 ** (-0.4 * (mags[b] - zps[b])))) for b in track.band_names])
    noise = 0.05
    st = rl.object_statistics((img + rng.normal(0.0, noise, img.shape))[None], track).iloc[0]
    assert st["mag_2"] == pytest.approx(mags["r"], abs=0.01)
    for a, b in (("u", "g"), ("g", "r"), ("r", "i")):
        assert st[f"{a}-{b}"] == pytest.approx(mags[a] - mags[b], abs=0.02)
    peak = img[track.band_names.index("r")].max()
    assert st["peak_snr"] == pytest.approx(peak / noise, rel=0.1)
    assert st["noise_sigma"] == pytest.approx(noise, rel=0.1)
    assert abs(st["asymmetry"]) < 0.05
    assert st["concentration"] == pytest.approx(5 * np.log10(np.sqrt(np.log(5) / np.log(1.25))), abs=0.05)


def test_rank_agreement_on_hand_built_records():
    entries = pd.DataFrame({"auroc": [0.9, 0.8, 0.7, 0.6, np.nan],
                            "real_auroc": [0.6, 0.9, 0.5, 0.4, 0.99],
                            "real_fpr": [0.4, 0.3, 0.2, 0.1, 0.0],
                            "real_lens_recall": [np.nan] * 5},
                           index=["a/1", "b/2", "c/3", "d/4", "failed/5"])
    r = rl.rank_agreement(entries)
    assert list(r.table.index) == ["a/1", "b/2", "c/3", "d/4"]  # best simulated first; no AUROC: not ranked
    assert r.rho["real_auroc"] == (pytest.approx(1 - 6 * 2 / (4 * 15)), 4)  # ranks 2 1 3 4: rho 0.8
    assert r.rho["real_fpr"] == (pytest.approx(-1.0), 4)  # lower FPR is better: the exact reverse ranking
    rho, n = r.rho["real_lens_recall"]
    assert np.isnan(rho) and n == 0
    assert list(r.table["rank_real_auroc"]) == [2, 1, 3, 4]
    text = r.text()
    assert "real_auroc ranking: +0.80 (n = 4)" in text and "real_fpr ranking: -1.00 (n = 4)" in text
    assert "real_lens_recall ranking: undefined (n = 0)" in text
    lower = rl.rank_agreement(entries.assign(auroc=-entries["auroc"]), higher_is_better=False)
    assert lower.rho["real_auroc"][0] == pytest.approx(0.8)
    assert rl.rank_agreement(entries.iloc[:0]).text().endswith("no evaluated entries")


def _real_set(release: Path, out: Path, n_lens: int, n_non: int) -> Path:
    """A stand-in real set (test split, hidden is_lens) from the release's test objects."""
    rel = open_release(release)
    truth = rel.hidden("test").meta(["id", "is_lens"])
    pick = np.sort(np.r_[np.flatnonzero(truth.is_lens == 1)[:n_lens], np.flatnonzero(truth.is_lens == 0)[:n_non]])
    images = rel.images("test")[pick]
    meta = pd.DataFrame({"id": np.arange(len(pick)), "split": "test",
                         "is_lens": truth.is_lens.to_numpy()[pick].astype(np.int8)})
    return write_release(out, info={"track": rel.manifest["track"], "task": "lens", "profile": "real-set", "seed": 0},
                         counts={"test": len(pick)}, image_shape=images.shape[1:],
                         make_chunks=lambda s, r: ((images[a:b], meta.iloc[a:b]) for a, b in r),
                         label_columns=("is_lens",), progress=False)


@pytest.mark.slow  # ~25 s on 2 busy cores: the MLflow store, the plot
def test_the_command_on_tiny_releases(tiny_ground_release, tmp_path, store):
    """`skybench realism lens-ground` on a tiny release, a stand-in real set and a metrics.json: the four groups'
    counts, one row per statistic (colours included), the rank table, the file --write wrote, and the MLflow run."""
    from skybench.tracking import KIND_TAG, client, organiser_experiment

    real = _real_set(tiny_ground_release, tmp_path / "real", 0, 7)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"t/a": {"rank": 1, "auroc": 0.9, "real_fpr": 0.1},
                                   "t/b": {"rank": 2, "auroc": 0.8, "real_fpr": 0.3},
                                   "t/c": {"rank": 3, "auroc": 0.7, "real_fpr": 0.2}}))
    out = tmp_path / "realism" / "lens-ground.txt"
    res = CliRunner().invoke(app, ["realism", "lens-ground", "--release", str(tiny_ground_release), "--real",
                                   str(real), "--metrics", str(metrics), "--write", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text in res.output and "logged to MLflow run" in res.output
    assert "(the real set): 0 lenses, 7 non-lenses" in text
    n_train = len(open_release(tiny_ground_release).labels("train"))
    assert f"non-lenses of {n_train} (subset seed 0)" in text
    for stat in ("mag_2", "mag_total", "concentration", "asymmetry", "peak_snr", "noise_sigma", "noise_lowk",
                 "u-g", "g-r", "r-i"):
        assert any(line.startswith(stat + " ") for line in text.splitlines()), stat
    assert "real lens 0, real non-lens 7" in text
    assert "real_fpr ranking: +0.50 (n = 3)" in text  # sim ranks 1 2 3, real (lower FPR first) 1 3 2
    c = client()
    runs = c.search_runs([c.get_experiment_by_name(organiser_experiment("lens-ground")).experiment_id],
                         f"tags.`{KIND_TAG}` = 'realism'")
    assert len(runs) == 1 and runs[0].data.metrics["spearman_real_fpr"] == pytest.approx(0.5)
    assert "ks_g_minus_r_nonlens" in runs[0].data.metrics
    arts = {a.path for a in c.list_artifacts(runs[0].info.run_id)}
    assert {"realism.png", "realism.txt", "realism_statistics.csv", "realism_ranks.csv"} <= arts


def test_the_command_dispatches_by_task(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["realism", "enhance"])
    assert res.exit_code == 1 and "has no realism report" in res.output
    res = runner.invoke(app, ["realism", "photoz-catalog", "--release", str(tmp_path)])
    assert res.exit_code == 1 and "--release: not an option of the photoz realism report" in res.output
    res = runner.invoke(app, ["realism", "lens-space", "--profile", "challenge"])
    assert res.exit_code == 1 and "--profile: not an option of the lens realism report" in res.output
    res = runner.invoke(app, ["realism", "lens-space", "--release", str(tmp_path / "nothing"), "--no-log"])
    assert res.exit_code == 1 and "no release of lens-space" in res.output


def test_the_reference_band_is_the_real_sets():
    from skybench.tasks.lens.real_nonlens import reference_band

    for name in ("lens-space", "lens-ground"):
        track = load_track(name)
        assert rl.reference_band(track) == reference_band(track)


@pytest.mark.slow  # simulates the photo-z demo train split (~7 s)
def test_the_photoz_report_runs_through_the_same_command(root):
    if not (root / "data" / "photoz_sdss_mgs" / "train.csv").is_file():
        pytest.skip("the real MGS catalogue is not in data/ (make data)")
    res = CliRunner().invoke(app, ["realism", "photoz-catalog", "--no-log"])
    assert res.exit_code == 0, res.output
    assert "photoz-catalog (demo train split, seed 0) vs the real MGS train split:" in res.output
    assert "targets: KS < 0.1" in res.output
