"""Richardson-Lucy deconvolution with the track's known degradation PSF (scikit-image), a ``python`` submission.

``load`` reads ``psf.npy`` (the 2-D degradation kernel from the release manifest) and ``rl.json`` (iterations and
the pedestal per band, tuned on the validation split by ``train.py``). Per band: add the pedestal (RL
needs positive data; the images are sky-subtracted), clip at a tiny positive value, pad by reflection (no
edge ringing from the zero padding), run ``skimage.restoration.richardson_lucy`` and undo pad and pedestal.
Output: the same shape and units (e-/s per pixel) as the input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from skimage.restoration import richardson_lucy

FLOOR = 1e-6  # e-/s per pixel: RL's multiplicative update needs positive data


def load(model_dir: str) -> dict[str, Any]:
    folder = Path(model_dir)
    cfg = json.loads((folder / "rl.json").read_text())
    cfg["psf"] = np.load(folder / "psf.npy")
    return cfg


def deconvolve(images: np.ndarray, psf: np.ndarray, num_iter: int, pedestal: np.ndarray) -> np.ndarray:
    """(B, bands, H, W): RL of ``images + pedestal`` (per band; reflect-padded by the PSF half-width), minus the
    pedestal. The whole batch is one call: a (B, bands, H, W) image with a (1, 1, h, w) PSF deconvolves every
    plane with the 2-D PSF."""
    pad = psf.shape[0] // 2
    ped = np.asarray(pedestal, dtype=np.float64)[None, :, None, None]
    data = np.clip(images.astype(np.float64) + ped, FLOOR, None)
    data = np.pad(data, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = richardson_lucy(data, psf[None, None], num_iter=int(num_iter), clip=False, filter_epsilon=1e-12)
    return out[:, :, pad:-pad, pad:-pad] - ped


def predict(model: dict[str, Any], batch: np.ndarray) -> np.ndarray:
    return deconvolve(batch, model["psf"], model["num_iter"], model["pedestal"]).astype(np.float32)
