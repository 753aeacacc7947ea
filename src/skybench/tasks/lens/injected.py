"""Injected-arc lens tracks (``lens-space-injected``, ``lens-ground-injected``): the track population's arcs (SIE +
shear, Sersic sources with clumps, rendered with the track's PSF and pixels by :class:`LensSimulator`) added to REAL
galaxy cut-outs, the approach of most modern lens searches (e.g. Petrillo et al. 2019, Jacobs et al. 2019). The
arcs take the cut-outs' PSF where it is broader than the track's (:func:`arc_seeing`: the KiDS stamps').

The cut-outs are the real non-lenses (``is_lens = 0``) of the track's real set (``injection.cutouts``, made by
``skybench import-real-set`` from ``data/galaxies``: KiDS u, g, r, i stamps for lens-ground; HST stamps and cut-outs
of HST scenes for lens-space), already brought to the track's grid and white noise, and to its PSF where theirs is
sharper (:func:`skybench.real_hst.match_to_target`; the KiDS PSFs are broader). Each object of the release is one
cut-out of its split's galaxies, under one of the 8 rotations by 90 degrees and flips (exact on a white-noise,
circular-PSF image), with an arc (a fraction ``p_arc``) or without. The lens is centred on the galaxy's light
centroid (within 1"); theta_E comes from the population, or (``theta_E_from: flux``) at the quantile of the galaxy's
2" flux among the cut-outs (plus ``theta_E_scatter``), so brighter deflectors lens more. An arc is redrawn
(``max_attempts``) until it passes the track's visibility rule; ``is_lens`` = an arc was injected. The image is
``cut-out + arc + Poisson noise of the arc`` (the cut-out carries the background noise already).

Galaxies, not cut-outs, are split (:func:`galaxy_groups`: an HST stamp's galaxy, a whole HST scene, KiDS stamps that
overlap in their parent frame), so no galaxy is in two of train, val and test. Train and val (public) reuse their few
cut-outs many times (transforms, arcs); the TEST split holds each of its cut-outs exactly ONCE
(:func:`test_assignment`: a keyed permutation, one transform, an arc for a keyed ``round(p_arc * n)`` of them), so its
size is the number of test cut-outs (:meth:`InjectedSimulator.split_limits`; the profile's test size is an upper
bound). Why: the whole test stream is seen in one run, and copies of one cut-out (the same noise pixels, transformed)
would let a model difference them and read off which copy carries an arc. Caveat: the same cut-outs (same pixels)
are the real non-lenses of the base track's real set, so ``real_fpr`` of a model trained on this track's train split
is optimistic on its train galaxies (the manifest lists each split's galaxies: ``injection.galaxies``), and no real
set is folded into this track's test stream (it would repeat its pixels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skybench.physics.backend import Backend
from skybench.release import open_release, release_digest
from skybench.release.reader import HiddenSplit
from skybench.tasks.lens.config import LensTrack
from skybench.tasks.lens.simulator import LensSimulator
from skybench.testkey import ObjectSeeds, as_object_seeds
from skybench.tracks import project_root

SPLITS = ("train", "val", "test")
KIDS_STAMP_PX = 64  # kids_viking_field stamps are 64 x 64 pixels of the parent frame (data/galaxies/README.md)
CENTROID_RADIUS = 1.0  # arcsec: the lens is centred on the galaxy's light centroid within this radius
CENTROID_MAX = 0.3  # arcsec: at most this far from the cut-out's centre
APERTURE_RADIUS = 2.0  # arcsec: the galaxy's flux (theta_E_from: flux), as the real sets measure it
TRANSFORMS = 8  # rotations by 0, 90, 180, 270 degrees, each with or without a flip of x
_TEST_ORDER_TAG = 0x7465737431  # separates the test order's stream from object 0's own


def transform(image: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform ``k`` (0..7) of (..., y, x) images: ``k % 4`` rotations by 90 degrees, then a flip of x
    for ``k >= 4``."""
    out = np.rot90(image, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if k >= 4 else out)


def test_assignment(seeds: ObjectSeeds | int, n_cutouts: int, p_arc: float) -> tuple[np.ndarray, np.ndarray]:
    """The test split's objects: object ``i`` is the test cut-out ``order[i]`` (each exactly once) and wants an arc
    where ``arc[i]`` (exactly ``round(p_arc * n_cutouts)`` of them). Drawn from the seed of test object 0 (keyed
    outside ``demo``: :mod:`skybench.testkey`), so neither the order nor the arcs follow from public information."""
    rng = np.random.default_rng([as_object_seeds(seeds)("test", 0), _TEST_ORDER_TAG])
    order = rng.permutation(n_cutouts)
    arc = rng.permutation(n_cutouts) < int(np.floor(p_arc * n_cutouts + 0.5))
    return order, arc


def galaxy_groups(meta: pd.DataFrame) -> np.ndarray:
    """One galaxy id per real cut-out (rows of a real set's hidden metadata): cut-outs sharing any sky share an id.
    An HST stamp: its galaxy (the same galaxy in another band too); an HST scene: the whole scene (its cut-outs may
    overlap); a KiDS stamp: the connected set of stamps whose 64 x 64 footprints overlap in the parent frame. Then
    any of these whose cut-outs' footprints overlap on the sky (``ra``, ``dec``, ``footprint_arcsec_*``): two
    scenes cut from one mosaic hold the same galaxies, pixels and noise alike."""
    kind = meta.get("source_kind", pd.Series([""] * len(meta), index=meta.index)).astype(str).to_numpy()
    files = meta.get("file", pd.Series([""] * len(meta), index=meta.index)).astype(str).to_numpy()
    out = np.empty(len(meta), dtype=object)
    for i, (k, f) in enumerate(zip(kind, files, strict=True)):
        if k == "hst_stamp":  # hst_stamps/AEGIS_14886_F814W.fits -> AEGIS_14886
            out[i] = "hst:" + Path(f).stem.rsplit("_", 1)[0]
        elif k == "hst_scene":
            out[i] = "scene:" + Path(f).stem
        elif k != "kids_stamp":
            out[i] = f"{k}:{f}:{meta['name'].iloc[i] if 'name' in meta else i}"
    kids = np.flatnonzero(kind == "kids_stamp")
    if kids.size:  # union-find over overlapping footprints
        x0 = meta["cat_x0"].to_numpy()[kids].astype(float)
        y0 = meta["cat_y0"].to_numpy()[kids].astype(float)
        stamp = meta["stamp"].to_numpy()[kids].astype(int)
        parent = list(range(kids.size))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        overlap = (np.abs(x0[:, None] - x0[None]) < KIDS_STAMP_PX) & (np.abs(y0[:, None] - y0[None]) < KIDS_STAMP_PX)
        for a, b in zip(*np.nonzero(np.triu(overlap, 1)), strict=True):
            parent[find(int(a))] = find(int(b))
        roots = np.array([find(a) for a in range(kids.size)])
        first = {r: int(stamp[roots == r].min()) for r in set(roots.tolist())}
        for j, row in enumerate(kids):
            out[row] = f"kids:{first[int(roots[j])]}"
    return _sky_groups(meta, out.astype(str))


def _sky_groups(meta: pd.DataFrame, groups: np.ndarray) -> np.ndarray:
    """``groups`` merged where two cut-outs' footprints (boxes of ``footprint_arcsec_x/y`` centred on ``ra``,
    ``dec``) overlap on the sky; each merged group named by its first id in sorted order."""
    if not {"ra", "dec"} <= set(meta.columns):
        if "source_kind" in meta and (meta["source_kind"] == "hst_scene").any():  # scenes may share a mosaic
            raise ValueError("the real set's HST scene cut-outs have no sky positions (ra, dec): it was imported "
                             "before they were recorded; re-import it (skybench import-real-set, or dvc repro)")
        return groups
    ra, dec = (meta[c].to_numpy(np.float64) for c in ("ra", "dec"))
    half = [meta.get(c, pd.Series(0.0, index=meta.index)).fillna(0.0).to_numpy(np.float64) / 2.0
            for c in ("footprint_arcsec_x", "footprint_arcsec_y")]
    known = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    # flat-sky offsets in arcsec (footprints of seconds of arc)
    dx = (ra[known, None] - ra[None, known] + 180.0) % 360.0 - 180.0
    dx *= np.cos(np.radians(dec[known, None])) * 3600.0
    dy = (dec[known, None] - dec[None, known]) * 3600.0
    touch = (np.abs(dx) < half[0][known, None] + half[0][None, known]) & \
        (np.abs(dy) < half[1][known, None] + half[1][None, known])
    names = sorted(set(groups.tolist()))
    parent = {g: g for g in names}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in zip(*np.nonzero(np.triu(touch, 1)), strict=True):
        ra_, rb = find(groups[known[a]]), find(groups[known[b]])
        if ra_ != rb:
            parent[max(ra_, rb)] = min(ra_, rb)
    return np.array([find(g) for g in groups], dtype=str)


def assign_splits(groups: np.ndarray, seed: int, test_fraction: float, val_fraction: float) -> dict[str, str]:
    """Split the galaxies (``groups``: one id per cut-out) into test, val and train: the ids in a public shuffled
    order (``default_rng(seed)``), taken into test until it holds ``test_fraction`` of the cut-outs, then into val
    until ``val_fraction``, the rest train; each split gets at least one galaxy where there are enough."""
    ids, counts = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    total, out, acc = counts.sum(), {}, {"test": 0, "val": 0}
    want = {"test": test_fraction * total, "val": val_fraction * total}
    for rank, k in enumerate(order):
        left = len(ids) - rank  # galaxies still to assign, this one included
        if acc["test"] == 0 or (acc["test"] < want["test"] and left > 1):
            split = "test"
        elif want["val"] > 0 and (acc["val"] == 0 or acc["val"] < want["val"]) and left > 1:
            split = "val"
        else:
            split = "train"
        if split != "train":
            acc[split] += int(counts[k])
        out[str(ids[k])] = split
    return out


@dataclass
class Library:
    """The real cut-outs of an injected track, with their galaxy and split."""

    images: np.ndarray  # (N, bands, n, n) float32, e-/s
    meta: pd.DataFrame  # cutout_id (id in the real set), galaxy, split, source_kind, galaxy_flux_2arcsec, ...
    info: dict[str, Any] = field(default_factory=dict)

    def pool(self, split: str) -> np.ndarray:
        """Rows of the cut-outs of ``split`` (val without galaxies of its own: train's)."""
        rows = np.flatnonzero(self.meta["split"].to_numpy() == split)
        if not rows.size and split == "val":
            rows = np.flatnonzero(self.meta["split"].to_numpy() == "train")
        if not rows.size:
            raise ValueError(f"no real galaxy in split {split!r}: the cut-out set is too small to split "
                             f"({len(self.meta)} cut-outs, {self.meta['galaxy'].nunique()} galaxies)")
        return rows


_LIBRARIES: dict[tuple[Any, ...], Library] = {}


def cutouts_path(track: LensTrack) -> Path:
    assert track.injection is not None, f"track {track.name!r} has no injection settings"
    p = Path(track.injection.cutouts)
    return p if p.is_absolute() else project_root() / p


FALLBACK_KIDS_LIMIT = 24  # KiDS stamps read when the real set is built on the fly (no release at ``cutouts``)


def library(track: LensTrack) -> Library:
    """The cut-outs of ``track`` (read once per process from its real set). Where that release is not there (a
    checkout before ``dvc repro`` made it: the tests), the real set is built from ``data/galaxies`` into a
    temporary folder, as ``skybench import-real-set`` would (seed 0; lens-ground: the first
    ``FALLBACK_KIDS_LIMIT`` KiDS stamps only, for time), and the manifest says so."""
    inj = track.injection
    assert inj is not None, f"track {track.name!r} has no injection settings"
    path = cutouts_path(track)
    key = (str(path), inj.split_seed, inj.test_fraction, inj.val_fraction, track.survey.pixel_scale)
    if key not in _LIBRARIES:
        import shutil

        from skybench.release import layout

        built = None if layout.is_release(path) else _build_real_set(track)
        try:
            lib = _load(track, built or path)  # read into memory whole
        finally:
            if built is not None:  # its temporary folder
                shutil.rmtree(built.parent, ignore_errors=True)
        if built is not None:
            lib.info["cutouts"] = f"built on the fly from data/galaxies (no release at {inj.cutouts})"
        _LIBRARIES[key] = lib
    return _LIBRARIES[key]


def _build_real_set(track: LensTrack) -> Path:
    import sys
    import tempfile

    from skybench.tasks.lens.real import import_real_set

    data = project_root() / "data"
    if not (data / "galaxies").is_dir():
        raise FileNotFoundError(f"{track.name}: no real cut-out release at {cutouts_path(track)} and no {data}/galaxies"
                                " to build one from: pull the real data (dvc pull data.dvc) and run"
                                f" `skybench import-real-set {track.name.removesuffix('-injected')} --data data"
                                f" --out {track.injection.cutouts if track.injection else ''}`")
    out = Path(tempfile.mkdtemp(prefix="skybench-cutouts-")) / "real"
    print(f"{track.name}: no real set at {cutouts_path(track)}; building it from {data}/galaxies in {out}",
          file=sys.stderr)
    plain = track.model_copy(update={"injection": None})  # the base track's population: the same real set
    limit = None if len(track.band_names) == 1 else FALLBACK_KIDS_LIMIT
    return import_real_set(data, plain, out, seed=0, limit=limit)


def _load(track: LensTrack, path: Path) -> Library:
    inj = track.injection
    assert inj is not None
    how = f"make it first: skybench import-real-set {track.name.removesuffix('-injected')} --data data --out {path}"
    try:
        release = open_release(path)
        hidden: HiddenSplit | None = release.hidden("test") if release.manifest["counts"]["test"] else None
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"{track.name}: no real cut-out release at {path} ({exc}); {how}") from None
    if hidden is None:
        raise ValueError(f"{track.name}: the real release {path} has no objects (no data/galaxies?); {how}")
    meta = hidden.meta()
    non = (meta["is_lens"].to_numpy() == 0) & ((meta["real_kind"] == "nonlens").to_numpy()
                                               if "real_kind" in meta else True)
    meta = meta[non].reset_index(drop=True)
    images = np.asarray(hidden.inputs("images", meta["id"].to_numpy()), dtype=np.float32)
    if images.shape[1:] != (len(track.band_names), track.cutout.size, track.cutout.size):  # type: ignore[union-attr]
        raise ValueError(f"{track.name}: the cut-outs of {path} have shape {images.shape[1:]}, the track's images "
                         f"{len(track.band_names)} x {track.cutout.size} x {track.cutout.size}")  # type: ignore[union-attr]
    groups = galaxy_groups(meta)
    split_of = assign_splits(groups, inj.split_seed, inj.test_fraction, inj.val_fraction)
    ref = track.band_names.index("r") if "r" in track.band_names else 0
    n, p = images.shape[-1], track.survey.pixel_scale
    c = (np.arange(n) - (n - 1) / 2.0) * p
    aperture = np.hypot(c[:, None], c[None, :]) <= APERTURE_RADIUS
    flux = images[:, ref][:, aperture].astype(np.float64).sum(axis=1)
    lib_meta = pd.DataFrame({
        "cutout_id": meta["id"].to_numpy().astype(np.int64), "galaxy": groups,
        "split": np.array([split_of[g] for g in groups]),
        "source_kind": meta.get("source_kind", pd.Series([""] * len(meta))).astype(str).to_numpy(),
        "galaxy_flux_2arcsec": flux,
        # the galaxy's flux quantile among the cut-outs (mid-ranks): theta_E_from: flux
        "galaxy_flux_quantile": (pd.Series(flux).rank(method="average").to_numpy() - 0.5) / len(flux)})
    seeing = arc_seeing(track, meta)
    first = meta.iloc[0] if len(meta) else {}
    considered = int(first.get("stamps_considered", len(meta))) if len(meta) else 0
    dropped = int(first.get("stamps_dropped_unreachable_flux", 0)) if len(meta) else 0
    info = {"cutouts": inj.cutouts, "cutouts_release_sha256": release_digest(path),
            "real_lenses_left_out": int((~non).sum()),
            "stamps_considered": considered, "stamps_dropped_before_split": dropped,
            "galaxies": {s: sorted(g for g, v in split_of.items() if v == s) for s in SPLITS},
            "galaxies_used": {s: int(sum(v == s for v in split_of.values())) for s in SPLITS},
            "cutouts_used": {s: int((lib_meta["split"] == s).sum()) for s in SPLITS},
            "galaxies_dropped": {s: 0 for s in SPLITS},  # every galaxy of the real set is in one split
            "split_seed": inj.split_seed, "test_fraction": inj.test_fraction, "val_fraction": inj.val_fraction,
            "p_arc": inj.p_arc, "max_attempts": inj.max_attempts, "theta_E_from": inj.theta_E_from,
            "arc_psf_fwhm": seeing}
    return Library(images, lib_meta, info)


def arc_track(track: LensTrack, seeing: dict[str, float] | None = None) -> LensTrack:
    """``track`` as a plain lens track that draws only a lens and its source: every object has a source, no
    look-alikes (their probabilities 0); the lens light is removed after sampling (:meth:`InjectedSimulator.arcs`).
    ``seeing``: {band: PSF FWHM in arcsec} of the cut-outs the arcs go into, where not the track's."""
    pop = track.population
    contaminants = pop.contaminants.model_copy(update={"companion": 0.0, "ring": 0.0, "arclet": 0.0})
    pop = pop.model_copy(update={"p_source": 1.0, "contaminants": contaminants})
    bands = [b.model_copy(update={"seeing": (seeing or {}).get(b.name, b.seeing)}) for b in track.survey.bands]
    survey = track.survey.model_copy(update={"bands": bands})
    return track.model_copy(update={"injection": None, "population": pop, "survey": survey})


def arc_seeing(track: LensTrack, meta: pd.DataFrame) -> dict[str, float]:
    """{band: PSF FWHM (arcsec)} to render the arcs with: the cut-outs' own (the real set's median
    ``psf_fwhm_result``) where broader than the track's. Real injections convolve the arc with the image's PSF
    (Petrillo et al. 2019, Jacobs et al. 2019): KiDS cut-outs keep their 0.93-1.12" PSFs (nothing can sharpen them,
    :mod:`skybench.tasks.lens.real_nonlens`), and arcs at the track's 0.71-0.81" were 1.3-1.6x too peaked."""
    out = {}
    for b in track.survey.bands:
        col = next((c for c in (f"psf_fwhm_result_{b.name}", "psf_fwhm_result") if c in meta), None)
        fwhm = float(np.nanmedian(meta[col].to_numpy(np.float64))) if col is not None and len(meta) else np.nan
        out[b.name] = round(max(b.seeing, fwhm), 4) if np.isfinite(fwhm) else b.seeing
    return out


def centroid(image: np.ndarray, pixel_scale: float) -> tuple[float, float]:
    """(x, y) arcsec of the light centroid of a (y, x) image within ``CENTROID_RADIUS`` of its centre (positive
    pixels), clipped to ``CENTROID_MAX``; x along axis 1, y along axis 0, as the renderer's (and lenstronomy's)."""
    n = image.shape[-1]
    c = (np.arange(n) - (n - 1) / 2.0) * pixel_scale
    w = np.where(np.hypot(c[:, None], c[None, :]) <= CENTROID_RADIUS, np.clip(image, 0.0, None), 0.0)
    total = w.sum()
    if not total > 0:
        return 0.0, 0.0
    x, y = float((w * c[None, :]).sum() / total), float((w * c[:, None]).sum() / total)
    r = np.hypot(x, y)
    return (x, y) if r <= CENTROID_MAX else (x * CENTROID_MAX / r, y * CENTROID_MAX / r)


def inject(cutout: np.ndarray, arc: np.ndarray, normal: np.ndarray | None, total_time: np.ndarray) -> np.ndarray:
    """The injected image: ``cutout + arc`` plus the arc's Poisson noise ``sqrt(|arc| / T) * normal`` per band
    (``normal``: standard normals of the image's shape; None: no noise, the difference is the arc exactly). The
    cut-out carries the background noise (and its own Poisson noise) already."""
    out = cutout.astype(np.float64) + arc
    if normal is not None:
        out += np.sqrt(np.abs(arc) / np.asarray(total_time, dtype=np.float64)[:, None, None]) * normal
    return out


DROP_PREFIXES = ("lens_light_", "companion_", "arclet_", "ring_")  # absent components: not in the metadata
DROP_COLUMNS = ("has_companion", "has_arclet", "has_ring")
ABSENT = ("lens_light", "companion", "arclet", "ring_outer", "ring_inner")


class InjectedSimulator:
    """The simulator interface (:class:`skybench.tasks.base.Simulator`) for a track with ``injection:``."""

    hidden_arrays, label_columns = LensSimulator.hidden_arrays, LensSimulator.label_columns  # the lens layout
    arrays = LensSimulator.arrays

    @staticmethod
    def release_info(track: LensTrack) -> dict[str, Any]:
        lib = library(track)
        n = int(lib.pool("test").size)
        return {"injection": lib.info | {"test_objects": {
            "cutouts": n, "rule": "one object per test cut-out, each exactly once (a random transform; an arc for "
                                  f"round(p_arc * {n}) of them); the profile's test size is an upper bound",
            "why": "a model sees the whole test stream: copies of one cut-out (the same noise pixels) could be "
                   "differenced to find the copy with an arc"}}}

    @staticmethod
    def split_limits(track: LensTrack) -> dict[str, int]:
        """The most objects a split may hold: test, its number of cut-outs (train and val repeat theirs)."""
        return {"test": int(library(track).pool("test").size)}

    def __init__(self, track: LensTrack, backend: Backend):
        assert track.injection is not None, f"track {track.name!r} has no injection settings"
        if backend.generator not in LensSimulator.generators(track):
            raise ValueError(f"{track.name}: injected arcs are drawn with PCG64 only, not {backend.generator!r}")
        self.track, self.inj, self.backend = track, track.injection, backend
        self.lib = library(track)
        self.sim = LensSimulator(arc_track(track, self.lib.info.get("arc_psf_fwhm")), backend)
        self.renderer = self.sim.renderer
        self.poisson = True  # the arc's Poisson noise (False: the image is cut-out + arc exactly; tests)

    def params(self, seeds: list[int], cx: np.ndarray, cy: np.ndarray, theta_E: np.ndarray | None
               ) -> dict[str, np.ndarray]:
        """The lens and source parameters drawn from ``seeds`` (the track's population), without lens light, the lens
        moved to (cx, cy) and given ``theta_E`` where not None (the source's offset from it scaled alike)."""
        cols = self.sim._sample(seeds)
        cols["arc_seed"] = cols.pop("seed")
        for b in self.track.band_names:  # no lens light: the real galaxy is the deflector
            cols[f"lens_light_amp_{b}"] = np.zeros(len(seeds))
        ox, oy = cols["lens_center_x"].copy(), cols["lens_center_y"].copy()
        f = np.ones(len(seeds)) if theta_E is None else theta_E / cols["lens_theta_E"]
        cols["lens_theta_E"] = cols["lens_theta_E"] * f
        for prefix in ("source", *(f"clump{k}" for k in range(3))):
            cols[f"{prefix}_center_x"] = cx + (cols[f"{prefix}_center_x"] - ox) * f
            cols[f"{prefix}_center_y"] = cy + (cols[f"{prefix}_center_y"] - oy) * f
        cols["lens_center_x"], cols["lens_center_y"] = cx.astype(np.float64), cy.astype(np.float64)
        return cols

    def arcs(self, cols: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The PSF-convolved arcs (B, bands, n, n) of ``cols`` as numpy, and their labels (the visibility rule; the
        arc S/N's Poisson term counts the arc's flux only). ``cols`` may be a release's metadata: the absent
        components it leaves out are given zero amplitudes."""
        B = len(cols["lens_theta_E"])
        absent = {f"{p}_amp_{b}": np.zeros(B) for p in ABSENT for b in self.track.band_names}
        cols = {**absent, **cols}
        off = ~np.asarray(cols["has_source"], dtype=bool)
        if off.any():  # objects without an arc: no source (the renderer lenses only has_source objects)
            cols |= {f"{p}_amp_{b}": np.where(off, 0.0, cols[f"{p}_amp_{b}"])
                     for p in ("source", "clump0", "clump1", "clump2") for b in self.track.band_names}
        model, source = self.sim.render(cols)
        return self.backend.to_numpy(source).astype(np.float64), self.sim._label(cols, model, source)

    def simulate(self, seeds: ObjectSeeds | int, split: str, start: int, stop: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Objects ``start..stop`` of ``split``: float32 images (B, bands, n, n) in e-/s and their metadata."""
        object_seeds = as_object_seeds(seeds).many(split, start, stop)
        lib, inj, B = self.lib, self.inj, stop - start
        pool = lib.pool(split)
        rngs = [np.random.default_rng(s) for s in object_seeds]
        U = np.array([rng.random(4) for rng in rngs])
        arc_seeds = np.array([rng.integers(0, 2**63 - 1, size=inj.max_attempts) for rng in rngs])
        rows = pool[np.minimum((U[:, 0] * len(pool)).astype(np.int64), len(pool) - 1)]
        k = np.minimum((U[:, 1] * TRANSFORMS).astype(np.int64), TRANSFORMS - 1)
        wants = U[:, 2] < inj.p_arc
        if split == "test":  # each test cut-out once (module docstring): no copies to difference
            if stop > len(pool):
                raise ValueError(f"{self.track.name}: test objects {start}..{stop} asked for, but the test split "
                                 f"has {len(pool)} real cut-outs and holds each once; ask for at most {len(pool)}")
            order, arc_wanted = test_assignment(seeds, len(pool), inj.p_arc)
            rows, wants = pool[order[start:stop]], arc_wanted[start:stop]
        cutouts = np.stack([transform(lib.images[r], int(t)) for r, t in zip(rows, k, strict=True)])
        ref = self.track.band_names.index("r") if "r" in self.track.band_names else 0
        p = self.track.survey.pixel_scale
        cxy = np.array([centroid(im[ref], p) for im in cutouts])
        theta_E = None
        if inj.theta_E_from == "flux":
            lo, hi = self.track.population.lens.theta_E
            q = lib.meta["galaxy_flux_quantile"].to_numpy()[rows] + inj.theta_E_scatter * (2 * U[:, 3] - 1) * np.sqrt(3)
            theta_E = lo + (hi - lo) * np.clip(q, 0.0, 1.0)  # the scatter: uniform with sd theta_E_scatter
        # the first draw of every object (the recorded parameters of those without an arc); the arcs of those that
        # want one, redrawn until visible
        cols = self.params([int(s) for s in arc_seeds[:, 0]], cxy[:, 0], cxy[:, 1], theta_E)
        nb, n = len(self.track.band_names), self.renderer.size
        arc = np.zeros((B, nb, n, n))
        labels = {"magnification": np.full(B, np.nan), "n_pix_source": np.zeros(B, np.int64),
                  "arc_snr": np.zeros(B, np.float32)}
        done, attempts = np.zeros(B, dtype=bool), np.zeros(B, dtype=np.int8)
        for a in range(inj.max_attempts):
            todo = np.flatnonzero(wants & ~done)
            if not todo.size:
                break
            c2 = self.params([int(s) for s in arc_seeds[todo, a]], cxy[todo, 0], cxy[todo, 1],
                             None if theta_E is None else theta_E[todo])
            arc2, lab2 = self.arcs(c2)
            attempts[todo] += 1
            ok = lab2["is_lens"] == 1
            for name in cols:
                cols[name][todo[ok]] = c2[name][ok]
            for name in labels:
                labels[name][todo[ok]] = lab2[name][ok]
            arc[todo[ok]] = arc2[ok]
            done[todo[ok]] = True
        normal = np.stack([rng.standard_normal(arc.shape[1:]) for rng in rngs])  # the arc's Poisson noise
        images = np.stack([inject(cutouts[i], arc[i], normal[i] if self.poisson else None,
                                  self.renderer.total_time) for i in range(B)])
        meta: dict[str, np.ndarray] = {"id": np.arange(start, stop, dtype=np.int64), "split": np.full(B, split),
                                       "seed": np.asarray(object_seeds, dtype=np.int64)}
        meta |= {name: v for name, v in cols.items()
                 if not name.startswith(DROP_PREFIXES) and name not in DROP_COLUMNS}
        lm = lib.meta.iloc[rows]
        meta |= {"cutout_id": lm["cutout_id"].to_numpy(), "galaxy": lm["galaxy"].to_numpy().astype(str),
                 "galaxy_kind": lm["source_kind"].to_numpy().astype(str),
                 "galaxy_flux_2arcsec": lm["galaxy_flux_2arcsec"].to_numpy(),
                 "galaxy_flux_quantile": lm["galaxy_flux_quantile"].to_numpy(), "transform": k.astype(np.int8),
                 "wants_arc": wants, "arc_attempts": attempts, "has_source": done}
        meta |= {f"arc_flux_{b}": arc[:, i].sum(axis=(1, 2)) for i, b in enumerate(self.track.band_names)}
        seeing = {b.name: b.seeing for b in self.sim.track.survey.bands}  # the arcs' PSF (arc_seeing)
        meta |= {f"arc_psf_fwhm_{b}": np.full(B, seeing[b]) for b in self.track.band_names}
        meta |= {name: v for name, v in labels.items() if name != "is_lens"}
        meta["is_lens"] = done.astype(np.int8)
        return images.astype(np.float32), meta
