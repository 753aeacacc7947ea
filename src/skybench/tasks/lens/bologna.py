"""Import and export the Strong Gravitational Lens Finding Challenge 1.0 layout (Metcalf et al. 2019,
arXiv:1802.03609): one FITS image per cut-out and band, plus a ``classifications.csv`` of labels.

    space-based:  imageEUC_VIS-<ID>.fits                      (Euclid-VIS-like, 1 band, 0.1"/px)
    ground-based: Band1/imageSDSS_R-<ID>.fits, Band2/..._I-, Band3/..._G-, Band4/..._U-   (KiDS-like, 0.2"/px)
    classifications.csv: at least the columns ID and is_lens (one row per ID, or one per ID and band)

Files are found anywhere below the folder (the challenge's samples sit in lens/ and nolens/ sub-folders).
:func:`import_bologna` writes an ordinary skybench release (test split only, ``is_lens`` hidden) with the
release writer, so ``skybench evaluate --release`` scores any submission of the matching track on it.
Pixel values are kept as they are in the files (the challenge gives no unit). :func:`export_bologna` writes
a release's test set back in this layout, atomically, for teams whose code reads the original format.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from skybench.release import read_manifest, write_release
from skybench.tracks import Track, load_track

# Ground-based band folders of the challenge (its README: Band1=R, Band2=I, Band3=G, Band4=U).
GROUND_FOLDERS = {"R": "Band1", "I": "Band2", "G": "Band3", "U": "Band4"}
SPACE_BAND = "VIS"
_NAME = re.compile(r"^image(EUC|SDSS)_([A-Za-z]+)-(\d+)\.fits$")


class BolognaError(ValueError):
    """The folder does not hold a usable Challenge 1.0 data set; the message names the file."""


def file_name(band: str, object_id: int) -> str:
    """``imageEUC_VIS-<ID>.fits`` for the VIS band, ``imageSDSS_<BAND>-<ID>.fits`` for the others."""
    b = band.upper()
    return f"imageEUC_VIS-{object_id}.fits" if b == SPACE_BAND else f"imageSDSS_{b}-{object_id}.fits"


def _challenge_band(track: Track, name: str) -> str:
    b = name.upper()
    if b != SPACE_BAND and b not in GROUND_FOLDERS:
        raise BolognaError(f"track {track.name}: band {name!r} has no Challenge 1.0 file name "
                           f"(the challenge has VIS and SDSS {', '.join(GROUND_FOLDERS)})")
    return b


def find_images(src: Path) -> dict[tuple[str, int], Path]:
    """{(band, ID): FITS path} for every challenge-named image below ``src``."""
    found: dict[tuple[str, int], Path] = {}
    for path in sorted(Path(src).rglob("image*.fits")):
        if m := _NAME.match(path.name):
            key = (m.group(2).upper(), int(m.group(3)))
            if key in found:
                raise BolognaError(f"{path}: band {key[0]} of ID {key[1]} also in {found[key]}")
            found[key] = path
    return found


def read_classifications(path: Path, kind: str | None = None) -> pd.DataFrame:
    """One row per ID with ``id`` and ``is_lens`` (0/1) from a challenge ``classifications.csv``.

    ``kind`` (``space_based`` or ``ground_based``): keep only that set's rows when the file has a ``set``
    column (the two sets reuse IDs)."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise BolognaError(f"{path}: not a readable CSV ({exc})") from exc
    cols = {c.strip().lower(): c for c in df.columns}
    if kind is not None and "set" in cols:
        df = df[df[cols["set"]].astype(str).str.strip() == kind]
    if "id" not in cols or "is_lens" not in cols:
        raise BolognaError(f"{path}: needs the columns ID and is_lens, has {', '.join(map(str, df.columns))}")
    labels = pd.DataFrame({"id": pd.to_numeric(df[cols["id"]], errors="coerce"),
                           "is_lens": pd.to_numeric(df[cols["is_lens"]], errors="coerce")})
    if labels.isna().any().any() or not labels["is_lens"].isin([0, 1]).all():
        raise BolognaError(f"{path}: ID must be an integer and is_lens 0 or 1 on every row")
    labels = labels.astype("int64").drop_duplicates()
    if labels["id"].duplicated().any():
        bad = labels.loc[labels["id"].duplicated(), "id"].iloc[0]
        raise BolognaError(f"{path}: ID {bad} is labelled both 0 and 1")
    return labels.sort_values("id", ignore_index=True)


def import_bologna(src: Path, track: str | Track, out: Path, *, classifications: Path | None = None,
                   progress: bool = False) -> Path:
    """Write the challenge images and labels under ``src`` as a test-only release of ``track`` at ``out``."""
    from astropy.io import fits

    src = Path(src)
    track = load_track(track) if isinstance(track, str) else track
    if track.task != "lens" or track.cutout is None:
        raise BolognaError(f"track {track.name} is not an image lens-finding track")
    bands = [_challenge_band(track, b) for b in track.band_names]
    size = track.cutout.size
    kind = "space_based" if bands == [SPACE_BAND] else "ground_based"
    labels = read_classifications(Path(classifications or src / "classifications.csv"), kind)
    images = find_images(src)
    have = {i for b, i in images if b in bands}
    labels = labels[labels["id"].isin(have)].reset_index(drop=True)
    if labels.empty:
        raise BolognaError(f"{src}: no labelled {'/'.join(bands)} images (file names like {file_name(bands[0], 1)})")
    for object_id in labels["id"]:
        missing = [file_name(b, object_id) for b in bands if (b, object_id) not in images]
        if missing:
            raise BolognaError(f"{src}: ID {object_id} lacks {', '.join(missing)}")

    def read(band: str, object_id: int) -> np.ndarray:
        path = images[(band, object_id)]
        try:
            data = fits.getdata(path)
        except (OSError, ValueError, TypeError) as exc:
            raise BolognaError(f"{path}: not a readable FITS image ({exc})") from exc
        if data is None or data.shape != (size, size):
            raise BolognaError(f"{path}: image of shape {getattr(data, 'shape', None)}, track {track.name} "
                               f"needs ({size}, {size})")
        if not np.all(np.isfinite(data)):
            raise BolognaError(f"{path}: has non-finite pixels")
        return np.asarray(data, dtype=np.float32)

    def chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        for a, b in ranges:
            rows = labels.iloc[a:b]
            cube = np.stack([np.stack([read(band, i) for band in bands]) for i in rows["id"]])
            yield cube, rows.reset_index(drop=True)

    info = {"track": track.name, "task": "lens", "profile": "bologna-challenge-1.0", "seed": 0,
            "source": str(src.resolve()), "bands": bands,
            "note": "Strong Lens Finding Challenge 1.0 layout (Metcalf et al. 2019); pixel values as in the files"}
    return write_release(out, info=info, counts={"test": len(labels)}, image_shape=(len(bands), size, size),
                         make_chunks=chunks, label_columns=("is_lens",), progress=progress)


def export_bologna(release: Path, out: Path, *, labels: bool = False) -> Path:
    """Write the test set of ``release`` to ``out`` in the challenge layout (atomically: a temporary sibling
    folder renamed at the end), each cut-out under the integer of its id (a folded stream's ``t000012``: 12).

    ``labels``: also write ``classifications.csv`` (ID, is_lens) from the hidden labels; refused (BolognaError)
    unless anyone can re-make them (a public test-set key, no real set folded in): the export is for teams."""
    from astropy.io import fits

    from skybench.release.reader import open_release

    release, out = Path(release), Path(out).resolve()
    manifest = read_manifest(release)
    folded = bool((manifest.get("real_set") or {}).get("folded_in"))
    if labels and ((manifest.get("test_key") or {}).get("kind") != "public" or folded):
        raise BolognaError(f"{release}: its test labels are secret (a private test-set key, or a real set folded "
                           "into the test split): export it without --labels, for teams")
    track = load_track(manifest["track"])
    bands = [_challenge_band(track, b) for b in track.band_names]
    rel = open_release(release)
    ids = rel.meta("test")["id"].to_numpy()
    imgs = rel.array("test", "images")
    scale = track.survey.pixel_scale
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        k = 0
        for batch in imgs.batches(256):
            for cube in batch:
                object_id = int(str(ids[k]).lstrip("t"))  # a folded stream's opaque ids: their position
                k += 1
                for band, image in zip(bands, cube, strict=True):
                    folder = tmp if band == SPACE_BAND else tmp / GROUND_FOLDERS[band]
                    folder.mkdir(parents=True, exist_ok=True)
                    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
                    hdu.header["ID"] = (object_id, "skybench object id")
                    hdu.header["BAND"] = (band, "challenge band")
                    hdu.header["PIXSCALE"] = (scale, "arcsec/pixel")
                    hdu.writeto(folder / file_name(band, object_id))
        if labels:
            hidden = rel.hidden("test").meta(["id", "is_lens"])
            hidden.rename(columns={"id": "ID"}).astype("int64").to_csv(tmp / "classifications.csv", index=False)
        tmp.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
