"""Tracks that share a scored object set, and so its public-private split: they must go through phases together
(``server.config`` for a challenge server, :func:`check_linked_phases` for the git flow)."""

from __future__ import annotations

import functools
from pathlib import Path

from skybench.simulate import object_domain
from skybench.tracks import Track, benchmarks_dir, list_tracks, load_track


def twin_groups(tracks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Groups of two or more of ``tracks`` that share a scored object set, and so its public-private split: their
    test objects (one ``simulate.object_domain``: the photo-z tracks, the same galaxies as images and as a
    catalogue) or their real set (``evaluation.real_set``: a lens track and its ``realsrc`` twin). Sharing is
    transitive: two tracks joined through a third are in one group."""
    group_of: dict[str, list[str]] = {}  # object set -> the group (shared list) of the tracks scoring it
    groups: list[list[str]] = []
    for name in tracks:
        sets = [f"domain {name}"]
        try:
            track = load_track(name)
        except (ValueError, KeyError, OSError):  # not loadable: its own objects
            track = None
        if track is not None:
            try:
                sets = [f"domain {object_domain(track)}"]
            except (ValueError, KeyError, OSError):  # not simulated (a real catalogue): its own objects
                pass
            if track.evaluation.real_set:
                sets.append(f"real {Path(track.evaluation.real_set).as_posix().rstrip('/')}")
        group = [name]
        for key in sets:
            other = group_of.get(key)
            if other is not None and other is not group:
                groups.remove(other)
                group.extend(t for t in other if t not in group)
                for k, g in group_of.items():
                    if g is other:
                        group_of[k] = group
        groups.append(group)
        for key in sets:
            group_of[key] = group
    return [tuple(sorted(g, key=tracks.index)) for g in groups if len(g) > 1]


def check_linked_phases(track: Track) -> None:
    """Refuse to evaluate or rank ``track`` when the git flow's phases (``evaluation.phase``, per track YAML) would
    show one track's private scores while submissions scored on those objects still come in: a track sharing its test
    objects or real set (:func:`twin_groups`) in another phase (a closed one shows every submission's
    private scores, the open one's labels), or ``track`` closed while a track whose submissions it also evaluates
    (``also_from``) is open (a closed ``lens-space-injected`` would show the private scores of every
    ``lens-space`` submission still coming in)."""
    names = list_tracks()
    if track.name not in names:
        return
    phase = track.evaluation.phase
    if _all_in_phase([*names, *track.evaluation.also_from], phase):  # nothing to refuse: spare twin_groups, which
        return  # imports every task's simulator (seconds for each `skybench evaluate` or `leaderboard`)
    twins = {t for g in twin_groups(tuple(names)) if track.name in g for t in g} - {track.name}
    for name in sorted(twins | set(track.evaluation.also_from)):
        other = load_track(name).evaluation.phase
        if other != phase and (name in twins or other == "open"):
            raise ValueError(f"track {track.name} is in phase {phase} but {name}, which shares its test objects "
                             f"or real set or whose submissions it evaluates, is {other}: set `evaluation.phase` "
                             "alike in both YAMLs (a closed one shows private scores while submissions scored on "
                             "the same objects still come in)")


def _all_in_phase(names: list[str], phase: str) -> bool:
    """Every track of ``names`` loads and is in ``phase``."""
    try:
        return all(_phase(p, p.stat().st_mtime_ns, p.stat().st_size) == phase
                   for p in (benchmarks_dir() / f"{name}.yaml" for name in names))
    except (ValueError, KeyError, OSError):  # one does not load: the full check says what to do
        return False


@functools.cache
def _phase(path: Path, mtime_ns: int, size: int) -> str:
    """The phase of the track YAML ``path``, read once per version of the file (an evaluation checks every track)."""
    return load_track(path).evaluation.phase
