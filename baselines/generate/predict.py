"""Generator of the ``grf`` and ``lognormal-oracle`` baselines (``python`` format, numpy only).

Each latent vector seeds its own generator (its float32 bytes are the seed: the same latent gives the same map),
which draws white noise; the map is that noise filtered by ``amplitude`` (rfft2 grid) and, for the lognormal
oracle, mapped through ``kappa0 * (exp(g - sigma_g2 / 2) - 1)`` (the truth process; Hilbert et al. 2011).
``model.npz`` (written by the baseline's train.py) holds ``amplitude``, ``kappa0`` (NaN: Gaussian) and
``sigma_g2``. On a conditional track (``wl-maps-conditional``) the batch is the tuple ``(latents, params)`` and
``model.npz`` holds them per grid point (a leading axis; ``kappa0`` too) with ``grid`` (P, 2) = (Omega_m, sigma8):
each map uses the grid point nearest to its ``params`` row (distances in units of each parameter's grid spacing)."""

import numpy as np


def load(model_dir):
    with np.load(f"{model_dir}/model.npz") as f:
        return {k: f[k] for k in ("amplitude", "kappa0", "sigma_g2", "grid") if k in f}


def nearest_point(grid, params):
    """Index of the grid point nearest to each row of ``params`` (N, 2)."""
    grid = np.asarray(grid, np.float64)
    span = np.ptp(grid, axis=0)
    scale = np.where(span > 0, span, 1.0)
    d = (np.asarray(params, np.float64)[:, None, :] - grid[None]) / scale
    return np.argmin((d**2).sum(axis=-1), axis=1)


def _map(row, amp, k0, s2):
    n = amp.shape[0]
    rng = np.random.default_rng(np.frombuffer(row.tobytes(), np.uint32))
    g = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, n))) * amp, s=(n, n))
    return g if np.isnan(k0) else k0 * np.expm1(g - s2 / 2)


def predict(model, batch):
    if isinstance(batch, tuple):
        latents, params = batch
    else:
        latents, params = batch, None
    z = np.ascontiguousarray(latents, dtype=np.float32)
    if "grid" in model:
        if params is None:
            raise ValueError("this model is conditional: it needs the batch (latents, params)")
        point = nearest_point(model["grid"], params)
        k0 = np.broadcast_to(model["kappa0"], (len(model["grid"]),))  # one shift per grid point (or one for all)
        n = model["amplitude"].shape[1]
        out = np.empty((len(z), 1, n, n), np.float32)
        for i, row in enumerate(z):
            p = point[i]
            out[i, 0] = _map(row, model["amplitude"][p], float(k0[p]), float(model["sigma_g2"][p]))
        return out
    amp, k0, s2 = model["amplitude"], float(model["kappa0"]), float(model["sigma_g2"])
    n = amp.shape[0]
    out = np.empty((len(z), 1, n, n), np.float32)
    for i, row in enumerate(z):
        out[i, 0] = _map(row, amp, k0, s2)
    return out
