"""Versioned dataset releases: the only code that knows how a release lies on disk.

* :mod:`~skybench.release.layout`: the folder and file names (nothing else spells them);
* :mod:`~skybench.release.writer`: :func:`write_release`, atomic, hashed, streamed in chunks;
* :mod:`~skybench.release.reader`: :func:`open_release` / :class:`Release` for teams and trainers (arrays,
  metadata, :meth:`Release.public_batches`) and :class:`HiddenSplit` for the scorers;
* :mod:`~skybench.release.verify`: the manifest, :func:`verify_release`, :func:`release_digest`;
* :mod:`~skybench.release.shards`: the numpy-only shard reading the sandboxed runner uses;
* :mod:`~skybench.release.mixing`: the real set folded into the test split.

The names below are loaded on first use, so that ``import skybench.release.layout`` (in the sandbox) does not
import pandas, pyarrow or rich.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skybench.release.reader import HiddenSplit, Release, ShardedArray, open_release
    from skybench.release.verify import ReleaseError, read_manifest, release_digest, sha256_file, verify_release
    from skybench.release.writer import write_release

__all__ = ["HiddenSplit", "Release", "ReleaseError", "ShardedArray", "open_release", "read_manifest",
           "release_digest", "sha256_file", "verify_release", "write_release"]

_HOME = {"HiddenSplit": "reader", "Release": "reader", "ShardedArray": "reader", "open_release": "reader",
         "ReleaseError": "verify", "read_manifest": "verify", "release_digest": "verify", "sha256_file": "verify",
         "verify_release": "verify", "write_release": "writer"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'skybench.release' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"skybench.release.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
