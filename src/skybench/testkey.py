"""The organiser's test-set key: per-object seeds of hidden splits that public information cannot re-make.

Every simulated object is drawn from its own seed. Train and val seeds are public (a function of the release
seed, its split and its index: anyone can re-make those objects, which is fine). The seeds of the test split
are ``HMAC-SHA256(key, track domain / release seed / split / index)`` truncated to 63 bits, with a 32-byte random
key that exists only on the organiser's side, so neither the release seed nor the published train/val seeds give
the test objects, their noise or their labels. The domain is the track's name unless its task says that tracks
share their test objects (:func:`skybench.simulate.object_domain`): without it, test object ``i`` of every track made
with one key and seed would be drawn from the same seed (lens-space's and lens-ground's the same deflector and
source, 99% the same ``is_lens``), so one track's public test inputs would be a second look at another's.

* ``demo`` (the public profile) uses no secret: its test set is re-makeable by anyone, and the manifest says
  so (``test_key.kind: public``).
* Every other profile needs a private key file (created at the first ``skybench simulate`` if absent):
  ``--key-file PATH``, else ``$SKYBENCH_KEY_DIR/<profile>.key``, else ``<project root>/secrets/<profile>.key``.
  One key per profile, shared by the tracks; tracks that share a population (photoz-images and photoz-catalog)
  share a domain, so they keep the same test galaxies. The manifest records only an HMAC fingerprint of the key.
* A real set folded into a release's test stream is imported under the same key (:func:`real_set_seed`, domain
  ``real:<track>``): under a private key its noise, offsets and flux draws cannot be rebuilt from the public data,
  code and seed, so a team cannot find the real objects (and their labels) in the stream by rebuilding them.

Keep the key outside the release, ``src/`` and the Python installation: the sandbox binds those, not the
rest of the host, so a model cannot read it."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from skybench.tracks import project_root

KEY_BYTES = 32
PUBLIC_PROFILES = frozenset({"demo"})  # profiles whose test set may be re-made from public information
HIDDEN_SPLITS = frozenset({"test"})  # splits whose seeds are keyed (their labels are answers)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
KEY_DIR_ENV = "SKYBENCH_KEY_DIR"
_FINGERPRINT_MSG = b"skybench test-set key fingerprint/1"
_SEED_MSG = b"skybench object seed/2"  # /2: with the track's domain
_REAL_MSG = b"skybench real-set seed/1"


class KeyFileError(ValueError):
    """A test-set key is missing, unreadable, weak or not allowed for the profile."""


def public_object_seed(seed: int, split: str, index: int) -> int:
    """The public seed of one object: a function of the release seed, its split and its index."""
    ss = np.random.SeedSequence([seed, SPLIT_CODES[split], index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))  # fits in int64 for Parquet


@dataclass(frozen=True)
class ReleaseKey:
    """The test-set secret of a release: ``public`` (none: demo) or ``private`` (32 random bytes)."""

    kind: Literal["public", "private"]
    secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.kind == "private") != (self.secret is not None):
            raise ValueError("a private ReleaseKey needs its secret bytes, a public one has none")

    @classmethod
    def public(cls) -> ReleaseKey:
        return cls("public")

    @property
    def fingerprint(self) -> str | None:
        """An HMAC of a fixed string under the key: names the key without revealing it."""
        if self.secret is None:
            return None
        return hmac.new(self.secret, _FINGERPRINT_MSG, hashlib.sha256).hexdigest()[:16]

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest says about the key (never the key)."""
        if self.secret is None:
            return {"kind": "public", "object_seeds": "public for every split: numpy SeedSequence([seed, split, "
                                                      "index]); anyone can re-make the test set"}
        return {"kind": "private", "fingerprint": self.fingerprint,
                "object_seeds": "train/val: numpy SeedSequence([seed, split, index]); test: HMAC-SHA256(key, "
                                "domain/seed/split/index), first 63 bits, the domain the track's own (shared by "
                                "tracks of one population); the key is kept by the organiser"}

    def real_set_entry(self, domain: str) -> dict[str, Any]:
        """What a real set's manifest says about the key it was imported under (:func:`real_set_seed`)."""
        if self.secret is None:
            return {"kind": "public", "domain": domain, "object_seeds": "numpy default_rng([seed, stream, index]) "
                    "with the public seed: anyone can rebuild this real set from the public code and data"}
        return {"kind": "private", "fingerprint": self.fingerprint, "domain": domain,
                "object_seeds": "numpy default_rng([HMAC-SHA256(key, domain/seed) first 63 bits, stream, index]); "
                                "the key is kept by the organiser"}

    def describe(self) -> str:
        """The key in a message: ``public`` or ``private (fingerprint ...)``."""
        return "public" if self.secret is None else f"private (fingerprint {self.fingerprint})"


@dataclass(frozen=True)
class ObjectSeeds:
    """The seed of every object of a release: ``seeds(split, index)``. Picklable (sent to worker processes).
    ``domain``: the track's test-object domain (module docstring), part of the keyed seeds only."""

    seed: int
    key: ReleaseKey = field(default_factory=ReleaseKey.public)
    domain: str = ""

    def __call__(self, split: str, index: int) -> int:
        if split not in SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
        if self.key.secret is None or split not in HIDDEN_SPLITS:
            return public_object_seed(self.seed, split, index)
        msg = b"\0".join([_SEED_MSG, self.domain.encode(), str(int(self.seed)).encode(), split.encode(),
                          str(int(index)).encode()])
        return int.from_bytes(hmac.new(self.key.secret, msg, hashlib.sha256).digest()[:8], "big") >> 1

    def many(self, split: str, start: int, stop: int) -> list[int]:
        return [self(split, i) for i in range(start, stop)]


def real_set_seed(key: ReleaseKey, domain: str, seed: int) -> int:
    """The seed every random draw of a real-set import comes from (its added noise, centre offsets, flux draws, PSF
    planes: ``default_rng([this, stream, index])``). A public key gives ``seed`` itself (the demo's real sets are
    rebuildable, as its test sets are); a private one ``HMAC-SHA256(key, domain/seed)``, first 63 bits, so the real
    objects folded into a private-key release cannot be rebuilt from the public code, data and seed. ``domain``:
    ``real:<track>`` of the import."""
    if key.secret is None:
        return int(seed)
    msg = b"\0".join([_REAL_MSG, domain.encode(), str(int(seed)).encode()])
    return int.from_bytes(hmac.new(key.secret, msg, hashlib.sha256).digest()[:8], "big") >> 1


def as_object_seeds(seeds: ObjectSeeds | int) -> ObjectSeeds:
    """An int is a release seed with the public derivation (the demo profile; tests)."""
    return seeds if isinstance(seeds, ObjectSeeds) else ObjectSeeds(int(seeds))


def default_key_path(profile: str) -> Path:
    """``$SKYBENCH_KEY_DIR/<profile>.key``, else ``<project root>/secrets/<profile>.key``."""
    folder = os.environ.get(KEY_DIR_ENV)
    return (Path(folder) if folder else project_root() / "secrets") / f"{profile}.key"


def read_key(path: Path) -> ReleaseKey:
    """Load a key file: 64 hex digits (32 bytes), readable by its owner only."""
    path = Path(path)
    fix = f"use the key file this release was made with, or remove {path} to create a new one"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"test-set key {path}: not a regular file; {fix}")
        if st.st_mode & 0o077:
            raise KeyFileError(f"test-set key {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read "
                               f"it; run `chmod 600 {path}`")
        with open(path, "rb") as f:
            text = f.read(4096).decode("ascii").strip()
        secret = bytes.fromhex(text)
    except KeyFileError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"test-set key {path}: not {2 * KEY_BYTES} hex digits ({exc}); {fix}") from None
    except OSError as exc:
        raise KeyFileError(f"test-set key {path}: cannot read it ({exc.strerror}); {fix}") from None
    if len(secret) < KEY_BYTES:
        raise KeyFileError(f"test-set key {path}: {len(secret)} bytes, too short (need {KEY_BYTES} random bytes); "
                           f"{fix}")
    if len(set(secret)) < KEY_BYTES // 4:  # 32 random bytes have ~30 distinct values; this one was typed
        raise KeyFileError(f"test-set key {path}: not random (only {len(set(secret))} distinct bytes); {fix}")
    return ReleaseKey("private", secret)


def create_key(path: Path) -> ReleaseKey:
    """Write a new random key to ``path`` (mode 0600; a new folder gets 0700). Never replaces a key: if
    ``path`` appears meanwhile (another process), that one is read instead."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails rather than replace an existing key
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_key(path)


def _check_location(path: Path, forbidden: list[Path]) -> None:
    resolved = path.resolve()
    for folder in forbidden:
        folder = folder.resolve()
        if resolved == folder or folder in resolved.parents:
            raise KeyFileError(f"test-set key {path} is inside {folder}, which the sandbox can read or the "
                               "release writer replaces; keep it elsewhere (default: secrets/ in the project)")


def release_key(profile: str, *, key_file: Path | str | None = None, create: bool = True,
                out: Path | None = None) -> tuple[ReleaseKey, bool]:
    """The key of a release: public for a public profile without ``key_file``, else the private key file
    (created if absent and ``create``). Returns (key, whether it was just created)."""
    if key_file is None and profile in PUBLIC_PROFILES:
        return ReleaseKey.public(), False
    path = Path(key_file) if key_file is not None else default_key_path(profile)
    # What the sandbox binds (the package, the Python installation, /usr) or the release writer replaces.
    _check_location(path, [Path(__file__).parent, Path(sys.prefix), Path(sys.base_prefix), Path("/usr"),
                           *([Path(out)] if out is not None else [])])
    if path.exists() or path.is_symlink() or not create:
        if not path.exists() and not path.is_symlink():
            raise KeyFileError(f"profile {profile!r} needs a private test-set key and {path} does not exist; "
                               "pass the key file the release was made with (--key-file), or allow creating "
                               "a new one")
        return read_key(path), False
    try:
        return create_key(path), True
    except OSError as exc:
        raise KeyFileError(f"test-set key {path}: cannot create it ({exc}); give a writable --key-file PATH or "
                           f"set ${KEY_DIR_ENV}") from None


def profile_key(profile: str, *, key_file: Path | str | None = None, create: bool = True,
                out: Path | None = None) -> ReleaseKey:
    """The key of ``profile`` (:func:`release_key`), refused if public at a private profile; says so on stderr when
    it was just created. What ``skybench simulate`` and the real-set imports use."""
    key, created = release_key(profile, key_file=key_file, create=create, out=out)
    require_private(profile, key)
    if created:
        print(f"created a new test-set key {key_file or default_key_path(profile)} (fingerprint {key.fingerprint}); "
              "keep it private and back it up: this release can only be re-made with it", file=sys.stderr)
    return key


def require_private(profile: str, key: ReleaseKey) -> None:
    """Refuse a public key for a profile whose test set must stay hidden."""
    if profile not in PUBLIC_PROFILES and key.secret is None:
        raise KeyFileError(f"profile {profile!r} cannot use a public test-set key: anyone could re-make its test "
                           "labels; give a private key file (--key-file, or let `skybench simulate` create one)")


__all__ = ["KEY_BYTES", "KeyFileError", "ObjectSeeds", "PUBLIC_PROFILES", "ReleaseKey", "as_object_seeds",
           "create_key", "default_key_path", "profile_key", "public_object_seed", "read_key", "real_set_seed",
           "release_key", "require_private"]
