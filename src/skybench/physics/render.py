"""One renderer for every simulator: supersampled pixel grid, binning, per-band PSF (on the refined cores, from their
sub-pixel cells), noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybench.physics import kernels as K
from skybench.physics.backend import Backend
from skybench.physics.light import _SMOOTHING, ellipse_metric, sersic_profile_
from skybench.physics.noise import background_sigma
from skybench.physics.psf import convolution_matrix, gaussian_kernel_1d, pixel_integrated_gaussian_weights

# Adaptive supersampling of the cores (lenstronomy ImageNumerics compute_mode='adaptive', nested): the CORE_PATCH^2
# cells around a centred profile's centre are re-evaluated CORE_FACTOR^2 times, and so again ``core_levels`` times
# within each patch, a patch of the cells next to the centre. perf/core_convergence.py chose 7 and 4: with 5 levels
# the peak pixel of a Sersic n <= 8 with R_sersic >= pixel/4 is within 0.25% of its pixel integral. The same cells
# carry the cores through the PSF (Renderer.core_psf; perf/psf_cores.py).
CORE_PATCH, CORE_FACTOR = 7, 4


@dataclass(frozen=True)
class Cores:
    """The nested cells of :meth:`Renderer.refine_cores` for P profiles, for the PSF integrated over the pixels from
    them (:meth:`Renderer.core_psf`). ``cells`` (levels, P, q*F, q*F): each level's flux per cell, with the cells
    that the next level refines set to 0; ``top``, ``left`` (P,): the patch's first pixel; ``ey``, ``ex`` (levels,
    P): each level's patch edge and ``cy``, ``cx`` (P,): the profile's centre, in pixels past the patch's edge."""

    cells: Any
    top: np.ndarray
    left: np.ndarray
    ey: np.ndarray
    ex: np.ndarray
    cy: np.ndarray
    cx: np.ndarray


class Renderer:
    """Pixel grid and image formation for (B, bands, size, size) cut-outs.

    Coordinates follow lenstronomy with ``transform_pix2angle = pixel_scale * I`` and pixel (0, 0) at
    (-(size-1)/2, -(size-1)/2) * pixel_scale: x runs along columns, y along rows. Surface brightness is
    evaluated on a grid supersampled ``supersampling`` times per axis, averaged and multiplied by the pixel
    area, then convolved at the native resolution (lenstronomy's default supersampling_convolution=False).
    :meth:`image` then replaces the pixels around each profile's centre with nested finer grids (``core_levels``
    of them; 0: none), and :meth:`convolve` given their :class:`Cores` blurs those from the finer cells by the PSF
    integrated over the pixels (lenstronomy supersampling_convolution=True, there). Ray-traced (lensed) light is
    refined by its simulator (lens: ``LensSimulator._refine_arcs``, which picks its pixels by :meth:`spread`).
    """

    def __init__(self, size: int, pixel_scale: float, supersampling: int, bands: Sequence[Any],
                 backend: Backend, core_levels: int):
        self.size, self.pixel_scale, self.supersampling, self.backend = size, pixel_scale, supersampling, backend
        self.core_levels = core_levels
        s = supersampling
        # lenstronomy util.make_subgrid: sub-pixel centres at (k + 1/2)/s - 1/2 pixel from the centre.
        sub = (np.arange(size * s) + 0.5) / s - 0.5
        coords = (sub - (size - 1) / 2.0) * pixel_scale
        xx, yy = np.meshgrid(coords, coords)  # xx varies along columns
        self.x, self.y = backend.asarray(xx[None]), backend.asarray(yy[None])
        self.coords = coords  # x of the columns and y of the rows (float64)
        self._work: dict[str, Any] = {}
        self._core_tables: dict[tuple[int, int, int], Any] = {}
        kernels = [gaussian_kernel_1d(b.seeing, pixel_scale) for b in bands]
        mats = np.stack([convolution_matrix(k, size) for k in kernels])[None]  # (1, bands, n, n)
        # the cores' PSF windows: the patch grown by the widest kernel's half-width
        self.seeing, h = [b.seeing for b in bands], max(len(k) for k in kernels) // 2
        q, self.psf_half = min(CORE_PATCH, size), h
        self._core_conv = np.stack([convolution_matrix(np.pad(k, h - len(k) // 2), q + 2 * h)[:, h:h + q]
                                    for k in kernels])[None]  # (1, bands, w, q): the patch's pixels -> the window
        self._conv, self._conv_t = backend.asarray(mats), backend.asarray(np.swapaxes(mats, -1, -2))
        # The convolution matrices are banded (half-width h): on numpy, products by row blocks of ~n/4 skip
        # most of the zeros (about 2.5x fewer operations at 101 pixels); exact, the band holds every tap.
        h, bs = max(len(k) for k in kernels) // 2, -(-size // 4)
        self._blocks = [(i, min(size, i + bs), max(0, i - h), min(size, i + bs + h))
                        for i in range(0, size, bs)] if 2 * h < bs else None
        self.sigma_bkg = np.array([background_sigma(b.read_noise, b.exposure_time, b.num_exposures,
                                                    b.sky_brightness, b.zero_point, pixel_scale) for b in bands])
        self.total_time = np.array([b.num_exposures * b.exposure_time for b in bands])

    def workspace(self, name: str, shape: tuple[int, ...]) -> Any:
        """A scratch array of the backend, reused between calls on numpy (fresh large temporaries cost page
        faults there); its contents are undefined and the next request of ``name`` overwrites them."""
        if self.backend.name != "numpy":
            return K.empty(shape, self.x)
        size = math.prod(shape)
        buf = self._work.get(name)
        if buf is None or buf.size < size:
            buf = self._work[name] = np.empty(size, dtype=self.backend.dtype)
        return buf[:size].reshape(shape)

    def quadratic_form(self, qxx: Any, qxy: Any, qyy: Any, center_x: Any, center_y: Any, const: Any = 0.0,
                       out: Any = None) -> Any:
        """qxx dx^2 + 2 qxy dx dy + qyy dy^2 + const on the supersampled grid, dx = x - center_x, ..., for B
        objects (per-object numpy values, (B,) or (B, 1, 1)): (B, n*s, n*s), one batched matrix product."""
        L, R = K.quadratic_form_factors(self.coords, self.coords, qxx, qxy, qyy, center_x, center_y, const)
        m = len(self.coords)
        out = out if out is not None else K.empty((max(len(L), len(R)), m, m), self.x)
        return K.matmul(K.lift(L, self.x), K.lift(R, self.x), out=out)

    @staticmethod
    def _form(kind: str, params: Sequence[Any]) -> tuple[Any, Any, Any, Any]:
        """(qxx, qxy, qyy, const) per object (B,) of the quadratic form under a profile's exponent: (R / R_sersic)^2
        for "sersic" (R_sersic, n_sersic, e1, e2, ...), -R^2 / 2 sigma^2 + log(1 / 2 pi sigma^2) for "gaussian"
        (sigma, e1, e2, ...); the centre follows the shape parameters."""
        a = np.asarray(params[0], dtype=np.float64).reshape(-1)
        e1, e2 = params[-4:-2]
        if kind == "sersic":
            k, const = 1 / np.maximum(a, _SMOOTHING) ** 2, np.zeros_like(a)
        else:
            k, const = -0.5 / a**2, -np.log(2 * np.pi * a**2)
        qxx, qxy, qyy = (np.reshape(v, -1) * k for v in ellipse_metric(np.reshape(e1, -1), np.reshape(e2, -1)))
        return qxx, qxy, qyy, const

    @staticmethod
    def _finish(kind: str, form: Any, params: Sequence[Any]) -> Any:
        """The quadratic form of :meth:`_form` -> the profile, in place."""
        if kind == "sersic":
            return sersic_profile_(form, np.reshape(params[0], -1), np.reshape(params[1], -1))
        return K.module(form).exp(form, out=form)

    def profile(self, kind: str, *params: Any, out: Any = None) -> Any:
        """light.sersic_ellipse ("sersic": R_sersic, n_sersic, e1, e2, center_x, center_y) or
        light.gaussian_ellipse ("gaussian": sigma, e1, e2, center_x, center_y) with amp = 1 on the supersampled
        grid, (B, n*s, n*s): the exponent's argument is one quadratic form (one batched matrix product)."""
        qxx, qxy, qyy, const = self._form(kind, params)
        form = self.quadratic_form(qxx, qxy, qyy, params[-2], params[-1], const=const, out=out)
        return self._finish(kind, form, params)

    def sersic(self, R_sersic: Any, n_sersic: Any, e1: Any, e2: Any, center_x: Any, center_y: Any,
               out: Any = None) -> Any:
        """light.sersic_ellipse with amp = 1 on the supersampled grid, (B, n*s, n*s)."""
        return self.profile("sersic", R_sersic, n_sersic, e1, e2, center_x, center_y, out=out)

    def gaussian(self, sigma: Any, e1: Any, e2: Any, center_x: Any, center_y: Any, out: Any = None) -> Any:
        """light.gaussian_ellipse with amp = 1 on the supersampled grid, (B, n*s, n*s)."""
        return self.profile("gaussian", sigma, e1, e2, center_x, center_y, out=out)

    def image(self, kind: str, *params: Any, out: Any = None) -> Any:
        """(B, n, n) flux per pixel of :meth:`profile`'s profiles: binned from the supersampled grid, the pixels
        around each centre refined by :meth:`refine_cores`."""
        return self.image_cores(kind, *params, out=out)[0]

    def image_cores(self, kind: str, *params: Any, out: Any = None) -> tuple[Any, Cores | None]:
        """:meth:`image` and its :class:`Cores` (None without core levels), for :meth:`convolve`."""
        m = len(self.coords)
        sb = self.profile(kind, *params, out=self.workspace("sb", (len(np.reshape(params[0], -1)), m, m)))
        return self.refine_cores(self.bin(sb, out=out), kind, *params)

    def refine_cores(self, img: Any, kind: str, *params: Any) -> tuple[Any, Cores | None]:
        """In place: the CORE_PATCH^2 pixels of ``img`` (B, n, n) around each profile's centre (clipped to the
        frame) -> their integrals on nested grids. Level 0's cells are pixels; each level samples its cells'
        centres CORE_FACTOR^2 times, and the next level's patch, CORE_PATCH^2 of those samples around the centre,
        replaces them by their own cell means. All levels of all objects are one batched quadratic form.
        Returns ``img`` and the levels' cells (:class:`Cores`)."""
        L, F = self.core_levels, CORE_FACTOR
        q = min(CORE_PATCH, self.size)
        if L == 0:
            return img, None
        cx, cy = (np.asarray(c, dtype=np.float64).reshape(-1) for c in params[-2:])
        qxx, qxy, qyy, const = (np.broadcast_to(v, cx.shape) for v in self._form(kind, params))
        x0 = y0 = np.full(cx.shape, -self.size / 2 * self.pixel_scale)  # the left (lower) edge of the frame
        h, cells, offsets, origins = self.pixel_scale, self.size, [], []
        for _ in range(L):  # the patch of each level: q cells of size h from cell (tx, ty) of the level above
            tx, ty = (np.clip(np.nan_to_num(np.floor((c - o) / h)) - q // 2, 0, cells - q).astype(np.int64)
                      for c, o in ((cx, x0), (cy, y0)))  # a NaN centre: a NaN image, as on the plain grid
            x0, y0 = x0 + tx * h, y0 + ty * h
            offsets.append((ty, tx))
            origins.append((x0, y0, h))
            h, cells = h / F, q * F
        # in units of each level's cell size h: x = x0 + h u, so the form's coefficients scale by h^2
        u = (np.arange(q * F) + 0.5) / F
        X0, Y0, H = (np.concatenate(v) for v in zip(*[(a, b, np.full(cx.shape, c)) for a, b, c in origins],
                                                        strict=True))
        a, b, c = (np.tile(v, L) * H**2 for v in (qxx, qxy, qyy))
        Lf, Rf = K.quadratic_form_factors(u, u, a, b, c, (np.tile(cx, L) - X0) / H, (np.tile(cy, L) - Y0) / H,
                                          np.tile(const, L))
        B = len(cx)
        vals = K.empty((L * B, q * F, q * F), img)
        K.matmul(K.lift(Lf, img), K.lift(Rf, img), out=vals)
        tiled = [np.tile(np.broadcast_to(np.reshape(p, -1), cx.shape), L) for p in params]
        vals = self._finish(kind, vals, tiled).reshape(L, B, q * F, q * F)

        def cell_means(v: Any) -> Any:
            return v.reshape(B, q, F, q, F).sum((2, 4)) * (1.0 / F**2)

        means, zeros = cell_means(vals[L - 1]), K.lift(np.zeros((B, q, q)), img)
        for k in range(L - 2, -1, -1):
            K.put_blocks_(vals[k], *offsets[k + 1], means)
            means = cell_means(vals[k])
            K.put_blocks_(vals[k], *offsets[k + 1], zeros)  # those cells are the next level's
        means *= self.pixel_scale**2
        vals *= K.lift((self.pixel_scale / F ** np.arange(1.0, L + 1)).reshape(L, 1, 1, 1) ** 2, img)  # flux
        # each level's patch edge in pixels past level 0's: offsets in cells of 1 / F^k pixel
        ey, ex = (np.cumsum([o[i] / float(F) ** k for k, o in enumerate(offsets)][1:], axis=0) for i in (0, 1))
        ey, ex = (np.concatenate([np.zeros((1, B)), e.reshape(L - 1, B)]) for e in (ey, ex))
        centre = [(c - o) / self.pixel_scale for c, o in ((cy, origins[0][1]), (cx, origins[0][0]))]
        return K.put_blocks_(img, *offsets[0], means), Cores(vals, *offsets[0], ey, ex, *centre)

    def bin(self, surface_brightness: Any, out: Any = None) -> Any:
        """(..., n*s, n*s) surface brightness per arcsec^2 -> (..., n, n) flux per pixel."""
        s, n, sb = self.supersampling, self.size, surface_brightness
        m = K.module(sb)
        out = out if out is not None else K.empty(tuple(sb.shape[:-2]) + (n, n), sb)
        if s == 1:
            m.multiply(sb, 1.0, out=out)
        else:  # rows first (contiguous runs), then columns: much faster than strided sums of s*s lattices
            rows = self.workspace("bin_rows", tuple(sb.shape[:-2]) + (n, n * s))
            m.add(sb[..., 0::s, :], sb[..., 1::s, :], out=rows)
            for i in range(2, s):
                rows += sb[..., i::s, :]
            m.add(rows[..., 0::s], rows[..., 1::s], out=out)
            for j in range(2, s):
                out += rows[..., j::s]
        out *= self.pixel_scale**2 / s**2
        return out

    def spread(self, surface_brightness: Any) -> Any:
        """(..., n*s, n*s) -> (..., n, n): the range (max - min) of each pixel's s^2 sub-samples, a new array."""
        s, m = self.supersampling, K.module(surface_brightness)
        hi = lo = surface_brightness
        for axis in (-2, -1):  # rows, then columns
            def take(a: Any, i: int, axis: int = axis) -> Any:
                return a[..., i::s, :] if axis == -2 else a[..., i::s]

            h, low = hi, lo
            hi, lo = take(h, 0), take(low, 0)
            for i in range(1, s):
                hi, lo = m.maximum(hi, take(h, i)), m.minimum(lo, take(low, i))
        return hi - lo

    def convolve(self, images: Any, cores: Sequence[tuple[Cores, np.ndarray, np.ndarray]] = ()) -> Any:
        """Convolve (B, bands, n, n) images with each band's PSF. ``cores``: (Cores, amplitudes (P, bands), rows
        of ``images`` (P,)) of the refined profiles in ``images``: their cores blurred from the cells
        (:meth:`core_psf`), in that order (so an object's image does not depend on the batch)."""
        out = self._convolve(images)
        for c, amps, rows in cores:
            win = self.core_psf(c)
            win *= K.lift(np.asarray(amps, dtype=np.float64)[:, :, None, None], win)
            start = 0
            while start < len(rows):  # runs without a repeated row, in order
                _, first = np.unique(rows[start:], return_index=True)
                repeat = np.setdiff1d(np.arange(len(rows) - start), first)
                stop = start + (int(repeat[0]) if repeat.size else len(rows) - start)
                part = slice(start, stop)
                K.add_blocks_(out, rows[part], c.top[part] - self.psf_half, c.left[part] - self.psf_half, win[part])
                start = stop
        return out

    def core_psf(self, cores: Cores) -> Any:
        """(P, bands, w, w) per unit amplitude, w = CORE_PATCH + 2 psf_half, window (0, 0) at pixel (top - psf_half,
        left - psf_half), what :meth:`convolve` adds: the cores' light, tapered, blurred by each band's PSF
        integrated over the pixels from every level's cells (as points), less its pixels blurred by the PSF sampled
        at pixel centres: lenstronomy's supersampling_convolution=True (Numerics: the supersampled image convolved,
        then binned) on the core. The taper, per axis 1 - 3 t^4 + 2 t^6 of the distance t to the centre over 3
        pixels, leaves the light around the core to the pixel-sampled PSF, right there in sum: cut at the patch's
        edge, each side's pixels were 0.5% of the peak off (perf/psf_cores.py)."""
        L, P, c = cores.cells.shape[:3]
        q, F = c // CORE_FACTOR, CORE_FACTOR
        table, half = self._core_weights(L, q), max((q - 1) / 2, 1e-12)
        first = np.cumsum([0] + [F**k for k in range(L - 1)])[:, None]  # each level's first phase in ``table``
        cells = K.empty(tuple(cores.cells.shape), cores.cells)
        cells[...] = cores.cells
        g, b = [], []
        for e, centre, axis in ((cores.ey, cores.cy, -2), (cores.ex, cores.cx, -1)):
            u = e[:, :, None] + (np.arange(c) + 0.5) / float(F) ** np.arange(1, L + 1)[:, None, None]  # (L, P, c)
            t2 = np.clip((u - centre[:, None]) / half, -1, 1) ** 2
            taper = (1 - t2) ** 2 * (1 + 2 * t2)  # 1 - 3 t^4 + 2 t^6: flat at the centre, 0 with zero slope at t = 1
            cells *= K.lift(np.expand_dims(taper, -1 if axis == -2 else -2), cells)  # rows: the y taper
            n = np.floor(e).astype(np.int64)  # each level's rows: its phase's, shifted by whole pixels
            phase = first + np.rint((e - n) * F ** np.arange(L)[:, None]).astype(np.int64)
            rows = (q - n)[:, :, None] + np.arange(q + 2 * self.psf_half)  # (L, P, w)
            bands = np.arange(len(self.seeing))[:, None]
            g.append(K.gather(table, phase[:, :, None, None], bands, rows[:, :, None]))  # (L, P, bands, w, c)
            b.append(K.lift(np.floor(u)[:, :, None] == np.arange(q)[:, None], cells))  # (L, P, q, c): the pixels
        fine = g[0] @ cells[:, :, None] @ g[1].swapaxes(-1, -2)  # (L, P, bands, w, w)
        pixels = b[0] @ cells @ b[1].swapaxes(-1, -2)  # (L, P, q, q)
        out, pix = fine[0], pixels[0]
        for k in range(1, L):  # one order per object: independent of the batch
            out += fine[k]
            pix += pixels[k]
        conv = K.lift(self._core_conv, cores.cells)
        out -= conv @ pix[:, None] @ K.lift(np.swapaxes(self._core_conv, -1, -2), cores.cells)
        return out

    def _core_weights(self, levels: int, q: int) -> Any:
        """(phases, bands, q + w + 1, q F) on the backend: for each level k, F^k phases of the PSF integrated
        over the pixels of its cells, the patch's edge at phase / F^k pixel and the rows shifted by q (a patch offset
        by n pixels takes rows q - n to q - n + w - 1). Computed once per renderer."""
        key = (levels, q, CORE_FACTOR)
        if key not in self._core_tables:
            F, h = CORE_FACTOR, self.psf_half
            self._core_tables[key] = K.lift(np.concatenate([pixel_integrated_gaussian_weights(
                self.seeing, self.pixel_scale, (np.arange(F**k) / F**k)[:, None] + q + h
                + (np.arange(q * F) + 0.5) / float(F) ** (k + 1), 2 * q + 2 * h + 1)
                for k in range(levels)]), self.x)
        return self._core_tables[key]

    def _convolve(self, images: Any) -> Any:
        """Convolve (B, bands, n, n) images with each band's pixel-sampled PSF."""
        if self.backend.name != "numpy" or self._blocks is None:
            return self._conv @ images @ self._conv_t
        shape = tuple(np.broadcast_shapes(self._conv.shape, images.shape))
        tmp, out = self.workspace("conv", shape), np.empty(shape, dtype=self.backend.dtype)
        for i0, i1, j0, j1 in self._blocks:  # rows i0:i1 of C @ images use only rows j0:j1 of images
            np.matmul(self._conv[..., i0:i1, j0:j1], images[..., j0:j1, :], out=tmp[..., i0:i1, :])
        for i0, i1, j0, j1 in self._blocks:
            np.matmul(tmp[..., j0:j1], self._conv_t[..., j0:j1, i0:i1], out=out[..., i0:i1])
        return out

    def add_noise(self, images: Any, normal: np.ndarray) -> Any:
        """Add background + Poisson noise to noise-free (B, bands, n, n) images in e-/s, using the
        standard-normal draws ``normal`` (numpy, same shape) so that every backend gets the same noise."""
        m = K.module(images)
        noisy = m.abs(images)
        noisy *= self.backend.asarray(1.0 / self.total_time[None, :, None, None])
        noisy += self.backend.asarray(self.sigma_bkg[None, :, None, None] ** 2)
        m.sqrt(noisy, out=noisy)
        noisy *= self.backend.asarray(normal)
        noisy += images
        return noisy
