"""The scoring program: predictions and hidden labels in, metrics and plots out.

It never runs participant code (that is the sandboxed runner's job) and the runner never sees labels
(Codabench's split between ingestion and scoring)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from skybench.common import UndefinedMetricError
from skybench.release.reader import HiddenSplit
from skybench.tasks import get_task
from skybench.tracks import Track


def score(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit,
          out_dir: Path) -> dict[str, float]:
    """Score ``predictions`` (aligned with ``ids``) against the hidden test split ``hidden`` (labels and any hidden
    arrays); write plots and tables to ``out_dir``. Dispatches to the track's task (:mod:`skybench.tasks`).

    With ``evaluation.public_fraction`` set, the same scorer also runs on the public and on the private part
    of the test ids (:func:`part_mask`), adding ``public_<m>`` and ``private_<m>`` for every metric ``m``.

    Everything in ``out_dir`` is organiser-only except what :mod:`skybench.harness.visibility` lets participants see;
    the task's ``public_artifacts`` writes those that depend on labels from the public part only (the whole test
    set without a split)."""
    task = get_task(track.task)
    return _with_parts(track, ids, predictions, hidden, out_dir,
                       lambda i, p, out, part: task.score(track, i, p, hidden, out),
                       public=lambda i, p, out: task.public_artifacts(track, i, p, hidden, out))


Part = Literal["public", "private"] | None  # None: the whole test set


def _with_parts(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit, out_dir: Path,
                run: Callable[[np.ndarray, np.ndarray, Path | None, Part], dict[str, float]],
                public: Callable[[np.ndarray, np.ndarray, Path], None] | None = None) -> dict[str, float]:
    """``run(ids, predictions, out, None)`` on the whole test set, then, with public and private parts, on each
    part (``run(..., None, part)``: no files), adding ``public_<m>`` and ``private_<m>`` (none for a part where the
    metric is undefined, e.g. one class only); then ``public(ids, predictions, out)`` on the public part (the
    whole set without a split)."""
    metrics = run(ids, predictions, Path(out_dir), None)
    ids, pred = np.asarray(ids), np.asarray(predictions)
    public_part = part_mask(track, hidden, ids)
    if public_part is None:
        if public is not None:
            public(ids, pred, Path(out_dir))
        return metrics
    if public is not None and public_part.any():
        with contextlib.suppress(UndefinedMetricError):  # no curve of a part that lacks a class
            public(ids[public_part], pred[public_part], Path(out_dir))
    parts: tuple[tuple[Part, np.ndarray], ...] = (("public", public_part), ("private", ~public_part))
    for part, mask in parts:
        if mask.any():
            try:
                part_metrics = run(ids[mask], pred[mask], None, part)
            except UndefinedMetricError:  # e.g. one class only in a small part: that part has no metrics
                continue
            metrics |= {f"{part}_{k}": v for k, v in part_metrics.items()}
    return metrics


def part_mask(track: Track, hidden: HiddenSplit, ids: np.ndarray) -> np.ndarray | None:
    """True where an id of ``ids`` is in the public part of ``hidden``'s objects (:func:`public_mask` with the
    track's fraction and seed, per group of the task's ``split_groups``); None when the track has no split."""
    f = track.evaluation.public_fraction
    if f is None:
        return None
    groups = get_task(track.task).split_groups(track, hidden)
    return public_mask(np.asarray(ids), hidden.ids(), f, track.evaluation.split_seed, groups)


def public_mask(ids: np.ndarray, all_ids: np.ndarray, fraction: float, seed: int,
                groups: np.ndarray | None = None) -> np.ndarray:
    """True where an id of ``ids`` is in the public part: ``round(fraction * len(all_ids))`` of the test ids,
    drawn with ``seed`` from the sorted ids of the whole test set (so it depends on neither order nor subset).
    With ``groups`` (a label per id of ``all_ids``), ``round(fraction * n_g)`` of each group's ``n_g`` ids,
    drawn group after group (sorted labels) from one generator."""
    all_ids = np.asarray(all_ids)
    order = np.argsort(all_ids, kind="stable")
    universe = all_ids[order]
    rng = np.random.default_rng(seed)
    if groups is None:
        chosen = universe[rng.permutation(len(universe))[:int(round(fraction * len(universe)))]]
    else:
        labels = np.asarray(groups)[order]
        if len(labels) != len(universe):
            raise ValueError(f"{len(labels)} group labels for {len(universe)} test ids")
        members = [universe[labels == g] for g in np.unique(labels)]
        chosen = np.concatenate([m[rng.permutation(len(m))[:int(round(fraction * len(m)))]] for m in members])
    return np.isin(np.asarray(ids), chosen)


def score_real(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit, real_ids: np.ndarray,
               real_predictions: np.ndarray, real_hidden: HiddenSplit, out_dir: Path) -> dict[str, float]:
    """Metrics on the track's real set, predicted in the same sandboxed run.

    With public and private parts, the real set is split too (:func:`part_mask` of its own ids): ``public_<m>``
    is the metric on the public part of the real set with only the public part of the simulated test set given
    to the scorer (e.g. the threshold of real-lens recall comes from it), ``private_<m>`` the same for the private
    parts. So the open phase's board shows nothing computed from a private real object."""
    task = get_task(track.task)
    real_ids, real_pred = np.asarray(real_ids), np.asarray(real_predictions)
    real_public = part_mask(track, real_hidden, real_ids)

    def run(i: np.ndarray, p: np.ndarray, out: Path | None, part: Part) -> dict[str, float]:
        sel = np.ones(len(real_ids), dtype=bool) if part is None or real_public is None else \
            real_public if part == "public" else ~real_public
        if not sel.any():
            return {}
        return task.score_real(track, i, p, hidden, real_ids[sel], real_pred[sel], real_hidden, out)

    return _with_parts(track, ids, predictions, hidden, out_dir, run)
