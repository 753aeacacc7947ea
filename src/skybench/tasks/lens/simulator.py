"""Batched galaxy-galaxy strong-lens simulator: SIE + shear, Sersic light, clumpy sources, look-alikes.

Parameters are drawn per object from its own seeded generator (so any object can be re-made alone): numpy's PCG64
on the host, or Philox keyed by the seed on the backend's device (``backend.generator``), and
rendered in batches by the shared :class:`~skybench.physics.render.Renderer` on numpy or torch.
Metadata columns use lenstronomy's parameter names; :func:`lenstronomy_kwargs` turns a row back into
lenstronomy keyword lists."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from skybench.physics.backend import Backend, device
from skybench.physics.kernels import exp_mostly_zero_, per_object, quadratic_form_points, scatter_add_, take_minus
from skybench.physics.kernels import module as array_module
from skybench.physics.lens_mass import einstein_radius, phi_q2ellipticity, sie_shear_ray_shoot
from skybench.physics.light import ellipse_metric, sersic_profile_, sersic_total_flux
from skybench.physics.noise import magnitude2cps, noise_stream, object_normals
from skybench.physics.philox import normal32, normal64, uniform64
from skybench.physics.render import Cores, Renderer
from skybench.tasks.lens.config import LensTrack
from skybench.tasks.lens.sources import Stamp, antialiased, interpolate, source_library
from skybench.testkey import ObjectSeeds, as_object_seeds

MAX_CLUMPS = 3
# Adaptive supersampling of the lensed light (lenstronomy ImageNumerics compute_mode='adaptive', supersampled_indexes),
# nested, (ring widths, factor) per level: per lensed object the pixels whose sub-samples spread most are re-evaluated
# 6^2 times, those of them whose rays spread most 8^2 times, then 16^2 times; the 5x5 pixels at the lens centre
# (which see a long arc of the source plane each) are in the first level, the 3x3 in every level. A level's count of
# pixels is its ring widths times the circumference 2 pi theta_E / pixel_scale of the track's largest Einstein ring
# (the longest arc its population makes; a near-round lens's ring is 2-3 high-gradient pixels across), plus those
# centre pixels (arc_levels: lens-space 402, 135, 41). A fixed count per track keeps an object's image independent of
# its batch. perf/arc_convergence.py chose them (against supersampling 16: worst pixel a median 0.002-0.004 sigma_bkg,
# at most 0.07, magnification within 0.09%; a q = 0.99, theta_E = 2" ring within 0.05 sigma and 0.3% of its peak,
# where a fixed 128 and 16 pixels per object left 1.5 sigma and 15%; 6^2 first: 4^2 left 0.2 sigma on some objects).
ARC_LEVELS = ((3.0, 6), (1.0, 8), (0.25, 16))

# Light components: (column prefix, profile, lensed?). Absent components have zero amplitude.
SERSIC_COMPONENTS = [("lens_light", False), ("source", True), ("companion", False), ("arclet", False)]
GAUSSIAN_COMPONENTS = [(f"clump{k}", True) for k in range(MAX_CLUMPS)] + [("ring_outer", False),
                                                                          ("ring_inner", False)]


def arc_levels(track: LensTrack) -> tuple[tuple[int, int], ...]:
    """The (pixels, factor) per object of each ARC_LEVELS level on ``track``: its ring widths times the circumference
    in pixels of the population's largest Einstein ring, plus the lens centre's 5x5 (first level) or 3x3 pixels."""
    ring = 2 * math.pi * track.population.lens.theta_E[1] / track.survey.pixel_scale
    return tuple((math.ceil(w * ring) + (25 if k == 0 else 9), f) for k, (w, f) in enumerate(ARC_LEVELS))


class LensSimulator:
    hidden_arrays: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ("is_lens",)

    @staticmethod
    def arrays(track: LensTrack) -> dict[str, tuple[int, ...]]:
        assert track.cutout is not None, f"track {track.name!r} has no cutout"
        return {"images": (len(track.band_names), track.cutout.size, track.cutout.size)}

    @staticmethod
    def release_info(track: LensTrack) -> dict[str, Any]:
        if track.injection is not None:  # an injected-arc track (tasks/lens/injected.py)
            from skybench.tasks.lens.injected import InjectedSimulator

            return InjectedSimulator.release_info(track)
        return {}

    @staticmethod
    def generators(track: LensTrack) -> tuple[str, ...]:
        """The generators (physics.backend.GENERATORS) this track can draw from: an injected track's arcs and
        cut-outs are drawn on the host (PCG64)."""
        return ("pcg64",) if track.injection is not None else ("pcg64", "philox")

    @staticmethod
    def split_limits(track: LensTrack) -> dict[str, int]:
        """The most objects per split (simulate.py caps the profile's counts): an injected track's test split holds
        each real cut-out once."""
        if track.injection is not None:
            from skybench.tasks.lens.injected import InjectedSimulator

            return InjectedSimulator.split_limits(track)
        return {}

    def __new__(cls, track: LensTrack, backend: Backend) -> Any:
        if cls is LensSimulator and track.injection is not None:  # arcs injected into real galaxies
            from skybench.tasks.lens.injected import InjectedSimulator

            return InjectedSimulator(track, backend)
        return super().__new__(cls)

    def __init__(self, track: LensTrack, backend: Backend):
        self.track, self.backend = track, backend
        self.pop, self.rule = track.population, track.label
        self.bands = track.survey.bands
        self.band_names = track.band_names
        assert track.cutout is not None, f"track {track.name!r} has no cutout"
        self.renderer = Renderer(track.cutout.size, track.survey.pixel_scale, track.cutout.supersampling,
                                 self.bands, backend, track.cutout.core_levels)
        real = self.pop.source.real if self.pop.source.kind == "real" else None
        # the prepared stamps of a real-source track (loaded once per process)
        self.stamps: tuple[Stamp, ...] = source_library(real) if real is not None else ()
        self.interp_order = 1 if real is not None and real.interpolation == "linear" else 3
        self.antialias = real.antialias * self.renderer.pixel_scale / self.renderer.supersampling if real else 0.0
        self.arc_levels = arc_levels(track)  # (pixels, factor) per level of _refine_arcs

    # ---------------------------------------------------------------- parameters
    # Each object draws N_UNIFORM uniforms and N_NORMAL + 5 * bands standard normals from its own generator in
    # two calls (many small draws cost more than the rest of the sampling); they are used in a fixed order.
    N_UNIFORM, N_NORMAL = 45, 9
    N_UNIFORM_REAL = 3  # a real source's stamp, rotation and flip: drawn after the others (kind: real only)

    def _sersic(self, row: dict[str, Any], prefix: str, present: Any, R: Any, n: Any, q: Any, phi: Any,
                cx: Any, cy: Any, mag_ref: Any, colors: dict[str, float], normals: Any, unit_flux: Any = None) -> Any:
        """Record one Sersic component (magnitudes: reference + colour + scatter); returns its flux per unit
        amplitude (``unit_flux`` if given: a real source's amplitude is its flux)."""
        e1, e2 = phi_q2ellipticity(phi, q)
        row[prefix + "_R_sersic"], row[prefix + "_n_sersic"] = R, n
        row[prefix + "_e1"], row[prefix + "_e2"], row[prefix + "_center_x"], row[prefix + "_center_y"] = e1, e2, cx, cy
        unit_flux = sersic_total_flux(1.0, R, n) if unit_flux is None else unit_flux
        for band in self.bands:
            s = next(normals) * self.pop.color_scatter
            m = mag_ref + colors[band.name] + (s if colors[band.name] != 0.0 else 0.0)
            row[f"{prefix}_mag_{band.name}"] = np.where(present, m, np.inf)
            row[f"{prefix}_amp_{band.name}"] = np.where(present, magnitude2cps(m, band.zero_point) / unit_flux, 0.0)
        return unit_flux

    def sample(self, obj_seed: int) -> dict[str, Any]:
        """Every parameter of one object, drawn from ``default_rng(obj_seed)``, as Python scalars."""
        cols = self._sample([obj_seed])
        return {k: v[0].item() for k, v in cols.items()}

    def _sample(self, seeds: list[int]) -> dict[str, np.ndarray]:
        """The parameters of a batch of objects as columns. Each object draws its uniforms and normals from its own
        generator; the formulas below then run on whole columns, so an object's values do not depend on the
        batch."""
        real, be = bool(self.stamps), self.backend
        n_uniform, n_normal = self.N_UNIFORM + (self.N_UNIFORM_REAL if real else 0), self.N_NORMAL + 5 * len(self.bands)
        if be.generator == "philox":  # every object's draws at once, where the images will be
            keys = np.asarray(seeds, dtype=np.int64)
            U, N = (be.to_numpy(f(be, keys, k)).T for f, k in ((uniform64, n_uniform), (normal64, n_normal)))
        else:
            rngs = [np.random.default_rng(s) for s in seeds]
            U = np.array([rng.random(n_uniform) for rng in rngs]).T  # (draw, object)
            N = np.array([rng.standard_normal(n_normal) for rng in rngs]).T
        uniforms, normals, p, pi = iter(U), iter(N), self.pop, math.pi

        def u(low: float, high: float) -> np.ndarray:
            return low + (high - low) * next(uniforms)

        row: dict[str, Any] = {"seed": np.array(seeds, dtype=np.int64)}
        # Lens mass: SIE + external shear (lenstronomy SIE, SHEAR).
        theta_E, q, phi = u(*p.lens.theta_E), u(*p.lens.q), u(0, pi)
        e1, e2 = phi_q2ellipticity(phi, q)
        cx, cy = p.lens.center_sigma * next(normals), p.lens.center_sigma * next(normals)
        g, gphi = u(*p.lens.gamma_ext), u(0, pi)
        row.update(lens_theta_E=theta_E, lens_e1=e1, lens_e2=e2, lens_center_x=cx, lens_center_y=cy,
                   shear_gamma1=g * np.cos(2 * gphi), shear_gamma2=g * np.sin(2 * gphi))
        # R_ein = sqrt(A_ein / pi) of the critical curve (Metcalf et al. 2019); theta_E is the SIE's parameter
        row["lens_r_ein"] = einstein_radius(theta_E, e1, e2, row["shear_gamma1"], row["shear_gamma2"])
        # Lens light: elliptical Sersic roughly aligned with the mass.
        self._sersic(row, "lens_light", True, u(*p.lens.R_sersic), u(*p.lens.n_sersic), u(*p.lens.light_q),
                     phi + 0.17 * next(normals), cx, cy, u(*p.lens.mag), p.lens.colors, normals)
        # Source: elliptical Sersic behind the lens, uniform in area within beta_max * theta_E.
        has_source = u(0, 1) < p.p_source
        beta, bphi = theta_E * p.source.beta_max * np.sqrt(u(0, 1)), u(0, 2 * pi)
        sx, sy = cx + beta * np.cos(bphi), cy + beta * np.sin(bphi)
        R_src = u(*p.source.R_sersic)
        src_unit_flux = self._sersic(row, "source", has_source, R_src, u(*p.source.n_sersic), u(*p.source.q),
                                     u(0, pi), sx, sy, u(*p.source.mag), p.source.colors, normals,
                                     unit_flux=1.0 if real else None)
        row["has_source"] = has_source
        # Star-forming clumps in the source (lenstronomy GAUSSIAN_ELLIPSE with e = 0, amp = flux).
        lo, hi, w = *p.source.n_clumps, u(0, 1)
        n_clumps = np.where(has_source, lo + (w * (hi - lo + 1)).astype(np.int64), 0)  # uniform on lo..hi
        row["n_clumps"] = n_clumps
        for k in range(MAX_CLUMPS):
            ox, oy = R_src * next(normals), R_src * next(normals)
            frac, sig = u(*p.source.clump_flux_fraction), u(*p.source.clump_sigma)
            row.update({f"clump{k}_sigma": sig, f"clump{k}_e1": np.zeros_like(sig), f"clump{k}_e2": np.zeros_like(sig),
                        f"clump{k}_center_x": sx + ox, f"clump{k}_center_y": sy + oy})
            for b in self.band_names:
                row[f"clump{k}_amp_{b}"] = np.where(k < n_clumps, frac * row[f"source_amp_{b}"] * src_unit_flux, 0.0)
        # Look-alikes: an unlensed companion, a tangential arclet with no counter-image, a ring galaxy.
        c = p.contaminants
        present = [u(0, 1) < c.companion, u(0, 1) < c.arclet, u(0, 1) < c.ring]
        r, a = u(1.0, 4.0), u(0, 2 * pi)
        self._sersic(row, "companion", present[0], u(0.15, 0.5), u(0.8, 2.5), u(0.4, 1.0), u(0, pi),
                     cx + r * np.cos(a), cy + r * np.sin(a), u(*c.mag), c.colors, normals)
        r, a = u(1.0, 3.0), u(0, 2 * pi)
        self._sersic(row, "arclet", present[1], u(0.2, 0.6), u(0.5, 1.0), u(0.15, 0.35), a + pi / 2,
                     cx + r * np.cos(a), cy + r * np.sin(a), u(*c.mag), c.colors, normals)
        # Ring: difference of two Gaussians with equal central surface brightness, so it is zero at the
        # centre and positive outside; total flux = amp_outer + amp_inner (amp_inner < 0).
        s_out, ratio, rq, rphi = u(0.5, 1.5) * theta_E, u(0.5, 0.7), u(0.6, 1.0), u(0, pi)
        re1, re2 = phi_q2ellipticity(rphi, rq)
        mag_ref = u(*c.mag)
        for name, sig in (("ring_outer", s_out), ("ring_inner", s_out * ratio)):
            row.update({f"{name}_sigma": sig, f"{name}_e1": re1, f"{name}_e2": re2, f"{name}_center_x": cx,
                        f"{name}_center_y": cy})
        for band in self.bands:
            s = next(normals) * p.color_scatter
            m = mag_ref + c.colors[band.name] + (s if c.colors[band.name] != 0.0 else 0.0)
            flux = np.where(present[2], magnitude2cps(m, band.zero_point), 0.0)
            row[f"ring_mag_{band.name}"] = np.where(present[2], m, np.inf)
            row[f"ring_outer_amp_{band.name}"] = flux / (1 - ratio**2)
            row[f"ring_inner_amp_{band.name}"] = -flux * ratio**2 / (1 - ratio**2)
        row.update(has_companion=present[0], has_arclet=present[1], has_ring=present[2])
        if real:  # a real stamp: its half-light radius is R_src (source_R_sersic), any rotation, a flip or not
            stamp = np.minimum((u(0, 1) * len(self.stamps)).astype(np.int64), len(self.stamps) - 1)
            r_half = np.array([st.r_half_pix for st in self.stamps])[stamp]
            row.update(source_stamp=stamp, source_angle=u(0, 2 * pi), source_flip=u(0, 1) < 0.5,
                       source_scale=R_src / r_half, source_n_sersic=np.full(len(seeds), np.nan),
                       source_e1=np.zeros(len(seeds)), source_e2=np.zeros(len(seeds)))
        assert next(uniforms, None) is None and next(normals, None) is None, "every draw is used"
        return {k: v if np.ndim(v) else np.full(len(seeds), v) for k, v in row.items()}

    @staticmethod
    def unlensed_components() -> list[tuple[str, str]]:
        """The light components that are not lensed, (column prefix, profile "sersic" or "gaussian"): a survey tile
        renders them apart, on stamps sized by their light (tasks/detect/simulator.py)."""
        return [(p, "sersic") for p, lensed in SERSIC_COMPONENTS if not lensed] + \
               [(p, "gaussian") for p, lensed in GAUSSIAN_COMPONENTS if not lensed]

    # ---------------------------------------------------------------- rendering
    def render(self, meta: pd.DataFrame | dict[str, np.ndarray]) -> tuple[Any, Any]:
        """Noise-free (B, bands, n, n) images and the PSF-convolved lensed source alone, on the backend.

        Each component is evaluated for all the objects that have it at once, into reused buffers: the
        unlensed ones on the regular supersampled grid (radius as one matrix product), the lensed ones at the
        source-plane positions of the lensed objects, then the lensed light's least resolved pixels on finer
        grids (:meth:`_refine_arcs`, :attr:`arc_levels`)."""
        be, r = self.backend, self.renderer
        xp = be.xp
        cols = _columns(meta)
        B, nb, n, m = len(cols["lens_theta_E"]), len(self.bands), r.size, len(r.coords)
        real = bool(self.stamps)
        comps = [(p, lensed, "real" if real and p == "source" else "sersic") for p, lensed in SERSIC_COMPONENTS] + \
                [(p, lensed, "gauss") for p, lensed in GAUSSIAN_COMPONENTS]
        shape = ("e1", "e2", "center_x", "center_y")

        def col(name: str, idx: Any = slice(None)) -> np.ndarray:
            return np.asarray(cols[name], dtype=np.float64)[idx]

        amps = {p: np.stack([col(f"{p}_amp_{b}") for b in self.band_names], axis=1) for p, _, _ in comps}
        present = {p: np.flatnonzero(np.any(a != 0.0, axis=1)) for p, a in amps.items()}
        lensed_idx = np.flatnonzero(cols["has_source"])
        slot = np.full(B, -1)
        slot[lensed_idx] = np.arange(lensed_idx.size)
        total = r.workspace("total", (B, nb, n, n))
        source = r.workspace("source", (lensed_idx.size, nb, n, n))  # of the lensed objects
        total[...], source[...] = 0, 0

        cores: list[tuple[Cores, np.ndarray, np.ndarray]] = []  # the refined profiles' cells, for the PSF

        def add(prefixes: list[str], img: Any, factor: Any = 1.0, lensed: bool = False,
                cells: Cores | None = None) -> None:
            """Add the unit-amplitude images (P, n, n) of the (object, component) pairs of ``prefixes``, in that
            order, with the amplitudes (and their ``cells`` to ``cores``). Each object's components are added in
            one fixed order, so its image does not depend on the batch."""
            a = np.concatenate([amps[p][present[p]] for p in prefixes]) * factor  # (P, bands)
            contrib = r.workspace("contrib", (img.shape[0], nb, n, n))
            array_module(img).multiply(img[:, None], be.asarray(a[:, :, None, None]), out=contrib)
            start = 0
            for p in prefixes:
                stop = start + present[p].size
                scatter_add_(total, present[p], contrib[start:stop])
                if lensed:
                    scatter_add_(source, slot[present[p]], contrib[start:stop])
                start = stop
            if cells is not None:
                cores.append((cells, a, np.concatenate([present[p] for p in prefixes])))

        def binned(sb: Any) -> Any:
            return r.bin(sb, out=r.workspace("binned", (sb.shape[0], n, n)))

        spread = r.workspace("spread", (lensed_idx.size, n, n))  # of each lensed object's sub-samples, bound
        spread[...] = 0

        def add_spread(prefixes: list[str], sb: Any, factor: Any = 1.0) -> None:
            """Add each pair's sub-sample range, times its amplitude summed over the bands, to its object's:
            an upper bound of the range of the object's lensed light (the selection of :meth:`_refine_arcs`)."""
            a = np.concatenate([amps[p][present[p]].sum(axis=1) for p in prefixes]) * np.reshape(factor, -1)
            rng = r.spread(sb)
            rng *= per_object(np.abs(a), rng)
            start = 0
            for p in prefixes:
                stop = start + present[p].size
                scatter_add_(spread, slot[present[p]], rng[start:stop])
                start = stop

        # Unlensed components: one batch per profile over every (object, component) pair, cores refined.
        for kind, profile, names in (("sersic", "sersic", ("R_sersic", "n_sersic") + shape),
                                     ("gauss", "gaussian", ("sigma",) + shape)):
            prefixes = [p for p, lensed, k in comps if k == kind and not lensed and present[p].size]
            if prefixes:
                args = [np.concatenate([col(f"{p}_{a}", present[p]) for p in prefixes]) for a in names]
                img, cells = r.image_cores(profile, *args, out=r.workspace("binned", (len(args[0]), n, n)))
                add(prefixes, img, cells=cells)

        # Lensed components at the source-plane positions beta (lens equation), relative to the source centre.
        if lensed_idx.size:
            nl = lensed_idx.size
            sx, sy = col("source_center_x", lensed_idx), col("source_center_y", lensed_idx)
            X, Y = sie_shear_ray_shoot(  # mypy cannot count the *(...) arguments: five arrays
                r.coords, r.coords, r.x, *(col(f"lens_{k}", lensed_idx) for k in ("theta_E",) + shape),  # type: ignore[call-arg, misc, arg-type]
                col("shear_gamma1", lensed_idx), col("shear_gamma2", lensed_idx), sx, sy,
                work=r.workspace("ray", (6, nl, m, m)))
            for kind in ("sersic", "gauss"):  # one batch per profile over every (object, component) pair
                prefixes = [p for p, lensed, k in comps if k == kind and lensed and present[p].size]
                if not prefixes:
                    continue
                idx = np.concatenate([present[p] for p in prefixes])
                rows, P = slot[idx], idx.size

                def cat(a: str) -> np.ndarray:
                    return np.concatenate([col(f"{p}_{a}", present[p]) for p in prefixes])  # noqa: B023

                dx, dy = cat("center_x") - sx[rows], cat("center_y") - sy[rows]
                if P == nl and np.array_equal(rows, np.arange(nl)) and not (np.any(dx) or np.any(dy)):
                    gx, gy = X, Y  # the source itself: beta - source centre
                else:
                    gx = take_minus(X, rows, dx, out=r.workspace("gx", (P, m, m)))
                    gy = take_minus(Y, rows, dy, out=r.workspace("gy", (P, m, m)))
                qxx, qxy, qyy = ellipse_metric(cat("e1"), cat("e2"))
                if kind == "sersic":  # (R / R_sersic)^2
                    scale, factor = 1 / np.maximum(cat("R_sersic"), 1e-4) ** 2, np.ones((P, 1))
                else:  # -R^2 / 2 sigma^2; the normalisation 1 / (2 pi sigma^2) goes with the amplitude
                    sigma = cat("sigma")
                    scale, factor = -0.5 / sigma**2, 1 / (2 * np.pi * sigma[:, None] ** 2)
                sb = quadratic_form_points(gx, gy, per_object(qxx * scale, gx),
                                           per_object(qxy * scale, gx) if np.any(qxy) else None,
                                           per_object(qyy * scale, gx), out=r.workspace("sb", (P, m, m)),
                                           tmp=r.workspace("qtmp", (P, m, m)))
                if kind == "sersic":
                    sersic_profile_(sb, cat("R_sersic"), cat("n_sersic"))
                else:  # compact clumps: most of the grid underflows to 0
                    exp_mostly_zero_(sb)
                add_spread(prefixes, sb, factor)
                add(prefixes, binned(sb), factor, lensed=True)
            if real and present["source"].size:
                sb = self._real_source(X, Y, slot[present["source"]], cols, present["source"])
                factor = 1 / col("source_scale", present["source"])[:, None] ** 2
                add_spread(["source"], sb, factor)
                add(["source"], binned(sb), factor, lensed=True)
            if self.arc_levels:
                self._refine_arcs(cols, lensed_idx, be.to_numpy(spread), amps, present, source, total)

        full_source = xp.zeros((B, nb, n, n), dtype=be.dtype, device=device(r.x))
        if lensed_idx.size:  # the source is zero elsewhere
            full_source[be.index(lensed_idx)] = r.convolve(source)
        return r.convolve(total, cores), full_source

    def _refine_arcs(self, cols: dict[str, np.ndarray], lensed_idx: np.ndarray, spread: np.ndarray,
                     amps: dict[str, np.ndarray], present: dict[str, np.ndarray], source: Any, total: Any) -> None:
        """In place: the pixels of each lensed object where its sub-samples spread most -> their means over finer
        sub-pixel grids (every lensed component), in ``source`` (L, bands, n, n) and ``total``. arc_levels: the
        first level takes its count of pixels with the largest ``spread`` (L, n, n) or near the lens centre, each
        next one that many of the previous level's pixels whose rays spread most or next to the lens centre."""
        be, r, n, nl = self.backend, self.renderer, self.renderer.size, lensed_idx.size
        # the pixels around the lens centre always, 5x5 at the first level and 3x3 at every level: the SIE's
        # deflection is singular there (each pixel sees a long arc of the source plane), and a symmetric pattern
        # of sub-samples can show no spread while missing the pixel's image of the source
        o = np.arange(nl)[:, None]
        cj, ci = (np.clip(np.rint(np.asarray(cols[f"lens_center_{a}"], dtype=np.float64)[lensed_idx] / r.pixel_scale
                                  + (n - 1) / 2), 2, n - 3).astype(np.int64) for a in ("x", "y"))

        def around(h: int) -> np.ndarray:
            """The (2h + 1)^2 pixels around each lens centre, a (L, n n) mask."""
            d, mask = np.arange(-h, h + 1), np.zeros((nl, n, n), dtype=bool)
            mask[o[:, :, None], (ci[:, None] + d)[:, :, None], (cj[:, None] + d)[:, None, :]] = True
            return mask.reshape(nl, n * n)

        rank, centre = np.where(around(2), np.inf, spread.reshape(nl, n * n)), around(1)
        pix, pos, values = np.zeros((nl, 0), np.int64), o, None
        for K, F in self.arc_levels:  # pos: where this level's pixels are in the first level's pix and values
            K = min(K, rank.shape[1])  # a fixed count: an object's pixels do not depend on its batch
            pick = np.sort(np.argpartition(-rank, K - 1, axis=1)[:, :K], axis=1)
            pix, pos = (pick, np.broadcast_to(np.arange(K), (nl, K))) if values is None else (pix, pos[o, pick])
            new, rank = self._arc_pixels(cols, lensed_idx, pix[o, pos], F, amps, present)
            rank[centre[o, pix[o, pos]]] = np.inf  # the centre's pixels go on to every level
            if values is None:
                values = new
            else:
                values[be.index(o), be.index(pos)] = new
        iy, ix = be.index(pix // n), be.index(pix % n)
        delta = values - source[be.index(o), :, iy, ix]  # (L, K, bands)
        source[be.index(o), :, iy, ix] = values
        total[be.index(lensed_idx[o]), :, iy, ix] += delta

    def _arc_pixels(self, cols: dict[str, np.ndarray], lensed_idx: np.ndarray, pix: np.ndarray, F: int,
                    amps: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> tuple[Any, np.ndarray]:
        """The lensed light of pixels ``pix`` (L, K) (flat indices) of the lensed objects: the mean of F^2 rays
        each, (L, K, bands) on the backend, and the range of those rays' values (L, K) (numpy, a bound).

        Each (object, pixel) is one batch row: its sub-pixel offsets u are shared, and the lens equation at
        x = pixel centre p + u is sie_shear_ray_shoot's at u with the lens centre moved by -p and the origin by
        (1 - g1) px - g2 py, (1 + g1) py - g2 px (the shear is linear in x)."""
        be, r = self.backend, self.renderer
        (nl, K), n, nb = pix.shape, r.size, len(self.bands)
        centres = (np.arange(n) - (n - 1) / 2) * r.pixel_scale
        px, py = centres[pix % n].reshape(-1), centres[pix // n].reshape(-1)

        def col(name: str, idx: Any = lensed_idx) -> np.ndarray:
            return np.asarray(cols[name], dtype=np.float64)[idx]

        def per_pixel(v: np.ndarray) -> np.ndarray:
            return np.repeat(v, K)

        g1, g2 = per_pixel(col("shear_gamma1")), per_pixel(col("shear_gamma2"))
        sx, sy = col("source_center_x"), col("source_center_y")
        u = ((np.arange(F) + 0.5) / F - 0.5) * r.pixel_scale  # lenstronomy util.make_subgrid
        X, Y = sie_shear_ray_shoot(  # beta - source centre at the (L K, F, F) sub-pixel positions
            u, u, r.x, per_pixel(col("lens_theta_E")), per_pixel(col("lens_e1")), per_pixel(col("lens_e2")),
            per_pixel(col("lens_center_x")) - px, per_pixel(col("lens_center_y")) - py, g1, g2,
            per_pixel(sx) - (1 - g1) * px + g2 * py, per_pixel(sy) - (1 + g1) * py + g2 * px,
            work=r.workspace("arc_ray", (6, nl * K, F, F)))
        X, Y = X.reshape(nl, K, F, F), Y.reshape(nl, K, F, F)
        slot = np.full(len(cols["lens_theta_E"]), -1)
        slot[lensed_idx] = np.arange(nl)
        new = be.xp.zeros((nl, K, nb), dtype=be.dtype, device=device(r.x))  # kept by the caller: no workspace
        rays = r.workspace("arc_rays", (nl, K, F * F))
        rays[...] = 0

        def add(p: str, sb: Any, factor: np.ndarray) -> None:
            """Add component ``p``'s ray values ``sb`` (P, K, F^2), times its amplitudes: their means to ``new``,
            themselves (amplitudes summed over the bands) to ``rays``."""
            i = present[p]
            sb = sb * per_object(factor, sb)
            mean = sb.sum(-1) * (r.pixel_scale**2 / F**2)
            scatter_add_(new, slot[i], mean[:, :, None] * be.asarray(amps[p][i][:, None, :]))
            scatter_add_(rays, slot[i], sb * per_object(np.abs(amps[p][i].sum(axis=1)), sb))

        for p in ["source"] + [f"clump{k}" for k in range(MAX_CLUMPS)]:
            i = present[p]
            if not i.size:
                continue
            if p == "source" and self.stamps:
                sb = self._real_source(X.reshape(nl, K * F, F), Y.reshape(nl, K * F, F), slot[i], cols, i)
                add(p, sb.reshape(i.size, K, F * F), 1 / col("source_scale", i) ** 2)
                continue
            rows = be.index(slot[i])
            gx, gy = X[rows], Y[rows]  # the source itself, or a clump off its centre
            gx -= per_object(col(f"{p}_center_x", i) - sx[slot[i]], gx, 4)
            gy -= per_object(col(f"{p}_center_y", i) - sy[slot[i]], gy, 4)
            qxx, qxy, qyy = ellipse_metric(col(f"{p}_e1", i), col(f"{p}_e2", i))
            if p == "source":  # (R / R_sersic)^2, as in render
                scale, factor = 1 / np.maximum(col(f"{p}_R_sersic", i), 1e-4) ** 2, np.ones(i.size)
            else:  # -R^2 / 2 sigma^2, and the normalisation 1 / (2 pi sigma^2)
                sigma = col(f"{p}_sigma", i)
                scale, factor = -0.5 / sigma**2, 1 / (2 * np.pi * sigma**2)
            sb = quadratic_form_points(gx, gy, per_object(qxx * scale, gx, 4), per_object(qxy * scale, gx, 4),
                                       per_object(qyy * scale, gx, 4), out=r.workspace("arc_sb", gx.shape),
                                       tmp=r.workspace("arc_tmp", gx.shape))
            if p == "source":
                sersic_profile_(sb, col(f"{p}_R_sersic", i), col(f"{p}_n_sersic", i))
            else:
                exp_mostly_zero_(sb)
            add(p, sb.reshape(i.size, K, F * F), factor)
        m = array_module(rays)
        return new, be.to_numpy(m.amax(rays, -1) - m.amin(rays, -1))
    def source_image(self, stamp: int, scale: float) -> np.ndarray:
        """Stamp ``stamp`` as interpolated at ``scale`` arcsec per stamp pixel (anti-aliased, unit sum)."""
        return antialiased(self.stamps[stamp].image, scale, self.antialias)

    def _real_source(self, X: Any, Y: Any, rows: np.ndarray, cols: dict[str, np.ndarray], idx: np.ndarray) -> Any:
        """The unit-sum stamps of objects ``idx`` interpolated at their source-plane offsets ``X[rows], Y[rows]``
        (P, m, m) on the backend: flux per stamp pixel, so surface brightness = amp x this / scale^2. The
        interpolation runs on the CPU (scipy), whatever the backend."""
        be = self.backend
        gx, gy = be.to_numpy(X[be.index(rows)]), be.to_numpy(Y[be.index(rows)])
        out = np.empty(gx.shape, dtype=np.float64)
        for j, i in enumerate(idx):
            scale = float(cols["source_scale"][i])
            out[j] = interpolate(self.source_image(int(cols["source_stamp"][i]), scale), gx[j].astype(np.float64),
                                 gy[j].astype(np.float64), scale, float(cols["source_angle"][i]),
                                 bool(cols["source_flip"][i]), self.interp_order)
        return be.asarray(out)

    # ---------------------------------------------------------------- the visibility rule
    def label(self, meta: pd.DataFrame | dict[str, np.ndarray], model: Any, source: Any) -> pd.DataFrame:
        """Apply the track's visibility rule and record the quantities it uses."""
        index = meta.index if isinstance(meta, pd.DataFrame) else None
        return pd.DataFrame(self._label(_columns(meta), model, source), index=index)

    def _label(self, cols: dict[str, np.ndarray], model: Any, source: Any) -> dict[str, np.ndarray]:
        be, r, rule = self.backend, self.renderer, self.rule
        xp = be.xp
        has = np.asarray(cols["has_source"], dtype=bool)
        B, li = has.size, np.flatnonzero(has)
        n_pix, snr, lensed_flux = np.zeros(B, np.int64), np.zeros(B, np.float32), np.zeros(B, np.float32)
        ref = _reference_band(self.pop.source.colors, self.band_names)
        if li.size:  # the source is zero in the other cut-outs
            src, mod = source[be.index(li)], model[be.index(li)]
            sig2 = be.asarray(r.sigma_bkg[None, :, None, None] ** 2)
            mask = xp.astype(src > be.asarray(rule.pixel_sigma * r.sigma_bkg[None, :, None, None]), be.dtype)
            n_b = xp.sum(mask, axis=(2, 3))  # (L, bands)
            s_sum = xp.sum(src * mask, axis=(2, 3))
            # sum over the pixels above threshold of the variance sigma_bkg^2 + |model| / t
            v_sum = n_b * sig2[..., 0, 0] + xp.sum(xp.abs(mod) * mask, axis=(2, 3)) / be.asarray(r.total_time[None])
            n_pix[li] = be.to_numpy(n_b).max(axis=1).astype(np.int64)
            snr[li] = be.to_numpy(s_sum / xp.sqrt(xp.clip(v_sum, 1e-30, None))).max(axis=1)
            lensed_flux[li] = be.to_numpy(xp.sum(src[:, ref], axis=(1, 2)))
        # Magnification: lensed source flux in the frame / intrinsic source flux (reference band).
        amp_ref = np.asarray(cols[f"source_amp_{self.band_names[ref]}"], dtype=np.float64)
        intrinsic = amp_ref if self.stamps else sersic_total_flux(  # a real source's amplitude is its flux
            amp_ref, np.asarray(cols["source_R_sersic"], dtype=np.float64),
            np.asarray(cols["source_n_sersic"], dtype=np.float64))
        intrinsic = intrinsic + sum(np.asarray(cols[f"clump{k}_amp_{self.band_names[ref]}"], dtype=np.float64)
                                    for k in range(MAX_CLUMPS))
        magnification = np.where(has, lensed_flux / np.where(intrinsic > 0, intrinsic, 1.0), np.nan)
        return {"magnification": magnification, "n_pix_source": n_pix, "arc_snr": snr,
                "is_lens": (has & (magnification > rule.min_magnification)
                            & (n_pix > rule.min_source_pixels)).astype(np.int8)}

    # ---------------------------------------------------------------- one chunk
    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Objects ``start..stop`` of ``split``: float32 images (B, bands, n, n) in e-/s and their metadata
        columns (``pd.DataFrame(meta)`` is the table). ``seeds``: the per-object seeds (an int: a release seed,
        public derivation)."""
        object_seeds = as_object_seeds(seeds).many(split, start, stop)
        samples = self._sample(object_seeds)
        # the noise is fixed by each object's seed too, on its own stream (Philox's, or PCG64's noise_stream): never
        # the parameters' generator continued, whose state the background pixels' noise would show
        shape = (len(self.bands), self.renderer.size, self.renderer.size)
        normal = normal32(self.backend, np.asarray(object_seeds, dtype=np.int64), shape) \
            if self.backend.generator == "philox" else \
            object_normals((noise_stream(int(s), 1) for s in object_seeds), shape)
        cols = {"id": np.arange(start, stop, dtype=np.int64), **samples}
        model, source = self.render(cols)
        labels = self._label(cols, model, source)
        # the noise is added in float64 and the sum rounded once to float32, as the real set's pixels are: float32
        # arithmetic rounds ties to even, which left the simulated pixels' last mantissa bit 0 on ~60% of pixels
        # against 50% for the real objects (every real object told apart, AUROC 1.0)
        xp = self.backend.xp
        images = self.renderer.add_noise(xp.astype(model, xp.float64), normal)
        meta = {"id": cols.pop("id"), "split": np.full(stop - start, split), **cols, **labels}
        return self.backend.to_numpy(images, np.float32), meta


def _columns(meta: pd.DataFrame | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metadata as a dict of numpy columns (indexing a DataFrame per column is slow)."""
    return meta if isinstance(meta, dict) else {k: v.to_numpy() for k, v in meta.items()}


def _reference_band(colors: dict[str, float], names: list[str]) -> int:
    """The band whose colour is 0 (magnitudes are drawn in it)."""
    return next(i for i, b in enumerate(names) if colors[b] == 0.0)


def lenstronomy_kwargs(row: pd.Series | dict, track: LensTrack, band: str) -> dict[str, Any]:
    """lenstronomy ``ImageModel`` inputs that re-render one object in one band, noise-free.

    Returns kwargs_model, kwargs_lens, kwargs_source, kwargs_lens_light and the pixel grid settings, so
    ``ImageModel(data, psf, lens_model, source_model, lens_light_model, kwargs_numerics)`` reproduces our
    image (see tests/test_lens_simulator.py)."""
    assert track.cutout is not None, f"track {track.name!r} has no cutout"
    n, pix = track.cutout.size, track.survey.pixel_scale
    kw_lens = [dict(theta_E=row["lens_theta_E"], e1=row["lens_e1"], e2=row["lens_e2"],
                    center_x=row["lens_center_x"], center_y=row["lens_center_y"]),
               dict(gamma1=row["shear_gamma1"], gamma2=row["shear_gamma2"], ra_0=0.0, dec_0=0.0)]

    def sersic(prefix: str) -> dict[str, float]:
        return dict(amp=row[f"{prefix}_amp_{band}"], R_sersic=row[f"{prefix}_R_sersic"],
                    n_sersic=row[f"{prefix}_n_sersic"], e1=row[f"{prefix}_e1"], e2=row[f"{prefix}_e2"],
                    center_x=row[f"{prefix}_center_x"], center_y=row[f"{prefix}_center_y"])

    def gauss(prefix: str) -> dict[str, float]:
        return dict(amp=row[f"{prefix}_amp_{band}"], sigma=row[f"{prefix}_sigma"], e1=row[f"{prefix}_e1"],
                    e2=row[f"{prefix}_e2"], center_x=row[f"{prefix}_center_x"],
                    center_y=row[f"{prefix}_center_y"])

    src_models: list[str] = []
    ll_models: list[str] = []
    src_kw: list[dict[str, Any]] = []
    ll_kw: list[dict[str, float]] = []
    real = track.population.source.kind == "real"
    for prefix, lensed in SERSIC_COMPONENTS:
        if real and prefix == "source":
            if row[f"source_amp_{band}"] != 0.0:  # lenstronomy INTERPOL: image in surface brightness per arcsec^2
                scale = float(row["source_scale"])
                real_cfg, cut = track.population.source.real, track.cutout
                assert real_cfg is not None
                stamp = antialiased(source_library(real_cfg)[int(row["source_stamp"])].image, scale,
                                    real_cfg.antialias * pix / cut.supersampling)
                src_models.append("INTERPOL")
                src_kw.append(dict(image=(stamp[:, ::-1] if row["source_flip"] else stamp) / scale**2,
                                   amp=row["source_amp_" + band], center_x=row["source_center_x"],
                                   center_y=row["source_center_y"], phi_G=row["source_angle"], scale=scale))
        elif row.get(f"{prefix}_amp_{band}", 0.0) != 0.0:  # absent from the row (an injected track's): none
            (src_models if lensed else ll_models).append("SERSIC_ELLIPSE")
            (src_kw if lensed else ll_kw).append(sersic(prefix))
    for prefix, lensed in GAUSSIAN_COMPONENTS:
        if row.get(f"{prefix}_amp_{band}", 0.0) != 0.0:
            (src_models if lensed else ll_models).append("GAUSSIAN_ELLIPSE")
            (src_kw if lensed else ll_kw).append(gauss(prefix))
    b = next(b for b in track.survey.bands if b.name == band)
    return dict(
        kwargs_model=dict(lens_model_list=["SIE", "SHEAR"], source_light_model_list=src_models,
                          lens_light_model_list=ll_models),
        kwargs_lens=kw_lens, kwargs_source=src_kw, kwargs_lens_light=ll_kw,
        kwargs_pixel_grid=dict(nx=n, ny=n, transform_pix2angle=np.eye(2) * pix,
                               ra_at_xy_0=-(n - 1) / 2 * pix, dec_at_xy_0=-(n - 1) / 2 * pix),
        kwargs_numerics=dict(supersampling_factor=track.cutout.supersampling, supersampling_convolution=False),
        # an injected arc's PSF is its cut-out's where broader (tasks/lens/injected.py: arc_seeing)
        psf_fwhm=float(row.get(f"arc_psf_fwhm_{band}", b.seeing)), pixel_scale=pix,
    )
