"""DVC's lock update after each stage: its own ``modify_yaml`` (round-trip parse and dump of the whole ``dvc.lock``)
on each task's lock file (``pipelines/<task>/dvc.lock``) against the same on one lock holding every stage (the layout
before, the reference), in one run, on copies of the committed lock files.

    python perf/dvc_lock.py [--repeats 3]

Prints seconds per update for each file, the mean over the stages (a stage pays for its own task's file) and the
ratio to the one-file update."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from dvc.utils.serialize import modify_yaml

ROOT = Path(__file__).resolve().parents[1]


def _update_seconds(lock: Path, repeats: int) -> float:
    """Best of ``repeats`` lock updates as DVC does them after a stage (parse for update, then dump)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with modify_yaml(str(lock)):
            pass
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    locks = sorted((ROOT / "pipelines").glob("*/dvc.lock"))
    if not locks:
        raise SystemExit("no pipelines/*/dvc.lock: run `make run` (or check out the committed lock files) first")
    with tempfile.TemporaryDirectory(prefix="skybench-dvc-lock-") as tmp:
        stages: dict[str, object] = {}
        per_task = []
        for lock in locks:
            copy = Path(tmp) / f"{lock.parent.name}.lock"
            shutil.copy(lock, copy)
            entries = yaml.safe_load(copy.read_text())["stages"]
            stages.update(entries)
            per_task.append((lock.parent.name, len(entries), copy.stat().st_size, _update_seconds(copy, args.repeats)))
        whole = Path(tmp) / "dvc.lock"
        whole.write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False))
        reference, whole_kb = _update_seconds(whole, args.repeats), whole.stat().st_size / 1e3
    total = sum(n for _, n, _, _ in per_task)
    print(f"{'lock file':<22} {'stages':>6} {'KB':>6} {'s/update':>9}")
    for task, n, size, s in per_task:
        print(f"{'pipelines/' + task:<22} {n:>6} {size / 1e3:>6.0f} {s:>9.3f}")
    print(f"{'one file (reference)':<22} {total:>6} {whole_kb:>6.0f} {reference:>9.3f}")
    mean = sum(n * s for _, n, _, s in per_task) / total
    print(f"mean per stage: {mean:.3f} s per task file vs {reference:.3f} s with one file: "
          f"ratio {mean / reference:.2f}; {total} stages save {total * (reference - mean):.0f} s of lock updates")


if __name__ == "__main__":
    main()
