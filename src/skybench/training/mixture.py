"""Training on a mixture of releases: a track's own release plus others of the same instrument (its realistic
variants: ``lens-space-realsrc``, injected arcs), each read with the standard reader from its public train or val
split only.

    --release releases/lens-space --also releases/lens-space-realsrc:3 --also releases/lens-space-injected

A part's weight ``w`` (default 1) takes ``floor(w)`` copies of its split plus a seeded random subset of the rest
(``w = 0.5``: half of its cut-outs; ``w = 3``: every cut-out three times, for a small variant beside a big
release). The parts are concatenated and shuffled with the seed, so the same command reads the same cut-outs in the
same order. Every part must have the instrument of the first (task, image shape, bands, pixel scale, units): a
model trained on 0.1"/px VIS cut-outs learns nothing useful from 0.2"/px KiDS ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INSTRUMENT_KEYS = ("task", "image_shape", "bands", "pixel_scale", "units")  # manifest keys that must agree


@dataclass(frozen=True)
class MixPart:
    """One release of a mixture and its weight (copies of its split; a fraction takes a seeded subset)."""

    release: Path
    weight: float = 1.0


def parse_part(text: str) -> MixPart:
    """``RELEASE`` or ``RELEASE:WEIGHT`` (a path that itself holds ``:`` keeps it when what follows is no
    number)."""
    path, sep, tail = text.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return MixPart(Path(text))
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"--also {text!r}: the weight must be a positive number, got {tail!r}")
        return MixPart(Path(path), weight)
    return MixPart(Path(text))


def instrument(release: str | Path) -> dict[str, Any]:
    """What a model's input depends on, from the release's manifest (:data:`INSTRUMENT_KEYS`)."""
    from skybench.release import read_manifest

    manifest = read_manifest(Path(release))
    return {k: manifest.get(k) for k in INSTRUMENT_KEYS}


def check_instruments(releases: Sequence[str | Path]) -> None:
    """Raise ValueError, naming each difference, unless every release has the first one's instrument."""
    first = instrument(releases[0])
    for other in releases[1:]:
        inst = instrument(other)
        diff = [f"{k} {inst[k]!r} (not {first[k]!r})" for k in INSTRUMENT_KEYS if inst[k] != first[k]]
        if diff:
            raise ValueError(f"cannot mix {other} into {releases[0]}: a different instrument: {', '.join(diff)}; "
                             "mix only releases of the same instrument (e.g. lens-space with lens-space-realsrc)")


def mixture_plan(sizes: Sequence[int], weights: Sequence[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(part index, row in that part) of every cut-out of the mixture, in training order: ``floor(w)`` copies of
    each part's rows plus a seeded subset of ``round(frac(w) * n)`` rows, all shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    parts, rows = [], []
    for i, (n, w) in enumerate(zip(sizes, weights, strict=True)):
        whole, frac = divmod(float(w), 1.0)
        extra = np.sort(rng.choice(n, round(frac * n), replace=False))
        r = np.concatenate([np.tile(np.arange(n), int(whole)), extra]).astype(np.int64)
        parts.append(np.full(len(r), i, np.int64))
        rows.append(r)
    part, row = np.concatenate(parts), np.concatenate(rows)
    order = rng.permutation(len(part))
    return part[order], row[order]


def load_mixture(parts: Sequence[MixPart], split: str, max_n: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, bands, H, W), labels int64 (N,)) of the mixed public ``split`` (train or val) of
    ``parts``, in the seeded order of :func:`mixture_plan`; ``max_n``: its first ``max_n`` cut-outs."""
    from skybench.training import load_split

    check_instruments([p.release for p in parts])
    from skybench.release import read_manifest

    for p in parts:
        if not read_manifest(Path(p.release)).get("counts", {}).get(split):
            raise ValueError(f"cannot mix {p.release}: it has no {split} cut-outs (a real evaluation set has only a "
                             "hidden test split); mix releases with public train and val splits")
    data = [load_split(p.release, split) for p in parts]
    part, row = mixture_plan([len(y) for _, y in data], [p.weight for p in parts], seed)
    if max_n is not None:
        part, row = part[:max_n], row[:max_n]
    x = np.empty((len(part), *data[0][0].shape[1:]), np.float32)
    y = np.empty(len(part), np.int64)
    for i, (xi, yi) in enumerate(data):
        sel = part == i
        x[sel], y[sel] = xi[row[sel]], yi[row[sel]]
    return x, y
