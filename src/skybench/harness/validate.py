"""``skybench validate``: run a submission in the sandbox before it costs quota, the way the evaluation will.

The model runs twice on public inputs: at the track's evaluation batch size (a full batch, rows repeated when
the split is smaller) and at a small odd batch size with a ragged last batch, so a static batch dimension or a
fixed input shape fails here, not in the real evaluation. ``score`` runs it on the public validation split and
scores it with the task's own scorer (:meth:`skybench.release.reader.Release.split_truth`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyseccomp  # noqa: F401  (the sandbox's system-call filter: running a model needs the [eval] extra)

from skybench.harness.submission import PredictResult, Submission, sandboxed_predict
from skybench.release import layout
from skybench.release.shards import INPUT_ARRAYS, ShardedArray
from skybench.tracks import Track

SMALL_BATCH = 7  # odd, and no divisor of the usual power-of-two batch sizes
SMALL_INPUTS = 2 * SMALL_BATCH + 3  # two full batches and a ragged one


@dataclass
class BatchCheck:
    batch_size: int
    n: int
    result: PredictResult


def input_view(release: Path, split: str, n: int | None, out: Path, reverse: bool = False) -> Path:
    """An input folder (as the runner reads a public test folder) at ``out`` holding the first ``n`` rows of the
    release's public ``split`` (all when None), rows repeated from the start when the split has fewer;
    ``reverse``: the same rows, under the same ids, in reverse order."""
    src = layout.public_dir(release, split)
    if split == "test":
        ids = pd.read_parquet(layout.index_path(src), columns=["id"])["id"].to_numpy()
    else:
        ids = pd.read_parquet(layout.meta_path(src), columns=["id"])["id"].to_numpy()
    if len(ids) == 0:
        raise ValueError(f"{src}: the {split} split is empty")
    n = len(ids) if n is None else n
    rows = np.arange(n) % len(ids)
    out.mkdir(parents=True, exist_ok=True)
    view_ids = ids[rows]
    if n > len(ids):  # repeated rows get ids of their own
        view_ids = np.array([f"{i}#{k}" if k else str(i) for i, k in zip(view_ids, np.arange(n) // len(ids),
                                                                           strict=True)])
    if reverse:
        rows, view_ids = rows[::-1], view_ids[::-1]
    pd.DataFrame({"id": view_ids}).to_parquet(layout.index_path(out), index=False)
    for name in INPUT_ARRAYS:
        if layout.shard_paths(src, name):
            np.save(out / layout.shard_name(name, 0),
                    np.ascontiguousarray(ShardedArray.open(src, name)[rows], dtype="<f4"))
    for path in (out, *out.iterdir()):  # the sandbox runs as an unprivileged uid
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def check_batches(sub: Submission, track: Track, release: Path, scratch: Path, *,
                  split: str = "test") -> list[BatchCheck]:
    """Run the submission at the track's evaluation batch size and at :data:`SMALL_BATCH` (its first rows in
    reverse order, for :func:`rerun_problem`)."""
    big = track.evaluation.batch_size
    checks = []
    for batch_size, n, reverse in ((big, big, False), (SMALL_BATCH, SMALL_INPUTS, True)):
        inputs = input_view(release, split, n, scratch / f"inputs-{batch_size}", reverse)
        res = sandboxed_predict(sub, inputs, scratch=scratch / f"run-{batch_size}", track=track,
                                batch_size=batch_size)
        checks.append(BatchCheck(batch_size, n, res))
    return checks


def rerun_problem(task_name: str, checks: list[BatchCheck]) -> str:
    """Why the small batch's outputs are not the first run's for the same inputs ("" when they are, or when the
    task does not ask): the evaluation's re-run check (:meth:`skybench.tasks.base.Task.check_rerun`)."""
    from skybench.tasks import get_task

    first, again = (c.result for c in checks[:2])
    if not (first.ok and again.ok) or first.predictions is None or again.predictions is None:
        return ""
    where = {str(obj): k for k, obj in enumerate(first.ids)}  # a view with repeated rows has str ids
    both = [(where[str(obj)], k) for k, obj in enumerate(again.ids) if str(obj) in where]
    if not both:
        return ""
    rows, again_rows = (list(r) for r in zip(*both, strict=True))
    return get_task(task_name).check_rerun(first.predictions[rows], again.predictions[again_rows])


def batch_hint(checks: list[BatchCheck]) -> str:
    """A hint when the model works at some batch sizes and fails at others ("" otherwise)."""
    ok = [c.batch_size for c in checks if c.result.ok]
    bad = [c.batch_size for c in checks if not c.result.ok]
    if ok and bad:
        return (f"works at batch size {', '.join(map(str, ok))} but fails at {', '.join(map(str, bad))}: the model "
                f"has a static batch dimension; export it with a dynamic one (torch.export: dynamic_shapes, "
                f"ONNX: a symbolic first axis, Keras: Input(shape=...) without batch_size)")
    return ""


@dataclass
class LocalScore:
    metrics: dict[str, float]
    n: int
    result: PredictResult


def score_val(sub: Submission, track: Track, release: Path, out_dir: Path, *, limit: int | None = None) -> LocalScore:
    """Predict the public validation split in the sandbox and score it with the task's scorer."""
    from skybench.release.reader import open_release
    from skybench.tasks import get_task

    with tempfile.TemporaryDirectory(prefix="skybench-val-") as tmp:
        inputs = input_view(release, "val", limit, Path(tmp) / "inputs")
        res = sandboxed_predict(sub, inputs, scratch=Path(tmp) / "run", track=track)
    if not res.ok:
        return LocalScore({}, len(res.ids), res)
    assert res.predictions is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = open_release(release).split_truth("val")
    metrics = get_task(track.task).score(track, res.ids, res.predictions, truth, out_dir)
    return LocalScore(metrics, len(res.ids), res)
