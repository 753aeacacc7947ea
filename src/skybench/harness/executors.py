"""Where the sandboxed inference of submissions runs: ``local`` (this process, one submission after another)
or ``ray`` (Ray tasks on a local Ray instance or on the cluster at ``$RAY_ADDRESS``).

Both run the same :func:`skybench.harness.submission.sandboxed_predict` (bubblewrap, the track's limits); only the
predictions come back, and scoring stays in the evaluating process, so scores do not depend on the executor.

With Ray, each submission's test set is cut into contiguous shards, one Ray task each (``num_gpus=1`` when
the cluster has GPUs). Shard boundaries fall on the runner's batch boundaries (a batch never spans two
shards, exactly as in a local run), so a deterministic model gets the same batches and gives the same bits.
A task whose shard is not the whole test set predicts a *view* of it: a folder in the task's temporary
directory with the shard's rows of each input array (whole shard files are hard-linked, else copied) and of
the ids index (:mod:`skybench.release.layout`); the sandbox sees only that folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from skybench.harness.files import remove_tree
from skybench.harness.submission import PredictResult, Submission, sandboxed_predict
from skybench.release import layout
from skybench.release.shards import input_arrays, shards
from skybench.tracks import Track

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """One submission to predict on one input folder (a release's public test folder: with a real set, one
    stream of the test and real sets from :mod:`skybench.release.mixing`, whose mapping the caller splits back)."""

    sub: Submission
    test_dir: Path  # the folder the sandbox sees as /inputs
    track: Track
    require_cgroups: bool = False  # a challenge release: never run without cgroup limits
    private: tuple[Path, ...] = ()  # the release (and real set) whatever folder test_dir is: hidden from the sandbox


class Executor(Protocol):
    name: str

    def run(self, jobs: list[Job]) -> Iterator[PredictResult | Exception]:
        """One result per job, in the order of ``jobs`` (yielded as they complete in that order), or the exception
        that failed that job (the run goes on with the others)."""
        ...


class LocalExecutor:
    """The embedded default: one sandbox at a time in this process."""

    name = "local"

    def run(self, jobs: list[Job]) -> Iterator[PredictResult]:
        for job in jobs:
            scratch = Path(tempfile.mkdtemp(prefix="skybench-scratch-"))
            try:
                res = sandboxed_predict(job.sub, job.test_dir, scratch=scratch, track=job.track,
                                        require_cgroups=job.require_cgroups, private=job.private)
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                res = infrastructure_failure(exc)
            finally:
                remove_tree(scratch)  # iterative: any depth
            yield res


class RayExecutor:
    """Shards of every submission as Ray tasks; connects to ``address`` / ``$RAY_ADDRESS`` or starts Ray here.

    ``shards``: shards per submission (default: the cluster's GPUs, else its CPUs / ``cpus_per_task``).
    ``num_cpus``: CPUs of a Ray instance started here (default: all)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, shards: int | None = None, cpus_per_task: int = 1,
                 num_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.shards = shards
        self.cpus_per_task = cpus_per_task
        self.num_cpus = num_cpus

    def run(self, jobs: list[Job]) -> Iterator[PredictResult | Exception]:
        try:
            ray, started = _connect(self.address, self.num_cpus)
        except Exception as exc:  # no Ray here: every job failed for the machine's reason, and is retried
            for _ in jobs:
                yield infrastructure_failure(exc)
            return
        try:
            try:
                resources = ray.cluster_resources()
                largest = max((n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive", True)),
                              default=0)
            except Exception as exc:  # noqa: BLE001 - the cluster's state unreadable: the machine's, every job retried
                for _ in jobs:
                    yield infrastructure_failure(exc)
                return
            gpus = int(resources.get("GPU", 0))
            slots = gpus or max(1, int(resources.get("CPU", 1)) // self.cpus_per_task)
            task = ray.remote(_predict_shard)
            per_task = {"num_cpus": self.cpus_per_task, "num_gpus": 1 if gpus else 0}
            threads = None if gpus else self.cpus_per_task
            # Each task reserves its sandbox's memory limit (at most the largest node's memory, so that it can run),
            # so Ray never runs more sandboxes on a node than its memory holds: past that, the kernel's OOM killer
            # picks whichever sandbox has the most resident memory, another team's run within its own limit.
            pending: list[list[Any] | Exception | None] = []
            for job in jobs:
                if job.sub.spec.format == "predictions":  # runs no code: checked here, nothing to distribute
                    pending.append(None)
                    continue
                try:  # a failure to submit is this job's alone, judged as a task's would be
                    ranges = shard_ranges(job.test_dir, job.track.evaluation.batch_size, self.shards or slots)
                    memory = int(min(job.track.sandbox.memory_mb * 2**20, largest))
                    run = task.options(**per_task, **({"memory": memory} if memory > 0 else {}))
                    pending.append([run.remote(job, a, b, threads) for a, b in ranges])
                except Exception as exc:  # noqa: BLE001
                    pending.append(exc)
            for job, refs in zip(jobs, pending, strict=True):
                if isinstance(refs, Exception):
                    yield infrastructure_failure(refs) if is_infrastructure(refs) else refs
                    continue
                if refs is None:
                    try:
                        res = next(LocalExecutor().run([job]))
                    except Exception as exc:  # noqa: BLE001 - this job's own (its CSV read here): yielded, as a
                        yield exc  # task's below; raised, it would end this run and every other job's tasks with it
                        continue
                    yield res
                    continue
                try:
                    res = merge_results(ray.get(refs))
                except Exception as exc:  # a lost worker or node, a task that raised: Ray's or the host's
                    if not is_infrastructure(exc):
                        # evaluate() fails this submission, as under LocalExecutor; yielded, not raised: raising
                        # would end this run (ray.shutdown) and restart every other job's tasks from scratch
                        cause = _task_cause(exc)
                        yield cause if isinstance(cause, Exception) else RuntimeError(repr(cause))
                        continue
                    res = infrastructure_failure(exc)
                yield res
        finally:
            if started:
                ray.shutdown()


def is_infrastructure(exc: BaseException) -> bool:
    """Whether an exception of the evaluating machinery is the host's fault, not the submission's: no
    bubblewrap (``RuntimeError``), a full disk or other ``OSError``, any Ray error but a task's own exception
    (judged by what it raised)."""
    exc = _task_cause(exc)
    if isinstance(exc, RecursionError):  # a hostile output nested too deep: the submission's doing
        return False
    return isinstance(exc, (OSError, RuntimeError)) or is_ray_fault(exc)


def is_ray_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is Ray's own error (a lost worker, node or control store), not what a task raised."""
    return any(c.__module__.split(".")[0] == "ray" for c in type(_task_cause(exc)).__mro__)


def _task_cause(exc: BaseException) -> BaseException:
    """What a Ray task raised (``RayTaskError.cause``), else ``exc``: a ValueError of a submission's output
    is its own failure wherever it ran, not the machine's (lost workers and nodes are other Ray errors)."""
    cause = getattr(exc, "cause", None)
    is_task_error = any(c.__name__ == "RayTaskError" and c.__module__.split(".")[0] == "ray"
                        for c in type(exc).__mro__)
    return cause if is_task_error and isinstance(cause, BaseException) else exc


def infrastructure_failure(exc: BaseException) -> PredictResult:
    """A failed result marked ``infrastructure`` (recorded as such and retried at the next evaluation)."""
    line = (str(exc).strip().splitlines() or [""])[0][:300]
    return PredictResult(False, f"{type(exc).__name__}: {line}", None, np.array([], dtype=str), "unknown", 0.0,
                         infrastructure=True)


def get_executor(name: str | Executor, **options: object) -> Executor:
    """An executor by name (``local`` or ``ray``), or ``name`` itself when it already is one."""
    if not isinstance(name, str):
        return name
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**options)  # type: ignore[arg-type]
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def _connect(address: str | None, num_cpus: int | None) -> tuple[Any, bool]:
    """(the ray module, whether we started it). Offline-safe: no dashboard, no uv runtime env."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return ray, False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray, True


def _shard_files(test_dir: Path) -> dict[str, list[tuple[Path, int]]]:
    """{array name: [(shard file, rows), ...]} of the per-object arrays in a public test folder."""
    return {name: [(s.path, s.rows) for s in shards(test_dir, name)] for name in input_arrays(test_dir)}


def shard_ranges(test_dir: Path, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Up to ``shards`` contiguous (start, stop) row ranges covering the test set, cut only where the runner
    starts a batch (every ``batch_size`` rows from the start of each shard file)."""
    files = next(iter(_shard_files(Path(test_dir)).values()))
    starts: list[int] = []
    offset = 0
    for _, rows in files:
        starts += range(offset, offset + rows, batch_size)
        offset += rows
    k = max(1, min(shards, len(starts)))
    cuts = sorted({starts[round(i * len(starts) / k)] for i in range(k)}) + [offset] if starts else [0, 0]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def write_view(test_dir: Path, start: int, stop: int, dest: Path) -> Path:
    """A public-test-like folder at ``dest`` holding rows [start, stop) of ``test_dir``."""
    dest.mkdir(parents=True)
    for name, files in _shard_files(Path(test_dir)).items():
        offset = k = 0
        for path, rows in files:
            a, b = max(start, offset), min(stop, offset + rows)
            if a < b:
                target = dest / layout.shard_name(name, k)
                k += 1
                if (a, b) == (offset, offset + rows):
                    try:  # a link shares the file's mode: only one the sandbox can read already
                        if path.stat().st_mode & 0o444 != 0o444:
                            raise PermissionError(f"{path} is not world-readable")
                        os.link(path, target)
                    except OSError:  # another filesystem, or a mode of its own needed
                        shutil.copyfile(path, target)
                else:
                    _copy_rows(path, a - offset, b - offset, target)
            offset += rows
    index = pd.read_parquet(layout.index_path(test_dir))
    index.iloc[start:stop].to_parquet(layout.index_path(dest), index=False)
    for p in [dest, *dest.iterdir()]:  # readable by the sandbox's unprivileged uid; a link is the release's file
        if p.is_dir() or p.stat().st_nlink == 1:  # (a DVC cache file, 0444): its mode is left as it is
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def _copy_rows(src: Path, a: int, b: int, target: Path, block: int = 256) -> None:
    """Rows [a, b) of a .npy file into a new .npy file, a block of rows at a time."""
    arr = np.load(src, mmap_mode="r")
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
              "shape": (b - a, *arr.shape[1:])}
    with open(target, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(a, b, block):
            f.write(np.ascontiguousarray(arr[i:min(b, i + block)]).tobytes())


def private_temp() -> Path:
    """``$TMPDIR/skybench-<uid>``: made mode 0700 on first use; ``OSError`` (the machine's) unless it is a folder of
    this user's that nobody else can enter (not a link another user planted)."""
    root = Path(tempfile.gettempdir()) / f"skybench-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise OSError(f"{root}: not a private folder of this user (a link, another user's, or open to others); "
                      "remove it")
    return root


def _predict_shard(job: Job, start: int, stop: int, threads: int | None) -> PredictResult:
    """Body of a Ray task: predict rows [start, stop) of the job's test set in the sandbox, on this worker."""
    from skybench.harness.record import _stage, discard_stage
    from skybench.harness.sandbox import _sweep_scratch_mounts

    total = sum(rows for _, rows in next(iter(_shard_files(job.test_dir).values())))
    # flocked while this task lives, so a killed worker's or evaluator's folder (a view of up to half the test set)
    # is swept by the next task on the node, whatever pid namespace either ran in (record.sweep_stale), in a folder
    # of this user's alone (in /tmp itself another user could plant links or folders for the sweep to follow)
    _sweep_scratch_mounts()  # a killed task's scratch tmpfs first, so that its folder can go
    tmp = _stage(private_temp() / "shard")
    try:
        inputs = job.test_dir if (start, stop) == (0, total) else write_view(job.test_dir, start, stop,
                                                                             tmp / "inputs")
        return sandboxed_predict(job.sub, inputs, scratch=tmp / "scratch", track=job.track, threads=threads,
                                 require_cgroups=job.require_cgroups, private=job.private)
    finally:
        remove_tree(tmp)  # iterative: any depth
        discard_stage(tmp)


def merge_results(parts: list[PredictResult]) -> PredictResult:
    """One result from the shards' results, in shard order; the first failing shard fails it."""
    ids = np.concatenate([p.ids for p in parts])
    seconds = max(p.seconds for p in parts)  # the shards ran side by side
    bad = next((p for p in parts if not p.ok), None)
    if bad is not None:
        i = parts.index(bad)
        reason = bad.reason if len(parts) == 1 else f"shard {i + 1}/{len(parts)}: {bad.reason}"
        return replace(bad, reason=reason, ids=ids, seconds=seconds)
    shapes = [np.asarray(p.predictions).shape[1:] for p in parts]  # every part ok here: each has predictions
    if len(set(shapes)) > 1:  # each accepted alone (a pdf track takes (N,) or (N, bins)); one output has one shape
        i = next(i for i, s in enumerate(shapes) if s != shapes[0])
        return replace(parts[i], ok=False, predictions=None, ids=ids, seconds=seconds,
                       reason=f"shard {i + 1}/{len(parts)}: returned rows of shape {shapes[i]}, shard 1 of shape "
                              f"{shapes[0]}; return the same shape for every input")
    pred = np.concatenate([p.predictions for p in parts])
    return PredictResult(True, "", pred, ids, parts[0].device, seconds, parts[-1].log)

