"""Checking a release against its manifest: the sha256 and size of every file, nothing unlisted, and as many
rows in every array and table as the manifest's counts.

Light on purpose (hashlib and json): :mod:`skybench.release.shards`, which the sandboxed runner imports, raises
:class:`ReleaseError` subclasses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skybench.release import layout

FORMAT = "skybench-release/1"


class ReleaseError(RuntimeError):
    """A release is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> list[str]:
    """:func:`sha256_file` of each path, several at a time: hashlib releases the GIL while it hashes a block, so
    shards hashed side by side use that many cores (one core hashes about 1 GB/s: 16 s for a 100,000-cut-out
    lens-ground test set)."""
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1, 8))) as pool:
        return list(pool.map(sha256_file, paths))


REAL_DATA_MANIFEST = "MANIFEST.sha256"  # of the real-data folder (``sha256sum`` lines), from the DVC remote


def verify_real_data(data: Path) -> list[str]:
    """Check the real-data folder ``data`` (``dvc pull`` brings it) against its ``MANIFEST.sha256``; one message per
    file missing, unreadable or changed (empty list: all good)."""
    manifest = Path(data) / REAL_DATA_MANIFEST
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{manifest}: unreadable ({type(exc).__name__}: {exc}); pull data/ whole again (dvc pull)"]
    listed: dict[Path, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        # "<digest>  <path>" (text mode) or "<digest> *<path>" (sha256sum -b), as `sha256sum -c` reads them
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.rstrip("\r"))
        if m is None or Path(m[2]).is_absolute() or ".." in Path(m[2]).parts:
            return [f"{manifest}:{n}: not a `sha256sum` line: {line[:80]!r}"]
        listed[Path(data) / m[2]] = m[1].lower()
    problems = [f"{p}: missing" for p in listed if not p.is_file()]
    present = [p for p in listed if p.is_file()]
    try:
        digests = sha256_files(present)
    except OSError as exc:
        return [*problems, f"{exc.filename or data}: unreadable ({exc.strerror or exc})"]
    problems += [f"{p}: sha256 does not match {manifest}" for p, d in zip(present, digests, strict=True)
                 if d != listed[p]]
    return sorted(problems)


def read_manifest(root: Path) -> dict[str, Any]:
    path = layout.manifest_path(root)
    if not path.is_file():
        raise ReleaseError(f"{root}: not a skybench release (no {layout.MANIFEST}); was it written completely?")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path}: corrupt manifest ({exc})") from exc
    except RecursionError:
        raise ReleaseError(f"{path}: corrupt manifest (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise ReleaseError(f"{path}: corrupt manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT:
        raise ReleaseError(f"{path}: unknown release format {manifest.get('format')!r}, expected {FORMAT}")
    files = manifest.get("files")
    bad = "no 'files' object" if not isinstance(files, dict) else next(
        (f"entry {rel!r} is not {{'bytes': int, 'sha256': str}}" for rel, e in files.items()
         if not (isinstance(e, dict) and type(e.get("bytes")) is int and isinstance(e.get("sha256"), str))),
        next((f"entry {rel!r} is outside the release" for rel in files
              if rel.startswith("/") or ".." in rel.split("/")), ""))
    if not bad:  # what every command reads of a release
        kinds = {"track": str, "counts": dict}
        bad = next((f"no {key!r} ({kind.__name__})" for key, kind in kinds.items()
                    if not isinstance(manifest.get(key), kind)), "")
    if bad:
        raise ReleaseError(f"{path}: corrupt manifest ({bad})")
    return manifest


def verify_release(root: Path, *, only: tuple[str, ...] = ()) -> list[str]:
    """Re-hash files against the manifest; return one message per problem (empty list: all good).

    ``only``: restrict the check to files under these prefixes (e.g. :func:`skybench.release.layout.split_prefixes`:
    what scoring a split reads)."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest["files"]
    found: dict[str, str] = {}  # one problem per listed file, reported in the manifest's order
    hashed: list[tuple[str, Path]] = []
    for rel, entry in sorted(listed.items()):
        if only and not rel.startswith(only):
            continue
        path = root / rel
        if path.is_symlink():  # the sandbox binds the release's folders: a link out of them is not there
            found[rel] = f"{path}: a symbolic link (to {os.readlink(path)}); a release holds plain files"
        elif not path.is_file():
            found[rel] = f"{path}: missing"
        elif path.stat().st_size != entry["bytes"]:
            found[rel] = f"{path}: size {path.stat().st_size} bytes, manifest says {entry['bytes']}"
        else:
            hashed.append((rel, path))
    for (rel, path), digest in zip(hashed, sha256_files([p for _, p in hashed]), strict=True):
        if digest != listed[rel]["sha256"]:
            found[rel] = f"{path}: sha256 does not match the manifest"
    problems = [found[rel] for rel in sorted(found)]
    for path in sorted(root.rglob("*")):
        rel = layout.relpath(path, root)
        if path.is_file() and rel != layout.MANIFEST and rel not in listed and (not only or rel.startswith(only)):
            problems.append(f"{path}: not listed in the manifest")
    return problems or _row_problems(root, manifest, only)  # rows are read from files that match


def _row_problems(root: Path, manifest: dict[str, Any], only: tuple[str, ...]) -> list[str]:
    """Whether each split's arrays and tables hold the manifest's count of objects, with its per-object shapes.

    A test split with a real set folded in holds the stream (``real_set.stream`` rows) in its public folder and
    the simulated objects (``counts.test``) in its hidden one; a published release has no hidden folder."""
    import pyarrow.parquet as pq  # lazily: the sandboxed runner imports this module for ReleaseError

    from skybench.release import shards  # imports this module

    where = layout.manifest_path(root)
    counts, arrays, hidden = manifest.get("counts"), manifest.get("arrays"), manifest.get("hidden_arrays", [])
    if not (isinstance(counts, dict) and all(type(n) is int and n >= 0 for n in counts.values())
            and isinstance(arrays, dict) and all(isinstance(s, list) for s in arrays.values())
            and isinstance(hidden, list) and all(isinstance(h, str) for h in hidden)):
        return [f"{where}: corrupt manifest (no 'counts' of objects, 'arrays' of per-object shapes or "
                "'hidden_arrays' list of names)"]
    real: dict[str, Any] = manifest["real_set"] if isinstance(manifest.get("real_set"), dict) else {}
    listed = manifest["files"]
    problems: list[str] = []

    def expect(path: Path, rows: int, got: int) -> None:
        if got != rows:
            problems.append(f"{path}: {got} rows, the manifest says {rows}")

    for split, n in sorted(counts.items()):
        public, secret = layout.public_dir(root, split), layout.hidden_dir(root, split)
        folders = [f"{layout.relpath(d, root)}/" for d in (public, secret)]
        if only and not folders[0].startswith(only):  # a split is checked when its public folder is
            continue
        inside = [rel for rel in listed if rel.startswith(tuple(folders))]
        if not n:
            problems += [f"{root / rel}: the manifest counts no {split} objects" for rel in inside]
            continue
        stream = real.get("stream") if split == "test" and real.get("folded_in") else n
        if type(stream) is not int:
            problems.append(f"{where}: corrupt manifest (real_set.stream is not a count of objects)")
            continue
        has_hidden = any(rel.startswith(folders[1]) for rel in inside)  # not in a published release
        try:
            for name, shape in sorted(arrays.items()):
                own = split == "test" and name in hidden
                if own and not has_hidden:
                    continue
                folder, rows = (secret, n) if own else (public, stream)
                found = shards.shards(folder, name)
                if not found:
                    problems.append(f"{folder}: no {layout.shard_pattern(name)} files; the manifest lists the "
                                    f"array {name!r}")
                elif found[0].shape[1:] != tuple(shape):
                    problems.append(f"{folder}: {name} holds objects of shape {list(found[0].shape[1:])}, the "
                                    f"manifest says {shape}")
                else:
                    expect(folder / layout.shard_pattern(name), rows, sum(s.rows for s in found))
                    for s in found:  # a file cut short (or grown) under a manifest that matches it
                        if (size := s.path.stat().st_size) != (want := s.offset + s.rows * s.row_bytes):
                            problems.append(f"{s.path}: {size} bytes, its header's {s.rows} rows of shape "
                                            f"{list(s.shape[1:])} take {want}")
            tables = [(layout.public_meta_path(root, split), stream)]
            if split == "test" and has_hidden:
                tables.append((layout.meta_path(secret), n))
                if real.get("folded_in"):
                    tables.append((layout.sources_path(secret), stream))
            for path, rows in tables:
                if not path.is_file():
                    problems.append(f"{path}: missing")
                else:
                    expect(path, rows, pq.ParquetFile(path).metadata.num_rows)
        except (ReleaseError, OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(str(exc) if str(root) in str(exc) else f"{root}: {exc}")
    return problems


def release_digest(root: Path) -> str:
    """sha256 of the manifest: one value that names the exact content of a release."""
    return sha256_file(layout.manifest_path(root))

