"""Uploads: streamed to disk with a byte limit, unpacked safely, validated, stored content-addressed.

    <storage>/incoming/<owner>.<random>.upload  an upload being received (removed when done or cut off, or
                                             after a crash, by the next start: Store.sweep); <owner> names
                                             the process (pid and host), so a dead one's files go at once
    <storage>/objects/<sha[:2]>/<sha>/       a stored submission folder, read-only (sha256 of the folder)
    <storage>/locks/<sha>                    its lock (flock): shared by each upload between storing and
                                             queueing, exclusive for a removal, which never waits for it and
                                             removes the lock file with the folder

Unpacking accepts only regular files and folders, with relative names that stay inside the folder, within
the file-count, unpacked-size and depth limits of ``challenge.yaml``'s ``upload:``; everything else (absolute
paths, ``..``, symlinks, hard links, devices, FIFOs, archive bombs) refuses the whole upload, and nothing is
ever written outside a fresh staging folder inside the store."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from skybench.harness.submission import Submission, SubmissionError, clip, folder_sha256, load_submission
from skybench.server.config import UploadLimits

if TYPE_CHECKING:
    from starlette.datastructures import FormData
    from starlette.requests import Request
    from starlette.types import Message

log = logging.getLogger("skybench.server")

MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the archive


async def read_upload_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form of an upload, read as it arrives and cut off past ``max_bytes`` of archive (plus
    :data:`MULTIPART_SLACK`): :class:`UploadError` 413 from the declared length, or as soon as the body passes it."""
    from starlette.requests import Request

    limit = max_bytes + MULTIPART_SLACK
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(f"upload of {declared} bytes is larger than the limit of {max_bytes} bytes; nothing was "
                          "stored", 413)
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise UploadError(f"upload larger than the limit of {max_bytes} bytes; it was cut off and discarded", 413)
        return message

    try:  # a body past 1 MiB is spooled to the system's temporary folder, not the store
        return await Request(request.scope, capped).form(max_files=1, max_fields=8)
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        log.error("upload refused: the temporary folder %s is full (%s)", tempfile.gettempdir(), exc)
        raise UploadError(f"the server's temporary folder for uploads is full ({os.strerror(exc.errno or 0)}); your "
                          "upload was not stored and costs no quota; try again later and tell the organisers",
                          507) from None

CHUNK = 1024 * 1024
STALE_SECONDS = 6 * 3600  # an upload in incoming/ older than this was left by a crash


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner() -> str:
    """``<pid>-<host hash>`` of this process (computed per call: a forked child is another owner)."""
    return f"{os.getpid()}-{_HOST}"


def _owner_dead(name: str) -> bool:
    """Whether ``name`` (in ``incoming/``) was written by a process of this host that is no longer running."""
    pid, _, host = name.partition(".")[0].partition("-")
    if not pid.isdigit() or host != _HOST or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class UploadError(ValueError):
    """An upload refused before it was queued (costs no quota); ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


HOST_ERRORS = (MemoryError, RecursionError)  # the server short of memory or stack (every decoder here is bounded)


def _unexpected(exc: Exception, what: str, status: int) -> UploadError:
    """The team's one-line refusal for an error no handler names (logged whole for the organisers)."""
    log.warning("upload refused: %s", what, exc_info=exc)
    return UploadError(clip(f"{what} ({type(exc).__name__}: {exc})"), status)


def store_full(exc: OSError) -> UploadError | None:
    """The team's error for a write that failed because the store is full (None for any other failure)."""
    if exc.errno not in _NO_SPACE:
        return None
    return UploadError(f"the server's submission store is full ({os.strerror(exc.errno or 0)}); your upload was "
                       "not stored and costs no quota; try again later and tell the organisers", 507)


class Store:
    def __init__(self, root: Path, limits: UploadLimits) -> None:
        self.root, self.limits = Path(root), limits
        self.incoming, self.objects, self.locks = (self.root / d for d in ("incoming", "objects", "locks"))
        for d in (self.incoming, self.objects, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self, older_than: float = STALE_SECONDS) -> list[Path]:
        """Remove what a stopped server left in ``incoming/``: what a dead process of this host wrote (its
        name says which), and anything untouched for ``older_than`` seconds (a live upload of a server on
        another host sharing the store is younger); return what was removed."""
        cutoff, gone = time.time() - older_than, []
        for p in self.incoming.iterdir():
            try:
                if _owner_dead(p.name) or p.lstat().st_mtime < cutoff:
                    self.discard(p)
                    gone.append(p)
            except OSError:  # removed meanwhile by another process
                continue
        return gone

    def sweep_objects(self, used: Callable[[str], bool], older_than: float = STALE_SECONDS) -> list[str]:
        """Remove the stored folders no submission uses (``used(sha256)`` false) and untouched for ``older_than``
        seconds: an upload stored, then neither queued nor dropped (the database went away in between; a live
        upload of the same content touches its folder, :meth:`store`); return their sha256."""
        cutoff, gone = time.time() - older_than, []
        for d in sorted(self.root.joinpath("objects").glob("??/*")):
            try:
                if d.lstat().st_mtime < cutoff and self.drop_unused(d.name, used):
                    gone.append(d.name)
            except (OSError, ValueError):  # removed meanwhile, or not a stored folder's name
                continue
        for lock in self.locks.iterdir():  # left by an upload that failed before its folder was stored
            with contextlib.suppress(OSError, ValueError):
                if not self.object_dir(lock.name).exists() and lock.lstat().st_mtime < cutoff:
                    with self._object_lock(lock.name, exclusive=True):
                        pass
        return gone

    def object_dir(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.objects / sha256[:2] / sha256

    # -- receiving --------------------------------------------------------------------------------------------
    def _new_upload(self) -> Path:
        return self.incoming / f"{_owner()}.{secrets.token_hex(16)}.upload"

    def receive(self, chunks: Iterable[bytes]) -> Path:
        """Write ``chunks`` to a new file in ``incoming/``; past ``upload.max_bytes`` stop, remove it, raise."""
        path = self._new_upload()
        try:
            with open(path, "xb") as f:
                n = 0
                for chunk in chunks:
                    n += len(chunk)
                    if n > self.limits.max_bytes:
                        raise self._too_big()
                    f.write(chunk)
        except BaseException as exc:
            path.unlink(missing_ok=True)
            if isinstance(exc, OSError) and (full := store_full(exc)):
                raise full from exc
            raise
        return path

    def receive_file(self, src: BinaryIO) -> Path:
        return self.receive(iter(lambda: src.read(CHUNK), b""))

    def _too_big(self) -> UploadError:
        return UploadError(f"upload larger than the limit of {self.limits.max_bytes} bytes; it was cut off and "
                           "discarded (pack only the submission folder: submission.yaml and the model)", 413)

    # -- unpacking --------------------------------------------------------------------------------------------
    def unpack(self, archive: Path) -> Path:
        """Unpack a .tar.gz/.tar/.zip into a fresh staging folder in ``incoming/`` and return the submission
        folder in it (the archive's only top-level folder, if it has one and nothing else).

        Every failure is the team's one-line :class:`UploadError` (400, counted by ``intake.accept``), an error
        no handler names too (a decoder's new exception type), but a full store (507) and an OSError that the
        archive's readers did not wrap (the host's: the staging folder)."""
        stage = self.incoming / f"{_owner()}.{secrets.token_hex(16)}.d"
        try:
            stage.mkdir(mode=0o700)
            _unpack(archive, stage, self.limits)
            entries = list(stage.iterdir())
            return entries[0] if len(entries) == 1 and entries[0].is_dir() else stage
        except BaseException as exc:
            shutil.rmtree(stage, ignore_errors=True)
            cause = exc.__cause__ if isinstance(exc, UploadError) else exc  # _untar/_unzip wrap OSError
            if isinstance(cause, OSError) and (full := store_full(cause)):
                raise full from exc
            if isinstance(exc, Exception) and not isinstance(exc, (UploadError, OSError, *HOST_ERRORS)):
                raise _unexpected(exc, "archive could not be unpacked", 400) from exc
            raise

    def drop_object(self, sha256: str) -> None:
        """Remove the stored folder of ``sha256`` (an upload stored, then refused at the queue: it must not keep
        its disk). Moved out of ``objects/`` at once, then deleted from ``incoming/``."""
        dest = self.object_dir(sha256)
        with contextlib.suppress(FileNotFoundError):
            dest.chmod(0o755)  # a read-only folder cannot be renamed to another parent, nor emptied
            gone = self.incoming / f"{_owner()}.{secrets.token_hex(16)}.d"
            os.rename(dest, gone)
            for p in [gone, *gone.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
            self.discard(gone)

    def discard(self, path: Path) -> None:
        """Remove an upload or staging folder in ``incoming/`` (never anything else)."""
        path = Path(path)
        top = path
        while top.parent != self.incoming and top.parent != top:
            top = top.parent
        if top.parent != self.incoming:
            raise ValueError(f"{path} is not in {self.incoming}")
        if top.is_dir():
            shutil.rmtree(top, ignore_errors=True)
        else:
            top.unlink(missing_ok=True)

    # -- storing ----------------------------------------------------------------------------------------------
    def store(self, folder: Path, expect: dict[str, str] | None = None) -> tuple[Submission, Path]:
        """:meth:`stored`, for a caller that does not queue it."""
        with self.stored(folder, expect) as done:
            return done

    @contextlib.contextmanager
    def stored(self, folder: Path, expect: dict[str, str] | None = None) -> Iterator[tuple[Submission, Path]]:
        """Validate ``folder`` (an unpacked upload) and move it to ``objects/`` under its sha256; the object is
        held (a shared lock) until the block ends, so that no :meth:`drop_unused` (another upload of the same
        bytes refused at the queue) removes it before this upload is queued.

        ``expect``: keys of ``submission.yaml`` that must have these values (the uploading team, the entry's
        name, the track). Raises :class:`UploadError` (422) with the schema's one-line reasons, before
        anything is stored. Yields the submission as loaded from its stored place, and that place."""
        try:
            spec = load_submission(folder).spec
            sha = folder_sha256(folder)
        except SubmissionError as exc:
            raise UploadError(str(exc).replace(f"{folder}/", "").replace(str(folder), "(upload)"), 422) from exc
        except (OSError, *HOST_ERRORS):  # reading the folder unpacked here, or short of memory: the host's fault
            raise
        except Exception as exc:  # a parser's error no handler names: still the team's upload
            raise _unexpected(exc, "submission could not be checked", 422) from exc
        for key, want in (expect or {}).items():
            if getattr(spec, key) != want:
                raise UploadError(f"submission.yaml: key '{key}' is {getattr(spec, key)!r}, but this upload is "
                                  f"{key} {want!r}; make them agree", 422)
        with self._object_lock(sha, exclusive=False):
            dest = self.object_dir(sha)
            with contextlib.suppress(FileNotFoundError):
                os.utime(dest)  # in use again: not the start-up sweep's (sweep_objects)
            if not dest.exists():
                for p in folder.rglob("*"):  # read-only for everyone: the sandbox's unprivileged user reads it
                    p.chmod(0o555 if p.is_dir() else 0o444)
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(folder, dest)
                except OSError as exc:
                    if full := store_full(exc):
                        raise full from exc
                    if not dest.exists():  # another upload of the same content won the rename: keep that one
                        raise
                else:
                    dest.chmod(0o555)
            yield load_submission(dest), dest

    def drop_unused(self, sha256: str, used: Callable[[str], bool]) -> bool:
        """Remove the stored folder ``sha256`` unless ``used(sha256)`` (a queued submission uses it) or an upload
        holds it (:meth:`stored`: it is about to be queued); return whether it was removed."""
        with self._object_lock(sha256, exclusive=True) as got:
            if not got or used(sha256):
                return False
            self.drop_object(sha256)
            return True

    @contextlib.contextmanager
    def _object_lock(self, sha256: str, exclusive: bool) -> Iterator[bool]:
        """flock on ``locks/<sha256>`` (across the processes and hosts sharing the store): shared, waited for;
        exclusive, not waited for. Yields whether it was got. An exclusive holder removes the file if the folder
        is gone (none is stored but under a shared lock); a holder whose file was removed so meanwhile retries
        on a fresh one, so that two holders never hold two different files."""
        path = self.locks / sha256
        self.object_dir(sha256)  # a sha256, not a path
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                if full := store_full(exc):
                    raise full from exc
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            with contextlib.suppress(FileNotFoundError):
                here, there = os.fstat(fd), os.stat(path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    break
            os.close(fd)  # removed by an exclusive holder while this one waited
        try:
            yield True
        finally:
            if exclusive and not self.object_dir(sha256).exists():
                path.unlink(missing_ok=True)
            os.close(fd)


def _member_path(name: str, limits: UploadLimits) -> PurePosixPath:
    """The relative path an archive member may be unpacked to, or :class:`UploadError`."""
    if "\\" in name or "\0" in name:
        raise UploadError(f"archive member {name!r}: backslashes and NUL are not allowed in names")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise UploadError(f"archive member {name!r}: absolute paths are not allowed; pack relative paths")
    if ".." in p.parts:
        raise UploadError(f"archive member {name!r}: '..' is not allowed in paths")
    parts = [x for x in p.parts if x != "."]
    if not parts:
        raise UploadError(f"archive member {name!r}: empty path")
    if len(parts) > limits.max_depth:
        raise UploadError(f"archive member {name!r}: nested deeper than {limits.max_depth} folders")
    return PurePosixPath(*parts)


def _mkdirs(stage: Path, rel: PurePosixPath) -> Path:
    """Create ``stage/rel`` as a folder, refusing to pass through anything but folders made here."""
    cur = stage
    for part in rel.parts:
        cur = cur / part
        try:
            os.mkdir(cur, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                raise UploadError(f"archive member {rel}: {part} is both a file and a folder") from None
    return cur


def _write(stage: Path, rel: PurePosixPath, src: IO[bytes], budget: list[int], limits: UploadLimits) -> None:
    parent = _mkdirs(stage, rel.parent) if rel.parent != PurePosixPath(".") else stage
    target = parent / rel.name
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UploadError(f"archive member {rel}: appears twice (or is both a file and a folder)") from None
    with os.fdopen(fd, "wb") as f:
        while chunk := src.read(CHUNK):
            budget[0] -= len(chunk)  # counted as written: a zip's declared sizes can lie
            if budget[0] < 0:
                raise UploadError(f"archive unpacks to more than {limits.max_unpacked_bytes} bytes "
                                  "(upload.max_unpacked_bytes)")
            f.write(chunk)


def _count(n: int, limits: UploadLimits) -> None:
    if n > limits.max_files:
        raise UploadError(f"archive holds more than {limits.max_files} files and folders (upload.max_files)")


TAR_META_MAX = 1024**2  # pax and GNU long-name headers in one archive (names and a few numbers need KiBs)
TAR_META_CHAIN = 8  # such headers in a row before one member (pax + long name + long link need 3)


class _TarInfo(tarfile.TarInfo):
    """A member header whose metadata headers are bounded before tarfile reads them.

    tarfile reads a pax or GNU long-name header into memory whole, at the size its own header declares, and
    each chained one recursively, before any member reaches :func:`_untar`: a few KiB of gzip would hold
    gigabytes. Sparse members (old GNU and pax 1.0 maps, read block by block, unbounded) are refused."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK):
            seen = getattr(tar, "_skybench_meta", (0, 0))
            chain, total = seen[0] + 1, seen[1] + self.size
            tar._skybench_meta = (chain, total)  # type: ignore[attr-defined]
            if chain > TAR_META_CHAIN or total > TAR_META_MAX:
                raise UploadError(f"archive has more than {TAR_META_MAX} bytes of pax or long-name headers, or "
                                  f"more than {TAR_META_CHAIN} in a row; pack it with plain tar or zip")
        else:
            tar._skybench_meta = (0, getattr(tar, "_skybench_meta", (0, 0))[1])  # type: ignore[attr-defined]
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UploadError(f"archive member {self.name!r}: sparse files are not allowed; pack the file itself")
        return cast(tarfile.TarInfo, super()._proc_member(tar))  # type: ignore[misc]

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict, tar: tarfile.TarFile) -> None:
        raise UploadError(f"archive member {next.name!r}: sparse files are not allowed; pack the file itself")


ACCEPTED = "a .tar.gz, .tar or .zip archive"
# xz file format 2.1.1.1; bzip2: "BZh", a block size 1-9, then a block's or the end's magic; zstd RFC 8878 3.1.1
REFUSED_MAGIC = {"xz": rb"\xfd7zXZ\x00", "bzip2": rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", "zstd": rb"\x28\xb5\x2f\xfd"}
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # APPNOTE 4.3.7 local file header; 4.3.16 an empty zip's end record


def _unpack(archive: Path, stage: Path, limits: UploadLimits) -> None:
    """Unpack ``archive`` by the format its first bytes name (never its own choice of decompressor: tarfile's
    ``r:*`` also inflates xz and bzip2, whose errors, memory and time no limit here covers); gzip is read by
    :class:`_Gunzip`, one member, so only zlib ever decompresses."""
    with open(archive, "rb") as raw:
        head = raw.read(10)
        raw.seek(0)
        if head.startswith(b"\x1f\x8b"):  # RFC 1952 sec. 2.3.1: ID1 ID2
            _open_tar(io.BufferedReader(_Gunzip(raw), 64 * 1024), stage, limits)
            return
    if head.startswith(ZIP_MAGIC):  # by its start, not zipfile.is_zipfile's end record: a plain tar's last member
        _unzip(archive, stage, limits)  # may be a zip (.npz, .pt, .keras), whose end record that finds
        return
    for name, magic in REFUSED_MAGIC.items():
        if re.match(magic, head):
            raise UploadError(f"archive is compressed with {name}; only {ACCEPTED} is accepted (pack it with "
                              "`skybench submit` or `tar czf`)")
    with open(archive, "rb") as raw:
        _open_tar(raw, stage, limits)


def _open_tar(src: IO[bytes], stage: Path, limits: UploadLimits) -> None:
    try:
        tar = tarfile.open(fileobj=src, mode="r:", tarinfo=_TarInfo)  # "r:": no decompressor of tarfile's
    except UploadError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:  # ValueError: a negative size
        raise UploadError(f"not {ACCEPTED}, or a damaged one ({exc})") from exc
    with tar:
        _untar(tar, stage, limits)


class _Gunzip(io.RawIOBase):
    """The first gzip member of ``raw``, inflated by zlib, whose C code also reads the member's header (its
    name and comment fields: read a byte per call by Python's gzip, unbounded) and checks its CRC and length.
    Any byte after the member but zeros is refused: Python's gzip reads the next member's header in Python, so
    20-byte empty members were seconds of CPU per MB with no output to count. Seeks forward only, as tarfile does
    reading members in order."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.pos, self.pending, self.ended = raw, 0, b"", False
        self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # zlib manual, inflateInit2: +16 is one gzip member

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        pos += self.pos if whence == io.SEEK_CUR else 0
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or pos < self.pos:
            raise io.UnsupportedOperation("a gzip stream is read forward only")
        while self.pos < pos and self.read(min(pos - self.pos, CHUNK)):
            pass
        return self.pos

    def readinto(self, b: Any) -> int:
        while b and not self.z.eof:
            if not self.pending:
                self.pending = self.raw.read(64 * 1024)
                if not self.pending:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out = self.z.decompress(self.pending, len(b))
            self.pending = self.z.unconsumed_tail
            if out:
                b[:len(out)] = out
                self.pos += len(out)
                return len(out)
        if self.z.eof and not self.ended:  # tar to a pipe pads its output with zeros to a block (libarchive: 10240)
            after, seen, self.ended = self.z.unused_data, 0, True
            while after:
                seen += len(after)
                if after.strip(b"\0") or seen > 16 * CHUNK:
                    raise UploadError("archive has data after the end of its gzip stream (another gzip member?); "
                                      "pack the folder with one `tar czf`")
                after = self.raw.read(CHUNK)
        return 0


def _untar(tar: tarfile.TarFile, stage: Path, limits: UploadLimits) -> None:
    budget, n = [limits.max_unpacked_bytes], 0
    try:
        for m in tar:  # streamed: members are checked one by one, never listed in full first
            n += 1
            _count(n, limits)
            rel = _member_path(m.name, limits)
            if m.issym() or m.islnk():
                raise UploadError(f"archive member {m.name!r}: links are not allowed (symbolic or hard, to "
                                  f"{m.linkname!r}); pack the file itself")
            if m.isdir():
                _mkdirs(stage, rel)
            elif m.isfile():
                if m.size > budget[0]:
                    raise UploadError(f"archive unpacks to more than {limits.max_unpacked_bytes} bytes "
                                      "(upload.max_unpacked_bytes)")
                src = tar.extractfile(m)
                assert src is not None  # a regular file always has one
                _write(stage, rel, src, budget, limits)
            else:
                raise UploadError(f"archive member {m.name!r}: only regular files and folders are allowed "
                                  "(no devices, FIFOs or other special files)")
        # tarfile ends quietly at a truncated header: read the (compressed) stream to its end to tell.
        trailing = 0
        while chunk := tar.fileobj.read(CHUNK):
            trailing += len(chunk)
            if trailing > 16 * CHUNK:
                raise UploadError("archive has more than 16 MiB of data after its end; pack only the folder")
    except UploadError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:  # ValueError: tarfile read a
        # negative (base-256) size and asked its file for read(-512)
        raise UploadError(f"archive is damaged or truncated ({type(exc).__name__}: {exc})") from exc


ZIP_ENTRY_MAX = 8 * 1024  # one central-directory record: 46 bytes, a name of 16 folders of 255 bytes, extras


def _zip_directory(archive: Path, limits: UploadLimits) -> None:
    """Refuse a zip whose central directory is too large for ``upload.max_files`` entries, before ZipFile
    reads it: it makes an object of every record (up to millions in an upload of the size limit, gigabytes of
    memory) before :func:`_count` could see them, and goes by the directory's size, not its declared count."""
    zf: Any = zipfile  # its end-record reader and field indexes are private (stable since Python 2.6)
    with open(archive, "rb") as f:
        end = zf._EndRecData(f)  # the end record ZipFile itself reads first (zip64 too)
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    _count(end[zf._ECD_ENTRIES_TOTAL], limits)
    if end[zf._ECD_SIZE] > limits.max_files * ZIP_ENTRY_MAX:
        raise UploadError(f"archive's central directory is {end[zf._ECD_SIZE]} bytes, too large for "
                          f"{limits.max_files} files and folders (upload.max_files)")


def _unzip(archive: Path, stage: Path, limits: UploadLimits) -> None:
    budget = [limits.max_unpacked_bytes]
    try:
        _zip_directory(archive, limits)
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            _count(len(infos), limits)
            if sum(i.file_size for i in infos) > limits.max_unpacked_bytes:
                raise UploadError(f"archive unpacks to more than {limits.max_unpacked_bytes} bytes "
                                  "(upload.max_unpacked_bytes)")
            for i in infos:
                rel = _member_path(i.filename, limits)
                mode = i.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if i.is_dir():
                    if kind not in (0, stat.S_IFDIR):
                        raise UploadError(f"archive member {i.filename!r}: only regular files and folders")
                    _mkdirs(stage, rel)
                    continue
                if kind == stat.S_IFLNK:
                    raise UploadError(f"archive member {i.filename!r}: links are not allowed; pack the file itself")
                if kind not in (0, stat.S_IFREG):
                    raise UploadError(f"archive member {i.filename!r}: only regular files and folders are allowed "
                                      "(no devices, FIFOs or other special files)")
                if i.flag_bits & 0x1:  # ZipFile.open would raise RuntimeError: the server's 500, not the team's 400
                    raise UploadError(f"archive member {i.filename!r}: encrypted; pack it without a password")
                if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # zipfile inflates bzip2 and
                    # LZMA reads whole (1 MiB of bzip2 zeros is terabytes), deflate in bounded steps
                    raise UploadError(f"archive member {i.filename!r}: compression method {i.compress_type} is not "
                                      "accepted; pack with deflate (zip's default) or none")
                with z.open(i) as src:
                    _write(stage, rel, src, budget, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, zlib.error,
            ValueError) as exc:  # ValueError: a member's name flagged UTF-8 that is not
        raise UploadError(f"archive is damaged or unsupported ({type(exc).__name__}: {exc})") from exc
