"""Philox4x32-10, a counter-based generator, on numpy and torch alike (Salmon et al. 2011, "Parallel random
numbers: as easy as 1, 2, 3", SC'11; the Random123 reference).

Every value is a pure function of (key, counter): an object's draws come from its own key (its 63-bit seed) and
the draw's index, so they do not depend on the batch, the chunking or the device. The integer arithmetic is
exact on both backends (32-bit words held in int64, products split into 16-bit halves), so numpy and torch give
the same bits; the uniforms built from them are exact too, and only the transcendental functions of the normals
may differ in the last ulp between backends."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skybench.physics.backend import Backend

# Random123 philox.h: PHILOX_M4x32_0/1 and the Weyl key increments PHILOX_W32_0/1.
_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF
ROUNDS = 10
STREAMS = {"uniform": 0, "normal": 1, "noise": 2}  # the counter's third word: one stream per use


def _mulhilo(a: Any, m: int) -> tuple[Any, Any]:
    """(hi, lo) 32-bit words of a * m for int64-held words a and a constant m < 2^32, without overflow."""
    m_hi, m_lo = m >> 16, m & 0xFFFF
    p_lo, p_hi = a * m_lo, a * m_hi  # each < 2^48
    return (p_hi + (p_lo >> 16)) >> 16, (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK


def philox4x32(c0: Any, c1: Any, c2: Any, c3: Any, k0: Any, k1: Any, rounds: int = ROUNDS) -> tuple[Any, ...]:
    """The four 32-bit output words for counters (c0..c3) and keys (k0, k1): integer arrays (int64 holding
    uint32 values) that broadcast together, all numpy or all torch."""
    for r in range(rounds):
        if r:  # the key schedule (Random123 philox4x32bumpkey)
            k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _blocks(be: Backend, keys: np.ndarray, n_blocks: int, stream: int) -> tuple[Any, ...]:
    """(objects, n_blocks) output words of each object's key (its seed) over counters 0..n_blocks-1."""
    seeds = np.asarray(keys, dtype=np.uint64)
    k0 = be.index((seeds & np.uint64(_MASK)).astype(np.int64))[:, None]
    k1 = be.index((seeds >> np.uint64(32)).astype(np.int64))[:, None]
    ctr = be.index(np.arange(n_blocks, dtype=np.int64))[None, :]
    lo, hi = ctr & _MASK, ctr >> 32
    return philox4x32(lo, hi, stream, 0, k0, k1)


def uniform64(be: Backend, keys: np.ndarray, n: int, stream: str = "uniform") -> Any:
    """(objects, n) float64 uniforms on [0, 1) with 53 random bits each (two words per value, numpy's
    construction: (a >> 5) 2^26 + (b >> 6), over 2^53), on the backend's device."""
    x0, x1, x2, x3 = _blocks(be, keys, -(-n // 2), STREAMS[stream])
    xp = be.xp
    a = xp.reshape(xp.stack([x0, x2], axis=-1), (len(keys), -1))[:, :n]
    b = xp.reshape(xp.stack([x1, x3], axis=-1), (len(keys), -1))[:, :n]
    return xp.astype((a >> 5) * 67108864 + (b >> 6), xp.float64) * (1.0 / 9007199254740992.0)


def normal64(be: Backend, keys: np.ndarray, n: int, stream: str = "normal") -> Any:
    """(objects, n) float64 standard normals by Box-Muller (Box & Muller 1958) on pairs of 53-bit uniforms."""
    xp = be.xp
    u = uniform64(be, keys, 2 * (-(-n // 2)), stream)
    u1, u2 = 1.0 - u[:, 0::2], u[:, 1::2]  # u1 in (0, 1]: log(u1) is finite
    r = xp.sqrt(-2.0 * xp.log(u1))
    z = xp.stack([r * xp.cos(2 * math.pi * u2), r * xp.sin(2 * math.pi * u2)], axis=-1)
    return xp.reshape(z, (len(keys), -1))[:, :n]


def normal32(be: Backend, keys: np.ndarray, shape: tuple[int, ...], stream: str = "noise") -> Any:
    """(objects, *shape) float32 standard normals: Box-Muller on 24-bit uniforms (one word each), four values
    per Philox block: the per-pixel noise, computed where the images are."""
    xp = be.xp
    n = math.prod(shape)
    words = _blocks(be, keys, -(-n // 4), STREAMS[stream])
    u = [(xp.astype(w >> 8, xp.float32) + 0.5) * (1.0 / 16777216.0) for w in words]  # (0, 1), never 0
    out = []
    for u1, u2 in ((u[0], u[1]), (u[2], u[3])):
        r = xp.sqrt(-2.0 * xp.log(u1))
        out += [r * xp.cos((2 * math.pi) * u2), r * xp.sin((2 * math.pi) * u2)]
    z = xp.reshape(xp.stack(out, axis=-1), (len(keys), -1))[:, :n]
    return xp.reshape(z, (len(keys), *shape))
