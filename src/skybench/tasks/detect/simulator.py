"""Survey-tile scenes for lens detection: field galaxies, stars, deflectors, look-alikes and strong lenses, rendered
with the shared physics and the noise of the survey, with a truth table of every catalogued object.

Each tile is drawn from its own seed (``seeds(split, index)``, keyed on the hidden test split), in independent
streams (:func:`skybench.physics.noise.noise_stream`): 0 the field (galaxies and stars), 1 the number and placement
of the lens-population objects, 2 the noise; the lens-population objects are those of the lens track the YAML names,
each with its own seed derived from the tile's, rendered by that track's simulator (taken from the task registry:
the same population, renderer and visibility rule as the cut-out tracks). So a tile does not depend on the batch.

Image formation: field galaxies and the lens-population objects' unlensed light (deflector, companion and arclet
Sersics, ring Gaussians; stamps on the supersampled grid out to the isophote holding 99% of the light) are convolved
once over the whole tile with the survey PSF (zero padding outside the tile); stars (point sources anywhere in a
pixel) are the PSF integrated over the pixels; a lens-population object's lensed light comes as a PSF-convolved
stamp of the lens track's cut-out size (the frame its visibility rule measures). Both are added after the
convolution. Then background + Poisson noise, and saturation: each exposure holds at most the full well, so a
pixel's rate is clipped at full_well / exposure_time. Pixel (0, 0)'s centre is at x = y = 0; x runs along columns,
y along rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import gamma as gamma_dist

from skybench.physics.backend import Backend, get_backend
from skybench.physics.lens_mass import ellipticity2phi_q, phi_q2ellipticity
from skybench.physics.light import sersic_flux_radius, sersic_total_flux
from skybench.physics.noise import magnitude2cps, noise_stream
from skybench.physics.psf import pixel_integrated_gaussian_1d
from skybench.physics.render import Renderer
from skybench.tasks.detect.config import STAMP_FLUX, TABLE, DetectTrack, stamp_sizes
from skybench.testkey import ObjectSeeds, as_object_seeds

FIELD, PLACEMENT, NOISE = 0, 1, 2  # the tile's random streams
EXP_HALF_LIGHT = 1.678  # half-light radius / scale length of an exponential disc (b_1 of the Sersic profile)
LOOKALIKE_FLAGS = ("has_companion", "has_arclet", "has_ring")


def lens_object_seeds(tile_seed: int, n: int) -> list[int]:
    """The seeds of the lens-population objects a tile may use, in the order they are tried."""
    state = np.random.SeedSequence([int(tile_seed), 3]).generate_state(n, dtype=np.uint64)
    return [int(s >> np.uint64(1)) for s in state]  # fits in int64, as the release's seeds


@dataclass
class Scene:
    """One tile: its noise-free model, the lens-population stamps already in it, and the truth table."""

    seed: int
    model: np.ndarray  # (bands, H, W) e-/s, noise-free and unsaturated
    truth: pd.DataFrame  # one row per catalogued object
    n_lens_wanted: int
    n_lookalike_wanted: int
    n_deflector_wanted: int


FIRST = ["tile", "kind", "x", "y", "theta_E", "mag"]


class DetectSimulator:
    hidden_arrays: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ("n_lens",)
    tables: tuple[str, ...] = (TABLE,)

    @staticmethod
    def arrays(track: DetectTrack) -> dict[str, tuple[int, ...]]:
        return {"images": (len(track.band_names), track.tile_size, track.tile_size)}

    @staticmethod
    def release_info(track: DetectTrack) -> dict[str, Any]:
        return {"tile_size": track.tile_size, "pixel_scale": track.survey.pixel_scale,
                "tile_area_deg2": track.tile_area_deg2,
                "saturation_e_per_s": {b.name: track.population.saturation.full_well / b.exposure_time
                                       for b in track.survey.bands}}

    def __init__(self, track: DetectTrack, backend: Backend | None = None, lens_track: Any = None):
        from skybench.tasks import get_task
        from skybench.tracks import load_track

        self.track, self.backend = track, backend or get_backend("numpy")
        self.pop, self.bands, self.band_names = track.population, track.survey.bands, track.band_names
        lens_track = lens_track if lens_track is not None else load_track(self.pop.lenses.track)
        if lens_track.survey != track.survey:
            raise ValueError(f"track {track.name!r}: its survey differs from that of the lens track "
                             f"{lens_track.name!r} its lenses come from; give both the same survey: section")
        if lens_track.task != "lens":
            raise ValueError(f"track {track.name!r}: population.lenses.track {lens_track.name!r} is a "
                             f"{lens_track.task} track; name a lens track (lens-space)")
        self.lens_track = lens_track
        lens = lens_track.population.lens  # its deflectors' light: the largest, most cuspy and flattest at once
        need = int(stamp_sizes(lens.R_sersic[1], track.survey.pixel_scale, max(b.seeing for b in track.survey.bands),
                               None, sersic_flux_radius(lens.n_sersic[1], STAMP_FLUX) / math.sqrt(lens.light_q[0])))
        if track.tile.max_stamp < need:  # a cut deflector: a square edge around each and its catalogue flux short
            raise ValueError(f"track {track.name!r}: tile.max_stamp {track.tile.max_stamp} cuts the deflectors of "
                             f"{lens_track.name!r} (R_sersic {lens.R_sersic[1]}\", n_sersic {lens.n_sersic[1]}, q "
                             f"{lens.light_q[0]} needs a {need}-pixel stamp): raise it to {need}")
        # the lens task's simulator, from the registry (tasks never import one another): its population,
        # renderer and visibility rule; sample, render and label are its public methods
        lens_cls: Any = get_task("lens").simulator()
        self.lens_sim = lens_cls(lens_track, self.backend)
        self._unlensed: list[tuple[str, str]] = self.lens_sim.unlensed_components()
        self.stamp = int(lens_track.cutout.size)
        self.size, self.pix = track.tile_size, track.survey.pixel_scale
        self.tile_renderer = Renderer(self.size, self.pix, 1, self.bands, get_backend("numpy"), 0)
        self._stamp_renderers: dict[int, Renderer] = {}
        self.saturation = np.array([self.pop.saturation.full_well / b.exposure_time for b in self.bands])
        g = self.pop.galaxies
        # p(r) ~ r exp(-(r/a)^alpha): (r/a)^alpha ~ Gamma(2/alpha); a from the median of the size relation
        self._size_shape = 2.0 / g.size.alpha
        self._size_median_t = float(gamma_dist.ppf(0.5, self._size_shape)) ** (1.0 / g.size.alpha)
        self._table_columns: list[str] | None = None

    # ------------------------------------------------------------------ the field: galaxies and stars
    def draw_field(self, tile_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The field galaxies and stars of a tile (parameters only, from its stream 0)."""
        rng = noise_stream(int(tile_seed), FIELD)
        g, s, area, nb = self.pop.galaxies, self.pop.stars, self.track.tile_area_deg2, len(self.bands)
        n_gal, n_star = int(rng.poisson(g.per_deg2() * area)), int(rng.poisson(s.per_deg2() * area))
        U, T = rng.random((6, n_gal)), rng.gamma(self._size_shape, size=n_gal)
        colour_normals = rng.standard_normal((nb, n_gal))
        span = self.size - 1.0
        x, y, mag = U[0] * span, U[1] * span, g.magnitudes(U[2])
        sz = g.size
        r_med = np.exp(sz.ln_rd_ref + sz.ln_rd_slope * (mag - sz.m_ref))
        r_d = r_med / self._size_median_t * T ** (1.0 / sz.alpha)
        R = np.minimum(EXP_HALF_LIGHT * r_d, sz.max_R_sersic)
        n = g.n_sersic[0] + (g.n_sersic[1] - g.n_sersic[0]) * U[3]
        q = g.q[0] + (g.q[1] - g.q[0]) * U[4]
        e1, e2 = phi_q2ellipticity(np.pi * U[5], q)
        gal = {"kind": np.full(n_gal, "galaxy"), "x": x, "y": y, "mag": mag, "R_sersic": R, "n_sersic": n,
               "e1": e1, "e2": e2, "r_d": r_d}
        for k, b in enumerate(self.band_names):
            c = g.colors[b]
            gal[f"mag_{b}"] = mag + c + (g.color_scatter * colour_normals[k] if c != 0.0 else 0.0)
        V = rng.random((3, n_star))
        star_mag = s.magnitudes(V[2])
        stars = {"kind": np.full(n_star, "star"), "x": V[0] * span, "y": V[1] * span,
                 "mag": star_mag, **{f"mag_{b}": star_mag + s.colors[b] for b in self.band_names}}
        return pd.DataFrame(gal), pd.DataFrame(stars)

    def _renderer(self, size: int) -> Renderer:
        if size not in self._stamp_renderers:
            self._stamp_renderers[size] = Renderer(size, self.pix, self.track.tile.supersampling, self.bands,
                                                   self.backend, self.track.tile.core_levels)
        return self._stamp_renderers[size]

    def _stamp_sizes(self, kind: str, p: pd.DataFrame) -> np.ndarray:
        """Out to the isophote holding :data:`STAMP_FLUX` of the light, along the major axis (a / R = 1 / sqrt(q) in
        lenstronomy's product-average ellipse), and no larger than a stamp that covers the whole tile from (x, y)
        (the tile is convolved with zero padding: light off the tile adds nothing to it)."""
        _, q = ellipticity2phi_q(p["e1"].to_numpy(), p["e2"].to_numpy())
        # a Gaussian holds 1 - exp(-r^2 / 2 sigma^2) inside r sigmas
        share = sersic_flux_radius(p["n"].to_numpy(), STAMP_FLUX) if kind == "sersic" else \
            np.sqrt(-2 * np.log(1 - STAMP_FLUX))
        sizes = stamp_sizes(p["R"].to_numpy(), self.pix, max(b.seeing for b in self.bands),
                            self.track.tile.max_stamp, share / np.sqrt(q))
        x, y, last = p["x"].to_numpy(), p["y"].to_numpy(), self.size - 1
        cover = 2 ** np.ceil(np.log2(2 * np.max([x, last - x, y, last - y], axis=0) + 2))
        return np.minimum(sizes, np.maximum(cover, 16)).astype(int)

    def _add_galaxies(self, tile: np.ndarray, gal: pd.DataFrame) -> list[tuple[np.ndarray, int, int]]:
        """Add the field galaxies, unconvolved, to ``tile`` (bands, H, W) (:meth:`_add_profiles`)."""
        if gal.empty:
            return []
        R, n = gal["R_sersic"].to_numpy(), gal["n_sersic"].to_numpy()
        unit = sersic_total_flux(1.0, R, n)
        amps = {f"amp_{b}": magnitude2cps(gal[f"mag_{b}"].to_numpy(), band.zero_point) / unit
                for b, band in zip(self.band_names, self.bands, strict=True)}
        return self._add_profiles(tile, "sersic", pd.DataFrame(
            {"x": gal["x"].to_numpy(), "y": gal["y"].to_numpy(), "R": R, "n": n, "e1": gal["e1"].to_numpy(),
             "e2": gal["e2"].to_numpy(), **amps}))

    def _add_profiles(self, tile: np.ndarray, kind: str, p: pd.DataFrame, pixels: int = 1 << 24
                      ) -> list[tuple[np.ndarray, int, int]]:
        """Add elliptical Sersic (``kind`` "sersic": R = R_sersic, n) or Gaussian ("gaussian": R = sigma) profiles,
        unconvolved, to ``tile`` (bands, H, W): one row of ``p`` each, centre (x, y) in tile pixels, e1, e2 and
        amp_<band> (lenstronomy's amp). Stamps on the supersampled grid (:meth:`_stamp_sizes`), batched per stamp
        size, at most ``pixels`` stamp pixels a batch (an object's stamp does not depend on the others). Returns
        what the PSF adds to each profile's core once convolved (Renderer.core_psf), and the tile pixel of the
        window's (0, 0)."""
        cores: list[tuple[np.ndarray, int, int]] = []
        sizes = self._stamp_sizes(kind, p) if len(p) else np.zeros(0, int)
        for size in np.unique(sizes):
            r, rows = self._renderer(int(size)), np.flatnonzero(sizes == size)
            chunk = max(1, pixels // int(size) ** 2)
            for start in range(0, rows.size, chunk):
                sel = p.iloc[rows[start:start + chunk]]
                x, y = sel["x"].to_numpy(), sel["y"].to_numpy()
                c0, r0 = np.floor(x - (size - 1) / 2).astype(int), np.floor(y - (size - 1) / 2).astype(int)
                cx, cy = (x - c0 - (size - 1) / 2) * self.pix, (y - r0 - (size - 1) / 2) * self.pix
                shape = (sel["R"].to_numpy(), *([sel["n"].to_numpy()] if kind == "sersic" else []))
                img, cells = r.image_cores(kind, *shape, sel["e1"].to_numpy(), sel["e2"].to_numpy(), cx, cy)
                img = self.backend.to_numpy(img).astype(np.float64)  # (P, n, n) per unit amplitude
                win = None if cells is None else self.backend.to_numpy(r.core_psf(cells)).astype(np.float64)
                amps = sel[[f"amp_{b}" for b in self.band_names]].to_numpy()
                for k in range(len(sel)):
                    _paste(tile, img[k][None] * amps[k][:, None, None], int(r0[k]), int(c0[k]))
                    if win is not None and cells is not None:
                        cores.append((win[k] * amps[k][:, None, None], int(r0[k] + cells.top[k]) - r.psf_half,
                                      int(c0[k] + cells.left[k]) - r.psf_half))
        return cores

    def _add_stars(self, model: np.ndarray, stars: pd.DataFrame) -> None:
        """Add the stars to the convolved ``model`` (bands, H, W): each band's PSF integrated over the pixels around
        the star's position (the galaxies' pixel box comes from their binning; a point source has none to bin)."""
        for _, row in stars.iterrows():
            cx, cy = int(np.rint(row["x"])), int(np.rint(row["y"]))
            for i, (b, band) in enumerate(zip(self.band_names, self.bands, strict=True)):
                kx = pixel_integrated_gaussian_1d(band.seeing, self.pix, offset=float(row["x"]) - cx)
                ky = pixel_integrated_gaussian_1d(band.seeing, self.pix, offset=float(row["y"]) - cy)
                flux, h = magnitude2cps(float(row[f"mag_{b}"]), band.zero_point), len(kx) // 2
                _paste(model[i:i + 1], flux * np.outer(ky, kx)[None], cy - h, cx - h)

    # ------------------------------------------------------------------ lenses and look-alikes
    def _lens_population(self, tile_seed: int, n_lens: int, n_look: int, n_defl: int, chunk: int = 8
                         ) -> tuple[pd.DataFrame, np.ndarray]:
        """The first ``n_lens`` objects of the tile's lens-population stream that pass the visibility rule, the
        first ``n_look`` that fail it with a ring, arclet or companion and the first ``n_defl`` that fail it with
        neither, with the PSF-convolved stamps of their lensed light (the unlensed light: :meth:`_population_light`).
        The visibility rule sees the whole object in the lens track's cut-out, as in that track."""
        seeds = lens_object_seeds(tile_seed, self.pop.lenses.max_draws)
        taken: list[pd.DataFrame] = []
        stamps: list[np.ndarray] = []
        need = {"lens": n_lens, "lookalike": n_look, "deflector": n_defl}
        for start in range(0, len(seeds), chunk):
            if not any(need.values()):
                break
            samples = [self.lens_sim.sample(s) for s in seeds[start:start + chunk]]
            cols = {k: np.array([smp[k] for smp in samples]) for k in samples[0]}
            model, source = self.lens_sim.render(_light(cols, self._unlensed, lensed=True))
            unlensed, _ = self.lens_sim.render(_light(cols, self._unlensed, lensed=False))
            meta = pd.concat([pd.DataFrame(cols), self.lens_sim.label(cols, model + unlensed, source)], axis=1)
            lens = meta["is_lens"].to_numpy() == 1
            look = ~lens & np.any(meta[list(LOOKALIKE_FLAGS)].to_numpy(dtype=bool), axis=1)
            kind = np.where(lens, "lens", np.where(look, "lookalike", "deflector"))
            for k in range(len(meta)):
                if need[kind[k]] > 0:
                    need[kind[k]] -= 1
                    taken.append(meta.iloc[[k]].assign(kind=kind[k]))
                    stamps.append(self.backend.to_numpy(model[k]).astype(np.float64))
        if not taken:
            return pd.DataFrame(), np.zeros((0, len(self.bands), self.stamp, self.stamp))
        order = sorted(range(len(taken)), key=lambda i: taken[i]["kind"].iloc[0] != "lens")  # lenses first
        return (pd.concat([taken[i] for i in order], ignore_index=True), np.stack([stamps[i] for i in order]))

    def _population_light(self, objs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
        """The unlensed light of the placed lens-population objects (deflector, companion, arclet, ring), as
        :meth:`_add_profiles` takes it: (profile, rows) per profile, each component present a row, with the lens
        track's amplitudes; its centre from the deflector's (x, y) and the offset between the two."""
        out = []
        for kind in ("sersic", "gaussian"):
            rows = []
            for p in (p for p, k in self._unlensed if k == kind):
                amps = {f"amp_{b}": objs[f"{p}_amp_{b}"].to_numpy(dtype=np.float64) for b in self.band_names}
                on = np.any(np.array(list(amps.values())) != 0.0, axis=0)
                c = {a: objs[f"{p}_{a}"].to_numpy(dtype=np.float64)[on] for a in ("center_x", "center_y", "e1", "e2")}
                rows.append(pd.DataFrame({
                    "x": objs["x"].to_numpy()[on] + (c["center_x"] - objs["lens_center_x"].to_numpy()[on]) / self.pix,
                    "y": objs["y"].to_numpy()[on] + (c["center_y"] - objs["lens_center_y"].to_numpy()[on]) / self.pix,
                    "R": objs[f"{p}_R_sersic" if kind == "sersic" else f"{p}_sigma"].to_numpy(dtype=np.float64)[on],
                    **({"n": objs[f"{p}_n_sersic"].to_numpy(dtype=np.float64)[on]} if kind == "sersic" else {}),
                    "e1": c["e1"], "e2": c["e2"], **{k: v[on] for k, v in amps.items()}}))
            out.append((kind, pd.concat(rows, ignore_index=True)))
        return out

    def _place(self, rng: np.random.Generator, n: int) -> list[tuple[float, float] | None]:
        """Centres (pixels) of ``n`` lens-population objects: uniform inside the edge margin, at least
        min_separation apart; None for an object with no room after max_tries positions."""
        p = self.pop.placement
        lo = p.edge_margin / self.pix
        hi = self.size - 1 - lo
        if hi < lo:
            raise ValueError(f"track {self.track.name!r}: placement.edge_margin {p.edge_margin}\" leaves no room in a "
                             f"{self.size}-pixel tile")
        min_d = p.min_separation / self.pix
        placed: list[tuple[float, float]] = []
        out: list[tuple[float, float] | None] = []
        for _ in range(n):
            spot = None
            for xy in lo + (hi - lo) * rng.random((p.max_tries, 2)):
                if all(math.hypot(xy[0] - a, xy[1] - b) >= min_d for a, b in placed):
                    spot = (float(xy[0]), float(xy[1]))
                    placed.append(spot)
                    break
            out.append(spot)
        return out

    # ------------------------------------------------------------------ one tile
    def scene(self, tile_seed: int) -> Scene:
        """The noise-free model of one tile and its truth table."""
        tile_seed = int(tile_seed)
        gal, stars = self.draw_field(tile_seed)
        rng = noise_stream(tile_seed, PLACEMENT)
        lo, hi = self.pop.lenses.per_tile
        n_lens = int(rng.integers(lo, hi + 1))
        lo, hi = self.pop.lenses.lookalikes_per_tile
        n_look = int(rng.integers(lo, hi + 1))
        lo, hi = self.pop.lenses.deflectors_per_tile
        n_defl = int(rng.integers(lo, hi + 1))
        objs, stamps = self._lens_population(tile_seed, n_lens, n_look, n_defl)
        spots = self._place(rng, len(objs))
        keep = [k for k, s in enumerate(spots) if s is not None]
        h, corners = (self.stamp - 1) / 2, {}
        for k in keep:  # stamp pixel (0, 0) at tile (r0, c0): the stamp's centre at (c0 + h, r0 + h)
            sx, sy = spots[k]  # type: ignore[misc]
            c0, r0 = corners[k] = int(np.floor(sx - h + 0.5)), int(np.floor(sy - h + 0.5))
            objs.loc[k, "x"] = c0 + h + objs.loc[k, "lens_center_x"] / self.pix
            objs.loc[k, "y"] = r0 + h + objs.loc[k, "lens_center_y"] / self.pix
        objs = objs.iloc[keep].reset_index(drop=True) if len(objs) else objs
        # the field galaxies and the objects' unlensed light convolved together, their cores blurred from their cells
        tile = np.zeros((len(self.bands), self.size, self.size))
        cores = self._add_galaxies(tile, gal)
        for kind, light in self._population_light(objs) if len(objs) else []:
            cores += self._add_profiles(tile, kind, light)
        model = self.tile_renderer.convolve(tile[None].astype(np.float32))[0].astype(np.float64)
        for win, r0, c0 in cores:
            _paste(model, win, r0, c0)
        self._add_stars(model, stars)
        for k, (c0, r0) in corners.items():  # the lensed light, already convolved in the lens track's cut-out
            _paste(model, stamps[k], r0, c0)
        if len(objs):
            objs["seed"] = objs["seed"].astype("Int64")  # exact through the concat with the field (no seed)
            ref = self.band_names[0]
            objs["mag"] = objs[f"lens_light_mag_{ref}"]
            objs["theta_E"] = np.where(objs["kind"] == "lens", objs["lens_theta_E"], np.nan)
        truth = pd.concat([t for t in (objs, gal, stars) if len(t)], ignore_index=True) if (
            len(objs) or len(gal) or len(stars)) else pd.DataFrame({"kind": [], "x": [], "y": [], "mag": []})
        if "theta_E" not in truth.columns:
            truth["theta_E"] = np.nan
        return Scene(tile_seed, model, truth, n_lens, n_look, n_defl)

    def observe(self, scene: Scene) -> np.ndarray:
        """Noise (from the tile's stream 2) and saturation on a scene's model: float32 (bands, H, W) in e-/s."""
        normal = noise_stream(scene.seed, NOISE).standard_normal((1, *scene.model.shape), dtype=np.float32)
        noisy = self.tile_renderer.add_noise(scene.model[None].astype(np.float32), normal)[0]
        return self.saturate(noisy)

    def saturate(self, images: np.ndarray) -> np.ndarray:
        """Clip (..., bands, H, W) rates at each band's full_well / exposure_time."""
        return np.minimum(images, self.saturation.astype(images.dtype)[:, None, None])

    # ------------------------------------------------------------------ a batch of tiles
    def simulate_tiles(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                       ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
        """Tiles ``start..stop`` of ``split``: float32 images (B, bands, H, W) in e-/s, one row per tile (id, seed,
        counts) and the truth table (one row per catalogued object; ``tile`` is the tile's id)."""
        obj_seeds = as_object_seeds(seeds).many(split, start, stop)
        images = np.empty((stop - start, len(self.bands), self.size, self.size), dtype=np.float32)
        tiles, truths = [], []
        for k, (tile_id, s) in enumerate(zip(range(start, stop), obj_seeds, strict=True)):
            sc = self.scene(s)
            images[k] = self.observe(sc)
            kinds = sc.truth["kind"].to_numpy()
            tiles.append({"id": tile_id, "split": split, "seed": s, "n_lens": int(np.sum(kinds == "lens")),
                          "n_lookalike": int(np.sum(kinds == "lookalike")),
                          "n_deflector": int(np.sum(kinds == "deflector")), "n_galaxy": int(np.sum(kinds == "galaxy")),
                          "n_star": int(np.sum(kinds == "star")),
                          "n_saturated": int(np.sum(images[k] >= self.saturate(np.full_like(images[k], np.inf))))})
            truths.append(sc.truth.assign(tile=tile_id))
        truth = pd.concat(truths, ignore_index=True)
        truth = truth[FIRST + [c for c in truth.columns if c not in FIRST]]
        return images, pd.DataFrame(tiles), truth

    def table_columns(self) -> list[str]:
        """The columns of the release's truth table, whatever objects a batch of tiles holds: the first ones, the
        lens-population object's parameters and labels (from one object of the lens track), the field galaxies'."""
        if self._table_columns is None:
            smp = self.lens_sim.sample(lens_object_seeds(0, 1)[0])
            cols = {k: np.array([v]) for k, v in smp.items()}
            lens = [*cols, *self.lens_sim.label(cols, *self.lens_sim.render(cols)).columns]
            field = ["R_sersic", "n_sersic", "e1", "e2", "r_d", *(f"mag_{b}" for b in self.band_names)]
            self._table_columns = list(dict.fromkeys([*FIRST, *lens, *field]))
        return self._table_columns

    def release_table(self, truth: pd.DataFrame) -> pd.DataFrame:
        """``truth`` with the columns of :meth:`table_columns` (NaN where an object has none) in fixed dtypes: tile
        int64, kind string, lens-object seed nullable int64, every other column float64 (flags as 0/1)."""
        cols = self.table_columns()
        if extra := sorted(set(truth.columns) - set(cols)):
            raise ValueError(f"track {self.track.name!r}: truth columns {extra} are not in the release table's")
        out = truth.reindex(columns=cols)
        return out.astype({c: ("int64" if c == "tile" else "str" if c == "kind" else "Int64" if c == "seed"
                               else "float64") for c in cols})

    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, pd.DataFrame]]:
        """The :class:`~skybench.tasks.base.Simulator` form: images, one metadata row per tile and the release's
        truth table (``objects``: one row per catalogued object, ``tile`` the tile's id)."""
        images, tiles, truth = self.simulate_tiles(seeds, split, start, stop)
        return images, {c: tiles[c].to_numpy() for c in tiles.columns}, {TABLE: self.release_table(truth)}


def _light(cols: dict[str, np.ndarray], unlensed: list[tuple[str, str]], lensed: bool) -> dict[str, np.ndarray]:
    """``cols`` with only the lensed light components' amplitudes (``lensed``) or only the unlensed ones' (and no
    source to ray-trace) left."""
    names = {p for p, _ in unlensed}
    out = {k: np.zeros_like(v) if "_amp_" in k and (k.split("_amp_")[0] in names) == lensed else v
           for k, v in cols.items()}
    if not lensed:
        out["has_source"] = np.zeros_like(cols["has_source"])
    return out


def _paste(tile: np.ndarray, stamp: np.ndarray, r0: int, c0: int) -> None:
    """tile[:, r0:r0+h, c0:c0+w] += stamp, the part of the stamp outside the tile dropped."""
    H, W = tile.shape[-2:]
    h, w = stamp.shape[-2:]
    ra, rb, ca, cb = max(r0, 0), min(r0 + h, H), max(c0, 0), min(c0 + w, W)
    if ra < rb and ca < cb:
        tile[..., ra:rb, ca:cb] += stamp[..., ra - r0:rb - r0, ca - c0:cb - c0]
