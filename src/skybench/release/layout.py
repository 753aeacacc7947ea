"""The on-disk layout of a release: the only module that spells its folder and file names.

::

    ROOT/manifest.json              track, profile, seed, version, counts, shapes, sha256 of every file
    ROOT/public/{train,val}/        <name>-00000.npy ... (float32, one row per object) + meta.parquet
    ROOT/public/test/               <name>-*.npy + index.parquet (ids only): the sandbox's input folder
    ROOT/hidden/test/               meta.parquet (labels, full metadata), hidden arrays (answers),
                                    sources.parquet (with a folded-in real set: the stream's mapping)
    ROOT/{public/{train,val},hidden/test}/table-<name>.parquet
                                    a task's per-split tables of several rows per object (the objects in
                                    each detection tile): public for train/val, hidden for test

Changing the layout (a hidden validation split, zarr) starts here. Plain ``pathlib`` only: the sandboxed runner
imports this module, so it must not pull in pandas or pyarrow.
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
PUBLIC = "public"  # what teams get
HIDDEN = "hidden"  # what only the organiser's scoring reads
META = "meta.parquet"  # per-object metadata: public train/val (with labels), hidden splits (everything)
INDEX = "index.parquet"  # the ids (and only the public columns) of a public test folder
SOURCES = "sources.parquet"  # hidden/test: the folded test stream's mapping back to the simulated and real sets
TABLE_PREFIX = "table-"  # a task's table <name>: table-<name>.parquet (never meta, index or sources)
SHARD_DIGITS = 5
SHARD_SUFFIX = ".npy"


def manifest_path(root: str | Path) -> Path:
    return Path(root) / MANIFEST


def is_release(root: str | Path) -> bool:
    """Whether ``root`` has a manifest (a complete release: it is written last)."""
    return manifest_path(root).is_file()


def public_dir(root: str | Path, split: str) -> Path:
    """The folder of a split that teams get (for ``test``: the sandbox's input folder)."""
    return Path(root) / PUBLIC / split


def hidden_dir(root: str | Path, split: str = "test") -> Path:
    """The organiser-only folder of a split (labels and answers)."""
    return Path(root) / HIDDEN / split


def public_meta_path(root: str | Path, split: str) -> Path:
    """The metadata table of a public split: ``meta.parquet``, or the ids-only index for ``test``."""
    folder = public_dir(root, split)
    return index_path(folder) if split == "test" else meta_path(folder)


def meta_path(folder: str | Path) -> Path:
    """The metadata table of a public train/val folder or of a hidden folder."""
    return Path(folder) / META


def index_path(folder: str | Path) -> Path:
    """The ids of an input folder (a release's public test folder, or a view of some of its rows)."""
    return Path(folder) / INDEX


def sources_path(hidden: str | Path) -> Path:
    """The folded stream's mapping, in a hidden test folder."""
    return Path(hidden) / SOURCES


def table_path(folder: str | Path, name: str) -> Path:
    """A task's table ``name`` in a split folder: public train/val, or the hidden test folder."""
    return Path(folder) / f"{TABLE_PREFIX}{name}.parquet"


def shard_name(name: str, i: int) -> str:
    """File name of shard ``i`` of the per-object array ``name``: ``images-00000.npy``."""
    return f"{name}-{i:0{SHARD_DIGITS}d}{SHARD_SUFFIX}"


def shard_pattern(name: str) -> str:
    """The glob of every shard of ``name`` (also shown in error messages)."""
    return f"{name}-*{SHARD_SUFFIX}"


def shard_paths(folder: str | Path, name: str) -> list[Path]:
    """The shard files of ``name`` in ``folder``, in row order (empty when there are none)."""
    return sorted(Path(folder).glob(shard_pattern(name)))


def is_input_folder(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a public test folder: it has the ids index and is not under a hidden one."""
    folder = Path(folder)
    return HIDDEN not in folder.parts and index_path(folder).is_file()


def release_of(folder: str | Path) -> tuple[Path, str, str]:
    """(release root, ``public`` or ``hidden``, split) of a split folder; ValueError for any other folder."""
    folder = Path(folder)
    if folder.parent.name not in (PUBLIC, HIDDEN):
        raise ValueError(f"{folder}: not a split folder of a release (expected ROOT/{PUBLIC}/SPLIT or "
                         f"ROOT/{HIDDEN}/SPLIT)")
    return folder.parent.parent, folder.parent.name, folder.name


def split_prefixes(split: str = "test") -> tuple[str, ...]:
    """The manifest path prefixes (``verify_release(only=...)``) of everything one split's scoring reads."""
    return (f"{PUBLIC}/{split}/", f"{HIDDEN}/")


def relpath(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root``, as the manifest lists files (POSIX separators)."""
    return Path(path).relative_to(root).as_posix()
