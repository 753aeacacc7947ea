"""Uploads: the byte limit, safe unpacking (archive attacks), content-addressed storage, schema validation."""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from skybench.server.config import UploadLimits
from skybench.server.storage import Store, UploadError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "submissions" / "examples" / "lens-space" / "onnx"
LIMITS = UploadLimits(max_bytes=2_000_000, max_files=20, max_unpacked_bytes=3_000_000, max_depth=6)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.external_attr = mode << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return buf.getvalue()


def _encrypted(data: bytes) -> bytes:
    """``data`` (a zip of one member) with the member's "encrypted" flag set, as a password-protected zip has it."""
    out = bytearray(data)
    out[6] |= 1  # the local header's general-purpose flags
    out[out.find(b"PK\x01\x02") + 8] |= 1  # and the central directory's
    return bytes(out)


def _small_bomb(method: int) -> bytes:
    """A zip of one member compressed with ``method`` (bzip2, LZMA), 4 MiB of zeros, declared 10 bytes (both
    headers): zipfile inflates such a member's compressed reads whole, before any size limit sees them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("sub/zeros", bytes(4 * 1024**2))
    out = bytearray(buf.getvalue())
    central = out.find(b"PK\x01\x02")
    out[22:26] = out[central + 24:central + 28] = (10).to_bytes(4, "little")
    return bytes(out)


def _bad_utf8_name() -> bytes:
    """A zip whose second member is flagged UTF-8 (0x800) but holds byte 0xFF in its name (both headers)."""
    data = bytearray(_zip([("sub/submission.yaml", b"x", 0o100644), ("sub/Xmodel.onnx", b"x", 0o100644)]))
    for sig, flags, name in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        i = 0
        while (i := data.find(sig, i)) != -1:
            if data[i + name:i + name + 5] == b"sub/X":
                data[i + flags + 1] |= 0x08
                data[i + name + 4] = 0xFF
            i += 4
    return bytes(data)


def _negative_pax() -> bytes:
    """A pax header block whose size is -513 (a base-256 field): tarfile asks its file for read(-512)."""
    info = tarfile.TarInfo("PaxHeaders/x")
    info.type, info.size = tarfile.XHDTYPE, -513
    return info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


def _damaged_xz() -> bytes:
    """A .tar.xz whose stream is corrupt after its first block: liblzma's LZMAError, which no handler named (500)."""
    data = bytearray(_tar([_file("sub/a", bytes(200_000)), _file("sub/b", b"y")], mode="w:xz"))
    for i in range(len(data) - 60, len(data) - 20):
        data[i] ^= 0xFF
    return bytes(data)


def _example_tar(top: str = "onnx") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(EXAMPLE, arcname=top)
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", LIMITS)


def _files_outside(tmp_path: Path, store: Store) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if not p.is_relative_to(store.root)}


ATTACKS = {
    "absolute path": (lambda: _tar([_file("/tmp/skybench-evil")]), "absolute paths are not allowed"),
    "dot-dot": (lambda: _tar([_file("sub/../../evil")]), "'..' is not allowed"),
    "symlink": (lambda: _tar([_special("sub/model.onnx", tarfile.SYMTYPE, "/etc/passwd")]), "links are not allowed"),
    "hard link": (lambda: _tar([_file("sub/a"), _special("sub/b", tarfile.LNKTYPE, "sub/a")]),
                  "links are not allowed"),
    "char device": (lambda: _tar([_special("sub/zero", tarfile.CHRTYPE)]), "only regular files and folders"),
    "fifo": (lambda: _tar([_special("sub/pipe", tarfile.FIFOTYPE)]), "only regular files and folders"),
    "too many files": (lambda: _tar([_file(f"sub/f{i}") for i in range(25)]), "more than 20 files"),
    "tar bomb": (lambda: _tar([_file("sub/zeros", bytes(3_500_000))]), "unpacks to more than 3000000 bytes"),
    "many small that add up": (lambda: _tar([_file(f"sub/z{i}", bytes(900_000)) for i in range(4)]),
                               "unpacks to more than 3000000 bytes"),
    "too deep": (lambda: _tar([_file("a/b/c/d/e/f/g/h")]), "nested deeper than 6"),
    "duplicate": (lambda: _tar([_file("sub/a"), _file("sub/a")]), "appears twice"),
    "file then folder": (lambda: _tar([_file("sub/a"), _file("sub/a/b")]), "both a file and a folder"),
    "zip dot-dot": (lambda: _zip([("../evil", b"x", 0o100644)]), "'..' is not allowed"),
    "zip absolute": (lambda: _zip([("/evil", b"x", 0o100644)]), "absolute paths"),
    "zip symlink": (lambda: _zip([("sub/link", b"/etc/passwd", stat.S_IFLNK | 0o777)]), "links are not allowed"),
    "zip bomb": (lambda: _zip([("sub/zeros", bytes(3_500_000), 0o100644)]), "unpacks to more than"),
    "zip fifo": (lambda: _zip([("sub/p", b"", stat.S_IFIFO | 0o644)]), "only regular files"),
    "zip encrypted": (lambda: _encrypted(_zip([("sub/submission.yaml", b"x", 0o100644)])), "encrypted"),
    "zip bzip2 lying bomb": (lambda: _small_bomb(zipfile.ZIP_BZIP2), "compression method 12 is not accepted"),
    "zip lzma lying bomb": (lambda: _small_bomb(zipfile.ZIP_LZMA), "compression method 14 is not accepted"),
    "zip name not utf-8": (_bad_utf8_name, "damaged or unsupported"),
    "negative pax size first": (lambda: _gz(_negative_pax()), "not a .tar.gz, .tar or .zip"),
    "negative pax size later": (lambda: _gz(_tar([_file("sub/a")], mode="w")[:512 * 2] + _negative_pax()),
                                "damaged or truncated"),
    "tar.xz": (lambda: _tar([_file("sub/a")], mode="w:xz"), "compressed with xz; only a .tar.gz, .tar or .zip"),
    "damaged tar.xz": (_damaged_xz, "compressed with xz"),
    "tar.bz2": (lambda: _tar([_file("sub/a")], mode="w:bz2"), "compressed with bzip2; only a .tar.gz, .tar or .zip"),
    "gzip member's crc wrong": (lambda: (lambda d: d[:-8] + bytes([d[-8] ^ 1]) + d[-7:])(_example_tar()),
                                "damaged .*incorrect data check"),
    "second gzip member": (lambda: _example_tar() + gzip.compress(b"more"), "data after the end of its gzip stream"),
    "not an archive": (lambda: b"hello, I am not an archive" * 10, "not a .tar.gz, .tar or .zip"),
    "truncated": (lambda: _example_tar()[:-10], "damaged or truncated"),
    "cut in half": (lambda: (lambda d: d[:len(d) // 2])(_example_tar()), "damaged or truncated"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_archive_attacks_are_refused(attack: str, store: Store, tmp_path: Path):
    make, message = ATTACKS[attack]
    data = make()
    before = _files_outside(tmp_path, store)
    archive = store.receive([data])
    with pytest.raises(UploadError, match=message) as exc:
        store.unpack(archive)
    assert exc.value.status == 400 and "\n" not in str(exc.value), "the team's one-line 400"
    store.discard(archive)
    assert list(store.incoming.iterdir()) == [], "the staging folder is removed"
    assert list(store.objects.iterdir()) == []
    assert _files_outside(tmp_path, store) == before
    assert not Path("/tmp/skybench-evil").exists() and not (tmp_path / "evil").exists()


def test_zip_that_lies_about_its_size_is_cut_off(store: Store):
    data = bytearray(_zip([("sub/zeros", bytes(3_500_000), 0o100644)]))
    # Rewrite the declared uncompressed size (local header and central directory) to 10 bytes.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        data[i + off:i + off + 4] = (10).to_bytes(4, "little")
    archive = store.receive([bytes(data)])
    with pytest.raises(UploadError, match="unpacks to more than|damaged"):
        store.unpack(archive)
    assert [p.name for p in store.incoming.iterdir()] == [archive.name]


def test_oversized_upload_is_cut_off(store: Store):
    sent = []

    def chunks():
        for i in range(100):  # 100 MiB offered; the limit is 2 MB
            sent.append(i)
            yield bytes(1024 * 1024)

    with pytest.raises(UploadError, match="larger than the limit of 2000000 bytes") as exc:
        store.receive(chunks())
    assert exc.value.status == 413
    assert len(sent) <= 3, "reading stops at the limit"
    assert list(store.incoming.iterdir()) == [], "the partial file is removed"


@pytest.mark.parametrize("kind", ["tar.gz with a top folder", "zip without one"])
def test_valid_upload_is_stored_content_addressed_and_read_only(kind: str, store: Store):
    from skybench.harness.submission import folder_sha256

    if kind.startswith("tar"):
        data = _example_tar()
    else:
        data = _zip([(p.name, p.read_bytes(), 0o100644) for p in sorted(EXAMPLE.iterdir())])
    folder = store.unpack(store.receive([data]))
    sub, dest = store.store(folder)
    assert sub.sha256 == folder_sha256(EXAMPLE) and dest == store.object_dir(sub.sha256)
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in EXAMPLE.iterdir())
    for p in [dest, *dest.iterdir()]:
        mode = p.stat().st_mode
        assert mode & 0o222 == 0 and mode & 0o444 == 0o444, f"{p} read-only and world-readable"
    again = store.unpack(store.receive([data]))  # the same content again: one stored copy
    assert store.store(again)[1] == dest


def test_a_removed_folders_lock_file_goes_with_it_and_a_waiter_takes_a_fresh_one(store: Store):
    """storage/locks/<sha> stayed for ever, one file per refused upload (cheap to make: many small ones). A
    removal now removes it; a holder that waited on the removed file retries on the path's fresh one, so that a
    removal cannot get its own file while an upload holds another."""
    import threading
    import time

    data = _example_tar()
    sub, dest = store.store(store.unpack(store.receive([data])))
    assert [p.name for p in store.locks.iterdir()] == [sub.sha256]
    assert store.drop_unused(sub.sha256, lambda sha: False) and not dest.exists()
    assert list(store.locks.iterdir()) == [], "the lock file goes with its folder"

    sha, entered, release = "b" * 64, threading.Event(), threading.Event()

    def hold_shared() -> None:
        with store._object_lock(sha, exclusive=False):
            entered.set()
            release.wait(30)

    with store._object_lock(sha, exclusive=True) as got:
        assert got
        waiter = threading.Thread(target=hold_shared)
        waiter.start()
        time.sleep(0.3)  # it opens the file this holder removes on leaving, and waits for it
    try:
        assert entered.wait(30)
        with store._object_lock(sha, exclusive=True) as got:
            assert not got, "the waiter holds the file now at the path"
    finally:
        release.set()
        waiter.join(30)
    store.sweep_objects(lambda sha: False, older_than=0)
    assert list(store.locks.iterdir()) == [], "a lock file without its folder is swept"


def test_a_dvcignore_is_refused_before_it_reaches_submissions(store: Store):
    # dvc compiles a nested .dvcignore's patterns into regexes and matches every path below it, in the organiser's
    # process: this pair held `dvc status` over a minute (a polynomial of degree 6 in the name's length)
    files = [_file(f"sub/{p.name}", p.read_bytes()) for p in sorted(EXAMPLE.iterdir())]
    data = _tar([*files, _file("sub/.dvcignore", b"*a" * 6 + b"*b\n"), _file("sub/" + "a" * 200)])
    folder = store.unpack(store.receive([data]))
    with pytest.raises(UploadError, match="may not hold a .dvcignore") as exc:
        store.store(folder)
    assert exc.value.status == 422 and list(store.objects.iterdir()) == []


def test_schema_error_names_the_key_not_the_server_paths(store: Store):
    spec = (EXAMPLE / "submission.yaml").read_text().replace("format: onnx", "format: onnnx")
    data = _tar([_file("sub/submission.yaml", spec.encode()),
                 _file("sub/model.onnx", (EXAMPLE / "model.onnx").read_bytes())])
    folder = store.unpack(store.receive([data]))
    with pytest.raises(UploadError, match="key 'format': must be one of") as exc:
        store.store(folder)
    assert exc.value.status == 422 and str(store.root) not in str(exc.value)
    assert list(store.objects.iterdir()) == []


def _pax_bomb(size: int, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A tar.gz whose first header is a pax (or GNU long-name) header declaring ``size`` bytes of zeros."""
    import gzip

    head = tarfile.TarInfo("././@PaxHeader")
    head.type, head.size = kind, size
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        f.write(head.tobuf(format=tarfile.USTAR_FORMAT))
        for _ in range(size // (1 << 20)):
            f.write(bytes(1 << 20))
        f.write(bytes(1024))
    return buf.getvalue()


def _chained_pax(n: int) -> bytes:
    """``n`` pax headers in a row before one file: tarfile reads each, recursively, keeping every one."""
    buf = io.BytesIO()
    for i in range(n):
        record = b"%d comment=%d\n" % (len(b" comment=\n") + len(str(i)) + 3, i)
        head = tarfile.TarInfo("././@PaxHeader")
        head.type, head.size = tarfile.XHDTYPE, len(record)
        buf.write(head.tobuf(format=tarfile.USTAR_FORMAT) + record + bytes(-len(record) % 512))
    buf.write(_tar([_file("sub/a")], mode="w"))
    return buf.getvalue()


def _gnu_sparse() -> bytes:
    head = tarfile.TarInfo("sub/sparse")
    head.type = tarfile.GNUTYPE_SPARSE
    return head.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024)


@pytest.mark.parametrize("make", [lambda: _pax_bomb(64 * 1024**2),
                                  lambda: _pax_bomb(64 * 1024**2, tarfile.GNUTYPE_LONGNAME),
                                  lambda: _chained_pax(50), _gnu_sparse],
                         ids=["pax header bomb", "long-name bomb", "chained pax headers", "gnu sparse"])
def test_tar_metadata_headers_are_bounded_before_they_are_read(make, store: Store):
    """tarfile reads a pax or GNU long-name header whole, at its declared size, before any member is checked:
    64 MiB of zeros (64 KiB of gzip) must be refused without being held in memory."""
    data = make()
    assert len(data) < LIMITS.max_bytes
    archive = store.receive([data])
    peak = _refused_peak(store, archive, "pax or long-name headers|sparse files are not allowed")
    assert peak < 8 * 1024**2, f"unpacking held {peak >> 20} MiB"
    assert [p.name for p in store.incoming.iterdir()] == [archive.name]


def _refused_peak(store: Store, archive: Path, match: str) -> int:
    """Peak traced memory (bytes) of unpacking ``archive``, which must be refused with a message matching ``match``."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(UploadError, match=match):
            store.unpack(archive)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_zip_central_directory_is_bounded_before_it_is_parsed(store: Store):
    """ZipFile makes an object of every central-directory record before the file count is checked, and goes by
    the directory's size, not its declared count: 40,000 records declared as 1 must be refused unread."""
    import struct

    name = b"a"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    record = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0,
                         0) + name
    n = 40_000
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(record) * n, len(local), 0)
    archive = store.receive([local, record * n, end])
    peak = _refused_peak(store, archive, "central directory is .* too large")
    assert peak < 4 * 1024**2, f"unpacking held {peak >> 20} MiB"


def _long_name_gzip(data: bytes, name_bytes: int) -> bytes:
    """``data`` as one gzip member whose FNAME header field is ``name_bytes`` long (RFC 1952 sec. 2.3.1)."""
    import zlib

    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    return (b"\x1f\x8b\x08\x08" + bytes(6) + b"a" * name_bytes + b"\0" + body
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


@pytest.mark.parametrize("kind", ["many empty members", "long name field"])
def test_gzip_headers_are_never_parsed_a_byte_at_a_time_in_python(kind: str, store: Store, monkeypatch):
    """Python's gzip reads each member's header in Python, its name and comment a byte per call: 1 MB of 20-byte
    empty members after the tar (no output byte for the after-the-end limit to count), or a 1 MB name, held the
    GIL for a second (about 34 s for an upload of 256 MiB). One member is read, by zlib; more are refused."""
    import gzip

    reads = [0]
    read = gzip._PaddedFile.read  # type: ignore[attr-defined]

    def counted(self, size):  # type: ignore[no-untyped-def]
        reads[0] += 1
        return read(self, size)

    monkeypatch.setattr(gzip._PaddedFile, "read", counted)  # type: ignore[attr-defined]
    tar = _tar([_file(f"sub/{p.name}", p.read_bytes()) for p in sorted(EXAMPLE.iterdir())], mode="w")
    if kind == "many empty members":
        archive = store.receive([_gz(tar) + gzip.compress(b"", mtime=0) * 50_000])
        with pytest.raises(UploadError, match="data after the end of its gzip stream"):
            store.unpack(archive)
    else:
        archive = store.receive([_long_name_gzip(tar, 1_000_000)])
        assert sorted(p.name for p in store.unpack(archive).iterdir()) == sorted(p.name for p in EXAMPLE.iterdir())
    assert reads[0] < 100, f"{reads[0]} reads of gzip headers in Python"


class NewDecoderError(Exception):
    """An error of a type no handler of the store names (liblzma's LZMAError was one)."""


def broken_decompressobj(message: str) -> type:
    """A stand-in for ``zlib.decompressobj`` whose ``decompress`` raises :class:`NewDecoderError` (``message``)."""

    class Broken:
        eof, unused_data, unconsumed_tail = False, b"", b""

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def decompress(self, *args: object, **kwargs: object) -> bytes:
            raise NewDecoderError(message)

    return Broken


def test_an_error_no_handler_names_is_the_teams_one_line_refusal(store: Store, monkeypatch):
    """A decoder's or parser's exception of a type no handler lists (liblzma's LZMAError was one) answered 500,
    uncounted: it is the team's one-line refusal, logged whole for the organisers."""
    import zlib

    from skybench.server import storage

    data = _example_tar()
    folder = store.unpack(store.receive([data]))
    with monkeypatch.context() as m:
        m.setattr(zlib, "decompressobj", broken_decompressobj("first line\nsecond line"))
        with pytest.raises(UploadError, match="could not be unpacked .*NewDecoderError: first line second line") \
                as exc:
            store.unpack(store.receive([data]))
    assert exc.value.status == 400 and "\n" not in str(exc.value)
    monkeypatch.setattr(storage, "load_submission", lambda folder: (_ for _ in ()).throw(NewDecoderError("x\ny")))
    with pytest.raises(UploadError, match="could not be checked .*NewDecoderError: x y") as exc:
        store.store(folder)
    assert exc.value.status == 422 and list(store.objects.iterdir()) == []


def _plain_tar(top: str, extra: list[tuple[str, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:  # as GNU tar writes it
        tar.add(EXAMPLE, arcname=top)
        for name, data in extra:
            tar.addfile(_file(f"{top}/{name}", data)[0], io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar.gz padded with zeros", "plain tar named BZh...", "plain tar ending in a zip"])
def test_honest_archives_that_look_odd_are_unpacked(kind: str, store: Store):
    """Archives honest tools write, which the format-by-first-bytes check first refused or misread: macOS tar to a
    pipe pads the gzip stream with zeros to 10240 bytes; a plain tar starts with its first name ("BZh..." read as
    bzip2); a plain tar whose last member is a zip (.npz, .pt, .keras) has that zip's end record at its end."""
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("w.npy", b"x" * 100)
    if kind.startswith("tar.gz"):
        gz = _example_tar()
        data, top, want = gz + b"\0" * (-len(gz) % 10240), "onnx", set()
    elif kind.startswith("plain tar named"):
        data, top, want = _plain_tar("BZh_model"), "BZh_model", set()
    else:
        data, top, want = _plain_tar("onnx", [("extra.npz", npz.getvalue())]), "onnx", {"extra.npz"}
    folder = store.unpack(store.receive([data]))
    assert folder.name == top
    assert {p.name for p in folder.iterdir()} == {p.name for p in EXAMPLE.iterdir()} | want


def test_a_server_short_of_memory_is_not_the_teams_refusal(store: Store, monkeypatch):
    """A MemoryError while unpacking (every decoder here is bounded: the server itself is short) was the team's
    counted one-line refusal; it is the host's failure."""
    from skybench.server import storage

    monkeypatch.setattr(storage, "_untar", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        store.unpack(store.receive([_example_tar()]))
    assert [p for p in store.incoming.iterdir() if p.suffix == ".d"] == [], "its staging folder is removed"
