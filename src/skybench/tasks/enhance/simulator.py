"""Image-enhancement simulator: galaxy truth images and their degraded copies (Schawinski et al. 2017).

Per object (its own seed, :class:`skybench.testkey.ObjectSeeds`):

1. draw a galaxy (``population`` of the track): a Sersic bulge, an exponential disk (Sersic n = 1) with
   logarithmic spiral arms, Gaussian star-forming clumps; ellipticals are bulge only, irregulars disk + many
   clumps; magnitudes per band from the r magnitude and each component's colour;
2. render the **truth** with the shared :class:`~skybench.physics.render.Renderer` (supersampled, the survey's
   per-band Gaussian seeing, background + Poisson noise, e-/s per pixel);
3. **degrade** it (:func:`skybench.physics.degrade.degrade`): convolve with a Gaussian of FWHM
   ``label.psf_fwhm`` arcsec, then add white noise so the background sigma becomes ``label.noise_factor``
   times that of the truth.

Arrays: ``images`` (the degraded input, public) and ``truth`` (hidden on the test split). The degradation PSF
and the noise sigmas are in the manifest (``degradation``) and in every metadata row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from skybench.physics.backend import Backend, device
from skybench.physics.degrade import added_sigma, blurred_noise_gain, degradation_kernel, degradation_kernel_1d, degrade
from skybench.physics.galaxy import spiral_arms
from skybench.physics.lens_mass import phi_q2ellipticity
from skybench.physics.light import sersic_total_flux
from skybench.physics.noise import background_sigma, magnitude2cps, noise_stream, object_normals
from skybench.physics.render import Cores, Renderer
from skybench.tasks.enhance.config import MAX_CLUMPS, TYPES, EnhanceTrack
from skybench.testkey import ObjectSeeds, as_object_seeds


def degradation_info(track: EnhanceTrack) -> dict[str, Any]:
    """What method users may know: the degradation PSF and the noise sigmas per band (manifest ``degradation``)."""
    d = track.label
    p = track.survey.pixel_scale
    sigma = np.array([background_sigma(b.read_noise, b.exposure_time, b.num_exposures, b.sky_brightness,
                                       b.zero_point, p) for b in track.survey.bands])
    add = added_sigma(sigma, d.psf_fwhm, p, d.noise_factor)
    names = track.band_names
    return {"psf": "gaussian", "psf_fwhm_arcsec": d.psf_fwhm, "psf_fwhm_pixels": d.psf_fwhm / p,
            "psf_kernel_1d": degradation_kernel_1d(d.psf_fwhm, p).tolist(),
            "psf_note": "the 2-D kernel is outer(psf_kernel_1d, psf_kernel_1d) (Gaussian sampled at pixel centres); "
                        "convolution with zero padding outside the frame",
            "noise_factor": d.noise_factor, "blurred_noise_gain": blurred_noise_gain(d.psf_fwhm, p),
            "sigma_truth": dict(zip(names, sigma.tolist(), strict=True)),
            "sigma_degraded": dict(zip(names, (d.noise_factor * sigma).tolist(), strict=True)),
            "sigma_added": dict(zip(names, add.tolist(), strict=True)),
            "truth_psf_fwhm": {b.name: b.seeing for b in track.survey.bands},
            "display_stretch": d.display_stretch, "flux_data_range": d.flux_data_range}


class EnhanceSimulator:
    hidden_arrays: tuple[str, ...] = ("truth",)
    label_columns: tuple[str, ...] = ()

    @staticmethod
    def arrays(track: EnhanceTrack) -> dict[str, tuple[int, ...]]:
        if track.cutout is None:
            raise ValueError(f"track {track.name!r}: the enhance task needs a cutout")
        shape = (len(track.band_names), track.cutout.size, track.cutout.size)
        return {"images": shape, "truth": shape}

    @staticmethod
    def release_info(track: EnhanceTrack) -> dict[str, Any]:
        return {"units": "e-/s per pixel", "degradation": degradation_info(track)}

    def __init__(self, track: EnhanceTrack, backend: Backend):
        if track.cutout is None:
            raise ValueError(f"track {track.name!r}: the enhance task needs a cutout")
        self.track, self.backend = track, backend
        self.pop, self.deg = track.population, track.label
        self.band_names = track.band_names
        for name, colors in (("bulge", self.pop.bulge.colors), ("disk", self.pop.disk.colors),
                             ("clumps", self.pop.clumps.colors)):
            if set(colors) != set(self.band_names):
                raise ValueError(f"population.{name}.colors must give every band {self.band_names}")
        for name, table in (("flux_data_range", self.deg.flux_data_range),
                            ("display_stretch.low", self.deg.display_stretch.get("low", {})),
                            ("display_stretch.high", self.deg.display_stretch.get("high", {}))):
            if set(table) != set(self.band_names):
                raise ValueError(f"label.{name} must give every band {self.band_names}")
        self.renderer = Renderer(track.cutout.size, track.survey.pixel_scale, track.cutout.supersampling,
                                 track.survey.bands, backend, track.cutout.core_levels)
        self.info = degradation_info(track)

    # ---------------------------------------------------------------- parameters
    def sample(self, obj_seed: int) -> dict[str, Any]:
        """Draw every parameter of one object from ``default_rng(obj_seed)``; same draws for all objects."""
        rng = np.random.default_rng(obj_seed)
        p, u = self.pop, rng.uniform
        kind = TYPES[int(rng.choice(len(TYPES), p=[p.types[t] for t in TYPES]))]
        mag_r = u(*p.mag)
        cx, cy = (float(v) for v in rng.normal(0.0, p.center_sigma, 2))
        bt = u(*p.bulge_fraction[kind])
        row: dict[str, Any] = {"seed": obj_seed, "type": kind, "mag_r": mag_r, "bulge_fraction": bt,
                               "center_x": cx, "center_y": cy}
        zps = {b.name: b.zero_point for b in self.track.survey.bands}
        scatter = self.pop.color_scatter

        def fluxes(prefix: str, frac: float, colors: dict[str, float]) -> None:
            shift = rng.normal(0.0, scatter, len(self.band_names))
            for b, s in zip(self.band_names, shift, strict=True):
                m = mag_r + colors[b] + (s if colors[b] != 0.0 else 0.0) - 2.5 * np.log10(max(frac, 1e-30))
                row[f"{prefix}_flux_{b}"] = float(magnitude2cps(m, zps[b])) if frac > 0 else 0.0

        # Bulge: elliptical Sersic.
        phi = u(0, np.pi)
        e1, e2 = phi_q2ellipticity(phi, u(*p.bulge.q))
        row.update(bulge_R_sersic=u(*p.bulge.R_sersic), bulge_n_sersic=u(*p.bulge.n_sersic), bulge_e1=float(e1),
                   bulge_e2=float(e2))
        fluxes("bulge", bt, p.bulge.colors)
        # Disk (exponential) and its arms, which share its shape and take a fraction of its flux.
        phi_d, q_d = u(0, np.pi), u(*p.disk.q)
        e1, e2 = phi_q2ellipticity(phi_d, q_d)
        R_d = u(*p.disk.R_sersic)
        has_arms = kind == "spiral"
        arm_frac = u(*p.arms.fraction) if has_arms else 0.0
        row.update(disk_R_sersic=R_d, disk_e1=float(e1), disk_e2=float(e2), disk_q=q_d, arm_fraction=arm_frac,
                   n_arms=int(rng.integers(p.arms.n_arms[0], p.arms.n_arms[1] + 1)),
                   arm_pitch=float(np.deg2rad(u(*p.arms.pitch_deg))), arm_phase=u(0, 2 * np.pi),
                   arm_sharpness=u(*p.arms.sharpness), has_arms=has_arms)
        n_clumps = int(rng.integers(p.clumps.n[kind][0], p.clumps.n[kind][1] + 1))
        clump_fracs = [u(*p.clumps.flux_fraction) for _ in range(MAX_CLUMPS)]
        disk_total = 1.0 - bt - sum(clump_fracs[:n_clumps])
        if disk_total <= 0.05 and kind != "elliptical":  # keep some smooth disk under many bright clumps
            scale = (1.0 - bt - 0.05) / max(sum(clump_fracs[:n_clumps]), 1e-12)
            clump_fracs = [f * scale for f in clump_fracs]
            disk_total = 0.05
        disk_total = max(disk_total, 0.0) if kind != "elliptical" else 0.0
        fluxes("disk", disk_total * (1.0 - arm_frac), p.disk.colors)
        fluxes("arms", disk_total * arm_frac, p.disk.colors)
        # Clumps: round Gaussians at a random position angle and radius within the (projected) disk.
        row["n_clumps"] = n_clumps
        for k in range(MAX_CLUMPS):
            rad, ang = u(*p.clumps.radius) * R_d, u(0, 2 * np.pi)
            # a point on the disk's ellipse: minor axis q times the major, rotated by the disk angle
            xa, ya = rad * np.cos(ang), rad * q_d * np.sin(ang)
            row[f"clump{k}_center_x"] = cx + float(xa * np.cos(phi_d) - ya * np.sin(phi_d))
            row[f"clump{k}_center_y"] = cy + float(xa * np.sin(phi_d) + ya * np.cos(phi_d))
            row[f"clump{k}_sigma"] = u(*p.clumps.sigma)
            fluxes(f"clump{k}", clump_fracs[k] if k < n_clumps else 0.0, p.clumps.colors)
        return row

    # ---------------------------------------------------------------- rendering
    def render(self, meta: pd.DataFrame) -> Any:
        """Noise-free, PSF-convolved (B, bands, n, n) truth images on the backend."""
        be, r = self.backend, self.renderer
        xp = be.xp
        B, nb, n = len(meta), len(self.band_names), r.size
        x, y = r.x, r.y
        cols = {k: v.to_numpy() for k, v in meta.items()}

        def col(name: str, idx: np.ndarray) -> np.ndarray:
            return cols[name].astype(np.float64)[idx, None, None]

        total = xp.zeros((B, nb, n, n), dtype=be.dtype, device=device(x))
        cores: list[tuple[Cores, np.ndarray, np.ndarray]] = []  # the refined profiles' cells, for the PSF
        comps = ["bulge", "disk", "arms"] + [f"clump{k}" for k in range(MAX_CLUMPS)]
        for prefix in comps:
            flux = np.stack([cols[f"{prefix}_flux_{b}"] for b in self.band_names], axis=1).astype(np.float64)
            idx = np.flatnonzero(np.any(flux != 0.0, axis=1))
            if idx.size == 0:
                continue
            centre, cells = (col("center_x", idx), col("center_y", idx)), None
            if prefix == "bulge":  # centred profiles: their cores refined (Renderer.image)
                R, nn = col("bulge_R_sersic", idx), col("bulge_n_sersic", idx)
                img, cells = r.image_cores("sersic", R, nn, col("bulge_e1", idx), col("bulge_e2", idx), *centre)
                unit = sersic_total_flux(1.0, R, nn)[:, :, 0]  # (k, 1)
            elif prefix == "disk":
                R = col("disk_R_sersic", idx)
                img, cells = r.image_cores("sersic", R, 1.0, col("disk_e1", idx), col("disk_e2", idx), *centre)
                unit = sersic_total_flux(1.0, R, 1.0)[:, :, 0]
            elif prefix == "arms":
                sb = spiral_arms(x, y, 1.0, col("disk_R_sersic", idx), col("n_arms", idx), col("arm_pitch", idx),
                                 col("arm_phase", idx), col("arm_sharpness", idx), col("disk_e1", idx),
                                 col("disk_e2", idx), *centre)
                # no closed form: the flux of the unit pattern on the supersampled grid
                unit = be.to_numpy(xp.sum(sb, axis=(1, 2))).astype(np.float64)[:, None] * \
                    (r.pixel_scale / r.supersampling) ** 2
                img = r.bin(sb)  # a modulated disk, zero at the centre: the grid alone
            else:
                img, cells = r.image_cores("gaussian", col(f"{prefix}_sigma", idx), 0.0, 0.0,
                                           col(f"{prefix}_center_x", idx), col(f"{prefix}_center_y", idx))
                unit = np.ones((idx.size, 1))
            amps = flux[idx] / np.maximum(unit, 1e-30)
            total[be.index(idx)] += img[:, None] * be.asarray(amps[:, :, None, None])
            if cells is not None:
                cores.append((cells, amps, idx))
        return r.convolve(total, cores)

    # ---------------------------------------------------------------- one chunk
    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """Objects ``start..stop`` of ``split``: {"images": degraded, "truth": truth} float32 (B, bands, n, n)
        in e-/s per pixel, and their metadata. ``seeds``: the per-object seeds (an int: a release seed, public
        derivation)."""
        seeds = as_object_seeds(seeds)
        n = self.track.cutout.size  # type: ignore[union-attr]
        shape = (len(self.band_names), n, n)
        object_seeds = [seeds(split, index) for index in range(start, stop)]
        meta = pd.DataFrame([{"id": index, **self.sample(s)} for index, s in zip(range(start, stop), object_seeds,
                                                                                  strict=True)])
        noise_truth = object_normals((noise_stream(s, 1) for s in object_seeds), shape)
        noise_deg = object_normals((noise_stream(s, 2) for s in object_seeds), shape)
        model = self.render(meta)
        truth = self.backend.to_numpy(self.renderer.add_noise(model, noise_truth)).astype(np.float64)
        d, info = self.deg, self.info
        sigma = np.array([info["sigma_truth"][b] for b in self.band_names])
        images = degrade(truth, sigma, d.psf_fwhm, self.track.survey.pixel_scale, d.noise_factor, noise_deg)
        model_np = self.backend.to_numpy(model).astype(np.float64)
        for i, b in enumerate(self.band_names):
            meta[f"model_flux_{b}"] = model_np[:, i].sum(axis=(1, 2))  # noise-free flux in the frame
            meta[f"sigma_truth_{b}"] = info["sigma_truth"][b]
            meta[f"sigma_degraded_{b}"] = info["sigma_degraded"][b]
            meta[f"sigma_added_{b}"] = info["sigma_added"][b]
        meta["psf_fwhm"] = d.psf_fwhm
        meta["noise_factor"] = d.noise_factor
        meta.insert(1, "split", split)
        return {"images": images.astype(np.float32), "truth": truth.astype(np.float32)}, meta


__all__ = ["MAX_CLUMPS", "TYPES", "EnhanceSimulator", "degradation_info", "degradation_kernel"]
