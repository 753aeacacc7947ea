"""Real-lens evaluation set: the HST images of confirmed lenses (``data/lenses_hst``) brought to a lens track's
format and noise level by :func:`skybench.real_hst.process_lens`.

``import_real_lenses(data_dir, track, out)`` writes a release (``skybench verify``-able) whose ``test`` split
holds every lens (``is_lens = 1``), scaled so that the flux within 2" of the centre has ``target_mag`` (default
20.25, the middle of the track's lens magnitude range). Every number of every step is in the hidden metadata;
the manifest's ``processing`` string says the same.

``import_real_set(data_dir, track, out)`` (``skybench import-real-set TRACK``) writes a lens track's whole real set,
the one folded into its test stream: these lenses for a one-band track (none for a multi-band one:
:data:`NO_REAL_LENSES`) and the real non-lenses of :mod:`skybench.tasks.lens.real_nonlens`, labelled ``is_lens``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from skybench.physics.noise import magnitude2cps
from skybench.real_hst import (
    APERTURE_RADIUS,
    BORDER_WIDTH,
    CENTRE_SEARCH_RADIUS,
    CENTRE_SMOOTH,
    CENTRE_WINDOW,
    Target,
    _lens_dir,
    _read_catalog,
    _text,
    process_lens,
)
from skybench.release import layout, open_release, sha256_file, write_release
from skybench.tasks.lens.config import LensTrack
from skybench.tasks.lens.real_nonlens import (
    REFERENCE_SEED,
    REFERENCE_SIZE,
    Item,
    describe,
    nonlenses,
    simulated_fluxes,
)
from skybench.testkey import ReleaseKey, real_set_seed
from skybench.tracks import Track, load_track

PROFILE = "real-hst"
SET_PROFILE = "real-set"  # lenses and non-lenses
_HIDDEN_META = layout.meta_path(layout.hidden_dir("", "test")).as_posix()  # named in the processing note


def lens_target(track: Track, target_mag: float) -> Target:
    """The target of ``track`` (one band) with the lens magnitude ``target_mag``, which must lie in the track's
    lens magnitude range."""
    if not isinstance(track, LensTrack):
        raise ValueError(f"track {track.name!r} is a {track.task} track, not a lens track")
    target = Target.from_track(track, target_mag)
    lo, hi = track.population.lens.mag
    if not lo <= target_mag <= hi:
        raise ValueError(f"target magnitude {target_mag} is outside the track's lens range [{lo}, {hi}]")
    return target


def _processing(target: Target, seed: int | str, centre_sigma: float) -> str:
    target_cps = float(magnitude2cps(target.target_mag, target.zero_point))
    return (
        "Real HST lenses (data/lenses_hst: 20 DESI-LS WFC3/IR F140W at 0.08\"/px, 7 SLACS ACS/WFC F814W at 0.05\"/px)"
        " brought to this track. Per object: (1) read the primary HDU with astropy.io.fits (axis 0 = FITS y);"
        " pixel scale per axis from the WCS CD matrix, the PIX2AN matrix or PIXSCALE; non-finite pixels set to 0;"
        " no rotation (orientation as stored). (2) HST PSF FWHM from a pixel-integrated circular Gaussian fit to"
        " the core (r<=0.3\") of the PSF extension; convolved on the original grid with the discrete Gaussian"
        f" kernel exp(-t)I_n(t) of variance s_diff^2 = s_target^2 - p^2/12/S^2 - s_hst^2 - 2 p_hst^2/12"
        f" (target FWHM {target.fwhm}\", s = FWHM/2.3548; p_hst^2/12 = the HST pixel's blur, in the image and added"
        f" again by step 3; p^2/12/S^2 = what the simulated images' supersampled binning falls short of a pixel"
        f" box, p = {target.pixel_scale}\","
        f" S = {target.supersampling}; 0 if negative). (3) Flux-conserving"
        f" area-weighted rebinning of the image as a piecewise-constant surface onto {target.size}x{target.size}"
        f" pixels of {target.pixel_scale}\" centred on the deflector's light centre (brightest pixel of the image"
        f" smoothed by a {CENTRE_SMOOTH}\" Gaussian within {CENTRE_SEARCH_RADIUS}\" of the image centre, refined by"
        f" a windowed centroid, SExtractor XWIN, window sigma {CENTRE_WINDOW}\") offset by N(0, {centre_sigma}\")"
        " per axis (numpy default_rng([seed, 6, index]); lens.center_sigma of the track: the simulated deflectors'"
        " offsets) (new = A_y @ img @ A_x.T, A[i,j] ="
        " overlap(new i, old j) / old pixel length); outside the HST footprint the frame is 0 before noise."
        f" (4) Flux scaled so that the flux within r = {APERTURE_RADIUS}\" of the centre (deflector + arcs,"
        f" measured after rebinning without the PSF step; images are already background-subtracted) is"
        f" magnitude {target.target_mag} at ZP {target.zero_point} (= {target_cps:.4g} e-/s)."
        " (5) Gaussian noise of per-pixel variance max(sigma_bkg^2 - sigma_exist^2, 0)"
        f" + |img|/T with sigma_bkg = {target.sigma_bkg:.6g} e-/s (skybench.physics.noise.background_sigma of the"
        f" band) and T = {target.total_time:g} s, sigma_exist = HST noise (BKG_RMS header, else 1.4826*MAD of a"
        f" {BORDER_WIDTH}-px border ring of the original image) propagated as white noise through steps 2-4;"
        f" numpy default_rng([seed={seed}, index]). All numbers per object are in {_HIDDEN_META}."
    )



def _lens_items(data_dir: Path, target: Target, seed: int, centre_sigma: float, reference: np.ndarray | None = None
                ) -> list[Item]:
    """The real HST lenses of ``data_dir``, processed in catalogue order (noise: default_rng([seed, index])).
    ``reference``: simulated lenses' fluxes within 2"; each lens's is drawn from them (default_rng([seed, 4,
    index]) below what the lens reaches at the track's noise) instead of all being ``target.target_mag`` (one
    magnitude for all would tell them apart). Each frame is centred on the deflector's light centre offset by
    N(0, ``centre_sigma``) arcsec per axis (default_rng([seed, 6, index])), as the simulated deflectors are: the
    DESI cut-outs have it up to 1" off their centre (the brightest pixel told them apart)."""
    lens_dir = _lens_dir(data_dir)
    catalog = _read_catalog(lens_dir)
    items = []
    for index in range(len(catalog)):
        entry = catalog.iloc[index]
        path = lens_dir / entry["file"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicated keywords in the HLA headers
            image, numbers = process_lens(path, target, np.random.default_rng([seed, index]), reference=reference,
                                          flux_rng=np.random.default_rng([seed, 4, index]), centre_sigma=centre_sigma,
                                          centre_rng=np.random.default_rng([seed, 6, index]))
        items.append(Item(image[None].astype(np.float32), {
            "file": entry["file"], "name": entry["name"],
            "survey": entry["survey"], "telescope": entry["telescope"], "instrument": entry["instrument"],
            "band": entry["band"], "z_lens": float(entry["z_lens"]), "z_lens_type": _text(entry["z_lens_type"]),
            "z_source": float(entry["z_source"]), "seed": seed, "noise_seed": f"[{seed}, {index}]",
            **numbers, "source_sha256": sha256_file(path), "provenance_repo": entry["provenance_repo"],
            "provenance_path": entry["provenance_path"], "provenance_commit": entry["provenance_commit"],
            "licence": entry["licence"]}))
    return items


def _write(out: Path, track: Track, items: list[tuple[int, Item]], info: dict, progress: bool) -> Path:
    """A release of ``items`` ((is_lens, item), in id order) as its ``test`` split; hidden metadata: the union of
    the items' columns (NaN or empty where an item has none)."""
    meta = pd.DataFrame([{"id": k, "split": "test", "is_lens": np.int8(y), **it.meta}
                         for k, (y, it) in enumerate(items)])
    for c in meta.columns:  # one dtype per column: text columns with gaps get "", numbers NaN
        if meta[c].dtype == object:
            meta[c] = meta[c].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    meta["is_lens"] = meta["is_lens"].astype(np.int8)
    shape = items[0][1].image.shape if items else (len(track.band_names), target_size(track), target_size(track))

    def make_chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        return ((np.stack([items[k][1].image for k in range(a, b)]), meta.iloc[a:b]) for a, b in ranges)

    return write_release(Path(out), info=info, counts={"test": len(items)}, image_shape=tuple(shape),
                         make_chunks=make_chunks, label_columns=("is_lens",), progress=progress)


def target_size(track: Track) -> int:
    assert track.cutout is not None, f"track {track.name!r} has no cutout"
    return track.cutout.size


# A real set's bytes depended on BLAS's thread count (lens-space's non-lens noise statistics differed between 1 and 2
# threads): one thread, so a real set is the same bytes on every machine.
ONE_BLAS_THREAD = threadpool_limits.wrap(limits=1, user_api="blas")


@ONE_BLAS_THREAD
def import_real_lenses(data_dir: Path, track: Track | str, out: Path, *, seed: int = 0, target_mag: float = 20.25,
                       progress: bool = False) -> Path:
    """Write the real HST lenses of ``data_dir`` (the folder holding ``lenses_hst/``, or that folder itself)
    as the ``test`` split of a release at ``out`` in the format of ``track``; return ``out``."""
    track = load_track(track) if isinstance(track, str) else track
    target = lens_target(track, target_mag)
    assert isinstance(track, LensTrack)
    items = _lens_items(data_dir, target, seed, track.population.lens.center_sigma)
    info = {"track": track.name, "task": track.task, "profile": PROFILE, "seed": seed, "bands": track.band_names,
            "pixel_scale": track.survey.pixel_scale, "units": "e-/s per pixel",
            "source": "data/lenses_hst (real HST images of confirmed lenses; data/README.md section 1)",
            "processing": _processing(target, seed, track.population.lens.center_sigma)}
    return _write(Path(out), track, [(1, it) for it in items], info, progress)


# Why a track has no real lenses: nothing in data/ is a calibrated multi-band image of a confirmed lens.
NO_REAL_LENSES = ("no real lenses for a multi-band track: data/lenses_hst is one HST band, and data/lenses_spacewarps"
                  " are 8-bit PNG colour composites (not calibrated, no noise or PSF model), which cannot honestly be"
                  " brought to calibrated u, g, r, i images; real_lens_recall and real_auroc are NaN")


@ONE_BLAS_THREAD
def import_real_set(data_dir: Path, track: Track | str, out: Path, *, seed: int = 0, target_mag: float = 20.25,
                    progress: bool = False, limit: int | None = None, key: ReleaseKey | None = None) -> Path:
    """The real evaluation set of a lens track at ``out``: its real lenses (``is_lens = 1``; the HST lenses for a
    one-band track, none for a multi-band one: :data:`NO_REAL_LENSES`) and its real non-lenses (``is_lens = 0``,
    :mod:`skybench.tasks.lens.real_nonlens`), ids 0..N-1 (lenses first: the release's test stream shuffles them);
    the hidden ``real_kind`` column says ``lens`` or ``nonlens``. ``limit``: only the first KiDS stamps (tests).
    ``key``: the test-set key of the releases it will be folded into (default public: the demo's); every random
    draw comes from :func:`skybench.testkey.real_set_seed` of it and ``seed``."""
    track = load_track(track) if isinstance(track, str) else track
    key = key or ReleaseKey.public()
    domain = f"real:{track.name}"
    drawn = real_set_seed(key, domain, seed)
    shown = seed if key.secret is None else f"HMAC-SHA256(key, {domain}/{seed}) (manifest test_key)"
    notes = {}
    if len(track.survey.bands) == 1:
        target = lens_target(track, target_mag)
        assert isinstance(track, LensTrack)
        lenses = _lens_items(data_dir, target, drawn, track.population.lens.center_sigma, simulated_fluxes(track)[1])
        notes["lenses"] = _processing(target, shown, track.population.lens.center_sigma).replace(
            f"is magnitude {target.target_mag} at", "has a magnitude drawn (numpy default_rng([seed, 4, index])) from"
            f" the simulated lenses' fluxes within {APERTURE_RADIUS}\" ({REFERENCE_SIZE} objects of this track, public"
            f" seed {REFERENCE_SEED}, split train), below the flux at which the lens's own noise, whitened, would"
            " exceed the track's (flux_reach; per object: target_mag), at")
    else:
        lenses = []
        notes["lenses"] = NO_REAL_LENSES
    non = nonlenses(data_dir, track, drawn, limit)
    notes["nonlenses"] = describe(track)
    items = [(1, Item(it.image, {"real_kind": "lens", **it.meta})) for it in lenses]
    items += [(0, Item(it.image, {"real_kind": "nonlens", "seed": drawn, **it.meta})) for it in non]
    info = {"track": track.name, "task": track.task, "profile": SET_PROFILE, "seed": seed, "bands": track.band_names,
            "test_key": key.real_set_entry(domain), "pixel_scale": track.survey.pixel_scale, "units": "e-/s per pixel",
            "source": "data/lenses_hst (real lenses) and data/galaxies (real non-lenses); data/README.md",
            "real_lenses": len(lenses), "real_nonlenses": len(non),
            **({} if lenses else {"real_lenses_why_none": NO_REAL_LENSES}),
            "processing": f"{notes['lenses']} || {notes['nonlenses']}"}
    return _write(Path(out), track, items, info, progress)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m skybench.tasks.lens.real", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder holding lenses_hst/ (default: data)")
    ap.add_argument("--out", type=Path, default=Path("releases/real-hst-lenses"), help="release folder to write")
    ap.add_argument("--track", default="lens-space", help="track name or YAML path (default: lens-space)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    ap.add_argument("--target-mag", type=float, default=20.25, help="magnitude of the r=2\" flux (default: 20.25)")
    args = ap.parse_args(argv)
    out = import_real_lenses(args.data, args.track, args.out, seed=args.seed, target_mag=args.target_mag,
                             progress=True)
    print(f"{out}: {len(open_release(out).meta('test'))} real lenses")


if __name__ == "__main__":
    main()
