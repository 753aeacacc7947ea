"""Bounded walks over folders a team controls (submission folders, ``submissions/``).

``Path.rglob`` and ``os.walk`` have no limits: a tree nested thousands deep, millions of empty files or a
sparse file of terabytes hold or crash the evaluator. :func:`walk` is iterative (no recursion), never
follows symlinks, and stops with a :class:`FolderError` naming the limit as soon as one is crossed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["SUBMISSION_LIMITS", "Entry", "FolderError", "WalkLimits", "iter_entries", "open_regular", "read_regular",
           "walk"]


class FolderError(ValueError):
    """A folder crosses a walk limit, or holds something that may not be there; one line."""


@dataclass(frozen=True)
class WalkLimits:
    max_depth: int | None = 32  # folders below the root (a file directly in the root is at depth 0)
    max_entries: int | None = 10_000  # files, folders and links, the root not counted
    max_bytes: int | None = 2 * 1024**3  # sum of the sizes of regular files (st_size, so sparse files count)


SUBMISSION_LIMITS = WalkLimits()  # documented in SUBMITTING.md, "Size limits"


@dataclass(frozen=True)
class Entry:
    path: Path
    rel: str  # posix path relative to the root
    depth: int  # number of folders between the root and this entry
    st: os.stat_result  # lstat: a symlink is described, never followed

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


def iter_entries(root: Path, limits: WalkLimits = SUBMISSION_LIMITS, *, prune: bool = False) -> Iterator[Entry]:
    """Every entry under ``root`` (not ``root`` itself), unsorted; symlinks are listed, never followed.

    Raises :class:`FolderError` when a limit of ``limits`` is crossed. With ``prune=True`` folders deeper than
    ``max_depth`` are silently not entered instead (for discovery, where a deep corner is not an error)."""
    root = Path(root)
    count = total = 0
    stack: list[tuple[Path, str, int]] = [(root, "", 0)]  # an explicit stack: no recursion, any depth
    while stack:
        folder, rel, depth = stack.pop()
        try:
            with os.scandir(folder) as it:  # checked entry by entry: a folder of millions stops at the limit
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    path, crel = folder / e.name, f"{rel}{e.name}"
                    count += 1
                    if limits.max_entries is not None and count > limits.max_entries:
                        raise FolderError(f"{root}: more than {limits.max_entries} files and folders")
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
                        if limits.max_bytes is not None and total > limits.max_bytes:
                            raise FolderError(f"{root}: files larger than {_size(limits.max_bytes)} in total")
                    elif stat.S_ISDIR(st.st_mode):
                        if limits.max_depth is not None and depth + 1 > limits.max_depth:
                            if prune:
                                continue
                            raise FolderError(f"{root}: folders nested deeper than {limits.max_depth} levels "
                                              f"(at {_clip(crel, 80)})")
                        stack.append((path, f"{crel}/", depth + 1))
                    yield Entry(path, crel, depth, st)
        except OSError as exc:
            raise FolderError(f"{folder}: cannot list ({exc.strerror or exc})") from exc


def walk(root: Path, limits: WalkLimits = SUBMISSION_LIMITS) -> list[Entry]:
    """:func:`iter_entries` sorted by path, the order of ``sorted(root.rglob("*"))``."""
    return sorted(iter_entries(root, limits), key=lambda e: e.path)


def open_regular(path: Path, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (not a symlink, FIFO or device) of at most
    ``max_bytes``; else :class:`FolderError` saying which. The checks are on the open descriptor."""
    try:  # O_NOFOLLOW: a symlink fails with ELOOP; O_NONBLOCK: a FIFO does not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise FolderError(f"{path.name} is a symlink; it must be a regular file") from exc
        raise FolderError(f"{path.name}: cannot open ({exc.strerror or exc})") from exc
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise FolderError(f"{path.name} is not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        f.close()
        raise FolderError(f"{path.name} is larger than {_size(max_bytes)} ({_size(st.st_size)})")
    return f


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`)."""
    with open_regular(path, max_bytes) as f:
        data = f.read(max_bytes + 1)  # never more, even if the file grows meanwhile
    if len(data) > max_bytes:
        raise FolderError(f"{path.name} is larger than {_size(max_bytes)}")
    return data


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else f"{text[:n // 2]}...{text[-(n // 2):]}"


def remove_tree(path: Path) -> None:
    """Delete a directory tree of any depth (iteratively, at most two open folders): a sandbox can leave
    trees deeper than ``shutil.rmtree``'s recursion limit or than PATH_MAX. Symlinks are removed, never followed."""
    path = Path(path)
    try:
        root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        path.unlink()
        return
    except PermissionError:  # without root: a sandbox's /scratch (our own uid's folder) it made chmod 000
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise
        os.chmod(path, 0o700)
        root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    with contextlib.suppress(PermissionError):  # made read-only (0555): its entries could not be removed
        os.fchmod(root, 0o700)
    n = 0
    try:
        while names := os.listdir(root):
            for name in names:
                try:
                    os.unlink(name, dir_fd=root)
                    continue
                except FileNotFoundError:
                    continue
                except IsADirectoryError:
                    pass
                os.chmod(name, 0o700, dir_fd=root)  # the sandbox may have left it unreadable (it is dead now)
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                try:  # move its sub-folders up to the top, delete its files, then remove it
                    for child in os.listdir(sub):
                        try:
                            os.unlink(child, dir_fd=sub)
                        except IsADirectoryError:
                            # moving a folder to another parent rewrites its "..": it must be writable
                            os.chmod(child, 0o700, dir_fd=sub)  # a folder (unlink said so); the run is over
                            while True:  # the tree may hold a folder or file of that name already: the next one
                                n += 1
                                try:
                                    os.rename(child, f".rm-{n}", src_dir_fd=sub, dst_dir_fd=root)
                                    break
                                except OSError as exc:
                                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EINVAL):
                                        raise
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=root)
    finally:
        os.close(root)
    os.rmdir(path)
