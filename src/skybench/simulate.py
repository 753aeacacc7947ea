"""The ``simulate`` stage: make a versioned release of a track from its YAML, a profile, a seed and (except for
the public ``demo`` profile) the organiser's test-set key (:mod:`skybench.testkey`)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

from skybench.physics.backend import get_backend
from skybench.release import layout, read_manifest, release_digest, write_release
from skybench.release.mixing import check_real_key, fold_in, order_key
from skybench.testkey import ObjectSeeds, ReleaseKey, profile_key
from skybench.tracks import Track, load_track, project_root

CHUNK_SIZE = 32  # objects rendered together on the CPU: larger batches cost more in cache misses than they save
GPU_CHUNK_SIZE = 2048  # on a GPU: thousands per kernel launch


def simulate_release(track: Track | str, out: Path, *, profile: str = "demo", seed: int = 0,
                     size: int | None = None, backend: str = "auto", generator: str = "auto",
                     progress: bool = True, chunk_size: int | None = None, workers: int | None = None,
                     key_file: Path | str | None = None, create_key: bool = True,
                     real_set: Path | str | bool = False) -> Path:
    """Simulate ``track`` into the release folder ``out``.

    On the CPU, chunks are simulated by ``workers`` processes (default: all cores); every object has its
    own seed, so the files are the same whatever the number of workers and the chunk size (default:
    :data:`CHUNK_SIZE` on the CPU, :data:`GPU_CHUNK_SIZE` on a GPU, where the next chunk is simulated while the
    last is written). ``generator`` (``auto``, ``pcg64`` or ``philox``, physics.backend.GENERATORS): ``auto`` is
    Philox on a GPU where the track's simulator has it, else PCG64. A release is the same bytes for a given seed,
    generator and backend; with one generator, numpy and torch give the same parameters and labels.
    ``size`` overrides the number of test cut-outs and scales train/val in proportion (for quick runs).
    The test split is drawn from the key in ``key_file`` (default: :func:`~skybench.testkey.default_key_path`,
    created if absent and ``create_key``); the ``demo`` profile without ``key_file`` uses public seeds.
    ``real_set``: the real release folded into the test split (:func:`skybench.release.mixing.fold_in`; True: the
    track's ``evaluation.real_set``, relative to the project root, as ``skybench simulate`` does; False, the
    default: none, so a library call does not depend on what the project has built). A missing or empty real set
    is not folded in, and the manifest says so."""
    track = load_track(track) if isinstance(track, str) else track
    split = track.split_sizes(profile)
    track = track.for_profile(profile)  # per-profile values (a detect track's tile size) resolved
    key = profile_key(profile, key_file=key_file, create=create_key, out=Path(out))
    seeds = ObjectSeeds(seed, key, object_domain(track))
    counts = {"train": split.train, "val": split.val, "test": split.test}
    if size is not None:
        scale = size / max(split.test, 1)
        counts = {"train": max(1, round(split.train * scale)), "val": max(1, round(split.val * scale)),
                  "test": size}
    cls = simulator_class(track)
    supported: tuple[str, ...] = getattr(cls, "generators", lambda t: ("pcg64",))(track)
    be = get_backend(backend)
    if generator == "auto":
        generator = "philox" if be.device == "cuda" and "philox" in supported else "pcg64"
    if generator not in supported:
        raise ValueError(f"{track.name}: its simulator draws with {', '.join(supported)}, not {generator!r}")
    be = replace(be, generator=generator)
    chunk_size = chunk_size or (GPU_CHUNK_SIZE if be.device == "cuda" else CHUNK_SIZE)
    limits: dict[str, int] = getattr(cls, "split_limits", lambda t: {})(track)  # bounded by its data (injected test)
    capped = {s: min(c, limits.get(s, c)) for s, c in counts.items()}
    workers = workers or (os.cpu_count() or 1) if be.name == "numpy" else 1
    info = {"track": track.name, "task": track.task, "profile": profile, "seed": seed,
            "bands": track.band_names, "pixel_scale": track.survey.pixel_scale, "units": "e-/s per pixel",
            "backend": f"{be.name}-{be.device}", "test_key": key.manifest_entry(), **cls.release_info(track)}
    if generator != "pcg64":  # absent: PCG64, as in every release made before Philox existed
        info["generator"] = generator
    if capped != counts:
        info |= {"counts_requested": counts, "split_limits": limits}
        counts = capped
    finish = _real_set_fold(track, real_set, order_key(key, seed, track.name), key)
    try:
        with _Pool(workers, initializer=_init_worker, initargs=(track, backend, generator, True, os.getpid())) \
                if workers > 1 else _InProcess(track, backend, generator, ahead=be.name != "numpy") as pool:

            def make_chunks(split: str, ranges: list[tuple[int, int]]) -> Iterator[Any]:
                return pool.map(_simulate_chunk, [(seeds, split, a, b) for a, b in ranges])

            return write_release(Path(out), info=info, counts=counts, arrays=cls.arrays(track),
                                 hidden_arrays=cls.hidden_arrays, make_chunks=make_chunks, chunk_size=chunk_size,
                                 label_columns=cls.label_columns, progress=progress, finish=finish,
                                 tables=tuple(getattr(cls, "tables", ())))
    except BrokenProcessPool as exc:  # a worker killed: by the kernel's OOM killer, most often
        raise ValueError(f"{track.name}: a simulation worker process died (killed: by the out-of-memory killer?); "
                         f"{out} is as it was: rerun the command") from exc
    except (MemoryError, RuntimeError) as exc:  # torch's OutOfMemoryError (CUDA's too) is a RuntimeError
        if not isinstance(exc, MemoryError) and type(exc).__name__ != "OutOfMemoryError":
            raise
        raise ValueError(f"{track.name}: out of {'GPU' if be.device == 'cuda' else 'host'} memory simulating "
                         f"{chunk_size} objects at a time ({type(exc).__name__}); {out} is as it was: "
                         f"rerun with a smaller --chunk-size (say {max(1, chunk_size // 4)})") from exc


def _real_set_fold(track: Track, real_set: Path | str | bool, order: bytes, key: ReleaseKey
                   ) -> Callable[[Path], dict[str, Any]]:
    """The ``finish`` step of the release writer: fold the real set into the test split (or say why not). A real
    set imported under another test-set key is refused now, before anything is simulated."""
    given = track.evaluation.real_set if real_set is True else (None if real_set is False else str(real_set))

    if given and getattr(track, "injection", None) is not None:  # its test objects ARE real cut-outs (injected.py)
        raise ValueError(f"{track.name}: no real set may be folded into an injected track's test stream ({given})")

    path = project_root() / given if given else None
    if path is not None and layout.is_release(path) and read_manifest(path)["counts"]["test"]:
        check_real_key(path, key)

    def finish(root: Path) -> dict[str, Any]:
        if not given:
            return {}
        real = project_root() / given
        entry: dict[str, Any] = {"path": given, "folded_in": False}
        if not layout.is_release(real):
            return {"real_set": entry | {"why": "no real release there when this release was made"}}
        if read_manifest(real)["counts"]["test"] == 0:
            return {"real_set": entry | {"why": "the real release has no test objects"}}
        counts = fold_in(root, real, order, key=key)
        return {"real_set": {"path": given, "folded_in": True, "release_sha256": release_digest(real),
                             **counts}}

    return finish


def object_domain(track: Track) -> str:
    """The domain of a track's keyed test seeds (:class:`skybench.testkey.ObjectSeeds`): its name, so that no two
    tracks draw their test objects from the same seeds, unless its simulator's ``object_domain(track)`` names one that
    tracks sharing a population share (the photo-z tracks: the same galaxies as images and as a catalogue)."""
    return str(getattr(simulator_class(track), "object_domain", lambda t: t.name)(track))


_SIM: Any = None


def simulator_class(track: Track) -> Any:
    """The track's task's simulator (:class:`skybench.tasks.base.Simulator`), built as ``cls(track, backend)``."""
    from skybench.tasks import get_task

    return get_task(track.task).simulator()


def _init_worker(track: Track, backend: str, generator: str, one_thread: bool = False, parent: int = 0) -> None:
    global _SIM
    if parent:  # a pool worker: it dies with the simulation (killed, it left workers blocked for ever)
        _die_with_parent(parent)
        # and by SIGTERM, not the caller's handler it inherited by fork (`skybench simulate` turns SIGTERM into
        # SystemExit): the pool terminates its workers so when one died, and the worker loop catches a SystemExit
        # raised inside a chunk, then waits for work for ever; the pool's exit waited on it (a hang, under load)
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if one_thread:  # one process per core: torch's element-wise math (physics.kernels) runs on one thread
        os.environ["OMP_NUM_THREADS"] = "1"
        if "torch" in sys.modules:  # imported before the fork: also safe after the parent used OpenMP
            sys.modules["torch"].set_num_threads(1)
    _SIM = simulator_class(track)(track, get_backend(backend, generator))


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``); exit
    now if the parent is already gone."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the pool's own checks remain
        return
    if os.getppid() != parent:
        os._exit(1)


def _simulate_chunk(job: tuple[ObjectSeeds, str, int, int]) -> Any:
    return _SIM.simulate(*job)


class _Pool(ProcessPoolExecutor):
    """A process pool whose workers are all gone when it exits. On CPython 3.11, a worker dying while
    ``map``'s iterator cancels the pending chunks makes the pool's manager thread raise before it stops the other
    workers (gh-107219, fixed in 3.12); they would wait for work, and the interpreter for them at exit, for ever."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._not_ours = {p.pid for p in multiprocessing.active_children()}
        super().__init__(*args, **kwargs)

    def __exit__(self, kind: Any, *rest: Any) -> Any:
        try:
            return super().__exit__(kind, *rest)
        finally:  # after a clean shutdown none is left
            for p in multiprocessing.active_children():
                if p.pid not in self._not_ours:
                    p.kill()
                    p.join()


class _InProcess:
    """The executor interface, run in this process (one worker, or a GPU backend). ``ahead``: a thread simulates
    the next chunk while the caller writes the last (torch and the shard writer release the GIL; numpy simulators
    may reuse their buffers between chunks, so only torch's)."""

    def __init__(self, track: Track, backend: str, generator: str, ahead: bool = False):
        _init_worker(track, backend, generator)
        self.ahead = ahead

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, jobs: list[Any]) -> Iterator[Any]:
        if not self.ahead:
            yield from map(fn, jobs)
            return
        with ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(fn, jobs[0]) if jobs else None
            for job in jobs[1:]:
                done, pending = pending, ahead.submit(fn, job)
                yield done.result()  # type: ignore[union-attr]
            if pending is not None:
                yield pending.result()
