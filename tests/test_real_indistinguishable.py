"""Trust: a model must not be able to tell the real objects of a lens track's test stream from the simulated ones
(it could then push real non-lenses down, forging real_fpr, or real lenses up, forging real_lens_recall).

A gradient-boosted classifier, cross-validated, on a broad vector of public per-object statistics of the model
inputs (flux in apertures, peak, border level and noise, noise power at several scales and its pixel-to-pixel
correlation, size, concentration, colours, quantization, non-finite and zero pixels) separates real from
simulated objects, lenses and non-lenses separately where both exist. Its AUROC must lie within the null
distribution of a classifier that has nothing to learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from skybench.release import open_release
from skybench.simulate import simulate_release
from skybench.tasks.lens.real import import_real_set
from skybench.tracks import load_track

SIM_SIZE = {"lens-space": 400, "lens-ground": 400}
KIDS_LIMIT = 176  # all the KiDS stamps


def _band_stats(x: np.ndarray, scale: float) -> list[float]:
    """Public statistics of one band (H, W) of pixel scale ``scale`` arcsec."""
    n = x.shape[0]
    c = (np.arange(n) - (n - 1) / 2.0) * scale
    r = np.hypot(c[:, None], c[None, :])
    border = np.ones(x.shape, dtype=bool)
    border[10:-10, 10:-10] = False
    b = x[border]
    bmed = float(np.median(b))
    mad = float(1.4826 * np.median(np.abs(b - bmed)))
    xf = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
    f1, f2, f4 = (float(xf[r <= a].sum()) for a in (1.0, 2.0, 4.0))
    tot = float(xf.sum())
    w = np.clip(xf - bmed, 0.0, None) * (r <= 3.0)
    ws = w.sum() + 1e-12
    size2 = float((w * r**2).sum() / ws)
    # noise: lag-1 correlation and power at several smoothing scales in the border strips (10 px wide)
    strips = [xf[:10], xf[-10:], xf[:, :10].T, xf[:, -10:].T]
    d1 = np.concatenate([(s[:, 1:] - s[:, :-1]).ravel() for s in strips])
    d2 = np.concatenate([(s[:, 2:] - s[:, :-2]).ravel() for s in strips])
    corr1 = 1.0 - float(np.var(d1)) / (2.0 * float(np.var(b)) + 1e-30)
    corr2 = 1.0 - float(np.var(d2)) / (2.0 * float(np.var(b)) + 1e-30)
    smooth = [float(np.std(gaussian_filter(xf, s)[border])) for s in (1.0, 2.0, 4.0)]
    vals = np.unique(x[border])
    return [tot, f1, f2, f4, f1 / (f4 + 1e-12), float(xf.max()), float(xf.min()), float(xf[n // 2, n // 2]),
            bmed, mad, float(np.std(b)), float(np.mean(np.abs(b - bmed))), corr1, corr2,
            *(s / (mad + 1e-30) for s in smooth), size2,
            float(np.mean(~np.isfinite(x))), float(np.mean(x == 0)), len(vals) / b.size,
            float(np.max(np.abs(b - bmed))) / (mad + 1e-30)]


def features(images: np.ndarray, scale: float) -> np.ndarray:
    """(N, features) per-object statistics: every band's, then the colours (aperture-flux ratios) between bands."""
    rows = []
    for im in images:
        per = [_band_stats(band, scale) for band in im]
        row = [v for p in per for v in p]
        for i in range(len(per) - 1):
            row += [-2.5 * np.log10(max(per[i][2], 1e-6) / max(per[i + 1][2], 1e-6)),
                    -2.5 * np.log10(max(per[i][0], 1e-6) / max(per[i + 1][0], 1e-6))]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def cv_auroc(x_sim: np.ndarray, x_real: np.ndarray, seed: int = 0) -> float:
    """Cross-validated AUROC of real (1) against simulated (0)."""
    x = np.concatenate([x_sim, x_real])
    y = np.r_[np.zeros(len(x_sim)), np.ones(len(x_real))]
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=8, min_samples_leaf=5,
                                         class_weight="balanced", random_state=seed)
    p = cross_val_predict(clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                          method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def null_upper(n_sim: int, n_real: int, z: float = 3.0) -> float:
    """Upper end (mean + z sd) of the AUROC of scores independent of the labels: Mann-Whitney U / (n0 n1),
    variance (n0 + n1 + 1) / (12 n0 n1) (Hanley & McNeil 1982, eq. 1 at AUROC 0.5)."""
    return 0.5 + z * float(np.sqrt((n_sim + n_real + 1) / (12.0 * n_sim * n_real)))


@pytest.fixture(scope="module")
def data(root):
    d = root / "data"
    if not (d / "galaxies" / "kids_viking_field").is_dir() or not (d / "lenses_hst" / "catalog.csv").is_file():
        pytest.skip(f"real data missing: {d} (run `dvc pull`)")
    return d


def _sets(name: str, data, tmp) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    track = load_track(name)
    real = open_release(import_real_set(data, name, tmp / f"real-{name}", limit=KIDS_LIMIT))
    sim = open_release(simulate_release(name, tmp / f"sim-{name}", seed=11, size=SIM_SIZE[name], progress=False,
                                        real_set=False))
    scale = track.survey.pixel_scale
    fr = features(real.images("test")[:], scale)
    fs = features(sim.images("test")[:], scale)
    yr = real.hidden("test").meta().is_lens.to_numpy()
    ys = sim.hidden("test").meta().is_lens.to_numpy()
    return {k: (fs[ys == v], fr[yr == v]) for k, v in (("lens", 1), ("nonlens", 0)) if (yr == v).any()}


@pytest.mark.parametrize("name", ["lens-space", "lens-ground"])
def test_a_classifier_cannot_tell_real_from_simulated(name, data, tmp_path):
    out = {}
    for kind, (xs, xr) in _sets(name, data, tmp_path).items():
        out[kind] = (cv_auroc(xs, xr), null_upper(len(xs), len(xr)), len(xs), len(xr))
    print(name, out)
    bad = {k: v for k, v in out.items() if v[0] > v[1]}
    assert not bad, f"{name}: real told apart from simulated (auroc, null upper, n_sim, n_real): {bad}"
