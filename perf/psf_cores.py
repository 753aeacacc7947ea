"""The PSF on the refined cores (render.py: Renderer.core_psf): the renderer's images against a converged render with
sub-pixel convolution, before (the cores' pixels blurred by the PSF sampled at pixel centres, lenstronomy's
supersampling_convolution=False) and after (the cores blurred from their nested cells by the PSF integrated over
the pixels), and the cost of ``simulate`` after over before, measured in the same run.

The reference renders the same profile on a grid ``--fine`` times finer (its own cores refined: 11x11 patches, 8x
per level, 6 levels, as perf/core_convergence.py's converged render), convolves it with the PSF sampled on that
grid (psf.gaussian_kernel_1d at pixel / fine) and bins it: lenstronomy's supersampling_convolution=True at that
factor. Objects: the lens light of lens-space and lens-ground (their first ``--objects`` public train objects, all
bands) and lens-tiles' field galaxies (the most compact ``--objects`` of tile 0 and a circular R 0.01" n 1 and 4
beside a star of the same flux), each in a 41-pixel frame around its centre. Errors: peak (fraction of the
reference's peak) and the worst pixel (fraction of the peak and in sigma_bkg at the object's flux).

    python perf/psf_cores.py [--objects 12] [--fine 16] [--chunk 64]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from skybench.physics import render
from skybench.physics.backend import Backend, get_backend
from skybench.physics.light import sersic_total_flux
from skybench.physics.noise import magnitude2cps
from skybench.physics.psf import pixel_integrated_gaussian_1d
from skybench.physics.render import Renderer
from skybench.tasks.detect.simulator import DetectSimulator
from skybench.tasks.lens.simulator import LensSimulator
from skybench.testkey import public_object_seed
from skybench.tracks import CORE_LEVELS, load_track

SIZE = 41


def ours(bands: Any, pix: float, params: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(P, bands, n, n) unit-amplitude images, before and after, at the tracks' supersampling 2."""
    r = Renderer(SIZE, pix, 2, bands, Backend("numpy", "cpu", np.float64), CORE_LEVELS)
    img, cores = r.image_cores("sersic", *params)
    stack = np.repeat(img[:, None], len(bands), axis=1)
    assert cores is not None
    return r.convolve(stack), r.convolve(stack, [(cores, np.ones((len(img), len(bands))), np.arange(len(img)))])


def reference(bands: Any, pix: float, params: list[np.ndarray], fine: int) -> np.ndarray:
    """(P, bands, n, n): rendered ``fine`` times finer, convolved with the PSF sampled there, binned."""
    patch, factor = render.CORE_PATCH, render.CORE_FACTOR
    render.CORE_PATCH, render.CORE_FACTOR = 11, 8
    try:
        r = Renderer(SIZE * fine, pix / fine, 2, bands, Backend("numpy", "cpu", np.float64), 6)
        out = []
        for k in range(len(params[0])):  # one at a time: (41 * fine)^2 cells each
            img = r.image("sersic", *(p[k:k + 1] for p in params))
            conv = r.convolve(np.repeat(img[:, None], len(bands), axis=1))
            out.append(conv.reshape(1, len(bands), SIZE, fine, SIZE, fine).sum((3, 5)))
        return np.concatenate(out)
    finally:
        render.CORE_PATCH, render.CORE_FACTOR = patch, factor


def errors(img: np.ndarray, ref: np.ndarray, flux_sigma: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per (object, band): peak error, worst pixel / peak, worst pixel / sigma_bkg (``flux_sigma``: amplitude over
    sigma_bkg)."""
    peak = ref.max(axis=(2, 3))
    worst = np.abs(img - ref).max(axis=(2, 3))
    return img.max(axis=(2, 3)) / peak - 1, worst / peak, worst * flux_sigma


def report(name: str, bands: Any, pix: float, params: list[np.ndarray], flux_sigma: np.ndarray, fine: int) -> None:
    before, after = ours(bands, pix, params)
    ref = reference(bands, pix, params, fine)
    print(f"{name}: {len(params[0])} objects x {len(bands)} bands, reference at {fine}x")
    for label, img in (("before", before), ("after", after)):
        pk, wp, ws = errors(img, ref, flux_sigma)
        print(f"  {label:6s} peak err median {np.median(pk):+.2e} max|.| {np.abs(pk).max():.2e} | worst pixel "
              f"/peak median {np.median(wp):.2e} max {wp.max():.2e} | /sigma_bkg median {np.median(ws):.2f} "
              f"max {ws.max():.2f}", flush=True)


def lens_light(track_name: str, n: int, fine: int) -> None:
    track = load_track(track_name)
    sim = LensSimulator(track, get_backend("numpy"))
    rows = [sim.sample(public_object_seed(7, "train", i)) for i in range(n)]
    names = ("R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
    params = [np.array([float(r[f"lens_light_{k}"]) for r in rows]) for k in names]
    params[4], params[5] = params[4] % track.survey.pixel_scale, params[5] % track.survey.pixel_scale  # sub-pixel
    amps = np.array([[float(r[f"lens_light_amp_{b}"]) for b in track.band_names] for r in rows])
    report(f"{track_name} lens light", track.survey.bands, track.survey.pixel_scale, params,
           amps / sim.renderer.sigma_bkg[None], fine)


def field_galaxies(n: int, fine: int) -> None:
    sim = DetectSimulator(load_track("lens-tiles").for_profile("demo"))
    gal = sim.draw_field(0)[0].nsmallest(n, "R_sersic")
    pix, bands = sim.pix, sim.bands
    R, ns = gal["R_sersic"].to_numpy(), gal["n_sersic"].to_numpy()
    params = [R, ns, gal["e1"].to_numpy(), gal["e2"].to_numpy(), (gal["x"].to_numpy() % 1 - 0.5) * pix,
              (gal["y"].to_numpy() % 1 - 0.5) * pix]
    flux = np.array([[magnitude2cps(float(m), b.zero_point) for b, m in zip(bands, row, strict=True)]
                     for row in gal[[f"mag_{b}" for b in sim.band_names]].to_numpy()])
    sigma = sim.tile_renderer.sigma_bkg
    report("lens-tiles field galaxies (the most compact)", bands, pix, params,
           flux / sersic_total_flux(1.0, R, ns)[:, None] / sigma[None], fine)
    # a point-like galaxy on a pixel centre against a star of its flux (the PSF integrated over the pixels)
    R, ns, z = np.array([0.01, 0.01]), np.array([1.0, 4.0]), np.zeros(2)
    before, after = ours(bands, pix, [R, ns, z, z, z, z])
    ref = reference(bands, pix, [R, ns, z, z, z, z], fine)
    k = pixel_integrated_gaussian_1d(bands[0].seeing, pix)
    star = k[len(k) // 2] ** 2
    unit = sersic_total_flux(1.0, R, ns)
    for i in range(2):
        print(f"  R 0.01\" n {ns[i]:.0f}: peak / star's  before {before[i, 0].max() / unit[i] / star:.4f}  after "
              f"{after[i, 0].max() / unit[i] / star:.4f}  reference {ref[i, 0].max() / unit[i] / star:.4f}")


def cost(chunk: int, repeats: int = 5) -> None:
    """simulate (lens tracks) and scene (lens-tiles, demo tile) with the cores' PSF, over the same code with
    image_cores returning no cores (before; its refine_cores still keeps the cells), alternated, best of
    ``repeats``."""
    plain = Renderer.image_cores

    def without(self: Renderer, *args: Any, **kw: Any) -> Any:
        return plain(self, *args, **kw)[0], None

    jobs: list[tuple[str, Any]] = []
    for name in ("lens-space", "lens-ground"):
        sim = LensSimulator(load_track(name), get_backend("numpy"))
        jobs.append((f"{name} simulate({chunk})", lambda sim=sim: sim.simulate(3, "train", 0, chunk)))
    det = DetectSimulator(load_track("lens-tiles").for_profile("demo"))
    jobs.append((f"lens-tiles scene ({det.size} px)", lambda: det.scene(0)))
    for label, job in jobs:
        job()  # warm
        t: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeats):
            for key in ("before", "after"):
                Renderer.image_cores = without if key == "before" else plain
                t0 = time.perf_counter()
                job()
                t[key].append(time.perf_counter() - t0)
        Renderer.image_cores = plain
        b, a = min(t["before"]), min(t["after"])
        print(f"{label}: before {b:.3f} s, after {a:.3f} s, after / before {a / b:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=12)
    ap.add_argument("--fine", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    for name in ("lens-space", "lens-ground"):
        lens_light(name, args.objects, args.fine)
    field_galaxies(args.objects, args.fine)
    if not args.skip_cost:
        cost(args.chunk)


if __name__ == "__main__":
    main()
