"""The real SDSS Main Galaxy Sample photo-z set (``data/photoz_sdss_mgs``, from MLZ; see data/README.md section 4)
as a release of the ``photoz-sdss-mgs`` track, written by the same release writer as the simulated tracks.

``train.csv`` -> public ``train`` (its first ``len - n_val`` rows) and ``val`` (the last ``n_val`` rows; train +
val is exactly MLZ's training file); ``test.csv`` -> ``test``: features public, the redshift ``z`` hidden.
Features per object (the manifest's ``feature_names``): the five extinction-corrected SDSS model magnitudes and
their five errors, in the order of the simulated photoz-catalog track (which has Galactic E(B-V) as an 11th
feature; this file is already extinction-corrected and carries no E(B-V)). Every CSV column is in the metadata."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skybench.release import write_release
from skybench.tracks import Track, load_track

PROFILE = "real-sdss-mgs"
FEATURES = ("mag_u", "mag_g", "mag_r", "mag_i", "mag_z", "err_u", "err_g", "err_r", "err_i", "err_z")
SOURCE = "data/photoz_sdss_mgs (MLZ SDSS_MGS.train/.test, github.com/mgckind/MLZ, NCSA licence)"


def read_catalogue(path: Path) -> pd.DataFrame:
    """One MGS CSV with a ``z`` column (the spectroscopic redshift); raises a one-line error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (pull the real data with `make data`)")
    df = pd.read_csv(path)
    df.columns = [c.strip().lower() for c in df.columns]
    if "z_spec" not in df:
        raise ValueError(f"{path}: no z_spec column (columns: {', '.join(df.columns)})")
    missing = [c for c in FEATURES if c not in df]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    values = df[["z_spec", *FEATURES]].to_numpy(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: {int(np.sum(~np.isfinite(values)))} non-finite values in z_spec/magnitudes/errors")
    return df.rename(columns={"z_spec": "z"})


def import_sdss_mgs(data: Path, track: Track | str, out: Path, *, n_val: int = 500,
                    progress: bool = True) -> Path:
    """Write the release of ``track`` (``photoz-sdss-mgs``) from ``data/photoz_sdss_mgs/{train,test}.csv``."""
    track = load_track(track) if isinstance(track, str) else track
    folder = Path(data) / "photoz_sdss_mgs"
    train, test = read_catalogue(folder / "train.csv"), read_catalogue(folder / "test.csv")
    if not 0 < n_val < len(train):
        raise ValueError(f"n_val must be between 1 and {len(train) - 1}, got {n_val}")
    tables = {"train": train.iloc[:len(train) - n_val], "val": train.iloc[len(train) - n_val:], "test": test}
    for split, df in tables.items():
        df = df.reset_index(drop=True)
        df.insert(0, "id", np.arange(len(df), dtype=np.int64))
        df.insert(1, "split", split)
        df.insert(2, "row_in_source", df["id"] + (0 if split != "val" else len(train) - n_val))
        tables[split] = df

    def make_chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[Any]:
        df = tables[split]
        for a, b in ranges:
            part = df.iloc[a:b].reset_index(drop=True)
            yield {"features": part[list(FEATURES)].to_numpy(np.float32)}, part

    info = {"track": track.name, "task": track.task, "profile": PROFILE, "seed": 0, "bands": track.band_names,
            "feature_names": list(FEATURES), "label": "z", "source": SOURCE,
            "processing": f"train.csv rows 0..{len(train) - n_val - 1} -> train, the last {n_val} -> val; "
                          "test.csv -> test; features = extinction-corrected model magnitudes and their errors"}
    counts = {s: len(df) for s, df in tables.items()}
    return write_release(Path(out), info=info, counts=counts, arrays={"features": (len(FEATURES),)},
                         make_chunks=make_chunks, label_columns=("z",), chunk_size=1000, progress=progress)
