"""Batched galaxy-galaxy strong-lens simulator: SIE + shear, Sersic light, clumpy sources, look-alikes.

Parameters are drawn per object from its own seeded generator (so any object can be re-made alone) and
rendered in batches by the shared :class:`~skybench.physics.render.Renderer` on numpy or torch.
Metadata columns use lenstronomy's parameter names; :func:`lenstronomy_kwargs` turns a row back into
lenstronomy keyword lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .lens_population import LensLabel, LensPopulation
from .physics.backend import Backend, device
from .physics.lens_mass import phi_q2ellipticity, shear_deflection, sie_deflection
from .physics.light import gaussian_ellipse, sersic_ellipse, sersic_total_flux
from .physics.noise import magnitude2cps
from .physics.render import Renderer
from .tracks import Track

MAX_CLUMPS = 3
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Light components: (column prefix, profile, lensed?). Absent components have zero amplitude.
SERSIC_COMPONENTS = [("lens_light", False), ("source", True), ("companion", False), ("arclet", False)]
GAUSSIAN_COMPONENTS = [(f"clump{k}", True) for k in range(MAX_CLUMPS)] + [("ring_outer", False),
                                                                          ("ring_inner", False)]


def object_seed(seed: int, split: str, index: int) -> int:
    """The seed of one object: a function of the release seed, its split and its index."""
    ss = np.random.SeedSequence([seed, SPLIT_CODES[split], index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))  # fits in int64 for Parquet


class LensSimulator:
    hidden_arrays: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ("is_lens",)

    @staticmethod
    def arrays(track: Track) -> dict[str, tuple[int, ...]]:
        return {"images": (len(track.band_names), track.cutout.size, track.cutout.size)}

    @staticmethod
    def release_info(track: Track) -> dict[str, Any]:
        return {}

    def __init__(self, track: Track, backend: Backend):
        self.track, self.backend = track, backend
        self.pop = LensPopulation.model_validate(track.population)
        self.rule = LensLabel.model_validate(track.label)
        self.bands = track.survey.bands
        self.band_names = track.band_names
        self.renderer = Renderer(track.cutout.size, track.survey.pixel_scale, track.cutout.supersampling,
                                 self.bands, backend)

    # ---------------------------------------------------------------- parameters
    def _mags(self, rng: np.random.Generator, mag_ref: float, colors: dict[str, float]) -> np.ndarray:
        scatter = rng.normal(0.0, self.pop.color_scatter, len(self.bands))
        return np.array([mag_ref + colors[b] + (s if colors[b] != 0.0 else 0.0)
                         for b, s in zip(self.band_names, scatter, strict=True)])

    def _amps(self, row: dict[str, Any], prefix: str, mags: np.ndarray, unit_flux: float) -> None:
        for band, m in zip(self.bands, mags, strict=True):
            row[f"{prefix}_mag_{band.name}"] = float(m)
            row[f"{prefix}_amp_{band.name}"] = float(magnitude2cps(m, band.zero_point) / unit_flux)

    def _sersic(self, rng, row, prefix, present, R, n, q, phi, cx, cy, mag_ref, colors) -> None:
        e1, e2 = phi_q2ellipticity(phi, q)
        row.update({f"{prefix}_R_sersic": R, f"{prefix}_n_sersic": n, f"{prefix}_e1": float(e1),
                    f"{prefix}_e2": float(e2), f"{prefix}_center_x": cx, f"{prefix}_center_y": cy})
        mags = self._mags(rng, mag_ref, colors)
        self._amps(row, prefix, mags, float(sersic_total_flux(1.0, R, n)))
        if not present:
            for b in self.band_names:
                row[f"{prefix}_mag_{b}"], row[f"{prefix}_amp_{b}"] = np.inf, 0.0

    def sample(self, obj_seed: int) -> dict[str, Any]:
        """Draw every parameter of one object from ``default_rng(obj_seed)``; same order for all objects."""
        rng = np.random.default_rng(obj_seed)
        u, p = rng.uniform, self.pop
        row: dict[str, Any] = {"seed": obj_seed}
        # Lens mass: SIE + external shear (lenstronomy SIE, SHEAR).
        theta_E, q, phi = u(*p.lens.theta_E), u(*p.lens.q), u(0, np.pi)
        e1, e2 = phi_q2ellipticity(phi, q)
        cx, cy = rng.normal(0.0, p.lens.center_sigma, 2)
        g, gphi = u(*p.lens.gamma_ext), u(0, np.pi)
        row.update(lens_theta_E=theta_E, lens_e1=float(e1), lens_e2=float(e2), lens_center_x=float(cx),
                   lens_center_y=float(cy), shear_gamma1=float(g * np.cos(2 * gphi)),
                   shear_gamma2=float(g * np.sin(2 * gphi)))
        # Lens light: elliptical Sersic roughly aligned with the mass.
        self._sersic(rng, row, "lens_light", True, u(*p.lens.R_sersic), u(*p.lens.n_sersic), u(*p.lens.light_q),
                     phi + rng.normal(0, 0.17), float(cx), float(cy), u(*p.lens.mag), p.lens.colors)
        # Source: elliptical Sersic behind the lens, uniform in area within beta_max * theta_E.
        has_source = bool(rng.random() < p.p_source)
        beta, bphi = theta_E * p.source.beta_max * np.sqrt(rng.random()), u(0, 2 * np.pi)
        sx, sy = float(cx + beta * np.cos(bphi)), float(cy + beta * np.sin(bphi))
        R_src = u(*p.source.R_sersic)
        self._sersic(rng, row, "source", has_source, R_src, u(*p.source.n_sersic), u(*p.source.q),
                     u(0, np.pi), sx, sy, u(*p.source.mag), p.source.colors)
        row["has_source"] = has_source
        # Star-forming clumps in the source (lenstronomy GAUSSIAN_ELLIPSE with e = 0, amp = flux).
        n_clumps = int(rng.integers(p.source.n_clumps[0], p.source.n_clumps[1] + 1)) if has_source else 0
        row["n_clumps"] = n_clumps
        for k in range(MAX_CLUMPS):
            off = rng.normal(0.0, R_src, 2)
            frac, sig = u(*p.source.clump_flux_fraction), u(*p.source.clump_sigma)
            row.update({f"clump{k}_sigma": sig, f"clump{k}_e1": 0.0, f"clump{k}_e2": 0.0,
                        f"clump{k}_center_x": sx + float(off[0]), f"clump{k}_center_y": sy + float(off[1])})
            for b in self.band_names:
                flux = frac * row[f"source_amp_{b}"] * sersic_total_flux(1.0, R_src, row["source_n_sersic"])
                row[f"clump{k}_amp_{b}"] = float(flux) if k < n_clumps else 0.0
        # Look-alikes: an unlensed companion, a tangential arclet with no counter-image, a ring galaxy.
        c = p.contaminants
        present = rng.random(3) < np.array([c.companion, c.arclet, c.ring])
        r, a = u(1.0, 4.0), u(0, 2 * np.pi)
        self._sersic(rng, row, "companion", present[0], u(0.15, 0.5), u(0.8, 2.5), u(0.4, 1.0), u(0, np.pi),
                     float(cx + r * np.cos(a)), float(cy + r * np.sin(a)), u(*c.mag), c.colors)
        r, a = u(1.0, 3.0), u(0, 2 * np.pi)
        self._sersic(rng, row, "arclet", present[1], u(0.2, 0.6), u(0.5, 1.0), u(0.15, 0.35), a + np.pi / 2,
                     float(cx + r * np.cos(a)), float(cy + r * np.sin(a)), u(*c.mag), c.colors)
        # Ring: difference of two Gaussians with equal central surface brightness, so it is zero at the
        # centre and positive outside; total flux = amp_outer + amp_inner (amp_inner < 0).
        s_out, ratio, rq, rphi = u(0.5, 1.5) * theta_E, u(0.5, 0.7), u(0.6, 1.0), u(0, np.pi)
        re1, re2 = phi_q2ellipticity(rphi, rq)
        mags = self._mags(rng, u(*c.mag), c.colors)
        for name, sig in (("ring_outer", s_out), ("ring_inner", s_out * ratio)):
            row.update({f"{name}_sigma": sig, f"{name}_e1": float(re1), f"{name}_e2": float(re2),
                        f"{name}_center_x": float(cx), f"{name}_center_y": float(cy)})
        for band, m in zip(self.bands, mags, strict=True):
            flux = float(magnitude2cps(m, band.zero_point)) if present[2] else 0.0
            row[f"ring_mag_{band.name}"] = float(m) if present[2] else np.inf
            row[f"ring_outer_amp_{band.name}"] = flux / (1 - ratio**2)
            row[f"ring_inner_amp_{band.name}"] = -flux * ratio**2 / (1 - ratio**2)
        row.update(has_companion=bool(present[0]), has_arclet=bool(present[1]), has_ring=bool(present[2]))
        return row

    # ---------------------------------------------------------------- rendering
    def render(self, meta: pd.DataFrame) -> tuple[Any, Any]:
        """Noise-free (B, bands, n, n) images and the PSF-convolved lensed source alone, on the backend."""
        be, r = self.backend, self.renderer
        xp = be.xp
        B, nb, n = len(meta), len(self.bands), r.size
        x, y = r.x, r.y
        cols = {k: v.to_numpy() for k, v in meta.items()}  # pandas indexing is slow in the loop below

        def col(name: str, idx: np.ndarray) -> np.ndarray:
            return cols[name].astype(np.float64)[idx, None, None]

        # Deflections only where something is lensed; ``slot`` maps an object to its row in bx, by.
        lensed_idx = np.flatnonzero(cols["has_source"])
        slot = np.full(B, -1)
        slot[lensed_idx] = np.arange(lensed_idx.size)
        ax, ay = sie_deflection(x, y, *(col(f"lens_{k}", lensed_idx) for k in
                                        ("theta_E", "e1", "e2", "center_x", "center_y")))
        sx_, sy_ = shear_deflection(x, y, col("shear_gamma1", lensed_idx), col("shear_gamma2", lensed_idx))
        bx, by = x - ax - sx_, y - ay - sy_  # lens equation: beta = theta - alpha(theta)

        total = xp.zeros((B, nb, n, n), dtype=be.dtype, device=device(x))
        source = xp.zeros((B, nb, n, n), dtype=be.dtype, device=device(x))
        comps = [(p, lensed, "sersic") for p, lensed in SERSIC_COMPONENTS] + \
                [(p, lensed, "gauss") for p, lensed in GAUSSIAN_COMPONENTS]
        for prefix, lensed, kind in comps:
            amps = np.stack([cols[f"{prefix}_amp_{b}"] for b in self.band_names], axis=1).astype(np.float64)
            idx = np.flatnonzero(np.any(amps != 0.0, axis=1))
            if idx.size == 0:
                continue
            tidx = be.index(idx)
            if lensed:
                gx, gy = bx[be.index(slot[idx])], by[be.index(slot[idx])]
            else:
                gx, gy = x, y
            shape = [col(f"{prefix}_{k}", idx) for k in ("e1", "e2", "center_x", "center_y")]
            if kind == "sersic":
                sb = sersic_ellipse(gx, gy, 1.0, col(f"{prefix}_R_sersic", idx), col(f"{prefix}_n_sersic", idx),
                                    *shape)
            else:
                sb = gaussian_ellipse(gx, gy, 1.0, col(f"{prefix}_sigma", idx), *shape)
            contrib = r.bin(sb)[:, None] * be.asarray(amps[idx][:, :, None, None])
            total[tidx] += contrib
            if lensed:
                source[tidx] += contrib
        return r.convolve(total), r.convolve(source)

    # ---------------------------------------------------------------- the visibility rule
    def label(self, meta: pd.DataFrame, model: Any, source: Any) -> pd.DataFrame:
        """Apply the track's visibility rule and record the quantities it uses."""
        be, r, rule = self.backend, self.renderer, self.rule
        xp = be.xp
        sig = be.asarray(r.sigma_bkg[None, :, None, None])
        t = be.asarray(r.total_time[None, :, None, None])
        above = source > rule.pixel_sigma * sig
        n_pix = be.to_numpy(xp.sum(xp.astype(above, be.dtype), axis=(2, 3)))  # (B, bands)
        var = sig**2 + xp.abs(model) / t
        s_sum = xp.sum(xp.where(above, source, 0.0 * source), axis=(2, 3))
        v_sum = xp.sum(xp.where(above, var, 0.0 * var), axis=(2, 3))
        snr = be.to_numpy(s_sum / xp.sqrt(xp.maximum(v_sum, 1e-30 + 0 * v_sum)))
        # Magnification: lensed source flux in the frame / intrinsic source flux (reference band).
        ref = _reference_band(self.pop.source.colors, self.band_names)
        lensed_flux = be.to_numpy(xp.sum(source[:, ref], axis=(1, 2)))
        amp_ref = meta[f"source_amp_{self.band_names[ref]}"].to_numpy()
        intrinsic = sersic_total_flux(amp_ref, meta["source_R_sersic"].to_numpy(),
                                      meta["source_n_sersic"].to_numpy())
        intrinsic = intrinsic + sum(meta[f"clump{k}_amp_{self.band_names[ref]}"].to_numpy()
                                    for k in range(MAX_CLUMPS))
        has = meta["has_source"].to_numpy()
        out = pd.DataFrame(index=meta.index)
        out["magnification"] = np.where(has, lensed_flux / np.where(intrinsic > 0, intrinsic, 1.0), np.nan)
        out["n_pix_source"] = np.where(has, n_pix.max(axis=1), 0).astype(np.int64)
        out["arc_snr"] = np.where(has, snr.max(axis=1), 0.0)
        out["is_lens"] = (has & (out["magnification"] > rule.min_magnification)
                          & (out["n_pix_source"] > rule.min_source_pixels)).astype(np.int8)
        return out

    # ---------------------------------------------------------------- one chunk
    def simulate(self, seed: int, split: str, start: int, stop: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Objects ``start..stop`` of ``split``: float32 images (B, bands, n, n) in e-/s and their metadata."""
        rows, noise = [], []
        shape = (len(self.bands), self.track.cutout.size, self.track.cutout.size)
        for index in range(start, stop):
            s = object_seed(seed, split, index)
            row = {"id": index, **self.sample(s)}
            rows.append(row)
            # The noise has its own stream, also fixed by the object's seed.
            rng = np.random.default_rng([s, 1])
            noise.append(rng.standard_normal(shape, dtype=np.float32))
        meta = pd.DataFrame(rows)
        model, source = self.render(meta)
        labels = self.label(meta, model, source)
        images = self.renderer.add_noise(model, np.stack(noise))
        meta = pd.concat([meta, labels], axis=1)
        meta.insert(1, "split", split)
        return self.backend.to_numpy(images).astype(np.float32, copy=False), meta


def _reference_band(colors: dict[str, float], names: list[str]) -> int:
    """The band whose colour is 0 (magnitudes are drawn in it)."""
    return next(i for i, b in enumerate(names) if colors[b] == 0.0)


def lenstronomy_kwargs(row: pd.Series | dict, track: Track, band: str) -> dict[str, Any]:
    """lenstronomy ``ImageModel`` inputs that re-render one object in one band, noise-free.

    Returns kwargs_model, kwargs_lens, kwargs_source, kwargs_lens_light and the pixel grid settings, so
    ``ImageModel(data, psf, lens_model, source_model, lens_light_model, kwargs_numerics)`` reproduces our
    image (see tests/test_lens_simulator.py)."""
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

    src_models, src_kw, ll_models, ll_kw = [], [], [], []
    for prefix, lensed in SERSIC_COMPONENTS:
        if row[f"{prefix}_amp_{band}"] != 0.0:
            (src_models if lensed else ll_models).append("SERSIC_ELLIPSE")
            (src_kw if lensed else ll_kw).append(sersic(prefix))
    for prefix, lensed in GAUSSIAN_COMPONENTS:
        if row[f"{prefix}_amp_{band}"] != 0.0:
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
        psf_fwhm=b.seeing, pixel_scale=pix,
    )
