"""Which leaderboard differences are real: rank intervals, tie groups and paired comparisons by the bootstrap.

The test objects the leaderboard ranks on (the public part while the phase is open, the private part once it
is closed, else the whole test set: :func:`part_ids`) are resampled with replacement ``evaluation.rank_resamples``
times (seed ``evaluation.rank_seed``), the SAME resampled objects for every FINISHED entry (a paired bootstrap).
Each entry's primary metric on each resample comes from its task (:meth:`skybench.tasks.base.Task.score_resamples`)
on the per-object predictions saved in its organiser record; entries are ranked within each resample with ties
sharing the best rank (``min``: two identical prediction files always share a rank).

* ``rank_low`` / ``rank_high``: the 2.5th / 97.5th percentiles of an entry's ranks over the resamples (the lower
  and higher order statistic: whole ranks).
* ``group``: the leader's group A holds every entry whose rank interval overlaps the leader's; then the best-ranked
  entry not yet grouped starts group B with every ungrouped entry whose interval overlaps its own, and so on.
* :func:`compare`: the difference A - B of the primary metric, its paired 95% percentile interval and the
  two-sided bootstrap p-value ``min(1, 2 min(P(d <= 0), P(d >= 0)))`` with the +1 correction of Davison & Hinkley
  1997, eq. 4.11 (never exactly 0).
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from skybench.harness.score import part_mask
from skybench.release.reader import HiddenSplit
from skybench.tasks import get_task
from skybench.tracks import Track

__all__ = ["Comparison", "compare", "groups", "load_predictions", "part_ids", "primary_resamples", "rank_columns",
           "rank_intervals", "resample_indices"]

RANK_COLUMNS = ("rank_low", "rank_high", "group")
ALPHA = 0.05


def rank_columns() -> tuple[str, ...]:
    """The columns :func:`rank_intervals` adds to a leaderboard."""
    return RANK_COLUMNS


def part_ids(track: Track, hidden: HiddenSplit) -> np.ndarray:
    """The sorted test ids the leaderboard ranks on (see :func:`skybench.tracking.leaderboard.metric_prefix`)."""
    ids = np.sort(hidden.ids())
    public = part_mask(track, hidden, ids)
    if public is None:
        return ids
    return ids[public] if track.evaluation.phase == "open" else ids[~public]


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) bootstrap draws of positions 0..n-1, from ``numpy.random.default_rng(seed)``."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"a bootstrap needs objects and resamples, got {n} object(s), {n_resamples} resample(s)")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def load_predictions(client: MlflowClient, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, predictions) saved with an organiser's evaluation run (``predictions.csv``, or ``predictions.npy``
    with ``predictions_ids.csv``: :func:`skybench.harness.evaluate.save_predictions`); FileNotFoundError if it
    has none (a participant-view run, or an older record)."""
    uri = client.get_run(run_id).info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):  # a local store: read in place (enhance predictions are large)
        from mlflow.utils.file_utils import local_file_uri_to_path

        return _read_predictions(Path(local_file_uri_to_path(uri)))
    names = {a.path for a in client.list_artifacts(run_id)}
    with tempfile.TemporaryDirectory(prefix="skybench-ranks-") as tmp:
        for name in ("predictions.csv", "predictions.npy", "predictions_ids.csv"):
            if name in names:
                client.download_artifacts(run_id, name, tmp)
        return _read_predictions(Path(tmp))


def _read_predictions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    if (folder / "predictions.csv").is_file():
        table = pd.read_csv(folder / "predictions.csv")
        return table["id"].to_numpy(), table["score"].to_numpy(np.float64)
    if (folder / "predictions.npy").is_file() and (folder / "predictions_ids.csv").is_file():
        return pd.read_csv(folder / "predictions_ids.csv")["id"].to_numpy(), np.load(folder / "predictions.npy")
    raise FileNotFoundError(f"{folder}: no saved predictions (predictions.csv or predictions.npy)")


def primary_resamples(track: Track, hidden: HiddenSplit, predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(point values (E,), per-resample values (E, R)) of the primary metric of each entry of ``predictions``
    ({key: (ids, predictions)}) on the part :func:`part_ids` ranks on, with the same ``indices`` for all (default:
    :func:`resample_indices` with the track's ``rank_resamples`` and ``rank_seed``). An entry that lacks an id of
    the part raises ValueError naming it."""
    ids = part_ids(track, hidden)
    if indices is None:
        indices = resample_indices(len(ids), track.evaluation.rank_resamples, track.evaluation.rank_seed)
    task = get_task(track.task)
    rows = np.vstack([np.arange(len(ids))[None, :], indices])  # row 0: the whole part (the point estimate)
    values = np.empty((len(predictions), rows.shape[0]))
    for e, (key, (entry_ids, pred)) in enumerate(predictions.items()):
        position = pd.Series(np.arange(len(entry_ids)), index=np.asarray(entry_ids))
        if not position.index.is_unique or (missing := np.setdiff1d(ids, position.index)).size:
            raise ValueError(f"{key}: its saved predictions do not cover the test objects once each"
                             + ("" if position.index.is_unique else " (repeated ids)")
                             + ("" if position.index.is_unique or not missing.size else f", e.g. id {missing[0]}"))
        aligned = np.asarray(pred)[position.loc[ids].to_numpy()]
        values[e] = task.score_resamples(track, ids, aligned, hidden, rows)
    return values[:, 0], values[:, 1:]


def rank_intervals(values: np.ndarray, higher_is_better: bool, order: Sequence[int]) -> pd.DataFrame:
    """``rank_low``, ``rank_high`` and ``group`` of E entries from their (E, R) per-resample metric values;
    ``order``: the entries from the leaderboard's rank 1 down (it decides the leader and who starts a group).
    Resamples where any entry's metric is undefined (NaN) are left out."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values).any(axis=0)
    if not keep.any():
        raise ValueError("the primary metric is undefined on every resample; no rank interval")
    from scipy.stats import rankdata

    # percentile bootstrap of each entry's rank (Hall & Miller 2009, Ann. Stat. 37, 3929: the authority of a ranking)
    ranks = rankdata(-values[:, keep] if higher_is_better else values[:, keep], method="min", axis=0)
    low = np.quantile(ranks, ALPHA / 2, axis=1, method="lower").astype(int)
    high = np.quantile(ranks, 1 - ALPHA / 2, axis=1, method="higher").astype(int)
    return pd.DataFrame({"rank_low": low, "rank_high": high, "group": groups(low, high, order)})


def groups(low: Sequence[int], high: Sequence[int], order: Sequence[int]) -> list[str]:
    """Group letters (A, B, ..., Z, AA, ...) by the rule of the module docstring; ``order``: best first."""
    out = [""] * len(low)
    k = 0
    for head in order:
        if out[head]:
            continue
        letter = _letter(k)
        k += 1
        for e in order:  # the ungrouped entries whose interval overlaps the head's (the head included)
            if not out[e] and low[e] <= high[head] and low[head] <= high[e]:
                out[e] = letter
    return out


def _letter(k: int) -> str:
    letters = string.ascii_uppercase
    return letters[k] if k < len(letters) else _letter(k // len(letters) - 1) + letters[k % len(letters)]


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap comparison of two entries' primary metric on the ranked part of the test set."""

    a: str
    b: str
    metric: str
    value_a: float
    value_b: float
    difference: float  # value_a - value_b
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int
    n_objects: int

    def summary(self, higher_is_better: bool) -> str:
        better = self.a if (self.difference > 0) == higher_is_better else self.b
        verdict = ("no difference" if self.difference == 0 else
                   f"{better} is better" + ("" if self.p_value < ALPHA else " (not significant at 5%)"))
        return (f"{self.metric}: {self.a} {self.value_a:.6g}, {self.b} {self.value_b:.6g}\n"
                f"difference ({self.a} - {self.b}): {self.difference:+.6g}, paired 95% bootstrap interval "
                f"[{self.ci_low:+.6g}, {self.ci_high:+.6g}], two-sided p = {self.p_value:.4g} "
                f"({self.n_resamples} resamples of {self.n_objects} objects)\n{verdict}")


def compare(track: Track, hidden: HiddenSplit, a: tuple[str, tuple[np.ndarray, np.ndarray]],
            b: tuple[str, tuple[np.ndarray, np.ndarray]]) -> Comparison:
    """Paired bootstrap of the primary metric of ``a`` minus ``b`` ((name, (ids, predictions)) each)."""
    point, values = primary_resamples(track, hidden, {a[0]: a[1], b[0]: b[1]})
    with np.errstate(invalid="ignore"):  # equal values are no difference, inf (PSNR of exact copies) included
        d = np.where(values[0] == values[1], 0.0, values[0] - values[1])
        diff = 0.0 if point[0] == point[1] else float(point[0] - point[1])
    d = d[~np.isnan(d)]
    if not d.size:
        raise ValueError("the primary metric is undefined on every resample; no comparison")
    low, high = np.quantile(d, [ALPHA / 2, 1 - ALPHA / 2])
    r = d.size
    p = min(1.0, 2 * min((1 + np.count_nonzero(d <= 0)) / (r + 1), (1 + np.count_nonzero(d >= 0)) / (r + 1)))
    return Comparison(a[0], b[0], track.metrics.primary, float(point[0]), float(point[1]), diff,
                      float(low), float(high), float(p), r, len(part_ids(track, hidden)))
