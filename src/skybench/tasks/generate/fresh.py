"""Latents drawn for each evaluation, and the re-run check: the generated set must be an independent draw.

A generate track scores a *set* of maps against the truth's statistics, so a set more regular than an independent
draw of the truth process scores better than the process itself: a team that knows the latents in advance can
ship maps picked from a large draw of the public physics so that their mean and spread match (0.42-0.47 per dof,
where the process scores about 1), and a generator that keeps state across its inputs can do the same on the fly.
The two defences (both needed):

* :func:`fresh_inputs`: the latents a submission gets are drawn for it, from a secret of the release (the hidden
  test metadata's digest, which the published manifest leaves out) and the submission's bytes, so they cannot be
  known before the submission is fixed; the public test latents are for trying a generator out. The ids, their
  order and a conditional track's ``params`` are the published ones; scoring never pairs a map with its latent.
* :func:`check_rerun`: every latent again, split between :data:`RERUN_PARTS` fresh sandboxes by a keyed
  partition, each part in a keyed order and another batch size: each map must come back the same, a function of
  its own latent alone. A set-level trick needs state or foreknowledge, and a map that depends on the others (a
  few maps of the set chosen so that its mean and spread match, 12-25% below the process) changes when most of
  them are in the other part; re-running only some rows let such a generator pass with a fair chance.

The ``predictions`` format (a fixed file of maps) is refused on a maps track for the same reason
(:func:`skybench.harness.submission.sandboxed_predict`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from skybench.common import robust_sigma
from skybench.release import layout
from skybench.release.shards import input_arrays, shards
from skybench.tasks.generate.config import GenerateTrack

RERUN_PARTS = 2  # sandboxes of the re-run, each given a part of the set: none sees the whole set again
RERUN_BATCH = 7  # the re-run's batch size (ragged, unlike any track's)
# each map of the re-run within this of the first run's (per object: GPU kernels chosen by batch size differ by
# float rounding, ~1e-6 of the map's spread)
RERUN_RTOL = 1e-3


def secret_of(manifest: dict) -> bytes:
    """What the fresh latents are keyed by: the digests of the hidden test files (a published manifest lacks them)."""
    hidden = f"{layout.HIDDEN}/test/"
    digests = sorted(e["sha256"] for rel, e in manifest["files"].items() if rel.startswith(hidden))
    if not digests:
        raise ValueError("a generate release without hidden test files: fresh latents need the organiser's release")
    return hashlib.sha256("".join(digests).encode()).digest()


def latents_for(track: GenerateTrack, secret: bytes, submission_sha256: str, ids: np.ndarray) -> np.ndarray:
    """(N, dim) latents of ``ids`` for one submission: one generator per object, keyed by ``secret``, the
    submission's digest and the object's id (so a subset in any order gets the same rows)."""
    out = np.empty((len(ids), track.population.latent.dim), np.float32)
    for i, obj in enumerate(ids):
        digest = hashlib.blake2b(f"{submission_sha256}/{obj}".encode(), key=secret, digest_size=32,
                                 person=b"skybench-fresh").digest()
        out[i] = track.population.latent.draw(1, np.random.default_rng(np.frombuffer(digest, np.uint32)))[0]
    return out


def fresh_inputs(track: GenerateTrack, test_dir: Path, secret: bytes, submission_sha256: str, out: Path,
                 rows: np.ndarray | None = None) -> Path:
    """An input folder ``out`` like the public test folder ``test_dir``, with fresh latents (:func:`latents_for`);
    ``rows``: only those rows of it, in that order."""
    index = pd.read_parquet(layout.index_path(test_dir))
    take = np.arange(len(index)) if rows is None else np.asarray(rows)
    out.mkdir(parents=True)
    index.iloc[take].reset_index(drop=True).to_parquet(layout.index_path(out), index=False)
    for name in input_arrays(test_dir):
        if name == "latents":
            array = latents_for(track, secret, submission_sha256, index["id"].to_numpy()[take])
        else:  # params: the published ones
            array = np.concatenate([np.load(s.path, mmap_mode="r") for s in shards(test_dir, name)])[take]
        np.save(out / layout.shard_name(name, 0), np.ascontiguousarray(array))
    for path in (out, *out.iterdir()):  # the sandbox reads them as an unprivileged uid
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def prepare(track: GenerateTrack, test_dir: Path, manifest: dict, submission_sha256: str,
            out: Path) -> tuple[Path, tuple[Path, ...], int]:
    """(every test object with fresh latents, the re-run's folders: every object again in :func:`rerun_parts`, the
    re-run's batch size): the input folders of one submission, in ``out``."""
    secret = secret_of(manifest)
    first = fresh_inputs(track, test_dir, secret, submission_sha256, out / "inputs")
    parts = rerun_parts(secret, submission_sha256, len(pd.read_parquet(layout.index_path(first))))
    return first, tuple(fresh_inputs(track, test_dir, secret, submission_sha256, out / f"rerun{k}", rows)
                        for k, rows in enumerate(parts)), RERUN_BATCH


def rerun_parts(secret: bytes, submission_sha256: str, n: int) -> list[np.ndarray]:
    """Every row of ``range(n)`` once, in :data:`RERUN_PARTS` parts of a keyed random partition, each part's rows in
    a keyed random order (empty parts left out)."""
    seed = hashlib.sha256(secret + submission_sha256.encode() + b"rerun").digest()
    order = np.random.default_rng(np.frombuffer(seed, np.uint32)).permutation(n)
    return [part for part in np.array_split(order, RERUN_PARTS) if len(part)]


def check_rerun(first: np.ndarray, again: np.ndarray) -> str:
    """"" when the re-run's maps ``again`` are the first run's rows ``first`` (same order), else why not."""
    if first.shape != again.shape:
        return f"the re-run returned shape {again.shape}, the first run {first.shape}"
    a, b = (np.asarray(x, dtype=np.float64).reshape(len(first), -1) for x in (first, again))
    # each pixel within RERUN_RTOL of the map's robust spread plus its own size: one huge pixel (2e19) set the
    # spread (std) so high, or made it inf in float32, that any maps passed
    scale = np.maximum(robust_sigma(a, axis=1), np.finfo(np.float32).tiny)[:, None] + np.abs(a)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = (np.abs(b - a) / scale).max(axis=1)
    diff[~np.isfinite(diff)] = np.inf  # NaN (inf - inf) is a difference, never a pass
    worst = int(np.argmax(diff)) if diff.size else 0
    if diff.size and diff[worst] > RERUN_RTOL:
        return (f"{int((diff > RERUN_RTOL).sum())} of {len(first)} maps came back different when their latents "
                f"were given again in another order and batch size (a relative difference up to {diff[worst]:.3g}): "
                "each map must be a function of its own latent alone (no state across inputs)")
    return ""
