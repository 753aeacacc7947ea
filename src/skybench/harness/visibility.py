"""What a participant may see of an evaluation, and what only the organiser sees: the one place to audit.

The scorers write every file of an evaluation (per-object tables, predictions, the full ROC curve, plots with
the truth) into the organiser's folder, ``results/<track>/private/<record>/`` (:func:`private_dir`). The
participant's record folder, ``results/<track>/evaluations/<record>/``, and the participant MLflow experiment
``skybench-<track>`` get only:

* the metrics :func:`participant_view` keeps, rounded to :data:`SHOWN_DECIMALS` while the phase is ``open`` (each
  digit shown answers a query: Whitehill 2017 reads labels off a score's digits): with a public-private split, the
  ``public_*`` metrics while the phase is ``open`` and also the ``private_*`` ones once it is ``closed`` (never a
  whole-set metric); without a split, the whole-set metrics; per-stratum metrics only of bins with at least
  :data:`MIN_STRATUM_OBJECTS` objects in each population counted there (a mean or median over fewer names single
  objects' values), and more bins left out where the part's own value less the bins shown would give the mean over
  fewer;
* the files :func:`participant_artifacts` names for the task: aggregate tables and plots that hold no
  per-object truth (the lens ROC sampled at fixed FPRs on the public part, the enhance gallery of the
  submission's own outputs without the truth, of the first objects of the published stream: a gallery of the real
  set's objects would name them).

The organiser's MLflow experiment (``skybench-<track>-organiser``, its own artifact location) holds the full
record. Both the disk copy (:func:`write_participant_view`) and MLflow publication (``log.publish_record``)
go through these functions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skybench.common import stratum_key, stratum_labels
from skybench.harness.record import RECORD
from skybench.tracks import Track

__all__ = ["MIN_STRATUM_OBJECTS", "SHOWN_DECIMALS", "participant_artifacts", "participant_view", "private_dir",
           "private_root", "shown_value", "without_small_strata", "write_participant_view"]

# Small-cell suppression of per-stratum metrics shown to participants; the organiser's record keeps them all.
MIN_STRATUM_OBJECTS = 10
# Decimals of a metric shown while a track is open: what the leaderboard prints; the organiser's record keeps all.
SHOWN_DECIMALS = 4

PRIVATE = "private"
# Participant-visible files per task. Nothing else from the organiser's folder is ever copied or logged.
_ARTIFACTS = {
    "lens": ("roc_public.csv", "roc_public.png"),
    "photoz": (),  # PIT and z_phot-vs-z_spec plots are built from per-object truth: organiser only
    "enhance": ("outputs.png",),  # the first objects of the published stream: never a gallery per set
    "generate": ("summary_stats.png",),
    # completeness and purity at fixed FP rates on the public part; the team's own candidates' scores and counts
    "detect": ("completeness_public.csv", "completeness_public.png", "candidates_public.png"),
}


def participant_view(track: Track, metrics: Mapping[str, float], decimals: int = SHOWN_DECIMALS
                     ) -> dict[str, float]:
    """The metrics a participant may see now (see the module docstring); ``decimals``: while open, a challenge
    server's ``public_score_digits``."""
    if track.evaluation.public_fraction is None:
        shown = dict(metrics)
    else:
        parts = ("public_",) if track.evaluation.phase == "open" else ("public_", "private_")
        shown = {k: v for k, v in metrics.items() if k.startswith(parts)}
    return {k: shown_value(track, v, decimals) for k, v in _without_small_strata(track, shown).items()}


def shown_value(track: Track, value: Any, decimals: int = SHOWN_DECIMALS) -> Any:
    """``value`` as published while ``track`` is open: rounded to ``decimals`` (counts, non-finite values and
    anything not a number, a stored null say, as they are); once closed, the final scores in full."""
    if (track.evaluation.phase != "open" or isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or float(value).is_integer()):
        return value
    return round(float(value), decimals)


def without_small_strata(track: Track, metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` less the stratum bins too small to show (:data:`MIN_STRATUM_OBJECTS`), whatever the part: what
    any published view (a record, the leaderboard) may show of the per-stratum metrics."""
    return _without_small_strata(track, dict(metrics))


def _without_small_strata(track: Track, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` less every key of a stratum bin whose object counts (its ``n_*`` keys: ``n_objects``,
    ``n_lens``, ``n_nonlens``...) include one between 1 and :data:`MIN_STRATUM_OBJECTS` - 1, or that has none; and
    less more bins of that stratum where the part's own count (``<part>n_lens``...) minus the bins shown would
    leave 1 to :data:`MIN_STRATUM_OBJECTS` - 1 objects: a mean over the part less the means over the bins shown is
    the mean over the rest (complementary suppression)."""
    drop: set[str] = set()
    for s in track.strata:
        for part in (p + r for p in ("", "public_", "private_") for r in ("", "real_")):  # a real set's too
            bins: dict[str, tuple[list[str], dict[str, float]]] = {}
            for label in stratum_labels(s.edges, s.values):
                prefix = part + stratum_key(s.column, label, "")
                keys = [k for k in metrics if k.startswith(prefix)]
                bins[label] = (keys, {k[len(prefix):]: metrics[k] for k in keys if k[len(prefix):].startswith("n_")})
            hidden = {label for label, (_, counts) in bins.items()
                      if not counts or not all(_count(c) == 0 or _count(c) >= MIN_STRATUM_OBJECTS
                                               for c in counts.values())}  # NaN or None: unknown, hidden
            for label in _complement(part, bins, hidden, metrics):
                drop.update(bins[label][0])
    return {k: v for k, v in metrics.items() if k not in drop}


def _count(value: object) -> float:
    """A count as a float (NaN when it is none)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _complement(part: str, bins: Mapping[str, tuple[list[str], Mapping[str, float]]], hidden: set[str],
                metrics: Mapping[str, float]) -> set[str]:
    """``hidden`` and the fewest more bins (the smallest first) such that, for every count ``n_*`` of the bins, the
    objects of the part in no bin shown (the part's count ``<part>n_*`` less those shown; without it, those of the
    bins hidden) are none, at least :data:`MIN_STRATUM_OBJECTS`, or the whole part (then it is the part's own
    value). It needs exclusive bins (an object in two bins would be counted twice: the contaminant stratum puts an
    object with several types in ``several``); were bins to overlap, the negative difference is held to the rule
    too."""
    hidden = set(hidden)
    names = sorted({n for _, counts in bins.values() for n in counts})
    while True:
        shown = [b for b in bins if b not in hidden]
        grow = None
        for n in names:
            have = [b for b in shown if _count(bins[b][1].get(n, 0)) > 0]
            total = _count(metrics.get(part + n))
            rest = total - sum(_count(bins[b][1][n]) for b in have) if math.isfinite(total) else \
                sum(c for b in hidden if math.isfinite(c := _count(bins[b][1].get(n, 0))))
            if have and 0 < abs(rest) < MIN_STRATUM_OBJECTS:
                grow = min(have, key=lambda b: _count(bins[b][1][n]))
                break
        if grow is None:
            return hidden
        hidden.add(grow)


def participant_artifacts(track: Track) -> tuple[str, ...]:
    """Names of the files a participant may see in a record of ``track`` (the record and metrics included)."""
    return (RECORD, "metrics.json", *_ARTIFACTS.get(track.task, ()))


def private_root(out: Path) -> Path:
    """The organiser-only folder of the records in ``out``: ``results/<track>/private`` for the usual
    ``results/<track>/evaluations``, else ``<out>-private`` (so two record folders never share one)."""
    out = Path(out)
    return out.parent / (PRIVATE if out.name == "evaluations" else f"{out.name}-{PRIVATE}")


def private_dir(rdir: Path) -> Path:
    """The organiser-only folder of the record folder ``rdir``: ``<private_root(out)>/<record>``."""
    rdir = Path(rdir)
    return private_root(rdir.parent) / rdir.name


def make_private_root(out: Path) -> Path:
    """Create :func:`private_root` of ``out``, readable by its owner only."""
    root = private_root(out)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # the file-system gate; MLflow's permissions gate the organiser experiment
    return root


def make_private_dir(rdir: Path) -> Path:
    """Create :func:`private_dir` of ``rdir`` (and its owner-only ``private/`` root)."""
    make_private_root(Path(rdir).parent)
    priv = private_dir(rdir)
    priv.mkdir(exist_ok=True)
    return priv


def write_participant_view(track: Track, private: Path, rdir: Path, metrics: Mapping[str, float]) -> None:
    """Fill the record folder ``rdir`` with the participant view of the organiser folder ``private``: the
    allowed files, and ``metrics.json`` of :func:`participant_view`; any other file in ``rdir`` is removed
    (e.g. a per-object table left by an older skybench)."""
    rdir.mkdir(parents=True, exist_ok=True)
    allowed = participant_artifacts(track)
    for p in rdir.iterdir():
        if p.name not in allowed and not p.name.startswith("."):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for name in _ARTIFACTS.get(track.task, ()):
        if (Path(private) / name).is_file():
            shutil.copyfile(Path(private) / name, rdir / name)
    (rdir / "metrics.json").write_text(json.dumps(participant_view(track, metrics), indent=2, sort_keys=True)
                                       + "\n")
