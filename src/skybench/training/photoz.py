"""Helpers shared by the photo-z baselines (``baselines/photoz/*/train.py``): public splits of a photo-z release,
the magnitude + colour feature map as a scikit-learn step, and validation metrics.

Only the public ``train`` and ``val`` splits are read; the hidden test labels never are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from skybench.tasks.photoz.metrics import outlier_fraction, pdf_grid, pdf_point_estimate, sigma_mad
from skybench.tracks import Track

__all__ = ["feature_names", "load_photoz_split", "mag_colour_step", "pdf_point_estimate", "train_catalogue",
           "val_metrics", "z_bins"]

MAGS = ("mag_u", "mag_g", "mag_r", "mag_i", "mag_z")


def load_photoz_split(release: str | Path, split: str, name: str = "features",
                      max_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(array ``name`` float32 (N, ...), spectroscopic z float64 (N,)) of the public ``train`` or ``val`` split."""
    if split not in ("train", "val"):
        raise ValueError(f"baselines train on the public train/val splits only, not {split!r}")
    from skybench.release.reader import open_release

    rel = open_release(release)
    arr = rel.array(split, name)
    n = len(arr) if max_n is None else min(max_n, len(arr))
    x = np.ascontiguousarray(arr[:n], dtype=np.float32)
    z = rel.meta(split)["z"].to_numpy(np.float64)[:n]
    return x, z


def feature_names(release: str | Path) -> list[str]:
    from skybench.release import read_manifest

    names = read_manifest(Path(release)).get("feature_names") or []
    if not names:
        raise ValueError(f"{release}: the manifest names no features (feature_names)")
    return list(names)


def mag_colour_matrix(names: list[str]) -> np.ndarray:
    """(F, 9) matrix taking a feature row to the five magnitudes u, g, r, i, z and the four colours u-g, g-r, r-i,
    i-z (colours are differences of magnitudes, so the map is linear)."""
    missing = [m for m in MAGS if m not in names]
    if missing:
        raise ValueError(f"the features lack the magnitudes {missing} (features: {names})")
    idx = [names.index(m) for m in MAGS]
    m = np.zeros((len(names), 9))
    for k, i in enumerate(idx):
        m[i, k] = 1.0
    for k in range(4):
        m[idx[k], 5 + k], m[idx[k + 1], 5 + k] = 1.0, -1.0
    return m


def mag_colour_step(names: list[str]) -> Any:
    """A fitted FunctionTransformer(numpy.dot) computing magnitudes + colours (skops-safe: a numpy function)."""
    from sklearn.preprocessing import FunctionTransformer

    step = FunctionTransformer(np.dot, kw_args={"b": mag_colour_matrix(names)})
    return step.fit(np.zeros((1, len(names))))


def val_metrics(z_phot: np.ndarray, z_spec: np.ndarray) -> dict[str, float]:
    z_phot = np.asarray(z_phot, dtype=np.float64).reshape(-1)
    return {"sigma_mad": sigma_mad(z_phot, z_spec), "outlier_frac": outlier_fraction(z_phot, z_spec)}


def z_bins(track: Track) -> tuple[np.ndarray, np.ndarray]:
    """(centres, edges) of the track's PDF grid."""
    if track.output.grid is None:
        raise ValueError(f"track {track.name!r} declares no PDF grid")
    return pdf_grid(track.output.grid)


def train_catalogue(name: str, doc: str, fit: Callable[[dict, list[str], np.ndarray, np.ndarray], Any],
                    describe: Callable[[dict], str], argv: list[str] | None = None,
                    prepare: Callable[[dict, int], None] | None = None) -> tuple[Any, Path]:
    """The catalogue baselines' training: ``fit(params, names, x, z)`` on train, score on val (MLflow), refit on
    train + val when ``refit_on_val``, write a skops submission described by ``describe(params)``.
    ``prepare(params, n_train)`` may adjust the parameters to the data before anything is logged."""
    from skybench.training import CurveLogger, fresh_folder, save_skops, start, write_submission

    args, params = start(name, doc, argv)
    names = feature_names(args.release)
    x, z = load_photoz_split(args.release, "train", max_n=args.max_train)
    xv, zv = load_photoz_split(args.release, "val")
    if prepare is not None:
        prepare(params, len(x))
    out = fresh_folder(args.out)
    with CurveLogger(name, args.track, params, enabled=not args.no_mlflow) as log:
        model = fit(params, names, x, z)
        val = val_metrics(model.predict(xv), zv)
        log.epoch(1, val_sigma_mad=val["sigma_mad"], val_outlier_frac=val["outlier_frac"])
        if params["refit_on_val"]:
            model = fit(params, names, np.concatenate([x, xv]), np.concatenate([z, zv]))
        save_skops(model, out / "model.skops")
        log.summary(val_sigma_mad=val["sigma_mad"])
    write_submission(out, name, args.track, "sklearn", "model.skops", describe(params))
    print(f"wrote {out} (val sigma_MAD {val['sigma_mad']:.5f}, eta {val['outlier_frac']:.4f})")
    return model, out
