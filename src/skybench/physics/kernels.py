"""Batched pixel-grid kernels shared by the profiles: quadratic forms of the coordinates as one matrix
product, in-place element-wise helpers and a float32 arctangent. They work on numpy arrays and torch
tensors alike and write into caller-owned buffers (``out=``), so a batch makes no large temporaries."""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np


def module(a: Any) -> Any:
    """numpy or torch, whichever owns ``a``; both accept ``out=`` in the functions used here."""
    return np if isinstance(a, np.ndarray) else sys.modules["torch"]


def empty(shape: tuple[int, ...], like: Any) -> Any:
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=like.dtype)
    return sys.modules["torch"].empty(shape, dtype=like.dtype, device=like.device)


def lift(a: np.ndarray, like: Any) -> Any:
    """A float64 numpy array -> the dtype and backend of ``like``."""
    if isinstance(like, np.ndarray):
        return np.asarray(a, dtype=like.dtype)
    return sys.modules["torch"].as_tensor(np.array(a, dtype=np.float64), dtype=like.dtype, device=like.device)


def per_object(value: Any, like: Any, ndim: int = 3) -> Any:
    """Per-object numpy values (B,) or any shape of B elements -> (B, 1, ..., 1) beside ``like``."""
    return lift(np.asarray(value, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1)), like)


def matmul(a: Any, b: Any, out: Any) -> Any:
    return module(out).matmul(a, b, out=out)


def take_minus(a: Any, idx: np.ndarray, offset: np.ndarray, out: Any) -> Any:
    """out[k] = a[idx[k]] - offset[k] (per-object numpy offsets) for arrays of shape (B, ...)."""
    if isinstance(a, np.ndarray):  # a copy per object: faster than np.take followed by a subtraction
        for k, (i, o) in enumerate(zip(idx.tolist(), np.asarray(offset, dtype=np.float64).tolist(), strict=True)):
            np.subtract(a[i], o, out=out[k])
        return out
    torch = sys.modules["torch"]
    torch.index_select(a, 0, torch.as_tensor(idx, dtype=torch.long, device=a.device), out=out)
    out -= per_object(offset, out, out.ndim)
    return out


def outer_sum(col_terms: np.ndarray, row_terms: np.ndarray, out: Any) -> Any:
    """out[..., i, j] = col_terms[..., i] + row_terms[..., j] (float64 numpy (..., ny), (..., nx)), as the
    rank-2 product [1, c_i] @ [r_j; 1]: a batched GEMM writes it ~3x faster than numpy's broadcast add."""
    *batch, ny, nx = out.shape
    L, R = np.ones((*batch, ny, 2)), np.ones((*batch, 2, nx))
    L[..., 1], R[..., 0, :] = col_terms, row_terms
    return matmul(lift(L, out), lift(R, out), out=out)


def clamp_min_(a: Any, low: Any) -> Any:
    """a = max(a, low) in place, ``low`` > 0 per object beside ``a``. For IEEE floats the order of
    non-negative values is that of their bit patterns as signed integers, and negative values (sign bit set)
    come below every positive one, so on numpy an integer maximum gives the same result, ~2x faster."""
    if isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64):
        ints = np.int32 if a.dtype == np.float32 else np.int64
        return np.maximum(a.view(ints), np.asarray(low, dtype=a.dtype).view(ints), out=a.view(ints)).view(a.dtype)
    return module(a).maximum(a, low, out=a)


def rsub_(a: Any, c: float) -> Any:
    """a = c - a in place."""
    if isinstance(a, np.ndarray):
        return np.subtract(c, a, out=a)
    return a.neg_().add_(c)


def scatter_add_(dst: Any, idx: np.ndarray, src: Any) -> Any:
    """dst[idx[k]] += src[k] along the first axis (``idx`` without repeats)."""
    if not isinstance(dst, np.ndarray):
        torch = sys.modules["torch"]
        return dst.index_add_(0, torch.as_tensor(idx, dtype=torch.long, device=dst.device), src)
    if len(idx) == len(dst) and np.array_equal(idx, np.arange(len(dst))):
        dst += src
    elif len(idx) > 8:  # gather, add, scatter
        dst[idx] += src
    else:  # in place per object: cheaper for a few
        for k, i in enumerate(idx.tolist()):
            dst[i] += src[k]
    return dst


def put_blocks_(dst: Any, rows: np.ndarray, cols: np.ndarray, src: Any) -> Any:
    """dst[b, rows[b] + i, cols[b] + j] = src[b, i, j] in place, for (B, ...) arrays and per-object offsets."""
    B, h, w = src.shape
    idx = [np.arange(B)[:, None, None], (rows[:, None] + np.arange(h))[:, :, None],
           (cols[:, None] + np.arange(w))[:, None, :]]
    if not isinstance(dst, np.ndarray):
        torch = sys.modules["torch"]
        idx = [torch.as_tensor(i, dtype=torch.long, device=dst.device) for i in idx]
    dst[tuple(idx)] = src
    return dst


def gather(a: Any, *index: np.ndarray) -> Any:
    """a[index] for numpy integer index arrays, on a's backend."""
    if isinstance(a, np.ndarray):
        return a[index]
    torch = sys.modules["torch"]
    return a[tuple(torch.as_tensor(i, dtype=torch.long, device=a.device) for i in index)]


def add_blocks_(dst: Any, idx: np.ndarray, rows: np.ndarray, cols: np.ndarray, src: Any) -> Any:
    """dst[idx[b], :, rows[b] + i, cols[b] + j] += src[b, :, i, j] in place for a contiguous (N, C, H, W) ``dst`` and
    (B, C, h, w) ``src``, the parts outside dst dropped (``idx`` without repeats)."""
    B, C, h, w = src.shape
    H, W = dst.shape[-2:]
    r, c = rows[:, None] + np.arange(h), cols[:, None] + np.arange(w)  # (B, h), (B, w)
    flat = ((np.asarray(idx)[:, None, None, None] * C + np.arange(C)[:, None, None]) * H + r[:, None, :, None]) * W \
        + c[:, None, None, :]
    inside = ((r >= 0) & (r < H))[:, None, :, None] & ((c >= 0) & (c < W))[:, None, None, :]
    inside = np.broadcast_to(inside, flat.shape).copy()
    if isinstance(dst, np.ndarray):
        assert dst.flags.c_contiguous, "add_blocks_ writes through a flat view"
        dst.reshape(-1)[flat[inside]] += src[inside]
    else:
        torch = sys.modules["torch"]
        mask = torch.as_tensor(inside, device=dst.device)
        dst.view(-1).index_add_(0, torch.as_tensor(flat[inside], device=dst.device), src[mask])
    return dst


def quadratic_form_factors(xs: np.ndarray, ys: np.ndarray, qxx: Any, qxy: Any, qyy: Any, center_x: Any,
                           center_y: Any, const: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Factors L (B, ny, 3), R (B, 3, nx) (float64) with (L @ R)[b, i, j] = f_b(xs[j], ys[i]), where
    f = qxx dx^2 + 2 qxy dx dy + qyy dy^2 + const, dx = x - center_x, dy = y - center_y.

    On a regular grid a quadratic polynomial of (x, y) is a rank-3 matrix (exact algebra):
    f_ij = [qxx dx_j^2 + const] * 1 + 1 * [qyy dy_i^2] + [2 qxy dy_i] * dx_j. Centring on the profile keeps
    the terms of the order of f itself (no cancellation for a positive-definite form)."""
    def col(v: Any) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).reshape(-1, 1)

    qxx, qxy, qyy, const = col(qxx), col(qxy), col(qyy), col(const)
    dx = xs[None, :] - col(center_x)  # (B, nx)
    dy = ys[None, :] - col(center_y)  # (B, ny)
    B = max(len(qxx), len(qxy), len(qyy), len(const), len(dx), len(dy))
    L, R = np.empty((B, len(ys), 3)), np.empty((B, 3, len(xs)))
    L[..., 0], L[..., 1], L[..., 2] = 1.0, qyy * dy**2, 2 * qxy * dy
    R[:, 0], R[:, 1], R[:, 2] = qxx * dx**2 + const, 1.0, dx
    return L, R


def quadratic_form_points(x: Any, y: Any, qxx: Any, qxy: Any, qyy: Any, out: Any, tmp: Any) -> Any:
    """out = qxx x^2 + 2 qxy x y + qyy y^2 at arbitrary points (x, y of shape (B, ...), coefficients
    (B, 1, ..., 1) arrays beside them); ``qxy`` may be None for a form without cross term."""
    m = module(out)
    m.multiply(x, x, out=out)
    out *= qxx
    if qxy is not None:
        m.multiply(x, y, out=tmp)
        tmp *= 2 * qxy
        out += tmp
    m.multiply(y, y, out=tmp)
    tmp *= qyy
    out += tmp
    return out


def _numpy_has_svml() -> bool:
    """numpy's float32 exp, log and arctan are SVML-vectorised only on AVX-512 (Skylake-X and later) CPUs."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # pragma: no cover - numpy < 2
        return False
    return bool(__cpu_features__.get("AVX512_SKX"))


_NUMPY_SVML = _numpy_has_svml()


def exp_mostly_zero_(a: Any) -> Any:
    """exp(a) in place for arguments that are mostly far below zero (compact profiles on a large grid).

    float32 exp underflows to exactly 0 below -104 (half the smallest subnormal is e^-104.0), so on numpy
    without AVX-512 (where exp costs ~2 ns a value) only the arguments above -104.5 are evaluated and the
    rest set to 0: the same bits, about twice as fast when most of the grid is empty."""
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous) or _NUMPY_SVML:
        return module(a).exp(a, out=a)
    flat = a.reshape(-1)
    keep = np.flatnonzero(flat > np.float32(-104.5))
    values = np.exp(flat[keep])
    flat.fill(0)
    flat[keep] = values
    return a


@functools.cache
def _torch_math() -> Any:
    """torch, for float32 log and arctan of numpy arrays (zero-copy views) where numpy's are slower: on CPUs
    without AVX-512, ATen's vectorised (SLEEF) log is ~1.4x numpy's, and numpy's float32 arctan is scalar code
    there (15-20 ns a value). None where numpy is as fast or torch is missing."""
    if _NUMPY_SVML:
        return None
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch


def _unary_(a: Any, numpy_fn: Any, torch_method: str) -> Any:
    """An element-wise function of ``a`` in place: numpy's, or torch's kernel on a numpy view, or the tensor's."""
    if not isinstance(a, np.ndarray):
        return getattr(a, torch_method)()
    torch = _torch_math() if a.dtype == np.float32 else None
    if torch is None:
        return numpy_fn(a, out=a)
    getattr(torch.from_numpy(a), torch_method)()
    return a


def log_(a: Any) -> Any:
    """log(a) in place."""
    return _unary_(a, np.log, "log_")


def atan_(a: Any) -> Any:
    """arctan(a) in place."""
    return _unary_(a, np.arctan, "atan_")
