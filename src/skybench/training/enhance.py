"""Helpers shared by the enhancement baselines (``baselines/enhance/*/train.py``): the degradation from the release
manifest, the public (degraded, truth) pairs, and the track's validation metric.

Only the public ``train`` and ``val`` splits are read; the hidden test truth never is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skybench.tasks.enhance.metrics import stretched_psnr

__all__ = ["Degradation", "load_pairs", "read_degradation", "val_psnr"]


@dataclass(frozen=True)
class Degradation:
    """The release's public degradation recipe, per band of the track (in the track's band order)."""

    sigma: np.ndarray  # float64 (bands,): noise sigma of the degraded images, e-/s per pixel
    low: list[float]  # the metric's display stretch range, per band
    high: list[float]
    psf: np.ndarray  # float64 (k, k): the degradation PSF (outer product of the 1-D kernel)
    fwhm_arcsec: float


def read_degradation(release: str | Path, bands: list[str]) -> Degradation:
    """``degradation`` of the release manifest for ``bands`` (an error naming the release when it has none)."""
    from skybench.release.reader import open_release

    deg = open_release(release).manifest.get("degradation")
    if not deg:
        raise ValueError(f"{release}: no 'degradation' in the manifest; is it an enhance release?")
    k1 = np.asarray(deg["psf_kernel_1d"], dtype=np.float64)
    return Degradation(sigma=np.array([deg["sigma_degraded"][b] for b in bands], dtype=np.float64),
                       low=[float(deg["display_stretch"]["low"][b]) for b in bands],
                       high=[float(deg["display_stretch"]["high"][b]) for b in bands],
                       psf=np.outer(k1, k1), fwhm_arcsec=deg["psf_fwhm_arcsec"])


def load_pairs(release: str | Path, split: str, max_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, truth) float32 arrays (N, bands, H, W) of the first ``max_n`` objects of a public split."""
    if split not in ("train", "val"):
        raise ValueError(f"baselines train on the public train/val splits only, not {split!r}")
    from skybench.release.reader import open_release

    rel = open_release(release)
    n = len(rel.images(split)) if max_n is None else min(max_n, len(rel.images(split)))
    return (np.ascontiguousarray(rel.images(split)[:n], dtype=np.float32),
            np.ascontiguousarray(rel.array(split, "truth")[:n], dtype=np.float32))


def val_psnr(pred: np.ndarray, truth: np.ndarray, deg: Degradation) -> float:
    """Mean PSNR of the display-stretched images: the track's primary metric, on a validation split."""
    return float(np.mean(stretched_psnr(pred, truth, deg.low, deg.high)))
