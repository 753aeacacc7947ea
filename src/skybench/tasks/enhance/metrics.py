"""Image-quality metrics of the enhancement task.

Images are float arrays (N, bands, H, W) in flux per pixel; every per-image function returns one value per
image (N,)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from skybench.common import bootstrap_ci


def _image_pair(pred: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if t.ndim != 4:
        raise ValueError(f"images must be (N, bands, H, W), got truth of shape {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from the truth's {t.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"predictions must be finite; found {int(np.sum(~np.isfinite(p)))} NaN/inf pixel(s)")
    return p, t


def _per_band(value: ArrayLike, bands: int, name: str) -> NDArray[np.float64]:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (bands,))
    if not np.all(v > 0):
        raise ValueError(f"{name} must be positive for every band, got {v.tolist()}")
    return v


def psnr(pred: ArrayLike, truth: ArrayLike, data_range: ArrayLike) -> NDArray[np.float64]:
    """Peak signal-to-noise ratio [dB] per image with a fixed data range R_b per band (inf for identical images)."""
    p, t = _image_pair(pred, truth)
    r = _per_band(data_range, t.shape[1], "data_range")[None, :, None, None]
    # PSNR = 10 log10(R^2 / MSE) (Gonzalez & Woods, Digital Image Processing; skimage.metrics.peak_signal_noise_ratio)
    mse = np.mean(((p - t) / r) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def ssim(pred: ArrayLike, truth: ArrayLike, data_range: ArrayLike) -> NDArray[np.float64]:
    """Mean structural similarity per image, averaged over bands, each with its data range R_b."""
    from skimage.metrics import structural_similarity

    p, t = _image_pair(pred, truth)
    r = _per_band(data_range, t.shape[1], "data_range")
    # Wang et al. 2004 (IEEE TIP 13, 600) Sec. III-C: an 11x11 Gaussian window of sd 1.5, K1 = 0.01, K2 = 0.03
    return np.array([np.mean([structural_similarity(t[i, b], p[i, b], data_range=float(r[b]), gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False)
                              for b in range(t.shape[1])]) for i in range(t.shape[0])])


def flux_rel_error(pred: ArrayLike, truth: ArrayLike, signed: bool = False) -> NDArray[np.float64]:
    """Relative total-flux error per image, (sum pred - sum truth) / sum truth per band, averaged over bands
    (absolute values unless ``signed``)."""
    p, t = _image_pair(pred, truth)
    ft, fp = t.sum(axis=(2, 3)), p.sum(axis=(2, 3))
    if not np.all(ft > 0):
        raise ValueError(f"relative flux error needs a positive total truth flux; {int(np.sum(ft <= 0))} "
                         "band(s) have none")
    rel = (fp - ft) / ft  # (N, bands); a relative error of the total flux (Schawinski et al. 2017 score (m1 - m2)^2)
    return rel.mean(axis=1) if signed else np.abs(rel).mean(axis=1)


def second_moments(images: ArrayLike, pixel_scale: float, weight_sigma: float,
                   iterations: int = 20, strict: bool = True) -> dict[str, NDArray[np.float64]]:
    """Gaussian-weighted second moments of the band-summed images: centroid, size and ellipticity per image.

    Q_ij = sum w I x_i x_j / sum w I about the weighted centroid (``iterations`` re-centrings from the frame
    centre), w a circular Gaussian of ``weight_sigma`` arcsec; size = sqrt((Q_xx + Q_yy) / 2) [arcsec] and
    (e1, e2) = (Q_xx - Q_yy, 2 Q_xy) / (Q_xx + Q_yy) (Bernstein & Jarvis 2002, AJ 123, 583, Eq. 2-5).

    An image without a positive weighted flux (at some re-centring) raises ValueError; with ``strict=False`` it
    has size 0 and ellipticity 0 instead (no light, no shape: a submission's empty output scores badly, the rest
    of its images are still scored)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"images must be (N, bands, H, W), got shape {a.shape}")
    img = a.sum(axis=1)
    n, h, w = img.shape
    ys = (np.arange(h) - (h - 1) / 2.0) * pixel_scale
    xs = (np.arange(w) - (w - 1) / 2.0) * pixel_scale
    cx, cy = np.zeros(n), np.zeros(n)
    dark = np.zeros(n, dtype=bool)  # no positive weighted flux at some step: left at its last centroid
    steps = max(1, iterations)
    for step in range(steps + 1):  # ``steps`` re-centrings, then the moments about the last centroid
        dx, dy = xs[None, None, :] - cx[:, None, None], ys[None, :, None] - cy[:, None, None]
        wi = np.exp(-(dx**2 + dy**2) / (2.0 * weight_sigma**2)) * img
        norm = wi.sum(axis=(1, 2))
        dark |= ~(norm > 0)
        if dark.any() and strict:
            raise ValueError("second moments need a positive weighted flux in every image")
        norm = np.where(dark, 1.0, norm)
        if step == steps:
            break
        cx = np.where(dark, cx, cx + (wi * dx).sum(axis=(1, 2)) / norm)
        cy = np.where(dark, cy, cy + (wi * dy).sum(axis=(1, 2)) / norm)
    qxx, qyy, qxy = ((wi * dx * dx).sum(axis=(1, 2)) / norm, (wi * dy * dy).sum(axis=(1, 2)) / norm,
                     (wi * dx * dy).sum(axis=(1, 2)) / norm)
    trace = np.where(dark, 1.0, qxx + qyy)
    return {"x": cx, "y": cy, "size": np.where(dark, 0.0, np.sqrt(np.clip(trace, 0.0, None) / 2.0)),
            "e1": np.where(dark, 0.0, (qxx - qyy) / trace), "e2": np.where(dark, 0.0, 2.0 * qxy / trace)}


def shape_errors(pred: ArrayLike, truth: ArrayLike, pixel_scale: float,
                 weight_sigma: float) -> dict[str, NDArray[np.float64]]:
    """``size_rel_error`` = |size_pred / size_truth - 1| and ``ellipticity_error`` = |e_pred - e_truth| per image."""
    p, t = _image_pair(pred, truth)
    # a predicted image without light scores badly (size 0); the truth must have some
    mp, mt = second_moments(p, pixel_scale, weight_sigma, strict=False), second_moments(t, pixel_scale, weight_sigma)
    return {"size_rel_error": np.abs(mp["size"] / mt["size"] - 1.0),
            "ellipticity_error": np.hypot(mp["e1"] - mt["e1"], mp["e2"] - mt["e2"])}


def chi2_per_pixel(pred: ArrayLike, truth: ArrayLike, variance: ArrayLike) -> NDArray[np.float64]:
    """chi^2 per pixel of the residual against the truth's known noise: mean((pred - truth)^2 / variance)."""
    p, t = _image_pair(pred, truth)
    var = np.broadcast_to(np.asarray(variance, dtype=np.float64), t.shape)
    if not np.all(var > 0):
        raise ValueError("chi^2 needs a positive noise variance in every pixel")
    # chi^2 / N_pix = (1/N) sum (d - m)^2 / sigma^2 (e.g. Press et al., Numerical Recipes, Sec. 15.1)
    return np.mean((p - t) ** 2 / var, axis=(1, 2, 3))


def truth_variance(truth: ArrayLike, sigma_bkg: ArrayLike, total_time: ArrayLike) -> NDArray[np.float64]:
    """Noise variance of each truth pixel: sigma_bkg^2 + max(truth, 0) / T per band (lenstronomy data_util:
    background + Poisson), the truth itself standing in for its noise-free model."""
    t = np.asarray(truth, dtype=np.float64)
    s = np.asarray(sigma_bkg, dtype=np.float64)
    s = s.reshape((-1, t.shape[1], 1, 1)) if s.ndim == 2 else s.reshape(1, -1, 1, 1)
    tt = np.asarray(total_time, dtype=np.float64).reshape(1, -1, 1, 1)
    return s**2 + np.clip(t, 0.0, None) / tt


def display_stretch(images: ArrayLike, low: ArrayLike, high: ArrayLike) -> NDArray[np.float64]:
    """Schawinski et al. 2017's display stretch with a fixed flux range [low_b, high_b] per band (their [-0.1, 4]
    nanomaggies): clip to the range, rescale to [0, 1], then asinh(10 x) / 3; values in [0, asinh(10)/3]."""
    a = np.asarray(images, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1)
    hi = np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1)
    if not np.all(hi > lo):
        raise ValueError(f"display stretch needs high > low in every band, got {np.ravel(low)} / {np.ravel(high)}")
    # Schawinski et al. 2017 (arXiv:1702.00403), Sec. 2.2: x -> asinh(10 x) / 3 after clipping and rescaling
    return np.arcsinh(10.0 * np.clip((a - lo) / (hi - lo), 0.0, 1.0)) / 3.0


STRETCH_RANGE = float(np.arcsinh(10.0) / 3.0)  # the data range of display_stretch


def stretched_psnr(pred: ArrayLike, truth: ArrayLike, low: ArrayLike, high: ArrayLike) -> NDArray[np.float64]:
    """PSNR [dB] per image of the display-stretched images, data range asinh(10)/3 (the stretch's full range)."""
    p, t = _image_pair(pred, truth)
    return psnr(display_stretch(p, low, high), display_stretch(t, low, high), STRETCH_RANGE)


CHUNK = 256  # images scored at a time by image_metrics


def image_metrics(pred: ArrayLike, truth: ArrayLike, *, stretch_low: ArrayLike, stretch_high: ArrayLike,
                  flux_range: ArrayLike, variance: ArrayLike, pixel_scale: float, weight_sigma: float,
                  n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, NDArray[np.float64]]]:
    """Image-quality metrics of the enhancement track: the mean over images of each per-image value and its
    bootstrap CI (``<name>_ci_low``/``_ci_high``; NaN with ``n_resamples=0``); also the per-image values.

    ``psnr`` and ``ssim`` are on the display-stretched images (:func:`display_stretch`), ``psnr_flux`` on the flux
    with the fixed data range ``flux_range`` per band; the others on the flux."""
    p, t = _image_pair(pred, truth)
    var = np.asarray(variance, dtype=np.float64)
    parts = []
    for i in range(0, max(len(t), 1), CHUNK):  # the temporaries of a chunk, not of the whole set (~0.6 MB an image)
        sl = slice(i, i + CHUNK)
        pp, tt, v = p[sl], t[sl], var[sl] if var.ndim == 4 and len(var) == len(t) else var
        sp, st = display_stretch(pp, stretch_low, stretch_high), display_stretch(tt, stretch_low, stretch_high)
        parts.append({"psnr": psnr(sp, st, STRETCH_RANGE), "ssim": ssim(sp, st, STRETCH_RANGE),
                      "psnr_flux": psnr(pp, tt, flux_range),
                      "flux_rel_error": flux_rel_error(pp, tt), "flux_bias": flux_rel_error(pp, tt, signed=True),
                      **shape_errors(pp, tt, pixel_scale, weight_sigma), "chi2": chi2_per_pixel(pp, tt, v)})
    per = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    out: dict[str, float] = {}
    for name, values in per.items():
        out[name] = float(np.mean(values))
        if not n_resamples:
            low, high = float("nan"), float("nan")
        elif not np.all(np.isfinite(values)):  # e.g. PSNR of an exact copy (inf): no interval to speak of
            low = high = out[name]
        else:
            low, high = bootstrap_ci(np.mean, values, n_resamples=n_resamples, seed=seed)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out, per
