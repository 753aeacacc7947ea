"""Real-truth set of the enhancement track: HST galaxy images degraded with the track's own recipe.

``import_real_truth(data_dir, track, out)`` reads ``lenses_hst/*.fits`` (real HST images of galaxies, WFC3/IR
F140W and ACS/WFC F814W; see ``data/README.md`` section 1) and writes a release whose ``test`` split holds, per
image, the **truth** (hidden) and its **degraded** copy (``images``, public), in the enhancement track's format
(3 bands, 64 x 64, 0.396"/px, e-/s per pixel). Per object and band:

1. bring the HST image to the truth instrument with :func:`skybench.real_hst.process_lens` (the lens
   importer's reader, PSF matching, flux-conserving resampling, flux scaling and noise): target grid 64 x 64,
   the band's seeing, zero point, background sigma and exposure time. The HST angles are stretched by
   ``angular_stretch`` (default 3): the galaxies are shown as if they were that many times nearer, so that their
   real structure (arcs, rings, companions, spiral features) spans several 0.396" pixels as the simulated nearby
   galaxies do. The flux within r = 2 HST-arcsec of the centre is set to ``mag_r`` plus the track's bulge colour
   of the band (the HST image is one band: the three bands share its morphology);
2. degrade the three-band truth with :func:`skybench.physics.degrade.degrade`, the simulator's recipe: Gaussian
   blur of FWHM ``label.psf_fwhm`` and white noise raising the background sigma to ``label.noise_factor`` times the
   truth's. At ``mag_r`` the HST noise carried through step 1 (whitened) can be above a band's background sigma
   (up to 9x): such an object is dimmed until it is not in any band (``dimmed_mag``), so every truth holds the
   track's white background noise, as the simulated truths do, and the degradation raises it to 1.2x.

Every number is in the hidden metadata; the manifest's ``processing`` says the same.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from skybench.physics.degrade import degrade
from skybench.real_hst import APERTURE_RADIUS, Target, _lens_dir, _read_catalog, process_lens
from skybench.release import open_release, sha256_file, write_release
from skybench.tasks.enhance.config import EnhanceTrack
from skybench.tasks.enhance.simulator import EnhanceSimulator, degradation_info
from skybench.testkey import ReleaseKey, real_set_seed
from skybench.tracks import Track, load_track

PROFILE = "real-hst"


def _targets(track: EnhanceTrack, mag_r: float, stretch: float) -> list[Target]:
    """One process_lens target per band, on the stretched angular scale (angles / ``stretch``)."""
    if track.cutout is None:
        raise ValueError(f"track {track.name!r} has no cutout")
    pop = track.population
    info = degradation_info(track)
    return [Target(track.cutout.size, track.survey.pixel_scale / stretch, b.seeing / stretch, b.zero_point,
                   info["sigma_truth"][b.name], b.num_exposures * b.exposure_time, mag_r + pop.bulge.colors[b.name],
                   track.cutout.supersampling)
            for b in track.survey.bands]


def _process(path: Path, targets: list[Target], seed: int, index: int) -> list[tuple[np.ndarray, dict]]:
    """:func:`process_lens` of one HST image for each band's target, the noise of band k from [seed, index, k]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicated keywords in the HLA headers
        return [process_lens(path, t, np.random.default_rng([seed, index, k])) for k, t in enumerate(targets)]


def _processing(track: EnhanceTrack, mag_r: float, stretch: float, seed: int | str) -> str:
    info = degradation_info(track)
    return (
        "Real HST galaxy images (data/lenses_hst: 20 DESI-LS WFC3/IR F140W at 0.08\"/px, 7 SLACS ACS/WFC F814W at"
        f" 0.05\"/px) as the truth of the {track.name} track. Per band {track.band_names}: skybench.real_hst."
        "process_lens (read the primary HDU; match the HST PSF to the band's Gaussian seeing with a discrete Gaussian"
        " kernel; flux-conserving area-weighted rebinning onto the track grid; flux scaling; Gaussian background +"
        f" Poisson noise to the band's sigma) with HST angles stretched by {stretch:g} (the galaxy shown {stretch:g}x"
        f" nearer) and the flux within r = {APERTURE_RADIUS} HST-arcsec set to r = {mag_r} mag plus the track's bulge"
        " colour of the band (one HST band: the three bands share its morphology). Then the simulator's degradation:"
        f" Gaussian blur of FWHM {info['psf_fwhm_arcsec']}\" and white noise raising the background sigma to"
        f" {info['noise_factor']} x the truth's. An object whose carried HST noise (whitened) would be above a band's"
        " sigma at that flux is dimmed until it is not (dimmed_mag in the metadata): its truth holds the track's"
        " white noise, as a simulated truth does."
        f" Noise: numpy default_rng([seed={seed}, index, band]) for the truth, [seed, index, 99] for the degradation."
    )


def import_real_truth(data_dir: Path, track: Track | str, out: Path, *, seed: int = 0, mag_r: float = 15.0,
                      angular_stretch: float = 3.0, progress: bool = False, key: ReleaseKey | None = None) -> Path:
    """Write the real-truth release of ``track`` (default ``enhance``) from ``data_dir``/lenses_hst; return ``out``.
    ``key``: the test-set key of the releases it will be folded into (default public: the demo's); every random
    draw comes from :func:`skybench.testkey.real_set_seed` of it and ``seed``."""
    track = load_track(track) if isinstance(track, str) else track
    key = key or ReleaseKey.public()
    domain = f"real:{track.name}"
    drawn = real_set_seed(key, domain, seed)
    if not isinstance(track, EnhanceTrack):
        raise ValueError(f"track {track.name!r} is a {track.task} track, not an enhance track")
    if angular_stretch <= 0:
        raise ValueError(f"angular_stretch must be positive, got {angular_stretch}")
    targets = _targets(track, mag_r, angular_stretch)
    lens_dir = _lens_dir(data_dir)
    catalog = _read_catalog(lens_dir)
    info = degradation_info(track)
    names, pix = track.band_names, track.survey.pixel_scale

    def rows(start: int, stop: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        truths, degraded, metas = [], [], []
        for index in range(start, stop):
            entry = catalog.iloc[index]
            path = lens_dir / entry["file"]
            bands, row = [], {"id": index, "split": "test", "file": entry["file"], "name": entry["name"],
                              "telescope": entry["telescope"], "instrument": entry["instrument"],
                              "hst_band": entry["band"], "angular_stretch": angular_stretch, "mag_r": mag_r}
            sigma = np.zeros(len(names))
            done = _process(path, targets, drawn, index)
            # At mag_r the carried HST noise (whitened: its covariance's largest eigenvalue) may be above a band's
            # background sigma (up to 9x): the object is dimmed until it is not in any band, so its truth holds the
            # track's white noise, as a simulated truth does, and the degradation adds 1.2x of that (lens/real.py
            # caps a real object's flux the same way, flux_reach).
            dim = max(n["existing_sigma_processed_eig_max"] / n["sigma_bkg_target"] for _, n in done)
            row["dimmed_mag"] = float(2.5 * np.log10(dim)) if dim > 1.0 else 0.0
            if dim > 1.0:
                row["mag_r"] = mag_r + row["dimmed_mag"] + 1e-6
                done = _process(path, _targets(track, row["mag_r"], angular_stretch), drawn, index)
            for k, (band, (image, numbers)) in enumerate(zip(names, done, strict=True)):
                bands.append(image)
                sigma[k] = numbers["white_noise_sigma"]  # the truth's noise: white at this sigma
                row.update({f"{key}_{band}": value for key, value in numbers.items()
                            if key in ("flux_scale", "existing_sigma_processed", "added_bkg_sigma", "psf_fwhm_hst",
                                       "footprint_fraction", "final_border_sigma")})
                row[f"sigma_truth_{band}"] = sigma[k]
                row[f"sigma_degraded_{band}"] = info["noise_factor"] * sigma[k]
            truth = np.stack(bands)[None]
            normal = np.random.default_rng([drawn, index, 99]).standard_normal(truth.shape)
            degraded.append(degrade(truth, sigma, info["psf_fwhm_arcsec"], pix, info["noise_factor"], normal))
            truths.append(truth)
            row.update(psf_fwhm=info["psf_fwhm_arcsec"], noise_factor=info["noise_factor"], seed=drawn,
                       source_sha256=sha256_file(path), provenance_repo=entry["provenance_repo"],
                       provenance_path=entry["provenance_path"], provenance_commit=entry["provenance_commit"],
                       licence=entry["licence"])
            metas.append(row)
        return ({"images": np.concatenate(degraded).astype(np.float32),
                 "truth": np.concatenate(truths).astype(np.float32)}, pd.DataFrame(metas))

    def make_chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[tuple[dict[str, np.ndarray], pd.DataFrame]]:
        return (rows(a, b) for a, b in ranges)

    shown = seed if key.secret is None else f"HMAC-SHA256(key, {domain}/{seed}) (manifest test_key)"
    manifest = {"track": track.name, "task": track.task, "profile": PROFILE, "seed": seed, "bands": names,
                "test_key": key.real_set_entry(domain), "pixel_scale": pix, "units": "e-/s per pixel",
                "degradation": info, "source": "data/lenses_hst (real HST images; data/README.md section 1)",
                "processing": _processing(track, mag_r, angular_stretch, shown)}
    return write_release(Path(out), info=manifest, counts={"test": len(catalog)},
                         arrays=EnhanceSimulator.arrays(track), hidden_arrays=EnhanceSimulator.hidden_arrays,
                         make_chunks=make_chunks, chunk_size=8, progress=progress)


def empty_real_truth(track: Track | str, out: Path, *, seed: int = 0, note: str = "",
                     key: ReleaseKey | None = None) -> Path:
    """An empty real-truth release (when the real data is not available): evaluation then skips the real set."""
    track = load_track(track) if isinstance(track, str) else track
    if not isinstance(track, EnhanceTrack):
        raise ValueError(f"track {track.name!r} is a {track.task} track, not an enhance track")
    return write_release(Path(out), info={"track": track.name, "task": track.task, "profile": PROFILE, "seed": seed,
                                          "test_key": (key or ReleaseKey.public()).real_set_entry(f"real:{track.name}"),
                                          "note": note or "real data was not available"},
                         counts={}, arrays=EnhanceSimulator.arrays(track), hidden_arrays=EnhanceSimulator.hidden_arrays,
                         make_chunks=lambda s, r: iter(()), progress=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m skybench.tasks.enhance.real", description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder holding lenses_hst/ (default: data)")
    ap.add_argument("--out", type=Path, default=Path("releases/enhance-real"), help="release folder to write")
    ap.add_argument("--track", default="enhance", help="track name or YAML path (default: enhance)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = import_real_truth(args.data, args.track, args.out, seed=args.seed, progress=True)
    print(f"{out}: {len(open_release(out).meta('test'))} real galaxies")


if __name__ == "__main__":
    main()
