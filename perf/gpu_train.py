"""The lens ResNet at the ``challenge`` profile (``train.resnet`` of params.yaml: stem stride 1, 3 units per stage,
60 epochs) on the harness's device, trained and then scored through `skybench evaluate`.

    python perf/gpu_train.py --time-limit 200 --keep DIR     # a GPU: the whole profile (20,000 / 2,000 / 100,000)
    python perf/gpu_train.py --test 300 --epochs 1           # the CPU: that it runs (perf/gpu_check.sh)

The release is the track's challenge profile (``--test`` scales train and val with it, as ``simulate_release(size=)``
does), drawn with a throw-away key made here, so never the organiser's. ``--time-limit`` ends training after the
epoch in which it passed (``train.resnet.time_limit_s``; the epoch with the best validation AUROC is exported).
Prints the simulation and training times, training cut-outs/s, the epochs run, the validation AUROC and the test
AUROC, TPR0 and TPR10 with 95% bootstrap intervals over the test objects, and appends them as Markdown with ``--md``.
``--keep DIR`` copies the trained submission (ONNX) and its test metrics there. A failed simulation, training or
evaluation exits 1 with one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
class RlimitsAllowed:
    """The local executor, with a challenge release's demand for cgroup limits dropped (``--allow-rlimits``)."""

    name = "local"

    def run(self, jobs: list[Any]) -> Iterator[Any]:
        from skybench.harness.executors import LocalExecutor

        return LocalExecutor().run([dataclasses.replace(j, require_cgroups=False) for j in jobs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="lens-ground")
    ap.add_argument("--test", type=int, default=None,
                    help="test cut-outs (default: the challenge profile's 100,000; train and val scale with it)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the challenge profile's)")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds of training, checked after each epoch")
    ap.add_argument("--keep", type=Path, default=None, help="copy the trained submission and its metrics here")
    ap.add_argument("--md", type=Path, default=None, help="append the Markdown figures to this file")
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--allow-rlimits", action="store_true",
                    help="where cgroups have no memory/pids controller, evaluate the challenge release with the "
                         "sandbox's rlimit fallback (the harness refuses that; this perf check only)")
    ap.add_argument("--expect-device", choices=("cuda", "cpu"), default=None,
                    help="fail at once when training and evaluation would run on another device")
    args = ap.parse_args()

    from skybench.harness.evaluate import evaluate
    from skybench.harness.submission import cuda_available
    from skybench.release import read_manifest
    from skybench.simulate import simulate_release
    from skybench.tracks import load_track
    from skybench.training import baseline_params

    track = load_track(args.track)
    profile_epochs = int(baseline_params("resnet", profile="challenge", track=track.name)["epochs"])
    device = "cuda" if cuda_available() else "cpu"
    if args.expect_device and device != args.expect_device:
        print(f"FAIL: no {args.expect_device} here (cuda_available() in physics/backend.py says {device})",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # the sandboxed evaluation runs as another uid
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        t = time.perf_counter()
        release = simulate_release(track, tmp / "release", profile="challenge", size=args.test,
                                   key_file=tmp / "throwaway.key", progress=False)
        t_sim = time.perf_counter() - t
        sizes = {s: int(read_manifest(release)["counts"][s]) for s in ("train", "val", "test")}
        cmd = [sys.executable, str(ROOT / "baselines/lens/resnet/train.py"), "--track", track.name, "--release",
               str(release), "--out", str(tmp / "resnet"), "--profile", "challenge", "--no-mlflow"]
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        cmd += ["--set", f"time_limit_s={args.time_limit}"] if args.time_limit else []
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        t_train = time.perf_counter() - t
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"FAIL: training the challenge ResNet exited {run.returncode}: {tail}", file=sys.stderr)
            return 1
        found = re.search(r"val AUROC ([0-9.na]+)", run.stdout)
        val_auroc = found.group(1) if found else "?"
        stopped = re.search(r"stopped after epoch (\d+)", run.stdout)
        kept = re.search(r"kept epoch (\d+)", run.stdout)
        epochs = int(stopped.group(1)) if stopped else (args.epochs or profile_epochs)
        print(f"trained: {epochs} epochs, kept {kept.group(1) if kept else '?'}, val AUROC {val_auroc}, "
              f"{t_train:.0f} s; the trainer's last lines:\n{run.stdout[-1500:]}", flush=True)
        for p in (tmp / "resnet", *(tmp / "resnet").rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        if args.keep:  # before the evaluation, which a time-limited machine may not see the end of
            shutil.copytree(tmp / "resnet", args.keep, dirs_exist_ok=True)
        t = time.perf_counter()
        (o,) = evaluate([tmp / "resnet"], track, release, out=tmp / "evals", publish=False,
                        identities={tmp / "resnet": ("baselines", "resnet")},
                        executor=RlimitsAllowed() if args.allow_rlimits else "local")
        t_eval = time.perf_counter() - t
        if o.status != "FINISHED":
            print(f"FAIL: evaluating the challenge ResNet: {o.status}: {o.reason}", file=sys.stderr)
            return 1
        m = o.metrics  # with the scorer's 1,000-resample intervals of AUROC, TPR0 and TPR10
        if args.keep:
            (args.keep / "test_metrics.json").write_text(json.dumps(
                {**m, "sizes": sizes, "epochs": epochs, "device": device}, indent=1, default=float))
    rate = sizes["train"] * epochs / t_train
    text = (f"Challenge-profile lens ResNet on {device} ({track.name}, params.yaml train.resnet at profile challenge; "
            f"{sizes['train']:,} training, {sizes['val']:,} validation and {sizes['test']:,} test cut-outs simulated "
            f"with a throw-away key in {t_sim:.0f} s): {epochs} of {profile_epochs} epochs in {t_train:.0f} s "
            f"including start-up ({rate:.0f} training cut-outs/s), kept epoch {kept.group(1) if kept else '?'}, "
            f"val AUROC {val_auroc}; "
            f"`skybench evaluate` in {t_eval:.0f} s: AUROC {m['auroc']:.3f} [{m['auroc_ci_low']:.3f}, "
            f"{m['auroc_ci_high']:.3f}], TPR0 {m['tpr0']:.3f} [{m['tpr0_ci_low']:.3f}, {m['tpr0_ci_high']:.3f}], "
            f"TPR10 {m['tpr10']:.3f} [{m['tpr10_ci_low']:.3f}, {m['tpr10_ci_high']:.3f}] (95% bootstrap intervals "
            f"over the test objects; CMU DeepLens, Metcalf et al. 2019, ground: AUROC 0.98, TPR0 0.09, TPR10 0.45).\n")
    print(text)
    if args.md:
        with args.md.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
