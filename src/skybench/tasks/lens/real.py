"""Real-lens evaluation set: the HST images of confirmed lenses (``data/lenses_hst``) brought to a lens track's
format and noise level by :func:`skybench.real_hst.process_lens`.

``import_real_lenses(data_dir, track, out)`` writes a release (``skybench verify``-able) whose ``test`` split
holds every lens (``is_lens = 1``), scaled so that the flux within 2" of the centre has ``target_mag`` (default
20.25, the middle of the track's lens magnitude range). Every number of every step is in the hidden metadata;
the manifest's ``processing`` string says the same.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from skybench.physics.noise import magnitude2cps
from skybench.real_hst import (
    APERTURE_RADIUS,
    BORDER_WIDTH,
    Target,
    _lens_dir,
    _read_catalog,
    _sha256,
    _text,
    process_lens,
)
from skybench.release import layout, open_release, write_release
from skybench.tasks.lens.config import LensTrack
from skybench.tracks import Track, load_track

PROFILE = "real-hst"
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


def _processing(target: Target, seed: int) -> str:
    target_cps = float(magnitude2cps(target.target_mag, target.zero_point))
    return (
        "Real HST lenses (data/lenses_hst: 20 DESI-LS WFC3/IR F140W at 0.08\"/px, 7 SLACS ACS/WFC F814W at 0.05\"/px)"
        " brought to this track. Per object: (1) read the primary HDU with astropy.io.fits (axis 0 = FITS y);"
        " pixel scale per axis from the WCS CD matrix, the PIX2AN matrix or PIXSCALE; non-finite pixels set to 0;"
        " no rotation (orientation as stored). (2) HST PSF FWHM from a pixel-integrated circular Gaussian fit to"
        " the core (r<=0.3\") of the PSF extension; convolved on the original grid with the discrete Gaussian"
        f" kernel exp(-t)I_n(t) of variance s_diff^2 = s_target^2 - s_hst^2 - p_hst^2/12 (target FWHM"
        f" {target.fwhm}\", s = FWHM/2.3548; p^2/12 = blur added by step 3; 0 if negative). (3) Flux-conserving"
        f" area-weighted rebinning of the image as a piecewise-constant surface onto {target.size}x{target.size}"
        f" pixels of {target.pixel_scale}\" centred on the image centre (new = A_y @ img @ A_x.T, A[i,j] ="
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



def import_real_lenses(data_dir: Path, track: Track | str, out: Path, *, seed: int = 0, target_mag: float = 20.25,
                       progress: bool = False) -> Path:
    """Write the real HST lenses of ``data_dir`` (the folder holding ``lenses_hst/``, or that folder itself)
    as the ``test`` split of a release at ``out`` in the format of ``track``; return ``out``."""
    track = load_track(track) if isinstance(track, str) else track
    target = lens_target(track, target_mag)
    lens_dir = _lens_dir(data_dir)
    catalog = _read_catalog(lens_dir)
    count = len(catalog)

    def rows(start: int, stop: int) -> tuple[np.ndarray, pd.DataFrame]:
        images, metas = [], []
        for index in range(start, stop):
            entry = catalog.iloc[index]
            path = lens_dir / entry["file"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicated keywords in the HLA headers
                image, numbers = process_lens(path, target, np.random.default_rng([seed, index]))
            images.append(image[None].astype(np.float32))
            metas.append({
                "id": index, "split": "test", "is_lens": np.int8(1), "file": entry["file"], "name": entry["name"],
                "survey": entry["survey"], "telescope": entry["telescope"], "instrument": entry["instrument"],
                "band": entry["band"], "z_lens": float(entry["z_lens"]), "z_lens_type": _text(entry["z_lens_type"]),
                "z_source": float(entry["z_source"]), "seed": seed, "noise_seed": f"[{seed}, {index}]",
                **numbers, "source_sha256": _sha256(path), "provenance_repo": entry["provenance_repo"],
                "provenance_path": entry["provenance_path"], "provenance_commit": entry["provenance_commit"],
                "licence": entry["licence"],
            })
        return np.stack(images), pd.DataFrame(metas)

    def make_chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        return (rows(a, b) for a, b in ranges)

    info = {"track": track.name, "task": track.task, "profile": PROFILE, "seed": seed, "bands": track.band_names,
            "pixel_scale": track.survey.pixel_scale, "units": "e-/s per pixel",
            "source": "data/lenses_hst (real HST images of confirmed lenses; data/README.md section 1)",
            "processing": _processing(target, seed)}
    return write_release(Path(out), info=info, counts={"test": count}, image_shape=(1, target.size, target.size),
                         make_chunks=make_chunks, label_columns=("is_lens",), progress=progress)


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
