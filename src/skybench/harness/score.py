"""The scoring program: predictions and hidden labels in, metrics and plots out.

It never runs participant code (that is the sandboxed runner's job) and the runner never sees labels
(Codabench's split between ingestion and scoring)."""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from skybench.metrics import completeness_by_bin, lens_metrics, roc_curve, roc_on_grid, threshold_at_fpr
from skybench.release.reader import HiddenSplit
from skybench.tracks import Track

COMPLETENESS_FPR = 0.01  # completeness and real-lens recall use the threshold giving 1% false positives
THETA_E_BINS = np.array([0.0, 0.6, 0.9, 1.2, 1.5, 2.0, 3.0])
SNR_BINS = np.array([0.0, 10, 20, 40, 80, 160, 1e6])


def score(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, out_dir: Path) -> dict[str, float]:
    """Score ``predictions`` (aligned with ``ids``) against the hidden test folder ``hidden`` (``meta.parquet``
    and any hidden arrays); write plots and tables to ``out_dir``. Dispatches on the track's task.

    With ``evaluation.public_fraction`` set, the same scorer also runs on the public and on the private part
    of the test ids (:func:`public_mask`), adding ``public_<m>`` and ``private_<m>`` for every metric ``m``.

    Everything in ``out_dir`` is organiser-only except what :mod:`skybench.harness.visibility` lets participants see;
    a scorer module's ``public_artifacts`` writes those that depend on labels from the public part only (the
    whole test set without a split)."""
    scorer = _scorer(track)
    public = getattr(scorer, "public_artifacts", None)
    return _with_parts(track, ids, predictions, hidden, out_dir,
                       lambda i, p, out: scorer.score_task(track, i, p, Path(hidden), out),
                       public=(lambda i, p, out: public(track, i, p, Path(hidden), out)) if public else None)


def _with_parts(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, out_dir: Path,
                run: Callable[[np.ndarray, np.ndarray, Path], dict[str, float]],
                public: Callable[[np.ndarray, np.ndarray, Path], None] | None = None) -> dict[str, float]:
    """``run(ids, predictions, out)`` on the whole test set, then, with a public/private split, on each part
    (its plots are not kept), adding ``public_<m>`` and ``private_<m>``; then ``public(ids, predictions, out)``
    on the public part (the whole set without a split)."""
    metrics = run(ids, predictions, Path(out_dir))
    pred = np.asarray(predictions)
    if track.evaluation.public_fraction is None:
        if public is not None:
            public(np.asarray(ids), pred, Path(out_dir))
        return metrics
    all_ids = pd.read_parquet(Path(hidden) / "meta.parquet", columns=["id"])["id"].to_numpy()
    public_part = public_mask(np.asarray(ids), all_ids, track.evaluation.public_fraction,
                              track.evaluation.split_seed)
    if public is not None and public_part.any():
        public(np.asarray(ids)[public_part], pred[public_part], Path(out_dir))
    for part, mask in (("public", public_part), ("private", ~public_part)):
        if mask.any():
            with tempfile.TemporaryDirectory(prefix=f"skybench-{part}-") as tmp:
                part_metrics = run(np.asarray(ids)[mask], pred[mask], Path(tmp))
            metrics |= {f"{part}_{k}": v for k, v in part_metrics.items()}
    return metrics


def public_mask(ids: np.ndarray, all_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True where an id of ``ids`` is in the public part: ``round(fraction * len(all_ids))`` of the test ids,
    drawn with ``seed`` from the sorted ids of the whole test set (so it depends on neither order nor subset)."""
    universe = np.sort(np.asarray(all_ids))
    k = int(round(fraction * len(universe)))
    chosen = universe[np.random.default_rng(seed).permutation(len(universe))[:k]]
    return np.isin(np.asarray(ids), chosen)


def score_real(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, real_ids: np.ndarray,
               real_predictions: np.ndarray, real_hidden: Path, out_dir: Path) -> dict[str, float]:
    """Metrics on the track's real set (``evaluation.real_set``), predicted in the same sandboxed run.

    With a public/private split, also ``public_<m>`` / ``private_<m>``: the same metrics with only that part of
    the simulated test set given to the scorer (e.g. the threshold of real-lens recall comes from that part)."""
    scorer = _scorer(track)
    return _with_parts(track, ids, predictions, hidden, out_dir,
                       lambda i, p, out: scorer.score_real_task(track, i, p, Path(hidden), real_ids,
                                                                real_predictions, Path(real_hidden), out))


def _scorer(track: Track) -> ModuleType | _TaskScorer:
    """The module that scores the track's task: this one for lenses, ``score_<task>`` for the others."""
    if track.task not in ("lens", "photoz", "enhance"):  # a task registered with skybench.tasks.register
        return _TaskScorer(track.task)
    return sys.modules[__name__] if track.task == "lens" else \
        importlib.import_module(f"skybench.tasks.{track.task}.score")


class _TaskScorer:
    """The scorer-module interface above, over a registered :class:`skybench.tasks.base.Task`."""

    def __init__(self, name: str):
        from skybench.tasks import get_task

        self.task = get_task(name)

    def score_task(self, track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path,
                   out_dir: Path) -> dict[str, float]:
        return self.task.score(track, ids, predictions, HiddenSplit(hidden), out_dir)

    def score_real_task(self, track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path,
                        real_ids: np.ndarray, real_predictions: np.ndarray, real_hidden: Path,
                        out_dir: Path) -> dict[str, float]:
        return self.task.score_real(track, ids, predictions, HiddenSplit(hidden), real_ids, real_predictions,
                                    HiddenSplit(real_hidden), out_dir)

    def public_artifacts(self, track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path,
                         out_dir: Path) -> None:
        self.task.public_artifacts(track, ids, predictions, HiddenSplit(hidden), out_dir)


def score_task(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, out_dir: Path) -> dict[str, float]:
    truth = pd.read_parquet(hidden / "meta.parquet").set_index("id").loc[ids]
    return score_lens(truth, np.asarray(predictions, dtype=np.float64), out_dir)


def score_real_task(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, real_ids: np.ndarray,
                    real_predictions: np.ndarray, real_hidden: Path, out_dir: Path) -> dict[str, float]:
    truth = pd.read_parquet(hidden / "meta.parquet").set_index("id").loc[ids]
    return {"real_lens_recall": real_lens_recall(truth, predictions, real_predictions)}


def public_artifacts(track: Track, ids: np.ndarray, predictions: np.ndarray, hidden: Path, out_dir: Path) -> None:
    """The participant's ROC curve: ``roc_public.csv`` / ``.png``, sampled at the fixed FPRs of
    :func:`skybench.metrics.roc_on_grid` on the objects ``ids`` (the public part), so its size and its points
    never depend on how many distinct scores a submission gives."""
    truth = pd.read_parquet(hidden / "meta.parquet").set_index("id").loc[ids]
    fpr, tpr = roc_on_grid(truth["is_lens"].to_numpy().astype(int), np.asarray(predictions, dtype=np.float64))
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(out_dir / "roc_public.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, "o-")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (public part, fixed FPRs)")
    fig.tight_layout()
    fig.savefig(out_dir / "roc_public.png", dpi=100)
    plt.close(fig)


def score_lens(truth: pd.DataFrame, scores: np.ndarray, out_dir: Path) -> dict[str, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = truth["is_lens"].to_numpy().astype(int)
    metrics = lens_metrics(labels, scores, n_resamples=1000, seed=0)
    fpr, tpr, thr = roc_curve(labels, scores)
    pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}).to_csv(out_dir / "roc.csv", index=False)
    cut = threshold_at_fpr(labels, scores, COMPLETENESS_FPR)
    tables = {}
    for column, bins in (("lens_theta_E", THETA_E_BINS), ("arc_snr", SNR_BINS)):
        c = completeness_by_bin(labels, scores, cut, truth[column].to_numpy(), bins)
        tables[column] = pd.DataFrame({"low": c["bin_edges"][:-1], "high": c["bin_edges"][1:], "n_lens": c["n_lens"],
                                       "completeness": c["completeness"]})
    pd.concat(tables, names=["quantity"]).to_csv(out_dir / "completeness.csv")
    _plot(fpr, tpr, metrics, tables, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _plot(fpr: np.ndarray, tpr: np.ndarray, metrics: dict, tables: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate",
           title=f"AUROC {metrics['auroc']:.4f} [{metrics['auroc_ci_low']:.3f}, {metrics['auroc_ci_high']:.3f}]")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
    for ax, (column, table) in zip(axes, tables.items(), strict=True):
        centres = np.where(table.high < 1e5, (table.low + table.high) / 2, table.low * 1.5)
        ax.plot(centres, table.completeness, "o-")
        ax.set(xlabel={"lens_theta_E": "theta_E [arcsec]", "arc_snr": "arc S/N"}[column], ylim=(0, 1.05))
    axes[0].set_ylabel(f"completeness at FPR = {COMPLETENESS_FPR:g}")
    fig.tight_layout()
    fig.savefig(out_dir / "completeness.png", dpi=100)
    plt.close(fig)


def real_lens_recall(truth: pd.DataFrame, scores: np.ndarray, real_scores: np.ndarray) -> float:
    """Fraction of real lenses scored at or above the threshold that gives FPR = 1% on the simulated test set."""
    cut = threshold_at_fpr(truth["is_lens"].to_numpy().astype(int), np.asarray(scores, float), COMPLETENESS_FPR)
    return float(np.mean(np.asarray(real_scores, float) >= cut))
