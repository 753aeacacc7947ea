"""A challenge-profile training step of the lens ResNet (``train.resnet`` of params.yaml at ``--profile challenge``:
stem stride 1, 3 units per stage) on the harness's device, then its evaluation through `skybench evaluate`.

    python perf/gpu_train.py --train 20000 --epochs 2        # a GPU (perf/gpu_check.sh --challenge)
    python perf/gpu_train.py --train 200 --epochs 1          # the CPU: that it runs

The data are simulated with public seeds (the demo profile's population; no key, so never the organiser's),
scaled as ``simulate_release(size=...)`` scales the demo profile: train = test = ``--train``, val a quarter.
Prints the simulation and training times, training cut-outs/s, the validation AUROC and the test AUROC, TPR0 and
TPR10 with the AUROC's 95% interval, and appends them as Markdown with ``--md``. A failed simulation, training or
evaluation exits 1 with one line."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="lens-ground")
    ap.add_argument("--train", type=int, default=20_000, help="training cut-outs (challenge profile: 20,000)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs (the challenge profile trains 60)")
    ap.add_argument("--md", type=Path, default=None, help="append the Markdown figures to this file")
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--expect-device", choices=("cuda", "cpu"), default=None,
                    help="fail at once when training and evaluation would run on another device")
    args = ap.parse_args()

    from skybench.harness.evaluate import evaluate
    from skybench.harness.submission import cuda_available
    from skybench.simulate import simulate_release
    from skybench.tracks import load_track

    track = load_track(args.track)
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
        release = simulate_release(track, tmp / "release", size=args.train, progress=False)
        t_sim = time.perf_counter() - t
        cmd = [sys.executable, str(ROOT / "baselines/lens/resnet/train.py"), "--track", track.name, "--release",
               str(release), "--out", str(tmp / "resnet"), "--profile", "challenge", "--epochs", str(args.epochs),
               "--no-mlflow"]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        t_train = time.perf_counter() - t
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"FAIL: training the challenge ResNet exited {run.returncode}: {tail}", file=sys.stderr)
            return 1
        found = re.search(r"val AUROC ([0-9.na]+)", run.stdout)
        val_auroc = found.group(1) if found else "?"
        for p in (tmp / "resnet", *(tmp / "resnet").rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        t = time.perf_counter()
        (o,) = evaluate([tmp / "resnet"], track, release, out=tmp / "evals", publish=False,
                        identities={tmp / "resnet": ("baselines", "resnet")})
        t_eval = time.perf_counter() - t
        if o.status != "FINISHED":
            print(f"FAIL: evaluating the challenge ResNet: {o.status}: {o.reason}", file=sys.stderr)
            return 1
        m = o.metrics
    rate = args.train * args.epochs / t_train
    text = (f"Challenge-profile lens ResNet on {device} ({track.name}, params.yaml train.resnet at profile "
            f"challenge, {args.epochs} of its 60 epochs, {args.train} training cut-outs simulated with public seeds "
            f"in {t_sim:.0f} s): training {t_train:.0f} s including start-up ({rate:.0f} training cut-outs/s), "
            f"val AUROC {val_auroc}; `skybench evaluate` on {args.train} test cut-outs in {t_eval:.0f} s: AUROC "
            f"{m['auroc']:.3f} [{m['auroc_ci_low']:.3f}, {m['auroc_ci_high']:.3f}], TPR0 {m['tpr0']:.3f}, "
            f"TPR10 {m['tpr10']:.3f} (after {args.epochs} epoch{'s' if args.epochs > 1 else ''}: a timing, not the "
            "challenge baseline's score).\n")
    print(text)
    if args.md:
        with args.md.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
