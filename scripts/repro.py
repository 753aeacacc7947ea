"""`dvc repro`, several independent stages at a time (DVC runs one stage at a time; its docs suggest separate
`dvc repro` calls for independent branches of the DAG, and `--wait-for-lock` makes them queue for the repo lock).

    python scripts/repro.py [--jobs N] [--allow-missing] [TARGET ...]

Each stage of the targets' pipelines (every stage of every dvc.yaml without targets) runs as `dvc --wait-for-lock
repro --single-item STAGE` once the stages it depends on have finished; DVC itself decides whether it is changed. A
target is a stage as DVC addresses it (`pipelines/lens/dvc.yaml:leaderboard-lens@lens-space`). A stage's output goes
to logs/repro/<stage name>.log; the console gets one line per stage, and the log's tail when it fails. After a
failure no new stage starts, the running ones finish, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from skybench.cpu import pin_cpu_kernels

LOGS = Path("logs/repro")
pin_cpu_kernels()  # inherited by every stage, also those that load numpy before skybench (a baseline's train.py)


def pipeline(targets: list[str]) -> dict[str, set[str]]:
    """Stage -> the stages it depends on, for the targets' pipelines (stages with a command only), each as DVC
    addresses it (``pipelines/<task>/dvc.yaml:<name>``, or ``<name>`` in ./dvc.yaml)."""
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # an edge a -> b: stage a depends on stage b
        nodes = set(graph.nodes)
        if targets:
            nodes = {s for t in targets for s in repo.stage.collect(t, with_deps=True)}
        runnable = {s for s in nodes if getattr(s, "cmd", None)}
        return {s.addressing: {d.addressing for d in graph.successors(s) if d in runnable} for s in runnable}


def name(stage: str) -> str:
    """A stage's name without its dvc.yaml (stage names are unique across the project's pipelines)."""
    return stage.rpartition(":")[2]


def init_mlflow() -> None:
    """Create the MLflow store's tables before stages that log to it may start at the same time."""
    import mlflow

    from skybench.tracking import tracking_uri

    mlflow.MlflowClient(tracking_uri=tracking_uri()).search_experiments(max_results=1)


def priorities(deps: dict[str, set[str]]) -> dict[str, float]:
    """Stage -> a guess of the longest chain of work from it to the end (training counts 6x): the stages on the
    critical path start first."""
    users: dict[str, set[str]] = {s: set() for s in deps}
    for stage, ups in deps.items():
        for up in ups:
            users[up].add(stage)
    memo: dict[str, float] = {}

    def chain(stage: str) -> float:
        if stage not in memo:
            memo[stage] = (6.0 if stage.startswith("train-") else 1.0) + max(map(chain, users[stage]), default=0.0)
        return memo[stage]

    return {s: chain(s) for s in deps}


def log_path(stage: str) -> Path:
    return LOGS / f"{re.sub(r'[^A-Za-z0-9@._-]', '_', name(stage))}.log"


def run_stage(stage: str, extra: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """(exit status, seconds, what DVC said) of one stage's repro; its output goes to its log file."""
    log = log_path(stage)
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.call(["dvc", "--wait-for-lock", "repro", "--single-item", *extra, stage], stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    text = log.read_text(errors="replace")
    said = "unchanged" if "didn't change, skipping" in text else "ran"
    return rc, time.monotonic() - start, said


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("REPRO_JOBS", "0")) or min(4, os.cpu_count() or 1),
                    help="stages at a time (default: $REPRO_JOBS, else the cores, at most 4)")
    ap.add_argument("--allow-missing", action="store_true", help="passed to dvc repro")
    args = ap.parse_args(argv)
    extra = ["--allow-missing"] if args.allow_missing else []
    # one BLAS / OpenMP thread per stage (and per sandboxed model), unless set: the stages run one per core, and
    # BLAS's last bits depend on its thread count (a release made with 2 differs from one made with 1), so every
    # machine makes the files dvc.lock names
    env = {"OMP_NUM_THREADS": "1"} | dict(os.environ)
    deps = pipeline(args.targets)
    counts = Counter(map(name, deps))
    clashes = sorted(s for s in deps if counts[name(s)] > 1)
    if clashes:
        print(f"skybench: two dvc.yaml files define a stage of the same name: {', '.join(clashes)}", file=sys.stderr)
        return 1
    rank = priorities(deps)
    init_mlflow()
    LOGS.mkdir(parents=True, exist_ok=True)
    todo, done, failed = set(deps), set[str](), list[str]()
    running: dict[Future[tuple[int, float, str]], str] = {}
    t0 = time.monotonic()
    print(f"skybench: {len(deps)} stages, {args.jobs} at a time; their output is in {LOGS}/", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while todo or running:
            if not failed:
                ready = sorted((s for s in todo if deps[s] <= done), key=lambda s: (-rank[s], s))
                for stage in ready[: args.jobs - len(running)]:
                    todo.discard(stage)
                    running[pool.submit(run_stage, stage, extra, env)] = stage
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                stage = running.pop(fut)
                rc, seconds, said = fut.result()
                clock = time.monotonic() - t0
                if rc == 0:
                    done.add(stage)
                    print(f"[{clock:6.0f} s] {name(stage)}: {said} ({seconds:.0f} s)", flush=True)
                else:
                    failed.append(stage)
                    log = log_path(stage)
                    tail = log.read_text(errors="replace").splitlines()[-30:]
                    print(f"[{clock:6.0f} s] {name(stage)}: FAILED (exit {rc}); the end of {log}:", file=sys.stderr)
                    print("\n".join("    " + line for line in tail), file=sys.stderr, flush=True)
    if failed or todo:
        skipped = f"; not started: {len(todo)} stages downstream" if todo else ""
        print(f"skybench: repro failed at {', '.join(map(name, failed))}{skipped}", file=sys.stderr)
        return 1
    print(f"skybench: {len(done)} stages up to date in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
