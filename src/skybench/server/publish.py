"""``skybench publish-release TRACK --remote NAME``: the teams' part of a release, on a DVC remote.

Copies the public splits of ``releases/<track>`` (chosen through :mod:`skybench.release.layout`, which alone
spells the folder names) and a public manifest into ``<project>/published/<track>/``, tracks that folder with
``dvc add`` and pushes it to the organiser's remote NAME (``dvc remote add NAME URL``). Nothing of the hidden
splits is copied, so nothing of them can reach the remote. Teams then fetch it with DVC, e.g.::

    dvc import <organiser's git URL> published/lens-space   # or: git clone ...; dvc pull published/lens-space.dvc

The public manifest keeps what a team needs to read and check the data (shapes, counts, label columns, the
hashes of the files it gets) and drops what is about the hidden part: the hidden files' hashes, the test-set
key's fingerprint, the real set's provenance and counts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from skybench.common import swap_in
from skybench.release import layout
from skybench.release.verify import read_manifest

PUBLISHED = "published"  # in the organiser's project: published/<track>/ (+ published/<track>.dvc in git)
SPLITS = ("train", "val", "test")
DROPPED_KEYS = ("test_key", "real_set")  # the key's fingerprint; the folded real set's path, digest and counts


class PublishError(RuntimeError):
    """The release cannot be published; the message says why and what to do."""


def public_files(release: Path) -> list[str]:
    """The manifest's files (relative paths) that teams get: those under a public split folder."""
    manifest = read_manifest(release)
    roots = [layout.public_dir(release, s) for s in SPLITS]
    out = []
    for rel in manifest["files"]:
        path = release / rel
        if any(path.parent == r for r in roots):
            out.append(rel)
    return sorted(out)


def public_manifest(release: Path) -> dict[str, Any]:
    """The release's manifest as teams may see it (see the module docstring)."""
    manifest = read_manifest(release)
    keep = set(public_files(release))
    out = {k: v for k, v in manifest.items() if k not in DROPPED_KEYS}
    out["files"] = {k: v for k, v in manifest["files"].items() if k in keep}
    if manifest["counts"].get("test"):  # the stream's length: the simulated count would give the real set's away
        index = layout.index_path(layout.public_dir(release, "test"))
        out["counts"] = {**manifest["counts"], "test": pq.ParquetFile(index).metadata.num_rows}
    out["published"] = "the public part of the release: its hidden splits stay with the organiser"
    return out


def stage(release: Path, dest: Path) -> Path:
    """Write the public part of ``release`` to ``dest`` (replacing it): public split files + public manifest."""
    manifest = public_manifest(release)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in manifest["files"]:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(release / rel, target)
        layout.manifest_path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _dvc(project: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True,
                       timeout=3600)
    if r.returncode:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise PublishError(f"`dvc {' '.join(args)}` in {project} failed: {' '.join(tail)}")
    return r.stdout


def publish(track: str, remote: str, *, project: Path | None = None, release: Path | None = None) -> Path:
    """Stage the public part of ``track``'s release in ``<project>/published/<track>/``, ``dvc add`` it and
    push it to ``remote``; return the ``.dvc`` file (commit it to the repository teams clone or import from)."""
    from skybench.tracks import project_root

    project = Path(project or project_root()).resolve()
    release = Path(release or project / "releases" / track)
    if not layout.is_release(release):
        raise PublishError(f"{release}: no release of {track!r} there (run `dvc repro` or `skybench simulate` "
                           "first, or pass --release)")
    if read_manifest(release).get("track") != track:
        raise PublishError(f"{release}: a release of {read_manifest(release).get('track')!r}, not {track!r}")
    # not `dvc remote list`: it wraps long URLs onto lines of their own and marks the default with " (default)"
    remotes = [m.group(1) for m in re.finditer(r"^remote\.(.+)\.url=", _dvc(project, "config", "--list"), re.M)]
    if remote not in remotes:
        raise PublishError(f"no DVC remote {remote!r} in {project} (remotes: {', '.join(remotes) or 'none'}); "
                           f"add one with `dvc remote add {remote} URL`")
    dest = stage(release, project / PUBLISHED / track)
    _dvc(project, "add", str(dest.relative_to(project)))
    dvcfile = dest.with_name(f"{dest.name}.dvc")
    _dvc(project, "push", "-r", remote, str(dvcfile.relative_to(project)))
    return dvcfile
