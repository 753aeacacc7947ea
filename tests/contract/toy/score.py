"""The toy task's scorer: relative flux errors of the returned fluxes against the true ones.

Written to ``out_dir`` (the organiser's folder): ``metrics.json`` and ``fluxes.csv`` (id, true flux, returned
flux, relative error; ``real_fluxes.csv`` for the real set): per-object truth, so participants see only the
metrics (skybench.harness.visibility)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from skybench.release.reader import HiddenSplit


def rel_flux_metrics(flux: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """median and 68th percentile of |f_pred - f| / f, and the median of the signed error (the bias)."""
    rel = (np.asarray(predicted, np.float64) - flux) / flux
    return {"median_rel_flux_error": float(np.median(np.abs(rel))),
            "p68_rel_flux_error": float(np.percentile(np.abs(rel), 68.27)),
            "median_rel_flux_bias": float(np.median(rel))}


def true_flux(truth: HiddenSplit, ids: np.ndarray) -> np.ndarray:
    return truth.truth(ids, ["flux"])["flux"].to_numpy(np.float64)


def score_toy(ids: np.ndarray, predictions: np.ndarray, truth: HiddenSplit, out_dir: Path | None,
              prefix: str = "") -> dict[str, float]:
    """Metrics named ``<prefix><metric>``; ``prefix="real_"`` for the real set (its table: ``real_fluxes.csv``)."""
    flux = true_flux(truth, ids)
    pred = np.asarray(predictions, np.float64)
    if pred.shape != flux.shape:
        raise ValueError(f"predictions have shape {pred.shape}, expected {flux.shape} (one flux per object)")
    metrics = {f"{prefix}{k}": v for k, v in rel_flux_metrics(flux, pred).items()}
    if out_dir is None:  # the harness's public and private part scorings: nobody keeps their files
        return metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": ids, "flux": flux, "predicted": pred, "rel_error": (pred - flux) / flux}) \
        .to_csv(out_dir / f"{prefix}fluxes.csv", index=False)
    if not prefix:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics
