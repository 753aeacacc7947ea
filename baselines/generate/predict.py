"""Generator of the ``grf`` and ``lognormal-oracle`` baselines (``python`` format, numpy only).

Each latent vector seeds its own generator (its float32 bytes are the seed: the same latent gives the same map),
which draws white noise; the map is that noise filtered by ``amplitude`` (rfft2 grid) and, for the lognormal
oracle, mapped through ``kappa0 * (exp(g - sigma_g2 / 2) - 1)`` (the truth process; Hilbert et al. 2011).
``model.npz`` (written by the baseline's train.py) holds ``amplitude``, ``kappa0`` (NaN: Gaussian) and
``sigma_g2``."""

import numpy as np


def load(model_dir):
    with np.load(f"{model_dir}/model.npz") as f:
        return {k: f[k] for k in ("amplitude", "kappa0", "sigma_g2")}


def predict(model, latents):
    amp, k0, s2 = model["amplitude"], float(model["kappa0"]), float(model["sigma_g2"])
    n = amp.shape[0]
    z = np.ascontiguousarray(latents, dtype=np.float32)
    out = np.empty((len(z), 1, n, n), np.float32)
    for i, row in enumerate(z):
        rng = np.random.default_rng(np.frombuffer(row.tobytes(), np.uint32))
        g = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, n))) * amp, s=(n, n))
        out[i, 0] = g if np.isnan(k0) else k0 * np.expm1(g - s2 / 2)
    return out
