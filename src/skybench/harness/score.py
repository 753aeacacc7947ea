"""The scoring program: predictions and hidden labels in, metrics and plots out.

It never runs participant code (that is the sandboxed runner's job) and the runner never sees labels
(Codabench's split between ingestion and scoring)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from skybench.release.reader import HiddenSplit
from skybench.tasks import get_task
from skybench.tracks import Track


def score(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit,
          out_dir: Path) -> dict[str, float]:
    """Score ``predictions`` (aligned with ``ids``) against the hidden test split ``hidden`` (labels and any hidden
    arrays); write plots and tables to ``out_dir``. Dispatches to the track's task (:mod:`skybench.tasks`).

    With ``evaluation.public_fraction`` set, the same scorer also runs on the public and on the private part
    of the test ids (:func:`public_mask`), adding ``public_<m>`` and ``private_<m>`` for every metric ``m``.

    Everything in ``out_dir`` is organiser-only except what :mod:`skybench.harness.visibility` lets participants see;
    the task's ``public_artifacts`` writes those that depend on labels from the public part only (the whole test
    set without a split)."""
    task = get_task(track.task)
    return _with_parts(track, ids, predictions, hidden, out_dir,
                       lambda i, p, out: task.score(track, i, p, hidden, out),
                       public=lambda i, p, out: task.public_artifacts(track, i, p, hidden, out))


def _with_parts(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit, out_dir: Path,
                run: Callable[[np.ndarray, np.ndarray, Path | None], dict[str, float]],
                public: Callable[[np.ndarray, np.ndarray, Path], None] | None = None) -> dict[str, float]:
    """``run(ids, predictions, out)`` on the whole test set, then, with public and private parts, on each part
    (with ``out`` None: no files), adding ``public_<m>`` and ``private_<m>``; then ``public(ids, predictions, out)``
    on the public part (the whole set without a split)."""
    metrics = run(ids, predictions, Path(out_dir))
    pred = np.asarray(predictions)
    if track.evaluation.public_fraction is None:
        if public is not None:
            public(np.asarray(ids), pred, Path(out_dir))
        return metrics
    all_ids = hidden.ids()
    public_part = public_mask(np.asarray(ids), all_ids, track.evaluation.public_fraction,
                              track.evaluation.split_seed)
    if public is not None and public_part.any():
        public(np.asarray(ids)[public_part], pred[public_part], Path(out_dir))
    for part, mask in (("public", public_part), ("private", ~public_part)):
        if mask.any():
            part_metrics = run(np.asarray(ids)[mask], pred[mask], None)
            metrics |= {f"{part}_{k}": v for k, v in part_metrics.items()}
    return metrics


def public_mask(ids: np.ndarray, all_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True where an id of ``ids`` is in the public part: ``round(fraction * len(all_ids))`` of the test ids,
    drawn with ``seed`` from the sorted ids of the whole test set (so it depends on neither order nor subset)."""
    universe = np.sort(np.asarray(all_ids))
    k = int(round(fraction * len(universe)))
    chosen = universe[np.random.default_rng(seed).permutation(len(universe))[:k]]
    return np.isin(np.asarray(ids), chosen)


def score_real(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: HiddenSplit, real_ids: np.ndarray,
               real_predictions: np.ndarray, real_hidden: HiddenSplit, out_dir: Path) -> dict[str, float]:
    """Metrics on the track's real set (``evaluation.real_set``), predicted in the same sandboxed run.

    With public and private parts, also ``public_<m>`` / ``private_<m>``: the same metrics with only that part of
    the simulated test set given to the scorer (e.g. the threshold of real-lens recall comes from that part)."""
    task = get_task(track.task)
    return _with_parts(track, ids, predictions, hidden, out_dir,
                       lambda i, p, out: task.score_real(track, i, p, hidden, real_ids, real_predictions,
                                                         real_hidden, out))
