"""Convergence of the renderer's pixel values for steep Sersic cores (render.py: CORE_PATCH, CORE_FACTOR).

For n in {1, 4, 5, 8} and R_sersic in {pixel/4, 0.1, 0.2, 0.4, 1.0}" at pixel scales 0.1 and 0.2", a circular
profile centred on a pixel centre (the worst case for the peak) and one off-centre and elliptical: the peak-pixel
and total-flux (41x41 frame) errors of the unconvolved image at the tracks' supersampling 2, without the core
refinement (core_levels 0, the old renderer) and with it, against a converged render (supersampling 16 and
11x11 patches refined 8x per level, 6 levels). The converged centre pixel is checked against an independent
polar quadrature of light.sersic_ellipse (scipy.integrate.quad in r and theta over the pixel's 8 triangles).

    python perf/core_convergence.py [--levels 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import integrate

from skybench.physics import light, render
from skybench.physics.backend import Backend
from skybench.physics.render import Renderer
from skybench.tracks import load_track

SIZE = 41


def polar_centre_pixel(R: float, n: float, pix: float) -> float:
    """The pixel integral of a circular Sersic centred on the pixel: 8 triangles, r from 0 to the edge."""
    def f(r: float) -> float:
        return float(light.sersic_ellipse(np.array(r), 0.0, 1.0, R, n, 0.0, 0.0, 0.0, 0.0))

    def ring(th: float) -> float:
        return integrate.quad(lambda r: f(r) * r, 0, pix / 2 / np.cos(th), limit=200,
                              points=[R * 1e-3, R * 1e-2, R * 0.1])[0]

    return 8 * integrate.quad(ring, 0, np.pi / 4, limit=200)[0]


def images(pix: float, s: int, levels: int, params: list[np.ndarray], dtype: type = np.float64) -> np.ndarray:
    bands = load_track("lens-space").survey.bands
    r = Renderer(SIZE, pix, s, bands, Backend("numpy", "cpu", dtype), core_levels=levels)
    return np.asarray(r.image("sersic", *params), dtype=np.float64)


def converged(pix: float, params: list[np.ndarray]) -> np.ndarray:
    patch, factor = render.CORE_PATCH, render.CORE_FACTOR
    render.CORE_PATCH, render.CORE_FACTOR = 11, 8
    try:
        return images(pix, 16, 6, params)
    finally:
        render.CORE_PATCH, render.CORE_FACTOR = patch, factor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=int, default=5)
    args = ap.parse_args()
    print("pix  n  R      | peak err: before  after(f64)  after(f32) | flux err: before  after | off-centre peak:"
          " before  after | ref vs polar")
    for pix in (0.1, 0.2):
        for n in (1.0, 4.0, 5.0, 8.0):
            Rs = np.array([pix / 4, 0.1, 0.2, 0.4, 1.0])
            k = len(Rs)
            # k circular on the centre pixel's centre, then k elliptical off-centre
            R, nn = np.tile(Rs, 2), np.full(2 * k, n)
            e1, e2 = np.r_[np.zeros(k), np.full(k, 0.2)], np.r_[np.zeros(k), np.full(k, -0.1)]
            cx, cy = np.r_[np.zeros(k), np.full(k, 0.31 * pix)], np.r_[np.zeros(k), np.full(k, -0.17 * pix)]
            params = [R, nn, e1, e2, cx, cy]
            ref, old = converged(pix, params), images(pix, 2, 0, params)
            new, new32 = images(pix, 2, args.levels, params), images(pix, 2, args.levels, params, np.float32)

            def peak(a: np.ndarray, ref: np.ndarray = ref) -> np.ndarray:
                return a.max(axis=(1, 2)) / ref.max(axis=(1, 2)) - 1

            def flux(a: np.ndarray, ref: np.ndarray = ref) -> np.ndarray:
                return a.sum(axis=(1, 2)) / ref.sum(axis=(1, 2)) - 1

            for i in range(k):
                polar = polar_centre_pixel(Rs[i], n, pix)
                print(f"{pix:.1f}  {n:.0f}  {Rs[i]:.3f}  | {peak(old)[i]:+9.2e} {peak(new)[i]:+9.2e} "
                      f"{peak(new32)[i]:+9.2e} | {flux(old)[i]:+9.2e} {flux(new)[i]:+9.2e} | "
                      f"{peak(old)[k + i]:+9.2e} {peak(new)[k + i]:+9.2e} | {ref[i].max() / polar - 1:+8.1e}",
                      flush=True)


if __name__ == "__main__":
    main()
