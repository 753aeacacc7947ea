"""Evaluation throughput: cut-outs/s through `skybench evaluate` (sandbox, streaming, validation, scoring)
against bare onnxruntime on the same arrays in memory, for the same ONNX CNN, in one run.

    python perf/eval_throughput.py [--size 2000] [--track lens-space]

Also prints the peak RSS of the evaluating parent and of the sandboxed child."""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from skybench.tracks import Track

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_cnn(path: Path, bands: int) -> None:
    """A DeepLens-sized-down CNN (about 0.3 GFLOP per 101x101 cut-out), exported with a dynamic batch."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(bands, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 1), torch.nn.Sigmoid(), torch.nn.Flatten(0),
    ).eval()
    torch.onnx.export(net, (torch.zeros(2, bands, 101, 101),), str(path), input_names=["images"],
                      output_names=["score"], dynamic_axes={"images": {0: "N"}, "score": {0: "N"}}, dynamo=False)


def cnn_submission(tmp: Path, track: Track) -> Path:
    """``tmp``/sub: the ONNX CNN as an ``onnx`` submission for ``track``, readable by the sandbox."""
    sub = tmp / "sub"
    sub.mkdir()
    export_cnn(sub / "model.onnx", len(track.band_names))
    (sub / "submission.yaml").write_text(f"team: perf\nname: cnn\ntrack: {track.name}\nformat: onnx\n"
                                         "model: model.onnx\n")
    for p in (tmp, sub, *sub.iterdir()):
        p.chmod(0o755)
    return sub


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2000, help="test cut-outs")
    ap.add_argument("--track", default="lens-space")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")

    from skybench.harness.evaluate import evaluate
    from skybench.release.reader import open_release
    from skybench.simulate import simulate_release
    from skybench.tracks import load_track

    track = load_track(args.track)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        release = simulate_release(track, tmp / "release", size=args.size, progress=False)
        sub = cnn_submission(tmp, track)

        t = time.perf_counter()
        (outcome,) = evaluate([sub], track, release, out=tmp / "evals", publish=False)
        t_eval = time.perf_counter() - t
        assert outcome.status == "FINISHED", outcome.reason
        rss_parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        import onnxruntime as ort

        x = np.asarray(open_release(release).images("test")[:])  # all in memory: the bare reference
        session = ort.InferenceSession(str(sub / "model.onnx"), providers=["CPUExecutionProvider"])
        session.run(None, {"images": x[:8]})
        t = time.perf_counter()
        for start in range(0, len(x), track.evaluation.batch_size):
            session.run(None, {"images": x[start:start + track.evaluation.batch_size]})
        t_bare = time.perf_counter() - t

    n = args.size
    print(f"{track.name}, {n} test cut-outs, batch {track.evaluation.batch_size}, CPU")
    print(f"  skybench evaluate (verify + sandbox + inference + checks + scoring): {n / t_eval:8.1f} cut-outs/s")
    print(f"  bare onnxruntime on the same arrays in memory:                      {n / t_bare:8.1f} cut-outs/s")
    print(f"  ratio evaluate / bare: {t_bare / t_eval:.2f} (target >= 0.8)")
    print(f"  peak RSS: parent {rss_parent:.0f} MB, sandboxed child {rss_child:.0f} MB")


if __name__ == "__main__":
    main()
